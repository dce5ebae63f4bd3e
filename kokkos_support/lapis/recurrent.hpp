// lapis-export recurrent layers, shipped into every exported package (src/lapis/).
// The generated code calls these for the recurrence of each nn.LSTM / nn.GRU layer and
// direction (exporter/recurrent.py): the input projection of every step, pre [batch, steps,
// gates * hidden], is computed before (one matrix product); here each step adds h W_hh^T +
// b_hh and applies the gates, one kernel per step over (batch, hidden) — the steps depend on
// each other, the units of one step do not. PyTorch's gate order and equations. Kokkos 3.4-4.x.
#pragma once

#include <Kokkos_Core.hpp>

#include <cstdint>

#include "support.hpp"

namespace lapis {
namespace recurrent_detail {

template <class T>
KOKKOS_INLINE_FUNCTION T sigmoid(const T x) { return T(1) / (T(1) + lapis::math::exp(-x)); }

// sum over k of w(row, k) * h_k, h_k the previous step's state of batch row b:
// h0(b, k) before the first step, else out(b, step - 1, k).
template <class T, class W, class H0, class Out>
KOKKOS_INLINE_FUNCTION T recurrent_dot(const W& w, const int64_t row, const H0& h0,
                                       const Out& out, const int64_t b, const int64_t step,
                                       const int64_t hidden) {
  T s0 = 0, s1 = 0;   // two partial sums: the additions do not all wait on each other
  int64_t k = 0;
  if (step == 0) {
    for (; k + 1 < hidden; k += 2) {
      s0 += w(row, k) * h0(b, k);
      s1 += w(row, k + 1) * h0(b, k + 1);
    }
    for (; k < hidden; ++k) s0 += w(row, k) * h0(b, k);
  } else {
    for (; k + 1 < hidden; k += 2) {
      s0 += w(row, k) * out(b, step - 1, k);
      s1 += w(row, k + 1) * out(b, step - 1, k + 1);
    }
    for (; k < hidden; ++k) s0 += w(row, k) * out(b, step - 1, k);
  }
  return s0 + s1;
}

}  // namespace recurrent_detail

// out [batch, steps, H] the h of every step, h_n and c_n [batch, H] the last h and c, from
// pre [batch, steps, 4H] (gates i, f, g, o), w_hh [4H, H], b_hh [4H], h0 and c0 [batch, H].
template <class ExecutionSpace, class Pre, class W, class Bias, class H0, class C0, class Out,
          class HN, class CN>
void lstm_recurrence(const ExecutionSpace& space, const char* label, const Pre& pre,
                     const W& w_hh, const Bias& b_hh, const H0& h0, const C0& c0, const Out& out, const HN& h_n, const CN& c_n) {
  using T = typename Out::non_const_value_type;
  using range = Kokkos::RangePolicy<ExecutionSpace, Kokkos::IndexType<int64_t>>;
  const int64_t batch = int64_t(out.extent(0)), steps = int64_t(out.extent(1)),
                hidden = int64_t(out.extent(2));
  // c_n carries the cell state from step to step: unit (b, j) reads and writes only its own.
  Kokkos::parallel_for(label, range(space, 0, batch * hidden), KOKKOS_LAMBDA(const int64_t e) {
    const int64_t b = e / hidden, j = e % hidden;
    c_n(b, j) = c0(b, j);
    h_n(b, j) = h0(b, j);
  });
  for (int64_t step = 0; step < steps; ++step) {
    Kokkos::parallel_for(label, range(space, 0, batch * hidden), KOKKOS_LAMBDA(const int64_t e) {
      const int64_t b = e / hidden, j = e % hidden;
      T gate[4];
      for (int q = 0; q < 4; ++q) {
        const int64_t row = q * hidden + j;
        gate[q] = pre(b, step, row) + b_hh(row) +
                  recurrent_detail::recurrent_dot<T>(w_hh, row, h0, out, b, step, hidden);
      }
      const T c = recurrent_detail::sigmoid(gate[1]) * c_n(b, j) +
                  recurrent_detail::sigmoid(gate[0]) * lapis::math::tanh(gate[2]);
      const T h = recurrent_detail::sigmoid(gate[3]) * lapis::math::tanh(c);
      c_n(b, j) = c;
      out(b, step, j) = h;
      if (step == steps - 1) h_n(b, j) = h;
    });
  }
}

// out [batch, steps, H] the h of every step, h_n [batch, H] the last, from pre
// [batch, steps, 3H] (gates r, z, n), w_hh [3H, H], b_hh [3H], h0 [batch, H].
template <class ExecutionSpace, class Pre, class W, class Bias, class H0, class Out, class HN>
void gru_recurrence(const ExecutionSpace& space, const char* label, const Pre& pre,
                    const W& w_hh, const Bias& b_hh, const H0& h0, const Out& out, const HN& h_n) {
  using T = typename Out::non_const_value_type;
  using range = Kokkos::RangePolicy<ExecutionSpace, Kokkos::IndexType<int64_t>>;
  const int64_t batch = int64_t(out.extent(0)), steps = int64_t(out.extent(1)),
                hidden = int64_t(out.extent(2));
  if (steps == 0) {
    Kokkos::parallel_for(label, range(space, 0, batch * hidden), KOKKOS_LAMBDA(const int64_t e) {
      h_n(e / hidden, e % hidden) = h0(e / hidden, e % hidden);
    });
  }
  for (int64_t step = 0; step < steps; ++step) {
    Kokkos::parallel_for(label, range(space, 0, batch * hidden), KOKKOS_LAMBDA(const int64_t e) {
      const int64_t b = e / hidden, j = e % hidden;
      T gate[3];
      for (int q = 0; q < 3; ++q) {
        const int64_t row = q * hidden + j;
        gate[q] = b_hh(row) +
                  recurrent_detail::recurrent_dot<T>(w_hh, row, h0, out, b, step, hidden);
      }
      const T previous = step == 0 ? T(h0(b, j)) : T(out(b, step - 1, j));
      const T r = recurrent_detail::sigmoid(pre(b, step, j) + gate[0]);
      const T z = recurrent_detail::sigmoid(pre(b, step, hidden + j) + gate[1]);
      const T n = lapis::math::tanh(pre(b, step, 2 * hidden + j) + r * gate[2]);
      const T h = (T(1) - z) * n + z * previous;
      out(b, step, j) = h;
      if (step == steps - 1) h_n(b, j) = h;
    });
  }
}

}  // namespace lapis
