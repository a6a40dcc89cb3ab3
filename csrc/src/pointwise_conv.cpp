#include "pointwise_conv.h"

#include "custom_op.h"
#include "vec_math.h"

#include "ggml.h"

#include <algorithm>
#include <cstring>
#include <vector>

namespace cutecpp::pointwise_conv {

namespace {

using vec::f8;
using vec::kWidth;

constexpr int64_t kOut = 4;           // output channels per tile
constexpr int64_t kPix = 2 * kWidth;  // pixels per tile

// acc[o][v] over the input channels for one tile; x points at the tile's first
// pixel of channel 0 (channel planes x_stride apart), w at the block's
// [IC][kOut] weights.
inline void tile(const float * x, int64_t x_stride, const float * w, int64_t ic, const float * bias, f8 acc[kOut][2]) {
    for (int64_t o = 0; o < kOut; ++o) acc[o][0] = acc[o][1] = vec::splat(bias[o]);
    for (int64_t c = 0; c < ic; ++c) {
        const f8 x0 = vec::load(x + c * x_stride), x1 = vec::load(x + c * x_stride + kWidth);
        const float * wc = w + c * kOut;
        for (int64_t o = 0; o < kOut; ++o) {
            acc[o][0] += x0 * wc[o];
            acc[o][1] += x1 * wc[o];
        }
    }
}

// dst [W, H, OC, N]; src x [W, H, IC, N], kernel [kOut, IC, OC / kOut] (arrange_kernel),
// bias [OC] (optional).
void compute(ggml_tensor * dst, int ith, int nth, void *) {
    const ggml_tensor * x = dst->src[0];
    const ggml_tensor * k = dst->src[1];
    const ggml_tensor * b = dst->src[2];
    const int64_t plane = x->ne[0] * x->ne[1], ic = x->ne[2], oc = dst->ne[2], n = x->ne[3];
    const int64_t blocks = k->ne[2], tiles = (plane + kPix - 1) / kPix;
    int64_t i0, i1;
    custom_op::share(n * tiles, ith, nth, i0, i1);
    if (i0 >= i1) return;

    const auto * w = static_cast<const float *>(k->data);
    std::vector<float> bias(blocks * kOut, 0.0f);  // padded like the kernel's channels
    if (b) std::memcpy(bias.data(), b->data, oc * sizeof(float));
    std::vector<float> pad(ic * kPix);  // a partial tile's pixels, zero padded
    const auto * xd = static_cast<const float *>(x->data);
    auto * yd = static_cast<float *>(dst->data);
    for (int64_t item = i0; item < i1; ++item) {
        const int64_t img = item / tiles, p0 = (item % tiles) * kPix, pixels = std::min(kPix, plane - p0);
        const float * src = xd + img * ic * plane + p0;
        int64_t stride = plane;
        if (pixels < kPix) {
            std::fill(pad.begin(), pad.end(), 0.0f);
            for (int64_t c = 0; c < ic; ++c) std::memcpy(pad.data() + c * kPix, src + c * plane, pixels * sizeof(float));
            src = pad.data();
            stride = kPix;
        }
        for (int64_t blk = 0; blk < blocks; ++blk) {
            f8 acc[kOut][2];
            tile(src, stride, w + blk * ic * kOut, ic, bias.data() + blk * kOut, acc);
            for (int64_t o = 0; o < std::min(kOut, oc - blk * kOut); ++o) {
                float * out = yd + (img * oc + blk * kOut + o) * plane + p0;
                if (pixels == kPix) {
                    vec::store(out, acc[o][0]);
                    vec::store(out + kWidth, acc[o][1]);
                } else {
                    float t[kPix];
                    vec::store(t, acc[o][0]);
                    vec::store(t + kWidth, acc[o][1]);
                    std::memcpy(out, t, pixels * sizeof(float));
                }
            }
        }
    }
}

}  // namespace

bool supports_kernel(const ggml_tensor * k) {
    return ggml_n_dims(k) == 4 && k->ne[0] == 1 && k->ne[1] == 1 &&
           (k->type == GGML_TYPE_F32 || k->type == GGML_TYPE_F16) && ggml_is_contiguous(k);
}

void arranged_shape(const ggml_tensor * k, int64_t ne[4]) {
    ne[0] = kOut;
    ne[1] = k->ne[2];
    ne[2] = (k->ne[3] + kOut - 1) / kOut;
    ne[3] = 1;
}

void arrange_kernel(const ggml_tensor * k, float * out) {
    const int64_t ic = k->ne[2], oc = k->ne[3];
    std::fill(out, out + (oc + kOut - 1) / kOut * kOut * ic, 0.0f);
    std::vector<float> row(ic);
    for (int64_t o = 0; o < oc; ++o) {
        const char * src = static_cast<const char *>(k->data) + o * k->nb[3];
        if (k->type == GGML_TYPE_F16) {
            ggml_fp16_to_fp32_row(reinterpret_cast<const ggml_fp16_t *>(src), row.data(), ic);
        } else {
            std::memcpy(row.data(), src, ic * sizeof(float));
        }
        for (int64_t c = 0; c < ic; ++c) out[((o / kOut) * ic + c) * kOut + o % kOut] = row[c];
    }
}

ggml_tensor * conv2d(ggml_context * ctx, ggml_tensor * x, ggml_tensor * kernel, int64_t oc, ggml_tensor * bias) {
    const bool fits = x->type == GGML_TYPE_F32 && kernel->type == GGML_TYPE_F32 &&
                      kernel->ne[0] == kOut && kernel->ne[1] == x->ne[2] && oc <= kernel->ne[2] * kOut &&
                      (!bias || (bias->type == GGML_TYPE_F32 && ggml_nelements(bias) == oc && ggml_is_contiguous(bias)));
    if (!fits) return nullptr;
    ggml_tensor * args[3] = {ggml_is_contiguous(x) ? x : ggml_cont(ctx, x), kernel, bias};
    ggml_tensor * y = ggml_custom_4d(ctx, GGML_TYPE_F32, x->ne[0], x->ne[1], oc, x->ne[3], args, bias ? 3 : 2, compute,
                                     GGML_N_TASKS_MAX, nullptr);
    ggml_set_name(y, "pointwise conv");
    return y;
}

}  // namespace cutecpp::pointwise_conv
