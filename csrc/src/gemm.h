// Linear layers (y = x W^T + b) as one ggml custom op with packed weights.
//
// For the diffusion networks' small products (K = 64-1280 inputs, 12-4096
// rows) ggml's CPU matmul ran at ~35-60 GFLOP/s on 2 cores here; a register
// tile of 6 rows x 16 outputs (12 accumulators, every weight vector feeding 6
// FMAs, every broadcast input 2) runs near the FMA peak of one core per thread.
// The weights are packed once per model into panels of 16 outputs, [K][16]
// each (f32, or f16 converted in the loop: F16C / NEON), so the inner loop
// reads them contiguously; the inputs are read in place.
//
// Every output is summed in the same order (bias, then k = 0 .. K - 1) on any
// thread count. CUTECPP_FUSED=0 uses ggml_mul_mat instead (fused.h).
#pragma once

#include <cstddef>
#include <cstdint>

struct ggml_context;
struct ggml_tensor;

namespace cutecpp::gemm {

constexpr int64_t kPanel = 16;

// A Linear's [K, OC] or a 1x1 conv's [1, 1, K, OC] f32/f16 weight this op takes.
bool supports_weight(const ggml_tensor * w);
// The packed weight: the weight's type, [kPanel, K, ceil(OC / kPanel)] (zero padded).
void panel_shape(const ggml_tensor * w, int64_t ne[4]);
size_t panel_bytes(const ggml_tensor * w);
void pack(const ggml_tensor * w, void * out);
// The same from raw rows: oc rows of k values of `size` bytes (4: f32, 2: f16)
// -> ceil(oc / kPanel) * kPanel * k values.
void pack_rows(const void * rows, size_t size, int64_t k, int64_t oc, void * out);

// x [K, ...] f32, panels from pack(), bias [OC] f32 or NULL -> [OC, ...].
// Batched: panels [kPanel, K, blocks, B] (B packed matrices) and x [K, rows, B]
// -> [OC, rows, B], product b with matrix b.
ggml_tensor * linear(ggml_context * ctx, ggml_tensor * x, ggml_tensor * panels, int64_t oc, ggml_tensor * bias);

}  // namespace cutecpp::gemm
