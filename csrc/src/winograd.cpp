#include "winograd.h"

#include "custom_op.h"
#include "gemm.h"
#include "gemm_q8.h"
#include "ggml.h"

#include <algorithm>
#include <vector>

namespace cutecpp::winograd {

namespace {

using custom_op::intern;
using custom_op::share;

constexpr int kTile = 16;  // 4x4 transformed values per tile

float kernel_value(const ggml_tensor * k, int64_t i) {
    return k->type == GGML_TYPE_F16 ? ggml_fp16_to_fp32(static_cast<const ggml_fp16_t *>(k->data)[i])
                                    : static_cast<const float *>(k->data)[i];
}

// Both transforms work on a row of tiles for a block of kLanes channels at a
// time: rows are read (or written) contiguously per channel, the arithmetic
// runs on kLanes channels at once (the loops over `l` vectorise), and the
// transformed values, channel-innermost, are stored kLanes at a time.
constexpr int kLanes = 8;

constexpr int kMaxUpsample = 8;

// A convolution runs in bands of tile rows (r = n * th + ty, r0 <= r < r1), so that
// V and M, which ggml-alloc reuses from band to band, stay within kBandBytes however
// large the image (SD's VAE decoder at 256^2 with 512 channels: 0.5 GB each unbanded).
// 8 MB: SD VAE decode peak RSS 2.70 GB unbanded, 1.15 GB so, and faster than 2 or
// 32 MB bands (docs/benchmarks.md); cute-mini's UNet fits one band. The ops' userdata.
constexpr int64_t kBandBytes = int64_t{8} << 20;
struct Band {
    int upsample;     // the input transform reads x upsampled this many times (nearest)
    int64_t r0, r1;   // tile rows
    bool inplace;     // output transform: dst is a view of src[0], an earlier band's output
    bool operator==(const Band & o) const {
        return upsample == o.upsample && r0 == o.r0 && r1 == o.r1 && inplace == o.inplace;
    }
};

// Work items: (tile row r of the band, channel block cb), shared between threads.
struct RowBlocks {
    int64_t th, r0, blocks, items;
    RowBlocks(const Band & band, int64_t th_, int64_t channels)
        : th(th_), r0(band.r0), blocks((channels + kLanes - 1) / kLanes), items((band.r1 - band.r0) * blocks) {}
    void at(int64_t item, int64_t & n, int64_t & ty, int64_t & cb) const {
        cb = item % blocks;
        const int64_t r = r0 + item / blocks;
        ty = r % th;
        n = r / th;
    }
};

// dst V [IC, T, 16] for the band's tiles; src x [W / f, H / f, IC, N] read as its
// f-fold nearest upsampling [W, H, IC, N]. Tile t = (n * th + ty - r0) * tw + tx.
void input_transform(ggml_tensor * dst, int ith, int nth, void * userdata) {
    const ggml_tensor * x = dst->src[0];
    const Band & band = *static_cast<const Band *>(userdata);
    const int64_t f = band.upsample;
    const int64_t w = x->ne[0] * f, h = x->ne[1] * f, ic = x->ne[2];
    const int64_t tw = (w + 1) / 2, th = (h + 1) / 2;
    const int64_t span = 2 * tw + 2;  // input columns -1 .. 2*tw
    const RowBlocks work(band, th, ic);
    std::vector<float> rows(4 * span * kLanes);  // [4 rows][span][lanes], zero padded
    int64_t i0, i1;
    share(work.items, ith, nth, i0, i1);
    for (int64_t item = i0; item < i1; ++item) {
        int64_t n, ty, cb;
        work.at(item, n, ty, cb);
        const int64_t c0 = cb * kLanes, lanes = std::min<int64_t>(kLanes, ic - c0);
        std::fill(rows.begin(), rows.end(), 0.0f);
        for (int64_t l = 0; l < lanes; ++l) {
            const char * plane = static_cast<const char *>(x->data) + (c0 + l) * x->nb[2] + n * x->nb[3];
            for (int i = 0; i < 4; ++i) {
                const int64_t yy = 2 * ty - 1 + i;
                if (yy < 0 || yy >= h) continue;
                const char * src = plane + (yy / f) * x->nb[1];
                float * row = rows.data() + (i * span + 1) * kLanes + l;
                for (int64_t xx = 0; xx < w; ++xx) {
                    row[xx * kLanes] = *reinterpret_cast<const float *>(src + (xx / f) * x->nb[0]);
                }
            }
        }
        for (int64_t tx = 0; tx < tw; ++tx) {
            const int64_t t = (n * th + ty - band.r0) * tw + tx;
            float b[4][4][kLanes];  // B^T d
            for (int j = 0; j < 4; ++j) {
                const float * d0 = rows.data() + ((0 * span) + 2 * tx + j) * kLanes;
                const float * d1 = d0 + span * kLanes;
                const float * d2 = d1 + span * kLanes;
                const float * d3 = d2 + span * kLanes;
                for (int l = 0; l < kLanes; ++l) {
                    b[0][j][l] = d0[l] - d2[l];
                    b[1][j][l] = d1[l] + d2[l];
                    b[2][j][l] = d2[l] - d1[l];
                    b[3][j][l] = d1[l] - d3[l];
                }
            }
            for (int i = 0; i < 4; ++i) {  // (B^T d) B, stored lanes at a time
                float v[4][kLanes];
                for (int l = 0; l < kLanes; ++l) {
                    v[0][l] = b[i][0][l] - b[i][2][l];
                    v[1][l] = b[i][1][l] + b[i][2][l];
                    v[2][l] = b[i][2][l] - b[i][1][l];
                    v[3][l] = b[i][1][l] - b[i][3][l];
                }
                for (int j = 0; j < 4; ++j) {
                    auto * out = reinterpret_cast<float *>(static_cast<char *>(dst->data) + (i * 4 + j) * dst->nb[2] +
                                                           t * dst->nb[1] + c0 * dst->nb[0]);
                    std::copy(v[j], v[j] + lanes, out);
                }
            }
        }
    }
}

// dst y [W, H, OC, N], the band's rows; srcs M [OC, T, 16] (the band's tiles) and
// bias [OC] (optional), after the earlier band's y when the band is in place.
void output_transform(ggml_tensor * dst, int ith, int nth, void * userdata) {
    const Band & band = *static_cast<const Band *>(userdata);
    const ggml_tensor * m = dst->src[band.inplace ? 1 : 0];
    const ggml_tensor * bias = dst->src[band.inplace ? 2 : 1];
    const int64_t w = dst->ne[0], h = dst->ne[1], oc = dst->ne[2];
    const int64_t tw = (w + 1) / 2, th = (h + 1) / 2;
    const RowBlocks work(band, th, oc);
    const int64_t cols = 2 * tw;
    std::vector<float> rows(2 * cols * kLanes);  // [2 rows][2*tw columns][lanes]
    int64_t i0, i1;
    share(work.items, ith, nth, i0, i1);
    for (int64_t item = i0; item < i1; ++item) {
        int64_t n, ty, cb;
        work.at(item, n, ty, cb);
        const int64_t c0 = cb * kLanes, lanes = std::min<int64_t>(kLanes, oc - c0);
        float b[kLanes] = {};
        for (int64_t l = 0; l < lanes; ++l) b[l] = bias ? static_cast<const float *>(bias->data)[c0 + l] : 0.0f;
        for (int64_t tx = 0; tx < tw; ++tx) {
            const int64_t t = (n * th + ty - band.r0) * tw + tx;
            float v[kTile][kLanes] = {};
            for (int k = 0; k < kTile; ++k) {
                const auto * src = reinterpret_cast<const float *>(static_cast<const char *>(m->data) + k * m->nb[2] +
                                                                   t * m->nb[1] + c0 * m->nb[0]);
                std::copy(src, src + lanes, v[k]);
            }
            float a[2][4][kLanes];  // A^T M
            for (int j = 0; j < 4; ++j) {
                for (int l = 0; l < kLanes; ++l) {
                    a[0][j][l] = v[j][l] + v[4 + j][l] + v[8 + j][l];
                    a[1][j][l] = v[4 + j][l] - v[8 + j][l] - v[12 + j][l];
                }
            }
            for (int i = 0; i < 2; ++i) {  // (A^T M) A
                float * out = rows.data() + (i * cols + 2 * tx) * kLanes;
                for (int l = 0; l < kLanes; ++l) {
                    out[l] = a[i][0][l] + a[i][1][l] + a[i][2][l] + b[l];
                    out[kLanes + l] = a[i][1][l] - a[i][2][l] - a[i][3][l] + b[l];
                }
            }
        }
        for (int64_t l = 0; l < lanes; ++l) {
            char * plane = static_cast<char *>(dst->data) + (c0 + l) * dst->nb[2] + n * dst->nb[3];
            for (int i = 0; i < 2 && 2 * ty + i < h; ++i) {
                const float * src = rows.data() + i * cols * kLanes + l;
                char * row = plane + (2 * ty + i) * dst->nb[1];
                for (int64_t xx = 0; xx < w; ++xx) *reinterpret_cast<float *>(row + xx * dst->nb[0]) = src[xx * kLanes];
            }
        }
    }
}

}  // namespace

bool supports_kernel(const ggml_tensor * k) {
    return k->ne[0] == 3 && k->ne[1] == 3 && (k->type == GGML_TYPE_F32 || k->type == GGML_TYPE_F16) &&
           ggml_is_contiguous(k);
}

int transformed_type(const ggml_tensor * k, int quantized) {
    if (quantized >= 0 && k->ne[2] % ggml_blck_size(static_cast<ggml_type>(quantized)) == 0) {
        // q8_0 on int8 dot products where the CPU has them (gemm_q8.h), as its panels
        return quantized == GGML_TYPE_Q8_0 && gemm_q8::isa() ? GGML_TYPE_I8 : quantized;
    }
    return k->type;
}

namespace {
bool panels(int type) { return type == GGML_TYPE_F32 || type == GGML_TYPE_F16; }
}  // namespace

void transformed_shape(const ggml_tensor * k, int type, int64_t ne[4]) {
    const int64_t ic = k->ne[2], oc = k->ne[3];
    if (panels(type)) {  // gemm panels per tile position: [kPanel, IC, blocks, 16]
        ne[0] = gemm::kPanel;
        ne[1] = ic;
        ne[2] = (oc + gemm::kPanel - 1) / gemm::kPanel;
        ne[3] = kTile;
    } else if (type == GGML_TYPE_I8) {  // gemm_q8 panels per tile position
        gemm_q8::panel_shape(ic, oc, ne);
        ne[3] = kTile;
    } else {
        ne[0] = ic;
        ne[1] = oc;
        ne[2] = kTile;
        ne[3] = 1;
    }
}

size_t transformed_bytes(const ggml_tensor * k, int type) {
    int64_t ne[4];
    transformed_shape(k, type, ne);
    return ggml_row_size(static_cast<ggml_type>(type), ne[0]) * ne[1] * ne[2] * ne[3];
}

void transform_kernel(const ggml_tensor * k, int type, void * dst) {
    const int64_t ic = k->ne[2], oc = k->ne[3];
    const auto t = static_cast<ggml_type>(type);
    std::vector<float> u32(static_cast<size_t>(kTile) * oc * ic);  // U in f32, [16][OC][IC]
    float * out = u32.data();
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
    if (t == GGML_TYPE_I8) {  // q8_0 rows first, then gemm_q8's panels of them
        const size_t row = ggml_row_size(GGML_TYPE_Q8_0, ic);
        std::vector<char> q8(row * kTile * oc);
        ggml_quantize_chunk(GGML_TYPE_Q8_0, u32.data(), q8.data(), 0, kTile * oc, ic, nullptr);
        const size_t per_tile = transformed_bytes(k, type) / kTile;
        for (int i = 0; i < kTile; ++i) {
            gemm_q8::pack_rows(q8.data() + i * oc * row, ic, oc, static_cast<char *>(dst) + i * per_tile);
        }
        return;
    }
    if (!panels(t)) {
        ggml_quantize_chunk(t, u32.data(), dst, 0, kTile * oc, ic, nullptr);
        return;
    }
    std::vector<ggml_fp16_t> u16(t == GGML_TYPE_F16 ? u32.size() : 0);
    if (t == GGML_TYPE_F16) ggml_fp32_to_fp16_row(u32.data(), u16.data(), static_cast<int64_t>(u32.size()));
    const size_t size = ggml_type_size(t);
    const size_t per_tile = transformed_bytes(k, type) / kTile;
    for (int i = 0; i < kTile; ++i) {
        const char * rows = t == GGML_TYPE_F16 ? reinterpret_cast<const char *>(u16.data()) : reinterpret_cast<const char *>(u32.data());
        gemm::pack_rows(rows + static_cast<size_t>(i) * oc * ic * size, size, ic, oc, static_cast<char *>(dst) + i * per_tile);
    }
}

bool supports_upsample(int factor) { return factor >= 1 && factor <= kMaxUpsample; }

ggml_tensor * conv2d(ggml_context * ctx, ggml_tensor * x, ggml_tensor * u, int64_t oc, ggml_tensor * bias,
                     int upsample) {
    GGML_ASSERT(supports_upsample(upsample));
    const int64_t w = x->ne[0] * upsample, h = x->ne[1] * upsample, n = x->ne[3];
    const int64_t tw = (w + 1) / 2, rows = ((h + 1) / 2) * n;
    const int64_t row_bytes = std::max<int64_t>(x->ne[2], oc) * tw * kTile * static_cast<int64_t>(sizeof(float));
    const int64_t bands = std::max<int64_t>(1, (rows * row_bytes + kBandBytes - 1) / kBandBytes);
    const int64_t per = (rows + bands - 1) / bands;  // tile rows per band, as even as they come
    ggml_tensor * y = nullptr;
    for (int64_t r0 = 0; r0 < rows; r0 += per) {
        const int64_t r1 = std::min(rows, r0 + per);
        ggml_tensor * in_args[] = {x};
        ggml_tensor * v = ggml_custom_4d(ctx, GGML_TYPE_F32, x->ne[2], (r1 - r0) * tw, kTile, 1, in_args, 1,
                                         input_transform, GGML_N_TASKS_MAX,
                                         const_cast<Band *>(intern(Band{upsample, r0, r1, false})));
        ggml_set_name(v, "winograd input");
        // [OC, tiles, 16]
        ggml_tensor * m = panels(u->type)           ? gemm::linear(ctx, v, u, oc, nullptr)
                          : u->type == GGML_TYPE_I8 ? gemm_q8::linear(ctx, v, u, oc, nullptr)
                                                    : ggml_mul_mat(ctx, u, v);
        ggml_tensor * out_args[] = {m, bias};
        void * band = const_cast<Band *>(intern(Band{1, r0, r1, y != nullptr}));
        // Later bands write their rows into the first band's output (ggml orders them:
        // each one's first source is the band before it).
        y = y ? ggml_custom_inplace(ctx, y, out_args, bias ? 2 : 1, output_transform, GGML_N_TASKS_MAX, band)
              : ggml_custom_4d(ctx, GGML_TYPE_F32, w, h, oc, n, out_args, bias ? 2 : 1, output_transform,
                               GGML_N_TASKS_MAX, band);
        ggml_set_name(y, "winograd output");
    }
    return y;
}

}  // namespace cutecpp::winograd
