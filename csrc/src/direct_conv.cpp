#include "direct_conv.h"

#include "custom_op.h"
#include "ggml.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#elif defined(__aarch64__) && defined(__ARM_NEON)
#include <arm_neon.h>
#endif

namespace cutecpp::direct_conv {

namespace {

using custom_op::share;

// Eight floats: one AVX register on x86-64 (AVX2 + FMA, as the build targets),
// two NEON registers on aarch64, a plain array (which the compiler may still
// vectorise) elsewhere. fma(a, b, c) = a * b + c, rounded once on every path.
constexpr int kLanes = 8;

#if defined(__AVX2__) && defined(__FMA__)
using V = __m256;
inline V load(const float * p) { return _mm256_loadu_ps(p); }
inline void store(float * p, V a) { _mm256_storeu_ps(p, a); }
inline V splat(const float * p) { return _mm256_broadcast_ss(p); }
inline V fma(V a, V b, V c) { return _mm256_fmadd_ps(a, b, c); }
inline V add(V a, V b) { return _mm256_add_ps(a, b); }
inline V relu(V a) { return _mm256_max_ps(a, _mm256_setzero_ps()); }
#elif defined(__aarch64__) && defined(__ARM_NEON)
struct V {
    float32x4_t lo, hi;
};
inline V load(const float * p) { return {vld1q_f32(p), vld1q_f32(p + 4)}; }
inline void store(float * p, V a) {
    vst1q_f32(p, a.lo);
    vst1q_f32(p + 4, a.hi);
}
inline V splat(const float * p) { return {vld1q_dup_f32(p), vld1q_dup_f32(p)}; }
inline V fma(V a, V b, V c) { return {vfmaq_f32(c.lo, a.lo, b.lo), vfmaq_f32(c.hi, a.hi, b.hi)}; }
inline V add(V a, V b) { return {vaddq_f32(a.lo, b.lo), vaddq_f32(a.hi, b.hi)}; }
inline V relu(V a) { return {vmaxq_f32(a.lo, vdupq_n_f32(0.0f)), vmaxq_f32(a.hi, vdupq_n_f32(0.0f))}; }
#else
struct V {
    float f[kLanes];
};
inline V load(const float * p) {
    V a;
    std::memcpy(a.f, p, sizeof a.f);
    return a;
}
inline void store(float * p, V a) { std::memcpy(p, a.f, sizeof a.f); }
inline V splat(const float * p) {
    V a;
    for (float & f : a.f) f = *p;
    return a;
}
inline V fma(V a, V b, V c) {
    for (int l = 0; l < kLanes; ++l) c.f[l] = std::fma(a.f[l], b.f[l], c.f[l]);
    return c;
}
inline V add(V a, V b) {
    for (int l = 0; l < kLanes; ++l) a.f[l] += b.f[l];
    return a;
}
inline V relu(V a) {
    for (float & f : a.f) f = f > 0.0f ? f : 0.0f;
    return a;
}
#endif

struct Params {
    bool bias, residual, relu;
};
// ggml keeps the op's userdata pointer: one static entry per combination.
constexpr Params kParams[8] = {{false, false, false}, {true, false, false}, {false, true, false}, {true, true, false},
                               {false, false, true},  {true, false, true},  {false, true, true},  {true, true, true}};


// Output channels per register block (OB) and vectors along W per block (XB):
// OB * XB accumulators, XB input vectors and one broadcast weight live in
// registers; each input vector feeds OB FMAs and each weight XB. Measured on
// x86-64 (AVX2, 16 registers), 16 -> 16 channels at 512x512, one thread, in
// GFLOP/s: 4x2 90, 8x1 85, 6x2 77, 4x3 54 (spills), 2x4 50; the FMA peak is ~117.
constexpr int kOB = kBlock;
constexpr int kXB = 2;

// The pointers for one output row.
struct Row {
    const float * const * in;  // [IC * 3] zero-padded input rows y-1, y, y+1 per channel; [0] is column -1
    float * const * out;       // [OCp] output rows (a scratch row for the padding channels)
    const float * const * res; // [OCp] residual rows, or NULL
    int64_t ic, width;
    bool relu;
    const char * const * next;  // [IC] source rows the next output row copies in, or NULL
    int64_t next_bytes;
};

// Output channels [o0, o0 + OB) x columns [x0, x0 + 8 XB) of one row. w holds the
// block's weights as [IC][3][3][OB], bias [OB].
template <int OB, int XB>
inline void tile(const Row & r, const float * w, const float * bias, int64_t o0, int64_t x0) {
    V acc[OB][XB];
#pragma GCC unroll 16
    for (int ob = 0; ob < OB; ++ob) {
        const V b = splat(bias + ob);
#pragma GCC unroll 16
        for (int xb = 0; xb < XB; ++xb) acc[ob][xb] = b;
    }
    for (int64_t c = 0; c < r.ic * 3; ++c) {  // (input channel, kernel row)
        const float * in = r.in[c] + x0;
        const float * wk = w + c * 3 * OB;
#pragma GCC unroll 3
        for (int kx = 0; kx < 3; ++kx) {
            V v[XB];
#pragma GCC unroll 16
            for (int xb = 0; xb < XB; ++xb) v[xb] = load(in + kx + xb * kLanes);
#pragma GCC unroll 16
            for (int ob = 0; ob < OB; ++ob) {
                const V s = splat(wk + kx * OB + ob);
#pragma GCC unroll 16
                for (int xb = 0; xb < XB; ++xb) acc[ob][xb] = fma(v[xb], s, acc[ob][xb]);
            }
        }
    }
#pragma GCC unroll 16
    for (int ob = 0; ob < OB; ++ob) {
        float * out = r.out[o0 + ob] + x0;
        const float * res = r.res ? r.res[o0 + ob] + x0 : nullptr;
#pragma GCC unroll 16
        for (int xb = 0; xb < XB; ++xb) {
            const int64_t n = std::min<int64_t>(kLanes, r.width - x0 - xb * kLanes);
            V y = acc[ob][xb];
            if (n == kLanes) {
                if (res) y = add(y, load(res + xb * kLanes));
                if (r.relu) y = relu(y);
                store(out + xb * kLanes, y);
            } else {  // the row's last, partial vector
                float tmp[kLanes] = {};
                if (res) {
                    std::memcpy(tmp, res + xb * kLanes, n * sizeof(float));
                    y = add(y, load(tmp));
                }
                if (r.relu) y = relu(y);
                store(tmp, y);
                std::memcpy(out + xb * kLanes, tmp, n * sizeof(float));
            }
        }
    }
}

// One output row: blocks of XB vectors along it, every channel block for each.
template <int OB, int XB>
void row(const Row & r, const float * w, const float * bias, int64_t ocp) {
    static_assert(XB == 2, "the row's tail is one vector");
    const int64_t vectors = (r.width + kLanes - 1) / kLanes;
    constexpr int64_t step = XB * kLanes * sizeof(float);
    for (int64_t v = 0; v < vectors; v += XB) {
        if (r.next) {  // spread over the row: the lines of the next rows under this block
            for (int64_t c = 0; c < r.ic; ++c) {
                for (int64_t b = v * kLanes * 4; b < std::min(v * kLanes * 4 + step, r.next_bytes); b += 64) {
                    __builtin_prefetch(r.next[c] + b);
                }
            }
        }
        for (int64_t o0 = 0; o0 < ocp; o0 += OB) {
            if (v + XB <= vectors) {
                tile<OB, XB>(r, w + o0 * r.ic * 9, bias + o0, o0, v * kLanes);
            } else {
                tile<OB, 1>(r, w + o0 * r.ic * 9, bias + o0, o0, v * kLanes);
            }
        }
    }
}

// dst y [W, H, OC, N]; src x [W / f, H / f, IC, N], kernel [OB, 9, IC, OCp / OB]
// (arrange_kernel), then bias [OC] and residual [W, H, OC, N] as the params say.
void compute(ggml_tensor * dst, int ith, int nth, void * userdata) {
    const Params & p = *static_cast<const Params *>(userdata);
    const ggml_tensor * x = dst->src[0];
    const ggml_tensor * k = dst->src[1];
    const ggml_tensor * bias = p.bias ? dst->src[2] : nullptr;
    const ggml_tensor * res = p.residual ? dst->src[p.bias ? 3 : 2] : nullptr;
    const int64_t w = dst->ne[0], h = dst->ne[1], oc = dst->ne[2];
    const int64_t ic = x->ne[2];
    const int64_t ws = x->ne[0], hs = x->ne[1];  // source (before upsampling)
    const int64_t f = w / ws;                    // upsampling factor
    int64_t i0, i1;
    share(dst->ne[3] * h, ith, nth, i0, i1);
    if (i0 >= i1) return;

    const int64_t ocp = k->ne[3] * kOB;
    std::vector<float> br(ocp, 0.0f);
    if (bias) std::copy_n(static_cast<const float *>(bias->data), oc, br.begin());

    // Padded rows: column -1 at [0], then W columns, zeros to the end; the
    // last vector of a row reads up to [8 ceil(W / 8) + 1]. The stride is an odd
    // number of 64-byte lines, so that the 3 IC rows a tile reads fall into
    // different L1 sets (a 2 KiB stride at W = 512 put them into a few: -15 %).
    int64_t stride = ((w + kLanes - 1) / kLanes * kLanes + 2 + 15) / 16 * 16;
    if (stride / 16 % 2 == 0) stride += 16;
    std::vector<float> ring(3 * ic * stride, 0.0f), zero(stride, 0.0f), scratch(stride, 0.0f);
    int64_t held[3] = {-1, -1, -1};  // the source row (n * H_source + y_source) in each slot
    std::vector<const float *> in(ic * 3), resr(ocp, zero.data());
    std::vector<float *> out(ocp, scratch.data());
    std::vector<const char *> next(ic);
    Row r{in.data(), out.data(), res ? resr.data() : nullptr, ic, w, p.relu, nullptr, ws * 4};

    for (int64_t item = i0; item < i1; ++item) {
        const int64_t n = item / h, y = item % h;
        for (int ky = 0; ky < 3; ++ky) {
            const int64_t yy = y + ky - 1;
            if (yy < 0 || yy >= h) {
                for (int64_t c = 0; c < ic; ++c) in[c * 3 + ky] = zero.data();
                continue;
            }
            // The ring holds source rows: upsampled rows that repeat one share it.
            const int64_t ys = yy / f, slot = ys % 3;
            float * rows = ring.data() + slot * ic * stride;
            if (held[slot] != n * hs + ys) {
                held[slot] = n * hs + ys;
                for (int64_t c = 0; c < ic; ++c) {
                    const auto * src = reinterpret_cast<const float *>(static_cast<const char *>(x->data) +
                                                                       c * x->nb[2] + n * x->nb[3] + ys * x->nb[1]);
                    float * d = rows + c * stride + 1;
                    if (f == 1) {
                        std::memcpy(d, src, ws * sizeof(float));
                    } else if (f == 2) {
                        for (int64_t xs = 0; xs < ws; ++xs) d[2 * xs] = d[2 * xs + 1] = src[xs];
                    } else {
                        for (int64_t xs = 0; xs < ws; ++xs) std::fill(d + xs * f, d + xs * f + f, src[xs]);
                    }
                }
            }
            for (int64_t c = 0; c < ic; ++c) in[c * 3 + ky] = rows + c * stride;
        }
        // The source rows the next output row copies in, fetched while this
        // one computes (they come from memory: the image is far beyond L2).
        r.next = nullptr;
        if (y + 2 < h && (y + 2) / f != (y + 1) / f) {
            for (int64_t c = 0; c < ic; ++c) {
                next[c] = static_cast<const char *>(x->data) + c * x->nb[2] + n * x->nb[3] + (y + 2) / f * x->nb[1];
            }
            r.next = next.data();
        }
        for (int64_t o = 0; o < oc; ++o) {
            out[o] = reinterpret_cast<float *>(static_cast<char *>(dst->data) + o * dst->nb[2] + n * dst->nb[3] +
                                               y * dst->nb[1]);
            if (res) {
                resr[o] = reinterpret_cast<const float *>(static_cast<const char *>(res->data) + o * res->nb[2] +
                                                          n * res->nb[3] + y * res->nb[1]);
            }
        }
        row<kOB, kXB>(r, static_cast<const float *>(k->data), br.data(), ocp);
    }
}

}  // namespace

bool supports_kernel(const ggml_tensor * k) {
    return k->ne[0] == 3 && k->ne[1] == 3 && (k->type == GGML_TYPE_F32 || k->type == GGML_TYPE_F16) &&
           ggml_is_contiguous(k);
}

void arranged_shape(const ggml_tensor * k, int64_t ne[4]) {
    ne[0] = kOB;
    ne[1] = 9;
    ne[2] = k->ne[2];
    ne[3] = (k->ne[3] + kOB - 1) / kOB;
}

void arrange_kernel(const ggml_tensor * k, float * out) {
    const int64_t ic = k->ne[2], oc = k->ne[3], ocp = (oc + kOB - 1) / kOB * kOB;
    std::fill(out, out + ocp * ic * 9, 0.0f);
    for (int64_t o = 0; o < oc; ++o) {
        for (int64_t c = 0; c < ic; ++c) {
            for (int t = 0; t < 9; ++t) {
                const int64_t i = (o * ic + c) * 9 + t;
                out[((o / kOB * ic + c) * 9 + t) * kOB + o % kOB] =
                    k->type == GGML_TYPE_F16 ? ggml_fp16_to_fp32(static_cast<const ggml_fp16_t *>(k->data)[i])
                                             : static_cast<const float *>(k->data)[i];
            }
        }
    }
}

ggml_tensor * conv2d(ggml_context * ctx, ggml_tensor * x, ggml_tensor * kernel, int64_t oc, ggml_tensor * bias,
                     const Fuse & fuse) {
    GGML_ASSERT(x->type == GGML_TYPE_F32 && kernel->type == GGML_TYPE_F32);
    GGML_ASSERT(kernel->ne[0] == kOB && kernel->ne[1] == 9 && kernel->ne[2] == x->ne[2] && oc <= kernel->ne[3] * kOB);
    GGML_ASSERT(fuse.upsample >= 1);
    // The op reads rows at nb[1], nb[2], nb[3] strides with contiguous elements.
    if (x->nb[0] != sizeof(float)) x = ggml_cont(ctx, x);
    ggml_tensor * res = fuse.residual;
    if (res && res->nb[0] != sizeof(float)) res = ggml_cont(ctx, res);
    const int64_t f = fuse.upsample;
    ggml_tensor * args[4] = {x, kernel};
    int n = 2;
    if (bias) args[n++] = bias;
    if (res) args[n++] = res;
    const Params * p = &kParams[(bias ? 1 : 0) | (res ? 2 : 0) | (fuse.relu ? 4 : 0)];
    ggml_tensor * y = ggml_custom_4d(ctx, GGML_TYPE_F32, x->ne[0] * f, x->ne[1] * f, oc, x->ne[3], args, n, compute,
                                     GGML_N_TASKS_MAX, const_cast<Params *>(p));
    ggml_set_name(y, "direct conv");
    return y;
}

}  // namespace cutecpp::direct_conv
