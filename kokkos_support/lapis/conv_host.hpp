// lapis-export host convolution tiles, shipped into every exported package (src/lapis/).
// x86-64 host backends (Serial, OpenMP, Threads) built with GCC or Clang, float32, no padding
// to read around: register tiles of output columns x 8 channels, compiled for AVX2+FMA and for
// baseline x86-64 and picked at run time (LAPIS_X86_KERNELS; other hosts and compilers get
// only ConvShape). conv2d_nchw (conv.hpp) hands such calls to conv2d_nchw_x86.
#pragma once

#include <Kokkos_Core.hpp>

#include <cstdint>

#include "conv_common.hpp"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__)) && \
    !defined(__NVCC__) && !defined(__CUDACC__) && !defined(__HIPCC__) && \
    !defined(__INTEL_LLVM_COMPILER) && !defined(SYCL_LANGUAGE_VERSION)
#define LAPIS_X86_KERNELS 1
#endif

namespace lapis {

// Geometry of one convolution, in elements (strides of the input View included).
struct ConvShape {
  int64_t channels_in, kernel_h, kernel_w;
  int64_t stride_h, stride_w, dilation_h, dilation_w;
  int64_t in_c, in_h, in_w;                  // input strides
  int64_t out_c, out_h;                      // output strides (LayoutRight, unit last stride)
};

#if defined(LAPIS_X86_KERNELS)
namespace detail {
typedef float float8 __attribute__((vector_size(32)));

// One output tile: `Columns` output columns x 8 output channels, accumulated in registers
// over every input channel and filter tap, then added to `out`.
template <int Columns>
inline __attribute__((always_inline)) void conv_tile(const ConvShape& s, const float* image,
                                                     const float* weights, float* out,
                                                     int64_t oh, int64_t ow0, int64_t columns,
                                                     int64_t valid_channels) {
  int64_t column_offset[Columns];
  for (int j = 0; j < Columns; ++j)   // past the edge, repeat the last column (discarded)
    column_offset[j] = ((j < columns ? j : columns - 1) + ow0) * s.stride_w * s.in_w;
  float8 acc[Columns];
  for (int j = 0; j < Columns; ++j) acc[j] = float8{};
  for (int64_t ic = 0; ic < s.channels_in; ++ic) {
    for (int64_t kh = 0; kh < s.kernel_h; ++kh) {
      const float* row = image + ic * s.in_c + (oh * s.stride_h + kh * s.dilation_h) * s.in_h;
      const float* tap = weights + (ic * s.kernel_h + kh) * s.kernel_w * conv_channel_block;
      for (int64_t kw = 0; kw < s.kernel_w; ++kw) {
        const float* x = row + kw * s.dilation_w * s.in_w;
        float8 w;
        __builtin_memcpy(&w, tap + kw * conv_channel_block, sizeof(w));
#pragma GCC unroll 8
        for (int j = 0; j < Columns; ++j) acc[j] += w * x[column_offset[j]];
      }
    }
  }
  for (int o = 0; o < valid_channels; ++o)
    for (int j = 0; j < Columns; ++j)
      if (j < columns) out[o * s.out_c + oh * s.out_h + ow0 + j] += acc[j][o];
}

// The same tile when the input's columns are contiguous and undilated (the common case):
// the `Columns` input values of a tap sit at constant offsets from one pointer, so the loop
// needs no offset table and the accumulators keep the vector registers to themselves.
template <int Columns, int StrideW, int KernelW>
inline __attribute__((always_inline)) void conv_tile_dense(const ConvShape& s,
                                                           const float* image,
                                                           const float* weights, float* out,
                                                           int64_t oh, int64_t ow0,
                                                           int64_t valid_channels) {
  float8 acc[Columns];
  for (int j = 0; j < Columns; ++j) acc[j] = float8{};
  const int64_t kernel_h = s.kernel_h, in_c = s.in_c, in_h = s.in_h;
  const int64_t kernel_w = KernelW ? KernelW : s.kernel_w;
  const float* origin = image + ow0 * StrideW;
  for (int64_t ic = 0; ic < s.channels_in; ++ic) {
    for (int64_t kh = 0; kh < kernel_h; ++kh) {
      const float* row = origin + ic * in_c + (oh * s.stride_h + kh * s.dilation_h) * in_h;
      const float* tap = weights + (ic * kernel_h + kh) * kernel_w * conv_channel_block;
      for (int64_t kw = 0; kw < kernel_w; ++kw) {
        float8 w;
        __builtin_memcpy(&w, tap + kw * conv_channel_block, sizeof(w));
#pragma GCC unroll 16
        for (int j = 0; j < Columns; ++j) acc[j] += w * row[kw + j * StrideW];
      }
    }
  }
  for (int o = 0; o < conv_channel_block; ++o)
    for (int j = 0; j < Columns; ++j)
      if (o < valid_channels) out[o * s.out_c + oh * s.out_h + ow0 + j] += acc[j][o];
}

// One output row: full tiles of `Columns`, then single columns for the rest.
template <int Columns, int StrideW, int KernelW>
inline __attribute__((always_inline)) void conv_row_dense(const ConvShape& s, const float* image,
                                                          const float* weights, float* out,
                                                          int64_t oh, int64_t width,
                                                          int64_t valid_channels) {
  int64_t ow0 = 0;
  for (; ow0 + Columns <= width; ow0 += Columns)
    conv_tile_dense<Columns, StrideW, KernelW>(s, image, weights, out, oh, ow0, valid_channels);
  for (; ow0 < width; ++ow0)
    conv_tile_dense<1, StrideW, KernelW>(s, image, weights, out, oh, ow0, valid_channels);
}

template <int Columns, int StrideW, int KernelW>
__attribute__((target("avx2,fma"))) void conv_row_dense_avx2(const ConvShape& s,
                                                            const float* image,
                                                            const float* weights, float* out,
                                                            int64_t oh, int64_t width,
                                                            int64_t valid_channels) {
  conv_row_dense<Columns, StrideW, KernelW>(s, image, weights, out, oh, width, valid_channels);
}

// One output row in tiles of `Columns` with an offset table (any input layout).
template <int Columns>
inline __attribute__((always_inline)) void conv_row(const ConvShape& s, const float* image,
                                                    const float* weights, float* out,
                                                    int64_t oh, int64_t width,
                                                    int64_t valid_channels) {
  for (int64_t ow0 = 0; ow0 < width; ow0 += Columns)
    conv_tile<Columns>(s, image, weights, out, oh, ow0,
                       width - ow0 < Columns ? width - ow0 : Columns, valid_channels);
}

template <int Columns>
__attribute__((target("avx2,fma"))) void conv_row_avx2(const ConvShape& s, const float* image,
                                                      const float* weights, float* out,
                                                      int64_t oh, int64_t width,
                                                      int64_t valid_channels) {
  conv_row<Columns>(s, image, weights, out, oh, width, valid_channels);
}

template <int Columns>
void conv_row_baseline(const ConvShape& s, const float* image, const float* weights,
                       float* out, int64_t oh, int64_t width, int64_t valid_channels) {
  conv_row<Columns>(s, image, weights, out, oh, width, valid_channels);
}

using conv_row_function = void (*)(const ConvShape&, const float*, const float*, float*,
                                   int64_t, int64_t, int64_t);

template <int Columns, int StrideW>
conv_row_function dense_row_for(int64_t kernel_w) {
  switch (kernel_w) {   // a known filter width unrolls the tap loop
    case 1: return conv_row_dense_avx2<Columns, StrideW, 1>;
    case 3: return conv_row_dense_avx2<Columns, StrideW, 3>;
    case 7: return conv_row_dense_avx2<Columns, StrideW, 7>;
    default: return conv_row_dense_avx2<Columns, StrideW, 0>;
  }
}

template <int Columns>
conv_row_function dense_row_for(const ConvShape& s) {
  return s.stride_w == 1 ? dense_row_for<Columns, 1>(s.kernel_w)
                         : dense_row_for<Columns, 2>(s.kernel_w);
}

// AVX2+FMA with contiguous, undilated input columns and stride 1 or 2: tiles of 7 columns x 8
// channels when 7 divides the width (every ResNet width), else 8. Otherwise 8 columns with an
// offset table; without AVX2, 4 columns (the accumulators fit in 16 SSE registers).
inline conv_row_function conv_row_for(const ConvShape& s, int64_t width) {
  static const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  if (!avx2) return conv_row_baseline<4>;
  if (s.in_w == 1 && s.dilation_w == 1 && (s.stride_w == 1 || s.stride_w == 2))
    return width % 7 == 0 ? dense_row_for<7>(s) : dense_row_for<8>(s);
  return conv_row_avx2<8>;
}

// conv2d_nchw on these tiles: one task per (image, channel block, output row).
template <class ExecutionSpace, class Input, class PackedWeight, class Bias, class Residual,
          class Output>
void conv2d_nchw_x86(const ExecutionSpace& space, const char* label,
                     const Input& in, const PackedWeight& packed,
                     const Output& out, const ConvGeometry g, const ConvInit init,
                     const Bias& bias, const Residual& residual, const bool with_relu) {
  constexpr int B = conv_channel_block;
  const ConvShape s{int64_t(in.extent(1)), int64_t(packed.extent(2)),
                    int64_t(packed.extent(3)), g.stride_h, g.stride_w, g.dilation_h,
                    g.dilation_w, int64_t(in.stride(1)), int64_t(in.stride(2)),
                    int64_t(in.stride(3)), int64_t(out.stride(1)), int64_t(out.stride(2))};
  const int64_t batch = out.extent(0), channels_out = out.extent(1);
  const int64_t height_out = out.extent(2), width_out = out.extent(3);
  const int64_t blocks = packed.extent(0);
  using policy3 = Kokkos::MDRangePolicy<
      ExecutionSpace, Kokkos::Rank<3, Kokkos::Iterate::Right, Kokkos::Iterate::Right>,
      Kokkos::IndexType<int64_t>>;
  const conv_row_function row = conv_row_for(s, width_out);
  const bool with_residual = residual.data() != nullptr;
  Kokkos::parallel_for(
      label, policy3(space, {0, 0, 0}, {batch, blocks, height_out}),
      [=](const int64_t n, const int64_t block, const int64_t oh) {
        const int64_t valid = channels_out - block * B < B ? channels_out - block * B : B;
        float* target = &out(n, block * B, 0, 0);
        // The tiles add to `out`: set the initial value of this row first, apply the
        // epilogue after, while the row is still in cache.
        if (init != ConvInit::accumulate)
          for (int64_t o = 0; o < valid; ++o)
            for (int64_t ow = 0; ow < width_out; ++ow)
              target[o * s.out_c + oh * s.out_h + ow] =
                  init == ConvInit::bias ? float(bias(block * B + o)) : 0.0f;
        row(s, &in(n, 0, 0, 0), &packed(block, 0, 0, 0, 0), target, oh, width_out, valid);
        if (with_residual)
          for (int64_t o = 0; o < valid; ++o)
            for (int64_t ow = 0; ow < width_out; ++ow)
              target[o * s.out_c + oh * s.out_h + ow] +=
                  float(residual(n, block * B + o, oh, ow));
        if (with_relu)
          for (int64_t o = 0; o < valid; ++o)
            for (int64_t ow = 0; ow < width_out; ++ow) {
              float& v = target[o * s.out_c + oh * s.out_h + ow];
              v = relu(v);
            }
      });
}
}  // namespace detail
#endif

}  // namespace lapis
