// Normalisation and activation chains as single ggml custom ops.
//
// ggml runs GroupNorm -> * weight -> + bias -> SiLU as four ops, each a full
// pass over the activations (and GEGLU's erf through scalar libm calls). These
// kernels do each chain in one op: statistics from a group or row that is
// still in cache, then one write. Same arithmetic as the separate ops (mean,
// then the variance about it, 1 / sqrt(var + eps)), sums in double; SiLU and
// GELU through vec_math.h (~1e-7 from libm).
//
// CUTECPP_FUSED=0 builds the separate ggml ops instead (tests compare both).
#pragma once

struct ggml_context;
struct ggml_tensor;

namespace cutecpp::fused {

bool enabled();

// x [W, H, C, N] f32 -> act(GroupNorm(x + shift) * weight + bias), same shape,
// or as tokens [C, W * H, N] (token t = pixel t, as diffusers' transformers
// read an image). shift [C, N] or NULL (a per-image, per-channel offset, e.g.
// the resnet's time embedding); weight and bias [C] f32; silu applies SiLU last.
ggml_tensor * group_norm(ggml_context * ctx, ggml_tensor * x, int groups, float eps, ggml_tensor * weight,
                         ggml_tensor * bias, ggml_tensor * shift, bool silu, bool tokens = false);

// tokens x [C, W * H, N] back to an image, plus residual [W, H, C, N].
ggml_tensor * image_add(ggml_context * ctx, ggml_tensor * x, ggml_tensor * residual);

// x [C, ...] f32 -> LayerNorm over C * weight + bias (both [C] f32).
ggml_tensor * layer_norm(ggml_context * ctx, ggml_tensor * x, float eps, ggml_tensor * weight, ggml_tensor * bias);

// x [2F, ...] f32 -> [F, ...]: first half * GELU(second half), diffusers' GEGLU
// with the exact (erf) GELU.
ggml_tensor * geglu(ggml_context * ctx, ggml_tensor * x);

}  // namespace cutecpp::fused
