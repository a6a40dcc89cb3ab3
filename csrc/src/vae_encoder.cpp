// Mirrors diffusers' AutoencoderKL encode path: Encoder: conv_in, DownEncoderBlock2D per
// level (layers_per_block ResnetBlock2D without time embedding, then except on the last
// level Downsample2D: the image padded by one zero column and row on the right and
// bottom, a 3x3 stride-2 conv without padding), UNetMidBlock2D (ResNet, optional Attention,
// ResNet), conv_norm_out (GroupNorm), SiLU, conv_out to 2 * latent_channels; then
// quant_conv (1x1) and the posterior's mean, its first latent_channels channels.
// Every GroupNorm uses eps 1e-6.
#include "vae_encoder.h"

#include "blocks.h"
#include "vae_inventory.h"

#include "ggml.h"

#include <string>

namespace cutecpp {

namespace {

// Walks the encode path in execution order. Names are the AutoencoderKL state-dict
// prefixes ("encoder.down_blocks.1.resnets.0"). Visitor: conv(name, in, out, kernel),
// resnet(name, in, out), attention(name, channels), downsample(name, channels) (pad
// right and bottom, then the stride-2 3x3 conv `name`.conv), norm_act(name, channels)
// (GroupNorm + SiLU), end(block name).
template <typename Visitor>
void walk(const VaeEncoderConfig & c, Visitor && v) {
    const size_t levels = c.block_out_channels.size();
    const int64_t top = c.block_out_channels[levels - 1];
    v.conv("encoder.conv_in", c.in_channels, c.block_out_channels[0], 3);
    v.end("encoder.conv_in");
    int64_t prev = c.block_out_channels[0];
    for (size_t i = 0; i < levels; ++i) {
        const std::string b = "encoder.down_blocks." + std::to_string(i);
        const int64_t ch = c.block_out_channels[i];
        for (uint32_t j = 0; j < c.layers_per_block; ++j) {
            v.resnet(b + ".resnets." + std::to_string(j), j == 0 ? prev : ch, ch);
        }
        if (i + 1 < levels) v.downsample(b + ".downsamplers.0", ch);
        v.end(b);
        prev = ch;
    }
    v.resnet("encoder.mid_block.resnets.0", top, top);
    if (c.mid_block_add_attention) v.attention("encoder.mid_block.attentions.0", top);
    v.resnet("encoder.mid_block.resnets.1", top, top);
    v.end("encoder.mid_block");
    v.norm_act("encoder.conv_norm_out", top);
    v.conv("encoder.conv_out", top, 2 * c.latent_channels, 3);
    v.end("encoder.conv_out");
    if (c.use_quant_conv) {
        v.conv("quant_conv", 2 * c.latent_channels, 2 * c.latent_channels, 1);
        v.end("quant_conv");
    }
}

}  // namespace

void add_vae_encoder_tensors(const VaeEncoderConfig & c, const std::string & prefix, TensorShapes & out) {
    VaeInventory inventory{prefix, out, kVaeEncoderShortcut};
    walk(c, inventory);
}

ggml_tensor * build_vae_encoder(ggml_context * ctx, const cutecpp_model & model, ggml_tensor * image,
                                std::vector<ggml_tensor *> & blocks) {
    const VaeEncoderConfig & c = *model.config.vae_encoder;
    struct Graph : VaeGraph {
        // F.pad(x, (0, 1, 0, 1)) then Conv2d(stride 2, padding 0), through im2col (Blocks::conv2d).
        void downsample(const std::string & p, int64_t) {
            x = nn.conv2d(ggml_pad(ctx, x, 1, 1, 0, 0), at(p) + ".conv", 2, 0);
        }
    };
    Graph g{{ctx, Blocks{ctx, model}, "vae_encoder.", kVaeEncoderShortcut, static_cast<int>(c.norm_num_groups), image,
             blocks}};
    walk(c, g);
    // DiagonalGaussianDistribution: mean, logvar = chunk(moments, 2, dim=1); mode() is the mean.
    ggml_tensor * m = g.x;
    ggml_tensor * mean = ggml_view_4d(ctx, m, m->ne[0], m->ne[1], c.latent_channels, m->ne[3], m->nb[1], m->nb[2],
                                      m->nb[3], 0);
    return ggml_cont(ctx, mean);
}

}  // namespace cutecpp
