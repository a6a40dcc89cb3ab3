#include "attention.h"

#include "custom_op.h"
#include "fused.h"
#include "vec_math.h"

#include "ggml.h"

#include <algorithm>
#include <cstring>
#include <vector>

namespace cutecpp::attention {

namespace {

using vec::f8;
using vec::kWidth;

constexpr int64_t kRows = 16;  // query rows per work item
constexpr int64_t kKeys = 32;  // keys padded to a multiple of this

struct Params {
    int heads;
    float scale;
    bool operator==(const Params & o) const { return heads == o.heads && scale == o.scale; }
};

using custom_op::intern;

// Four query rows at a time (R <= 4 for the last): scores[r][j] = scale * q_r . k_j
// for 16 keys per step, j < tkp (padded keys score 0 and softmax_rows drops
// them). kt holds the head's keys in blocks of 16: [tkp / 16][d][16].
template <int R>
void score_rows(const float * const * q, const float * kt, int64_t d, int64_t tkp, float scale, float * const * s) {
    for (int64_t j = 0; j < tkp; j += 2 * kWidth) {
        const float * kb = kt + j * d;  // this block of 16 keys
        f8 acc[R][2] = {};
        for (int64_t c = 0; c < d; ++c) {
            const f8 k0 = vec::load(kb + c * 2 * kWidth), k1 = vec::load(kb + c * 2 * kWidth + kWidth);
            for (int r = 0; r < R; ++r) {
                const float a = q[r][c];
                acc[r][0] += a * k0;
                acc[r][1] += a * k1;
            }
        }
        for (int r = 0; r < R; ++r) {
            vec::store(s[r] + j, acc[r][0] * scale);
            vec::store(s[r] + j + kWidth, acc[r][1] * scale);
        }
    }
}

void scores(const float * q, int64_t q_stride, int64_t rows, const float * kt, int64_t d, int64_t tkp, float scale,
            float * s) {
    for (int64_t r0 = 0; r0 < rows; r0 += 4) {
        const float * qr[4];
        float * sr[4];
        for (int64_t i = 0; i < 4; ++i) {
            qr[i] = q + std::min(r0 + i, rows - 1) * q_stride;
            sr[i] = s + std::min(r0 + i, rows - 1) * tkp;
        }
        switch (std::min<int64_t>(4, rows - r0)) {
            case 4: score_rows<4>(qr, kt, d, tkp, scale, sr); break;
            case 3: score_rows<3>(qr, kt, d, tkp, scale, sr); break;
            case 2: score_rows<2>(qr, kt, d, tkp, scale, sr); break;
            default: score_rows<1>(qr, kt, d, tkp, scale, sr); break;
        }
    }
}

// Each row: exp(s - max) over the tk keys, zeros over the padding; inv[r] = 1 / the row's sum.
void softmax_rows(float * s, int64_t rows, int64_t tk, int64_t tkp, float * inv) {
    const int64_t whole = tk / kWidth * kWidth;
    for (int64_t r = 0; r < rows; ++r) {
        float * sr = s + r * tkp;
        f8 mv = vec::splat(sr[0]);
        for (int64_t j = 0; j < whole; j += kWidth) mv = vec::max(mv, vec::load(sr + j));
        float m = mv[0];
        for (int l = 1; l < kWidth; ++l) m = std::max(m, mv[l]);
        for (int64_t j = whole; j < tk; ++j) m = std::max(m, sr[j]);
        for (int64_t j = 0; j < tkp; j += kWidth) vec::store(sr + j, vec::exp(vec::load(sr + j) - m));
        for (int64_t j = tk; j < tkp; ++j) sr[j] = 0.0f;
        f8 acc = {};
        for (int64_t j = 0; j < whole; j += kWidth) acc += vec::load(sr + j);
        double sum = vec::sum(acc);
        for (int64_t j = whole; j < tk; ++j) sum += sr[j];
        inv[r] = static_cast<float>(1.0 / sum);
    }
}

// out rows r = p_r V / sum_r, four rows and two vectors of V's columns at a
// time (one for the last of an odd count). vt holds the head's values as
// [tk][dp] (dp = d rounded up to 8, zero padded); out rows are o_stride apart.
void weighted_values(const float * p, int64_t rows, int64_t tk, int64_t tkp, const float * vt, int64_t dp, int64_t d,
                     const float * inv, float * out, int64_t o_stride) {
    for (int64_t r0 = 0; r0 < rows; r0 += 4) {
        const int64_t nr = std::min<int64_t>(4, rows - r0);
        const float * pr[4];
        for (int64_t i = 0; i < 4; ++i) pr[i] = p + (r0 + std::min<int64_t>(i, nr - 1)) * tkp;
        for (int64_t c = 0; c < dp; c += 2 * kWidth) {
            const bool two = c + 2 * kWidth <= dp;
            f8 acc[4][2] = {};
            for (int64_t j = 0; j < tk; ++j) {
                const float * vj = vt + j * dp + c;
                const f8 x0 = vec::load(vj), x1 = two ? vec::load(vj + kWidth) : f8{};
                for (int i = 0; i < 4; ++i) {
                    acc[i][0] += pr[i][j] * x0;
                    acc[i][1] += pr[i][j] * x1;
                }
            }
            for (int64_t i = 0; i < nr; ++i) {
                float y[2 * kWidth];
                vec::store(y, acc[i][0] * inv[r0 + i]);
                vec::store(y + kWidth, acc[i][1] * inv[r0 + i]);
                std::memcpy(out + (r0 + i) * o_stride + c, y, std::min<int64_t>(2 * kWidth, d - c) * sizeof(float));
            }
        }
    }
}

// dst [C, T_q, N]; src q [C, T_q, N], k [C, T_k, N], v [C, T_k, N].
void attention_op(ggml_tensor * dst, int ith, int nth, void * userdata) {
    const Params & p = *static_cast<const Params *>(userdata);
    const ggml_tensor * q = dst->src[0];
    const ggml_tensor * k = dst->src[1];
    const ggml_tensor * v = dst->src[2];
    const int64_t c = q->ne[0], tq = q->ne[1], tk = k->ne[1], heads = p.heads, d = c / heads;
    const int64_t tkp = (tk + kKeys - 1) / kKeys * kKeys;
    const int64_t blocks = (tq + kRows - 1) / kRows;
    int64_t i0, i1;
    custom_op::share(q->ne[2] * heads * blocks, ith, nth, i0, i1);
    if (i0 >= i1) return;

    const int64_t dp = (d + kWidth - 1) / kWidth * kWidth;
    std::vector<float> kt(d * tkp, 0.0f), vt(tk * dp, 0.0f), s(kRows * tkp), inv(kRows);
    int64_t held = -1;  // the (image, head) whose keys and values kt and vt hold
    const auto * qd = static_cast<const float *>(q->data);
    const auto * kd = static_cast<const float *>(k->data);
    const auto * vd = static_cast<const float *>(v->data);
    auto * od = static_cast<float *>(dst->data);
    for (int64_t item = i0; item < i1; ++item) {
        const int64_t nh = item / blocks, n = nh / heads, h = nh % heads, r0 = (item % blocks) * kRows;
        const int64_t rows = std::min(kRows, tq - r0);
        if (held != nh) {
            held = nh;
            for (int64_t j = 0; j < tk; ++j) {
                const float * kj = kd + (n * tk + j) * c + h * d;
                float * block = kt.data() + (j / (2 * kWidth)) * d * 2 * kWidth + j % (2 * kWidth);
                for (int64_t e = 0; e < d; ++e) block[e * 2 * kWidth] = kj[e];
                std::memcpy(vt.data() + j * dp, vd + (n * tk + j) * c + h * d, d * sizeof(float));
            }
        }
        scores(qd + (n * tq + r0) * c + h * d, c, rows, kt.data(), d, tkp, p.scale, s.data());
        softmax_rows(s.data(), rows, tk, tkp, inv.data());
        weighted_values(s.data(), rows, tk, tkp, vt.data(), dp, d, inv.data(), od + (n * tq + r0) * c + h * d, c);
    }
}

}  // namespace

ggml_tensor * attend(ggml_context * ctx, ggml_tensor * q, ggml_tensor * k, ggml_tensor * v, int heads, float scale) {
    bool fits = fused::enabled() && heads > 0 && q->ne[0] % heads == 0 && k->ne[1] == v->ne[1];
    for (ggml_tensor * t : {q, k, v}) {
        fits = fits && t->type == GGML_TYPE_F32 && t->ne[0] == q->ne[0] && t->ne[2] == q->ne[2] && t->ne[3] == 1;
    }
    if (!fits) return nullptr;
    ggml_tensor * args[3] = {q, k, v};
    for (ggml_tensor *& t : args) t = ggml_is_contiguous(t) ? t : ggml_cont(ctx, t);
    ggml_tensor * o = ggml_custom_4d(ctx, GGML_TYPE_F32, q->ne[0], q->ne[1], q->ne[2], 1, args, 3, attention_op,
                                     GGML_N_TASKS_MAX, const_cast<Params *>(intern(Params{heads, scale})));
    ggml_set_name(o, "attention");
    return o;
}

}  // namespace cutecpp::attention
