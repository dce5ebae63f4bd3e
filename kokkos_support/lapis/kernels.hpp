// lapis-export tuned kernels, shipped into every exported package (src/lapis/).
// The generated code calls these in place of the loop nests of convolutions. Every kernel has a
// portable Kokkos version (any backend); on x86-64 host backends a register-tiled version,
// compiled for AVX2+FMA and for baseline x86-64 and picked at run time, takes over.
#pragma once

#include <Kokkos_Core.hpp>

#include <cstdint>
#include <type_traits>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__)) && \
    !defined(__NVCC__) && !defined(__CUDACC__) && !defined(__HIPCC__) && \
    !defined(__INTEL_LLVM_COMPILER) && !defined(SYCL_LANGUAGE_VERSION)
#define LAPIS_X86_KERNELS 1
#endif

namespace lapis {

// Output channels per packed weight block: the vector lanes of the convolution micro-kernel.
inline constexpr int conv_channel_block = 8;

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

template <int Columns>
__attribute__((target("avx2,fma"))) void conv_row_avx2(const ConvShape& s, const float* image,
                                                      const float* weights, float* out,
                                                      int64_t oh, int64_t width,
                                                      int64_t valid_channels) {
  for (int64_t ow0 = 0; ow0 < width; ow0 += Columns)
    conv_tile<Columns>(s, image, weights, out, oh, ow0,
                       width - ow0 < Columns ? width - ow0 : Columns, valid_channels);
}

template <int Columns>
void conv_row_baseline(const ConvShape& s, const float* image, const float* weights,
                       float* out, int64_t oh, int64_t width, int64_t valid_channels) {
  for (int64_t ow0 = 0; ow0 < width; ow0 += Columns)
    conv_tile<Columns>(s, image, weights, out, oh, ow0,
                       width - ow0 < Columns ? width - ow0 : Columns, valid_channels);
}

using conv_row_function = void (*)(const ConvShape&, const float*, const float*, float*,
                                   int64_t, int64_t, int64_t);

inline conv_row_function conv_row_for_this_cpu() {
  static const conv_row_function chosen =
      (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
          ? conv_row_avx2<8>
          : conv_row_baseline<4>;   // 4 columns: the accumulators fit in 16 SSE registers
  return chosen;
}
}  // namespace detail
#endif

// out[n][oc][oh][ow] += sum over ic, kh, kw of
//     in[n][ic][oh * stride_h + kh * dilation_h][ow * stride_w + kw * dilation_w]
//     * weight[oc][ic][kh][kw]
// `in` is the already padded input (any layout, unit last stride not required), `out` is
// LayoutRight and holds the initial values (the bias), and `packed` is the weight in blocks of
// conv_channel_block output channels: packed[oc / B][ic][kh][kw][oc % B], zero beyond the last
// channel (done at export).
template <class ExecutionSpace, class Input, class PackedWeight, class Output>
void conv2d_nchw(const char* label, const Input& in, const PackedWeight& packed,
                 const Output& out, int64_t stride_h, int64_t stride_w, int64_t dilation_h,
                 int64_t dilation_w) {
  constexpr int B = conv_channel_block;
  const ConvShape s{int64_t(in.extent(1)), int64_t(packed.extent(2)),
                    int64_t(packed.extent(3)), stride_h, stride_w, dilation_h, dilation_w,
                    int64_t(in.stride(1)), int64_t(in.stride(2)), int64_t(in.stride(3)),
                    int64_t(out.stride(1)), int64_t(out.stride(2))};
  const int64_t batch = out.extent(0), channels_out = out.extent(1);
  const int64_t height_out = out.extent(2), width_out = out.extent(3);
  const int64_t blocks = packed.extent(0);
  using policy3 = Kokkos::MDRangePolicy<
      ExecutionSpace, Kokkos::Rank<3, Kokkos::Iterate::Right, Kokkos::Iterate::Right>,
      Kokkos::IndexType<int64_t>>;
#if defined(LAPIS_X86_KERNELS)
  if constexpr (Kokkos::SpaceAccessibility<ExecutionSpace, Kokkos::HostSpace>::accessible) {
    const detail::conv_row_function row = detail::conv_row_for_this_cpu();
    Kokkos::parallel_for(
        label, policy3({0, 0, 0}, {batch, blocks, height_out}),
        [=](const int64_t n, const int64_t block, const int64_t oh) {
          const int64_t valid = channels_out - block * B < B ? channels_out - block * B : B;
          row(s, &in(n, 0, 0, 0), &packed(block, 0, 0, 0, 0), &out(n, block * B, 0, 0), oh,
              width_out, valid);
        });
    return;
  }
#endif
  // Portable version: one output element per iteration, weights read from the packed blocks.
  using policy4 = Kokkos::MDRangePolicy<
      ExecutionSpace, Kokkos::Rank<4, Kokkos::Iterate::Right, Kokkos::Iterate::Right>,
      Kokkos::IndexType<int64_t>>;
  Kokkos::parallel_for(
      label, policy4({0, 0, 0, 0}, {batch, channels_out, height_out, width_out}),
      KOKKOS_LAMBDA(const int64_t n, const int64_t oc, const int64_t oh, const int64_t ow) {
        float sum = 0.0f;
        for (int64_t ic = 0; ic < s.channels_in; ++ic)
          for (int64_t kh = 0; kh < s.kernel_h; ++kh)
            for (int64_t kw = 0; kw < s.kernel_w; ++kw)
              sum += in(n, ic, oh * s.stride_h + kh * s.dilation_h,
                        ow * s.stride_w + kw * s.dilation_w) *
                     packed(oc / B, ic, kh, kw, oc % B);
        out(n, oc, oh, ow) += sum;
      });
}

}  // namespace lapis
