// 3x3 stride-1 convolutions by Winograd's minimal filtering F(2x2, 3x3)
// (Lavin & Gray, 2015): each 2x2 output tile costs 16 multiplies per channel
// pair instead of 36, so the convolutions' GEMM work drops 2.25x.
//
//   U = G g G^T      per kernel, once at model load        [16, OC, IC]
//   V = B^T d B      per 4x4 input tile (custom op)         [16, tiles, IC]
//   M = U V          16 batched GEMMs (gemm.h / ggml_mul_mat) [16, tiles, OC]
//   Y = A^T M A + b  per tile (custom op)                   [N, OC, H, W]
//
// V and M are f32, made band by band of tile rows (8 MB each at most; ggml-alloc
// reuses them), so large images do not need them whole. U keeps the bundle's precision: f32 kernels give an
// f32 U (matches direct convolution to ~1e-6 relative), f16 kernels an f16 U,
// both packed as gemm.h panels (V stays f32 in the product); a quantized
// bundle (whose 3x3 kernels stay f16 in the file: their rows are 3 wide, not
// a multiple of the 32-value blocks) gives a q8_0 / q4_0 U with rows IC wide,
// for ggml's mul_mat, which converts V rows to the matching dot type. For SD
// 1.5's UNet (541M 3x3 weights) U is 3.8 GB in f32, 1.9 GB in f16, 1.0 GB in
// q8_0 and 0.5 GB in q4_0.
//
// F(4x4, 3x3) was tried (2026-12-02: 36 products per 4x4 tile, 1.78x fewer than
// here, templated transforms on vec_math.h vectors): with U in f16 a block of the
// "sd1" test UNet missed the f16 tolerance (2.4e-3 > 2e-3, A^T's 8s amplify U's
// rounding); with U in f32 it was exact but only 3.5-8 % faster on cute-mini's
// UNets (batch 1-2, one process, alternating) for 2.25x U (the 64/128/256 UNet's
// peak RSS 101 -> 187 MB). Not taken: the products already run near the cores'
// fp32 peak (gemm.h), so the next step is lower-precision arithmetic, not fewer
// fp32 multiplies.
#pragma once

#include <cstddef>
#include <cstdint>

struct ggml_context;
struct ggml_tensor;

namespace cutecpp::winograd {

// A [3, 3, IC, OC] f32 or f16 kernel (ggml order) that this path can take.
bool supports_kernel(const ggml_tensor * kernel);
// U's type for this kernel: the kernel's own (f32, f16), or `quantized`
// (GGML_TYPE_Q8_0 / Q4_0; -1 for none) where IC fits its blocks.
int transformed_type(const ggml_tensor * kernel, int quantized);
// U's ggml shape: f32 / f16 as gemm panels, one set per tile position
// [16, IC, ceil(OC / 16), 16] (gemm.h); quantized as rows [IC, OC, 16].
void transformed_shape(const ggml_tensor * kernel, int type, int64_t ne[4]);
size_t transformed_bytes(const ggml_tensor * kernel, int type);
// Writes U in `type` and transformed_shape's layout to out.
void transform_kernel(const ggml_tensor * kernel, int type, void * out);

// x [W, H, IC, N], u from transform_kernel, bias [OC] or NULL -> [W f, H f, OC, N]:
// conv2d with stride 1 and padding 1 of x upsampled f times by nearest
// neighbour (read on the fly; f = upsample, supports_upsample). The 16
// products run in gemm.h (f32 / f16 U) or ggml_mul_mat (quantized U).
bool supports_upsample(int factor);
ggml_tensor * conv2d(ggml_context * ctx, ggml_tensor * x, ggml_tensor * u, int64_t oc, ggml_tensor * bias,
                     int upsample = 1);

}  // namespace cutecpp::winograd
