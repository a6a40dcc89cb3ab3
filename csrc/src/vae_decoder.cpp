// Mirrors diffusers' AutoencoderKL decode path: post_quant_conv (1x1), then
// Decoder: conv_in, UNetMidBlock2D (ResnetBlock2D, Attention, ResnetBlock2D,
// no time embedding), UpDecoderBlock2D per level (channels reversed,
// layers_per_block + 1 resnets, Upsample2D with conv except on the last),
// conv_norm_out (GroupNorm), SiLU, conv_out. Every GroupNorm uses eps 1e-6.
#include "vae_decoder.h"

#include "blocks.h"
#include "vae_inventory.h"

#include "ggml.h"

#include <string>

namespace cutecpp {

namespace {

// Walks the decode path in execution order. Names are the AutoencoderKL
// state-dict prefixes ("decoder.up_blocks.1.resnets.0"). Visitor:
// conv(name, in, out, kernel), resnet(name, in, out), attention(name, channels),
// upsample(name, channels) (nearest x2, then the 3x3 conv `name`.conv),
// norm_act(name, channels) (GroupNorm + SiLU), end(block name).
template <typename Visitor>
void walk(const VaeDecoderConfig & c, Visitor && v) {
    const size_t levels = c.block_out_channels.size();
    const int64_t top = c.block_out_channels[levels - 1];
    v.conv("post_quant_conv", c.latent_channels, c.latent_channels, 1);
    v.end("post_quant_conv");
    v.conv("decoder.conv_in", c.latent_channels, top, 3);
    v.end("decoder.conv_in");
    v.resnet("decoder.mid_block.resnets.0", top, top);
    if (c.mid_block_add_attention) v.attention("decoder.mid_block.attentions.0", top);
    v.resnet("decoder.mid_block.resnets.1", top, top);
    v.end("decoder.mid_block");
    int64_t prev = top;
    for (size_t i = 0; i < levels; ++i) {
        const std::string b = "decoder.up_blocks." + std::to_string(i);
        const int64_t ch = c.block_out_channels[levels - 1 - i];
        for (uint32_t j = 0; j <= c.layers_per_block; ++j) {
            v.resnet(b + ".resnets." + std::to_string(j), j == 0 ? prev : ch, ch);
        }
        if (i + 1 < levels) v.upsample(b + ".upsamplers.0", ch);
        v.end(b);
        prev = ch;
    }
    v.norm_act("decoder.conv_norm_out", c.block_out_channels[0]);
    v.conv("decoder.conv_out", c.block_out_channels[0], c.out_channels, 3);
    v.end("decoder.conv_out");
}

}  // namespace

void add_vae_decoder_tensors(const VaeDecoderConfig & c, const std::string & prefix, TensorShapes & out) {
    VaeInventory inventory{prefix, out, "conv_shortcut"};
    walk(c, inventory);
}

ggml_tensor * build_vae_decoder(ggml_context * ctx, const cutecpp_model & model, ggml_tensor * latents,
                                std::vector<ggml_tensor *> & blocks) {
    const VaeDecoderConfig & c = *model.config.vae_decoder;
    // The upsampler: nearest x2 read on the fly by the 3x3 conv.
    struct Graph : VaeGraph {
        void upsample(const std::string & p, int64_t) { x = nn.conv3x3(x, at(p) + ".conv", {2, nullptr, false}); }
    };
    // latents: the caller has undone the latent scaling (LatentScaling::unscale)
    Graph g{{ctx, Blocks{ctx, model}, "vae_decoder.", "conv_shortcut", static_cast<int>(c.norm_num_groups), latents,
             blocks}};
    walk(c, g);
    return g.x;
}

}  // namespace cutecpp
