// Eight-float vectors (GCC/clang vector extensions: AVX2 registers on x86-64,
// two NEON registers on aarch64) and the few transcendental functions the
// fused kernels need, without libm calls in the loops.
//
//   exp   range reduction x = n ln2 + r (|r| <= ln2 / 2), degree-7 Taylor
//         polynomial for e^r, 2^n through the exponent bits; inputs clamped to
//         [-87, 88] (no infinities, no denormals). ~2 ulp.
//   erf   Abramowitz & Stegun 7.1.26: |error| <= 1.5e-7 in exact arithmetic,
//         ~7e-7 in float against libm's erff.
#pragma once

#include <cstdint>
#include <cstring>

#if defined(__F16C__)
#include <immintrin.h>
#elif defined(__aarch64__)
#include <arm_neon.h>
#endif

namespace cutecpp::vec {

constexpr int kWidth = 8;
typedef float f8 __attribute__((vector_size(32)));
typedef int32_t i8 __attribute__((vector_size(32)));

inline f8 load(const float * p) {
    f8 v;
    std::memcpy(&v, p, sizeof v);
    return v;
}
inline void store(float * p, f8 v) { std::memcpy(p, &v, sizeof v); }
// The first n (< kWidth) values; the rest zero.
inline f8 load_part(const float * p, int n) {
    float t[kWidth] = {};
    std::memcpy(t, p, n * sizeof(float));
    return load(t);
}
inline void store_part(float * p, f8 v, int n) {
    float t[kWidth];
    store(t, v);
    std::memcpy(p, t, n * sizeof(float));
}
inline f8 splat(float x) { return f8{} + x; }

// Eight IEEE half floats (raw bits) to f32: F16C on x86-64, NEON on aarch64.
inline f8 load_f16(const uint16_t * p) {
    f8 v;
#if defined(__F16C__)
    const __m256 r = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i *>(p)));
    std::memcpy(&v, &r, sizeof v);
#elif defined(__aarch64__)
    const float32x4_t lo = vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16(p)));
    const float32x4_t hi = vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16(p + 4)));
    std::memcpy(&v, &lo, sizeof lo);
    std::memcpy(reinterpret_cast<char *>(&v) + sizeof lo, &hi, sizeof hi);
#else
    for (int i = 0; i < kWidth; ++i) {  // normal, subnormal, zero, inf and nan alike
        const uint32_t sign = static_cast<uint32_t>(p[i] & 0x8000) << 16, exp = (p[i] >> 10) & 0x1f, man = p[i] & 0x3ff;
        float f;
        if (exp == 0) {
            f = static_cast<float>(man) * (1.0f / 16777216.0f);  // man * 2^-24
            uint32_t b;
            std::memcpy(&b, &f, 4);
            b |= sign;
            std::memcpy(&f, &b, 4);
        } else {
            const uint32_t b = sign | (exp == 31 ? 0x7f800000u | (man << 13) : ((exp + 112) << 23) | (man << 13));
            std::memcpy(&f, &b, 4);
        }
        v[i] = f;
    }
#endif
    return v;
}
inline f8 min(f8 a, f8 b) { return a < b ? a : b; }
inline f8 max(f8 a, f8 b) { return a > b ? a : b; }
inline float sum(f8 v) {
    float s = 0.0f;
    for (int i = 0; i < kWidth; ++i) s += v[i];
    return s;
}

inline f8 exp(f8 x) {
    x = min(max(x, splat(-87.0f)), splat(88.0f));
    const f8 magic = splat(12582912.0f);  // 1.5 * 2^23: adding it rounds to an integer
    const f8 n = (x * 1.44269504f + magic) - magic;
    const f8 r = (x - n * 0.693145751953125f) - n * 1.428606765330187e-06f;  // ln 2 in two parts
    f8 p = splat(1.0f / 5040);
    p = p * r + 1.0f / 720;
    p = p * r + 1.0f / 120;
    p = p * r + 1.0f / 24;
    p = p * r + 1.0f / 6;
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    const i8 bits = (__builtin_convertvector(n, i8) + 127) << 23;
    return p * (f8)bits;  // a vector cast keeps the bits
}

inline f8 erf(f8 x) {
    const f8 a = max(x, -x);
    const f8 t = 1.0f / (1.0f + 0.3275911f * a);
    f8 p = splat(1.061405429f);
    p = p * t - 1.453152027f;
    p = p * t + 1.421413741f;
    p = p * t - 0.284496736f;
    p = p * t + 0.254829592f;
    const f8 y = 1.0f - p * t * exp(-a * a);
    return x < 0.0f ? -y : y;
}

// x * sigmoid(x)
inline f8 silu(f8 x) { return x / (1.0f + exp(-x)); }

// x * Phi(x), the exact (erf) GELU
inline f8 gelu(f8 x) { return 0.5f * x * (1.0f + erf(x * 0.70710678118654752f)); }

}  // namespace cutecpp::vec
