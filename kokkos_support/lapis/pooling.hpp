// lapis-export pooling, shipped into every exported package (src/lapis/): max_pool2d_nchw, the
// call the generated code makes for a max pooling. One thread per output element; any backend.
#pragma once

#include <Kokkos_Core.hpp>

#include <cstdint>

#include "support.hpp"

namespace lapis {

// Max pooling with the -inf padding read around the input instead of copied in:
// out[n][c][oh][ow] = max(start, max over the window's taps inside `in`), start = -inf or the
// value already in `out`. NaN propagates, as in the model (arith.maximumf).
struct PoolGeometry {
  int64_t kernel_h, kernel_w, stride_h, stride_w, dilation_h, dilation_w, pad_h, pad_w;
};

template <class ExecutionSpace, class Input, class Output>
void max_pool2d_nchw(const ExecutionSpace& space, const char* label,
                     const Input& in, const Output& out,
                     const PoolGeometry g, const bool from_lowest) {
  using T = typename Output::non_const_value_type;
  const int64_t channels = out.extent(1), height_out = out.extent(2), width_out = out.extent(3);
  const int64_t height_in = in.extent(2), width_in = in.extent(3);
  const int64_t total = int64_t(out.extent(0)) * channels * height_out * width_out;
  using range = Kokkos::RangePolicy<ExecutionSpace, Kokkos::IndexType<int64_t>>;
  Kokkos::parallel_for(label, range(space, 0, total), KOKKOS_LAMBDA(int64_t i) {
    const int64_t ow = i % width_out;
    i /= width_out;
    const int64_t oh = i % height_out;
    i /= height_out;
    const int64_t c = i % channels, n = i / channels;
    T v = from_lowest ? -infinity<T>() : out(n, c, oh, ow);
    for (int64_t kh = 0; kh < g.kernel_h; ++kh) {
      const int64_t ih = oh * g.stride_h - g.pad_h + kh * g.dilation_h;
      if (ih < 0 || ih >= height_in) continue;
      for (int64_t kw = 0; kw < g.kernel_w; ++kw) {
        const int64_t iw = ow * g.stride_w - g.pad_w + kw * g.dilation_w;
        if (iw >= 0 && iw < width_in) v = maximumf(v, T(in(n, c, ih, iw)));
      }
    }
    out(n, c, oh, ow) = v;
  });
}

}  // namespace lapis
