// Mirrors diffusers' EncoderTiny: x.add(1).div(2), then layers = [conv, blocks of stage 0,
// (stride-2 conv without bias, blocks) per later stage, conv to the latent channels]; an
// nn.Sequential without parameter-free layers, so every index is a conv or a block.
#include "tiny_encoder.h"

#include "blocks.h"

#include "ggml.h"

#include <string>

namespace cutecpp {

namespace {

// Walks EncoderTiny's layers, calling the visitor for each with its index:
// conv(index, in, out, stride) (bias exactly where the stride is 1) and block(index, channels).
template <typename Visitor>
void walk(const TinyEncoderConfig & c, Visitor && v) {
    int i = 0;
    const int64_t ch = c.block_out_channels[0];
    for (size_t s = 0; s < c.num_blocks.size(); ++s) {
        if (s == 0) {
            v.conv(i++, c.in_channels, ch, 1);
        } else {
            v.conv(i++, ch, ch, 2);
        }
        for (uint32_t b = 0; b < c.num_blocks[s]; ++b) v.block(i++, ch);
    }
    v.conv(i++, ch, c.latent_channels, 1);
}

}  // namespace

void add_tiny_encoder_tensors(const TinyEncoderConfig & c, const std::string & prefix, TensorShapes & out) {
    struct Inventory {
        const std::string & prefix;
        TensorShapes & out;
        std::string at(int i) const { return prefix + "encoder.layers." + std::to_string(i); }
        void conv(const std::string & p, int64_t in, int64_t o, bool bias) {
            out[p + ".weight"] = {o, in, 3, 3};
            if (bias) out[p + ".bias"] = {o};
        }
        void conv(int i, int64_t in, int64_t o, int stride) { conv(at(i), in, o, stride == 1); }
        // AutoencoderTinyBlock: conv.0, conv.2, conv.4 (ReLUs between); skip is Identity.
        void block(int i, int64_t ch) {
            for (int j : {0, 2, 4}) conv(at(i) + ".conv." + std::to_string(j), ch, ch, true);
        }
    } inventory{prefix, out};
    walk(c, inventory);
}

void add_verifier_tensors(const VerifierConfig & c, const std::string & prefix, TensorShapes & out) {
    add_tiny_encoder_tensors(c.body, prefix, out);
}

ggml_tensor * build_encoder_tiny(ggml_context * ctx, const cutecpp_model & model, const TinyEncoderConfig & c,
                                 const std::string & prefix, ggml_tensor * image, std::vector<ggml_tensor *> & blocks) {
    struct Graph {
        Blocks nn;
        const std::string & prefix;
        ggml_tensor * x;
        std::vector<ggml_tensor *> & blocks;
        std::string layer(int i) const { return prefix + "encoder.layers." + std::to_string(i); }
        void keep(int i) {
            ggml_set_name(x, layer(i).c_str());
            blocks.push_back(x);
        }
        void conv(int i, int64_t, int64_t, int stride) {
            // The stride-2 convs (no bias) go through im2col: Blocks::conv2d.
            x = stride == 1 ? nn.conv3x3(x, layer(i), {}, true) : nn.conv2d(x, layer(i), stride, 1, false);
            keep(i);
        }
        // relu(conv4(relu(conv2(relu(conv0(x))))) + x), the ReLUs and the residual fused
        // into the convs where the direct kernel runs them.
        void block(int i, int64_t) {
            const std::string p = layer(i) + ".conv.";
            ggml_tensor * h = nn.conv3x3(x, p + "0", {1, nullptr, true});
            h = nn.conv3x3(h, p + "2", {1, nullptr, true});
            x = nn.conv3x3(h, p + "4", {1, x, true});
            keep(i);
        }
    };
    // [-1, 1] -> [0, 1] as EncoderTiny.forward: x / 2 + 0.5 rounds as (x + 1) / 2 does.
    Graph g{Blocks{ctx, model}, prefix, ggml_scale_bias(ctx, image, 0.5f, 0.5f), blocks};
    walk(c, g);
    return g.x;
}

ggml_tensor * build_tiny_encoder(ggml_context * ctx, const cutecpp_model & model, ggml_tensor * image,
                                 std::vector<ggml_tensor *> & blocks) {
    return build_encoder_tiny(ctx, model, *model.config.tiny_encoder, "tiny_encoder.", image, blocks);
}

ggml_tensor * build_verifier(ggml_context * ctx, const cutecpp_model & model, ggml_tensor * input,
                             std::vector<ggml_tensor *> & blocks) {
    ggml_tensor * maps = build_encoder_tiny(ctx, model, model.config.verifier->body, "verifier.", input, blocks);
    // The largest value of each label's map: max-pooling over the whole map -> [1, 1, labels, N].
    ggml_tensor * logits = ggml_pool_2d(ctx, maps, GGML_OP_POOL_MAX, static_cast<int>(maps->ne[0]),
                                        static_cast<int>(maps->ne[1]), static_cast<int>(maps->ne[0]),
                                        static_cast<int>(maps->ne[1]), 0.0f, 0.0f);
    ggml_set_name(logits, "verifier.logits");
    blocks.push_back(logits);
    return logits;
}

}  // namespace cutecpp
