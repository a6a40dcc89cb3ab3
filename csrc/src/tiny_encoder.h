// The diffusers AutoencoderTiny encoder (TAESD-style EncoderTiny) as a ggml graph, and the
// tensors its config implies.
#pragma once

#include "model.h"

#include <vector>

struct ggml_context;
struct ggml_tensor;

namespace cutecpp {

// image [W, H, in_channels, N] in [-1, 1] (W, H multiples of f = 2^(stages-1)) ->
// latents [W/f, H/f, latent_channels, N] as diffusers' encode() gives them, before the
// latent scaling (the caller applies LatentScaling::scale). Traced blocks:
// "tiny_encoder.encoder.layers.<i>", every layer of EncoderTiny's nn.Sequential.
ggml_tensor * build_tiny_encoder(ggml_context * ctx, const cutecpp_model & model, ggml_tensor * image,
                                 std::vector<ggml_tensor *> & blocks);

// The verifier (VerifierConfig): input [W, H, in_channels + 1, N], the latent with its sigma as the last
// channel, in [-1, 1] terms as EncoderTiny reads it -> logits [1, 1, labels, N], each label's map's
// largest value. Traced blocks: "verifier.encoder.layers.<i>" and "verifier.logits".
ggml_tensor * build_verifier(ggml_context * ctx, const cutecpp_model & model, ggml_tensor * input,
                             std::vector<ggml_tensor *> & blocks);

}  // namespace cutecpp
