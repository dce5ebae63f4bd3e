// The variants conv_bench compares, one translation unit each (variant_N.cpp).
#pragma once
#include <Kokkos_Core.hpp>

#include "lapis/conv.hpp"

using Space = Kokkos::DefaultExecutionSpace;
using Memory = Space::memory_space;
template <class T>
using View4 = Kokkos::View<T****, Kokkos::LayoutRight, Memory>;
template <class T>
using View5 = Kokkos::View<T*****, Kokkos::LayoutRight, Memory>;

// `split`: `w` split into tf32 fragments (lapis::split_tf32_weight; no data for fewer than 8
// input channels, 1x1 filters), read by variants 6 and 7, which run variant 4 without it.
template <int Variant>
void run_variant(const View4<float>& in, const View5<float>& w, const View5<float>& split,
                 const View4<float>& out, const lapis::ConvGeometry& g,
                 const Kokkos::View<float*, Memory>& bias, const View4<const float>& residual,
                 bool relu);

#if defined(LAPIS_BENCH_VARIANT)
template <>
void run_variant<LAPIS_BENCH_VARIANT>(const View4<float>& in, const View5<float>& w,
                                      const View5<float>& split, const View4<float>& out,
                                      const lapis::ConvGeometry& g,
                                      const Kokkos::View<float*, Memory>& bias,
                                      const View4<const float>& residual, bool relu) {
  using namespace lapis::detail;
  constexpr int V = LAPIS_BENCH_VARIANT;
  const auto init = lapis::ConvInit::bias;
  if constexpr (V >= 6)
    if (split.data() == nullptr) {  // fewer than 8 input channels: as the package does
      run_variant<4>(in, w, split, out, g, bias, residual, relu);
      return;
    }
  if constexpr (V == 0)  // float32 FMA tiles (other GPU backends)
    conv2d_nchw_tiled_fma<Space>(Space(), "conv", in, w, out, g, init, bias, residual, relu);
  else if constexpr (V == 1)  // 3xTF32, warps of 32 x 32, staging through registers
    conv2d_nchw_tiled_with<ConvTilesTF32<128, 128, 32, 32, 1>, ConvTilesTF32<64, 256, 32, 32, 1>,
                           ConvTilesTF32<64, 64, 32, 32, 4>, Space>(
        Space(), "conv", in, w, out, g, init, bias, residual, relu);
  else if constexpr (V == 2)  // 3xTF32, warps of 64 x 32, two teams per multiprocessor
    conv2d_nchw_tiled_with<ConvTilesTF32<128, 128, 64, 32, 2>, ConvTilesTF32<64, 256, 64, 32, 2>,
                           ConvTilesTF32<64, 64, 32, 32, 4>, Space>(
        Space(), "conv", in, w, out, g, init, bias, residual, relu);
  else if constexpr (V == 3)  // the same, one team per multiprocessor (no register cap)
    conv2d_nchw_tiled_with<ConvTilesTF32<128, 128, 64, 32, 1>, ConvTilesTF32<64, 256, 64, 32, 1>,
                           ConvTilesTF32<64, 64, 32, 32, 4>, Space>(
        Space(), "conv", in, w, out, g, init, bias, residual, relu);
  else if constexpr (V == 4)  // cp.async, two stages of 16 (no split weights)
    conv2d_nchw_tiled_with<ConvTilesAsync<128, 128, 64, 32, 16, 2, 2>,
                           ConvTilesAsync<64, 256, 64, 32, 16, 2, 2>,
                           ConvTilesAsync<64, 64, 32, 32, 16, 2, 4>, Space>(
        Space(), "conv", in, w, out, g, init, bias, residual, relu);
  else if constexpr (V == 5)  // cp.async, four stages of 8
    conv2d_nchw_tiled_with<ConvTilesAsync<128, 128, 64, 32, 8, 4, 2>,
                           ConvTilesAsync<64, 256, 64, 32, 8, 4, 2>,
                           ConvTilesAsync<64, 64, 32, 32, 8, 4, 4>, Space>(
        Space(), "conv", in, w, out, g, init, bias, residual, relu);
  else if constexpr (V == 6)  // weights split at initialize(), three stages
    conv2d_nchw_tiled_with<ConvTilesSplit<128, 128, 64, 32, 3, 2>,
                           ConvTilesSplit<64, 256, 64, 32, 3, 2>,
                           ConvTilesSplit<64, 64, 32, 32, 3, 4>, Space>(
        Space(), "conv", in, split, out, g, init, bias, residual, relu);
  else  // as shipped: weights split, two stages
    conv2d_nchw_tiled_with<ConvTilesSplit<128, 128, 64, 32, 2, 2>,
                           ConvTilesSplit<64, 256, 64, 32, 2, 2>,
                           ConvTilesSplit<64, 64, 32, 32, 2, 4>, Space>(
        Space(), "conv", in, split, out, g, init, bias, residual, relu);
}
#endif
