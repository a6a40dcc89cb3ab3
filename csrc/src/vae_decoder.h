// The decoder half of a diffusers AutoencoderKL (the SD VAE) as a ggml graph,
// and the tensors its config implies.
#pragma once

#include "model.h"

#include <vector>

struct ggml_context;
struct ggml_tensor;

namespace cutecpp {

// latents [w, h, latent_channels, N] with the latent scaling already undone
// (LatentScaling::unscale: what diffusers pipelines do before calling vae.decode())
// -> image [w*f, h*f, out_channels, N] (f = 2^(levels-1)), about [-1, 1], not
// clamped: post_quant_conv and the decoder. Traced blocks: "vae_decoder.post_quant_conv",
// "vae_decoder.decoder.conv_in", "vae_decoder.decoder.mid_block",
// "vae_decoder.decoder.up_blocks.<i>", "vae_decoder.decoder.conv_out".
ggml_tensor * build_vae_decoder(ggml_context * ctx, const cutecpp_model & model, ggml_tensor * latents,
                                std::vector<ggml_tensor *> & blocks);

}  // namespace cutecpp
