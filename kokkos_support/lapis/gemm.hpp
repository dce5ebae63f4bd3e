// lapis-export dense matrix product, shipped into every exported package (src/lapis/).
// The generated code calls lapis::matmul for linalg.matmul and lapis::batch_matmul for
// linalg.batch_matmul (exporter/lowering/matmul.py): C = A B, or C += A B, for Views of float or double
// of any layout.
// Host backends (views with unit column stride): threads over tiles of C; in a tile, blocks of
// 256 along K, each block's B columns packed 2 vectors wide into a stack buffer, and a
// register-blocked micro-kernel of 6 rows x 2 vectors (accumulators in registers). On x86-64
// the tile code is compiled twice, for AVX2+FMA (6 x 16 floats, 6 x 8 doubles) and for baseline
// x86-64 (16-byte vectors), and the version is picked at run time. Other backends (and views
// of other strides): one thread per element of C, the dot product in order over K.
// LAPIS_GEMM_PORTABLE picks the portable version on host backends too (for tests).
// No fast-math: sums are reordered (blocks of K), contracted to FMA where the target has it.
// Kokkos 3.4-4.x.
#pragma once

#include <Kokkos_Core.hpp>

#include <array>
#include <cstdint>
#include <type_traits>

#if (defined(__GNUC__) || defined(__clang__)) && !defined(__NVCC__) && !defined(__CUDACC__) && \
    !defined(__HIPCC__) && !defined(__INTEL_LLVM_COMPILER) && !defined(SYCL_LANGUAGE_VERSION) && \
    !defined(LAPIS_GEMM_PORTABLE)
#define LAPIS_GEMM_HOST_TILES 1
#if defined(__x86_64__)
#define LAPIS_GEMM_X86 1
#endif
#endif

namespace lapis {

// Where C starts from: what it holds (linalg.matmul's own semantics) or zero (a zero fill
// before the product, folded into the call).
enum class MatmulInit : int { accumulate, zero };

#if defined(LAPIS_GEMM_HOST_TILES)
namespace gemm_detail {

inline constexpr int64_t k_block = 256;     // K per packed panel: 256 x 64 bytes = 16 KiB (L1)
inline constexpr int64_t row_block = 72;    // rows of C per thread tile (12 micro-tiles)
inline constexpr int64_t column_block = 256;
inline constexpr int tile_rows = 6;

// A GNU vector of `Bytes` bytes of T (Bytes == sizeof(T): T itself).
template <class T, int Bytes> struct simd { using type = T; };
template <> struct simd<float, 32> { typedef float type __attribute__((vector_size(32))); };
template <> struct simd<double, 32> { typedef double type __attribute__((vector_size(32))); };
template <> struct simd<float, 16> { typedef float type __attribute__((vector_size(16))); };
template <> struct simd<double, 16> { typedef double type __attribute__((vector_size(16))); };

template <class T>
struct Problem {
  const T* a; const T* b; T* c;
  int64_t rows, columns, depth;     // M, N, K
  int64_t lda, ldb, ldc;            // row strides, in elements
  bool accumulate;
};

// C[0:Rows, 0:Vecs*lanes] (+)= A[0:Rows, 0:kc] B[0:kc, 0:Vecs*lanes]; B rows `ldb` apart.
template <class T, int Bytes, int Rows, int Vecs>
inline __attribute__((always_inline)) void micro(int64_t kc, const T* a, int64_t lda,
                                                 const T* b, int64_t ldb, T* c, int64_t ldc,
                                                 bool add) {
  using vec = typename simd<T, Bytes>::type;
  constexpr int lanes = Bytes / int(sizeof(T));
  vec acc[Rows][Vecs];
#pragma GCC unroll 16
  for (int r = 0; r < Rows; ++r)
#pragma GCC unroll 4
    for (int v = 0; v < Vecs; ++v) acc[r][v] = vec{} - vec{};
  for (int64_t k = 0; k < kc; ++k) {
    vec bv[Vecs];
#pragma GCC unroll 4
    for (int v = 0; v < Vecs; ++v) __builtin_memcpy(&bv[v], b + k * ldb + v * lanes, Bytes);
#pragma GCC unroll 16
    for (int r = 0; r < Rows; ++r) {
      const T x = a[r * lda + k];
#pragma GCC unroll 4
      for (int v = 0; v < Vecs; ++v) acc[r][v] += x * bv[v];
    }
  }
#pragma GCC unroll 16
  for (int r = 0; r < Rows; ++r)
#pragma GCC unroll 4
    for (int v = 0; v < Vecs; ++v) {
      T* out = c + r * ldc + v * lanes;
      if (add) {
        vec old;
        __builtin_memcpy(&old, out, Bytes);
        acc[r][v] = old + acc[r][v];
      }
      __builtin_memcpy(out, &acc[r][v], Bytes);
    }
}

// Rows [0, rows) of one column strip: full micro-tiles of 6 rows, then one of the rest.
template <class T, int Bytes, int Vecs>
inline __attribute__((always_inline)) void strip(int64_t rows, int64_t kc, const T* a,
                                                 int64_t lda, const T* b, int64_t ldb, T* c,
                                                 int64_t ldc, bool add) {
  int64_t i = 0;
  for (; i + tile_rows <= rows; i += tile_rows)
    micro<T, Bytes, tile_rows, Vecs>(kc, a + i * lda, lda, b, ldb, c + i * ldc, ldc, add);
  const T* ar = a + i * lda;
  T* cr = c + i * ldc;
  switch (rows - i) {
    case 5: micro<T, Bytes, 5, Vecs>(kc, ar, lda, b, ldb, cr, ldc, add); break;
    case 4: micro<T, Bytes, 4, Vecs>(kc, ar, lda, b, ldb, cr, ldc, add); break;
    case 3: micro<T, Bytes, 3, Vecs>(kc, ar, lda, b, ldb, cr, ldc, add); break;
    case 2: micro<T, Bytes, 2, Vecs>(kc, ar, lda, b, ldb, cr, ldc, add); break;
    case 1: micro<T, Bytes, 1, Vecs>(kc, ar, lda, b, ldb, cr, ldc, add); break;
    default: break;
  }
}

// One tile of C: rows [i0, i1) x columns [j0, j1). Strips 2 vectors wide read a packed copy of
// their B panel (contiguous, in L1 for the whole strip); then one vector, then single columns.
template <class T, int Bytes>
inline __attribute__((always_inline)) void tile(const Problem<T>& p, int64_t i0, int64_t i1,
                                                int64_t j0, int64_t j1) {
  constexpr int lanes = Bytes / int(sizeof(T));
  constexpr int width = 2 * lanes;
  alignas(64) T packed[k_block * width];
  const int64_t rows = i1 - i0;
  if (p.depth == 0 && !p.accumulate)
    for (int64_t i = i0; i < i1; ++i)
      for (int64_t j = j0; j < j1; ++j) p.c[i * p.ldc + j] = T(0);
  for (int64_t k0 = 0; k0 < p.depth; k0 += k_block) {
    const int64_t kc = p.depth - k0 < k_block ? p.depth - k0 : k_block;
    const bool add = k0 > 0 || p.accumulate;
    const T* a = p.a + i0 * p.lda + k0;
    const T* b = p.b + k0 * p.ldb;
    T* c = p.c + i0 * p.ldc;
    int64_t j = j0;
    for (; j + width <= j1; j += width) {
      for (int64_t k = 0; k < kc; ++k)
        for (int v = 0; v < width; ++v) packed[k * width + v] = b[k * p.ldb + j + v];
      strip<T, Bytes, 2>(rows, kc, a, p.lda, packed, width, c + j, p.ldc, add);
    }
    if (j + lanes <= j1) {
      strip<T, Bytes, 1>(rows, kc, a, p.lda, b + j, p.ldb, c + j, p.ldc, add);
      j += lanes;
    }
    for (; j < j1; ++j)
      strip<T, int(sizeof(T)), 1>(rows, kc, a, p.lda, b + j, p.ldb, c + j, p.ldc, add);
  }
}

template <class T>
using tile_function = void (*)(const Problem<T>&, int64_t, int64_t, int64_t, int64_t);

template <class T>
void tile_baseline(const Problem<T>& p, int64_t i0, int64_t i1, int64_t j0, int64_t j1) {
  tile<T, 16>(p, i0, i1, j0, j1);
}

#if defined(LAPIS_GEMM_X86)
template <class T>
__attribute__((target("avx2,fma"))) void tile_avx2(const Problem<T>& p, int64_t i0,
                                                   int64_t i1, int64_t j0, int64_t j1) {
  tile<T, 32>(p, i0, i1, j0, j1);
}
#endif

template <class T>
tile_function<T> tile_for() {
#if defined(LAPIS_GEMM_X86)
  static const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  if (avx2) return tile_avx2<T>;
#endif
  return tile_baseline<T>;
}

}  // namespace gemm_detail
#endif

namespace gemm_detail {
// C[b] = A[b] B[b] (or +=) for `batch` products of `rows` x `depth` by `depth` x `columns`;
// `at(view, b, i, j)` reads element (i, j) of product b, `strides` gives (batch, row, column)
// strides of a View in elements.
template <class ExecutionSpace, class T, class AView, class BView, class CView, class At,
          class Strides>
void batched(const ExecutionSpace& space, const char* label,
             const AView& a, const BView& b, const CView& c,
             const int64_t batch, const int64_t rows, const int64_t columns,
             const int64_t depth, const MatmulInit init, At at, Strides strides) {
  const bool accumulate = init == MatmulInit::accumulate;
  if (batch == 0 || rows == 0 || columns == 0) return;
#if defined(LAPIS_GEMM_HOST_TILES)
  if constexpr (Kokkos::SpaceAccessibility<ExecutionSpace, Kokkos::HostSpace>::accessible &&
                (std::is_same<T, float>::value || std::is_same<T, double>::value)) {
    const auto sa = strides(a), sb = strides(b), sc = strides(c);
    if (sa[2] == 1 && sb[2] == 1 && sc[2] == 1) {
      const Problem<T> p{a.data(), b.data(), c.data(), rows, columns, depth,
                         sa[1], sb[1], sc[1], accumulate};
      const auto run_tile = tile_for<T>();
      const int64_t row_tiles = (rows + row_block - 1) / row_block;
      const int64_t column_tiles = (columns + column_block - 1) / column_block;
      const int64_t tiles = row_tiles * column_tiles;
      using range = Kokkos::RangePolicy<ExecutionSpace, Kokkos::IndexType<int64_t>>;
      Kokkos::parallel_for(label, range(space, 0, batch * tiles), [=](const int64_t t) {
        const int64_t product = t / tiles, within = t % tiles;
        const int64_t i0 = (within / column_tiles) * row_block;
        const int64_t j0 = (within % column_tiles) * column_block;
        const int64_t i1 = i0 + row_block < rows ? i0 + row_block : rows;
        const int64_t j1 = j0 + column_block < columns ? j0 + column_block : columns;
        Problem<T> q = p;
        q.a += product * sa[0];
        q.b += product * sb[0];
        q.c += product * sc[0];
        run_tile(q, i0, i1, j0, j1);
      });
      return;
    }
  }
#endif
  (void)strides;
  // One thread per element of C, consecutive threads along a row (coalesced B and C).
  using range = Kokkos::RangePolicy<ExecutionSpace, Kokkos::IndexType<int64_t>>;
  const int64_t per_product = rows * columns;
  Kokkos::parallel_for(label, range(space, 0, batch * per_product), KOKKOS_LAMBDA(const int64_t e) {
    const int64_t product = e / per_product, i = e % per_product / columns, j = e % columns;
    T sum = accumulate ? T(at(c, product, i, j)) : T(0);
    for (int64_t k = 0; k < depth; ++k) sum += at(a, product, i, k) * at(b, product, k, j);
    at(c, product, i, j) = sum;
  });
}

struct Strides2 {
  template <class View>
  std::array<int64_t, 3> operator()(const View& v) const {
    return {0, int64_t(v.stride(0)), int64_t(v.stride(1))};
  }
};
struct Strides3 {
  template <class View>
  std::array<int64_t, 3> operator()(const View& v) const {
    return {int64_t(v.stride(0)), int64_t(v.stride(1)), int64_t(v.stride(2))};
  }
};
struct At2 {
  template <class View>
  KOKKOS_INLINE_FUNCTION auto& operator()(const View& v, int64_t, int64_t i, int64_t j) const {
    return v(i, j);
  }
};
struct At3 {
  template <class View>
  KOKKOS_INLINE_FUNCTION auto& operator()(const View& v, int64_t b, int64_t i, int64_t j) const {
    return v(b, i, j);
  }
};
}  // namespace gemm_detail

// C = A B (init zero) or C += A B (init accumulate), for A [M, K], B [K, N], C [M, N].
template <class ExecutionSpace, class AView, class BView, class CView>
void matmul(const ExecutionSpace& space, const char* label,
            const AView& a, const BView& b, const CView& c,
            const MatmulInit init) {
  using T = typename CView::non_const_value_type;
  gemm_detail::batched<ExecutionSpace, T>(space, label, a, b, c, 1, int64_t(c.extent(0)),
                                          int64_t(c.extent(1)), int64_t(a.extent(1)), init,
                                          gemm_detail::At2{}, gemm_detail::Strides2{});
}

// The same for each of a batch: C[b] = A[b] B[b] (or +=), A [L, M, K], B [L, K, N], C [L, M, N].
template <class ExecutionSpace, class AView, class BView, class CView>
void batch_matmul(const ExecutionSpace& space, const char* label,
                  const AView& a, const BView& b, const CView& c,
                  const MatmulInit init) {
  using T = typename CView::non_const_value_type;
  gemm_detail::batched<ExecutionSpace, T>(space, label, a, b, c, int64_t(c.extent(0)),
                                          int64_t(c.extent(1)), int64_t(c.extent(2)),
                                          int64_t(a.extent(2)), init, gemm_detail::At3{},
                                          gemm_detail::Strides3{});
}

}  // namespace lapis
