#include "norm_act.h"

#include "ggml.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <mutex>
#include <set>
#include <tuple>

#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#elif defined(__aarch64__) && defined(__ARM_NEON)
#include <arm_neon.h>
#endif

namespace cutecpp::norm_act {

namespace {

struct Params {
    int groups;
    float eps;
    bool silu, shift;
    bool operator<(const Params & o) const {
        return std::tie(groups, eps, silu, shift) < std::tie(o.groups, o.eps, o.silu, o.shift);
    }
};

// ggml keeps the op's userdata pointer for the graph's life: one entry per
// distinct setting (a handful per model), never freed; std::set nodes do not move.
const Params * intern(const Params & p) {
    static std::mutex mu;
    static std::set<Params> all;
    const std::lock_guard<std::mutex> lock(mu);
    return &*all.insert(p).first;
}

// y[i] = act(x[i] * a + b) for n floats.
#if defined(__AVX2__) && defined(__FMA__)
// exp(v) for v in [-88, 88]: 2^k * p(r), r = v - k ln 2 in [-ln2/2, ln2/2], p the degree-6 Cephes polynomial.
inline __m256 exp8(__m256 v) {
    v = _mm256_min_ps(_mm256_max_ps(v, _mm256_set1_ps(-88.0f)), _mm256_set1_ps(88.0f));
    const __m256 k = _mm256_floor_ps(_mm256_fmadd_ps(v, _mm256_set1_ps(1.44269504088896341f), _mm256_set1_ps(0.5f)));
    __m256 r = _mm256_fnmadd_ps(k, _mm256_set1_ps(0.693359375f), v);
    r = _mm256_fnmadd_ps(k, _mm256_set1_ps(-2.12194440e-4f), r);
    __m256 p = _mm256_set1_ps(1.9875691500e-4f);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
    p = _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
    const __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(k), _mm256_set1_epi32(127)), 23);
    return _mm256_mul_ps(p, _mm256_castsi256_ps(e));
}

void affine_act(const float * x, float * y, int64_t n, float a, float b, bool silu) {
    const __m256 va = _mm256_set1_ps(a), vb = _mm256_set1_ps(b), one = _mm256_set1_ps(1.0f);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 v = _mm256_fmadd_ps(_mm256_loadu_ps(x + i), va, vb);
        if (silu) v = _mm256_div_ps(v, _mm256_add_ps(one, exp8(_mm256_sub_ps(_mm256_setzero_ps(), v))));
        _mm256_storeu_ps(y + i, v);
    }
    for (; i < n; ++i) {
        const float v = std::fma(x[i], a, b);
        y[i] = silu ? v / (1.0f + std::exp(-v)) : v;
    }
}
#elif defined(__aarch64__) && defined(__ARM_NEON)
inline float32x4_t exp4(float32x4_t v) {
    v = vminq_f32(vmaxq_f32(v, vdupq_n_f32(-88.0f)), vdupq_n_f32(88.0f));
    const float32x4_t k = vrndmq_f32(vfmaq_f32(vdupq_n_f32(0.5f), v, vdupq_n_f32(1.44269504088896341f)));
    float32x4_t r = vfmsq_f32(v, k, vdupq_n_f32(0.693359375f));
    r = vfmsq_f32(r, k, vdupq_n_f32(-2.12194440e-4f));
    float32x4_t p = vdupq_n_f32(1.9875691500e-4f);
    p = vfmaq_f32(vdupq_n_f32(1.3981999507e-3f), p, r);
    p = vfmaq_f32(vdupq_n_f32(8.3334519073e-3f), p, r);
    p = vfmaq_f32(vdupq_n_f32(4.1665795894e-2f), p, r);
    p = vfmaq_f32(vdupq_n_f32(1.6666665459e-1f), p, r);
    p = vfmaq_f32(vdupq_n_f32(5.0000001201e-1f), p, r);
    p = vfmaq_f32(vaddq_f32(r, vdupq_n_f32(1.0f)), p, vmulq_f32(r, r));
    const int32x4_t e = vshlq_n_s32(vaddq_s32(vcvtq_s32_f32(k), vdupq_n_s32(127)), 23);
    return vmulq_f32(p, vreinterpretq_f32_s32(e));
}

void affine_act(const float * x, float * y, int64_t n, float a, float b, bool silu) {
    const float32x4_t va = vdupq_n_f32(a), vb = vdupq_n_f32(b), one = vdupq_n_f32(1.0f);
    int64_t i = 0;
    for (; i + 4 <= n; i += 4) {
        float32x4_t v = vfmaq_f32(vb, vld1q_f32(x + i), va);
        if (silu) v = vdivq_f32(v, vaddq_f32(one, exp4(vnegq_f32(v))));
        vst1q_f32(y + i, v);
    }
    for (; i < n; ++i) {
        const float v = std::fma(x[i], a, b);
        y[i] = silu ? v / (1.0f + std::exp(-v)) : v;
    }
}
#else
void affine_act(const float * x, float * y, int64_t n, float a, float b, bool silu) {
    for (int64_t i = 0; i < n; ++i) {
        const float v = std::fma(x[i], a, b);
        y[i] = silu ? v / (1.0f + std::exp(-v)) : v;
    }
}
#endif

// Sums of x[i] and of (x[i] - centre)^2 over n floats: eight float lanes (which
// the compiler vectorises) flushed into a double every 1024 values, so the
// result is as good as a double sum for any image size.
double sum(const float * x, int64_t n) {
    double total = 0.0;
    for (int64_t start = 0; start < n; start += 1024) {
        const int64_t end = std::min(n, start + 1024);
        float acc[8] = {};
        int64_t i = start;
        for (; i + 8 <= end; i += 8) {
            for (int l = 0; l < 8; ++l) acc[l] += x[i + l];
        }
        for (; i < end; ++i) acc[0] += x[i];
        for (float a : acc) total += a;
    }
    return total;
}

double squares(const float * x, int64_t n, float centre) {
    double total = 0.0;
    for (int64_t start = 0; start < n; start += 1024) {
        const int64_t end = std::min(n, start + 1024);
        float acc[8] = {};
        int64_t i = start;
        for (; i + 8 <= end; i += 8) {
            for (int l = 0; l < 8; ++l) {
                const float d = x[i + l] - centre;
                acc[l] += d * d;
            }
        }
        for (; i < end; ++i) acc[0] += (x[i] - centre) * (x[i] - centre);
        for (float a : acc) total += a;
    }
    return total;
}

// dst [W, H, C, N]; src x [W, H, C, N] (contiguous), gamma [C], beta [C], shift [C, N] (optional).
void compute(ggml_tensor * dst, int ith, int nth, void * userdata) {
    const Params & p = *static_cast<const Params *>(userdata);
    const ggml_tensor * x = dst->src[0];
    const auto * gamma = static_cast<const float *>(dst->src[1]->data);
    const auto * beta = static_cast<const float *>(dst->src[2]->data);
    const float * shift = p.shift ? static_cast<const float *>(dst->src[3]->data) : nullptr;
    const int64_t hw = x->ne[0] * x->ne[1], c = x->ne[2], n = x->ne[3];
    const int64_t per_group = c / p.groups;
    const int64_t items = n * p.groups;
    const int64_t per_thread = (items + nth - 1) / nth;
    const int64_t i0 = std::min(items, per_thread * ith), i1 = std::min(items, i0 + per_thread);
    for (int64_t item = i0; item < i1; ++item) {
        const int64_t b = item / p.groups, c0 = item % p.groups * per_group;
        const auto * xs = static_cast<const float *>(x->data) + (b * c + c0) * hw;
        float * ys = static_cast<float *>(dst->data) + (b * c + c0) * hw;
        double total = 0.0;
        for (int64_t k = 0; k < per_group; ++k) {
            total += sum(xs + k * hw, hw) + (shift ? shift[b * c + c0 + k] : 0.0) * static_cast<double>(hw);
        }
        const double count = static_cast<double>(per_group * hw);
        const double mean = total / count;
        double sq = 0.0;
        for (int64_t k = 0; k < per_group; ++k) {
            sq += squares(xs + k * hw, hw, static_cast<float>(mean - (shift ? shift[b * c + c0 + k] : 0.0)));
        }
        const double inv = 1.0 / std::sqrt(sq / count + static_cast<double>(p.eps));
        for (int64_t k = 0; k < per_group; ++k) {
            const double s = shift ? shift[b * c + c0 + k] : 0.0;
            const double a = inv * gamma[c0 + k];
            // (x + s - mean) * inv * gamma + beta = x * a + ((s - mean) * a + beta)
            affine_act(xs + k * hw, ys + k * hw, hw, static_cast<float>(a),
                       static_cast<float>((s - mean) * a + beta[c0 + k]), p.silu);
        }
    }
}

// dst [C, T, N]; src x [C, T, N] (contiguous), gamma [C], beta [C]; userdata: the eps.
void compute_layer(ggml_tensor * dst, int ith, int nth, void * userdata) {
    const float eps = static_cast<const Params *>(userdata)->eps;
    const ggml_tensor * x = dst->src[0];
    const auto * gamma = static_cast<const float *>(dst->src[1]->data);
    const auto * beta = static_cast<const float *>(dst->src[2]->data);
    const int64_t c = x->ne[0], rows = x->ne[1] * x->ne[2] * x->ne[3];
    const int64_t per_thread = (rows + nth - 1) / nth;
    const int64_t r0 = std::min(rows, per_thread * ith), r1 = std::min(rows, r0 + per_thread);
    for (int64_t r = r0; r < r1; ++r) {
        const float * xs = static_cast<const float *>(x->data) + r * c;
        float * ys = static_cast<float *>(dst->data) + r * c;
        const double mean = sum(xs, c) / static_cast<double>(c);
        const double var = squares(xs, c, static_cast<float>(mean)) / static_cast<double>(c);
        const double inv = 1.0 / std::sqrt(var + static_cast<double>(eps));
        const auto a = static_cast<float>(inv), b = static_cast<float>(-mean * inv);
        for (int64_t i = 0; i < c; ++i) ys[i] = std::fma(std::fma(xs[i], a, b), gamma[i], beta[i]);
    }
}

}  // namespace

ggml_tensor * layer_norm(ggml_context * ctx, ggml_tensor * x, ggml_tensor * gamma, ggml_tensor * beta, float eps) {
    GGML_ASSERT(supports(x, gamma, beta) && ggml_nelements(gamma) == x->ne[0] && ggml_nelements(beta) == x->ne[0]);
    if (!ggml_is_contiguous(x)) x = ggml_cont(ctx, x);
    ggml_tensor * args[3] = {x, gamma, beta};
    const Params * p = intern({0, eps, false, false});
    return ggml_custom_4d(ctx, GGML_TYPE_F32, x->ne[0], x->ne[1], x->ne[2], x->ne[3], args, 3, compute_layer,
                          GGML_N_TASKS_MAX, const_cast<Params *>(p));
}

bool supports(const ggml_tensor * x, const ggml_tensor * gamma, const ggml_tensor * beta) {
    return x->type == GGML_TYPE_F32 && gamma->type == GGML_TYPE_F32 && beta->type == GGML_TYPE_F32 &&
           ggml_is_contiguous(gamma) && ggml_is_contiguous(beta);
}

ggml_tensor * group_norm(ggml_context * ctx, ggml_tensor * x, ggml_tensor * gamma, ggml_tensor * beta,
                         ggml_tensor * shift, int groups, float eps, bool silu) {
    GGML_ASSERT(supports(x, gamma, beta));
    GGML_ASSERT(groups >= 1 && x->ne[2] % groups == 0 && ggml_nelements(gamma) == x->ne[2] &&
                ggml_nelements(beta) == x->ne[2]);
    if (!ggml_is_contiguous(x)) x = ggml_cont(ctx, x);
    ggml_tensor * args[4] = {x, gamma, beta, shift};
    if (shift) {
        GGML_ASSERT(shift->type == GGML_TYPE_F32 && ggml_nelements(shift) == x->ne[2] * x->ne[3]);
        if (!ggml_is_contiguous(shift)) args[3] = ggml_cont(ctx, shift);
    }
    const Params * p = intern({groups, eps, silu, shift != nullptr});
    return ggml_custom_4d(ctx, GGML_TYPE_F32, x->ne[0], x->ne[1], x->ne[2], x->ne[3], args, shift ? 4 : 3, compute,
                          GGML_N_TASKS_MAX, const_cast<Params *>(p));
}

}  // namespace cutecpp::norm_act
