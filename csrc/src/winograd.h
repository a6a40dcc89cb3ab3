// 3x3 stride-1 convolutions by Winograd's minimal filtering F(2x2, 3x3)
// (Lavin & Gray, 2015): each 2x2 output tile costs 16 multiplies per channel
// pair instead of 36, so the convolutions' GEMM work drops 2.25x.
//
//   U = G g G^T      per kernel, once at model load        [16, OC, IC]
//   V = B^T d B      per 4x4 input tile (custom op)         [16, tiles, IC]
//   M = U V          16 batched GEMMs (ggml_mul_mat)        [16, tiles, OC]
//   Y = A^T M A + b  per tile (custom op)                   [N, OC, H, W]
//
// All in f32; the result matches direct convolution to ~1e-6 relative.
#pragma once

#include <cstddef>

struct ggml_context;
struct ggml_tensor;

namespace cutecpp::winograd {

// A [3, 3, IC, OC] f32 or f16 kernel (ggml order) that this path can take.
bool supports_kernel(const ggml_tensor * kernel);
size_t transformed_bytes(const ggml_tensor * kernel);
// Writes U (ggml layout [IC, OC, 16], f32) for the kernel into out.
void transform_kernel(const ggml_tensor * kernel, float * out);

// x [W, H, IC, N], u [IC, OC, 16] (from transform_kernel), bias [OC] or NULL
// -> [W, H, OC, N]: conv2d with stride 1 and padding 1.
ggml_tensor * conv2d(ggml_context * ctx, ggml_tensor * x, ggml_tensor * u, ggml_tensor * bias);

}  // namespace cutecpp::winograd
