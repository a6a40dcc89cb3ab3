#include "gemm_q8.h"

#include "custom_op.h"

#include "ggml.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <vector>

#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>
#define CUTECPP_Q8_X86 1
#else
#define CUTECPP_Q8_X86 0
#endif

namespace cutecpp::gemm_q8 {

namespace {

constexpr int64_t kRows = 3;           // rows per register tile
constexpr int64_t kChunk = 16 * kRows;  // rows per work item

enum Isa { kNone = 0, kVex = 1, kEvex = 2 };

// ggml's block_q8_0: an f16 scale, then 32 int8 values.
constexpr size_t kQ8Bytes = 2 + kBlock;

// Input rows once quantized: nb f32 scales, nb int32 corrections (128 x the block's
// sum of values), then K s8 values.
int64_t row_bytes(int64_t k) { return k / kBlock * 8 + k; }

#if CUTECPP_Q8_X86

int cpu_isas() {  // bit kVex: AVX-VNNI, bit kEvex: AVX512-VNNI with 256-bit vectors
    static const int have = [] {
        __builtin_cpu_init();
        int h = 0;
        if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c")) {
            if (__builtin_cpu_supports("avxvnni")) h |= 1 << kVex;
            if (__builtin_cpu_supports("avx512vnni") && __builtin_cpu_supports("avx512vl")) h |= 1 << kEvex;
        }
        return h;
    }();
    return have;
}

// One block of 32 inputs as ggml's AVX2 quantize_row_q8_0: d = amax / 127 rounded to f16,
// q = round-to-nearest-even(x * 127 / amax); with 128 x sum(q).
void quantize_row(const float * x, int64_t k, uint8_t * out) {
    const int64_t nb = k / kBlock;
    uint8_t * q = out + nb * 8;
    const __m256 sign = _mm256_set1_ps(-0.0f);
    const __m256i perm = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    for (int64_t j = 0; j < nb; ++j) {
        const float * xb = x + j * kBlock;
        __m256 v[4];
        __m256 m = _mm256_setzero_ps();
        for (int i = 0; i < 4; ++i) {
            v[i] = _mm256_loadu_ps(xb + 8 * i);
            m = _mm256_max_ps(m, _mm256_andnot_ps(sign, v[i]));
        }
        __m128 h = _mm_max_ps(_mm256_extractf128_ps(m, 1), _mm256_castps256_ps128(m));
        h = _mm_max_ps(h, _mm_movehl_ps(h, h));
        h = _mm_max_ss(h, _mm_movehdup_ps(h));
        const float amax = _mm_cvtss_f32(h);
        const float d = _cvtsh_ss(_cvtss_sh(amax / 127.0f, 0));
        std::memcpy(out + j * 4, &d, 4);
        const __m256 id = _mm256_set1_ps(amax != 0.0f ? 127.0f / amax : 0.0f);
        __m256i i0 = _mm256_cvtps_epi32(_mm256_round_ps(_mm256_mul_ps(v[0], id), _MM_FROUND_TO_NEAREST_INT));
        __m256i i1 = _mm256_cvtps_epi32(_mm256_round_ps(_mm256_mul_ps(v[1], id), _MM_FROUND_TO_NEAREST_INT));
        __m256i i2 = _mm256_cvtps_epi32(_mm256_round_ps(_mm256_mul_ps(v[2], id), _MM_FROUND_TO_NEAREST_INT));
        __m256i i3 = _mm256_cvtps_epi32(_mm256_round_ps(_mm256_mul_ps(v[3], id), _MM_FROUND_TO_NEAREST_INT));
        i0 = _mm256_packs_epi32(i0, i1);
        i2 = _mm256_packs_epi32(i2, i3);
        i0 = _mm256_permutevar8x32_epi32(_mm256_packs_epi16(i0, i2), perm);
        _mm256_storeu_si256(reinterpret_cast<__m256i *>(q + j * kBlock), i0);
        // sum of the 32 s8 values: |q| sums against the signs, as vpdpbusd would not need
        const __m256i ones = _mm256_set1_epi8(1);
        const __m256i pairs = _mm256_maddubs_epi16(ones, i0);  // u8 1 x s8 q, in pairs
        const __m256i quads = _mm256_madd_epi16(pairs, _mm256_set1_epi16(1));
        __m128i s = _mm_add_epi32(_mm256_castsi256_si128(quads), _mm256_extracti128_si256(quads, 1));
        s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4e));
        s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xb1));
        const int32_t corr = 128 * _mm_cvtsi128_si32(s);
        std::memcpy(out + (nb + j) * 4, &corr, 4);
    }
}

// Pixels p0 .. p0 + width of one image's channel-major [C][P] floats -> one
// panel (kBlockBytes per block of 32 channels): per pixel and block, d = amax / 127
// as f16, q = round(x * 127 / amax) (ggml's q8_0 rule), stored + 128.
void pack_pixels(const float * x, int64_t p_stride, int64_t width, int64_t nb, uint8_t * panel) {
    const __m256 sign = _mm256_set1_ps(-0.0f);
    for (int64_t j = 0; j < nb; ++j) {
        __m256 v[kBlock][2];
        __m256 m0 = _mm256_setzero_ps(), m1 = _mm256_setzero_ps();
        for (int64_t i = 0; i < kBlock; ++i) {
            const float * row = x + (j * kBlock + i) * p_stride;
            if (width == kPanel) {
                v[i][0] = _mm256_loadu_ps(row);
                v[i][1] = _mm256_loadu_ps(row + 8);
            } else {
                float t[kPanel] = {};
                std::memcpy(t, row, width * sizeof(float));
                v[i][0] = _mm256_loadu_ps(t);
                v[i][1] = _mm256_loadu_ps(t + 8);
            }
            m0 = _mm256_max_ps(m0, _mm256_andnot_ps(sign, v[i][0]));
            m1 = _mm256_max_ps(m1, _mm256_andnot_ps(sign, v[i][1]));
        }
        alignas(32) float amax[kPanel];
        _mm256_store_ps(amax, m0);
        _mm256_store_ps(amax + 8, m1);
        alignas(32) float id[kPanel];
        uint8_t * pb = panel + j * kBlockBytes;
        for (int p = 0; p < kPanel; ++p) {
            const uint16_t d = _cvtss_sh(amax[p] / 127.0f, 0);
            std::memcpy(pb + 512 + p * 2, &d, 2);
            id[p] = amax[p] != 0.0f ? 127.0f / amax[p] : 0.0f;
        }
        const __m256 id0 = _mm256_load_ps(id), id1 = _mm256_load_ps(id + 8);
        alignas(32) int32_t q[kBlock][kPanel];
        for (int64_t i = 0; i < kBlock; ++i) {
            const __m256 r0 = _mm256_round_ps(_mm256_mul_ps(v[i][0], id0), _MM_FROUND_TO_NEAREST_INT);
            const __m256 r1 = _mm256_round_ps(_mm256_mul_ps(v[i][1], id1), _MM_FROUND_TO_NEAREST_INT);
            _mm256_store_si256(reinterpret_cast<__m256i *>(q[i]), _mm256_cvtps_epi32(r0));
            _mm256_store_si256(reinterpret_cast<__m256i *>(q[i] + 8), _mm256_cvtps_epi32(r1));
        }
        for (int p = 0; p < kPanel; ++p) {
            for (int64_t i = 0; i < kBlock; ++i) pb[(i / 4) * 64 + p * 4 + i % 4] = static_cast<uint8_t>(q[i][p] + 128);
        }
    }
}

#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx2,fma,f16c,avxvnni"))), apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("avx2,fma,f16c,avxvnni")
#endif
namespace vex {
#define Q8_DOT _mm256_dpbusd_avx_epi32
#include "gemm_q8_tile.inc"
#undef Q8_DOT
}  // namespace vex
#if defined(__clang__)
#pragma clang attribute pop
#pragma clang attribute push(__attribute__((target("avx2,fma,f16c,avx512f,avx512vl,avx512vnni"))), apply_to = function)
#else
#pragma GCC pop_options
#pragma GCC push_options
#pragma GCC target("avx2,fma,f16c,avx512f,avx512vl,avx512vnni")
#endif
namespace evex {
#define Q8_DOT _mm256_dpbusd_epi32
#include "gemm_q8_tile.inc"
#undef Q8_DOT
}  // namespace evex
#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif

#else  // not x86: no int8 products here (ggml's mul_mat keeps them)

int cpu_isas() { return 0; }
void quantize_row(const float *, int64_t, uint8_t *) { GGML_ABORT("gemm_q8: no int8 products on this CPU"); }
void pack_pixels(const float *, int64_t, int64_t, int64_t, uint8_t *) {
    GGML_ABORT("gemm_q8: no int8 products on this CPU");
}

#endif

// off: honour CUTECPP_INT8=0 (when weights are packed; a graph on panels already packed runs them).
int selected_isa(bool off = true) {
    const char * env = std::getenv("CUTECPP_INT8");
    const int have = cpu_isas();
    if (off && env && std::strcmp(env, "0") == 0) return kNone;
    if (env && std::strcmp(env, "avx512") == 0 && (have & (1 << kEvex))) return kEvex;
    if (have & (1 << kVex)) return kVex;
    if (have & (1 << kEvex)) return kEvex;
    return kNone;
}

// One register tile's rows on the instruction set isa (gemm_q8_tile.inc's rows()).
void rows(int isa, int64_t n, const uint8_t * a, int64_t lda, int64_t nb, const uint8_t * panel, const float * bias,
          const float * row_bias, float * out, int64_t ldo, int64_t width) {
#if CUTECPP_Q8_X86
    if (isa == kEvex) return evex::rows(n, a, lda, nb, panel, bias, row_bias, out, ldo, width);
    return vex::rows(n, a, lda, nb, panel, bias, row_bias, out, ldo, width);
#else
    GGML_ABORT("gemm_q8: no int8 products on this CPU (isa %d)", isa);
#endif
}

// dst [row_bytes(K), rows...] I8 <- x [K, rows...] f32, rows shared between threads.
void quantize(ggml_tensor * dst, int ith, int nth, void *) {
    const ggml_tensor * x = dst->src[0];
    const int64_t k = x->ne[0], n = ggml_nrows(x);
    int64_t r0, r1;
    custom_op::share(n, ith, nth, r0, r1);
    for (int64_t r = r0; r < r1; ++r) {
        quantize_row(static_cast<const float *>(x->data) + r * k, k,
                     static_cast<uint8_t *>(dst->data) + r * dst->nb[1]);
    }
}

// dst [OC, rows, (B)] f32; src quantized rows [row_bytes, rows, (B)], panels
// [kBlockBytes, nb, blocks, B], bias [OC] (optional).
void compute(ggml_tensor * dst, int ith, int nth, void * userdata) {
    const int isa = *static_cast<const int *>(userdata);
    const ggml_tensor * q = dst->src[0];
    const ggml_tensor * p = dst->src[1];
    const ggml_tensor * b = dst->src[2];
    const int64_t nb = p->ne[1], lda = q->nb[1], oc = dst->ne[0], blocks = p->ne[2], batches = p->ne[3];
    const int64_t n = batches > 1 ? q->ne[1] : ggml_nrows(q);  // rows per batch
    std::vector<float> bias(blocks * kPanel, 0.0f);
    if (b) std::memcpy(bias.data(), b->data, oc * sizeof(float));
    custom_op::for_each_item(batches, blocks, n, kChunk, ith, nth, [&](int64_t bat, int64_t blk, int64_t r0,
                                                                        int64_t r1) {
        const auto * panel = static_cast<const uint8_t *>(p->data) + blk * p->nb[2] + bat * p->nb[3];
        const auto * a = static_cast<const uint8_t *>(q->data) + bat * n * lda;
        float * y = static_cast<float *>(dst->data) + bat * n * oc;
        const int64_t width = std::min(kPanel, oc - blk * kPanel);
        for (int64_t r = r0; r < r1; r += kRows) {
            const int64_t m = std::min(kRows, r1 - r);
            float * out = y + r * oc + blk * kPanel;
            rows(isa, m, a + r * lda, lda, nb, panel, bias.data() + blk * kPanel, nullptr, out, oc, width);
        }
    });
}

// dst panels [kBlockBytes, nb, ceil(P / 16), N] I8 <- x [W, H, C, N] f32.
void pack_image(ggml_tensor * dst, int ith, int nth, void *) {
    const ggml_tensor * x = dst->src[0];
    const int64_t p = x->ne[0] * x->ne[1], c = x->ne[2], blocks = dst->ne[2];
    int64_t i0, i1;
    custom_op::share(blocks * x->ne[3], ith, nth, i0, i1);
    for (int64_t item = i0; item < i1; ++item) {
        const int64_t n = item / blocks, blk = item % blocks;
        const float * pixels = static_cast<const float *>(x->data) + n * c * p + blk * kPanel;
        pack_pixels(pixels, p, std::min(kPanel, p - blk * kPanel), c / kBlock,
                    static_cast<uint8_t *>(dst->data) + n * dst->nb[3] + blk * dst->nb[2]);
    }
}

// dst [W, H, OC, N] f32; src kernel rows [row_bytes, OC], pixel panels, bias [OC] (optional).
void compute_pointwise(ggml_tensor * dst, int ith, int nth, void * userdata) {
    const int isa = *static_cast<const int *>(userdata);
    const ggml_tensor * w = dst->src[0];
    const ggml_tensor * x = dst->src[1];
    const ggml_tensor * b = dst->src[2];
    const int64_t p = dst->ne[0] * dst->ne[1], oc = dst->ne[2], nb = x->ne[1], blocks = x->ne[2];
    static const float zeros[kPanel] = {};
    // items: one image, one panel of pixels, one chunk of output channels (the rows here)
    custom_op::for_each_item(dst->ne[3], blocks, oc, kChunk, ith, nth, [&](int64_t n, int64_t blk, int64_t r0,
                                                                           int64_t r1) {
        const auto * panel = static_cast<const uint8_t *>(x->data) + n * x->nb[3] + blk * x->nb[2];
        const int64_t width = std::min(kPanel, p - blk * kPanel);
        float * y = static_cast<float *>(dst->data) + n * oc * p + blk * kPanel;
        for (int64_t r = r0; r < r1; r += kRows) {
            const int64_t m = std::min(kRows, r1 - r);
            const auto * a = static_cast<const uint8_t *>(w->data) + r * w->nb[1];
            const float * rb = b ? static_cast<const float *>(b->data) + r : nullptr;
            rows(isa, m, a, w->nb[1], nb, panel, zeros, rb, y + r * p, p, width);
        }
    });
}

const int * kernel_isa() {  // for a graph on weights already packed: the best the CPU has
    static const int kIsas[] = {kNone, kVex, kEvex};
    const int isa = selected_isa(false);
    GGML_ASSERT(isa != kNone);
    return &kIsas[isa];
}

}  // namespace

const char * isa() {
    switch (selected_isa()) {
        case kVex: return "avx-vnni";
        case kEvex: return "avx512-vnni";
        default: return nullptr;
    }
}

bool supports_weight(const ggml_tensor * w) {
    // (a 1x1 conv's [1, 1, K, OC] kernel cannot be q8_0: its rows are 1 wide)
    return ggml_n_dims(w) <= 2 && w->type == GGML_TYPE_Q8_0 && ggml_is_contiguous(w) && isa() != nullptr;
}

bool supports_float_weight(const ggml_tensor * w) {
    const bool shape = ggml_n_dims(w) == 4;
    return shape && (w->type == GGML_TYPE_F32 || w->type == GGML_TYPE_F16) && ggml_is_contiguous(w) &&
           weight_k(w) % kBlock == 0 && isa() != nullptr;
}

int64_t weight_k(const ggml_tensor * w) { return ggml_n_dims(w) > 2 ? w->ne[0] * w->ne[1] * w->ne[2] : w->ne[0]; }

int64_t weight_oc(const ggml_tensor * w) { return ggml_n_dims(w) > 2 ? w->ne[3] : w->ne[1]; }

void panel_shape(int64_t k, int64_t oc, int64_t ne[4]) {
    ne[0] = kBlockBytes;
    ne[1] = k / kBlock;
    ne[2] = (oc + kPanel - 1) / kPanel;
    ne[3] = 1;
}

size_t panel_bytes(int64_t k, int64_t oc) {
    int64_t ne[4];
    panel_shape(k, oc, ne);
    return static_cast<size_t>(ne[0] * ne[1] * ne[2]);
}

void pack_rows(const void * q8_rows, int64_t k, int64_t oc, void * out) {
    GGML_ASSERT(k % kBlock == 0 && ggml_type_size(GGML_TYPE_Q8_0) == kQ8Bytes);
    const int64_t nb = k / kBlock, blocks = (oc + kPanel - 1) / kPanel;
    std::memset(out, 0, static_cast<size_t>(blocks * nb * kBlockBytes));
    const auto * src = static_cast<const uint8_t *>(q8_rows);
    auto * dst = static_cast<uint8_t *>(out);
    for (int64_t o = 0; o < oc; ++o) {
        const int64_t lane = o % kPanel;
        for (int64_t j = 0; j < nb; ++j) {
            const uint8_t * block = src + (o * nb + j) * kQ8Bytes;
            uint8_t * pb = dst + ((o / kPanel) * nb + j) * kBlockBytes;
            for (int64_t i = 0; i < kBlock; ++i) {
                pb[(i / 4) * 64 + lane * 4 + i % 4] = static_cast<uint8_t>(static_cast<int8_t>(block[2 + i]) + 128);
            }
            std::memcpy(pb + 512 + lane * 2, block, 2);  // the f16 scale as it is
        }
    }
}

namespace {
// An f32 / f16 weight's oc rows of k values (as the file has them) quantized to q8_0 blocks.
std::vector<uint8_t> q8_rows(const ggml_tensor * w) {
    const int64_t k = weight_k(w), oc = weight_oc(w);
    std::vector<float> rows(static_cast<size_t>(k * oc));
    if (w->type == GGML_TYPE_F16) {
        ggml_fp16_to_fp32_row(static_cast<const ggml_fp16_t *>(w->data), rows.data(), k * oc);
    } else {
        std::memcpy(rows.data(), w->data, rows.size() * sizeof(float));
    }
    std::vector<uint8_t> q8(ggml_row_size(GGML_TYPE_Q8_0, k) * oc);
    ggml_quantize_chunk(GGML_TYPE_Q8_0, rows.data(), q8.data(), 0, oc, k, nullptr);
    return q8;
}
}  // namespace

void pack(const ggml_tensor * w, void * out) {
    const int64_t k = weight_k(w), oc = weight_oc(w);
    if (w->type == GGML_TYPE_Q8_0) return pack_rows(w->data, k, oc, out);
    pack_rows(q8_rows(w).data(), k, oc, out);
}

ggml_tensor * linear(ggml_context * ctx, ggml_tensor * x, ggml_tensor * panels, int64_t oc, ggml_tensor * bias) {
    const int64_t k = x->ne[0];
    GGML_ASSERT(x->type == GGML_TYPE_F32 && panels->type == GGML_TYPE_I8 && panels->ne[0] == kBlockBytes);
    GGML_ASSERT(k == panels->ne[1] * kBlock && oc <= panels->ne[2] * kPanel);
    GGML_ASSERT(panels->ne[3] == 1 || (x->ne[2] == panels->ne[3] && x->ne[3] == 1));
    GGML_ASSERT(!bias || (bias->type == GGML_TYPE_F32 && ggml_nelements(bias) == oc));
    ggml_tensor * xs[1] = {ggml_is_contiguous(x) ? x : ggml_cont(ctx, x)};
    ggml_tensor * q = ggml_custom_4d(ctx, GGML_TYPE_I8, row_bytes(k), x->ne[1], x->ne[2], x->ne[3], xs, 1, quantize,
                                     GGML_N_TASKS_MAX, nullptr);
    ggml_set_name(q, "linear q8 input");
    ggml_tensor * args[3] = {q, panels, bias};
    ggml_tensor * y = ggml_custom_4d(ctx, GGML_TYPE_F32, oc, x->ne[1], x->ne[2], x->ne[3], args, bias ? 3 : 2, compute,
                                     GGML_N_TASKS_MAX, const_cast<int *>(kernel_isa()));
    ggml_set_name(y, "linear q8");
    return y;
}

void pointwise_shape(const ggml_tensor * kernel, int64_t ne[4]) {
    ne[0] = row_bytes(weight_k(kernel));
    ne[1] = weight_oc(kernel);
    ne[2] = ne[3] = 1;
}

void pointwise_arrange(const ggml_tensor * kernel, void * out) {
    const int64_t k = weight_k(kernel), oc = weight_oc(kernel), nb = k / kBlock;
    const std::vector<uint8_t> q8 = q8_rows(kernel);
    auto * dst = static_cast<uint8_t *>(out);
    for (int64_t o = 0; o < oc; ++o) {  // the q8_0 blocks as quantized rows (row_bytes)
        uint8_t * row = dst + o * row_bytes(k);
        for (int64_t j = 0; j < nb; ++j) {
            const uint8_t * block = q8.data() + (o * nb + j) * kQ8Bytes;
            ggml_fp16_t h;
            std::memcpy(&h, block, 2);
            const float d = ggml_fp16_to_fp32(h);
            int32_t sum = 0;
            for (int64_t i = 0; i < kBlock; ++i) sum += static_cast<int8_t>(block[2 + i]);
            sum *= 128;
            std::memcpy(row + j * 4, &d, 4);
            std::memcpy(row + (nb + j) * 4, &sum, 4);
            std::memcpy(row + nb * 8 + j * kBlock, block + 2, kBlock);
        }
    }
}

ggml_tensor * pointwise(ggml_context * ctx, ggml_tensor * x, ggml_tensor * rows, int64_t oc, ggml_tensor * bias) {
    const int64_t c = x->ne[2], p = x->ne[0] * x->ne[1];
    GGML_ASSERT(x->type == GGML_TYPE_F32 && rows->type == GGML_TYPE_I8 && c % kBlock == 0);
    GGML_ASSERT(rows->ne[0] == row_bytes(c) && rows->ne[1] == oc);
    GGML_ASSERT(!bias || (bias->type == GGML_TYPE_F32 && ggml_nelements(bias) == oc));
    ggml_tensor * xs[1] = {ggml_is_contiguous(x) ? x : ggml_cont(ctx, x)};
    ggml_tensor * panels = ggml_custom_4d(ctx, GGML_TYPE_I8, kBlockBytes, c / kBlock, (p + kPanel - 1) / kPanel,
                                          x->ne[3], xs, 1, pack_image, GGML_N_TASKS_MAX, nullptr);
    ggml_set_name(panels, "pointwise q8 input");
    ggml_tensor * args[3] = {rows, panels, bias};
    ggml_tensor * y = ggml_custom_4d(ctx, GGML_TYPE_F32, x->ne[0], x->ne[1], oc, x->ne[3], args, bias ? 3 : 2,
                                     compute_pointwise, GGML_N_TASKS_MAX, const_cast<int *>(kernel_isa()));
    ggml_set_name(y, "pointwise q8");
    return y;
}

}  // namespace cutecpp::gemm_q8
