// The diffusers UNet2DConditionModel forward pass as a ggml graph.
#pragma once

#include "model.h"

#include <vector>

struct ggml_context;
struct ggml_tensor;

namespace cutecpp {

struct UnetInputs {
    ggml_tensor * sample;     // [W, H, in_channels, N]
    ggml_tensor * time_proj;  // [block_out_channels[0], N]: sinusoidal timestep embedding
    ggml_tensor * context;    // [cross_attention_dim, T, N]
};

// Returns [W, H, out_channels, N]. Each block's output is named after the
// block ("unet.down_blocks.1", "unet.mid_block", ...) and appended to `blocks`.
ggml_tensor * build_unet(ggml_context * ctx, const cutecpp_model & model, const UnetInputs & in,
                         std::vector<ggml_tensor *> & blocks);

// diffusers' get_timestep_embedding for the config (flip_sin_to_cos,
// freq_shift), computed on the host: [n][dim], row-major.
std::vector<float> timestep_embedding(const UnetConfig & config, const float * timesteps, int n);

}  // namespace cutecpp
