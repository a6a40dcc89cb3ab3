// Multi-head softmax(q k^T * scale) v as one ggml custom op, for the short
// heads of the diffusion networks (d = 16 in cute-mini, 40-160 in SD 1.5).
//
// ggml's CPU flash attention walks the keys one at a time for every query
// row. Here each thread takes blocks of 16 query rows of one head: the head's
// keys are packed once into blocks of 16 keys x d (4 rows x 16 scores come from
// d steps of 2 loads and 8 FMAs), the scores are exponentiated in place
// (vec_math.h, max subtracted) and multiplied with the head's values, packed
// [T_k, d], 4 rows x 16 columns at a time. A block's scores stay in the
// thread's buffer (16 x T_k floats).
//
// CUTECPP_FUSED=0 uses ggml_flash_attn_ext instead (fused.h).
#pragma once

struct ggml_context;
struct ggml_tensor;

namespace cutecpp::attention {

// q [C, T_q, N], k and v [C, T_k, N] f32, C = heads * d -> [C, T_q, N];
// NULL where the op cannot take these inputs (the caller falls back).
ggml_tensor * attend(ggml_context * ctx, ggml_tensor * q, ggml_tensor * k, ggml_tensor * v, int heads, float scale);

}  // namespace cutecpp::attention
