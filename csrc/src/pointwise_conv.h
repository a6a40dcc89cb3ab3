// 1x1 convolutions (the resnets' conv_shortcut, 1x1 projections) as one ggml
// custom op on the [W, H, C, N] layout.
//
// ggml's route is im2col (a transposing copy), a matmul, a permute back and a
// bias add: four passes over the activations. In this layout a 1x1 conv is a
// product whose right-hand matrix already has its pixels contiguous, so this
// kernel reads it as is: tiles of 16 pixels x 4 output channels in registers,
// every input vector feeding 4 FMAs with broadcast weights (the direct 3x3
// kernel's inner loop with one tap). The weights are arranged to f32 once per
// model (cutecpp_model::pointwise_kernel).
//
// CUTECPP_FUSED=0 keeps ggml's route (fused.h).
#pragma once

#include <cstdint>

struct ggml_context;
struct ggml_tensor;

namespace cutecpp::pointwise_conv {

// A [1, 1, IC, OC] f32 or f16 kernel this op takes, and its arrangement:
// f32 [4, IC, ceil(OC / 4)] (output channels in register blocks, zero padded).
bool supports_kernel(const ggml_tensor * kernel);
void arranged_shape(const ggml_tensor * kernel, int64_t ne[4]);
void arrange_kernel(const ggml_tensor * kernel, float * out);

// x [W, H, IC, N] f32, kernel from arrange_kernel, bias [OC] f32 or NULL
// -> [W, H, OC, N]; NULL where the op cannot take these inputs.
ggml_tensor * conv2d(ggml_context * ctx, ggml_tensor * x, ggml_tensor * kernel, int64_t oc, ggml_tensor * bias);

}  // namespace cutecpp::pointwise_conv
