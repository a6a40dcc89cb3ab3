#include "blocks.h"

#include "attention.h"
#include "direct_conv.h"
#include "error.h"
#include "fused.h"
#include "gemm.h"
#include "gemm_q8.h"
#include "pointwise_conv.h"
#include "winograd.h"

#include "ggml.h"

#include <cmath>
#include <cstdlib>

namespace cutecpp {

ggml_tensor * Blocks::weight(const std::string & name) const {
    const auto it = model.tensors.find(name);
    // Bundles are validated against the config at load, so this is a bug.
    if (it == model.tensors.end()) fail(CUTECPP_ERR_INTERNAL, "graph asks for a tensor the bundle lacks: " + name);
    return it->second;
}

ggml_tensor * Blocks::linear(ggml_tensor * x, const std::string & p, bool bias) const {
    ggml_tensor * w = weight(p + ".weight");
    if (fused::enabled() && x->type == GGML_TYPE_F32) {
        if (ggml_tensor * panels = model.panel_weight(p + ".weight")) {
            ggml_tensor * b = bias ? weight(p + ".bias") : nullptr;
            if (panels->type == GGML_TYPE_I8) return gemm_q8::linear(ctx, x, panels, gemm_q8::weight_oc(w), b);
            return gemm::linear(ctx, x, panels, ggml_nelements(w) / panels->ne[1], b);
        }
    }
    // A 1x1 conv kernel [1, 1, IC, OC] is the same matrix as a Linear's [IC, OC].
    if (ggml_n_dims(w) > 2) w = ggml_reshape_2d(ctx, w, w->ne[0] * w->ne[1] * w->ne[2], w->ne[3]);
    x = ggml_mul_mat(ctx, w, x);
    return bias ? ggml_add(ctx, x, weight(p + ".bias")) : x;
}

namespace {

// CUTECPP_WINOGRAD=0 forces im2col for every convolution, CUTECPP_DIRECT_CONV=0
// keeps the direct convolution out (benchmarks and tests compare the paths).
// Read when a graph is built, so a new context sees a changed environment.
bool env_on(const char * name) {
    const char * v = std::getenv(name);
    return v == nullptr || v[0] != '0';
}

// 3x3 stride-1 pad-1 convolutions with IC * OC <= 64 * 64, or <= 128 * 128 on
// images of 128 x 128 pixels or more or with a quantized Winograd U (below), go
// to the direct kernel (direct_conv.h),
// the others to Winograd (im2col where neither takes the kernel). Measured on
// the 2-core AVX2 development machine when Winograd's products still ran in
// ggml's mul_mat: one conv as a ggml graph, 2 threads, ms direct / Winograd (a
// fast or a ~2x slower phase from run to run; the direct kernel's times held):
//   IC x OC    image    direct  Winograd fast / slow
//   16 x 16    512^2      8.0      47
//   16 x 16    128^2      0.39     3.0
//   64 x 64     32^2      0.37     0.72
//   64 x 64    512^2    128      245
//   128 x 128   16^2      0.37     0.44
//   128 x 128   64^2      6.0      7.2
//   128 x 128  256^2    108      131 / 244
//   128 x 256    8^2      0.33     0.22 / 0.57
//   256 x 256    8^2      0.66     0.34 / 0.69
//   256 x 256   32^2      5.8      4.9 / 10.1
//   384 x 128   16^2      1.12     0.97 / 2.04
// Then a 128 x 128 limit at every size was best; the SD VAE decoder ran 3-7 %
// faster with it than with 64 x 64, TAESD (64 channels) ~2x faster than with
// Winograd. With Winograd's products in gemm.h, whole UNets in one process
// (tools/bench_fused.py's method, limits alternating, medians of 15 / 8): the
// shipped cute-mini (32/64/128 channels at 32/16/8 px, batch 2) 31.6 ms with
// the 128 x 128 limit, 28.3 with 64 x 64 (28.4-28.8 with 32 x 64 or 64 x 128,
// 29.4 with Winograd only); the 64/128/256 shape 53.2 vs 50.2 ms. Where U is
// quantized (q8_0 / q4_0 bundles) Winograd still runs in ggml's mul_mat, and
// the earlier 128 x 128 limit holds (it also keeps those convolutions exact:
// with a q4_0 U the "sd1" test UNet's error went from 3e-2 to 1.2e-1).
// Re-measured with banded Winograd (2026-12-02, an AMD EPYC with AVX-512, f16,
// limits overridden by hand, one process, evaluations alternating): TAESD's
// decoder at 512^2 842 ms with these limits, 1,536 ms with its 64 x 64 convs on
// Winograd; SD's VAE decoder 12.5 s with them, 12.4 s with 128 x 128 on
// Winograd at large images too (within noise). The limits stand.
// With q8_0 Winograd products on int8 dot products (gemm_q8.h, U GGML_TYPE_I8),
// the 64 x 64 limit for them too made the 64/128/256 UNet (q8_0, batch 2) 7 %
// faster (28.8 vs 31.1 ms) but doubled the "sd1" test UNet's error against
// diffusers (7.5e-3 to 1.0e-2 vs 2.7e-3 to 4.1e-3, seeds 0-2, measured before the
// 1x1 kernels were quantized too): kept at 128 x 128.
constexpr int64_t kDirectMaxChannelProduct = 64 * 64;
constexpr int64_t kDirectMaxChannelProductSlow = 128 * 128;  // large images, or a quantized Winograd U
constexpr int64_t kLargeImage = 128 * 128;

// A q8_0 bundle's widest convolutions (1024 x 1024 channels or more) on images of
// at most 8 x 8 pixels (SD 1.5's lowest level) run as im2col products on the int8
// kernels, the 3x3 kernel itself in panels (cutecpp_model::im2col_panels): 2.25x
// Winograd's multiplies on the fewest pixels, for 9 / 16 of its U's memory. SD 1.5's
// UNet (q8_0, one process, alternating, medians of 4): 2,327 vs 2,318 ms, peak RSS
// 1,314 vs 1,607 MB; cute-mini's 64/128/256 shape (256 channels at 8 x 8) was 28 %
// slower that way (25.8 vs 20.2 ms), hence the channel bound. CUTECPP_IM2COL_Q8=1
// takes every such convolution on a small image this way whatever its channels,
// =0 none (tests compare the paths on small models).
constexpr int64_t kIm2colMaxPixels = 8 * 8;
constexpr int64_t kIm2colMinChannelProduct = 1024 * 1024;

// x [W, H, IC, N] -> 3x3 conv, stride 1, padding 1, as one int8 product on im2col's columns.
ggml_tensor * im2col_q8(ggml_context * ctx, ggml_tensor * x, ggml_tensor * w, ggml_tensor * panels, ggml_tensor * b) {
    ggml_tensor * cols = ggml_im2col(ctx, w, x, 1, 1, 1, 1, 1, 1, true, GGML_TYPE_F32);  // [IC*9, OW, OH, N]
    const int64_t ow = cols->ne[1], oh = cols->ne[2], n = cols->ne[3], oc = w->ne[3];
    ggml_tensor * y = gemm_q8::linear(ctx, ggml_reshape_2d(ctx, cols, cols->ne[0], ow * oh * n), panels, oc, b);
    return ggml_cont(ctx, ggml_permute(ctx, ggml_reshape_4d(ctx, y, oc, ow, oh, n), 2, 0, 1, 3));
}

bool use_direct(const cutecpp_model & model, const ggml_tensor * kernel, int64_t pixels) {
    const int64_t product = kernel->ne[2] * kernel->ne[3];
    const int u = model.winograd_type(kernel);
    const bool slow_winograd = pixels >= kLargeImage || (u != GGML_TYPE_F32 && u != GGML_TYPE_F16);
    return env_on("CUTECPP_WINOGRAD") && env_on("CUTECPP_DIRECT_CONV") &&
           (product <= kDirectMaxChannelProduct || (product <= kDirectMaxChannelProductSlow && slow_winograd));
}

}  // namespace

ggml_tensor * Blocks::conv2d(ggml_tensor * x, const std::string & p, int stride, int pad, bool bias) const {
    if (stride == 1 && pad == 1) return conv3x3(x, p, {}, bias);
    if (stride == 1 && pad == 0 && fused::enabled()) {
        if (ggml_tensor * k = model.pointwise_kernel(p + ".weight")) {
            ggml_tensor * b = bias ? weight(p + ".bias") : nullptr;
            const int64_t oc = weight(p + ".weight")->ne[3];
            if (k->type == GGML_TYPE_I8) return gemm_q8::pointwise(ctx, x, k, oc, b);
            if (ggml_tensor * y = pointwise_conv::conv2d(ctx, x, k, oc, b)) return y;
        }
    }
    return im2col_conv2d(x, p, stride, pad, bias);
}

ggml_tensor * Blocks::conv3x3(ggml_tensor * x, const std::string & p, const ConvFuse & fuse, bool bias) const {
    const std::string name = p + ".weight";
    ggml_tensor * w = weight(name);
    const int64_t oc = w->ne[3];
    ggml_tensor * b = bias ? weight(p + ".bias") : nullptr;
    if (use_direct(model, w, x->ne[0] * x->ne[1] * fuse.upsample * fuse.upsample)) {
        if (ggml_tensor * k = model.direct_kernel(name)) {
            return direct_conv::conv2d(ctx, x, k, oc, b, {fuse.upsample, fuse.residual, fuse.relu});
        }
    }
    const bool winograd = env_on("CUTECPP_WINOGRAD");
    const char * force = std::getenv("CUTECPP_IM2COL_Q8");
    const bool wide = force ? force[0] == '1' : w->ne[2] * oc >= kIm2colMinChannelProduct;
    const bool im2col = winograd && wide && fuse.upsample == 1 &&
                        x->ne[0] * x->ne[1] <= kIm2colMaxPixels && model.winograd_type(w) == GGML_TYPE_I8;
    ggml_tensor * panels = im2col ? model.im2col_panels(name) : nullptr;
    ggml_tensor * u = winograd && !panels ? model.winograd_kernel(name) : nullptr;
    if (panels) {
        x = im2col_q8(ctx, x, w, panels, b);
    } else if (u && winograd::supports_upsample(fuse.upsample)) {
        x = winograd::conv2d(ctx, x, u, oc, b, fuse.upsample);
    } else {
        if (fuse.upsample != 1) x = upsample_nearest(x, fuse.upsample);
        x = u ? winograd::conv2d(ctx, x, u, oc, b) : im2col_conv2d(x, p, 1, 1, bias);
    }
    if (fuse.residual) x = ggml_add(ctx, x, fuse.residual);
    return fuse.relu ? ggml_relu(ctx, x) : x;
}

ggml_tensor * Blocks::im2col_conv2d(ggml_tensor * x, const std::string & p, int stride, int pad, bool bias) const {
    // Not ggml_conv_2d: it lays out im2col in f16, rounding every activation.
    ggml_tensor * w = weight(p + ".weight");  // [KW, KH, IC, OC]
    const int64_t n = x->ne[3];
    ggml_tensor * cols = ggml_im2col(ctx, w, x, stride, stride, pad, pad, 1, 1, true, GGML_TYPE_F32);
    const int64_t ow = cols->ne[1], oh = cols->ne[2], oc = w->ne[3];  // cols: [IC*KH*KW, OW, OH, N]
    ggml_tensor * y = ggml_mul_mat(ctx, ggml_reshape_2d(ctx, w, cols->ne[0], oc),
                                   ggml_reshape_2d(ctx, cols, cols->ne[0], ow * oh * n));  // [OC, OW*OH*N]
    y = ggml_cont(ctx, ggml_permute(ctx, ggml_reshape_4d(ctx, y, oc, ow, oh, n), 2, 0, 1, 3));
    return bias ? ggml_add(ctx, y, ggml_reshape_4d(ctx, weight(p + ".bias"), 1, 1, oc, 1)) : y;
}

ggml_tensor * Blocks::group_norm(ggml_tensor * x, const std::string & p, int groups, float eps, bool silu,
                                 ggml_tensor * shift, bool tokens) const {
    return fused::group_norm(ctx, x, groups, eps, weight(p + ".weight"), weight(p + ".bias"), shift, silu, tokens);
}

ggml_tensor * Blocks::layer_norm(ggml_tensor * x, const std::string & p, float eps) const {
    return fused::layer_norm(ctx, x, eps, weight(p + ".weight"), weight(p + ".bias"));
}

ggml_tensor * Blocks::resnet(ggml_tensor * x, ggml_tensor * temb_silu, const std::string & p, int groups,
                             float eps) const {
    ggml_tensor * h = group_norm(x, p + ".norm1", groups, eps, true);
    h = conv2d(h, p + ".conv1");
    ggml_tensor * t = linear(temb_silu, p + ".time_emb_proj");           // [C, N]
    h = group_norm(h, p + ".norm2", groups, eps, true, t);              // norm2(h + t)
    if (model.tensors.count(p + ".conv_shortcut.weight")) x = conv2d(x, p + ".conv_shortcut", 1, 0);
    return conv3x3(h, p + ".conv2", {1, x, false});                     // conv2(h) + x
}

ggml_tensor * Blocks::attend(ggml_tensor * q, ggml_tensor * k, ggml_tensor * v, int heads) const {
    const int64_t c = q->ne[0], t_q = q->ne[1], n = q->ne[2];
    const int64_t t_k = k->ne[1];
    const int64_t d = c / heads;
    const float scale = 1.0f / std::sqrt(static_cast<float>(d));
    if (ggml_tensor * o = attention::attend(ctx, q, k, v, heads, scale)) return o;
    // [d, heads, T, N] -> [d, T, heads, N]
    q = ggml_permute(ctx, ggml_reshape_4d(ctx, q, d, heads, t_q, n), 0, 2, 1, 3);
    k = ggml_permute(ctx, ggml_reshape_4d(ctx, k, d, heads, t_k, n), 0, 2, 1, 3);
    v = ggml_permute(ctx, ggml_reshape_4d(ctx, v, d, heads, t_k, n), 0, 2, 1, 3);
    // Fused softmax(q k^T / sqrt(d)) v, never materialising the T_q x T_k scores.
    ggml_tensor * o = ggml_flash_attn_ext(ctx, q, k, v, nullptr, scale, 0.0f, 0.0f);
    ggml_prec_set_acc(o, GGML_PREC_F32);
    return ggml_reshape_3d(ctx, o, c, t_q, n);  // result is [d, heads, T_q, N]
}

ggml_tensor * Blocks::attention(ggml_tensor * x, ggml_tensor * context, const std::string & p, int heads) const {
    ggml_tensor * q = linear(x, p + ".to_q", false);
    ggml_tensor * k = linear(context, p + ".to_k", false);
    ggml_tensor * v = linear(context, p + ".to_v", false);
    return linear(attend(q, k, v, heads), p + ".to_out.0");
}

ggml_tensor * Blocks::transformer2d(ggml_tensor * x, ggml_tensor * context, const std::string & p, int heads,
                                    int depth, int groups) const {
    ggml_tensor * residual = x;
    // GroupNorm, written as tokens [C, W*H, N] (token index = h*W + w, as
    // diffusers; eps fixed there). A 1x1-conv projection is applied as a Linear
    // on the tokens: same result, no im2col.
    x = group_norm(x, p + ".norm", groups, 1e-6f, false, nullptr, true);
    x = linear(x, p + ".proj_in");

    for (int k = 0; k < depth; ++k) {
        const std::string b = p + ".tb." + std::to_string(k);
        ggml_tensor * normed = layer_norm(x, b + ".norm1", 1e-5f);
        x = ggml_add(ctx, x, attention(normed, normed, b + ".attn1", heads));
        x = ggml_add(ctx, x, attention(layer_norm(x, b + ".norm2", 1e-5f), context, b + ".attn2", heads));
        ggml_tensor * ff = linear(layer_norm(x, b + ".norm3", 1e-5f), b + ".ff.net.0.proj");
        ff = fused::geglu(ctx, ff);  // first half * gelu(second half)
        x = ggml_add(ctx, x, linear(ff, b + ".ff.net.2"));
    }

    return fused::image_add(ctx, linear(x, p + ".proj_out"), residual);  // tokens back to [W, H, C, N]
}

}  // namespace cutecpp

namespace cutecpp {

ggml_tensor * Blocks::upsample_nearest(ggml_tensor * x, int factor) const {
    // Two broadcasts (ggml_repeat) instead of ggml_upscale's generic
    // interpolation, which measured ~20x slower for this case.
    const int64_t w = x->ne[0], h = x->ne[1], cn = x->ne[2] * x->ne[3];
    ggml_tensor * t = ggml_reshape_4d(ctx, x, 1, w, h, cn);
    t = ggml_repeat(ctx, t, ggml_new_tensor_4d(ctx, x->type, factor, w, h, cn));         // [f, W, H, CN]
    t = ggml_reshape_4d(ctx, t, factor * w, 1, h, cn);
    t = ggml_repeat(ctx, t, ggml_new_tensor_4d(ctx, x->type, factor * w, factor, h, cn));  // [fW, f, H, CN]
    return ggml_reshape_4d(ctx, t, factor * w, factor * h, x->ne[2], x->ne[3]);
}

}  // namespace cutecpp

namespace cutecpp {

ggml_tensor * Blocks::resnet_plain(ggml_tensor * x, const std::string & p, int groups, float eps,
                                   const char * shortcut) const {
    ggml_tensor * h = group_norm(x, p + ".norm1", groups, eps, true);
    h = conv2d(h, p + ".conv1");
    h = group_norm(h, p + ".norm2", groups, eps, true);
    const std::string sc = p + "." + shortcut;
    if (model.tensors.count(sc + ".weight")) x = conv2d(x, sc, 1, 0);
    return conv3x3(h, p + ".conv2", {1, x, false});                     // conv2(h) + x
}

ggml_tensor * Blocks::vae_attention(ggml_tensor * x, const std::string & p, int groups, float eps) const {
    // GroupNorm as tokens [C, W*H, N] (token index = h*W + w, as diffusers' view).
    ggml_tensor * t = group_norm(x, p + ".group_norm", groups, eps, false, nullptr, true);
    ggml_tensor * o = attend(linear(t, p + ".to_q"), linear(t, p + ".to_k"), linear(t, p + ".to_v"), 1);
    return fused::image_add(ctx, linear(o, p + ".to_out.0"), x);  // [C, T_q, N] back to the image, + x
}

}  // namespace cutecpp
