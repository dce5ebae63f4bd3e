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
// The instruction set is picked once at run time (__builtin_cpu_supports); the environment
// variable LAPIS_GEMM_ISA=avx2|baseline forces a lower one (for tests and comparisons).
// No fast-math: float SiLU and sigmoid take a vectorised exp (Cephes' expf, within 2 ulp);
// GELU, tanh and double precision call std::erf / std::tanh / std::exp per element.
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
    case Activation::gelu: return v * ((math::erf(v / T(1.4142135623730951)) + T(1)) * T(0.5));
    case Activation::tanh: return math::tanh(v);
    case Activation::sigmoid: return T(1) / (math::exp(-v) + T(1));
    default: return v;
  }
}

namespace gemm_host {
// Columns per panel of a packed B: 128 bytes, two zmm, four ymm or eight xmm. Must match
// LINEAR_PANEL_BYTES in exporter/tuned_ops.py.
template <class T>
inline constexpr int panel_width = int(128 / sizeof(T));
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

namespace lapis {
namespace gemm_host {

inline constexpr int64_t k_block = 256;
inline constexpr int64_t row_block = 96;
inline constexpr int64_t panels_per_task = 4;

enum class Isa : int { baseline, avx2, avx512 };

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

// exp(x) for float lanes: Cephes' expf (range reduction by ln 2 in two parts, a degree-6
// polynomial), within 2 ulp of std::exp; 0 below -88.37, exp(88.37) above +88.37, NaN stays.
template <int Bytes>
inline __attribute__((always_inline)) typename simd<float, Bytes>::type exp_lanes(
    typename simd<float, Bytes>::type x) {
  using vec = typename simd<float, Bytes>::type;
  using ivec = typename simd_int<Bytes>::type;
  const vec hi = vec{} + 88.3762626647949f, lo = vec{} - 88.3762626647949f;
  const ivec above = x > hi, below = x < lo;
  x = (vec)(((ivec)x & ~above) | ((ivec)hi & above));
  x = (vec)(((ivec)x & ~below) | ((ivec)lo & below));
  vec fx = x * 1.44269504088896341f + 0.5f;
  const ivec truncated = __builtin_convertvector(fx, ivec);
  vec n = __builtin_convertvector(truncated, vec);
  const ivec over = n > fx;                       // floor: truncation rounded up
  n = n - (vec)((ivec)(vec{} + 1.0f) & over);
  const vec r = x - n * 0.693359375f - n * -2.12194440e-4f;
  const vec z = r * r;
  vec y = (vec{} + 1.9875691500e-4f) * r + 1.3981999507e-3f;
  y = y * r + 8.3334519073e-3f;
  y = y * r + 4.1665795894e-2f;
  y = y * r + 1.6666665459e-1f;
  y = y * r + 5.0000001201e-1f;
  y = y * z + r + 1.0f;
  const ivec exponent = (__builtin_convertvector(n, ivec) + 127) << 23;
  return y * (vec)exponent;
}

// The activation on one vector of outputs: vectorised for ReLU and float SiLU / sigmoid, per
// element (activate()) otherwise.
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
    if (f == Activation::silu) return v * (1.0f / (exp_lanes<Bytes>(-v) + 1.0f));
    if (f == Activation::sigmoid) return 1.0f / (exp_lanes<Bytes>(-v) + 1.0f);
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

// The widest instruction set this CPU has, lowered by LAPIS_GEMM_ISA; chosen once.
inline Isa isa() {
  static const Isa chosen = [] {
    Isa best = Isa::baseline;
#if defined(LAPIS_GEMM_X86)
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) best = Isa::avx2;
    if (best == Isa::avx2 && __builtin_cpu_supports("avx512f")) best = Isa::avx512;
#endif
    const char* forced = std::getenv("LAPIS_GEMM_ISA");
    if (forced && std::strcmp(forced, "baseline") == 0) return Isa::baseline;
    if (forced && std::strcmp(forced, "avx2") == 0 && best == Isa::avx512) return Isa::avx2;
    return best;
  }();
  return chosen;
}

template <class T>
task_function<T> task_for() {
#if defined(LAPIS_GEMM_X86)
  switch (isa()) {
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
  return p.packed ? p.b[((n / P) * p.depth + k) * P + n % P] : p.b[k * p.ldb + n];
}

template <class T, int Bytes>
inline __attribute__((always_inline)) void narrow_rows(const Product<T>& p, const T* columns,
                                                       const int64_t i0, const int64_t i1) {
  using vec = typename simd<T, Bytes>::type;
  constexpr int lanes = Bytes / int(sizeof(T));
  const int64_t depth = p.depth, whole = depth / (4 * lanes) * (4 * lanes);
  for (int64_t i = i0; i < i1; ++i) {
    const T* a = p.a + i * p.lda;
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
  const task_function<T> run_task = task_for<T>();
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
  const task_function<T> tiles = task_for<T>();
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
                         false, layer.activation};
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
