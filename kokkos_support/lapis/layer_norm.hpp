// lapis-export LayerNorm, shipped into every exported package (src/lapis/).
// out(r, :) = (x(r, :) - mean) / sqrt(var + eps) * weight + bias for each row r of x [rows,
// features] (exporter/layer_norm.py): the mean, then the variance of the deviations from it
// (two passes over the row, which stays in cache; as accurate as PyTorch's), then the output.
// On GPUs a team of threads takes a row and reduces across it; on host backends a thread takes
// a row. Defining LAPIS_LAYER_NORM_TEAMS runs the GPU path on host backends too (the tests
// check it there). Kokkos 3.4-4.x.
#pragma once

#include <Kokkos_Core.hpp>

#include <cstdint>

#include "scalar.hpp"

namespace lapis {

template <class ExecutionSpace, class X, class Weight, class Bias, class Eps, class Out>
void layer_norm_rows(const ExecutionSpace& space, const char* label, const X& x,
                     const Weight& weight, const Bias& bias, const Eps& eps, const Out& out) {
  using T = typename Out::non_const_value_type;
  const int64_t rows = int64_t(x.extent(0)), features = int64_t(x.extent(1));
  if (rows == 0) return;
#ifdef LAPIS_LAYER_NORM_TEAMS
  constexpr bool teams = true;
#else
  constexpr bool teams =
      !Kokkos::SpaceAccessibility<ExecutionSpace, Kokkos::HostSpace>::accessible;
#endif
  if constexpr (!teams) {
    using range = Kokkos::RangePolicy<ExecutionSpace, Kokkos::IndexType<int64_t>>;
    Kokkos::parallel_for(label, range(space, 0, rows), KOKKOS_LAMBDA(const int64_t r) {
      T sum = 0;
      for (int64_t f = 0; f < features; ++f) sum += x(r, f);
      const T mean = sum / T(features);
      T squares = 0;
      for (int64_t f = 0; f < features; ++f) {
        const T deviation = x(r, f) - mean;
        squares += deviation * deviation;
      }
      const T scale = T(1) / lapis::math::sqrt(squares / T(features) + eps(0));
      for (int64_t f = 0; f < features; ++f)
        out(r, f) = (x(r, f) - mean) * scale * weight(f) + bias(f);
    });
  } else {
    using team_policy = Kokkos::TeamPolicy<ExecutionSpace>;
    using member = typename team_policy::member_type;
    const bool host = Kokkos::SpaceAccessibility<ExecutionSpace, Kokkos::HostSpace>::accessible;
    const int team_size = host ? (space.concurrency() > 1 ? 2 : 1) : 128;
    Kokkos::parallel_for(label, team_policy(space, int(rows), team_size),
                         KOKKOS_LAMBDA(const member& team) {
      const int64_t r = team.league_rank();
      T sum = 0;
      Kokkos::parallel_reduce(Kokkos::TeamThreadRange(team, features),
                              [&](const int64_t f, T& partial) { partial += x(r, f); }, sum);
      const T mean = sum / T(features);
      T squares = 0;
      Kokkos::parallel_reduce(Kokkos::TeamThreadRange(team, features),
                              [&](const int64_t f, T& partial) {
                                const T deviation = x(r, f) - mean;
                                partial += deviation * deviation;
                              }, squares);
      const T scale = T(1) / lapis::math::sqrt(squares / T(features) + eps(0));
      Kokkos::parallel_for(Kokkos::TeamThreadRange(team, features), [&](const int64_t f) {
        out(r, f) = (x(r, f) - mean) * scale * weight(f) + bias(f);
      });
    });
  }
}

}  // namespace lapis
