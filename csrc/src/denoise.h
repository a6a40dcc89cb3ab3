// The denoising loop: initial noise, then per step input scaling, the UNet on
// the conditional (and, with guidance, the unconditional) context, classifier-
// free guidance and the sampler's update. See cutecpp_sample in cutecpp.h.
#pragma once

#include "cutecpp.h"

struct cutecpp_context;

namespace cutecpp {

// cond [n_cond, cross_attention_dim], uncond [n_uncond, cross_attention_dim] (may be NULL when
// the guidance scale is 1) -> out [in_channels, latent_height, latent_width] (C order).
void denoise(cutecpp_context & ctx, const float * cond, int n_cond, const float * uncond, int n_uncond,
             const cutecpp_sample_params & params, float * out);

}  // namespace cutecpp
