// lapis-export row scatter-add, shipped into every exported package (src/lapis/).
// out = self; out(index(e), ...) += source(e, ...) for every e: the message sums of graph
// networks and the pair-to-atom sums of neural potentials (exporter/scatter.py), forward and
// backward. On GPUs each element is one atomic add; on host backends each thread sums its
// share of the rows of source into a copy of its own, and the copies are added afterwards
// (the scheme of Kokkos' ScatterView), so no thread waits on another. An index outside
// [0, rows) is skipped. Kokkos 3.4-4.x.
#pragma once

#include <Kokkos_Core.hpp>

#include <algorithm>
#include <cstdint>
#include <string>
#include <type_traits>

namespace lapis {
namespace scatter_detail {

// Element f of the row-major flattening of row `row` of a rank 1-4 View.
template <class View>
KOKKOS_INLINE_FUNCTION typename View::reference_type element(const View& v, const int64_t row,
                                                             const int64_t f) {
  constexpr int rank = int(View::rank);
  static_assert(rank >= 1 && rank <= 4, "lapis::index_add_rows: rank 1 to 4");
  if constexpr (rank == 1) {
    return v(row);
  } else if constexpr (rank == 2) {
    return v(row, f);
  } else if constexpr (rank == 3) {
    const int64_t e2 = int64_t(v.extent(2));
    return v(row, f / e2, f % e2);
  } else {
    const int64_t e3 = int64_t(v.extent(3)), e23 = int64_t(v.extent(2)) * e3;
    return v(row, f / e23, (f % e23) / e3, f % e3);
  }
}

template <class View>
int64_t row_length(const View& v) {
  int64_t length = 1;
  for (int r = 1; r < int(View::rank); ++r) length *= int64_t(v.extent(r));
  return length;
}

}  // namespace scatter_detail

// self and out [rows, ...], index [E] (int64), source [E, ...] with self's row shape.
template <class ExecutionSpace, class Self, class Index, class Source, class Out>
void index_add_rows(const ExecutionSpace& space, const char* label, const Self& self,
                    const Index& index, const Source& source, const Out& out) {
  using scatter_detail::element;
  using T = typename Out::non_const_value_type;
  using range = Kokkos::RangePolicy<ExecutionSpace, Kokkos::IndexType<int64_t>>;
  const int64_t rows = int64_t(out.extent(0)), edges = int64_t(index.extent(0));
  const int64_t width = scatter_detail::row_length(out);
  const std::string name(label);
  if (static_cast<const void*>(self.data()) != static_cast<const void*>(out.data())) {
    Kokkos::parallel_for((name + "/copy").c_str(), range(space, 0, rows * width),
                         KOKKOS_LAMBDA(const int64_t i) {
      element(out, i / width, i % width) = element(self, i / width, i % width);
    });
  }
  if (edges == 0 || width == 0) return;
  if constexpr (!Kokkos::SpaceAccessibility<ExecutionSpace, Kokkos::HostSpace>::accessible) {
    // A GPU: one atomic add per element, consecutive threads along a row.
    Kokkos::parallel_for(label, range(space, 0, edges * width), KOKKOS_LAMBDA(const int64_t i) {
      const int64_t e = i / width, f = i % width;
      const int64_t row = index(e);
      if (row >= 0 && row < rows) Kokkos::atomic_add(&element(out, row, f), element(source, e, f));
    });
  } else {
    // Host threads: a contiguous share of the edges each (at least 4096, so that small
    // graphs stay on one thread); share 0 adds into out, share s > 0 into its own copy.
    const int64_t shares = std::max<int64_t>(
        1, std::min<int64_t>(int64_t(space.concurrency()), (edges + 4095) / 4096));
    const int64_t per_share = (edges + shares - 1) / shares;
    Kokkos::View<T**, Kokkos::LayoutRight, typename ExecutionSpace::memory_space> copies(
        Kokkos::view_alloc(space, name + "/copies"), shares - 1, rows * width);
    Kokkos::parallel_for(label, range(space, 0, shares), KOKKOS_LAMBDA(const int64_t s) {
      const int64_t end = (s + 1) * per_share < edges ? (s + 1) * per_share : edges;
      for (int64_t e = s * per_share; e < end; ++e) {
        const int64_t row = index(e);
        if (row < 0 || row >= rows) continue;
        if (s == 0) {
          for (int64_t f = 0; f < width; ++f) element(out, row, f) += element(source, e, f);
        } else {
          T* copy = &copies(s - 1, row * width);
          for (int64_t f = 0; f < width; ++f) copy[f] += element(source, e, f);
        }
      }
    });
    if (shares > 1) {
      Kokkos::parallel_for((name + "/sum").c_str(), range(space, 0, rows * width),
                           KOKKOS_LAMBDA(const int64_t i) {
        T sum = element(out, i / width, i % width);
        for (int64_t s = 0; s + 1 < shares; ++s) sum += copies(s, i);
        element(out, i / width, i % width) = sum;
      });
    }
  }
}

}  // namespace lapis
