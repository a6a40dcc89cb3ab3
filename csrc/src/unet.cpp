#include "unet.h"

#include "blocks.h"

#include "ggml.h"

#include <cmath>

namespace cutecpp {

std::vector<float> timestep_embedding(const UnetConfig & c, const float * timesteps, int n) {
    const int dim = static_cast<int>(c.block_out_channels[0]);
    const int half = dim / 2;
    std::vector<float> out(static_cast<size_t>(n) * dim, 0.0f);
    // float32 throughout, in the order torch evaluates it.
    const float neg_log_period = -std::log(10000.0f);
    const float denom = static_cast<float>(half) - static_cast<float>(c.freq_shift);
    for (int b = 0; b < n; ++b) {
        float * row = out.data() + static_cast<size_t>(b) * dim;
        for (int i = 0; i < half; ++i) {
            const float freq = std::exp(neg_log_period * static_cast<float>(i) / denom);
            const float arg = timesteps[b] * freq;
            const float s = std::sin(arg), co = std::cos(arg);
            row[i] = c.flip_sin_to_cos ? co : s;
            row[half + i] = c.flip_sin_to_cos ? s : co;
        }
    }
    return out;
}

ggml_tensor * build_unet(ggml_context * ctx, const cutecpp_model & model, const UnetInputs & in,
                         std::vector<ggml_tensor *> & blocks) {
    const auto mark = [&](ggml_tensor * t, const std::string & name) {
        ggml_set_name(t, name.c_str());
        blocks.push_back(t);
        return t;
    };
    const UnetConfig & c = *model.config.unet;
    const Blocks nn{ctx, model};
    const int groups = static_cast<int>(c.norm_num_groups);
    const float eps = c.norm_eps;
    const size_t levels = c.block_out_channels.size();

    ggml_tensor * temb = nn.linear(in.time_proj, "unet.time_embedding.linear_1");
    temb = nn.linear(ggml_silu(ctx, temb), "unet.time_embedding.linear_2");
    ggml_tensor * temb_silu = ggml_silu(ctx, temb);  // every resnet applies SiLU first

    ggml_tensor * x = mark(nn.conv2d(in.sample, "unet.conv_in"), "unet.conv_in");
    std::vector<ggml_tensor *> skips = {x};
    for (size_t i = 0; i < levels; ++i) {
        const std::string b = "unet.down_blocks." + std::to_string(i);
        const bool attn = c.down_block_types[i] == "CrossAttnDownBlock2D";
        for (uint32_t j = 0; j < c.layers_per_block; ++j) {
            const std::string js = std::to_string(j);
            x = nn.resnet(x, temb_silu, b + ".resnets." + js, groups, eps);
            if (attn) {
                x = nn.transformer2d(x, in.context, b + ".attentions." + js, c.num_attention_heads[i],
                                     static_cast<int>(c.transformer_layers[i]), groups);
            }
            skips.push_back(x);
        }
        if (i + 1 < levels) {
            x = nn.conv2d(x, b + ".downsamplers.0.conv", 2, 1);
            skips.push_back(x);
        }
        mark(x, b);
    }

    if (c.mid_block) {
        x = nn.resnet(x, temb_silu, "unet.mid_block.resnets.0", groups, eps);
        x = nn.transformer2d(x, in.context, "unet.mid_block.attentions.0", c.num_attention_heads[levels - 1],
                             static_cast<int>(c.transformer_layers[levels - 1]), groups);
        x = mark(nn.resnet(x, temb_silu, "unet.mid_block.resnets.1", groups, eps), "unet.mid_block");
    }

    for (size_t i = 0; i < levels; ++i) {
        const std::string b = "unet.up_blocks." + std::to_string(i);
        const bool attn = c.up_block_types[i] == "CrossAttnUpBlock2D";
        const int heads = static_cast<int>(c.num_attention_heads[levels - 1 - i]);
        const int depth = static_cast<int>(c.transformer_layers[levels - 1 - i]);
        for (uint32_t j = 0; j <= c.layers_per_block; ++j) {
            const std::string js = std::to_string(j);
            x = ggml_concat(ctx, x, skips.back(), 2);
            skips.pop_back();
            x = nn.resnet(x, temb_silu, b + ".resnets." + js, groups, eps);
            if (attn) x = nn.transformer2d(x, in.context, b + ".attentions." + js, heads, depth, groups);
        }
        if (i + 1 < levels) {
            x = nn.conv3x3(x, b + ".upsamplers.0.conv", {2, nullptr, false});  // nearest x2, then the conv
        }
        mark(x, b);
    }

    x = nn.group_norm(x, "unet.conv_norm_out", groups, eps, true);
    return mark(nn.conv2d(x, "unet.conv_out"), "unet.conv_out");
}

}  // namespace cutecpp
