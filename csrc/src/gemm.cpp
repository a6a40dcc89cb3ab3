#include "gemm.h"

#include "custom_op.h"
#include "vec_math.h"

#include "ggml.h"

#include <algorithm>
#include <cstring>
#include <vector>

namespace cutecpp::gemm {

namespace {

using vec::f8;
using vec::kWidth;

constexpr int64_t kRows = 6;           // rows per register tile
constexpr int64_t kChunk = 8 * kRows;  // rows per work item (one panel, reused from cache)

struct Shape {
    int64_t k, oc;
};
Shape shape_of(const ggml_tensor * w) {
    return ggml_n_dims(w) > 2 ? Shape{w->ne[0] * w->ne[1] * w->ne[2], w->ne[3]} : Shape{w->ne[0], w->ne[1]};
}

template <bool kF16>
inline void weights(const void * panel, int64_t k, f8 & w0, f8 & w1) {
    if (kF16) {
        const auto * p = static_cast<const uint16_t *>(panel) + k * kPanel;
        w0 = vec::load_f16(p);
        w1 = vec::load_f16(p + kWidth);
    } else {
        const auto * p = static_cast<const float *>(panel) + k * kPanel;
        w0 = vec::load(p);
        w1 = vec::load(p + kWidth);
    }
}

// out[r][0 .. width) = bias + x[r] . panel columns, for R rows (x rows ldx
// apart, out rows ldo apart).
template <int R, bool kF16>
void tile(const float * x, int64_t ldx, const void * panel, int64_t k, const float * bias, float * out, int64_t ldo,
          int64_t width) {
    f8 acc[R][2];
    const f8 b0 = vec::load(bias), b1 = vec::load(bias + kWidth);
    for (int r = 0; r < R; ++r) {
        acc[r][0] = b0;
        acc[r][1] = b1;
    }
    for (int64_t kk = 0; kk < k; ++kk) {
        f8 w0, w1;
        weights<kF16>(panel, kk, w0, w1);
        for (int r = 0; r < R; ++r) {
            const float a = x[r * ldx + kk];
            acc[r][0] += a * w0;
            acc[r][1] += a * w1;
        }
    }
    for (int r = 0; r < R; ++r) {
        float * o = out + r * ldo;
        if (width == kPanel) {
            vec::store(o, acc[r][0]);
            vec::store(o + kWidth, acc[r][1]);
        } else {
            float t[kPanel];
            vec::store(t, acc[r][0]);
            vec::store(t + kWidth, acc[r][1]);
            std::memcpy(o, t, width * sizeof(float));
        }
    }
}

template <bool kF16>
void rows(int64_t n, const float * x, int64_t ldx, const void * panel, int64_t k, const float * bias, float * out,
          int64_t ldo, int64_t width) {
    switch (n) {
        case 6: return tile<6, kF16>(x, ldx, panel, k, bias, out, ldo, width);
        case 5: return tile<5, kF16>(x, ldx, panel, k, bias, out, ldo, width);
        case 4: return tile<4, kF16>(x, ldx, panel, k, bias, out, ldo, width);
        case 3: return tile<3, kF16>(x, ldx, panel, k, bias, out, ldo, width);
        case 2: return tile<2, kF16>(x, ldx, panel, k, bias, out, ldo, width);
        default: return tile<1, kF16>(x, ldx, panel, k, bias, out, ldo, width);
    }
}

// dst [OC, rows, (B)]; src x [K, rows, (B)] (contiguous), panels [kPanel, K, blocks, B],
// bias [OC] (optional). B > 1: one product per batch, each with its own panels.
void compute(ggml_tensor * dst, int ith, int nth, void *) {
    const ggml_tensor * x = dst->src[0];
    const ggml_tensor * p = dst->src[1];
    const ggml_tensor * b = dst->src[2];
    const int64_t k = x->ne[0], oc = dst->ne[0], blocks = p->ne[2], batches = p->ne[3];
    const int64_t n = batches > 1 ? x->ne[1] : ggml_nrows(x);  // rows per batch
    std::vector<float> bias(blocks * kPanel, 0.0f);
    if (b) std::memcpy(bias.data(), b->data, oc * sizeof(float));
    const bool f16 = p->type == GGML_TYPE_F16;
    custom_op::for_each_item(batches, blocks, n, kChunk, ith, nth, [&](int64_t bat, int64_t blk, int64_t r0,
                                                                        int64_t r1) {
        const void * panel = static_cast<const char *>(p->data) + blk * p->nb[2] + bat * p->nb[3];
        const float * xd = static_cast<const float *>(x->data) + bat * n * k;
        float * yd = static_cast<float *>(dst->data) + bat * n * oc;
        const int64_t width = std::min(kPanel, oc - blk * kPanel);
        for (int64_t r = r0; r < r1; r += kRows) {
            const int64_t m = std::min(kRows, r1 - r);
            float * out = yd + r * oc + blk * kPanel;
            if (f16) {
                rows<true>(m, xd + r * k, k, panel, k, bias.data() + blk * kPanel, out, oc, width);
            } else {
                rows<false>(m, xd + r * k, k, panel, k, bias.data() + blk * kPanel, out, oc, width);
            }
        }
    });
}

}  // namespace

bool supports_weight(const ggml_tensor * w) {
    const bool shape = ggml_n_dims(w) <= 2 || (ggml_n_dims(w) == 4 && w->ne[0] == 1 && w->ne[1] == 1);
    return shape && (w->type == GGML_TYPE_F32 || w->type == GGML_TYPE_F16) && ggml_is_contiguous(w);
}

void panel_shape(const ggml_tensor * w, int64_t ne[4]) {
    const Shape s = shape_of(w);
    ne[0] = kPanel;
    ne[1] = s.k;
    ne[2] = (s.oc + kPanel - 1) / kPanel;
    ne[3] = 1;
}

size_t panel_bytes(const ggml_tensor * w) {
    int64_t ne[4];
    panel_shape(w, ne);
    return static_cast<size_t>(ne[0] * ne[1] * ne[2]) * ggml_type_size(w->type);
}

void pack(const ggml_tensor * w, void * out) {
    const Shape s = shape_of(w);
    pack_rows(w->data, ggml_type_size(w->type), s.k, s.oc, out);
}

void pack_rows(const void * rows, size_t size, int64_t k, int64_t oc, void * out) {
    const size_t blocks = static_cast<size_t>((oc + kPanel - 1) / kPanel);
    std::memset(out, 0, blocks * kPanel * k * size);
    const auto * src = static_cast<const char *>(rows);
    auto * dst = static_cast<char *>(out);
    for (int64_t o = 0; o < oc; ++o) {  // the values are copied as they are (f32 or f16 bits)
        for (int64_t kk = 0; kk < k; ++kk) {
            std::memcpy(dst + (((o / kPanel) * k + kk) * kPanel + o % kPanel) * size, src + (o * k + kk) * size, size);
        }
    }
}

ggml_tensor * linear(ggml_context * ctx, ggml_tensor * x, ggml_tensor * panels, int64_t oc, ggml_tensor * bias) {
    GGML_ASSERT(x->type == GGML_TYPE_F32 && x->ne[0] == panels->ne[1] && oc <= panels->ne[2] * kPanel);
    GGML_ASSERT(panels->ne[3] == 1 || (x->ne[2] == panels->ne[3] && x->ne[3] == 1));
    GGML_ASSERT(!bias || (bias->type == GGML_TYPE_F32 && ggml_nelements(bias) == oc));
    ggml_tensor * args[3] = {ggml_is_contiguous(x) ? x : ggml_cont(ctx, x), panels, bias};
    ggml_tensor * y = ggml_custom_4d(ctx, GGML_TYPE_F32, oc, x->ne[1], x->ne[2], x->ne[3], args, bias ? 3 : 2, compute,
                                     GGML_N_TASKS_MAX, nullptr);
    ggml_set_name(y, "linear");
    return y;
}

}  // namespace cutecpp::gemm
