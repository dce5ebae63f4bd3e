// lapis-export convolution, shipped into every exported package (src/lapis/): conv2d_nchw, the
// call the generated code makes for a convolution, and its dispatch by backend: the x86 host
// tiles (conv_host.hpp), the portable kernel (any backend; host backends elsewhere, float64,
// padded calls), the GPU tiles (device backends: conv_tiles.hpp; CUDA float32: conv_tf32.hpp).
#pragma once

#include <Kokkos_Core.hpp>

#include <cstdint>
#include <type_traits>

#include "conv_common.hpp"
#include "conv_host.hpp"
#include "conv_tf32.hpp"
#include "conv_tiles.hpp"

namespace lapis {

namespace detail {
// Device backends: the tensor-core tiles for float32 on CUDA (P: their products), the FMA
// tiles otherwise.
template <class ExecutionSpace, Precision P, class Input, class PackedWeight, class SplitWeight, class Bias,
          class Residual, class Output>
void conv2d_nchw_tiled(const ExecutionSpace& space, const char* label,
                       const Input& in, const PackedWeight& packed,
                       const SplitWeight& split, const Output& out, const ConvGeometry g,
                       const ConvInit init, const Bias& bias, const Residual& residual,
                       const bool with_relu) {
  (void)split;  // read by the CUDA float32 tiles only
#if defined(KOKKOS_ENABLE_CUDA) && !defined(LAPIS_CONV_FMA)
  using T = typename Output::non_const_value_type;
  if constexpr (std::is_same<ExecutionSpace, Kokkos::Cuda>::value &&
                std::is_same<T, float>::value)
    conv2d_nchw_tiled_tf32<ExecutionSpace, P>(space, label, in, packed, split, out, g, init, bias,
                                           residual, with_relu);
  else
#endif
    conv2d_nchw_tiled_fma<ExecutionSpace>(space, label, in, packed, out, g, init, bias, residual,
                                          with_relu);
}

// The 8 packed weights of one tap (blocks are 32-byte aligned): two 16-byte loads through the
// read-only cache on CUDA.
template <class T>
KOKKOS_FORCEINLINE_FUNCTION void load_tap(const T* tap, T (&w)[conv_channel_block]) {
  for (int o = 0; o < conv_channel_block; ++o) w[o] = tap[o];
}

#if defined(__CUDA_ARCH__)
KOKKOS_FORCEINLINE_FUNCTION void load_tap(const float* tap, float (&w)[conv_channel_block]) {
  const float4 a = __ldg(reinterpret_cast<const float4*>(tap));
  const float4 b = __ldg(reinterpret_cast<const float4*>(tap) + 1);
  w[0] = a.x; w[1] = a.y; w[2] = a.z; w[3] = a.w;
  w[4] = b.x; w[5] = b.y; w[6] = b.z; w[7] = b.w;
}
#endif

// Any backend, any padding (host backends without the x86 tiles): one thread per (n, 8 output
// channels, oh, ow), those channels in registers. The weights' blocks may be wider (host
// float32 packages pack 32 channels a block): any multiple of 8.
template <class ExecutionSpace, class Input, class PackedWeight, class Bias, class Residual,
          class Output>
void conv2d_nchw_portable(const ExecutionSpace& space, const char* label,
                          const Input& in, const PackedWeight& packed,
                          const Output& out, const ConvGeometry g, const ConvInit init,
                          const Bias& bias, const Residual& residual, const bool with_relu) {
  using T = typename Output::non_const_value_type;
  constexpr int B = conv_channel_block;
  const int64_t batch = out.extent(0), channels_out = out.extent(1);
  const int64_t height_out = out.extent(2), width_out = out.extent(3);
  const int64_t channels_in = in.extent(1), height_in = in.extent(2), width_in = in.extent(3);
  const int64_t kernel_h = packed.extent(2), kernel_w = packed.extent(3);
  const int64_t packed_block = packed.extent(4);
  const int64_t blocks = (channels_out + B - 1) / B;
  const bool with_residual = residual.data() != nullptr;
  using range = Kokkos::RangePolicy<ExecutionSpace, Kokkos::IndexType<int64_t>>;
  Kokkos::parallel_for(label, range(space, 0, batch * blocks * height_out * width_out),
                       KOKKOS_LAMBDA(int64_t i) {
    const int64_t ow = i % width_out;
    i /= width_out;
    const int64_t oh = i % height_out;
    i /= height_out;
    const int64_t block = i % blocks;
    const int64_t n = i / blocks;
    const int64_t first = block * B, packed_index = first / packed_block;
    const int64_t packed_offset = first % packed_block;
    T acc[B] = {};
    for (int64_t ic = 0; ic < channels_in; ++ic) {
      for (int64_t kh = 0; kh < kernel_h; ++kh) {
        const int64_t ih = oh * g.stride_h - g.pad_h + kh * g.dilation_h;
        if (ih < 0 || ih >= height_in) continue;
        for (int64_t kw = 0; kw < kernel_w; ++kw) {
          const int64_t iw = ow * g.stride_w - g.pad_w + kw * g.dilation_w;
          if (iw < 0 || iw >= width_in) continue;
          const T x = in(n, ic, ih, iw);
          T w[B];
          load_tap(&packed(packed_index, ic, kh, kw, packed_offset), w);
          for (int o = 0; o < B; ++o) acc[o] += x * w[o];
        }
      }
    }
    for (int o = 0; o < B; ++o) {
      const int64_t oc = block * B + o;
      if (oc >= channels_out) break;
      T v = acc[o] + (init == ConvInit::bias   ? T(bias(oc))
                      : init == ConvInit::zero ? T(0)
                                               : out(n, oc, oh, ow));
      if (with_residual) v += T(residual(n, oc, oh, ow));
      out(n, oc, oh, ow) = with_relu ? relu(v) : v;
    }
  });
}
}  // namespace detail

// out[n][oc][oh][ow] = epilogue(init + sum over ic, kh, kw of
//     in[n][ic][oh * stride_h - pad_h + kh * dilation_h][ow * stride_w - pad_w + kw * dilation_w]
//     * weight[oc][ic][kh][kw])
// with zeros read outside `in` (any layout), `out` with unit column stride (LayoutRight, or on
// host backends the interior of the next convolution's zero-bordered input), and `packed` the
// weight in blocks of B output channels: packed[oc / B][ic][kh][kw][oc % B], zero beyond the
// last channel (done at export); B = conv_channel_block, or conv_host_channel_block for float32 on host
// backends (the x86 tiles take only those). `bias` is read only with ConvInit::bias. The epilogue
// adds `residual` (the shape of `out`; none when it holds no data) before the ReLU.
// `split` (CUDA float32 packages) is `packed` split by split_tf32_weight at initialize(), for
// the tensor-core tiles; other backends and element types do not read it.
template <class ExecutionSpace, Precision P = Precision::fp32, class Input, class PackedWeight,
          class SplitWeight, class Bias, class Residual, class Output>
void conv2d_nchw(const ExecutionSpace& space, const char* label,
                 const Input& in, const PackedWeight& packed,
                 const SplitWeight& split, const Output& out, const ConvGeometry g,
                 const ConvInit init, const Bias& bias, const Residual& residual,
                 const bool with_relu) {
  (void)split;
  // An empty batch (a rank with no cells this step): nothing to launch, and no tile grid
  // to size from zero pixels.
  if (out.size() == 0) return;
#if defined(LAPIS_X86_KERNELS)
  using T = typename Output::non_const_value_type;
  if constexpr (Kokkos::SpaceAccessibility<ExecutionSpace, Kokkos::HostSpace>::accessible &&
                std::is_same<T, float>::value &&
                std::is_same<typename Residual::non_const_value_type, float>::value) {
    if (detail::x86_tiles_take(in, packed, g)) {
      detail::conv2d_nchw_x86<ExecutionSpace>(space, label,
                                              in, packed, out, g, init, bias, residual,
                                              with_relu);
      return;
    }
  }
#endif
  if constexpr (!Kokkos::SpaceAccessibility<ExecutionSpace, Kokkos::HostSpace>::accessible)
    detail::conv2d_nchw_tiled<ExecutionSpace, P>(space, label, in, packed, split, out, g, init, bias,
                                              residual, with_relu);
  else
    detail::conv2d_nchw_portable<ExecutionSpace>(space, label, in, packed, out, g, init, bias,
                                                 residual, with_relu);
}

// Without split weights; without a residual.
template <class ExecutionSpace, Precision P = Precision::fp32, class Input, class PackedWeight,
          class Bias, class Residual, class Output>
void conv2d_nchw(const ExecutionSpace& space, const char* label,
                 const Input& in, const PackedWeight& packed,
                 const Output& out, const ConvGeometry g, const ConvInit init, const Bias& bias,
                 const Residual& residual, const bool with_relu) {
  conv2d_nchw<ExecutionSpace, P>(
      space, label, in, packed,
      Kokkos::View<const float*****, typename Output::memory_space>(), out, g, init, bias,
      residual, with_relu);
}

template <class ExecutionSpace, Precision P = Precision::fp32, class Input, class PackedWeight,
          class SplitWeight, class Bias, class Output>
void conv2d_nchw(const ExecutionSpace& space, const char* label,
                 const Input& in, const PackedWeight& packed,
                 const SplitWeight& split, const Output& out, const ConvGeometry g,
                 const ConvInit init, const Bias& bias, const bool with_relu) {
  conv2d_nchw<ExecutionSpace, P>(
      space, label, in, packed, split, out, g, init, bias,
      Kokkos::View<const typename Output::non_const_value_type****,
                   typename Output::memory_space>(),
      with_relu);
}

template <class ExecutionSpace, Precision P = Precision::fp32, class Input, class PackedWeight,
          class Bias, class Output>
void conv2d_nchw(const ExecutionSpace& space, const char* label,
                 const Input& in, const PackedWeight& packed,
                 const Output& out, const ConvGeometry g, const ConvInit init, const Bias& bias,
                 const bool with_relu) {
  conv2d_nchw<ExecutionSpace, P>(
      space, label, in, packed, out, g, init, bias,
      Kokkos::View<const typename Output::non_const_value_type****,
                   typename Output::memory_space>(),
      with_relu);
}

// The `bias` argument of a convolution without one.
template <class T, class MemorySpace>
Kokkos::View<const T*, MemorySpace> no_bias() {
  return {};
}

}  // namespace lapis
