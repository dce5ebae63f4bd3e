// lapis-export pooling, shipped into every exported package (src/lapis/): max_pool2d_nchw, the
// call the generated code makes for a max pooling. On GPUs one thread per output element; on
// host backends one per output row.
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
  // LAPIS_POOLING_PER_ELEMENT runs the GPUs' one thread per output on host backends too:
  // the tests check it there.
#if defined(LAPIS_POOLING_PER_ELEMENT)
  constexpr bool host = false;
#else
  constexpr bool host = Kokkos::SpaceAccessibility<ExecutionSpace, Kokkos::HostSpace>::accessible;
#endif
  if constexpr (host) {
    // A thread per output row: the row starts from -inf (or what it holds), then each tap
    // (kh, kw) inside the input is folded into the run of columns it reaches, a loop without
    // bounds checks or index arithmetic that the compiler vectorises.
    const int64_t rows = int64_t(out.extent(0)) * channels * height_out;
    if (rows == 0 || width_out == 0) return;
    Kokkos::parallel_for(label, range(space, 0, rows), [=](const int64_t r) {
      const int64_t oh = r % height_out, c = (r / height_out) % channels,
                    n = r / (height_out * channels);
      T* const row = &out(n, c, oh, 0);
      const int64_t step = int64_t(out.stride(3)), in_step = int64_t(in.stride(3));
      if (from_lowest)
        for (int64_t ow = 0; ow < width_out; ++ow) row[ow * step] = -infinity<T>();
      for (int64_t kh = 0; kh < g.kernel_h; ++kh) {
        const int64_t ih = oh * g.stride_h - g.pad_h + kh * g.dilation_h;
        if (ih < 0 || ih >= height_in) continue;
        const auto* const line = &in(n, c, ih, 0);
        for (int64_t kw = 0; kw < g.kernel_w; ++kw) {
          // Columns ow whose tap iw = ow * stride - pad + kw * dilation lies in [0, width_in).
          const int64_t shift = kw * g.dilation_w - g.pad_w;
          int64_t first = shift >= 0 ? 0 : (-shift + g.stride_w - 1) / g.stride_w;
          int64_t end = width_in - 1 - shift < 0 ? 0 : (width_in - 1 - shift) / g.stride_w + 1;
          if (end > width_out) end = width_out;
          const auto* const taps = line + shift * in_step;
          const int64_t stride = g.stride_w * in_step;
          if (step == 1) {
            for (int64_t ow = first; ow < end; ++ow)
              row[ow] = maximumf(row[ow], T(taps[ow * stride]));
          } else {
            for (int64_t ow = first; ow < end; ++ow)
              row[ow * step] = maximumf(row[ow * step], T(taps[ow * stride]));
          }
        }
      }
    });
    return;
  }
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
