// Mirrors diffusers' DecoderTiny: layers = [conv, relu, (blocks..., upsample,
// conv) per stage]; numbering follows nn.Sequential, so parameter-free layers
// (ReLU, Upsample) take an index too. A stage's width may differ from the
// next one's (the stage's closing conv changes it: tools/latent_decoder.py).
#include "tiny_decoder.h"

#include "blocks.h"

#include "ggml.h"

namespace cutecpp {

namespace {

// Walks DecoderTiny's nn.Sequential, calling the visitor for each layer with
// its index: conv(index, in, out, bias), block(index, channels), relu(),
// upsample().
template <typename Visitor>
void walk(const TinyDecoderConfig & c, Visitor && v) {
    int i = 0;
    const auto & ch = c.block_out_channels;
    v.conv(i++, c.latent_channels, ch[0], true);
    v.relu(i++);
    for (size_t s = 0; s < c.num_blocks.size(); ++s) {
        const bool last = s + 1 == c.num_blocks.size();
        for (uint32_t b = 0; b < c.num_blocks[s]; ++b) v.block(i++, ch[s]);
        if (!last) v.upsample(i++);
        v.conv(i++, ch[s], last ? c.out_channels : ch[s + 1], last);  // into the next stage's width
    }
}

std::string layer(int i) { return "tiny_decoder.decoder.layers." + std::to_string(i); }

}  // namespace

void add_tiny_decoder_tensors(const TinyDecoderConfig & c, const std::string & prefix, TensorShapes & out) {
    struct Inventory {
        const std::string & prefix;
        TensorShapes & out;
        void conv(const std::string & p, int64_t in, int64_t o, bool bias) {
            out[p + ".weight"] = {o, in, 3, 3};
            if (bias) out[p + ".bias"] = {o};
        }
        std::string at(int i) const { return prefix + "decoder.layers." + std::to_string(i); }
        void conv(int i, int64_t in, int64_t o, bool bias) { conv(at(i), in, o, bias); }
        // AutoencoderTinyBlock: conv.0, conv.2, conv.4 (ReLUs between); skip is Identity.
        void block(int i, int64_t ch) {
            for (int j : {0, 2, 4}) conv(at(i) + ".conv." + std::to_string(j), ch, ch, true);
        }
        void relu(int) {}
        void upsample(int) {}
    } inventory{prefix, out};
    walk(c, inventory);
}

ggml_tensor * build_tiny_decoder(ggml_context * ctx, const cutecpp_model & model, ggml_tensor * latents,
                                 std::vector<ggml_tensor *> & blocks) {
    const TinyDecoderConfig & c = *model.config.tiny_decoder;
    struct Graph {
        ggml_context * ctx;
        Blocks nn;
        int factor;
        ggml_tensor * x;
        std::vector<ggml_tensor *> & blocks;
        int pending = 1;  // an Upsample's factor, waiting to be fused into the next conv's input
        void keep(int i) {
            ggml_set_name(x, layer(i).c_str());
            blocks.push_back(x);
        }
        void conv(int i, int64_t, int64_t, bool bias) {
            x = nn.conv3x3(x, layer(i), {pending, nullptr, false}, bias);
            pending = 1;
            keep(i);
        }
        // relu(conv4(relu(conv2(relu(conv0(x))))) + x), the ReLUs and the
        // residual fused into the convs where the direct kernel runs them.
        void block(int i, int64_t) {
            if (pending != 1) x = nn.upsample_nearest(x, pending);
            pending = 1;
            const std::string p = layer(i) + ".conv.";
            ggml_tensor * h = nn.conv3x3(x, p + "0", {1, nullptr, true});
            h = nn.conv3x3(h, p + "2", {1, nullptr, true});
            x = nn.conv3x3(h, p + "4", {1, x, true});
            keep(i);
        }
        void relu(int) { x = ggml_relu(ctx, x); }
        void upsample(int) { pending *= factor; }
    };
    // x = tanh(x / 3) * 3 as DecoderTiny.forward (the caller has undone the latent scaling).
    ggml_tensor * x = ggml_scale(ctx, ggml_tanh(ctx, ggml_scale(ctx, latents, 1.0f / 3.0f)), 3.0f);
    Graph g{ctx, Blocks{ctx, model}, static_cast<int>(c.upsampling_scaling_factor), x, blocks};
    walk(c, g);
    return ggml_scale_bias(ctx, g.x, 2.0f, -1.0f);  // [0, 1] -> [-1, 1]
}

}  // namespace cutecpp
