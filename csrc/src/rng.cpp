// Philox4x32-10, Box-Muller and the portable math behind them (see rng.h).
// Compiled with -ffp-contract=off (CMakeLists.txt): every rounding below is
// the one written, on every machine.
#include "rng.h"

#include <cmath>
#include <cstring>
#include <limits>

namespace cutecpp {

namespace {

// Random123's constants (philox.h): multipliers and Weyl key increments.
constexpr uint32_t kPhiloxM0 = 0xD2511F53u;
constexpr uint32_t kPhiloxM1 = 0xCD9E8D57u;
constexpr uint32_t kPhiloxW0 = 0x9E3779B9u;
constexpr uint32_t kPhiloxW1 = 0xBB67AE85u;

inline void mulhilo(uint32_t a, uint32_t b, uint32_t & hi, uint32_t & lo) {
    const uint64_t p = static_cast<uint64_t>(a) * b;
    hi = static_cast<uint32_t>(p >> 32);
    lo = static_cast<uint32_t>(p);
}

// ln 2 split so that k * kLn2Hi is exact for |k| < 2^20 (the high part has 32 significant bits).
constexpr double kLn2Hi = 0x1.62e42feep-1;
constexpr double kLn2Lo = 0x1.a39ef35793c76p-33;
constexpr double kInvLn2 = 0x1.71547652b82fep+0;
constexpr double kHalfPi = 0x1.921fb54442d18p+0;

uint64_t bits_of(double x) {
    uint64_t b;
    std::memcpy(&b, &x, sizeof b);
    return b;
}

double from_bits(uint64_t b) {
    double x;
    std::memcpy(&x, &b, sizeof x);
    return x;
}

// 2^k for -1022 <= k <= 1023, exactly.
double pow2i(int k) { return from_bits(static_cast<uint64_t>(k + 1023) << 52); }

}  // namespace

std::array<uint32_t, 4> philox4x32_10(std::array<uint32_t, 4> ctr, std::array<uint32_t, 2> key) {
    for (int round = 0; round < 10; ++round) {
        if (round > 0) {
            key[0] += kPhiloxW0;
            key[1] += kPhiloxW1;
        }
        uint32_t hi0, lo0, hi1, lo1;
        mulhilo(kPhiloxM0, ctr[0], hi0, lo0);
        mulhilo(kPhiloxM1, ctr[2], hi1, lo1);
        ctr = {hi1 ^ ctr[1] ^ key[0], lo1, hi0 ^ ctr[3] ^ key[1], lo0};
    }
    return ctr;
}

namespace portable {

// log(x) = e ln2 + log(1 + f), 1 + f in [sqrt(1/2), sqrt(2)); with s = f / (2 + f),
// log(1 + f) = f - (f^2/2 - s (f^2/2 + R)), R = sum_k 2 s^(2k) / (2k + 1) (the atanh series).
double log(double x) {
    if (x != x) return x;
    if (x < 0.0) return std::numeric_limits<double>::quiet_NaN();
    if (x == 0.0) return -std::numeric_limits<double>::infinity();
    if (x == std::numeric_limits<double>::infinity()) return x;
    int e = 0;
    if (x < 0x1p-1022) {  // subnormal: scale into the normal range first (exact)
        x *= 0x1p54;
        e = -54;
    }
    const uint64_t b = bits_of(x);
    e += static_cast<int>((b >> 52) & 0x7ff) - 1023;
    double m = from_bits((b & 0x000fffffffffffffull) | 0x3ff0000000000000ull);  // [1, 2)
    if (m > 0x1.6a09e667f3bcdp+0) {  // sqrt(2): use [sqrt(1/2), sqrt(2))
        m *= 0.5;
        e += 1;
    }
    const double f = m - 1.0;  // exact (Sterbenz)
    const double s = f / (2.0 + f);
    const double z = s * s;
    // 2/3, 2/5, ..., 2/25: |s| <= 0.1716, so the next term is below 2^-64 of the result.
    double r = 2.0 / 25.0;
    r = 2.0 / 23.0 + z * r;
    r = 2.0 / 21.0 + z * r;
    r = 2.0 / 19.0 + z * r;
    r = 2.0 / 17.0 + z * r;
    r = 2.0 / 15.0 + z * r;
    r = 2.0 / 13.0 + z * r;
    r = 2.0 / 11.0 + z * r;
    r = 2.0 / 9.0 + z * r;
    r = 2.0 / 7.0 + z * r;
    r = 2.0 / 5.0 + z * r;
    r = 2.0 / 3.0 + z * r;
    r = z * r;
    const double hfsq = 0.5 * f * f;
    const double k = static_cast<double>(e);
    return k * kLn2Hi - ((hfsq - (s * (hfsq + r) + k * kLn2Lo)) - f);
}

// exp(x) = 2^k exp(r), r = x - k ln2 in [-ln2/2, ln2/2]; exp(r) by its Taylor series to r^16/16!.
double exp(double x) {
    if (x != x) return x;
    if (x > 709.782712893384) return std::numeric_limits<double>::infinity();
    if (x < -745.2) return 0.0;
    const double kd = std::floor(x * kInvLn2 + 0.5);
    const int k = static_cast<int>(kd);
    const double r = (x - kd * kLn2Hi) - kd * kLn2Lo;
    double p = 1.0;
    for (int n = 16; n >= 1; --n) p = 1.0 + r * p / n;  // 1 + r/n (1 + r/(n+1) (...))
    // Scale in two exact steps so that 2^k never overflows or loses the subnormal rounding.
    if (k > 1000) return p * pow2i(1000) * pow2i(k - 1000);
    if (k < -1000) return p * pow2i(-1000) * pow2i(k + 1000);
    return p * pow2i(k);
}

double pow(double x, double y) { return exp(y * log(x)); }

void sincos_2pi(double u, double * sin_out, double * cos_out) {
    const double v = u * 4.0;  // exact
    const double q = std::floor(v);
    double r = v - q;  // exact: position inside the quadrant, [0, 1)
    const bool flip = r > 0.5;
    if (flip) r = 1.0 - r;  // exact
    const double t = r * kHalfPi;  // [0, pi/4]
    const double z = t * t;
    // sin t = t (1 - z/3! + z^2/5! - ...) to t^21; cos t = 1 - z/2! + ... to t^20.
    double sp = 0.0;
    for (int n = 21; n >= 3; n -= 2) sp = (1.0 - sp) * z / (n * (n - 1));
    const double st = t - t * sp;
    double cp = 0.0;
    for (int n = 20; n >= 2; n -= 2) cp = (1.0 - cp) * z / (n * (n - 1));
    const double ct = 1.0 - cp;
    double s = flip ? ct : st;
    double c = flip ? st : ct;
    switch (static_cast<int>(q) & 3) {
        case 0: break;
        case 1: { const double t0 = s; s = c; c = -t0; break; }
        case 2: s = -s; c = -c; break;
        default: { const double t0 = s; s = -c; c = t0; break; }
    }
    *sin_out = s;
    *cos_out = c;
}

}  // namespace portable

void rng_normal(uint64_t seed, uint64_t stream, uint64_t offset, int64_t n, float * out) {
    const std::array<uint32_t, 2> key = {static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32)};
    uint64_t index = offset;
    for (int64_t j = 0; j < n;) {
        const uint64_t block = index >> 2;
        const auto w = philox4x32_10({static_cast<uint32_t>(block), static_cast<uint32_t>(block >> 32),
                                      static_cast<uint32_t>(stream), static_cast<uint32_t>(stream >> 32)},
                                     key);
        float z[4];
        for (int pair = 0; pair < 2; ++pair) {
            const double u1 = (static_cast<double>(w[2 * pair]) + 0.5) * 0x1p-32;  // (0, 1)
            const double u2 = static_cast<double>(w[2 * pair + 1]) * 0x1p-32;      // [0, 1)
            const double radius = std::sqrt(-2.0 * portable::log(u1));
            double s, c;
            portable::sincos_2pi(u2, &s, &c);
            z[2 * pair] = static_cast<float>(radius * c);
            z[2 * pair + 1] = static_cast<float>(radius * s);
        }
        for (unsigned lane = static_cast<unsigned>(index & 3); lane < 4 && j < n; ++lane, ++j, ++index) {
            out[j] = z[lane];
        }
    }
}

}  // namespace cutecpp
