// lapis-export host convolution tiles, shipped into every exported package (src/lapis/).
// x86-64 host backends (Serial, OpenMP, Threads) built with GCC or Clang, float32, weights in
// blocks of 32 output channels (packed so at export, exporter/tuned_ops.py), no padding to read
// around (the lowering pads the input on host backends), contiguous undilated input columns,
// stride 1 or 2 along them. conv2d_nchw (conv.hpp) hands such calls to conv2d_nchw_x86.
//
// Register tiles of 32 output channels (two zmm) x 7 or 8 output columns (AVX-512F), 16
// channels x 6 columns (AVX2+FMA) or 8 x 6 (baseline x86-64), summed over every input channel
// and tap with the input values read straight from the rows of the image; the epilogue (start
// value, residual, ReLU) runs on the sums before their one store. The instruction set is picked
// once at run time (__builtin_cpu_supports); LAPIS_CONV_ISA=avx2|baseline forces a lower one.
#pragma once

#include <Kokkos_Core.hpp>

#include <cstdint>
#include <cstdlib>
#include <cstring>

#include "conv_common.hpp"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__)) && \
    !defined(__NVCC__) && !defined(__CUDACC__) && !defined(__HIPCC__) && \
    !defined(__INTEL_LLVM_COMPILER) && !defined(SYCL_LANGUAGE_VERSION)
#define LAPIS_X86_KERNELS 1
#endif

namespace lapis {

// Output channels per packed weight block of float32 convolutions on host backends: two zmm.
// Must match HOST_CONV_CHANNEL_BLOCK in exporter/tuned_ops.py.
inline constexpr int conv_host_channel_block = 32;

// Geometry of one convolution, in elements (strides of the input View included).
struct ConvShape {
  int64_t channels_in, kernel_h, kernel_w;
  int64_t stride_h, stride_w, dilation_h, dilation_w;
  int64_t in_c, in_h, in_w;                  // input strides
  int64_t out_c, out_h;                      // output strides (LayoutRight, unit last stride)
};

}  // namespace lapis

#if defined(LAPIS_X86_KERNELS)
// The wide vectors stay inside the target functions; GCC and Clang warn about their ABI where
// a template is instantiated (the end of the including file), so this is not popped.
#if defined(__clang__)
#pragma clang diagnostic ignored "-Wpsabi"
#elif defined(__GNUC__)
#pragma GCC diagnostic ignored "-Wpsabi"
#endif

namespace lapis {
namespace conv_host {

enum class Isa : int { baseline, avx2, avx512 };

// The widest instruction set this CPU has, lowered by LAPIS_CONV_ISA; chosen once.
inline Isa isa() {
  static const Isa chosen = [] {
    Isa best = Isa::baseline;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) best = Isa::avx2;
    if (best == Isa::avx2 && __builtin_cpu_supports("avx512f")) best = Isa::avx512;
    const char* forced = std::getenv("LAPIS_CONV_ISA");
    if (forced && std::strcmp(forced, "baseline") == 0) return Isa::baseline;
    if (forced && std::strcmp(forced, "avx2") == 0 && best == Isa::avx512) return Isa::avx2;
    return best;
  }();
  return chosen;
}

// What one block of output channels of one output row starts from, and what is applied to its
// sums before they are stored.
struct RowEpilogue {
  ConvInit init;
  const float* bias;        // conv_host_channel_block values (ConvInit::bias)
  const float* residual;    // residual(n, first channel of the block, oh, 0), or nullptr
  int64_t residual_c, residual_w;  // its strides
  bool relu;
};

template <int Bytes>
struct simd {
  typedef float type __attribute__((vector_size(Bytes)));
};

// The sums of one tile: `Columns` output columns x `Vectors` vectors of output channels, over
// every input channel and tap. `origin`: the input at the tile's first column and the row of
// its first filter row; `weights`: the block's weights at the tile's first channel.
template <int Bytes, int Vectors, int Columns, int StrideW, int KernelW>
inline __attribute__((always_inline)) void tile_sums(
    const ConvShape& s, const float* origin, const float* weights,
    typename simd<Bytes>::type (&acc)[Columns][Vectors]) {
  using vec = typename simd<Bytes>::type;
  constexpr int lanes = Bytes / int(sizeof(float));
  constexpr int B = conv_host_channel_block;
#pragma GCC unroll 16
  for (int j = 0; j < Columns; ++j)
#pragma GCC unroll 4
    for (int v = 0; v < Vectors; ++v) acc[j][v] = vec{};
  const int64_t kernel_h = s.kernel_h, kernel_w = KernelW ? KernelW : s.kernel_w;
  const int64_t row_step = s.dilation_h * s.in_h;
  for (int64_t ic = 0; ic < s.channels_in; ++ic) {
    for (int64_t kh = 0; kh < kernel_h; ++kh) {
      const float* row = origin + ic * s.in_c + kh * row_step;
      const float* tap = weights + (ic * kernel_h + kh) * kernel_w * B;
      for (int64_t kw = 0; kw < kernel_w; ++kw) {
        vec w[Vectors];
#pragma GCC unroll 4
        for (int v = 0; v < Vectors; ++v)
          __builtin_memcpy(&w[v], tap + kw * B + v * lanes, sizeof(vec));
#pragma GCC unroll 16
        for (int j = 0; j < Columns; ++j) {
          const float x = row[kw + j * StrideW];
#pragma GCC unroll 4
          for (int v = 0; v < Vectors; ++v) acc[j][v] += x * w[v];
        }
      }
    }
  }
}

// One output row of one block of channels: tiles of `Columns` from the left; where `Columns`
// does not divide the width, the last tile overlaps the one before and stores only the
// columns not yet stored (so `accumulate` and residuals are added once). width >= Columns.
// `out`: out(n, first channel of the block, 0, 0).
template <int Bytes, int Vectors, int Columns, int StrideW, int KernelW>
inline __attribute__((always_inline)) void row_tiles(const ConvShape& s, const float* image,
                                                     const float* weights, float* out,
                                                     const int64_t oh, const int64_t width,
                                                     const int64_t valid,
                                                     const RowEpilogue& e) {
  using vec = typename simd<Bytes>::type;
  constexpr int channels = Vectors * Bytes / int(sizeof(float));
  const float* origin = image + oh * s.stride_h * s.in_h;
  for (int64_t c = 0; c < valid; c += channels) {
    for (int64_t done = 0; done < width;) {
      const int64_t ow0 = done + Columns <= width ? done : width - Columns;
      vec acc[Columns][Vectors];
      tile_sums<Bytes, Vectors, Columns, StrideW, KernelW>(s, origin + ow0 * StrideW,
                                                            weights + c, acc);
      float sums[Columns][channels];
      __builtin_memcpy(sums, acc, sizeof(sums));
      const int64_t last = valid - c < channels ? valid - c : channels;
      for (int64_t o = 0; o < last; ++o) {
        float* target = out + (c + o) * s.out_c + oh * s.out_h;
        const float start = e.init == ConvInit::bias ? e.bias[c + o] : 0.0f;
        const float* residual = e.residual ? e.residual + (c + o) * e.residual_c : nullptr;
        for (int64_t j = done - ow0; j < Columns; ++j) {
          const int64_t ow = ow0 + j;
          float v = (e.init == ConvInit::accumulate ? target[ow] : start) + sums[j][o];
          if (residual) v += residual[ow * e.residual_w];
          target[ow] = e.relu ? detail::relu(v) : v;
        }
      }
      done = ow0 + Columns;
    }
  }
}

using row_function = void (*)(const ConvShape&, const float*, const float*, float*, int64_t,
                              int64_t, int64_t, const RowEpilogue&);

template <int Columns, int StrideW, int KernelW>
__attribute__((target("avx512f,fma"))) void row_avx512(
    const ConvShape& s, const float* image, const float* weights, float* out, int64_t oh,
    int64_t width, int64_t valid, const RowEpilogue& e) {
  row_tiles<64, 2, Columns, StrideW, KernelW>(s, image, weights, out, oh, width, valid, e);
}

template <int Columns, int StrideW>
__attribute__((target("avx2,fma"))) void row_avx2(
    const ConvShape& s, const float* image, const float* weights, float* out, int64_t oh,
    int64_t width, int64_t valid, const RowEpilogue& e) {
  row_tiles<32, 2, Columns, StrideW, 0>(s, image, weights, out, oh, width, valid, e);
}

template <int Columns, int StrideW>
void row_baseline(const ConvShape& s, const float* image, const float* weights, float* out,
                  int64_t oh, int64_t width, int64_t valid, const RowEpilogue& e) {
  row_tiles<16, 2, Columns, StrideW, 0>(s, image, weights, out, oh, width, valid, e);
}

template <int Columns, int StrideW>
row_function avx512_row_for(const int64_t kernel_w) {
  switch (kernel_w) {  // a known filter width unrolls the tap loop
    case 1: return row_avx512<Columns, StrideW, 1>;
    case 3: return row_avx512<Columns, StrideW, 3>;
    default: return row_avx512<Columns, StrideW, 0>;
  }
}

// AVX-512F: 7 columns where 7 divides the width (every ResNet width), else 8, 4 or 1.
template <int StrideW>
row_function row_for(const int64_t kernel_w, const int64_t width) {
  switch (isa()) {
    case Isa::avx512:
      if (width % 7 == 0) return avx512_row_for<7, StrideW>(kernel_w);
      if (width >= 8) return avx512_row_for<8, StrideW>(kernel_w);
      return width >= 4 ? row_avx512<4, StrideW, 0> : row_avx512<1, StrideW, 0>;
    case Isa::avx2: return width >= 6 ? row_avx2<6, StrideW> : row_avx2<1, StrideW>;
    default: return width >= 6 ? row_baseline<6, StrideW> : row_baseline<1, StrideW>;
  }
}

}  // namespace conv_host

namespace detail {

// Whether conv2d_nchw_x86 takes a call: float32 weights packed in host blocks, no padding,
// contiguous undilated input columns read with stride 1 or 2, a float residual if any.
template <class Input, class PackedWeight>
bool x86_tiles_take(const Input& in, const PackedWeight& packed, const ConvGeometry g) {
  return packed.extent(4) == size_t(conv_host_channel_block) && g.pad_h == 0 && g.pad_w == 0 &&
         in.stride(3) == 1 && g.dilation_w == 1 && (g.stride_w == 1 || g.stride_w == 2);
}

// conv2d_nchw on the host tiles: one task per (image, channel block, output row).
template <class ExecutionSpace, class Input, class PackedWeight, class Bias, class Residual,
          class Output>
void conv2d_nchw_x86(const ExecutionSpace& space, const char* label,
                     const Input& in, const PackedWeight& packed,
                     const Output& out, const ConvGeometry g, const ConvInit init,
                     const Bias& bias, const Residual& residual, const bool with_relu) {
  constexpr int B = conv_host_channel_block;
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
  const conv_host::row_function row = g.stride_w == 1
                                          ? conv_host::row_for<1>(s.kernel_w, width_out)
                                          : conv_host::row_for<2>(s.kernel_w, width_out);
  const bool with_residual = residual.data() != nullptr;
  Kokkos::parallel_for(
      label, policy3(space, {0, 0, 0}, {batch, blocks, height_out}),
      [=](const int64_t n, const int64_t block, const int64_t oh) {
        const int64_t valid = channels_out - block * B < B ? channels_out - block * B : B;
        float bias_block[B] = {};
        if (init == ConvInit::bias)
          for (int64_t o = 0; o < valid; ++o) bias_block[o] = float(bias(block * B + o));
        const conv_host::RowEpilogue e{
            init, bias_block,
            with_residual ? &residual(n, block * B, oh, 0) : nullptr,
            with_residual ? int64_t(residual.stride(1)) : 0,
            with_residual ? int64_t(residual.stride(3)) : 0, with_relu};
        row(s, &in(n, 0, 0, 0), &packed(block, 0, 0, 0, 0), &out(n, block * B, 0, 0), oh,
            width_out, valid, e);
      });
}
}  // namespace detail
}  // namespace lapis
#endif
