// The diffusers AutoencoderTiny decoder (TAESD-style) as a ggml graph, and the
// tensors its config implies.
#pragma once

#include "model.h"

#include <vector>

struct ggml_context;
struct ggml_tensor;

namespace cutecpp {

// latents [w, h, latent_channels, N] with the latent scaling already undone
// (LatentScaling::unscale, as a diffusers pipeline does before decode) ->
// image [w*f, h*f, out_channels, N] in [-1, 1] (diffusers' decode output).
ggml_tensor * build_tiny_decoder(ggml_context * ctx, const cutecpp_model & model, ggml_tensor * latents,
                                 std::vector<ggml_tensor *> & blocks);

}  // namespace cutecpp
