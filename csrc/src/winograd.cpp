#include "winograd.h"

#include "ggml.h"

#include <algorithm>
#include <vector>

namespace cutecpp::winograd {

namespace {

constexpr int kTile = 16;  // 4x4 transformed values per tile

float kernel_value(const ggml_tensor * k, int64_t i) {
    return k->type == GGML_TYPE_F16 ? ggml_fp16_to_fp32(static_cast<const ggml_fp16_t *>(k->data)[i])
                                    : static_cast<const float *>(k->data)[i];
}

// Splits [0, n) evenly between nth threads.
void share(int64_t n, int ith, int nth, int64_t & begin, int64_t & end) {
    const int64_t per = (n + nth - 1) / nth;
    begin = std::min<int64_t>(n, per * ith);
    end = std::min<int64_t>(n, begin + per);
}

// dst V [IC, T, 16]; src x [W, H, IC, N]. Tiles t = (n * th + ty) * tw + tx.
void input_transform(ggml_tensor * dst, int ith, int nth, void *) {
    const ggml_tensor * x = dst->src[0];
    const int64_t w = x->ne[0], h = x->ne[1], ic = x->ne[2];
    const int64_t tw = (w + 1) / 2, th = (h + 1) / 2, tiles = dst->ne[1];
    int64_t t0, t1;
    share(tiles, ith, nth, t0, t1);
    const auto * xd = static_cast<const char *>(x->data);
    auto * vd = static_cast<char *>(dst->data);
    for (int64_t t = t0; t < t1; ++t) {
        const int64_t tx = t % tw, ty = (t / tw) % th, n = t / (tw * th);
        const int64_t x0 = 2 * tx - 1, y0 = 2 * ty - 1;
        for (int64_t c = 0; c < ic; ++c) {
            float d[4][4];
            const char * plane = xd + c * x->nb[2] + n * x->nb[3];
            for (int i = 0; i < 4; ++i) {
                const int64_t yy = y0 + i;
                for (int j = 0; j < 4; ++j) {
                    const int64_t xx = x0 + j;
                    d[i][j] = (yy >= 0 && yy < h && xx >= 0 && xx < w)
                                  ? *reinterpret_cast<const float *>(plane + yy * x->nb[1] + xx * x->nb[0])
                                  : 0.0f;
                }
            }
            float b[4][4];  // B^T d
            for (int j = 0; j < 4; ++j) {
                b[0][j] = d[0][j] - d[2][j];
                b[1][j] = d[1][j] + d[2][j];
                b[2][j] = d[2][j] - d[1][j];
                b[3][j] = d[1][j] - d[3][j];
            }
            for (int i = 0; i < 4; ++i) {  // (B^T d) B
                const float v[4] = {b[i][0] - b[i][2], b[i][1] + b[i][2], b[i][2] - b[i][1], b[i][1] - b[i][3]};
                for (int j = 0; j < 4; ++j) {
                    *reinterpret_cast<float *>(vd + (i * 4 + j) * dst->nb[2] + t * dst->nb[1] + c * dst->nb[0]) = v[j];
                }
            }
        }
    }
}

// dst y [W, H, OC, N]; src0 M [OC, T, 16]; src1 bias [OC] (optional).
void output_transform(ggml_tensor * dst, int ith, int nth, void *) {
    const ggml_tensor * m = dst->src[0];
    const ggml_tensor * bias = dst->src[1];
    const int64_t w = dst->ne[0], h = dst->ne[1], oc = dst->ne[2];
    const int64_t tw = (w + 1) / 2, th = (h + 1) / 2, tiles = m->ne[1];
    int64_t t0, t1;
    share(tiles, ith, nth, t0, t1);
    const auto * md = static_cast<const char *>(m->data);
    auto * yd = static_cast<char *>(dst->data);
    for (int64_t t = t0; t < t1; ++t) {
        const int64_t tx = t % tw, ty = (t / tw) % th, n = t / (tw * th);
        for (int64_t c = 0; c < oc; ++c) {
            float v[4][4];
            for (int k = 0; k < kTile; ++k) {
                v[k / 4][k % 4] = *reinterpret_cast<const float *>(md + k * m->nb[2] + t * m->nb[1] + c * m->nb[0]);
            }
            float a[2][4];  // A^T M
            for (int j = 0; j < 4; ++j) {
                a[0][j] = v[0][j] + v[1][j] + v[2][j];
                a[1][j] = v[1][j] - v[2][j] - v[3][j];
            }
            const float b = bias ? static_cast<const float *>(bias->data)[c] : 0.0f;
            char * plane = yd + c * dst->nb[2] + n * dst->nb[3];
            for (int i = 0; i < 2; ++i) {  // (A^T M) A
                const int64_t yy = 2 * ty + i;
                if (yy >= h) break;
                const float out[2] = {a[i][0] + a[i][1] + a[i][2] + b, a[i][1] - a[i][2] - a[i][3] + b};
                for (int j = 0; j < 2; ++j) {
                    const int64_t xx = 2 * tx + j;
                    if (xx < w) *reinterpret_cast<float *>(plane + yy * dst->nb[1] + xx * dst->nb[0]) = out[j];
                }
            }
        }
    }
}

}  // namespace

bool supports_kernel(const ggml_tensor * k) {
    return k->ne[0] == 3 && k->ne[1] == 3 && (k->type == GGML_TYPE_F32 || k->type == GGML_TYPE_F16) &&
           ggml_is_contiguous(k);
}

size_t transformed_bytes(const ggml_tensor * k) {
    return static_cast<size_t>(kTile) * k->ne[2] * k->ne[3] * sizeof(float);
}

void transform_kernel(const ggml_tensor * k, float * out) {
    const int64_t ic = k->ne[2], oc = k->ne[3];
    for (int64_t o = 0; o < oc; ++o) {
        for (int64_t c = 0; c < ic; ++c) {
            const int64_t base = (o * ic + c) * 9;
            float g[3][3];
            for (int i = 0; i < 9; ++i) g[i / 3][i % 3] = kernel_value(k, base + i);
            float a[4][3];  // G g
            for (int j = 0; j < 3; ++j) {
                a[0][j] = g[0][j];
                a[1][j] = 0.5f * (g[0][j] + g[1][j] + g[2][j]);
                a[2][j] = 0.5f * (g[0][j] - g[1][j] + g[2][j]);
                a[3][j] = g[2][j];
            }
            for (int i = 0; i < 4; ++i) {  // (G g) G^T
                const float u[4] = {a[i][0], 0.5f * (a[i][0] + a[i][1] + a[i][2]), 0.5f * (a[i][0] - a[i][1] + a[i][2]),
                                    a[i][2]};
                for (int j = 0; j < 4; ++j) out[((i * 4 + j) * oc + o) * ic + c] = u[j];
            }
        }
    }
}

ggml_tensor * conv2d(ggml_context * ctx, ggml_tensor * x, ggml_tensor * u, ggml_tensor * bias) {
    const int64_t w = x->ne[0], h = x->ne[1], n = x->ne[3];
    const int64_t tiles = ((w + 1) / 2) * ((h + 1) / 2) * n;
    ggml_tensor * in_args[] = {x};
    ggml_tensor * v = ggml_custom_4d(ctx, GGML_TYPE_F32, x->ne[2], tiles, kTile, 1, in_args, 1, input_transform,
                                     GGML_N_TASKS_MAX, nullptr);
    ggml_tensor * m = ggml_mul_mat(ctx, u, v);  // [OC, tiles, 16]
    ggml_tensor * out_args[] = {m, bias};
    return ggml_custom_4d(ctx, GGML_TYPE_F32, w, h, u->ne[1], n, out_args, bias ? 2 : 1, output_transform,
                          GGML_N_TASKS_MAX, nullptr);
}

}  // namespace cutecpp::winograd
