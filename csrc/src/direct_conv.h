// Direct 3x3 stride-1 pad-1 convolution as one ggml custom op, for the
// convolutions with few channels (blocks.cpp says which: 64 x 64 or fewer, 128 x 128 on large images).
//
// There a convolution is too small a GEMM for ggml's mul_mat (the Winograd
// path's 16 batched [OC x IC] x [IC x tiles] products run at ~7 GFLOP/s with
// IC = 16) and im2col's copy costs more than the arithmetic. This kernel walks
// each output row with 8-float vectors along W and keeps 4 output channels x 2
// vectors of accumulators in registers: every input vector it loads feeds 4
// FMAs with broadcast weights. Input rows are copied once into zero-padded row
// buffers (a ring of three rows per channel and thread; the next rows are
// prefetched while one computes), so the inner loop has no edge cases. 16 -> 16
// channels at 512x512 run at ~180 GFLOP/s on 2 cores (AVX2 FMA peak ~235).
//
// Optional fusions, each exactly what the unfused ops compute:
//   upsample   the input is x upsampled by nearest-neighbour (integer factor),
//              read on the fly: the upsampled image is never stored
//   residual   r [W, H, OC, N] is added to the result (after the bias)
//   relu       max(0, .) of the result (after the residual)
//
// Bit-identical for any thread count: every output value is summed in the same
// order (bias, then input channels, kernel rows and columns in turn).
#pragma once

#include <cstdint>

struct ggml_context;
struct ggml_tensor;

namespace cutecpp::direct_conv {

// A [3, 3, IC, OC] f32 or f16 kernel (ggml order) that this path can take.
bool supports_kernel(const ggml_tensor * kernel);
// The kernel as the op reads it: f32 [kBlock, 9, IC, ceil(OC / kBlock)] (output
// channels in register blocks, padded with zero channels), made once per model
// (cutecpp_model::direct_kernel).
constexpr int kBlock = 4;
void arranged_shape(const ggml_tensor * kernel, int64_t ne[4]);
void arrange_kernel(const ggml_tensor * kernel, float * out);

struct Fuse {
    int upsample = 1;                   // nearest-neighbour factor applied to x first
    ggml_tensor * residual = nullptr;   // [W, H, OC, N] f32, added after the bias
    bool relu = false;                  // max(0, .) last
};

// x [W, H, IC, N] f32 (before upsampling), kernel from arrange_kernel, bias
// [OC] f32 or NULL -> [W * f, H * f, OC, N]: conv2d with stride 1 and padding 1.
ggml_tensor * conv2d(ggml_context * ctx, ggml_tensor * x, ggml_tensor * kernel, int64_t oc, ggml_tensor * bias,
                     const Fuse & fuse = {});

}  // namespace cutecpp::direct_conv
