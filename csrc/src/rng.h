// Counter-based random numbers: Philox4x32-10 (Salmon et al., "Parallel random
// numbers: as easy as 1, 2, 3", SC 2011; checked against Random123's
// known-answer vectors) and standard normal floats by Box-Muller.
//
// Normal number i of (seed, stream) depends only on (seed, stream, i): not on
// the thread count, the order of generation or how many numbers are drawn
// before or after it. It is also the same float on every machine: the
// transform uses only IEEE-754 double +, -, *, / and sqrt in a fixed order
// (this file is compiled with -ffp-contract=off, so no fused multiply-add
// changes a rounding) and the log, sin and cos below are fixed polynomials,
// not the C library's, whose last bit differs between libm versions.
//
// Layout: Philox block b of (seed, stream) uses counter (b lo, b hi, stream lo,
// stream hi) and key (seed lo, seed hi); its four 32-bit words w0..w3 give
// normals 4b..4b+3: (w0, w1) and (w2, w3) are each one Box-Muller pair with
// u1 = (w + 0.5) / 2^32 in (0, 1), u2 = w / 2^32 in [0, 1),
// r = sqrt(-2 ln u1): z = r cos(2 pi u2) for the even element, r sin(2 pi u2) for the odd one.
#pragma once

#include <array>
#include <cstdint>

namespace cutecpp {

// One Philox4x32-10 block.
std::array<uint32_t, 4> philox4x32_10(std::array<uint32_t, 4> counter, std::array<uint32_t, 2> key);

// out[j] = normal number (offset + j) of (seed, stream), j < n. offset + n must not exceed 2^64.
void rng_normal(uint64_t seed, uint64_t stream, uint64_t offset, int64_t n, float * out);

// Portable double-precision functions: the same bits on every IEEE-754 machine
// (error below 2 ulp in the ranges the samplers use). Edge cases as the C library:
// log(0) = -inf, log(x < 0) = nan, log(inf) = inf, exp(-inf) = 0, exp(inf) = inf, nan -> nan.
namespace portable {
double log(double x);
double exp(double x);
double pow(double x, double y);  // exp(y log x), for x > 0
// sin(2 pi u) and cos(2 pi u) for u in [0, 1).
void sincos_2pi(double u, double * s, double * c);
// Float versions: the double result rounded once to float.
inline float logf(float x) { return static_cast<float>(portable::log(x)); }
inline float expf(float x) { return static_cast<float>(portable::exp(x)); }
}  // namespace portable

}  // namespace cutecpp
