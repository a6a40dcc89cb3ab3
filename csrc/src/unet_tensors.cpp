// The tensors a diffusers UNet2DConditionModel has for a given config, named
// and shaped exactly as in its state dict. Mirrors the constructor logic of
// UNet2DConditionModel / get_down_block / get_up_block in diffusers; the test
// tests/test_unet_inventory.py checks it against real diffusers models.
#include "config.h"
#include "error.h"

#include <algorithm>

namespace cutecpp {

namespace {

struct Writer {
    TensorShapes & out;
    void add(const std::string & name, Shape shape) {
        // ggml's name limit (GGML_MAX_NAME, NUL included); config bounds keep
        // every name well under it, so this only fires on a bug.
        if (name.size() >= 64) fail(CUTECPP_ERR_INTERNAL, "implied tensor name too long: " + name);
        out[name] = std::move(shape);
    }
    void linear(const std::string & p, int64_t out_f, int64_t in_f, bool bias = true) {
        add(p + ".weight", {out_f, in_f});
        if (bias) add(p + ".bias", {out_f});
    }
    void conv(const std::string & p, int64_t out_c, int64_t in_c, int64_t k) {
        add(p + ".weight", {out_c, in_c, k, k});
        add(p + ".bias", {out_c});
    }
    void norm(const std::string & p, int64_t c) {
        add(p + ".weight", {c});
        add(p + ".bias", {c});
    }

    // ResnetBlock2D with a time embedding projection.
    void resnet(const std::string & p, int64_t in_c, int64_t out_c, int64_t temb) {
        norm(p + ".norm1", in_c);
        conv(p + ".conv1", out_c, in_c, 3);
        linear(p + ".time_emb_proj", out_c, temb);
        norm(p + ".norm2", out_c);
        conv(p + ".conv2", out_c, out_c, 3);
        if (in_c != out_c) conv(p + ".conv_shortcut", out_c, in_c, 1);
    }

    // Transformer2DModel with `depth` BasicTransformerBlocks (self + cross attention,
    // GEGLU feed-forward); inner dim == channels since heads divide channels.
    void transformer(const std::string & p, int64_t c, int64_t cross, bool linear_proj, uint32_t depth) {
        norm(p + ".norm", c);
        if (linear_proj) linear(p + ".proj_in", c, c);
        else conv(p + ".proj_in", c, c, 1);
        for (uint32_t k = 0; k < depth; ++k) {
            // "transformer_blocks.k", abbreviated: docs/bundle-format.md
            const std::string b = p + ".tb." + std::to_string(k);
            norm(b + ".norm1", c);
            linear(b + ".attn1.to_q", c, c, false);
            linear(b + ".attn1.to_k", c, c, false);
            linear(b + ".attn1.to_v", c, c, false);
            linear(b + ".attn1.to_out.0", c, c);
            norm(b + ".norm2", c);
            linear(b + ".attn2.to_q", c, c, false);
            linear(b + ".attn2.to_k", c, cross, false);
            linear(b + ".attn2.to_v", c, cross, false);
            linear(b + ".attn2.to_out.0", c, c);
            norm(b + ".norm3", c);
            linear(b + ".ff.net.0.proj", 8 * c, c);
            linear(b + ".ff.net.2", c, 4 * c);
        }
        if (linear_proj) linear(p + ".proj_out", c, c);
        else conv(p + ".proj_out", c, c, 1);
    }
};

}  // namespace

void add_unet_tensors(const UnetConfig & c, const std::string & prefix, TensorShapes & out) {
    Writer w{out};
    const auto & ch = c.block_out_channels;
    const size_t n = ch.size();
    const int64_t temb = c.time_embed_dim();
    const int64_t cross = c.cross_attention_dim;
    const bool lin = c.use_linear_projection;
    const std::string P = prefix;

    w.conv(P + "conv_in", ch[0], c.in_channels, 3);
    w.linear(P + "time_embedding.linear_1", temb, ch[0]);
    w.linear(P + "time_embedding.linear_2", temb, temb);

    int64_t out_c = ch[0];
    for (size_t i = 0; i < n; ++i) {
        const int64_t in_c = out_c;
        out_c = ch[i];
        const bool attn = c.down_block_types[i] == "CrossAttnDownBlock2D";
        const std::string b = P + "down_blocks." + std::to_string(i);
        for (uint32_t j = 0; j < c.layers_per_block; ++j) {
            const std::string js = std::to_string(j);
            w.resnet(b + ".resnets." + js, j == 0 ? in_c : out_c, out_c, temb);
            if (attn) w.transformer(b + ".attentions." + js, out_c, cross, lin, c.transformer_layers[i]);
        }
        if (i + 1 < n) w.conv(b + ".downsamplers.0.conv", out_c, out_c, 3);
    }

    if (c.mid_block) {
        const int64_t m = ch[n - 1];
        w.resnet(P + "mid_block.resnets.0", m, m, temb);
        w.transformer(P + "mid_block.attentions.0", m, cross, lin, c.transformer_layers[n - 1]);
        w.resnet(P + "mid_block.resnets.1", m, m, temb);
    }

    out_c = ch[n - 1];
    for (size_t i = 0; i < n; ++i) {
        const int64_t prev_out = out_c;
        out_c = ch[n - 1 - i];
        const int64_t in_c = ch[n - 1 - std::min(i + 1, n - 1)];
        const bool attn = c.up_block_types[i] == "CrossAttnUpBlock2D";
        const std::string b = P + "up_blocks." + std::to_string(i);
        for (uint32_t j = 0; j <= c.layers_per_block; ++j) {
            const std::string js = std::to_string(j);
            const int64_t skip = j == c.layers_per_block ? in_c : out_c;
            const int64_t res_in = j == 0 ? prev_out : out_c;
            w.resnet(b + ".resnets." + js, res_in + skip, out_c, temb);
            if (attn) w.transformer(b + ".attentions." + js, out_c, cross, lin, c.transformer_layers[n - 1 - i]);
        }
        if (i + 1 < n) w.conv(b + ".upsamplers.0.conv", out_c, out_c, 3);
    }

    w.norm(P + "conv_norm_out", ch[0]);
    w.conv(P + "conv_out", c.out_channels, ch[0], 3);
}

}  // namespace cutecpp
