// The alignment module (tools/alignment_ref.py) as a ggml graph, and the
// tensors its config implies: text-encoder states -> UNet cross-attention context.
#pragma once

#include "model.h"

#include <vector>

struct ggml_context;
struct ggml_tensor;

namespace cutecpp {

// states [in_dim, T, N] -> context [ctx_dim, T, N]. Traced blocks:
// "alignment.proj_in" (after norm_in and proj_in), "alignment.blocks.<i>",
// "alignment.proj_out" (the output).
ggml_tensor * build_alignment(ggml_context * ctx, const cutecpp_model & model, ggml_tensor * states,
                              std::vector<ggml_tensor *> & blocks);

}  // namespace cutecpp
