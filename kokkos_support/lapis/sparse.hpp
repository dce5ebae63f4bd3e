// lapis-export sparse kernels, shipped into every exported package (src/lapis/).
// The generated code calls these for exporter.sparse.csr_matvec / csr_matmul: products of a
// CSR matrix (row_ptr [rows + 1], col_idx [nnz], values [nnz]) with a dense vector or matrix.
// Host backends run one thread per row (RangePolicy: rows are short next to a core's cache);
// device backends run a team per block of rows, each row's nonzeros (matvec) or the dense
// matrix's columns (matmul) across the vector lanes (TeamPolicy + ThreadVectorRange).
// LAPIS_SPARSE_TEAMS picks the team version on host backends too (for tests). Kokkos 3.4-4.x.
#pragma once

#include <Kokkos_Core.hpp>

#include <cstdint>

namespace lapis {
namespace sparse_detail {

template <class ExecutionSpace>
constexpr bool use_teams() {
#if defined(LAPIS_SPARSE_TEAMS)
  return true;
#else
  return !Kokkos::SpaceAccessibility<ExecutionSpace, Kokkos::HostSpace>::accessible;
#endif
}

// Vector lanes per row for the team version: about a sixth of the mean nonzeros per row, a
// power of two up to a warp (the heuristic of KokkosSparse's SpMV).
inline int vector_length(const int64_t nnz, const int64_t rows) {
  const int64_t per_row = rows > 0 ? nnz / rows : 0;
  int lanes = 1;
  while (lanes < 32 && lanes * 6 < per_row) lanes *= 2;
  return lanes;
}

}  // namespace sparse_detail

// y[r] = sum over k in [row_ptr[r], row_ptr[r + 1]) of values[k] * x[col_idx[k]];
// an empty row gives 0. Indices may be int64_t or int32_t; y is written, never read.
template <class ExecutionSpace, class RowPtr, class ColIdx, class Values, class X, class Y>
void csr_matvec(const ExecutionSpace& space, const char* label,
                const RowPtr& row_ptr, const ColIdx& col_idx,
                const Values& values, const X& x, const Y& y) {
  using T = typename Y::non_const_value_type;
  const int64_t rows = int64_t(y.extent(0));
  if constexpr (!sparse_detail::use_teams<ExecutionSpace>()) {
    using range = Kokkos::RangePolicy<ExecutionSpace, Kokkos::IndexType<int64_t>>;
    Kokkos::parallel_for(label, range(space, 0, rows), KOKKOS_LAMBDA(const int64_t r) {
      // Four partial sums: the additions of one row do not wait on each other.
      T s0 = 0, s1 = 0, s2 = 0, s3 = 0;
      int64_t k = row_ptr(r);
      const int64_t end = row_ptr(r + 1);
      for (; k + 3 < end; k += 4) {
        s0 += values(k) * x(col_idx(k));
        s1 += values(k + 1) * x(col_idx(k + 1));
        s2 += values(k + 2) * x(col_idx(k + 2));
        s3 += values(k + 3) * x(col_idx(k + 3));
      }
      for (; k < end; ++k) s0 += values(k) * x(col_idx(k));
      y(r) = (s0 + s1) + (s2 + s3);
    });
  } else {
    using policy = Kokkos::TeamPolicy<ExecutionSpace, Kokkos::IndexType<int64_t>>;
    using member = typename policy::member_type;
    const int lanes = sparse_detail::vector_length(int64_t(values.extent(0)), rows);
    const int64_t rows_per_team = 256 / lanes;
    Kokkos::parallel_for(
        label, policy(space, (rows + rows_per_team - 1) / rows_per_team, Kokkos::AUTO, lanes),
        KOKKOS_LAMBDA(const member& team) {
          const int64_t first = team.league_rank() * rows_per_team;
          const int64_t last = first + rows_per_team < rows ? first + rows_per_team : rows;
          Kokkos::parallel_for(Kokkos::TeamThreadRange(team, first, last), [&](const int64_t r) {
            const int64_t begin = row_ptr(r), end = row_ptr(r + 1);
            T sum = 0;
            Kokkos::parallel_reduce(
                Kokkos::ThreadVectorRange(team, begin, end),
                [&](const int64_t k, T& partial) { partial += values(k) * x(col_idx(k)); }, sum);
            Kokkos::single(Kokkos::PerThread(team), [&]() { y(r) = sum; });
          });
        });
  }
}

// Y[r][j] = sum over k in row r of values[k] * B[col_idx[k]][j], for a dense B [cols, n] and
// Y [rows, n] (any layouts); an empty row gives a row of zeros.
template <class ExecutionSpace, class RowPtr, class ColIdx, class Values, class B, class Y>
void csr_matmul(const ExecutionSpace& space, const char* label,
                const RowPtr& row_ptr, const ColIdx& col_idx,
                const Values& values, const B& b, const Y& y) {
  using T = typename Y::non_const_value_type;
  const int64_t rows = int64_t(y.extent(0)), columns = int64_t(y.extent(1));
  if constexpr (!sparse_detail::use_teams<ExecutionSpace>()) {
    // A row of Y stays in cache while each nonzero adds a row of B to it.
    using range = Kokkos::RangePolicy<ExecutionSpace, Kokkos::IndexType<int64_t>>;
    Kokkos::parallel_for(label, range(space, 0, rows), KOKKOS_LAMBDA(const int64_t r) {
      for (int64_t j = 0; j < columns; ++j) y(r, j) = T(0);
      const int64_t end = row_ptr(r + 1);
      for (int64_t k = row_ptr(r); k < end; ++k) {
        const T a = values(k);
        const int64_t c = col_idx(k);
        for (int64_t j = 0; j < columns; ++j) y(r, j) += a * b(c, j);
      }
    });
  } else {
    // One row per thread of the team, the columns of B across its vector lanes (coalesced).
    using policy = Kokkos::TeamPolicy<ExecutionSpace, Kokkos::IndexType<int64_t>>;
    using member = typename policy::member_type;
    int lanes = 1;
    while (lanes < 32 && lanes < columns) lanes *= 2;
    const int64_t rows_per_team = 256 / lanes;
    Kokkos::parallel_for(
        label, policy(space, (rows + rows_per_team - 1) / rows_per_team, Kokkos::AUTO, lanes),
        KOKKOS_LAMBDA(const member& team) {
          const int64_t first = team.league_rank() * rows_per_team;
          const int64_t last = first + rows_per_team < rows ? first + rows_per_team : rows;
          Kokkos::parallel_for(Kokkos::TeamThreadRange(team, first, last), [&](const int64_t r) {
            const int64_t begin = row_ptr(r), end = row_ptr(r + 1);
            Kokkos::parallel_for(Kokkos::ThreadVectorRange(team, columns), [&](const int64_t j) {
              T sum = 0;
              for (int64_t k = begin; k < end; ++k) sum += values(k) * b(col_idx(k), j);
              y(r, j) = sum;
            });
          });
        });
  }
}

}  // namespace lapis
