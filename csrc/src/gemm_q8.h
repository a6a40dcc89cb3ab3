// q8_0 products (Linears and Winograd's quantized U) on int8 dot-product
// instructions, where the CPU has them.
//
// ggml's mul_mat computes a q8_0 product by quantizing the input rows to q8_0
// too and summing int8 x int8 blocks; in a baseline AVX2 build that inner
// product is maddubs + madd, no faster than the f32 FMA of gemm.h, so q8_0
// bundles ran slower than f16 ones. AVX-VNNI (and AVX512-VNNI on 256-bit
// vectors) does 32 u8 x s8 multiply-adds into 8 int32 sums in one instruction
// (vpdpbusd). This op uses it when the CPU reports it at run time (the build
// stays baseline AVX2): the inputs are quantized per row and 32-value block
// exactly as ggml's AVX2 quantize_row_q8_0 does (scale amax / 127 kept as
// f16, values round(x * 127 / amax)), with 128 x each block's sum; the
// weights are packed once per model into panels of 16 outputs, offset by +128
// to u8, as large as their q8_0 blocks:
//
//   per 32-value block: u8 w + 128 [8 groups of 4 inputs][16 outputs][4]  512 B
//                       f16 scale[16]                                       32 B
//
// sum((w + 128) a) - 128 sum(a) = sum(a w), exact in int32; each block then
// adds scale_w * scale_a * that sum to an f32 accumulator (bias first, blocks
// in order: the same on any thread count). So the integers are ggml's and the
// outputs agree with ggml's q8_0 vec_dot (and its mul_mat in a one-op graph) to
// float rounding. A register tile is 3 rows x 16 outputs (the best of 2 x 16
// and 3 x 16 in a micro-benchmark: 180 GMAC/s on one Zen 4 core for K = OC =
// 256, against 61 for gemm.h's f16 tile; measured with the inputs as the u8
// operand, before the operands were swapped for the smaller panels).
//
// CUTECPP_INT8=0 keeps q8_0 products in ggml's mul_mat; CUTECPP_INT8=avx512
// prefers the AVX512-VNNI encoding where the CPU has both. Read when a model
// packs its weights, so a model loaded after a change sees it.
#pragma once

#include <cstddef>
#include <cstdint>

struct ggml_context;
struct ggml_tensor;

namespace cutecpp::gemm_q8 {

constexpr int64_t kPanel = 16;          // outputs per panel
constexpr int64_t kBlock = 32;          // inputs per q8_0 block
constexpr int64_t kBlockBytes = 544;    // one panel's block: values, scales

// The instruction set the products would use now ("avx-vnni", "avx512-vnni"),
// or nullptr: none on this CPU or build, or CUTECPP_INT8=0.
const char * isa();

// A q8_0 Linear weight [K, OC] this op takes (and isa() is set).
bool supports_weight(const ggml_tensor * w);
// An f32 / f16 conv kernel [KW, KH, IC, OC] whose rows (KW * KH * IC values, im2col's
// column order) are a multiple of 32 long, that pack() can quantize to q8_0 first:
// a q8_0 bundle's conv kernels, which the file keeps f16 (their rows are 1 or 3
// wide). isa() is set.
bool supports_float_weight(const ggml_tensor * w);
// Packed panels: GGML_TYPE_I8, [kBlockBytes, K / kBlock, ceil(OC / kPanel), 1].
void panel_shape(int64_t k, int64_t oc, int64_t ne[4]);
size_t panel_bytes(int64_t k, int64_t oc);
// oc rows of k values in ggml's q8_0 blocks -> panels (zero padded to kPanel outputs).
void pack_rows(const void * q8_rows, int64_t k, int64_t oc, void * out);
// A weight of supports_weight or supports_float_weight -> panels.
void pack(const ggml_tensor * w, void * out);
// K (KW * KH * IC for a conv kernel) and OC of such a weight.
int64_t weight_k(const ggml_tensor * w);
int64_t weight_oc(const ggml_tensor * w);

// x [K, ...] f32, panels from pack(), bias [OC] f32 or NULL -> [OC, ...].
// Batched as gemm::linear: panels [.., .., blocks, B] and x [K, rows, B].
ggml_tensor * linear(ggml_context * ctx, ggml_tensor * x, ggml_tensor * panels, int64_t oc, ggml_tensor * bias);

// 1x1 convolutions on the [W, H, C, N] layout: the same products with the roles
// swapped, so that nothing is transposed in f32. The kernel's OC rows are
// quantized once as the Linear's inputs are (per row and block an f32 scale and
// 128 x the block's sum, then the s8 values); each evaluation packs every
// image's pixels into panels of 16 pixels, quantized per pixel and block of 32
// channels (f16 scale).
// For a 1x1 kernel of supports_float_weight: I8 [row_bytes(IC), OC].
void pointwise_shape(const ggml_tensor * kernel, int64_t ne[4]);
void pointwise_arrange(const ggml_tensor * kernel, void * out);
// x [W, H, IC, N] f32, rows from pointwise_arrange, bias [OC] f32 or NULL -> [W, H, OC, N].
ggml_tensor * pointwise(ggml_context * ctx, ggml_tensor * x, ggml_tensor * rows, int64_t oc, ggml_tensor * bias);

}  // namespace cutecpp::gemm_q8
