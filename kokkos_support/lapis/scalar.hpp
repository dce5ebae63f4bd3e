// lapis-export support header: the scalar helpers generated code calls (MLIR's arith/math
// semantics that C++ lacks as one expression), and the Kokkos 3.4 / 4.x spelling of the math
// functions. Stateless and device-callable: a host's own kernels include it through a
// package's evaluator (include/lapis/scalar.hpp), so the guard is a macro, not #pragma once:
// the copies of several packages in one translation unit define it once.
#ifndef LAPIS_SCALAR_HPP
#define LAPIS_SCALAR_HPP

#include <Kokkos_Core.hpp>

#include <cstdint>
#include <cstring>
#include <type_traits>

// Mathematical functions moved from Kokkos::Experimental to Kokkos in 3.7 (and left the
// Experimental spelling deprecated, then removed in 4.x).
#if KOKKOS_VERSION >= 30700
namespace lapis_kmath = Kokkos;
#else
namespace lapis_kmath = Kokkos::Experimental;
#endif

namespace lapis {

namespace math = lapis_kmath;

template <class T>
KOKKOS_INLINE_FUNCTION T infinity() {
  return T(__builtin_huge_val());
}
template <>
KOKKOS_INLINE_FUNCTION float infinity<float>() {
  return __builtin_huge_valf();
}

template <class T>
KOKKOS_INLINE_FUNCTION T quiet_nan() {
  return T(__builtin_nan(""));
}
template <>
KOKKOS_INLINE_FUNCTION float quiet_nan<float>() {
  return __builtin_nanf("");
}

// arith.maximumf / minimumf: IEEE maximum/minimum, NaN-propagating (torch.max semantics).
// One comparison and a select, so pooling loops vectorize: a NaN `b` fails `a > b` and wins.
template <class T>
KOKKOS_INLINE_FUNCTION T maximumf(T a, T b) {
  return (a > b || a != a) ? a : b;
}
template <class T>
KOKKOS_INLINE_FUNCTION T minimumf(T a, T b) {
  return (a < b || a != a) ? a : b;
}
// arith.maxnumf / minnumf: the non-NaN operand wins.
template <class T>
KOKKOS_INLINE_FUNCTION T maxnumf(T a, T b) {
  return (a != a) ? b : ((b != b) ? a : (a > b ? a : b));
}
template <class T>
KOKKOS_INLINE_FUNCTION T minnumf(T a, T b) {
  return (a != a) ? b : ((b != b) ? a : (a < b ? a : b));
}

template <class T>
KOKKOS_INLINE_FUNCTION T rsqrt(T x) {
  return T(1) / math::sqrt(x);
}
template <class T>
KOKKOS_INLINE_FUNCTION T copysign(T mag, T sgn) {
  const T a = math::fabs(mag);
  return (sgn < T(0) || (sgn == T(0) && T(1) / sgn < T(0))) ? -a : a;
}
// math.round: half away from zero.
template <class T>
KOKKOS_INLINE_FUNCTION T round(T x) {
  return x < T(0) ? -math::floor(-x + T(0.5)) : math::floor(x + T(0.5));
}
// math.roundeven: half to even (the default floating-point rounding mode).
template <class T>
KOKKOS_INLINE_FUNCTION T roundeven(T x) {
  return math::nearbyint(x);
}
template <class T>
KOKKOS_INLINE_FUNCTION T fma(T a, T b, T c) {
  return a * b + c;
}
template <class T>
KOKKOS_INLINE_FUNCTION T absi(T x) {
  return x < T(0) ? T(-x) : x;
}
// arith.floordivsi / ceildivsi on signed integers.
template <class T>
KOKKOS_INLINE_FUNCTION T floordivsi(T a, T b) {
  const T q = a / b;
  return (q * b != a && ((a < 0) != (b < 0))) ? T(q - 1) : q;
}
template <class T>
KOKKOS_INLINE_FUNCTION T ceildivsi(T a, T b) {
  const T q = a / b;
  return (q * b != a && ((a < 0) == (b < 0))) ? T(q + 1) : q;
}
// arith.shli / shrsi / shrui. A shift count outside [0, bit width) (C++ leaves it undefined,
// hardware masks it) gives 0, or the sign for an arithmetic right shift, as NumPy, PyTorch
// and ONNX's BitShift define it.
template <class T>
KOKKOS_INLINE_FUNCTION T shli(T a, T b) {
  using U = std::make_unsigned_t<T>;
  return U(b) >= U(8 * sizeof(T)) ? T(0) : T(U(a) << U(b));
}
template <class T>
KOKKOS_INLINE_FUNCTION T shrsi(T a, T b) {
  using U = std::make_unsigned_t<T>;
  return U(b) >= U(8 * sizeof(T)) ? T(a < T(0) ? -1 : 0) : T(a >> b);
}
template <class T>
KOKKOS_INLINE_FUNCTION T shrui(T a, T b) {
  using U = std::make_unsigned_t<T>;
  return U(b) >= U(8 * sizeof(T)) ? T(0) : T(U(a) >> U(b));
}
// arith.bitcast between same-sized scalars.
template <class To, class From>
KOKKOS_INLINE_FUNCTION To bit_cast(From from) {
  static_assert(sizeof(To) == sizeof(From), "bit_cast needs equal sizes");
  To to;
  memcpy(&to, &from, sizeof(To));
  return to;
}


// exp(x) for float x in [-87.3, 0] (or vectors of them, GCC vector types) as 2^n exp(r): the
// Cody-Waite reduction x = n ln2 + r, n = round(x / ln2) by the 1.5 * 2^23 trick (no rounding
// instruction needed), and Cephes' degree-5 polynomial for exp(r) (relative error below 2e-7).
// Sets n and returns exp(r); the caller builds 2^n from n's bits. The branch-free exps of
// attention.hpp's softmax and of erf below.
// Wide vectors reach it only inside the target functions of attention.hpp: no ABI concern.
#if defined(__clang__) && !defined(__CUDACC__)
#pragma clang diagnostic push
#pragma clang diagnostic ignored "-Wpsabi"
#elif defined(__GNUC__) && !defined(__CUDACC__) && !defined(__NVCC__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wpsabi"
#endif
template <class F>
KOKKOS_FORCEINLINE_FUNCTION F exp_reduced(const F x, F& n) {
  n = (x * 1.44269504f + 12582912.0f) - 12582912.0f;
  const F r = (x - n * 0.693359375f) - n * -2.12194440e-4f;
  F polynomial = F{} + 1.9875691500e-4f;
  polynomial = polynomial * r + 1.3981999507e-3f;
  polynomial = polynomial * r + 8.3334519073e-3f;
  polynomial = polynomial * r + 4.1665795894e-2f;
  polynomial = polynomial * r + 1.6666665459e-1f;
  polynomial = polynomial * r + 5.0000001201e-1f;
  return polynomial * r * r + r + 1.0f;
}
#if defined(__clang__) && !defined(__CUDACC__)
#pragma clang diagnostic pop
#elif defined(__GNUC__) && !defined(__CUDACC__) && !defined(__NVCC__)
#pragma GCC diagnostic pop
#endif

// math.erf. In float32 on host backends, a branch-free evaluation that loops over elements
// (GELU) vectorise: erf(a) = a (1 + s P(s)) with s = a^2 for |a| <= 0.9277, else
// sign(a) (1 - exp(t Q(t))) with t = |a|, both minimax polynomials (N. Juffa's erff;
// measured over every float in [-12, 12]: within 1.2 ulp of erf in double, 1.02 ulp where the
// compiler contracts to FMA), exp by exp_reduced. Both sides are computed and one selected.
// Elsewhere (double, GPUs) the math library's erf.
template <class T>
KOKKOS_INLINE_FUNCTION T erf(const T a) {
#if !defined(__CUDA_ARCH__) && !defined(__HIP_DEVICE_COMPILE__) && !defined(__SYCL_DEVICE_ONLY__)
  if constexpr (std::is_same<T, float>::value) {
    // The selects test bits as integers: floating-point compares keep GCC from vectorising
    // the loop (they may trap), integer ones do not.
    uint32_t bits_a;
    std::memcpy(&bits_a, &a, sizeof(bits_a));
    const uint32_t sign = bits_a & 0x80000000u, bits_t = bits_a ^ sign;
    float t;
    std::memcpy(&t, &bits_t, sizeof(t));
    const float s = a * a;
    // |a| > 0.927734375: 1 - exp(r), r <= 0
    float r = -1.72853470e-5f * t + 3.83197126e-4f;
    const float u = -3.88396438e-3f * t + 2.42546219e-2f;
    r = r * s + u;
    r = r * t + -1.06777877e-1f;
    r = r * t + -6.34846687e-1f;
    r = r * t + -1.28717512e-1f;
    r = r * t + -t;
    uint32_t bits_r;
    std::memcpy(&bits_r, &r, sizeof(bits_r));
    // r < -87.3 (or -inf): exp(r) = 0. Masks, not selects: GCC turns a select into a branch
    // around the exp when one side is a constant.
    const uint32_t tiny = 0u - uint32_t(bits_r > 0xC2AE999Au);
    const uint32_t bits_clamped = (tiny & 0xC2AE999Au) | (~tiny & bits_r);
    float clamped;
    std::memcpy(&clamped, &bits_clamped, sizeof(clamped));
    float n;
    const float exp_f = exp_reduced(clamped, n);
    const int32_t power_bits = (int32_t(n) + 127) << 23;
    float power;
    std::memcpy(&power, &power_bits, sizeof(power));
    const float scaled = exp_f * power;
    uint32_t bits_exp;
    std::memcpy(&bits_exp, &scaled, sizeof(bits_exp));
    bits_exp &= ~tiny;
    float exp_r;
    std::memcpy(&exp_r, &bits_exp, sizeof(exp_r));
    const float magnitude = 1.0f - exp_r;
    uint32_t bits_far;
    std::memcpy(&bits_far, &magnitude, sizeof(bits_far));
    bits_far |= sign;
    // |a| <= 0.927734375 (and NaN, which the polynomial keeps)
    float q = -5.96761703e-4f;
    q = q * s + 4.99119423e-3f;
    q = q * s + -2.67681349e-2f;
    q = q * s + 1.12819925e-1f;
    q = q * s + -3.76125336e-1f;
    q = q * s + 1.28379166e-1f;
    const float near = q * a + a;
    uint32_t bits_near;
    std::memcpy(&bits_near, &near, sizeof(bits_near));
    // 0x3F6D8000: 0.927734375; above it, up to infinity (0x7F800000), the far side.
    const uint32_t far_side = 0u - uint32_t((bits_t > 0x3F6D8000u) & (bits_t <= 0x7F800000u));
    const uint32_t bits = (far_side & bits_far) | (~far_side & bits_near);
    float result;
    std::memcpy(&result, &bits, sizeof(result));
    return result;
  }
#endif
  return math::erf(a);
}

}  // namespace lapis

#endif  // LAPIS_SCALAR_HPP
