// lapis-export support header, shipped into every exported package (src/lapis/).
// One place for what differs between Kokkos 3.4 and 4.x, and for the scalar helpers the
// generated kernels call (MLIR's arith/math semantics that C++ lacks as one expression).
#pragma once

#include <Kokkos_Core.hpp>

#include <cstdint>
#include <cstring>
#include <map>
#include <mutex>
#include <stdexcept>
#include <string>
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

// The products of float32 matrix kernels on CUDA (lapis-export --precision): fp32, float32
// accuracy (3xTF32 on the tensor cores); tf32, one TF32 product with float32 accumulation
// (PyTorch's default for cuDNN convolutions); bf16, bfloat16 operands with float32
// accumulation. Host backends and other element types compute in their own type throughout.
enum class Precision : int { fp32, tf32, bf16 };

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

// A View's extents, for messages: "[1, 3, 224, 224]".
template <class View>
std::string extents_string(const View& view) {
  std::string text = "[";
  for (int r = 0; r < int(View::rank); ++r) {
    if (r) text += ", ";
    text += std::to_string(view.extent(r));
  }
  return text + "]";
}

// Checks that a caller's View has the exported extents (-1: any); throws with both when it
// does not.
template <class View>
void check_extents(const char* what, const View& view, const int64_t* expected) {
  bool same = true;
  for (int r = 0; r < int(View::rank); ++r)
    same = same && (expected[r] < 0 || int64_t(view.extent(r)) == expected[r]);
  if (same) return;
  std::string want = "[";
  for (int r = 0; r < int(View::rank); ++r) {
    if (r) want += ", ";
    want += expected[r] < 0 ? std::string("any") : std::to_string(expected[r]);
  }
  want += "]";
  throw std::invalid_argument(std::string(what) + ": expected extents " + want + ", got " +
                              extents_string(view));
}

// Kokkos for the C API: NAME_initialize() starts Kokkos when the host has not, and the last
// NAME_finalize() of the models that found it so stops it; finalizing one model leaves Kokkos
// running for another that is still initialized. The count is an inline variable, one object
// for every package linked into a program. It is kept per copy of Kokkos (keyed by the address
// of that copy's is_initialized): a program has one, but libraries loaded privately with their
// own static Kokkos (dlopen with RTLD_LOCAL, as Python's ctypes does) have one each.
struct CApiKokkos {
  bool started = false;    // Kokkos was initialized by a C API call, not by the host
  bool finalized = false;  // ... and finalized by one since (it cannot start again)
  int users = 0;           // initialized models counting on that
};
inline std::mutex c_api_kokkos_mutex;  // the C APIs of all models in the process
inline std::map<const void*, CApiKokkos> c_api_kokkos;

inline CApiKokkos& c_api_kokkos_of_this_library() {
  return c_api_kokkos[reinterpret_cast<const void*>(&Kokkos::is_initialized)];
}

// Initializes Kokkos if nobody has; returns whether the caller now holds a share of it.
inline bool acquire_c_api_kokkos() {
  const std::lock_guard<std::mutex> lock(c_api_kokkos_mutex);
  CApiKokkos& kokkos = c_api_kokkos_of_this_library();
  if (!Kokkos::is_initialized()) {
    if (kokkos.finalized)
      throw std::runtime_error(
          "Kokkos was already finalized in this process and cannot be initialized again; to "
          "cycle initialize/finalize, keep Kokkos initialized in the host meanwhile");
    Kokkos::initialize();
    kokkos.started = true;
  }
  if (!kokkos.started) return false;
  ++kokkos.users;
  return true;
}

// Gives back a share taken by acquire_c_api_kokkos(); the last one finalizes Kokkos.
inline void release_c_api_kokkos() {
  const std::lock_guard<std::mutex> lock(c_api_kokkos_mutex);
  CApiKokkos& kokkos = c_api_kokkos_of_this_library();
  if (--kokkos.users > 0 || !kokkos.started) return;
  kokkos.started = false;
  kokkos.finalized = true;
  if (Kokkos::is_initialized()) Kokkos::finalize();
}

// Checks that a dynamic extent of a caller's View equals another one of the same size (e.g. the
// batch of the output and of the input); throws naming both when it does not.
template <class View>
void check_same_extent(const char* what, const View& view, int dim, const char* other,
                       size_t expected) {
  if (view.extent(dim) == expected) return;
  throw std::invalid_argument(std::string(what) + ": extent " + std::to_string(dim) + " is " +
                              std::to_string(view.extent(dim)) + ", but must equal the extent " +
                              std::to_string(expected) + " of " + other + " (the same size)");
}

}  // namespace lapis
