// lapis-export pooling, shipped into every exported package (src/lapis/): max_pool2d_nchw, the
// call the generated code makes for a max pooling. On GPUs one thread per output element; on
// host backends one per output row.
#pragma once

#include <Kokkos_Core.hpp>

#include <cstdint>

#include "support.hpp"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__)) && \
    !defined(__NVCC__) && !defined(__CUDACC__) && !defined(__HIPCC__) && \
    !defined(__INTEL_LLVM_COMPILER) && !defined(SYCL_LANGUAGE_VERSION)
#define LAPIS_X86_POOLING 1
#include <immintrin.h>
#endif

namespace lapis {

#if defined(LAPIS_X86_POOLING)
namespace pool_host {

inline bool has_avx512() {
  static const bool yes = __builtin_cpu_supports("avx512f");
  return yes;
}

// Widest input row the AVX-512 window below takes (its row buffer lives on the stack).
inline constexpr int64_t widest_row = 1024;

// maximumf on lanes: a unless b is larger or NaN (NaN propagates).
__attribute__((target("avx512f"), always_inline)) inline __m512 maximum(const __m512 a,
                                                                        const __m512 b) {
  return _mm512_mask_blend_ps(
      _mm512_cmp_ps_mask(b, a, _CMP_GT_OQ) | _mm512_cmp_ps_mask(b, b, _CMP_UNORD_Q), a, b);
}

// One output row of a 3 x 3, stride 2, padding 1 float max pooling (ResNet's), on AVX-512F:
// the maximum down the window's `count` input rows first (contiguous), then across: output
// column ow takes buffer columns 2 ow - 1, 2 ow and 2 ow + 1, the even and odd lanes of two
// vectors (vpermt2ps). The buffer is -inf around the row, where the padding lies. `row` holds
// its start value (-inf or what the output held).
__attribute__((target("avx512f"))) inline void window3x3s2(const float* const* lines,
                                                           const int count,
                                                           const int64_t width_in,
                                                           float* const row,
                                                           const int64_t width_out) {
  alignas(64) float down[2 * widest_row + 64];
  const __m512 lowest = _mm512_set1_ps(-__builtin_inff());
  for (int64_t iw = 0; iw < width_in; iw += 16) {
    const __mmask16 mask =
        width_in - iw >= 16 ? __mmask16(0xffff) : __mmask16((1u << (width_in - iw)) - 1);
    __m512 v = _mm512_mask_loadu_ps(lowest, mask, lines[0] + iw);
    for (int k = 1; k < count; ++k) v = maximum(v, _mm512_mask_loadu_ps(lowest, mask, lines[k] + iw));
    _mm512_mask_storeu_ps(down + 1 + iw, mask, v);
  }
  down[0] = -__builtin_inff();
  const int64_t read_to = 2 * ((width_out + 15) / 16 * 16) + 34;
  for (int64_t i = width_in + 1; i < read_to; ++i) down[i] = -__builtin_inff();
  const __m512i even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
  const __m512i odd = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
  for (int64_t ow = 0; ow < width_out; ow += 16) {
    const __mmask16 mask =
        width_out - ow >= 16 ? __mmask16(0xffff) : __mmask16((1u << (width_out - ow)) - 1);
    const float* const at = down + 2 * ow;
    const __m512 a = _mm512_loadu_ps(at), b = _mm512_loadu_ps(at + 16);
    const __m512 c = _mm512_loadu_ps(at + 2), d = _mm512_loadu_ps(at + 18);
    __m512 v = _mm512_mask_loadu_ps(lowest, mask, row + ow);
    v = maximum(v, _mm512_permutex2var_ps(a, even, b));   // columns 2 ow - 1
    v = maximum(v, _mm512_permutex2var_ps(a, odd, b));    // 2 ow
    v = maximum(v, _mm512_permutex2var_ps(c, even, d));   // 2 ow + 1
    _mm512_mask_storeu_ps(row + ow, mask, v);
  }
}

}  // namespace pool_host
#endif

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
#if defined(LAPIS_X86_POOLING)
    // ResNet's window on AVX-512F (pool_host::window3x3s2): its output is as wide as it can be.
    const bool window3x3s2 =
        pool_host::has_avx512() && g.kernel_h == 3 && g.kernel_w == 3 && g.stride_h == 2 &&
        g.stride_w == 2 && g.dilation_h == 1 && g.dilation_w == 1 && g.pad_h == 1 &&
        g.pad_w == 1 && width_in <= pool_host::widest_row && width_out == (width_in - 1) / 2 + 1;
#endif
    Kokkos::parallel_for(label, range(space, 0, rows), [=](const int64_t r) {
      const int64_t oh = r % height_out, c = (r / height_out) % channels,
                    n = r / (height_out * channels);
      T* const row = &out(n, c, oh, 0);
      const int64_t step = int64_t(out.stride(3)), in_step = int64_t(in.stride(3));
      if (from_lowest)
        for (int64_t ow = 0; ow < width_out; ++ow) row[ow * step] = -infinity<T>();
#if defined(LAPIS_X86_POOLING)
      if constexpr (std::is_same<T, float>::value &&
                    std::is_same<typename Input::non_const_value_type, float>::value) {
        if (window3x3s2 && step == 1 && in_step == 1) {
          const float* lines[3];
          int count = 0;
          for (int64_t kh = 0; kh < 3; ++kh) {
            const int64_t ih = oh * 2 - 1 + kh;
            if (ih >= 0 && ih < height_in) lines[count++] = &in(n, c, ih, 0);
          }
          if (count) pool_host::window3x3s2(lines, count, width_in, row, width_out);
          return;
        }
      }
#endif
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
