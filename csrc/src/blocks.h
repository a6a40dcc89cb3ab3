// Building blocks of the diffusion networks as ggml graph pieces. Tensor
// layouts follow ggml: images are [W, H, C, N], token sequences [C, T, N];
// weights are the bundle's tensors, named as in the checkpoint.
#pragma once

#include "model.h"

#include <string>

struct ggml_context;
struct ggml_tensor;

namespace cutecpp {

struct Blocks {
    ggml_context * ctx;
    const cutecpp_model & model;

    ggml_tensor * weight(const std::string & name) const;

    ggml_tensor * linear(ggml_tensor * x, const std::string & p, bool bias = true) const;
    ggml_tensor * conv2d(ggml_tensor * x, const std::string & p, int stride = 1, int pad = 1, bool bias = true) const;
    // relu(conv3x3(upsample_nearest(x, upsample)) + residual): one op where the
    // direct convolution takes the kernel (direct_conv.h), the separate ops
    // otherwise. residual may be NULL; a 3x3 stride-1 pad-1 conv.
    struct ConvFuse {
        int upsample = 1;
        ggml_tensor * residual = nullptr;
        bool relu = false;
    };
    ggml_tensor * conv3x3(ggml_tensor * x, const std::string & p, const ConvFuse & fuse, bool bias = true) const;
    // im2col and one matmul: any kernel size, stride and padding (conv2d's fallback).
    ggml_tensor * im2col_conv2d(ggml_tensor * x, const std::string & p, int stride, int pad, bool bias) const;
    // act(GroupNorm(x + shift)) with the affine weights: shift [C, N] or NULL,
    // act SiLU or none; tokens writes [C, W*H, N] for a transformer. One fused
    // op (fused.h).
    ggml_tensor * group_norm(ggml_tensor * x, const std::string & p, int groups, float eps, bool silu = false,
                             ggml_tensor * shift = nullptr, bool tokens = false) const;
    ggml_tensor * layer_norm(ggml_tensor * x, const std::string & p, float eps) const;

    // diffusers ResnetBlock2D (GroupNorm, SiLU, 3x3 convs, time embedding
    // projection, 1x1 shortcut when channels change).
    ggml_tensor * resnet(ggml_tensor * x, ggml_tensor * temb_silu, const std::string & p, int groups,
                         float eps) const;
    // Multi-head softmax(q k^T / sqrt(d)) v for q [C, T_q, N], k and v [C, T_k, N] -> [C, T_q, N].
    ggml_tensor * attend(ggml_tensor * q, ggml_tensor * k, ggml_tensor * v, int heads) const;
    // diffusers Attention: q from x, k/v from ctx (x itself for self-attention).
    ggml_tensor * attention(ggml_tensor * x, ggml_tensor * context, const std::string & p, int heads) const;
    // diffusers Transformer2DModel with `depth` BasicTransformerBlocks.
    // proj_in/proj_out may be Linear or 1x1 Conv (use_linear_projection).
    ggml_tensor * transformer2d(ggml_tensor * x, ggml_tensor * context, const std::string & p, int heads, int depth,
                                int groups) const;
    // Nearest-neighbour upsampling by an integer factor.
    ggml_tensor * upsample_nearest(ggml_tensor * x, int factor) const;

    // diffusers ResnetBlock2D without time embedding (temb_channels=None, as in
    // the VAE): GroupNorm, SiLU, 3x3 conv, twice; 1x1 shortcut when channels change
    // (named p.<shortcut>: the bundle abbreviates it in the vae_encoder).
    ggml_tensor * resnet_plain(ggml_tensor * x, const std::string & p, int groups, float eps,
                               const char * shortcut = "conv_shortcut") const;
    // diffusers' VAE mid-block Attention: GroupNorm, one head of dim C over the
    // H*W tokens, biased to_q/to_k/to_v/to_out.0, plus the input (residual).
    ggml_tensor * vae_attention(ggml_tensor * x, const std::string & p, int groups, float eps) const;
};

}  // namespace cutecpp
