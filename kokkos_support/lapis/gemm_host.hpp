// lapis-export packed matrix product for host backends, shipped into every exported package
// (src/lapis/). The one kernel behind lapis::matmul / batch_matmul, lapis::linear_packed and
// lapis::linear_chain (gemm.hpp) on Serial, OpenMP and Threads: C = epilogue(start + A B) for
// float or double,
// A [M][K] with unit column stride, B either a linear layer's weight packed at export
// (exporter/tuned_ops.py: panels of 128 bytes of columns, [ceil(N / P)][K][P], zero-padded) or
// a plain [K][N] matrix packed here, one K block of one panel at a time, into a stack buffer.
//
// Work: tasks of up to 96 rows x 4 panels, run by Kokkos::parallel_for (dynamic schedule) on
// the caller's execution space instance. In a task, blocks of 256 along K (a panel's block is 32 KiB, read
// from L1 by every row of the task), and a register-blocked micro-kernel: 12 rows x 2 zmm
// (AVX-512F), 6 rows x 2 ymm (AVX2+FMA) or 6 rows x 2 xmm (baseline x86-64 / other targets),
// its accumulators in registers. The epilogue runs on the registers after the last K block:
// start (bias, zero or what C holds), a residual added before or after the activation, the
// activation (ReLU, SiLU, sigmoid, GELU, tanh), one store: one pass over the output.
// Products of at most 4 columns (a regression head) are dot products along K instead. A chain
// of linear layers (chain()) takes a block of rows through every layer in one task, the
// activations between layers in two buffers of the thread: one parallel_for for the chain.
// --precision bf16 (float): A and B rounded to bfloat16 (to nearest even) as they are packed,
// float sums, the epilogue in float; a linear layer's weight packed at export in bfloat16, two
// rows of K side by side (tuned_ops.pack_linear_weight_bf16). With AVX512_BF16 and
// LAPIS_GEMM_ISA=avx512_bf16, vdpbf16ps (12 rows x 2 zmm, 32 multiply-adds an instruction);
// else the same products on the operands widened to float, by FMA: a product of two bfloat16 values is exact in float, and
// each pair is added odd then even, as vdpbf16ps does, so the sums agree across instruction
// sets up to their order (and vdpbf16ps' flushing of denormals). The FMA kernel is the
// default: vdpbf16ps was the slower of the two where measured (see isa()).
// The instruction set is picked once at run time (__builtin_cpu_supports); the environment
// variable LAPIS_GEMM_ISA=avx2|baseline forces a lower one (for tests and comparisons),
// LAPIS_GEMM_ISA=avx512_bf16 the vdpbf16ps kernel where the CPU has AVX512_BF16.
// No fast-math: float SiLU and sigmoid take a vectorised exp (Cephes' expf, within 2 ulp),
// float GELU a vectorised erf (lapis::erf's, within 1.2 ulp); tanh and double precision call
// std::tanh / std::erf / std::exp per element.
#pragma once

#include <Kokkos_Core.hpp>

#include <array>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <type_traits>
#include <vector>

#include "conv_common.hpp"
#include "support.hpp"

namespace lapis {

// The activation a product's epilogue applies (the elementwise op after a linear layer,
// folded in by exporter/lowering/linear.py), in the expression order of torch-mlir's lowering.
enum class Activation : int { none, relu, silu, gelu, tanh, sigmoid };

template <class T>
KOKKOS_INLINE_FUNCTION T activate(const Activation f, const T v) {
  switch (f) {
    case Activation::relu: return !(v <= T(0)) ? v : T(0);  // NaN stays NaN
    case Activation::silu:
#if defined(LAPIS_FAST_SILU) && defined(__CUDA_ARCH__)
      if constexpr (std::is_same<T, float>::value) return __fdividef(v, __expf(-v) + 1.0f);
#endif
      return v * (T(1) / (math::exp(-v) + T(1)));
    case Activation::gelu: return v * ((lapis::erf(v / T(1.4142135623730951)) + T(1)) * T(0.5));
    case Activation::tanh: return math::tanh(v);
    case Activation::sigmoid: return T(1) / (math::exp(-v) + T(1));
    default: return v;
  }
}

// f(std::integral_constant<Activation, A>{}) for A = `a`: an epilogue compiled once for each
// activation and run for the one it applies. With the choice made per output instead, the
// tensor-core tiles' fully unrolled epilogues held every activation's code for each of a
// thread's outputs (20,000 instructions a wgmma kernel), and the instruction cache missed.
template <class F>
KOKKOS_FORCEINLINE_FUNCTION void with_activation(const Activation a, const F& f) {
  using A = Activation;
  switch (a) {
    case A::relu: return f(std::integral_constant<A, A::relu>{});
    case A::silu: return f(std::integral_constant<A, A::silu>{});
    case A::gelu: return f(std::integral_constant<A, A::gelu>{});
    case A::tanh: return f(std::integral_constant<A, A::tanh>{});
    case A::sigmoid: return f(std::integral_constant<A, A::sigmoid>{});
    default: return f(std::integral_constant<A, A::none>{});
  }
}

namespace gemm_host {
// Columns per panel of a packed B: 128 bytes, two zmm, four ymm or eight xmm. Must match
// LINEAR_PANEL_BYTES in exporter/tuned_ops.py.
template <class T>
inline constexpr int panel_width = int(128 / sizeof(T));

// Element (k, n) of a weight packed in bfloat16 (tuned_ops.pack_linear_weight_bf16), as float:
// panels of P = 32 columns, [K / 2][P][2] in pairs of rows, an odd K's last row alone.
KOKKOS_INLINE_FUNCTION float packed_bf16_at(const bfloat16* w, const int64_t depth,
                                            const int64_t k, const int64_t n) {
  constexpr int64_t P = panel_width<float>;
  const int64_t paired = depth / 2 * 2;
  const bfloat16* panel = w + (n / P) * depth * P;
  return to_float(k < paired ? panel[(k / 2) * 2 * P + (n % P) * 2 + (k % 2)]
                             : panel[paired * P + n % P]);
}

// x rounded to the nearest bfloat16, as float.
KOKKOS_INLINE_FUNCTION float round_bf16(const float x) { return to_float(to_bfloat16(x)); }
}  // namespace gemm_host

}  // namespace lapis

#if defined(LAPIS_GEMM_HOST_TILES)
// The wide vectors stay inside the target functions; GCC and Clang warn about their ABI where
// a template is instantiated (the end of the including file), so this is not popped.
#if defined(__clang__)
#pragma clang diagnostic ignored "-Wpsabi"
#elif defined(__GNUC__)
#pragma GCC diagnostic ignored "-Wpsabi"
#endif

#if defined(LAPIS_GEMM_X86)
#include <cpuid.h>
#include <immintrin.h>
#if defined(__linux__)
#include <sys/syscall.h>
#include <unistd.h>
#endif
#endif

namespace lapis {
namespace gemm_host {

inline constexpr int64_t k_block = 256;
inline constexpr int64_t row_block = 96;
inline constexpr int64_t panels_per_task = 4;

enum class Isa : int { baseline, avx2, avx512, avx512_bf16, amx_bf16 };

template <class T>
struct Product {
  const T* a;
  int64_t lda;         // rows of A lda apart, unit column stride
  const T* b;
  int64_t ldb;         // packed: ignored; else rows of B ldb apart, unit column stride
  bool packed;         // B in panels [ceil(N / P)][K][P]
  T* c;
  int64_t ldc;
  int64_t rows, columns, depth;  // M, N, K
  ConvInit init;                 // C starts from: what it holds, bias[n] or zero
  const T* bias;
  const T* residual;             // or nullptr; rows ldr apart
  int64_t ldr;
  bool residual_after;           // added after the activation (else before)
  Activation activation;
  // --precision bf16 (float only): A and B rounded to bfloat16, float sums; a packed B is then
  // `b16` (tuned_ops.pack_linear_weight_bf16), not `b`.
  bool bf16 = false;
  const bfloat16* b16 = nullptr;
};

template <class T, int Bytes>
struct simd {
  typedef T type __attribute__((vector_size(Bytes)));
};
template <int Bytes>
struct simd_int {
  typedef int32_t type __attribute__((vector_size(Bytes)));
};

template <class V>
inline __attribute__((always_inline)) V load(const void* p) {
  V v;
  __builtin_memcpy(&v, p, sizeof(V));
  return v;
}
template <class V>
inline __attribute__((always_inline)) void store(void* p, const V& v) {
  __builtin_memcpy(p, &v, sizeof(V));
}

// exp(x) for float lanes: x clamped to [-87.34, 88], n = x / ln 2 rounded to nearest by the
// 1.5 * 2^23 shift (its low mantissa bits are then n itself), r = x - n ln 2 in two parts,
// Cephes' degree-6 polynomial (exp_reduced, scalar.hpp), 2^n put into the exponent bits.
// Within 1 ulp of std::exp inside the clamps (measured at every 1e-5 relative step);
// exp(-87.34), the smallest normal float, below; exp(88) above (SiLU's and sigmoid's
// denominators stay finite); NaN stays. About 16 vector operations, no conversions.
template <int Bytes>
inline __attribute__((always_inline)) typename simd<float, Bytes>::type exp_lanes(
    typename simd<float, Bytes>::type x) {
  using vec = typename simd<float, Bytes>::type;
  using ivec = typename simd_int<Bytes>::type;
  const vec hi = vec{} + 88.0f, lo = vec{} - 87.33654f;
  const ivec above = x > hi, below = x < lo;
  x = (vec)(((ivec)x & ~above) | ((ivec)hi & above));
  x = (vec)(((ivec)x & ~below) | ((ivec)lo & below));
  const vec shifted = x * 1.44269504f + 12582912.0f;
  const vec n = shifted - 12582912.0f;
  const vec r = (x - n * 0.693359375f) - n * -2.12194440e-4f;
  vec y = vec{} + 1.9875691500e-4f;
  y = y * r + 1.3981999507e-3f;
  y = y * r + 8.3334519073e-3f;
  y = y * r + 4.1665795894e-2f;
  y = y * r + 1.6666665459e-1f;
  y = y * r + 5.0000001201e-1f;
  y = y * r * r + r + 1.0f;
  const ivec exponent = ((ivec)shifted - 0x4B400000 + 127) << 23;
  return y * (vec)exponent;
}

// erf(x) for float lanes: lapis::erf (scalar.hpp: N. Juffa's erff, within 1.2 ulp) on
// vectors, the two sides computed and one selected by masks.
template <int Bytes>
inline __attribute__((always_inline)) typename simd<float, Bytes>::type erf_lanes(
    const typename simd<float, Bytes>::type a) {
  using vec = typename simd<float, Bytes>::type;
  using ivec = typename simd_int<Bytes>::type;
  const ivec sign = (ivec)a & int32_t(0x80000000u);
  const ivec bits_t = (ivec)a ^ sign;
  const vec t = (vec)bits_t, s = a * a;
  // |a| > 0.927734375: 1 - exp(r), r <= 0 (0 below -87.3)
  vec r = t * -1.72853470e-5f + 3.83197126e-4f;
  const vec u = t * -3.88396438e-3f + 2.42546219e-2f;
  r = r * s + u;
  r = r * t + -1.06777877e-1f;
  r = r * t + -6.34846687e-1f;
  r = r * t + -1.28717512e-1f;
  r = r * t + -t;
  const ivec tiny = r < -87.3f;
  const vec clamped = (vec)((tiny & (ivec)(vec{} - 87.3f)) | (~tiny & (ivec)r));
  vec n;
  const vec exp_f = exp_reduced(clamped, n);
  const ivec power = (__builtin_convertvector(n, ivec) + 127) << 23;
  const vec exp_r = (vec)((ivec)(exp_f * (vec)power) & ~tiny);
  const vec far = (vec)((ivec)(1.0f - exp_r) | sign);
  // |a| <= 0.927734375 (and NaN, which the polynomial keeps)
  vec q = vec{} - 5.96761703e-4f;
  q = q * s + 4.99119423e-3f;
  q = q * s + -2.67681349e-2f;
  q = q * s + 1.12819925e-1f;
  q = q * s + -3.76125336e-1f;
  q = q * s + 1.28379166e-1f;
  const vec near = q * a + a;
  // |a| > 0.927734375, NaN excluded: a float compare (integer ones on 512-bit vectors need
  // AVX512DQ to become vectors again, and GCC goes lane by lane without it).
  const ivec far_side = t > 0.927734375f;
  return (vec)((far_side & (ivec)far) | (~far_side & (ivec)near));
}

// The activation on one vector of outputs: vectorised for ReLU and float SiLU / sigmoid /
// GELU, per element (activate()) otherwise.
template <class T, int Bytes>
inline __attribute__((always_inline)) typename simd<T, Bytes>::type activate_lanes(
    const Activation f, typename simd<T, Bytes>::type v) {
  using vec = typename simd<T, Bytes>::type;
  constexpr int lanes = Bytes / int(sizeof(T));
  if (f == Activation::none) return v;
  if (f == Activation::relu) {
    using ivec = decltype(v <= v);
    const ivec negative = v <= vec{};
    return (vec)((ivec)v & ~negative);
  }
  if constexpr (std::is_same<T, float>::value) {
    if (f == Activation::silu) return v / (exp_lanes<Bytes>(-v) + 1.0f);
    if (f == Activation::sigmoid) return 1.0f / (exp_lanes<Bytes>(-v) + 1.0f);
    if (f == Activation::gelu)
      return v * ((erf_lanes<Bytes>(v / 1.4142135623730951f) + 1.0f) * 0.5f);
  }
  T lane[lanes];
  store(lane, v);
  for (int l = 0; l < lanes; ++l) lane[l] = activate(f, lane[l]);
  return load<vec>(lane);
}

// Rows x 2 vectors of A rows [0, Rows) times a K block of one panel (rows P apart), the sums
// to `tile` (rows 2 vectors apart). Only this part is unrolled by rows: the epilogue after it
// is one loop, which keeps the code (and the compile time) small.
template <class T, int Bytes, int Rows>
inline __attribute__((always_inline)) void micro(const int64_t kc, const T* a,
                                                 const int64_t lda, const T* panel, T* tile) {
  using vec = typename simd<T, Bytes>::type;
  constexpr int lanes = Bytes / int(sizeof(T));
  constexpr int P = panel_width<T>;
  vec acc[Rows][2];
#pragma GCC unroll 16
  for (int r = 0; r < Rows; ++r) acc[r][0] = acc[r][1] = vec{};
  for (int64_t k = 0; k < kc; ++k) {
    const vec b0 = load<vec>(panel + k * P), b1 = load<vec>(panel + k * P + lanes);
#pragma GCC unroll 16
    for (int r = 0; r < Rows; ++r) {
      const T x = a[r * lda + k];
      acc[r][0] += x * b0;
      acc[r][1] += x * b1;
    }
  }
#pragma GCC unroll 16
  for (int r = 0; r < Rows; ++r) {
    store(tile + r * 2 * lanes, acc[r][0]);
    store(tile + r * 2 * lanes + lanes, acc[r][1]);
  }
}

// The epilogue of `rows` rows of sums in `tile` for C rows [i, i + rows), columns
// [n, n + valid): the `first` K block adds the start, the `last` the residual and activation.
template <class T, int Bytes>
inline __attribute__((always_inline)) void epilogue(const Product<T>& p, const T* tile,
                                                    const int rows, const int64_t i,
                                                    const int64_t n, const int valid,
                                                    const bool first, const bool last) {
  using vec = typename simd<T, Bytes>::type;
  constexpr int lanes = Bytes / int(sizeof(T));
  const bool from_c = !first || p.init == ConvInit::accumulate;
  const bool from_bias = !from_c && p.init == ConvInit::bias;
  for (int r = 0; r < rows; ++r) {
    T* out = p.c + (i + r) * p.ldc + n;
    const T* res = p.residual && last ? p.residual + (i + r) * p.ldr + n : nullptr;
    const T* sums = tile + r * 2 * lanes;
    if (valid == 2 * lanes) {
      for (int v = 0; v < 2; ++v) {
        vec value = load<vec>(sums + v * lanes);
        if (from_c) value = load<vec>(out + v * lanes) + value;
        else if (from_bias) value = load<vec>(p.bias + n + v * lanes) + value;
        if (res && !p.residual_after) value = value + load<vec>(res + v * lanes);
        if (last) value = activate_lanes<T, Bytes>(p.activation, value);
        if (res && p.residual_after) value = value + load<vec>(res + v * lanes);
        store(out + v * lanes, value);
      }
      continue;
    }
    for (int j = 0; j < valid; ++j) {
      T value = sums[j];
      if (from_c) value = out[j] + value;
      else if (from_bias) value = p.bias[n + j] + value;
      if (res && !p.residual_after) value = value + res[j];
      if (last) value = activate(p.activation, value);
      if (res && p.residual_after) value = value + res[j];
      out[j] = value;
    }
  }
}

// Rows [i0, i1) of one strip of columns [n, n + valid): micro-tiles of TileRows rows, the
// last one shorter.
template <class T, int Bytes, int TileRows>
inline __attribute__((always_inline)) void strip(const Product<T>& p, const int64_t kc,
                                                 const int64_t k0, const T* panel,
                                                 const int64_t i0, const int64_t i1,
                                                 const int64_t n, const int valid,
                                                 const bool first, const bool last) {
  constexpr int lanes = Bytes / int(sizeof(T));
  alignas(64) T tile[TileRows * 2 * lanes];
  for (int64_t i = i0; i < i1; i += TileRows) {
    const int rows = i1 - i < TileRows ? int(i1 - i) : TileRows;
    const T* a = p.a + i * p.lda + k0;
    switch (rows) {
#define LAPIS_GEMM_ROWS(R)                                                     \
  case R:                                                                      \
    if constexpr (R <= TileRows) micro<T, Bytes, R>(kc, a, p.lda, panel, tile); \
    break;
      LAPIS_GEMM_ROWS(12) LAPIS_GEMM_ROWS(11) LAPIS_GEMM_ROWS(10) LAPIS_GEMM_ROWS(9)
      LAPIS_GEMM_ROWS(8) LAPIS_GEMM_ROWS(7) LAPIS_GEMM_ROWS(6) LAPIS_GEMM_ROWS(5)
      LAPIS_GEMM_ROWS(4) LAPIS_GEMM_ROWS(3) LAPIS_GEMM_ROWS(2) LAPIS_GEMM_ROWS(1)
#undef LAPIS_GEMM_ROWS
      default: break;
    }
    epilogue<T, Bytes>(p, tile, rows, i, n, valid, first, last);
  }
}

// One task: rows [i0, i1) x panels [q0, q1).
template <class T, int Bytes>
inline __attribute__((always_inline)) void task(const Product<T>& p, const int64_t i0,
                                                const int64_t i1, const int64_t q0,
                                                const int64_t q1) {
  constexpr int lanes = Bytes / int(sizeof(T));
  constexpr int width = 2 * lanes;          // columns per strip
  constexpr int P = panel_width<T>;
  constexpr int tile_rows = Bytes == 64 ? 12 : 6;
  alignas(64) T packed[k_block * P];  // B's panel, when not packed at export
  for (int64_t k0 = 0; k0 == 0 || k0 < p.depth; k0 += k_block) {
    const int64_t kc = p.depth - k0 < k_block ? p.depth - k0 : k_block;
    const bool first = k0 == 0, last = k0 + kc >= p.depth;
    for (int64_t q = q0; q < q1; ++q) {
      const T* panel = p.b + (q * p.depth + k0) * P;
      const int64_t n0 = q * P;
      if (!p.packed) {   // B[k0 + k][n0 + j], zero past N
        const int64_t present = p.columns - n0 < P ? p.columns - n0 : P;
        for (int64_t k = 0; k < kc; ++k) {
          const T* row = p.b + (k0 + k) * p.ldb + n0;
          T* to = packed + k * P;
          for (int64_t j = 0; j < present; ++j) to[j] = row[j];
          for (int64_t j = present; j < P; ++j) to[j] = T(0);
        }
        panel = packed;
      }
      for (int s = 0; s < P / width; ++s) {
        const int64_t n = n0 + s * width;
        if (n >= p.columns) break;
        const int valid = p.columns - n < width ? int(p.columns - n) : width;
        strip<T, Bytes, tile_rows>(p, kc, k0, panel + s * width, i0, i1, n, valid, first,
                                   last);
      }
    }
  }
}

template <class T>
using task_function = void (*)(const Product<T>&, int64_t, int64_t, int64_t, int64_t);

template <class T>
void task_baseline(const Product<T>& p, int64_t i0, int64_t i1, int64_t q0, int64_t q1) {
  task<T, 16>(p, i0, i1, q0, q1);
}

#if defined(LAPIS_GEMM_X86)
template <class T>
__attribute__((target("avx2,fma"))) void task_avx2(const Product<T>& p, int64_t i0,
                                                   int64_t i1, int64_t q0, int64_t q1) {
  task<T, 32>(p, i0, i1, q0, q1);
}
template <class T>
__attribute__((target("avx512f,fma"))) void task_avx512(const Product<T>& p, int64_t i0,
                                                        int64_t i1, int64_t q0, int64_t q1) {
  task<T, 64>(p, i0, i1, q0, q1);
}
#endif

#if defined(LAPIS_GEMM_X86)
// AMX-BF16 usable: the CPU has AMX-TILE and AMX-BF16 (CPUID 7.0 EDX bits 24, 22) and Linux
// lets this process use the tile data (arch_prctl ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA).
inline bool amx_usable() {
  unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
  if (!__get_cpuid_count(7, 0, &eax, &ebx, &ecx, &edx)) return false;
  if (!(edx & (1u << 24)) || !(edx & (1u << 22))) return false;
#if defined(__linux__)
  return syscall(SYS_arch_prctl, 0x1023, 18) == 0;
#else
  return false;
#endif
}
#endif

// The widest instruction set this CPU has, lowered by LAPIS_GEMM_ISA; chosen once. Float
// and double products run the AVX-512F tiles on avx512_bf16 and amx_bf16 alike.
inline Isa isa() {
  static const Isa chosen = [] {
    Isa best = Isa::baseline;
    const char* forced = std::getenv("LAPIS_GEMM_ISA");
    const auto asked = [forced](const char* name) {
      return forced && std::strcmp(forced, name) == 0;
    };
#if defined(LAPIS_GEMM_X86)
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) best = Isa::avx2;
    if (best == Isa::avx2 && __builtin_cpu_supports("avx512f")) best = Isa::avx512;
    if (asked("baseline")) return Isa::baseline;
    if (best != Isa::avx512) return best;
    if (asked("avx2")) return Isa::avx2;
    if (asked("avx512")) return Isa::avx512;
    // vdpbf16ps only when asked for: on the Xeon (Sapphire Rapids) it was measured on, it
    // retires half a zmm a cycle, 32 flops, against 64 for float FMA on two ports
    // (benchmarks/fma_peak.c), and the FMA kernel on widened bfloat16 ran faster.
    if (asked("avx512_bf16"))
      return __builtin_cpu_supports("avx512bf16") ? Isa::avx512_bf16 : Isa::avx512;
    if (amx_usable()) return Isa::amx_bf16;
#else
    (void)asked;
#endif
    return best;
  }();
  return chosen;
}

inline task_function<float> task_bf16_for();

// The tiles for this CPU; with `bf16` (float only), those of bfloat16 operands.
template <class T>
task_function<T> task_for(const bool bf16 = false) {
  if constexpr (std::is_same<T, float>::value) {
    if (bf16) return task_bf16_for();
  }
#if defined(LAPIS_GEMM_X86)
  switch (isa()) {
    case Isa::amx_bf16:
    case Isa::avx512_bf16:
    case Isa::avx512: return task_avx512<T>;
    case Isa::avx2: return task_avx2<T>;
    default: break;
  }
#endif
  return task_baseline<T>;
}

// Narrow products (N <= narrow_columns, a regression head): a 32-column tile would do up to
// 32 times the work, so each output is a dot product over K instead, vectorised along K with
// four accumulators, B's columns gathered once per task into `columns` ([N][K], contiguous).
inline constexpr int64_t narrow_columns = 4;

template <class T>
inline T element_of_b(const Product<T>& p, const int64_t k, const int64_t n) {
  constexpr int64_t P = panel_width<T>;
  if constexpr (std::is_same<T, float>::value) {
    if (p.bf16)
      return p.packed ? packed_bf16_at(p.b16, p.depth, k, n) : round_bf16(p.b[k * p.ldb + n]);
  }
  return p.packed ? p.b[((n / P) * p.depth + k) * P + n % P] : p.b[k * p.ldb + n];
}

template <class T, int Slot>
T* thread_scratch(size_t count);
template <int Bytes>
inline __attribute__((always_inline)) void round_row(const float* from, float* to,
                                                     int64_t count);

// --precision bf16: each row of A rounded (to float values) in a buffer of the thread first;
// `columns` holds B's rounded values.
template <class T, int Bytes>
inline __attribute__((always_inline)) void narrow_rows(const Product<T>& p, const T* columns,
                                                       const int64_t i0, const int64_t i1) {
  using vec = typename simd<T, Bytes>::type;
  constexpr int lanes = Bytes / int(sizeof(T));
  const int64_t depth = p.depth, whole = depth / (4 * lanes) * (4 * lanes);
  T* rounded = nullptr;
  if constexpr (std::is_same<T, float>::value)
    if (p.bf16) rounded = thread_scratch<float, 3>(size_t(depth));
  for (int64_t i = i0; i < i1; ++i) {
    const T* a = p.a + i * p.lda;
    if constexpr (std::is_same<T, float>::value) {
      if (rounded) {
        round_row<Bytes>(a, rounded, depth);
        a = rounded;
      }
    }
    for (int64_t n = 0; n < p.columns; ++n) {
      const T* w = columns + n * depth;
      vec acc[4] = {vec{}, vec{}, vec{}, vec{}};
      for (int64_t k = 0; k < whole; k += 4 * lanes)
#pragma GCC unroll 4
        for (int u = 0; u < 4; ++u)
          acc[u] += load<vec>(a + k + u * lanes) * load<vec>(w + k + u * lanes);
      const vec both = (acc[0] + acc[1]) + (acc[2] + acc[3]);
      T sum = T(0);
      for (int l = 0; l < lanes; ++l) sum += both[l];
      for (int64_t k = whole; k < depth; ++k) sum += a[k] * w[k];
      T& out = p.c[i * p.ldc + n];
      T value = p.init == ConvInit::bias ? p.bias[n] + sum
                : p.init == ConvInit::accumulate ? out + sum : sum;
      const T* res = p.residual ? p.residual + i * p.ldr + n : nullptr;
      if (res && !p.residual_after) value = value + *res;
      value = activate(p.activation, value);
      if (res && p.residual_after) value = value + *res;
      out = value;
    }
  }
}

template <class T>
using narrow_function = void (*)(const Product<T>&, const T*, int64_t, int64_t);

template <class T>
void narrow_baseline(const Product<T>& p, const T* columns, int64_t i0, int64_t i1) {
  narrow_rows<T, 16>(p, columns, i0, i1);
}
#if defined(LAPIS_GEMM_X86)
template <class T>
__attribute__((target("avx2,fma"))) void narrow_avx2(const Product<T>& p, const T* columns,
                                                     int64_t i0, int64_t i1) {
  narrow_rows<T, 32>(p, columns, i0, i1);
}
template <class T>
__attribute__((target("avx512f,fma"))) void narrow_avx512(const Product<T>& p,
                                                          const T* columns, int64_t i0,
                                                          int64_t i1) {
  narrow_rows<T, 64>(p, columns, i0, i1);
}
#endif

template <class T>
narrow_function<T> narrow_for() {
#if defined(LAPIS_GEMM_X86)
  switch (isa()) {
    case Isa::amx_bf16:
    case Isa::avx512_bf16:
    case Isa::avx512: return narrow_avx512<T>;
    case Isa::avx2: return narrow_avx2<T>;
    default: break;
  }
#endif
  return narrow_baseline<T>;
}

// A growing buffer of this thread's (B's gathered columns, a chain's activations): the
// worker threads of OpenMP and Threads live as long as the program, so it is allocated once.
template <class T, int Slot>
T* thread_scratch(const size_t count) {
  static thread_local std::vector<T> scratch;
  if (scratch.size() < count) scratch.resize(count);
  return scratch.data();
}

// ---- bfloat16 operands (--precision bf16) ---------------------------------------------------
// A task as task(), in pairs of K: A's rows of the task rounded to bfloat16 once a K block (a
// thread's buffer, the rows 2 * kpc halves apart), B's panel block the weight's own or packed
// here (a plain float B, or the block that holds an odd K's last row); 32-bit words, each two
// bfloat16 of consecutive k (the even one in the low half).
inline constexpr int64_t pair_block = k_block / 2;
inline constexpr int64_t amx_pair_block = 512;

template <class V>
inline __attribute__((always_inline)) uint32_t word_at(const V* p) {
  uint32_t w;
  __builtin_memcpy(&w, p, sizeof(w));
  return w;
}
inline __attribute__((always_inline)) float float_of_bits(const uint32_t w) {
  float f;
  __builtin_memcpy(&f, &w, sizeof(f));
  return f;
}

// Float lanes (as their bits) -> the bits of the nearest bfloat16 in each lane's low half, the
// high half zero: lapis::to_bfloat16 on a vector.
template <int Bytes>
inline __attribute__((always_inline)) typename simd_int<Bytes>::type bfloat16_lanes(
    const typename simd_int<Bytes>::type bits) {
  using ivec = typename simd_int<Bytes>::type;
  using uvec = typename simd<uint32_t, Bytes>::type;
  const uvec u = (uvec)bits;
  const uvec nan = (uvec)((u & 0x7fffffffu) > 0x7f800000u);
  const uvec rounded = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
  const uvec quiet = (u >> 16) | 0x40u;
  return (ivec)((rounded & ~nan) | (quiet & nan));
}

// to[j] = to_bfloat16(from[j]).bits for j < count, a vector at a time; or, to float, the
// rounded values.
template <int Bytes>
inline __attribute__((always_inline)) void round_row(const float* from, uint16_t* to,
                                                     const int64_t count) {
  using ivec = typename simd_int<Bytes>::type;
  constexpr int lanes = Bytes / 4;
  using hvec = typename simd<uint16_t, Bytes / 2>::type;
  int64_t j = 0;
  for (; j + lanes <= count; j += lanes)
    store<hvec>(to + j,
                __builtin_convertvector(bfloat16_lanes<Bytes>(load<ivec>(from + j)), hvec));
  for (; j < count; ++j) to[j] = to_bfloat16(from[j]).bits;
}
template <int Bytes>
inline __attribute__((always_inline)) void round_row(const float* from, float* to,
                                                     const int64_t count) {
  using ivec = typename simd_int<Bytes>::type;
  constexpr int lanes = Bytes / 4;
  int64_t j = 0;
  for (; j + lanes <= count; j += lanes)
    store<ivec>(to + j, bfloat16_lanes<Bytes>(load<ivec>(from + j)) << 16);
  for (; j < count; ++j) to[j] = to_float(to_bfloat16(from[j]));
}

// Rows x 2 vectors of sums over kpc pairs on float FMAs (multiply + add where the target has
// no FMA: the same sums, the products being exact); A's rows already rounded, as float.
template <int Bytes, int Rows>
inline __attribute__((always_inline)) void micro_bf16(const int64_t kpc, const float* a,
                                                      const int64_t lda, const uint32_t* panel,
                                                      float* tile) {
  using vec = typename simd<float, Bytes>::type;
  using ivec = typename simd_int<Bytes>::type;
  constexpr int lanes = Bytes / 4;
  constexpr int P = panel_width<float>;
  const ivec high_half = ivec{} + int32_t(0xffff0000u);
  vec acc[Rows][2];
#pragma GCC unroll 16
  for (int r = 0; r < Rows; ++r) acc[r][0] = acc[r][1] = vec{};
  for (int64_t k = 0; k < kpc; ++k) {
    const ivec w0 = load<ivec>(panel + k * P), w1 = load<ivec>(panel + k * P + lanes);
    const vec odd0 = (vec)(w0 & high_half), even0 = (vec)(w0 << 16);
    const vec odd1 = (vec)(w1 & high_half), even1 = (vec)(w1 << 16);
#pragma GCC unroll 16
    for (int r = 0; r < Rows; ++r) {
      const float even = a[r * lda + 2 * k], odd = a[r * lda + 2 * k + 1];
      acc[r][0] += odd * odd0;
      acc[r][1] += odd * odd1;
      acc[r][0] += even * even0;
      acc[r][1] += even * even1;
    }
  }
#pragma GCC unroll 16
  for (int r = 0; r < Rows; ++r) {
    store(tile + r * 2 * lanes, acc[r][0]);
    store(tile + r * 2 * lanes + lanes, acc[r][1]);
  }
}

#if defined(LAPIS_GEMM_X86)
// The same on vdpbf16ps. A function of its own, not inlined (a call a tile of up to 3072
// instructions): the intrinsic is only inlined into callers compiled for AVX512_BF16.
template <int Rows>
__attribute__((target("avx512f,avx512bf16"), noinline)) void micro_dot(
    const int64_t kpc, const uint16_t* a, const int64_t lda, const uint32_t* panel,
    float* tile) {
  constexpr int P = panel_width<float>;
  __m512 acc[Rows][2];
#pragma GCC unroll 16
  for (int r = 0; r < Rows; ++r) acc[r][0] = acc[r][1] = _mm512_setzero_ps();
  for (int64_t k = 0; k < kpc; ++k) {
    const __m512bh b0 = (__m512bh)_mm512_loadu_si512(panel + k * P);
    const __m512bh b1 = (__m512bh)_mm512_loadu_si512(panel + k * P + 16);
#pragma GCC unroll 16
    for (int r = 0; r < Rows; ++r) {
      const __m512bh x = (__m512bh)_mm512_set1_epi32(int(word_at(a + r * lda + 2 * k)));
      acc[r][0] = _mm512_dpbf16_ps(acc[r][0], x, b0);
      acc[r][1] = _mm512_dpbf16_ps(acc[r][1], x, b1);
    }
  }
#pragma GCC unroll 16
  for (int r = 0; r < Rows; ++r) {
    _mm512_storeu_ps(tile + r * 32, acc[r][0]);
    _mm512_storeu_ps(tile + r * 32 + 16, acc[r][1]);
  }
}
#endif

#if defined(LAPIS_GEMM_X86)
// AMX-BF16: tile registers of 16 rows x 64 bytes, all eight alike: C in tmm0-3 (32 rows x 32
// columns of float sums), A in tmm4-5 (16 rows x 32 bfloat16 of K each), B in tmm6-7 (16 pairs
// of K x 16 columns, the pairs layout of the packed panels, rows 128 bytes apart). The
// configuration is the thread's: set at the start of every task (ldtilecfg, written out here:
// GCC 12's _tile_loadconfig reads only 8 bytes as far as its optimiser knows).
struct alignas(64) TileConfig {
  uint8_t palette, start_row, reserved[14];
  uint16_t bytes_per_row[16];
  uint8_t rows[16];
};

__attribute__((target("amx-tile"), noinline)) inline void configure_tiles() {
  TileConfig config{};
  config.palette = 1;
  for (int t = 0; t < 8; ++t) {
    config.bytes_per_row[t] = 64;
    config.rows[t] = 16;
  }
  __asm__ volatile("ldtilecfg %0" : : "m"(config) : "memory");
}

// Up to 32 rows (`rows`) x 32 columns of sums over kpad pairs (a multiple of 16): A's rows
// 2 * lda bytes apart, zero-padded to kpad pairs (rows past `rows` are read, and ignored).
__attribute__((target("amx-tile,amx-bf16"), noinline)) inline void micro_amx(
    const int64_t kpad, const uint16_t* a, const int64_t lda, const uint32_t* panel,
    float* tile, const int rows) {
  constexpr int64_t P = panel_width<float>;
  const int64_t stride = lda * 2;
  _tile_zero(0);
  _tile_zero(1);
  if (rows > 16) {
    _tile_zero(2);
    _tile_zero(3);
  }
  for (int64_t k = 0; k < kpad; k += 16) {
    _tile_loadd(6, panel + k * P, P * 4);
    _tile_loadd(7, panel + k * P + 16, P * 4);
    _tile_loadd(4, a + 2 * k, stride);
    _tile_dpbf16ps(0, 4, 6);
    _tile_dpbf16ps(1, 4, 7);
    if (rows > 16) {
      _tile_loadd(5, a + 16 * lda + 2 * k, stride);
      _tile_dpbf16ps(2, 5, 6);
      _tile_dpbf16ps(3, 5, 7);
    }
  }
  _tile_stored(0, tile, 128);
  _tile_stored(1, tile + 16, 128);
  if (rows > 16) {
    _tile_stored(2, tile + 16 * 32, 128);
    _tile_stored(3, tile + 16 * 32 + 16, 128);
  }
}
#endif

// The bfloat16 kernels: float FMA on widened operands, vdpbf16ps, AMX tiles.
enum class Bf16Kernel : int { fma, dot, amx };

template <int Bytes, int TileRows, Bf16Kernel Kind, class Rounded>
inline __attribute__((always_inline)) void strip_bf16(const Product<float>& p, const int64_t kpc,
                                                      const int64_t lda, const Rounded* rounded,
                                                      const uint32_t* panel, const int64_t i0,
                                                      const int64_t i1, const int64_t n,
                                                      const int valid, const bool first,
                                                      const bool last) {
  constexpr int lanes = Bytes / 4;
  alignas(64) float tile[TileRows * 2 * lanes];
  for (int64_t i = i0; i < i1; i += TileRows) {
    const int rows = i1 - i < TileRows ? int(i1 - i) : TileRows;
    const Rounded* a = rounded + (i - i0) * lda;
    if constexpr (Kind == Bf16Kernel::amx) {
#if defined(LAPIS_GEMM_X86)
      micro_amx(kpc, a, lda, panel, tile, rows);
#endif
    } else {
      switch (rows) {
#if defined(LAPIS_GEMM_X86)
#define LAPIS_GEMM_DOT(R) micro_dot<R>(kpc, a, lda, panel, tile);
#else
#define LAPIS_GEMM_DOT(R)
#endif
#define LAPIS_GEMM_ROWS(R)                                                     \
  case R:                                                                      \
    if constexpr (R <= TileRows) {                                             \
      if constexpr (Kind == Bf16Kernel::dot) {                                 \
        LAPIS_GEMM_DOT(R)                                                      \
      } else if constexpr (std::is_same<Rounded, float>::value) {              \
        micro_bf16<Bytes, R>(kpc, a, lda, panel, tile);                        \
      }                                                                        \
    }                                                                          \
    break;
        LAPIS_GEMM_ROWS(12) LAPIS_GEMM_ROWS(11) LAPIS_GEMM_ROWS(10) LAPIS_GEMM_ROWS(9)
        LAPIS_GEMM_ROWS(8) LAPIS_GEMM_ROWS(7) LAPIS_GEMM_ROWS(6) LAPIS_GEMM_ROWS(5)
        LAPIS_GEMM_ROWS(4) LAPIS_GEMM_ROWS(3) LAPIS_GEMM_ROWS(2) LAPIS_GEMM_ROWS(1)
#undef LAPIS_GEMM_ROWS
#undef LAPIS_GEMM_DOT
        default: break;
      }
    }
    epilogue<float, Bytes>(p, tile, rows, i, n, valid, first, last);
  }
}

template <int Bytes, Bf16Kernel Kind>
inline __attribute__((always_inline)) void task_bf16(const Product<float>& p, const int64_t i0,
                                                     const int64_t i1, const int64_t q0,
                                                     const int64_t q1) {
  constexpr int lanes = Bytes / 4;
  constexpr int width = 2 * lanes;
  constexpr int P = panel_width<float>;
  constexpr bool amx = Kind == Bf16Kernel::amx;
  constexpr int tile_rows = amx ? 32 : Bytes == 64 ? 12 : 6;
  // AMX steps through K 16 pairs at a time: blocks padded with zero pairs to a multiple of 16.
  constexpr int64_t pair_step = amx ? 16 : 1;
  const int64_t depth = p.depth, pairs = (depth + 1) / 2, whole = depth / 2;
  // AMX: K in blocks of up to amx_pair_block pairs, so that a layer's sums meet C once
  // (one pass of the epilogue instead of a read-back of C for each further block).
  constexpr int64_t block = amx ? amx_pair_block : pair_block;
  alignas(64) uint32_t packed[block * P];
  // A's rows rounded: bfloat16 bits for vdpbf16ps and AMX, float values (rounded) for FMA.
  using Rounded = typename std::conditional<Kind == Bf16Kernel::fma, float, uint16_t>::type;
  Rounded* rounded = thread_scratch<Rounded, 2>(size_t(row_block * 2 * block));
#if defined(LAPIS_GEMM_X86)
  if constexpr (amx) configure_tiles();
#endif
  for (int64_t kp0 = 0; kp0 == 0 || kp0 < pairs; kp0 += block) {
    const int64_t kpc = pairs - kp0 < block ? pairs - kp0 : block;
    const int64_t kpad = (kpc + pair_step - 1) / pair_step * pair_step;
    const int64_t lda = 2 * kpad;   // A's rounded rows, in bfloat16 (or float) elements
    const bool first = kp0 == 0, last = kp0 + kpc >= pairs;
    const int64_t k0 = 2 * kp0, present = depth - k0 < 2 * kpc ? depth - k0 : 2 * kpc;
    for (int64_t i = i0; i < i1; ++i) {
      const float* from = p.a + i * p.lda + k0;
      Rounded* to = rounded + (i - i0) * lda;
      round_row<Bytes>(from, to, present);
      for (int64_t k = present; k < lda; ++k) to[k] = Rounded(0);
    }
    for (int64_t q = q0; q < q1; ++q) {
      const int64_t n0 = q * P;
      const uint32_t* panel = packed;
      if (p.packed) {
        const uint16_t* weight = &p.b16[q * depth * P].bits;
        if (kp0 + kpad <= whole) {
          panel = reinterpret_cast<const uint32_t*>(weight + kp0 * 2 * P);   // read by memcpy
        } else {   // the last block: an odd K's last row alone (its partner zero), padding
          const int64_t paired = whole - kp0 < kpc ? whole - kp0 : kpc;
          __builtin_memcpy(packed, weight + kp0 * 2 * P, size_t(paired * P) * 4);
          for (int64_t j = 0; j < (kpad - paired) * P; ++j) packed[paired * P + j] = 0;
          if (paired < kpc)
            for (int64_t j = 0; j < P; ++j) packed[paired * P + j] = weight[whole * 2 * P + j];
        }
      } else {   // B[k][n0 + j] rounded, zero past K and N
        const int64_t columns = p.columns - n0 < P ? p.columns - n0 : P;
        for (int64_t kk = 0; kk < kpc; ++kk) {
          const int64_t k = k0 + 2 * kk;
          const float* even = p.b + k * p.ldb + n0;
          const float* odd = k + 1 < depth ? even + p.ldb : nullptr;
          uint32_t* to = packed + kk * P;
          int64_t j = 0;
          if (odd && columns == P) {
            using ivec = typename simd_int<Bytes>::type;
            for (; j < P; j += lanes)
              store<ivec>(to + j, bfloat16_lanes<Bytes>(load<ivec>(even + j)) |
                                      (bfloat16_lanes<Bytes>(load<ivec>(odd + j)) << 16));
          }
          for (; j < columns; ++j)
            to[j] = uint32_t(to_bfloat16(even[j]).bits) |
                    (odd ? uint32_t(to_bfloat16(odd[j]).bits) << 16 : 0u);
          for (j = columns; j < P; ++j) to[j] = 0;
        }
        for (int64_t j = kpc * P; j < kpad * P; ++j) packed[j] = 0;
      }
      for (int s = 0; s < P / width; ++s) {
        const int64_t n = n0 + s * width;
        if (n >= p.columns) break;
        const int valid = p.columns - n < width ? int(p.columns - n) : width;
        strip_bf16<Bytes, tile_rows, Kind>(p, kpad, lda, rounded, panel + s * width, i0, i1,
                                           n, valid, first, last);
      }
    }
  }
}

inline void task_bf16_baseline(const Product<float>& p, int64_t i0, int64_t i1, int64_t q0,
                               int64_t q1) {
  task_bf16<16, Bf16Kernel::fma>(p, i0, i1, q0, q1);
}
#if defined(LAPIS_GEMM_X86)
__attribute__((target("avx2,fma"))) inline void task_bf16_avx2(const Product<float>& p,
                                                               int64_t i0, int64_t i1,
                                                               int64_t q0, int64_t q1) {
  task_bf16<32, Bf16Kernel::fma>(p, i0, i1, q0, q1);
}
__attribute__((target("avx512f,fma"))) inline void task_bf16_avx512(const Product<float>& p,
                                                                    int64_t i0, int64_t i1,
                                                                    int64_t q0, int64_t q1) {
  task_bf16<64, Bf16Kernel::fma>(p, i0, i1, q0, q1);
}
__attribute__((target("avx512f,avx512bf16,fma"))) inline void task_bf16_dot(
    const Product<float>& p, int64_t i0, int64_t i1, int64_t q0, int64_t q1) {
  task_bf16<64, Bf16Kernel::dot>(p, i0, i1, q0, q1);
}
__attribute__((target("avx512f,fma"))) inline void task_bf16_amx(
    const Product<float>& p, int64_t i0, int64_t i1, int64_t q0, int64_t q1) {
  task_bf16<64, Bf16Kernel::amx>(p, i0, i1, q0, q1);
}
#endif

inline task_function<float> task_bf16_for() {
#if defined(LAPIS_GEMM_X86)
  switch (isa()) {
    case Isa::amx_bf16: return task_bf16_amx;
    case Isa::avx512_bf16: return task_bf16_dot;
    case Isa::avx512: return task_bf16_avx512;
    case Isa::avx2: return task_bf16_avx2;
    default: break;
  }
#endif
  return task_bf16_baseline;
}

// Rows [i0, i1) of product `p`: the tiles, or dot products where N is narrow.
template <class T>
void rows_of(const Product<T>& p, const task_function<T> tiles, const narrow_function<T> dots,
             const int64_t i0, const int64_t i1) {
  if (p.columns <= narrow_columns) {
    T* columns = thread_scratch<T, 0>(size_t(p.columns * p.depth));
    for (int64_t n = 0; n < p.columns; ++n)
      for (int64_t k = 0; k < p.depth; ++k) columns[n * p.depth + k] = element_of_b(p, k, n);
    dots(p, columns, i0, i1);
    return;
  }
  tiles(p, i0, i1, 0, (p.columns + panel_width<T> - 1) / panel_width<T>);
}

// `batch` products, the operands of product b `stride_a * b` (etc.) elements on; every task
// is one parallel_for iteration on `space`.
template <class ExecutionSpace, class T>
void run(const ExecutionSpace& space, const char* label, const Product<T>& p,
         const int64_t batch, const int64_t stride_a, const int64_t stride_b,
         const int64_t stride_c, const int64_t stride_r) {
  const task_function<T> run_task = task_for<T>(p.bf16);
  const int64_t panels = (p.columns + panel_width<T> - 1) / panel_width<T>;
  const int64_t row_tasks = (p.rows + row_block - 1) / row_block;
  if (p.columns <= narrow_columns) {   // one task a row block, each its dot products
    const narrow_function<T> dots = narrow_for<T>();
    using range = Kokkos::RangePolicy<ExecutionSpace, Kokkos::Schedule<Kokkos::Dynamic>,
                                      Kokkos::IndexType<int64_t>>;
    Kokkos::parallel_for(label, range(space, 0, batch * row_tasks, Kokkos::ChunkSize(1)),
                         [=](const int64_t t) {
      const int64_t product = t / row_tasks, i0 = (t % row_tasks) * row_block;
      Product<T> q = p;
      q.a += product * stride_a;
      q.b += product * stride_b;
      q.c += product * stride_c;
      if (q.residual) q.residual += product * stride_r;
      rows_of(q, run_task, dots, i0, i0 + row_block < p.rows ? i0 + row_block : p.rows);
    });
    return;
  }
  const int64_t column_tasks = (panels + panels_per_task - 1) / panels_per_task;
  const int64_t tasks = row_tasks * column_tasks;
  // Tasks handed out as threads free up: a core that other work slows takes fewer.
  using range = Kokkos::RangePolicy<ExecutionSpace, Kokkos::Schedule<Kokkos::Dynamic>,
                                    Kokkos::IndexType<int64_t>>;
  const range tasks_range(space, 0, batch * tasks, Kokkos::ChunkSize(1));
  Kokkos::parallel_for(label, tasks_range, [=](const int64_t t) {
    const int64_t product = t / tasks, within = t % tasks;
    const int64_t i0 = (within / column_tasks) * row_block;
    const int64_t q0 = (within % column_tasks) * panels_per_task;
    const int64_t i1 = i0 + row_block < p.rows ? i0 + row_block : p.rows;
    const int64_t q1 = q0 + panels_per_task < panels ? q0 + panels_per_task : panels;
    Product<T> q = p;
    q.a += product * stride_a;
    q.b += product * stride_b;
    q.c += product * stride_c;
    if (q.residual) q.residual += product * stride_r;
    run_task(q, i0, i1, q0, q1);
  });
}


// One layer of a chain (lapis::linear_chain, gemm.hpp): activation(bias + x W^T), W packed.
template <class T>
struct ChainLayer {
  const T* weight;
  const T* bias;       // or nullptr: the sums start from zero
  int64_t columns;     // N, the next layer's K
  Activation activation;
  const bfloat16* weight16 = nullptr;   // --precision bf16: the weight, instead of `weight`
};

// Consecutive linear layers, a block of rows through all of them in turn, one parallel_for for
// the chain: the activations between layers stay in two buffers of the thread (its L2), and
// the threads meet once, not once a layer -- on a core shared with other work, each meeting
// waits for the slowest thread. Blocks of up to row_block rows, as many as a multiple of the
// threads, so that both cores are busy at small batches too.
template <class ExecutionSpace, class T, size_t L>
void chain(const ExecutionSpace& space, const char* label, const T* x, const int64_t ldx,
           const int64_t rows, const int64_t depth, const std::array<ChainLayer<T>, L>& layers,
           T* y, const int64_t ldy) {
  static_assert(L > 0, "a chain has layers");
  const task_function<T> tiles = task_for<T>(layers[0].weight16 != nullptr);
  const narrow_function<T> dots = narrow_for<T>();
  constexpr int64_t align = 64 / int64_t(sizeof(T));
  int64_t ld = align;   // row stride of the buffers between layers
  for (size_t l = 0; l + 1 < L; ++l)
    ld = layers[l].columns > ld ? (layers[l].columns + align - 1) / align * align : ld;
  const int64_t threads = space.concurrency() > 1 ? int64_t(space.concurrency()) : 1;
  int64_t tasks = (rows + row_block - 1) / row_block;
  tasks = (tasks + threads - 1) / threads * threads;
  const int64_t block = (rows + tasks - 1) / tasks;
  tasks = (rows + block - 1) / block;
  using range = Kokkos::RangePolicy<ExecutionSpace, Kokkos::Schedule<Kokkos::Dynamic>,
                                    Kokkos::IndexType<int64_t>>;
  Kokkos::parallel_for(label, range(space, 0, tasks, Kokkos::ChunkSize(1)), [=](const int64_t t) {
    const int64_t r0 = t * block, count = rows - r0 < block ? rows - r0 : block;
    T* buffers = thread_scratch<T, 1>(size_t(2 * block * ld));
    const T* in = x + r0 * ldx;
    int64_t ld_in = ldx, k = depth;
    for (size_t l = 0; l < L; ++l) {
      const bool last = l + 1 == L;
      T* out = last ? y + r0 * ldy : buffers + int64_t(l % 2) * block * ld;
      const int64_t ld_out = last ? ldy : ld;
      const ChainLayer<T>& layer = layers[l];
      const Product<T> q{in, ld_in, layer.weight, 0, true, out, ld_out, count, layer.columns, k,
                         layer.bias ? ConvInit::bias : ConvInit::zero, layer.bias, nullptr, 0,
                         false, layer.activation, layer.weight16 != nullptr, layer.weight16};
      rows_of(q, tiles, dots, 0, count);
      in = out;
      ld_in = ld_out;
      k = layer.columns;
    }
  });
}

}  // namespace gemm_host
}  // namespace lapis

#endif  // LAPIS_GEMM_HOST_TILES
