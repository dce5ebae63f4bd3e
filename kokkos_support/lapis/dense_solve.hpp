// lapis-export small dense linear algebra, shipped into every exported package (src/lapis/).
// The generated code calls these for torch.linalg.solve, inv, det, cholesky and
// exporter.linalg.lstsq on batches of small matrices (per cell, per element): Views
// A [batch, n, n], B and X [batch, n, k], det [batch], any layout.
// The matrix order N is a template argument. N <= 8: one matrix per thread, in registers
// (RangePolicy over the batch). N > 8: a team per matrix, the matrix in team scratch, the
// elimination's row updates across the team's threads, the right-hand sides one per thread.
// LU with partial pivoting as LAPACK's getrf; no error checks: a singular matrix divides by
// its zero pivot (inf/nan), a Cholesky factor of a matrix that is not positive definite has
// nan. LAPIS_DENSE_TEAMS picks the team version for every N (for tests). Kokkos 3.4-4.x.
#pragma once

#include <Kokkos_Core.hpp>

#include <cstdint>
#include <type_traits>

#include "support.hpp"

namespace lapis {
namespace dense_detail {

constexpr int thread_max = 8;   // largest N factored by one thread in registers

template <int N>
constexpr bool per_thread() {
#if defined(LAPIS_DENSE_TEAMS)
  return false;
#else
  return N <= thread_max;
#endif
}

template <class T>
KOKKOS_INLINE_FUNCTION T magnitude(const T x) { return x < T(0) ? -x : x; }

// One elimination step of getrf on the row-major N x N `a`: the pivot row of column c
// swapped into place (pivot[c] = its index), then the multipliers of the rows below.
// Returns -1 if rows were swapped, else 1.
template <int N, class T>
KOKKOS_INLINE_FUNCTION T pivot_column(T* a, int* pivot, const int c) {
  int p = c;
  T best = magnitude(a[c * N + c]);
  for (int r = c + 1; r < N; ++r) {
    const T candidate = magnitude(a[r * N + c]);
    if (candidate > best) {
      best = candidate;
      p = r;
    }
  }
  pivot[c] = p;
  if (p == c) return T(1);
  for (int j = 0; j < N; ++j) {
    const T t = a[c * N + j];
    a[c * N + j] = a[p * N + j];
    a[p * N + j] = t;
  }
  return T(-1);
}

template <int N, class T>
KOKKOS_INLINE_FUNCTION void eliminate_row(T* a, const int c, const int r) {
  const T l = a[r * N + c] / a[c * N + c];
  a[r * N + c] = l;
  for (int j = c + 1; j < N; ++j) a[r * N + j] -= l * a[c * N + j];
}

// a = P L U in place (L unit lower, below the diagonal; U on and above); returns det P.
template <int N, class T>
KOKKOS_INLINE_FUNCTION T lu_factor(T* a, int* pivot) {
  T sign = 1;
  for (int c = 0; c < N; ++c) {
    sign *= pivot_column<N>(a, pivot, c);
    for (int r = c + 1; r < N; ++r) eliminate_row<N>(a, c, r);
  }
  return sign;
}

// x = A^-1 x for the factors of lu_factor.
template <int N, class T>
KOKKOS_INLINE_FUNCTION void lu_substitute(const T* lu, const int* pivot, T* x) {
  for (int c = 0; c < N; ++c) {
    const T t = x[c];
    x[c] = x[pivot[c]];
    x[pivot[c]] = t;
  }
  for (int i = 1; i < N; ++i)
    for (int j = 0; j < i; ++j) x[i] -= lu[i * N + j] * x[j];
  for (int i = N - 1; i >= 0; --i) {
    for (int j = i + 1; j < N; ++j) x[i] -= lu[i * N + j] * x[j];
    x[i] /= lu[i * N + i];
  }
}

// What each batched op does with one factored matrix: write the solutions (solve, inverse)
// or the determinant.
struct Solve {};
struct Inverse {};
struct Determinant {};

template <int N, class Op, class T, class B, class X>
KOKKOS_INLINE_FUNCTION void finish(Op, const T* lu, const int* pivot, const T sign,
                                   const int64_t m, const int64_t column, const B& b,
                                   const X& x) {
  T v[N];
  for (int i = 0; i < N; ++i) {
    if constexpr (std::is_same<Op, Solve>::value) v[i] = b(m, i, column);
    else v[i] = T(i == column ? 1 : 0);
  }
  lu_substitute<N>(lu, pivot, v);
  for (int i = 0; i < N; ++i) x(m, i, column) = v[i];
  (void)sign;
}

template <class T>
KOKKOS_INLINE_FUNCTION T diagonal_product(const T* lu, const int n, const T sign) {
  T det = sign;
  for (int i = 0; i < n; ++i) det *= lu[i * n + i];
  return det;
}

template <class ExecutionSpace, int N, class Op, class A, class B, class X>
void lu_batched(const ExecutionSpace& space, const char* label, Op op, const A& a, const B& b,
                const X& x, const int64_t columns) {
  using T = typename A::non_const_value_type;
  const int64_t batch = int64_t(a.extent(0));
  if constexpr (per_thread<N>()) {
    using range = Kokkos::RangePolicy<ExecutionSpace, Kokkos::IndexType<int64_t>>;
    Kokkos::parallel_for(label, range(space, 0, batch), KOKKOS_LAMBDA(const int64_t m) {
      T lu[N * N];
      int pivot[N];
      for (int i = 0; i < N; ++i)
        for (int j = 0; j < N; ++j) lu[i * N + j] = a(m, i, j);
      const T sign = lu_factor<N>(lu, pivot);
      if constexpr (std::is_same<Op, Determinant>::value) {
        x(m) = diagonal_product(lu, N, sign);
      } else {
        for (int64_t column = 0; column < columns; ++column)
          finish<N>(op, lu, pivot, sign, m, column, b, x);
      }
    });
  } else {
    using policy = Kokkos::TeamPolicy<ExecutionSpace, Kokkos::IndexType<int64_t>>;
    using member = typename policy::member_type;
    using scratch = Kokkos::View<T*, typename ExecutionSpace::scratch_memory_space,
                                 Kokkos::MemoryTraits<Kokkos::Unmanaged>>;
    using pivots = Kokkos::View<int*, typename ExecutionSpace::scratch_memory_space,
                                Kokkos::MemoryTraits<Kokkos::Unmanaged>>;
    const size_t bytes = scratch::shmem_size(N * N) + pivots::shmem_size(N);
    const int level = bytes <= 32768 ? 0 : 1;
    Kokkos::parallel_for(
        label, policy(space, batch, Kokkos::AUTO).set_scratch_size(level, Kokkos::PerTeam(bytes)),
        KOKKOS_LAMBDA(const member& team) {
          const int64_t m = team.league_rank();
          scratch lu_view(team.team_scratch(level), N * N);
          pivots pivot_view(team.team_scratch(level), N);
          T* lu = lu_view.data();
          int* pivot = pivot_view.data();
          Kokkos::parallel_for(Kokkos::TeamThreadRange(team, N * N),
                               [&](const int e) { lu[e] = a(m, e / N, e % N); });
          team.team_barrier();
          T sign = 1;
          for (int c = 0; c < N; ++c) {
            Kokkos::single(Kokkos::PerTeam(team), [&]() { pivot_column<N>(lu, pivot, c); });
            team.team_barrier();
            if (pivot[c] != c) sign = -sign;
            Kokkos::parallel_for(Kokkos::TeamThreadRange(team, c + 1, N),
                                 [&](const int r) { eliminate_row<N>(lu, c, r); });
            team.team_barrier();
          }
          if constexpr (std::is_same<Op, Determinant>::value) {
            Kokkos::single(Kokkos::PerTeam(team),
                           [&]() { x(m) = diagonal_product(lu, N, sign); });
          } else {
            Kokkos::parallel_for(Kokkos::TeamThreadRange(team, columns), [&](const int64_t k) {
              finish<N>(op, lu, pivot, sign, m, k, b, x);
            });
          }
        });
  }
}

// L with A = L L^T from A's lower triangle, in the row-major N x N `l` (upper part zero).
template <int N, class T>
KOKKOS_INLINE_FUNCTION void cholesky_column(T* l, const int j) {
  T d = l[j * N + j];
  for (int k = 0; k < j; ++k) d -= l[j * N + k] * l[j * N + k];
  l[j * N + j] = lapis::math::sqrt(d);
}

template <int N, class T>
KOKKOS_INLINE_FUNCTION void cholesky_row(T* l, const int j, const int i) {
  T s = l[i * N + j];
  for (int k = 0; k < j; ++k) s -= l[i * N + k] * l[j * N + k];
  l[i * N + j] = s / l[j * N + j];
}

}  // namespace dense_detail

// X = A^-1 B per matrix: A [batch, N, N], B and X [batch, N, k].
template <int N, class ExecutionSpace, class A, class B, class X>
void dense_solve(const ExecutionSpace& space,
                 const char* label, const A& a, const B& b, const X& x) {
  dense_detail::lu_batched<ExecutionSpace, N>(space, label, dense_detail::Solve{}, a, b, x,
                                              int64_t(x.extent(2)));
}

// X = A^-1 per matrix: A and X [batch, N, N].
template <int N, class ExecutionSpace, class A, class X>
void dense_inverse(const ExecutionSpace& space, const char* label, const A& a, const X& x) {
  dense_detail::lu_batched<ExecutionSpace, N>(space, label, dense_detail::Inverse{}, a, a, x,
                                              int64_t(N));
}

// det[m] = det A[m]: A [batch, N, N], det [batch].
template <int N, class ExecutionSpace, class A, class Det>
void dense_determinant(const ExecutionSpace& space,
                       const char* label, const A& a, const Det& det) {
  dense_detail::lu_batched<ExecutionSpace, N>(space, label, dense_detail::Determinant{}, a, a, det,
                                              0);
}

// L [batch, N, N], lower triangular, with A = L L^T, from the lower triangle of A.
template <int N, class ExecutionSpace, class A, class L>
void dense_cholesky(const ExecutionSpace& space, const char* label, const A& a, const L& l) {
  using T = typename A::non_const_value_type;
  const int64_t batch = int64_t(a.extent(0));
  if constexpr (dense_detail::per_thread<N>()) {
    using range = Kokkos::RangePolicy<ExecutionSpace, Kokkos::IndexType<int64_t>>;
    Kokkos::parallel_for(label, range(space, 0, batch), KOKKOS_LAMBDA(const int64_t m) {
      T f[N * N];
      for (int i = 0; i < N; ++i)
        for (int j = 0; j < N; ++j) f[i * N + j] = j <= i ? a(m, i, j) : T(0);
      for (int j = 0; j < N; ++j) {
        dense_detail::cholesky_column<N>(f, j);
        for (int i = j + 1; i < N; ++i) dense_detail::cholesky_row<N>(f, j, i);
      }
      for (int i = 0; i < N; ++i)
        for (int j = 0; j < N; ++j) l(m, i, j) = f[i * N + j];
    });
  } else {
    using policy = Kokkos::TeamPolicy<ExecutionSpace, Kokkos::IndexType<int64_t>>;
    using member = typename policy::member_type;
    using scratch = Kokkos::View<T*, typename ExecutionSpace::scratch_memory_space,
                                 Kokkos::MemoryTraits<Kokkos::Unmanaged>>;
    const size_t bytes = scratch::shmem_size(N * N);
    const int level = bytes <= 32768 ? 0 : 1;
    Kokkos::parallel_for(
        label, policy(space, batch, Kokkos::AUTO).set_scratch_size(level, Kokkos::PerTeam(bytes)),
        KOKKOS_LAMBDA(const member& team) {
          const int64_t m = team.league_rank();
          scratch f_view(team.team_scratch(level), N * N);
          T* f = f_view.data();
          Kokkos::parallel_for(Kokkos::TeamThreadRange(team, N * N), [&](const int e) {
            const int i = e / N, j = e % N;
            f[e] = j <= i ? a(m, i, j) : T(0);
          });
          team.team_barrier();
          for (int j = 0; j < N; ++j) {
            Kokkos::single(Kokkos::PerTeam(team),
                           [&]() { dense_detail::cholesky_column<N>(f, j); });
            team.team_barrier();
            Kokkos::parallel_for(Kokkos::TeamThreadRange(team, j + 1, N),
                                 [&](const int i) { dense_detail::cholesky_row<N>(f, j, i); });
            team.team_barrier();
          }
          Kokkos::parallel_for(Kokkos::TeamThreadRange(team, N * N),
                               [&](const int e) { l(m, e / N, e % N) = f[e]; });
        });
  }
}

// X [batch, N, k] minimising ||A X - B|| per matrix, A [batch, M, N] of full column rank
// (M >= N), B [batch, M, k]: Householder QR (LAPACK's gels). One matrix per thread at every
// size, since the reflections follow one another.
template <int M, int N, class ExecutionSpace, class A, class B, class X>
void dense_lstsq(const ExecutionSpace& space, const char* label, const A& a, const B& b,
                 const X& x) {
  static_assert(M >= N, "lstsq needs at least as many rows as columns");
  using T = typename A::non_const_value_type;
  using range = Kokkos::RangePolicy<ExecutionSpace, Kokkos::IndexType<int64_t>>;
  const int64_t columns = int64_t(x.extent(2));
  Kokkos::parallel_for(
      label, range(space, 0, int64_t(a.extent(0))), KOKKOS_LAMBDA(const int64_t m) {
    T qr[M * N];     // R above the diagonal, the reflectors' vectors on and below it
    T diagonal[N];   // R's diagonal
    T scale[N];      // 2 / v^T v of each reflector (0: none)
    for (int i = 0; i < M; ++i)
      for (int j = 0; j < N; ++j) qr[i * N + j] = a(m, i, j);
    for (int c = 0; c < N; ++c) {
      T norm = 0;
      for (int i = c; i < M; ++i) norm += qr[i * N + c] * qr[i * N + c];
      norm = lapis::math::sqrt(norm);
      const T head = qr[c * N + c];
      const T alpha = head >= T(0) ? -norm : norm;
      diagonal[c] = alpha;
      const T v0 = head - alpha;
      const T vtv = norm * norm - head * head + v0 * v0;
      scale[c] = vtv > T(0) ? T(2) / vtv : T(0);
      qr[c * N + c] = v0;
      for (int j = c + 1; j < N; ++j) {
        T s = 0;
        for (int i = c; i < M; ++i) s += qr[i * N + c] * qr[i * N + j];
        s *= scale[c];
        for (int i = c; i < M; ++i) qr[i * N + j] -= s * qr[i * N + c];
      }
    }
    for (int64_t k = 0; k < columns; ++k) {
      T y[M];
      for (int i = 0; i < M; ++i) y[i] = b(m, i, k);
      for (int c = 0; c < N; ++c) {        // y = Q^T b
        T s = 0;
        for (int i = c; i < M; ++i) s += qr[i * N + c] * y[i];
        s *= scale[c];
        for (int i = c; i < M; ++i) y[i] -= s * qr[i * N + c];
      }
      for (int i = N - 1; i >= 0; --i) {   // R x = (Q^T b)[:N]
        for (int j = i + 1; j < N; ++j) y[i] -= qr[i * N + j] * y[j];
        y[i] /= diagonal[i];
      }
      for (int i = 0; i < N; ++i) x(m, i, k) = y[i];
    }
  });
}

}  // namespace lapis
