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

}  // namespace lapis

#endif  // LAPIS_SCALAR_HPP
