#include "fused.h"

#include "custom_op.h"
#include "vec_math.h"

#include "ggml.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <vector>

namespace cutecpp::fused {

namespace {

using vec::f8;
using vec::kWidth;

struct Params {
    int groups;
    float eps;
    bool silu;
    bool tokens;  // group norm: write [C, W * H, N] instead of [W, H, C, N]
    bool operator==(const Params & o) const {
        return groups == o.groups && eps == o.eps && silu == o.silu && tokens == o.tokens;
    }
};

using custom_op::intern;
using custom_op::share;

// The sum of (x[i] + d), or of (x[i] + d)^2, over n values: float vectors
// over at most 512 values at a time, carried in double.
template <bool kSquares>
double chunked_sum(const float * x, int64_t n, float d) {
    double total = 0.0;
    for (int64_t i0 = 0; i0 < n; i0 += 512) {
        const int64_t i1 = std::min<int64_t>(n, i0 + 512);
        f8 acc = {};
        int64_t i = i0;
        for (; i + kWidth <= i1; i += kWidth) {
            const f8 v = vec::load(x + i) + d;
            acc += kSquares ? v * v : v;
        }
        for (; i < i1; ++i) acc[0] += kSquares ? (x[i] + d) * (x[i] + d) : x[i] + d;
        total += vec::sum(acc);
    }
    return total;
}
double sum(const float * x, int64_t n, float d) { return chunked_sum<false>(x, n, d); }
double sum_squares(const float * x, int64_t n, float d) { return chunked_sum<true>(x, n, d); }

// y = x * a + b (with a, b scalars or [n] vectors), then SiLU if asked.
template <bool kSilu>
void affine(const float * x, float * y, int64_t n, float a, float b) {
    int64_t i = 0;
    for (; i + kWidth <= n; i += kWidth) {
        f8 v = vec::load(x + i) * a + b;
        vec::store(y + i, kSilu ? vec::silu(v) : v);
    }
    if (i < n) {
        f8 v = vec::load_part(x + i, static_cast<int>(n - i)) * a + b;
        vec::store_part(y + i, kSilu ? vec::silu(v) : v, static_cast<int>(n - i));
    }
}

// dst [W, H, C, N]; src x, weight [C], bias [C], shift [C, N] (optional).
void group_norm_op(ggml_tensor * dst, int ith, int nth, void * userdata) {
    const Params & p = *static_cast<const Params *>(userdata);
    const ggml_tensor * x = dst->src[0];
    const auto * w = static_cast<const float *>(dst->src[1]->data);
    const auto * b = static_cast<const float *>(dst->src[2]->data);
    const float * s = dst->src[3] ? static_cast<const float *>(dst->src[3]->data) : nullptr;
    const int64_t plane = x->ne[0] * x->ne[1], c = x->ne[2], per = c / p.groups;
    const auto * xd = static_cast<const float *>(x->data);
    auto * yd = static_cast<float *>(dst->data);
    std::vector<float> row(p.tokens ? plane : 0);
    int64_t i0, i1;
    share(x->ne[3] * p.groups, ith, nth, i0, i1);
    for (int64_t item = i0; item < i1; ++item) {
        const int64_t n = item / p.groups, c0 = (item % p.groups) * per;
        const double count = static_cast<double>(per) * plane;
        double total = 0.0;
        for (int64_t ch = c0; ch < c0 + per; ++ch) {
            total += sum(xd + (n * c + ch) * plane, plane, s ? s[n * c + ch] : 0.0f);
        }
        const double mean = total / count;
        double squares = 0.0;
        for (int64_t ch = c0; ch < c0 + per; ++ch) {
            const float d = static_cast<float>((s ? s[n * c + ch] : 0.0) - mean);
            squares += sum_squares(xd + (n * c + ch) * plane, plane, d);
        }
        const float rstd = 1.0f / std::sqrt(static_cast<float>(squares / count) + p.eps);
        for (int64_t ch = c0; ch < c0 + per; ++ch) {
            const float a = rstd * w[ch];
            const float shift = static_cast<float>((s ? s[n * c + ch] : 0.0) - mean);
            const float * src = xd + (n * c + ch) * plane;
            float * out = p.tokens ? row.data() : yd + (n * c + ch) * plane;
            if (p.silu) {
                affine<true>(src, out, plane, a, shift * a + b[ch]);
            } else {
                affine<false>(src, out, plane, a, shift * a + b[ch]);
            }
            if (p.tokens) {  // token t = pixel t: [C, W * H, N]
                float * col = yd + n * plane * c + ch;
                for (int64_t t = 0; t < plane; ++t) col[t * c] = out[t];
            }
        }
    }
}

// dst [C, ...] rows; src x, weight [C], bias [C].
void layer_norm_op(ggml_tensor * dst, int ith, int nth, void * userdata) {
    const Params & p = *static_cast<const Params *>(userdata);
    const ggml_tensor * x = dst->src[0];
    const auto * w = static_cast<const float *>(dst->src[1]->data);
    const auto * b = static_cast<const float *>(dst->src[2]->data);
    const int64_t c = x->ne[0];
    int64_t r0, r1;
    share(ggml_nrows(x), ith, nth, r0, r1);
    for (int64_t r = r0; r < r1; ++r) {
        const float * src = static_cast<const float *>(x->data) + r * c;
        float * out = static_cast<float *>(dst->data) + r * c;
        const float mean = static_cast<float>(sum(src, c, 0.0f) / c);
        const float rstd = 1.0f / std::sqrt(static_cast<float>(sum_squares(src, c, -mean) / c) + p.eps);
        int64_t i = 0;
        for (; i + kWidth <= c; i += kWidth) {
            vec::store(out + i, (vec::load(src + i) - mean) * rstd * vec::load(w + i) + vec::load(b + i));
        }
        for (; i < c; ++i) out[i] = (src[i] - mean) * rstd * w[i] + b[i];
    }
}

// dst [F, ...]; src x [2F, ...].
void geglu_op(ggml_tensor * dst, int ith, int nth, void *) {
    const ggml_tensor * x = dst->src[0];
    const int64_t f = dst->ne[0];
    int64_t r0, r1;
    share(ggml_nrows(dst), ith, nth, r0, r1);
    for (int64_t r = r0; r < r1; ++r) {
        const float * h = static_cast<const float *>(x->data) + r * 2 * f;
        const float * g = h + f;
        float * out = static_cast<float *>(dst->data) + r * f;
        int64_t i = 0;
        for (; i + kWidth <= f; i += kWidth) vec::store(out + i, vec::load(h + i) * vec::gelu(vec::load(g + i)));
        if (i < f) {
            const int n = static_cast<int>(f - i);
            vec::store_part(out + i, vec::load_part(h + i, n) * vec::gelu(vec::load_part(g + i, n)), n);
        }
    }
}

// dst [W, H, C, N] = x [C, W * H, N] (token t = pixel t) + residual [W, H, C, N].
void image_add_op(ggml_tensor * dst, int ith, int nth, void *) {
    const ggml_tensor * x = dst->src[0];
    const auto * xd = static_cast<const float *>(x->data);
    const auto * rd = static_cast<const float *>(dst->src[1]->data);
    auto * yd = static_cast<float *>(dst->data);
    const int64_t plane = dst->ne[0] * dst->ne[1], c = dst->ne[2];
    const int64_t blocks = (c + kWidth - 1) / kWidth;
    int64_t i0, i1;
    share(dst->ne[3] * blocks, ith, nth, i0, i1);
    for (int64_t item = i0; item < i1; ++item) {
        const int64_t n = item / blocks, c0 = (item % blocks) * kWidth, lanes = std::min<int64_t>(kWidth, c - c0);
        for (int64_t t = 0; t < plane; ++t) {
            const float * src = xd + (n * plane + t) * c + c0;
            for (int64_t l = 0; l < lanes; ++l) {
                const int64_t i = (n * c + c0 + l) * plane + t;
                yd[i] = src[l] + rd[i];
            }
        }
    }
}

bool is_f32_vector(const ggml_tensor * t, int64_t n) {
    return t->type == GGML_TYPE_F32 && ggml_nelements(t) == n && ggml_is_contiguous(t);
}

ggml_tensor * contiguous(ggml_context * ctx, ggml_tensor * x) { return ggml_is_contiguous(x) ? x : ggml_cont(ctx, x); }

}  // namespace

bool enabled() {
    const char * v = std::getenv("CUTECPP_FUSED");
    return v == nullptr || v[0] != '0';
}

ggml_tensor * group_norm(ggml_context * ctx, ggml_tensor * x, int groups, float eps, ggml_tensor * weight,
                         ggml_tensor * bias, ggml_tensor * shift, bool silu, bool tokens) {
    const int64_t c = x->ne[2];
    const bool fits = enabled() && x->type == GGML_TYPE_F32 && groups > 0 && c % groups == 0 &&
                      is_f32_vector(weight, c) && is_f32_vector(bias, c) &&
                      (!shift || (shift->type == GGML_TYPE_F32 && shift->ne[0] == c && shift->ne[1] == x->ne[3] &&
                                  ggml_nelements(shift) == c * x->ne[3]));
    if (!fits) {
        if (shift) x = ggml_add(ctx, x, ggml_reshape_4d(ctx, contiguous(ctx, shift), 1, 1, c, x->ne[3]));
        x = ggml_group_norm(ctx, x, groups, eps);
        x = ggml_mul(ctx, x, ggml_reshape_4d(ctx, weight, 1, 1, c, 1));
        x = ggml_add(ctx, x, ggml_reshape_4d(ctx, bias, 1, 1, c, 1));
        if (silu) x = ggml_silu(ctx, x);
        if (!tokens) return x;
        x = ggml_cont(ctx, ggml_permute(ctx, x, 1, 2, 0, 3));  // [C, W, H, N]
        return ggml_reshape_3d(ctx, x, c, x->ne[1] * x->ne[2], x->ne[3]);
    }
    ggml_tensor * args[4] = {contiguous(ctx, x), weight, bias, shift ? contiguous(ctx, shift) : nullptr};
    const int64_t ne[4] = {tokens ? c : x->ne[0], tokens ? x->ne[0] * x->ne[1] : x->ne[1], tokens ? x->ne[3] : c,
                           tokens ? 1 : x->ne[3]};
    ggml_tensor * y = ggml_custom_4d(ctx, GGML_TYPE_F32, ne[0], ne[1], ne[2], ne[3], args, shift ? 4 : 3, group_norm_op,
                                     GGML_N_TASKS_MAX, const_cast<Params *>(intern(Params{groups, eps, silu, tokens})));
    ggml_set_name(y, silu ? "group norm silu" : "group norm");
    return y;
}

ggml_tensor * layer_norm(ggml_context * ctx, ggml_tensor * x, float eps, ggml_tensor * weight, ggml_tensor * bias) {
    const int64_t c = x->ne[0];
    if (!(enabled() && x->type == GGML_TYPE_F32 && is_f32_vector(weight, c) && is_f32_vector(bias, c))) {
        return ggml_add(ctx, ggml_mul(ctx, ggml_norm(ctx, x, eps), weight), bias);
    }
    ggml_tensor * args[3] = {contiguous(ctx, x), weight, bias};
    ggml_tensor * y = ggml_custom_4d(ctx, GGML_TYPE_F32, x->ne[0], x->ne[1], x->ne[2], x->ne[3], args, 3,
                                     layer_norm_op, GGML_N_TASKS_MAX, const_cast<Params *>(intern(Params{0, eps, false, false})));
    ggml_set_name(y, "layer norm");
    return y;
}

ggml_tensor * geglu(ggml_context * ctx, ggml_tensor * x) {
    const int64_t two_f = x->ne[0];
    if (!(enabled() && x->type == GGML_TYPE_F32 && two_f % 2 == 0)) return ggml_geglu_erf_swapped(ctx, x);
    ggml_tensor * args[1] = {contiguous(ctx, x)};
    ggml_tensor * y = ggml_custom_4d(ctx, GGML_TYPE_F32, two_f / 2, x->ne[1], x->ne[2], x->ne[3], args, 1, geglu_op,
                                     GGML_N_TASKS_MAX, nullptr);
    ggml_set_name(y, "geglu");
    return y;
}

ggml_tensor * image_add(ggml_context * ctx, ggml_tensor * x, ggml_tensor * residual) {
    const int64_t w = residual->ne[0], h = residual->ne[1], c = residual->ne[2], n = residual->ne[3];
    GGML_ASSERT(x->ne[0] == c && x->ne[1] == w * h && x->ne[2] == n);
    if (!(enabled() && x->type == GGML_TYPE_F32 && residual->type == GGML_TYPE_F32)) {
        x = ggml_cont(ctx, ggml_permute(ctx, ggml_reshape_4d(ctx, x, c, w, h, n), 2, 0, 1, 3));
        return ggml_add(ctx, x, residual);
    }
    ggml_tensor * args[2] = {contiguous(ctx, x), contiguous(ctx, residual)};
    ggml_tensor * y = ggml_custom_4d(ctx, GGML_TYPE_F32, w, h, c, n, args, 2, image_add_op, GGML_N_TASKS_MAX, nullptr);
    ggml_set_name(y, "image add");
    return y;
}

}  // namespace cutecpp::fused
