// The encoder half of a diffusers AutoencoderKL (the SD VAE) as a ggml graph, and the
// tensors its config implies.
#pragma once

#include "model.h"

#include <vector>

struct ggml_context;
struct ggml_tensor;

namespace cutecpp {

// image [W, H, in_channels, N] in [-1, 1] (W, H multiples of f = 2^(levels-1)) ->
// latents [W/f, H/f, latent_channels, N]: the mean of diffusers' posterior
// (encode(x).latent_dist.mode()), before the latent scaling (the caller applies
// LatentScaling::scale). Traced blocks: "vae_encoder.encoder.conv_in",
// "vae_encoder.encoder.down_blocks.<i>", "vae_encoder.encoder.mid_block",
// "vae_encoder.encoder.conv_out" (mean and log-variance), "vae_encoder.quant_conv"
// (with use_quant_conv).
ggml_tensor * build_vae_encoder(ggml_context * ctx, const cutecpp_model & model, ggml_tensor * image,
                                std::vector<ggml_tensor *> & blocks);

// The bundle's name of a vae_encoder ResNet's 1x1 shortcut: `shortcut`, not the checkpoint's
// `conv_shortcut` ("vae_encoder.encoder.down_blocks.1.resnets.0.conv_shortcut.weight" is 64
// bytes, beyond ggml's 63; cutecpp.bundle.tensor_name() abbreviates it).
constexpr const char * kVaeEncoderShortcut = "shortcut";

}  // namespace cutecpp
