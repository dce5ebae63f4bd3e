// lapis-export launch scaffolding of the GPU convolution tiles, shipped into every exported
// package (src/lapis/): the grid of tiles and a team's place in it (TileGrid, TileOrigin), the
// launch by filter size (TileLaunch), the choice of tile shape and split sums
// (conv2d_nchw_tiled_with) and the passes around split sums. Used by the tile sets of
// conv_tiles.hpp (any device backend) and conv_tf32.hpp (CUDA).
#pragma once

#include <Kokkos_Core.hpp>

#include <cstdint>

#include "conv_common.hpp"

#if defined(__CUDACC__) || defined(__HIPCC__)
#define LAPIS_UNROLL _Pragma("unroll")
#define LAPIS_NO_UNROLL _Pragma("unroll 1")
#else
#define LAPIS_UNROLL
#define LAPIS_NO_UNROLL
#endif

namespace lapis {
namespace detail {

// What every GPU tile set computes before its launch: the output's extents, the filter's, and
// the tiles of BM output channels x BN pixels, each summing one of `splits` slices of k
// (whole steps of BK).
struct TileGrid {
  int channels_out, width_out, plane, pixels, height_in, width_in;
  int kernel_w, taps, depth, tiles_m, tiles, slice;
  int stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w;
  bool with_residual;  // a residual to add in the epilogue (not with split sums)
};

template <int BM, int BN, int BK, class Input, class Output, class Residual>
TileGrid tile_grid(const Input& in, const Output& out, const ConvGeometry g,
                   const Residual& residual, const int kernel_h, const int kernel_w,
                   const int splits) {
  TileGrid t;
  t.channels_out = out.extent(1);
  t.width_out = out.extent(3);
  t.plane = out.extent(2) * t.width_out;
  t.pixels = int(out.extent(0)) * t.plane;
  t.height_in = in.extent(2);
  t.width_in = in.extent(3);
  t.kernel_w = kernel_w;
  t.taps = kernel_h * kernel_w;
  t.depth = int(in.extent(1)) * t.taps;
  t.tiles_m = (t.channels_out + BM - 1) / BM;
  t.tiles = t.tiles_m * ((t.pixels + BN - 1) / BN);
  t.slice = (t.depth / splits + BK - 1) / BK * BK;
  t.stride_h = g.stride_h, t.stride_w = g.stride_w, t.pad_h = g.pad_h, t.pad_w = g.pad_w;
  t.dilation_h = g.dilation_h, t.dilation_w = g.dilation_w;
  t.with_residual = residual.data() != nullptr && splits == 1;
  return t;
}

// A team's tile (first output channel m0, first pixel p0), its slice of k, and the one input
// column (pixel) thread `rank` stages at every step: image n (0 past the last pixel, where
// `valid` is false), top-left input row and column of its filter window.
struct TileOrigin {
  int m0, p0, k_begin, k_end, n, ih0, iw0;
  bool valid;
};

template <int BM, int BN>
KOKKOS_FORCEINLINE_FUNCTION TileOrigin tile_origin(const TileGrid& t, const int league_rank,
                                                   const int rank) {
  TileOrigin o;
  const int tile = league_rank % t.tiles;
  o.m0 = (tile % t.tiles_m) * BM;
  o.p0 = (tile / t.tiles_m) * BN;
  o.k_begin = league_rank / t.tiles * t.slice;
  o.k_end = o.k_begin + t.slice < t.depth ? o.k_begin + t.slice : t.depth;
  const int p = o.p0 + rank % BN, q = p % t.plane;
  o.valid = p < t.pixels;
  o.n = o.valid ? p / t.plane : 0;
  o.ih0 = (q / t.width_out) * t.stride_h - t.pad_h;
  o.iw0 = (q % t.width_out) * t.stride_w - t.pad_w;
  return o;
}

// What the GPU tile sets share: the team count, and run(), which picks the run_taps<KH, KW>
// that knows the filter size at compile time (1x1, 3x3, 7x7; 0, 0: any other, read from the
// weights). `splits` > 1: each team sums one of that many slices of k and adds it atomically
// to `out`, which then already holds the initial value (the caller sets it and applies the
// ReLU). Tiles::filter_h / filter_w read the filter size off the weights Tiles takes.
template <class Tiles, int BM, int BN>
struct TileLaunch {
  static int64_t teams(int64_t channels_out, int64_t pixels) {
    return ((channels_out + BM - 1) / BM) * ((pixels + BN - 1) / BN);
  }

  template <class Weights>
  static int filter_h(const Weights& packed) {  // conv2d_nchw's packed layout
    return packed.extent(2);
  }
  template <class Weights>
  static int filter_w(const Weights& packed) {
    return packed.extent(3);
  }

  template <class ExecutionSpace, class Input, class Weights, class Bias, class Residual,
            class Output>
  static void run(const ExecutionSpace& space, const char* label,
                  const Input& in, const Weights& weights,
                  const Output& out, const ConvGeometry g, const ConvInit init,
                  const Bias& bias, const Residual& residual, const bool with_relu,
                  const int splits = 1) {
    const int kernel_h = Tiles::filter_h(weights), kernel_w = Tiles::filter_w(weights);
    if (kernel_h == 1 && kernel_w == 1)
      Tiles::template run_taps<1, 1, ExecutionSpace>(space, label, in, weights, out, g, init, bias,
                                                     residual, with_relu, splits);
    else if (kernel_h == 3 && kernel_w == 3)
      Tiles::template run_taps<3, 3, ExecutionSpace>(space, label, in, weights, out, g, init, bias,
                                                     residual, with_relu, splits);
    else if (kernel_h == 7 && kernel_w == 7)
      Tiles::template run_taps<7, 7, ExecutionSpace>(space, label, in, weights, out, g, init, bias,
                                                     residual, with_relu, splits);
    else
      Tiles::template run_taps<0, 0, ExecutionSpace>(space, label, in, weights, out, g, init, bias,
                                                     residual, with_relu, splits);
  }
};

// Every element of a 4-D output, for the passes around split sums.
template <class ExecutionSpace, class Output>
Kokkos::MDRangePolicy<ExecutionSpace,
                      Kokkos::Rank<4, Kokkos::Iterate::Right, Kokkos::Iterate::Right>,
                      Kokkos::IndexType<int64_t>>
every_output(const ExecutionSpace& space, const Output& out) {
  return {space, {0, 0, 0, 0},
          {int64_t(out.extent(0)), int64_t(out.extent(1)), int64_t(out.extent(2)),
           int64_t(out.extent(3))}};
}

// Before split sums are added atomically: out = init (+ residual). After them: the ReLU, if
// folded in.
template <class ExecutionSpace, class Bias, class Residual, class Output>
void conv_set_initial(const ExecutionSpace& space, const char* label,
                      const Output& out, const ConvInit init,
                      const Bias& bias, const Residual& residual) {
  using T = typename Output::non_const_value_type;
  const bool with_residual = residual.data() != nullptr;
  if (init == ConvInit::accumulate && !with_residual) return;
  Kokkos::parallel_for(
      label, every_output<ExecutionSpace>(space, out),
      KOKKOS_LAMBDA(const int64_t n, const int64_t oc, const int64_t oh, const int64_t ow) {
        T v = init == ConvInit::bias   ? T(bias(oc))
              : init == ConvInit::zero ? T(0)
                                       : out(n, oc, oh, ow);
        if (with_residual) v += T(residual(n, oc, oh, ow));
        out(n, oc, oh, ow) = v;
      });
}

template <class ExecutionSpace, class Output>
void conv_relu(const ExecutionSpace& space, const char* label, const Output& out) {
  Kokkos::parallel_for(
      label, every_output<ExecutionSpace>(space, out),
      KOKKOS_LAMBDA(const int64_t n, const int64_t oc, const int64_t oh, const int64_t ow) {
        out(n, oc, oh, ow) = relu(out(n, oc, oh, ow));
      });
}

// GPUs: the tile shape that wastes least of its tiles, weighing the larger tiles' fewer loads
// per multiply-add; then, when that leaves fewer tiles than two per multiprocessor of a large
// GPU, the sum over k split across teams as well (added atomically). `Large` tiles are
// 128 x 128, `Narrow` 64 x 256 (for 64 output channels), `Small` 64 x 64.
template <class Large, class Narrow, class Small, class ExecutionSpace, class Input,
          class PackedWeight, class Bias, class Residual, class Output>
void conv2d_nchw_tiled_with(const ExecutionSpace& space, const char* label,
                            const Input& in, const PackedWeight& packed,
                            const Output& out, const ConvGeometry g, const ConvInit init,
                            const Bias& bias, const Residual& residual, const bool with_relu) {
  constexpr int64_t enough_teams = 264;
  constexpr int64_t k_unit = 16;  // a split sum takes at least 8 (4 at batch 1) of these of k
  const int64_t channels_out = out.extent(1);
  const int64_t pixels = int64_t(out.extent(0)) * out.extent(2) * out.extent(3);
  const int64_t depth = int64_t(in.extent(1)) * packed.extent(2) * packed.extent(3);
  const auto score = [&](int64_t teams, int64_t bm, int64_t bn, double weight) {
    return weight * double(channels_out * pixels) / double(teams * bm * bn);
  };
  const int64_t teams_large = Large::teams(channels_out, pixels);
  const int64_t teams_narrow = Narrow::teams(channels_out, pixels);
  const int64_t teams_small = Small::teams(channels_out, pixels);
  const double score_wide = channels_out > 64 ? score(teams_large, 128, 128, 1.0)
                                              : score(teams_narrow, 64, 256, 1.0);
  bool use_small = score(teams_small, 64, 64, 0.6) > score_wide;
  const int64_t teams_wide = channels_out > 64 ? teams_large : teams_narrow;
  int splits = 1;
  if (!use_small && 4 * teams_wide >= enough_teams) {
    // A few more teams wanted: split k in two or four (the 7x7 and 14x14 layers of a batch).
    while (teams_wide * splits < enough_teams && depth / (2 * splits) >= 8 * k_unit)
      splits *= 2;
  } else {
    // Far too few (batch 1): small tiles, and up to half the teams wanted from split sums;
    // more splits cost more in atomic additions than they gain.
    use_small = true;
    while (teams_small * splits * 2 <= enough_teams && depth / (2 * splits) >= 4 * k_unit)
      splits *= 2;
  }
  if (splits > 1) conv_set_initial<ExecutionSpace>(space, label, out, init, bias, residual);
  const bool relu_here = with_relu && splits == 1;
  if (use_small)
    Small::template run<ExecutionSpace>(space, label, in, packed, out, g, init, bias, residual,
                                        relu_here, splits);
  else if (channels_out > 64)
    Large::template run<ExecutionSpace>(space, label, in, packed, out, g, init, bias, residual,
                                        relu_here, splits);
  else
    Narrow::template run<ExecutionSpace>(space, label, in, packed, out, g, init, bias, residual,
                                         relu_here, splits);
  if (with_relu && !relu_here) conv_relu<ExecutionSpace>(space, label, out);
}

}  // namespace detail
}  // namespace lapis
