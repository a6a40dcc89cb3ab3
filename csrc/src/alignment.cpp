// Mirrors tools/alignment_ref.py's Alignment: LayerNorm + Linear in, `layers`
// pre-norm transformer encoder layers, LayerNorm + Linear out. No mask and no
// positional encoding: one prompt per batch row, its tokens all real.
#include "alignment.h"

#include "blocks.h"
#include "error.h"

#include "ggml.h"

#include <string>

namespace cutecpp {

void add_alignment_tensors(const AlignmentConfig & c, const std::string & prefix, TensorShapes & out) {
    const auto add = [&](const std::string & name, Shape shape) {
        // ggml's name limit (GGML_MAX_NAME, NUL included); config bounds keep names far below it.
        if (name.size() >= 64) fail(CUTECPP_ERR_INTERNAL, "implied tensor name too long: " + name);
        out[name] = std::move(shape);
    };
    const auto linear = [&](const std::string & p, int64_t out_f, int64_t in_f) {
        add(p + ".weight", {out_f, in_f});
        add(p + ".bias", {out_f});
    };
    const auto norm = [&](const std::string & p, int64_t ch) {
        add(p + ".weight", {ch});
        add(p + ".bias", {ch});
    };
    const int64_t dim = c.dim, ff = static_cast<int64_t>(c.ff_mult) * c.dim;
    norm(prefix + "norm_in", c.in_dim);
    linear(prefix + "proj_in", dim, c.in_dim);
    for (uint32_t i = 0; i < c.layers; ++i) {
        const std::string b = prefix + "blocks." + std::to_string(i);
        norm(b + ".norm1", dim);
        linear(b + ".attn.to_q", dim, dim);
        linear(b + ".attn.to_k", dim, dim);
        linear(b + ".attn.to_v", dim, dim);
        linear(b + ".attn.to_out", dim, dim);
        norm(b + ".norm2", dim);
        linear(b + ".ff.fc1", ff, dim);
        linear(b + ".ff.fc2", dim, ff);
    }
    norm(prefix + "norm_out", dim);
    linear(prefix + "proj_out", c.ctx_dim, dim);
}

ggml_tensor * build_alignment(ggml_context * ctx, const cutecpp_model & model, ggml_tensor * states,
                              std::vector<ggml_tensor *> & blocks) {
    const auto mark = [&](ggml_tensor * t, const std::string & name) {
        ggml_set_name(t, name.c_str());
        blocks.push_back(t);
        return t;
    };
    const AlignmentConfig & c = *model.config.alignment;
    const Blocks nn{ctx, model};
    const float eps = c.norm_eps;
    const int heads = static_cast<int>(c.heads);

    ggml_tensor * x = nn.linear(nn.layer_norm(states, "alignment.norm_in", eps), "alignment.proj_in");
    mark(x, "alignment.proj_in");
    for (uint32_t i = 0; i < c.layers; ++i) {
        const std::string b = "alignment.blocks." + std::to_string(i);
        ggml_tensor * h = nn.layer_norm(x, b + ".norm1", eps);
        h = nn.attend(nn.linear(h, b + ".attn.to_q"), nn.linear(h, b + ".attn.to_k"), nn.linear(h, b + ".attn.to_v"),
                      heads);
        x = ggml_add(ctx, x, nn.linear(h, b + ".attn.to_out"));
        h = ggml_gelu_erf(ctx, nn.linear(nn.layer_norm(x, b + ".norm2", eps), b + ".ff.fc1"));
        x = mark(ggml_add(ctx, x, nn.linear(h, b + ".ff.fc2")), b);
    }
    x = nn.linear(nn.layer_norm(x, "alignment.norm_out", eps), "alignment.proj_out");
    return mark(x, "alignment.proj_out");
}

}  // namespace cutecpp
