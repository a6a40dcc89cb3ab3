// GroupNorm with its affine, an optional per-channel input shift and an
// optional SiLU as one ggml custom op; LayerNorm with its affine as another.
//
// In ggml the diffusers pattern silu(group_norm(x + temb) * gamma + beta) is
// five nodes (ADD, GROUP_NORM, MUL, ADD, SILU): five passes over the image and
// five thread barriers. The cute-mini UNet runs ~30 of them per evaluation,
// on images small enough (32x32 and below) that the passes and barriers cost
// more than the arithmetic. This op reads x twice (statistics, then output)
// and writes once.
//
// Work is split by (image, group): each is computed whole by one thread, so the
// result is bit-identical for any thread count. Sums are in double; SiLU uses
// a polynomial exp (relative error ~1e-7) on AVX2 and NEON, std::exp elsewhere.
#pragma once

struct ggml_context;
struct ggml_tensor;

namespace cutecpp::norm_act {

// x [W, H, C, N] f32; gamma, beta [C] f32; shift [C, N] f32 or NULL, added to x
// before the statistics (a ResNet's time embedding). Returns
// act((x + shift - mean_g) / sqrt(var_g + eps) * gamma + beta), act = SiLU or
// identity, mean_g and var_g (biased) over each group's channels and pixels.
ggml_tensor * group_norm(ggml_context * ctx, ggml_tensor * x, ggml_tensor * gamma, ggml_tensor * beta,
                         ggml_tensor * shift, int groups, float eps, bool silu);

// x [C, T, N] f32 (tokens), gamma, beta [C] f32 -> (x - mean) / sqrt(var + eps) * gamma + beta per token:
// torch's LayerNorm, one op instead of ggml's NORM, MUL, ADD. Split by tokens.
ggml_tensor * layer_norm(ggml_context * ctx, ggml_tensor * x, ggml_tensor * gamma, ggml_tensor * beta, float eps);

// Whether these ops can take these tensors (f32 affine; the caller falls back to ggml's ops otherwise).
bool supports(const ggml_tensor * x, const ggml_tensor * gamma, const ggml_tensor * beta);

}  // namespace cutecpp::norm_act
