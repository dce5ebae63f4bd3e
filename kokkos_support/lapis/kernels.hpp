// lapis-export tuned kernels, shipped into every exported package (src/lapis/).
// The generated code calls these in place of the loop nests of convolutions. Every kernel has a
// portable Kokkos version (any backend); on x86-64 host backends a register-tiled version,
// compiled for AVX2+FMA and for baseline x86-64 and picked at run time, takes over.
#pragma once

#include <Kokkos_Core.hpp>

#include <cstdint>
#include <type_traits>

#include "support.hpp"

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
}  // namespace detail
#endif

// Where a convolution's output starts from, and what is applied to it at the end (the ops the
// lowering folded into the call): out = epilogue(init + sum).
enum class ConvInit : int { accumulate, bias, zero };  // start from out, from bias[oc], or from 0

struct ConvGeometry {
  int64_t stride_h, stride_w, dilation_h, dilation_w;
  int64_t pad_h, pad_w;  // zero padding (top, left) read around an unpadded input
};

namespace detail {
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

template <class T>
KOKKOS_FORCEINLINE_FUNCTION T relu(T v) {
  return !(v <= T(0)) ? v : T(0);  // NaN stays NaN, as in the model
}

#if defined(__CUDACC__) || defined(__HIPCC__)
#define LAPIS_UNROLL _Pragma("unroll")
#else
#define LAPIS_UNROLL
#endif

// `N` consecutive values from `source` (16-byte aligned when N is a multiple of 4): 16-byte
// shared-memory loads on CUDA.
template <int N, class T>
KOKKOS_FORCEINLINE_FUNCTION void load_run(const T* source, T* target) {
  LAPIS_UNROLL
  for (int i = 0; i < N; ++i) target[i] = source[i];
}

#if defined(__CUDA_ARCH__)
template <>
KOKKOS_FORCEINLINE_FUNCTION void load_run<4, float>(const float* source, float* target) {
  const float4 v = *reinterpret_cast<const float4*>(source);
  target[0] = v.x; target[1] = v.y; target[2] = v.z; target[3] = v.w;
}
#endif

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
  static void run(const char* label, const Input& in, const Weights& weights,
                  const Output& out, const ConvGeometry g, const ConvInit init,
                  const Bias& bias, const Residual& residual, const bool with_relu,
                  const int splits = 1) {
    const int kernel_h = Tiles::filter_h(weights), kernel_w = Tiles::filter_w(weights);
    if (kernel_h == 1 && kernel_w == 1)
      Tiles::template run_taps<1, 1, ExecutionSpace>(label, in, weights, out, g, init, bias,
                                                     residual, with_relu, splits);
    else if (kernel_h == 3 && kernel_w == 3)
      Tiles::template run_taps<3, 3, ExecutionSpace>(label, in, weights, out, g, init, bias,
                                                     residual, with_relu, splits);
    else if (kernel_h == 7 && kernel_w == 7)
      Tiles::template run_taps<7, 7, ExecutionSpace>(label, in, weights, out, g, init, bias,
                                                     residual, with_relu, splits);
    else
      Tiles::template run_taps<0, 0, ExecutionSpace>(label, in, weights, out, g, init, bias,
                                                     residual, with_relu, splits);
  }
};

// GPUs, when there are enough outputs: the convolution as an implicit matrix product,
// out[oc][(n, oh, ow)] = sum over k = (ic, kh, kw) of weight[oc][k] * image[k][(n, oh, ow)].
// A team of (BM / TM) * (BN / TN) threads computes a BM x BN tile of it, TM x TN outputs per
// thread in registers. The sum runs in steps of BK: each step's weights (BK x BM) and gathered,
// zero-padded input (BK x BN) are staged in team scratch (shared) memory, two buffers deep,
// the next step's loads in flight while this step computes. A thread's rows and columns come
// in runs of 4, BM / 2 and BN / 2 apart when it has 8 (16-byte loads, no bank conflicts).
template <int BM, int BN, int TM, int TN>
struct ConvTiles : TileLaunch<ConvTiles<BM, BN, TM, TN>, BM, BN> {
#if defined(LAPIS_CONV_TILE_K)  // tuning override
  static constexpr int BK = LAPIS_CONV_TILE_K;
#else
  static constexpr int BK = 16;
#endif
  static constexpr int threads = (BM / TM) * (BN / TN);
  static constexpr int a_staged = BK * BM / threads, b_staged = BK * BN / threads;
  static_assert(BM % conv_channel_block == 0 && TM % 4 == 0 && TN % 4 == 0, "tile shape");
  static_assert(a_staged * threads == BK * BM && b_staged * threads == BK * BN &&
                    threads % BN == 0,
                "every thread stages the same input column at every step");

  KOKKOS_FORCEINLINE_FUNCTION static int row(int tm, int i) {
    return (i / 4) * (BM / (TM / 4)) + tm * 4 + i % 4;
  }
  KOKKOS_FORCEINLINE_FUNCTION static int column(int tn, int j) {
    return (j / 4) * (BN / (TN / 4)) + tn * 4 + j % 4;
  }

  // KH, KW: the filter size when known at compile time (index arithmetic by constants), else 0.
  template <int KH, int KW, class ExecutionSpace, class Input, class PackedWeight, class Bias,
            class Residual, class Output>
  static void run_taps(const char* label, const Input& in, const PackedWeight& packed,
                       const Output& out, const ConvGeometry g, const ConvInit init,
                       const Bias& bias, const Residual& residual, const bool with_relu,
                       const int splits) {
    using T = typename Output::non_const_value_type;
    // Launch bounds: registers for two teams of `threads` threads per multiprocessor, so that
    // one computes while the other waits at a barrier.
    using policy = Kokkos::TeamPolicy<ExecutionSpace, Kokkos::LaunchBounds<threads, 2>>;
    using member = typename policy::member_type;
    const int kernel_h = KH ? KH : int(packed.extent(2));
    const int kernel_w = KW ? KW : int(packed.extent(3));
    const TileGrid grid = tile_grid<BM, BN, BK>(in, out, g, residual, kernel_h, kernel_w, splits);
    const int taps = KH && KW ? KH * KW : grid.taps;  // constant when KH and KW are
    const int blocks = packed.extent(0);
    const T* weights = packed.data();
    const size_t scratch = 2 * size_t(BK) * (BM + BN) * sizeof(T);
    Kokkos::parallel_for(
        label,
        policy(grid.tiles * splits, threads).set_scratch_size(0, Kokkos::PerTeam(scratch)),
        KOKKOS_LAMBDA(const member& team) {
          T* const a_tiles = static_cast<T*>(team.team_scratch(0).get_shmem_aligned(scratch, 16));
          T* const b_tiles = a_tiles + 2 * BK * BM;
          const int rank = team.team_rank();
          const TileOrigin at = tile_origin<BM, BN>(grid, team.league_rank(), rank);
          T a_next[a_staged], b_next[b_staged];
          const auto fetch = [&](const int k0) {
            LAPIS_UNROLL
            for (int r = 0; r < a_staged; ++r) {  // BM / 8 channel blocks x BK taps x 8
              const int e = rank + r * threads, o = e % conv_channel_block;
              const int k = k0 + (e / conv_channel_block) % BK;
              const int block = at.m0 / conv_channel_block + e / (conv_channel_block * BK);
              a_next[r] = block < blocks && k < at.k_end
                              ? weights[(int64_t(block) * grid.depth + k) * conv_channel_block + o]
                              : T(0);
            }
            LAPIS_UNROLL
            for (int r = 0; r < b_staged; ++r) {  // BK taps x BN pixels
              const int k = k0 + rank / BN + r * (threads / BN);
              const int ic = k / taps, tap = k % taps;
              const int ih = at.ih0 + (tap / kernel_w) * grid.dilation_h;
              const int iw = at.iw0 + (tap % kernel_w) * grid.dilation_w;
              b_next[r] = at.valid && k < at.k_end && ih >= 0 && ih < grid.height_in && iw >= 0 &&
                                  iw < grid.width_in
                              ? T(in(at.n, ic, ih, iw))
                              : T(0);
            }
          };
          const auto stash = [&](const int buffer) {
            T* a_tile = a_tiles + buffer * BK * BM;
            T* b_tile = b_tiles + buffer * BK * BN;
            LAPIS_UNROLL
            for (int r = 0; r < a_staged; ++r) {
              const int e = rank + r * threads;
              a_tile[(e / conv_channel_block) % BK * BM +
                     e / (conv_channel_block * BK) * conv_channel_block +
                     e % conv_channel_block] = a_next[r];
            }
            LAPIS_UNROLL
            for (int r = 0; r < b_staged; ++r)
              b_tile[(rank / BN + r * (threads / BN)) * BN + rank % BN] = b_next[r];
          };
          const int tm = rank / (BN / TN), tn = rank % (BN / TN);
          T acc[TM][TN];
          LAPIS_UNROLL
          for (int i = 0; i < TM; ++i)
            LAPIS_UNROLL
            for (int j = 0; j < TN; ++j) acc[i][j] = T(0);
          fetch(at.k_begin);
          stash(0);
          team.team_barrier();
          for (int k0 = at.k_begin, buffer = 0; k0 < at.k_end; k0 += BK, buffer ^= 1) {
            const bool more = k0 + BK < at.k_end;
            if (more) fetch(k0 + BK);
            const T* a_tile = a_tiles + buffer * BK * BM;
            const T* b_tile = b_tiles + buffer * BK * BN;
            LAPIS_UNROLL
            for (int kk = 0; kk < BK; ++kk) {
              T a[TM], b[TN];
              LAPIS_UNROLL
              for (int i = 0; i < TM; i += 4) load_run<4>(a_tile + kk * BM + row(tm, i), a + i);
              LAPIS_UNROLL
              for (int j = 0; j < TN; j += 4)
                load_run<4>(b_tile + kk * BN + column(tn, j), b + j);
              LAPIS_UNROLL
              for (int i = 0; i < TM; ++i)
                LAPIS_UNROLL
                for (int j = 0; j < TN; ++j) acc[i][j] += a[i] * b[j];
            }
            if (more) stash(buffer ^ 1);  // read by nobody until after the barrier
            team.team_barrier();
          }
          LAPIS_UNROLL
          for (int i = 0; i < TM; ++i) {
            const int oc = at.m0 + row(tm, i);
            if (oc >= grid.channels_out) continue;
            const T start = init == ConvInit::bias ? T(bias(oc)) : T(0);
            LAPIS_UNROLL
            for (int j = 0; j < TN; ++j) {
              const int p = at.p0 + column(tn, j);
              if (p >= grid.pixels) continue;
              const int n = p / grid.plane, q = p % grid.plane;
              T& target = out(n, oc, q / grid.width_out, q % grid.width_out);
              if (splits > 1) {
                Kokkos::atomic_add(&target, acc[i][j]);
                continue;
              }
              T v = acc[i][j] + (init == ConvInit::accumulate ? target : start);
              if (grid.with_residual)
                v += T(residual(n, oc, q / grid.width_out, q % grid.width_out));
              target = with_relu ? relu(v) : v;
            }
          }
        });
  }
};

#if defined(KOKKOS_ENABLE_CUDA)
// CUDA: the same implicit matrix product on the tensor cores, at float32 accuracy ("3xTF32").
// Each float32 operand x is split into big = tf32(x) (10 mantissa bits, rounded to nearest)
// and small = tf32(x - big); a product is big_a * big_b + big_a * small_b + small_a * big_b,
// three `mma.sync m16n8k8` tf32 products accumulated in float32 (the small * small term, about
// 2^-22 of the product, is left out). The result carries about float32's rounding error.
// A warp owns a WM x WN block of the team's BM x BN tile: (WM / 16) x (WN / 8) mma tiles of
// 16 x 8 accumulators, 4 a thread. The staged tiles are k-major like ConvTiles', each row
// padded by 8 floats, so that a fragment's 32 reads (4 k rows x 8 columns) hit 32 banks.
// Without sm_80 (a host compile pass, an older GPU) the same fragments are summed with FMAs.
namespace tf32 {
KOKKOS_FORCEINLINE_FUNCTION void split(const float x, uint32_t& big, uint32_t& small) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm("cvt.rna.tf32.f32 %0, %1;" : "=r"(big) : "f"(x));
  const float rest = x - __uint_as_float(big);
  asm("cvt.rna.tf32.f32 %0, %1;" : "=r"(small) : "f"(rest));
#else
  (void)x;
  big = small = 0;
#endif
}

// d += a * b for one 16 x 8 x 8 tile, tf32 inputs, float32 accumulators.
KOKKOS_FORCEINLINE_FUNCTION void mma(float (&d)[4], const uint32_t (&a)[4],
                                     const uint32_t (&b)[2]) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm("mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 "
      "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
#else
  (void)d, (void)a, (void)b;
#endif
}

// d += a * b to float32 accuracy from the operands' parts: small * big, big * small, then
// big * big (the small * small term left out).
KOKKOS_FORCEINLINE_FUNCTION void mma3(float (&d)[4], const uint32_t (&a_big)[4],
                                      const uint32_t (&a_small)[4], const uint32_t (&b_big)[2],
                                      const uint32_t (&b_small)[2]) {
  mma(d, a_small, b_big);
  mma(d, a_big, b_small);
  mma(d, a_big, b_big);
}
}  // namespace tf32

template <int BM, int BN, int WM, int WN, int MinTeams>
struct ConvTilesTF32 : TileLaunch<ConvTilesTF32<BM, BN, WM, WN, MinTeams>, BM, BN> {
  static constexpr int BK = 16;
  static constexpr int warps_m = BM / WM, warps_n = BN / WN;
  static constexpr int threads = 32 * warps_m * warps_n;
  static constexpr int MT = WM / 16, NT = WN / 8;   // mma tiles of a warp
  static constexpr int LDA = BM + 8, LDB = BN + 8;  // padded rows of the staged tiles
  static constexpr int a_staged = BK * BM / threads, b_staged = BK * BN / threads;
  static_assert(BM % WM == 0 && BN % WN == 0 && WM % 16 == 0 && WN % 8 == 0, "tile shape");
  static_assert(BM % conv_channel_block == 0 && (32 * BK) % conv_channel_block == 0, "blocks");
  static_assert(a_staged * threads == BK * BM && b_staged * threads == BK * BN &&
                    threads % BN == 0,
                "every thread stages the same input column at every step");

  // One k8 slice of the staged tiles into the warp's accumulators.
  KOKKOS_FORCEINLINE_FUNCTION static void step(const float* a, const float* b, const int wm0,
                                               const int wn0, const int lane,
                                               float (&acc)[MT][NT][4]) {
    const int gr = lane / 4, tk = lane % 4;  // the fragment's row (column) group and k
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    uint32_t b_big[NT][2], b_small[NT][2];
    LAPIS_UNROLL
    for (int nt = 0; nt < NT; ++nt)
      LAPIS_UNROLL
      for (int h = 0; h < 2; ++h)
        tf32::split(b[(tk + 4 * h) * LDB + wn0 + nt * 8 + gr], b_big[nt][h], b_small[nt][h]);
    LAPIS_UNROLL
    for (int mt = 0; mt < MT; ++mt) {
      uint32_t a_big[4], a_small[4];
      LAPIS_UNROLL
      for (int r = 0; r < 4; ++r)  // rows gr, gr + 8 at k = tk, then at k = tk + 4
        tf32::split(a[(tk + 4 * (r / 2)) * LDA + wm0 + mt * 16 + gr + 8 * (r % 2)], a_big[r],
                    a_small[r]);
      LAPIS_UNROLL
      for (int nt = 0; nt < NT; ++nt)
        tf32::mma3(acc[mt][nt], a_big, a_small, b_big[nt], b_small[nt]);
    }
#else
    LAPIS_UNROLL
    for (int mt = 0; mt < MT; ++mt)
      LAPIS_UNROLL
      for (int nt = 0; nt < NT; ++nt)
        LAPIS_UNROLL
        for (int i = 0; i < 4; ++i)
          for (int k = 0; k < 8; ++k)
            acc[mt][nt][i] += a[k * LDA + wm0 + mt * 16 + gr + 8 * (i / 2)] *
                              b[k * LDB + wn0 + nt * 8 + 2 * tk + i % 2];
#endif
  }

  // The epilogue: accumulator i of tile (mt, nt) is output channel m0 + wm0 + mt * 16 + gr +
  // 8 * (i / 2) at pixel p0 + wn0 + nt * 8 + 2 * tk + i % 2 (gr = lane / 4, tk = lane % 4);
  // start value, residual and ReLU applied here, or the sum added atomically (split sums).
  template <class Output, class Bias, class Residual>
  KOKKOS_FORCEINLINE_FUNCTION static void store(const Output& out, const Bias& bias,
                                                const Residual& residual, const ConvInit init,
                                                const bool with_relu, const int splits,
                                                const TileGrid& grid, const TileOrigin& at,
                                                const int wm0, const int wn0, const int lane,
                                                const float (&acc)[MT][NT][4]) {
    using T = float;
    const int m0 = at.m0, p0 = at.p0, pixels = grid.pixels, plane = grid.plane;
    const int width_out = grid.width_out, channels_out = grid.channels_out;
    const bool with_residual = grid.with_residual;
    int column_n[NT][2], column_h[NT][2], column_w[NT][2];
    LAPIS_UNROLL
    for (int nt = 0; nt < NT; ++nt)
      LAPIS_UNROLL
      for (int c = 0; c < 2; ++c) {
        const int p = p0 + wn0 + nt * 8 + 2 * (lane % 4) + c;
        const int q = p % plane;
        column_n[nt][c] = p < pixels ? p / plane : -1;
        column_h[nt][c] = q / width_out;
        column_w[nt][c] = q % width_out;
      }
    LAPIS_UNROLL
    for (int mt = 0; mt < MT; ++mt)
      LAPIS_UNROLL
      for (int i = 0; i < 4; i += 2) {
        const int oc = m0 + wm0 + mt * 16 + lane / 4 + 8 * (i / 2);
        if (oc >= channels_out) continue;
        const T start = init == ConvInit::bias ? T(bias(oc)) : T(0);
        LAPIS_UNROLL
        for (int nt = 0; nt < NT; ++nt)
          LAPIS_UNROLL
          for (int c = 0; c < 2; ++c) {
            const int n = column_n[nt][c];
            if (n < 0) continue;
            const int oh = column_h[nt][c], ow = column_w[nt][c];
            T& target = out(n, oc, oh, ow);
            const T sum = acc[mt][nt][i + c];
            if (splits > 1) {
              Kokkos::atomic_add(&target, sum);
              continue;
            }
            T v = sum + (init == ConvInit::accumulate ? target : start);
            if (with_residual) v += T(residual(n, oc, oh, ow));
            target = with_relu ? relu(v) : v;
          }
      }
  }

  template <int KH, int KW, class ExecutionSpace, class Input, class PackedWeight, class Bias,
            class Residual, class Output>
  static void run_taps(const char* label, const Input& in, const PackedWeight& packed,
                       const Output& out, const ConvGeometry g, const ConvInit init,
                       const Bias& bias, const Residual& residual, const bool with_relu,
                       const int splits) {
    using T = float;
    using policy = Kokkos::TeamPolicy<ExecutionSpace, Kokkos::LaunchBounds<threads, MinTeams>>;
    using member = typename policy::member_type;
    const int kernel_h = KH ? KH : int(packed.extent(2));
    const int kernel_w = KW ? KW : int(packed.extent(3));
    const TileGrid grid = tile_grid<BM, BN, BK>(in, out, g, residual, kernel_h, kernel_w, splits);
    const int taps = KH && KW ? KH * KW : grid.taps;  // constant when KH and KW are
    const int blocks = packed.extent(0);
    const T* weights = packed.data();
    const size_t scratch = 2 * size_t(BK) * (LDA + LDB) * sizeof(T);
    Kokkos::parallel_for(
        label,
        policy(grid.tiles * splits, threads).set_scratch_size(0, Kokkos::PerTeam(scratch)),
        KOKKOS_LAMBDA(const member& team) {
          T* const a_tiles = static_cast<T*>(team.team_scratch(0).get_shmem_aligned(scratch, 16));
          T* const b_tiles = a_tiles + 2 * BK * LDA;
          const int rank = team.team_rank();
          const TileOrigin at = tile_origin<BM, BN>(grid, team.league_rank(), rank);
          T a_next[a_staged], b_next[b_staged];
          const auto fetch = [&](const int k0) {
            LAPIS_UNROLL
            for (int r = 0; r < a_staged; ++r) {  // BM / 8 channel blocks x BK taps x 8
              const int e = rank + r * threads, o = e % conv_channel_block;
              const int k = k0 + (e / conv_channel_block) % BK;
              const int block = at.m0 / conv_channel_block + e / (conv_channel_block * BK);
              a_next[r] = block < blocks && k < at.k_end
                              ? weights[(int64_t(block) * grid.depth + k) * conv_channel_block + o]
                              : T(0);
            }
            LAPIS_UNROLL
            for (int r = 0; r < b_staged; ++r) {  // BK taps x BN pixels
              const int k = k0 + rank / BN + r * (threads / BN);
              const int ic = k / taps, tap = k % taps;
              const int ih = at.ih0 + (tap / kernel_w) * grid.dilation_h;
              const int iw = at.iw0 + (tap % kernel_w) * grid.dilation_w;
              b_next[r] = at.valid && k < at.k_end && ih >= 0 && ih < grid.height_in && iw >= 0 &&
                                  iw < grid.width_in
                              ? T(in(at.n, ic, ih, iw))
                              : T(0);
            }
          };
          const auto stash = [&](const int buffer) {
            T* a_tile = a_tiles + buffer * BK * LDA;
            T* b_tile = b_tiles + buffer * BK * LDB;
            LAPIS_UNROLL
            for (int r = 0; r < a_staged; ++r) {
              const int e = rank + r * threads;
              a_tile[(e / conv_channel_block) % BK * LDA +
                     e / (conv_channel_block * BK) * conv_channel_block +
                     e % conv_channel_block] = a_next[r];
            }
            LAPIS_UNROLL
            for (int r = 0; r < b_staged; ++r)
              b_tile[(rank / BN + r * (threads / BN)) * LDB + rank % BN] = b_next[r];
          };
          const int lane = rank % 32, warp = rank / 32;
          const int wm0 = (warp % warps_m) * WM, wn0 = (warp / warps_m) * WN;
          T acc[MT][NT][4];
          LAPIS_UNROLL
          for (int mt = 0; mt < MT; ++mt)
            LAPIS_UNROLL
            for (int nt = 0; nt < NT; ++nt)
              LAPIS_UNROLL
              for (int i = 0; i < 4; ++i) acc[mt][nt][i] = T(0);
          fetch(at.k_begin);
          stash(0);
          team.team_barrier();
          for (int k0 = at.k_begin, buffer = 0; k0 < at.k_end; k0 += BK, buffer ^= 1) {
            const bool more = k0 + BK < at.k_end;
            if (more) fetch(k0 + BK);
            const T* a_tile = a_tiles + buffer * BK * LDA;
            const T* b_tile = b_tiles + buffer * BK * LDB;
            LAPIS_UNROLL
            for (int kk = 0; kk < BK; kk += 8)
              step(a_tile + kk * LDA, b_tile + kk * LDB, wm0, wn0, lane, acc);
            if (more) stash(buffer ^ 1);  // read by nobody until after the barrier
            team.team_barrier();
          }
          store(out, bias, residual, init, with_relu, splits, grid, at, wm0, wn0, lane, acc);
        });
  }
};

// The same tiles with the staging done by the copy engine of sm_80 and later (`cp.async`):
// global memory is copied straight into shared memory, `Stages` steps deep, the weights 16
// bytes at a time, the gathered input 4 bytes at a time with zero fill outside the image.
// No registers hold staged values, and several steps' loads are in flight while one computes.
namespace tf32 {
KOKKOS_FORCEINLINE_FUNCTION void copy16(float* shared, const float* global, const bool valid) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  const unsigned address = static_cast<unsigned>(__cvta_generic_to_shared(shared));
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(address), "l"(global),
               "r"(valid ? 16 : 0));
#else
  for (int i = 0; i < 4; ++i) shared[i] = valid ? global[i] : 0.0f;
#endif
}
KOKKOS_FORCEINLINE_FUNCTION void copy4(float* shared, const float* global, const bool valid) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  const unsigned address = static_cast<unsigned>(__cvta_generic_to_shared(shared));
  asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" ::"r"(address), "l"(global),
               "r"(valid ? 4 : 0));
#else
  *shared = valid ? *global : 0.0f;
#endif
}
KOKKOS_FORCEINLINE_FUNCTION void commit() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile("cp.async.commit_group;\n" ::);
#endif
}
template <int Pending>
KOKKOS_FORCEINLINE_FUNCTION void wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile("cp.async.wait_group %0;\n" ::"n"(Pending));
#endif
}
}  // namespace tf32

template <int BM, int BN, int WM, int WN, int KStep, int Stages, int MinTeams>
struct ConvTilesAsync
    : TileLaunch<ConvTilesAsync<BM, BN, WM, WN, KStep, Stages, MinTeams>, BM, BN> {
  static constexpr int BK = KStep;
  static constexpr int warps_m = BM / WM, warps_n = BN / WN;
  static constexpr int threads = 32 * warps_m * warps_n;
  static constexpr int MT = WM / 16, NT = WN / 8;
  static constexpr int LDA = BM + 8, LDB = BN + 8;
  static constexpr int a_total = BM * BK / 4;  // 16-byte weight copies a step
  static constexpr int a_chunks = (a_total + threads - 1) / threads;
  static constexpr int b_staged = BK * BN / threads;      // 4-byte input copies a thread
  static_assert(BM % WM == 0 && BN % WN == 0 && WM % 16 == 0 && WN % 8 == 0 && BK % 8 == 0,
                "tile shape");
  static_assert((a_total % threads == 0 || a_chunks == 1) && b_staged * threads == BK * BN &&
                    threads % BN == 0,
                "every thread stages the same input column at every step");
  using Tiles = ConvTilesTF32<BM, BN, WM, WN, MinTeams>;

  template <int KH, int KW, class ExecutionSpace, class Input, class PackedWeight, class Bias,
            class Residual, class Output>
  static void run_taps(const char* label, const Input& in, const PackedWeight& packed,
                       const Output& out, const ConvGeometry g, const ConvInit init,
                       const Bias& bias, const Residual& residual, const bool with_relu,
                       const int splits) {
    using T = float;
    using policy = Kokkos::TeamPolicy<ExecutionSpace, Kokkos::LaunchBounds<threads, MinTeams>>;
    using member = typename policy::member_type;
    const int kernel_h = KH ? KH : int(packed.extent(2));
    const int kernel_w = KW ? KW : int(packed.extent(3));
    const TileGrid grid = tile_grid<BM, BN, BK>(in, out, g, residual, kernel_h, kernel_w, splits);
    const int taps = KH && KW ? KH * KW : grid.taps;  // constant when KH and KW are
    const int blocks = packed.extent(0);
    const T* weights = packed.data();
    const T* image = in.data();
    const size_t scratch = size_t(Stages) * BK * (LDA + LDB) * sizeof(T);
    Kokkos::parallel_for(
        label,
        policy(grid.tiles * splits, threads).set_scratch_size(0, Kokkos::PerTeam(scratch)),
        KOKKOS_LAMBDA(const member& team) {
          T* const a_tiles = static_cast<T*>(team.team_scratch(0).get_shmem_aligned(scratch, 16));
          T* const b_tiles = a_tiles + Stages * BK * LDA;
          const int rank = team.team_rank();
          const TileOrigin at = tile_origin<BM, BN>(grid, team.league_rank(), rank);
          // Step k0's weights and input into stage `buffer` (zeros past k_end and the image).
          const auto load = [&](const int k0, const int buffer) {
            T* a_tile = a_tiles + buffer * BK * LDA;
            T* b_tile = b_tiles + buffer * BK * LDB;
            LAPIS_UNROLL
            for (int r = 0; r < a_chunks; ++r) {  // BM / 8 blocks x BK taps x two halves
              const int c = rank + r * threads;
              if (a_total % threads != 0 && c >= a_total) break;
              const int block = c / (2 * BK), k = (c / 2) % BK, half = c % 2;
              const int b = at.m0 / conv_channel_block + block;
              const bool valid = b < blocks && k0 + k < at.k_end;
              tf32::copy16(a_tile + k * LDA + block * conv_channel_block + half * 4,
                           valid ? weights +
                                       (int64_t(b) * grid.depth + k0 + k) * conv_channel_block +
                                       half * 4
                                 : weights,
                           valid);
            }
            LAPIS_UNROLL
            for (int r = 0; r < b_staged; ++r) {  // BK taps x BN pixels
              const int kr = rank / BN + r * (threads / BN), k = k0 + kr;
              const int ic = k / taps, tap = k % taps;
              const int ih = at.ih0 + (tap / kernel_w) * grid.dilation_h;
              const int iw = at.iw0 + (tap % kernel_w) * grid.dilation_w;
              const bool valid = at.valid && k < at.k_end && ih >= 0 && ih < grid.height_in &&
                                 iw >= 0 && iw < grid.width_in;
              tf32::copy4(b_tile + kr * LDB + rank % BN,
                          valid ? &in(at.n, ic, ih, iw) : image, valid);
            }
          };
          const int lane = rank % 32, warp = rank / 32;
          const int wm0 = (warp % warps_m) * WM, wn0 = (warp / warps_m) * WN;
          T acc[MT][NT][4];
          LAPIS_UNROLL
          for (int mt = 0; mt < MT; ++mt)
            LAPIS_UNROLL
            for (int nt = 0; nt < NT; ++nt)
              LAPIS_UNROLL
              for (int i = 0; i < 4; ++i) acc[mt][nt][i] = T(0);
          LAPIS_UNROLL
          for (int s = 0; s < Stages - 1; ++s) {
            if (at.k_begin + s * BK < at.k_end) load(at.k_begin + s * BK, s);
            tf32::commit();
          }
          for (int k0 = at.k_begin, buffer = 0; k0 < at.k_end; k0 += BK) {
            tf32::wait<Stages - 2>();  // this step's copies (this thread's) have landed
            team.team_barrier();       // everyone's; and everyone is done with step - 1
            const int ahead = k0 + (Stages - 1) * BK;
            if (ahead < at.k_end) load(ahead, (buffer + Stages - 1) % Stages);
            tf32::commit();
            const T* a_tile = a_tiles + buffer * BK * LDA;
            const T* b_tile = b_tiles + buffer * BK * LDB;
            LAPIS_UNROLL
            for (int kk = 0; kk < BK; kk += 8)
              Tiles::step(a_tile + kk * LDA, b_tile + kk * LDB, wm0, wn0, lane, acc);
            buffer = buffer + 1 == Stages ? 0 : buffer + 1;
          }
          tf32::wait<0>();
          Tiles::store(out, bias, residual, init, with_relu, splits, grid, at, wm0, wn0, lane, acc);
        });
  }
};
// The 3xTF32 tiles for weights split once, at initialize(), by split_tf32_weight (layers with a
// multiple of 8 input channels). Two changes of order take the index arithmetic out of the
// inner loop: k runs tap-major (k = tap * channels_in + ic), so each step of 8 is one filter
// tap of 8 consecutive channels and a thread's 4-byte input copies are one pointer apart; and
// the weights come as the mma fragments themselves, (big, small) per lane, so a warp reads a
// 16 x 8 fragment with two 16-byte loads and splits nothing. The input is split in the tile:
// big = x rounded to tf32 (half an ulp added, then truncated), small = x - big as it is (the
// mma reads its top 19 bits), the conversion of CUTLASS's fast 3xTF32.
namespace tf32 {
KOKKOS_FORCEINLINE_FUNCTION void split_fast(const float x, uint32_t& big, uint32_t& small) {
#if defined(__CUDA_ARCH__)
  big = (__float_as_uint(x) + 0x1000u) & 0xffffe000u;
  small = __float_as_uint(x - __uint_as_float(big));
#else
  (void)x;
  big = small = 0;
#endif
}
}  // namespace tf32

template <int BM, int BN, int WM, int WN, int Stages, int MinTeams>
struct ConvTilesSplit : TileLaunch<ConvTilesSplit<BM, BN, WM, WN, Stages, MinTeams>, BM, BN> {
  static constexpr int BK = 8;  // one tap of 8 input channels a step
  static constexpr int warps_m = BM / WM, warps_n = BN / WN;
  static constexpr int threads = 32 * warps_m * warps_n;
  static constexpr int MT = WM / 16, NT = WN / 8;
  static constexpr int LDB = BN + 8;
  static constexpr int fragment = 256;                // floats of one 16 x 8 weight fragment
  static constexpr int a_floats = BM / 16 * fragment;  // a step's weights
  static constexpr int a_total = a_floats / 4;         // 16-byte copies a step
  static constexpr int a_chunks = (a_total + threads - 1) / threads;
  static constexpr int b_staged = BK * BN / threads;   // 4-byte input copies a thread
  static constexpr int rows_apart = threads / BN;      // k rows between a thread's copies
  static_assert(BM % WM == 0 && BN % WN == 0 && WM % 16 == 0 && WN % 8 == 0, "tile shape");
  static_assert((a_total % threads == 0 || a_chunks == 1) && b_staged * threads == BK * BN &&
                    threads % BN == 0,
                "every thread stages the same input column at every step");
  using Tiles = ConvTilesTF32<BM, BN, WM, WN, MinTeams>;

  // `split`: [channels_out / 16][kernel_h][kernel_w][channels_in / 8][256] (split_tf32_weight).
  template <class Weights>
  static int filter_h(const Weights& split) {
    return split.extent(1);
  }
  template <class Weights>
  static int filter_w(const Weights& split) {
    return split.extent(2);
  }

  // One k8 step of the staged tiles into the warp's accumulators.
  KOKKOS_FORCEINLINE_FUNCTION static void step(const float* a, const float* b, const int wm0,
                                               const int wn0, const int lane,
                                               float (&acc)[MT][NT][4]) {
    const int gr = lane / 4, tk = lane % 4;
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    uint32_t b_big[NT][2], b_small[NT][2];
    LAPIS_UNROLL
    for (int nt = 0; nt < NT; ++nt)
      LAPIS_UNROLL
      for (int h = 0; h < 2; ++h)
        tf32::split_fast(b[(tk + 4 * h) * LDB + wn0 + nt * 8 + gr], b_big[nt][h],
                         b_small[nt][h]);
    LAPIS_UNROLL
    for (int mt = 0; mt < MT; ++mt) {
      const float* f = a + (wm0 / 16 + mt) * fragment + lane * 4;
      const float4 big = *reinterpret_cast<const float4*>(f);
      const float4 small = *reinterpret_cast<const float4*>(f + fragment / 2);
      const uint32_t a_big[4] = {__float_as_uint(big.x), __float_as_uint(big.y),
                                 __float_as_uint(big.z), __float_as_uint(big.w)};
      const uint32_t a_small[4] = {__float_as_uint(small.x), __float_as_uint(small.y),
                                   __float_as_uint(small.z), __float_as_uint(small.w)};
      LAPIS_UNROLL
      for (int nt = 0; nt < NT; ++nt)
        tf32::mma3(acc[mt][nt], a_big, a_small, b_big[nt], b_small[nt]);
    }
#else
    // Weight (row m, k) of a fragment: lane (m % 8) * 4 + k % 4, element m % 16 / 8 + k / 4 * 2.
    LAPIS_UNROLL
    for (int mt = 0; mt < MT; ++mt)
      LAPIS_UNROLL
      for (int nt = 0; nt < NT; ++nt)
        LAPIS_UNROLL
        for (int i = 0; i < 4; ++i)
          for (int k = 0; k < 8; ++k) {
            const float* f = a + (wm0 / 16 + mt) * fragment + (gr * 4 + k % 4) * 4 + i / 2 +
                             k / 4 * 2;
            acc[mt][nt][i] += (f[0] + f[fragment / 2]) * b[k * LDB + wn0 + nt * 8 + 2 * tk + i % 2];
          }
#endif
  }

  template <int KH, int KW, class ExecutionSpace, class Input, class SplitWeight, class Bias,
            class Residual, class Output>
  static void run_taps(const char* label, const Input& in, const SplitWeight& split,
                       const Output& out, const ConvGeometry g, const ConvInit init,
                       const Bias& bias, const Residual& residual, const bool with_relu,
                       const int splits) {
    using T = float;
    using policy = Kokkos::TeamPolicy<ExecutionSpace, Kokkos::LaunchBounds<threads, MinTeams>>;
    using member = typename policy::member_type;
    const int kernel_h = KH ? KH : int(split.extent(1));
    const int kernel_w = KW ? KW : int(split.extent(2));
    const TileGrid grid = tile_grid<BM, BN, BK>(in, out, g, residual, kernel_h, kernel_w, splits);
    const int channels_in = in.extent(1), groups = grid.depth / BK;
    const int fragments_m = split.extent(0);
    const int64_t channel_stride = in.stride(1);
    const T* weights = split.data();
    const T* image = in.data();
    const size_t scratch = size_t(Stages) * (a_floats + BK * LDB) * sizeof(T);
    Kokkos::parallel_for(
        label,
        policy(grid.tiles * splits, threads).set_scratch_size(0, Kokkos::PerTeam(scratch)),
        KOKKOS_LAMBDA(const member& team) {
          T* const a_tiles = static_cast<T*>(team.team_scratch(0).get_shmem_aligned(scratch, 16));
          T* const b_tiles = a_tiles + Stages * a_floats;
          const int rank = team.team_rank();
          const TileOrigin at = tile_origin<BM, BN>(grid, team.league_rank(), rank);
          const int row0 = rank / BN;  // the first k row this thread stages
          // Step k0's weights and input into stage `buffer` (zeros outside the image).
          const auto load = [&](const int k0, const int buffer) {
            T* a_tile = a_tiles + buffer * a_floats;
            T* b_tile = b_tiles + buffer * BK * LDB;
            LAPIS_UNROLL
            for (int r = 0; r < a_chunks; ++r) {  // BM / 16 fragments of 64 copies
              const int c = rank + r * threads;
              if (a_total % threads != 0 && c >= a_total) break;
              const int m = at.m0 / 16 + c / (fragment / 4);
              const bool valid = m < fragments_m;
              tf32::copy16(a_tile + c * 4,
                           valid ? weights + (int64_t(m) * groups + k0 / BK) * fragment +
                                       c % (fragment / 4) * 4
                                 : weights,
                           valid);
            }
            const int tap = k0 / channels_in, ic0 = k0 - tap * channels_in;
            const int kh = tap / kernel_w, kw = tap - kh * kernel_w;
            const int ih = at.ih0 + kh * grid.dilation_h, iw = at.iw0 + kw * grid.dilation_w;
            const bool valid =
                at.valid && ih >= 0 && ih < grid.height_in && iw >= 0 && iw < grid.width_in;
            const T* source = valid ? &in(at.n, ic0 + row0, ih, iw) : image;
            const int64_t apart = valid ? rows_apart * channel_stride : 0;
            LAPIS_UNROLL
            for (int r = 0; r < b_staged; ++r)  // BK channels x BN pixels
              tf32::copy4(b_tile + (row0 + r * rows_apart) * LDB + rank % BN, source + r * apart,
                          valid);
          };
          const int lane = rank % 32, warp = rank / 32;
          const int wm0 = (warp % warps_m) * WM, wn0 = (warp / warps_m) * WN;
          T acc[MT][NT][4];
          LAPIS_UNROLL
          for (int mt = 0; mt < MT; ++mt)
            LAPIS_UNROLL
            for (int nt = 0; nt < NT; ++nt)
              LAPIS_UNROLL
              for (int i = 0; i < 4; ++i) acc[mt][nt][i] = T(0);
          LAPIS_UNROLL
          for (int s = 0; s < Stages - 1; ++s) {
            if (at.k_begin + s * BK < at.k_end) load(at.k_begin + s * BK, s);
            tf32::commit();
          }
          for (int k0 = at.k_begin, buffer = 0; k0 < at.k_end; k0 += BK) {
            tf32::wait<Stages - 2>();  // this step's copies (this thread's) have landed
            team.team_barrier();       // everyone's; and everyone is done with step - 1
            const int ahead = k0 + (Stages - 1) * BK;
            if (ahead < at.k_end) load(ahead, (buffer + Stages - 1) % Stages);
            tf32::commit();
            step(a_tiles + buffer * a_floats, b_tiles + buffer * BK * LDB, wm0, wn0, lane, acc);
            buffer = buffer + 1 == Stages ? 0 : buffer + 1;
          }
          tf32::wait<0>();
          Tiles::store(out, bias, residual, init, with_relu, splits, grid, at, wm0, wn0, lane, acc);
        });
  }
};
#endif

// Every element of a 4-D output, for the passes around split sums.
template <class ExecutionSpace, class Output>
Kokkos::MDRangePolicy<ExecutionSpace,
                      Kokkos::Rank<4, Kokkos::Iterate::Right, Kokkos::Iterate::Right>,
                      Kokkos::IndexType<int64_t>>
every_output(const Output& out) {
  return {{0, 0, 0, 0}, {int64_t(out.extent(0)), int64_t(out.extent(1)), int64_t(out.extent(2)),
                         int64_t(out.extent(3))}};
}

// Before split sums are added atomically: out = init (+ residual). After them: the ReLU, if
// folded in.
template <class ExecutionSpace, class Bias, class Residual, class Output>
void conv_set_initial(const char* label, const Output& out, const ConvInit init,
                      const Bias& bias, const Residual& residual) {
  using T = typename Output::non_const_value_type;
  const bool with_residual = residual.data() != nullptr;
  if (init == ConvInit::accumulate && !with_residual) return;
  Kokkos::parallel_for(
      label, every_output<ExecutionSpace>(out),
      KOKKOS_LAMBDA(const int64_t n, const int64_t oc, const int64_t oh, const int64_t ow) {
        T v = init == ConvInit::bias   ? T(bias(oc))
              : init == ConvInit::zero ? T(0)
                                       : out(n, oc, oh, ow);
        if (with_residual) v += T(residual(n, oc, oh, ow));
        out(n, oc, oh, ow) = v;
      });
}

template <class ExecutionSpace, class Output>
void conv_relu(const char* label, const Output& out) {
  Kokkos::parallel_for(
      label, every_output<ExecutionSpace>(out),
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
void conv2d_nchw_tiled_with(const char* label, const Input& in, const PackedWeight& packed,
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
  if (splits > 1) conv_set_initial<ExecutionSpace>(label, out, init, bias, residual);
  const bool relu_here = with_relu && splits == 1;
  if (use_small)
    Small::template run<ExecutionSpace>(label, in, packed, out, g, init, bias, residual,
                                        relu_here, splits);
  else if (channels_out > 64)
    Large::template run<ExecutionSpace>(label, in, packed, out, g, init, bias, residual,
                                        relu_here, splits);
  else
    Narrow::template run<ExecutionSpace>(label, in, packed, out, g, init, bias, residual,
                                         relu_here, splits);
  if (with_relu && !relu_here) conv_relu<ExecutionSpace>(label, out);
}

// Float32 fused multiply-adds in the tiles (any GPU backend).
template <class ExecutionSpace, class Input, class PackedWeight, class Bias, class Residual,
          class Output>
void conv2d_nchw_tiled_fma(const char* label, const Input& in, const PackedWeight& packed,
                           const Output& out, const ConvGeometry g, const ConvInit init,
                           const Bias& bias, const Residual& residual, const bool with_relu) {
  conv2d_nchw_tiled_with<ConvTiles<128, 128, 8, 8>, ConvTiles<64, 256, 8, 8>,
                         ConvTiles<64, 64, 4, 4>, ExecutionSpace>(label, in, packed, out, g,
                                                                  init, bias, residual,
                                                                  with_relu);
}

#if defined(KOKKOS_ENABLE_CUDA)
// 3xTF32 on the tensor cores (CUDA, float32). LAPIS_CONV_TF32_TILES picks the tile set
// (benchmarks/conv_bench times each): 1, warps of 32 x 32 outputs, staged through registers,
// 512 threads in the large and narrow tiles (one team per multiprocessor), 128 in the small
// ones; 2, warps of 64 x 32, two teams per multiprocessor; 4, as 2 with the staging by
// cp.async, two steps of 16 deep; 5, the same four steps of 8 deep; 6, the weights split at
// initialize() (`split`, from split_tf32_weight; ConvTilesSplit), three steps deep; 7 (the
// default), the same two steps deep. 6 and 7 run 4 where there is no `split` (no data: the
// exporter makes none for 1x1 filters, nor for input channels not a multiple of 8). On an
// H200, ResNet18's convolutions at batch 64 sum to 9.79 ms (1), 9.42 (2), 8.07 (4), 8.12 (5),
// 7.19 (6), 6.76 (7), with every layer that can on the split tiles.
#if !defined(LAPIS_CONV_TF32_TILES)
#define LAPIS_CONV_TF32_TILES 7
#endif
template <class ExecutionSpace, class Input, class PackedWeight, class SplitWeight, class Bias,
          class Residual, class Output>
void conv2d_nchw_tiled_tf32(const char* label, const Input& in, const PackedWeight& packed,
                            const SplitWeight& split, const Output& out, const ConvGeometry g,
                            const ConvInit init, const Bias& bias, const Residual& residual,
                            const bool with_relu) {
#if LAPIS_CONV_TF32_TILES == 6 || LAPIS_CONV_TF32_TILES == 7
  constexpr int stages = LAPIS_CONV_TF32_TILES == 6 ? 3 : 2;
  if (split.data() != nullptr) {
    conv2d_nchw_tiled_with<ConvTilesSplit<128, 128, 64, 32, stages, 2>,
                           ConvTilesSplit<64, 256, 64, 32, stages, 2>,
                           ConvTilesSplit<64, 64, 32, 32, stages, 4>, ExecutionSpace>(
        label, in, split, out, g, init, bias, residual, with_relu);
    return;
  }
#else
  (void)split;
#endif
#if LAPIS_CONV_TF32_TILES == 2
  conv2d_nchw_tiled_with<ConvTilesTF32<128, 128, 64, 32, 2>, ConvTilesTF32<64, 256, 64, 32, 2>,
                         ConvTilesTF32<64, 64, 32, 32, 4>, ExecutionSpace>(
      label, in, packed, out, g, init, bias, residual, with_relu);
#elif LAPIS_CONV_TF32_TILES >= 4 && LAPIS_CONV_TF32_TILES != 5
  conv2d_nchw_tiled_with<ConvTilesAsync<128, 128, 64, 32, 16, 2, 2>,
                         ConvTilesAsync<64, 256, 64, 32, 16, 2, 2>,
                         ConvTilesAsync<64, 64, 32, 32, 16, 2, 4>, ExecutionSpace>(
      label, in, packed, out, g, init, bias, residual, with_relu);
#elif LAPIS_CONV_TF32_TILES == 5
  conv2d_nchw_tiled_with<ConvTilesAsync<128, 128, 64, 32, 8, 4, 2>,
                         ConvTilesAsync<64, 256, 64, 32, 8, 4, 2>,
                         ConvTilesAsync<64, 64, 32, 32, 8, 4, 4>, ExecutionSpace>(
      label, in, packed, out, g, init, bias, residual, with_relu);
#else
  conv2d_nchw_tiled_with<ConvTilesTF32<128, 128, 32, 32, 1>, ConvTilesTF32<64, 256, 32, 32, 1>,
                         ConvTilesTF32<64, 64, 32, 32, 4>, ExecutionSpace>(
      label, in, packed, out, g, init, bias, residual, with_relu);
#endif
}
#endif

template <class ExecutionSpace, class Input, class PackedWeight, class SplitWeight, class Bias,
          class Residual, class Output>
void conv2d_nchw_tiled(const char* label, const Input& in, const PackedWeight& packed,
                       const SplitWeight& split, const Output& out, const ConvGeometry g,
                       const ConvInit init, const Bias& bias, const Residual& residual,
                       const bool with_relu) {
  (void)split;  // read by the CUDA float32 tiles only
#if defined(KOKKOS_ENABLE_CUDA) && !defined(LAPIS_CONV_FMA)
  using T = typename Output::non_const_value_type;
  if constexpr (std::is_same<ExecutionSpace, Kokkos::Cuda>::value &&
                std::is_same<T, float>::value)
    conv2d_nchw_tiled_tf32<ExecutionSpace>(label, in, packed, split, out, g, init, bias,
                                           residual, with_relu);
  else
#endif
    conv2d_nchw_tiled_fma<ExecutionSpace>(label, in, packed, out, g, init, bias, residual,
                                          with_relu);
}

// Any backend, any padding (host backends without the x86 tiles): one thread per (n, channel
// block, oh, ow), with the block's 8 output channels in registers.
template <class ExecutionSpace, class Input, class PackedWeight, class Bias, class Residual,
          class Output>
void conv2d_nchw_portable(const char* label, const Input& in, const PackedWeight& packed,
                          const Output& out, const ConvGeometry g, const ConvInit init,
                          const Bias& bias, const Residual& residual, const bool with_relu) {
  using T = typename Output::non_const_value_type;
  constexpr int B = conv_channel_block;
  const int64_t batch = out.extent(0), channels_out = out.extent(1);
  const int64_t height_out = out.extent(2), width_out = out.extent(3);
  const int64_t channels_in = in.extent(1), height_in = in.extent(2), width_in = in.extent(3);
  const int64_t kernel_h = packed.extent(2), kernel_w = packed.extent(3);
  const int64_t blocks = packed.extent(0);
  const bool with_residual = residual.data() != nullptr;
  using range = Kokkos::RangePolicy<ExecutionSpace, Kokkos::IndexType<int64_t>>;
  Kokkos::parallel_for(label, range(0, batch * blocks * height_out * width_out),
                       KOKKOS_LAMBDA(int64_t i) {
    const int64_t ow = i % width_out;
    i /= width_out;
    const int64_t oh = i % height_out;
    i /= height_out;
    const int64_t block = i % blocks;
    const int64_t n = i / blocks;
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
          load_tap(&packed(block, ic, kh, kw, 0), w);
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
// with zeros read outside `in` (any layout), `out` LayoutRight, and `packed` the weight in
// blocks of conv_channel_block output channels: packed[oc / B][ic][kh][kw][oc % B], zero beyond
// the last channel (done at export). `bias` is read only with ConvInit::bias. The epilogue
// adds `residual` (the shape of `out`; none when it holds no data) before the ReLU.
// `split` (CUDA float32 packages) is `packed` split by split_tf32_weight at initialize(), for
// the tensor-core tiles; other backends and element types do not read it.
template <class ExecutionSpace, class Input, class PackedWeight, class SplitWeight, class Bias,
          class Residual, class Output>
void conv2d_nchw(const char* label, const Input& in, const PackedWeight& packed,
                 const SplitWeight& split, const Output& out, const ConvGeometry g,
                 const ConvInit init, const Bias& bias, const Residual& residual,
                 const bool with_relu) {
  (void)split;
#if defined(LAPIS_X86_KERNELS)
  using T = typename Output::non_const_value_type;
  if constexpr (Kokkos::SpaceAccessibility<ExecutionSpace, Kokkos::HostSpace>::accessible &&
                std::is_same<T, float>::value) {
    if (g.pad_h == 0 && g.pad_w == 0) {  // the lowering pads the input on host backends
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
      const detail::conv_row_function row = detail::conv_row_for(s, width_out);
      const bool with_residual = residual.data() != nullptr;
      Kokkos::parallel_for(
          label, policy3({0, 0, 0}, {batch, blocks, height_out}),
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
                  v = detail::relu(v);
                }
          });
      return;
    }
  }
#endif
  if constexpr (!Kokkos::SpaceAccessibility<ExecutionSpace, Kokkos::HostSpace>::accessible)
    detail::conv2d_nchw_tiled<ExecutionSpace>(label, in, packed, split, out, g, init, bias,
                                              residual, with_relu);
  else
    detail::conv2d_nchw_portable<ExecutionSpace>(label, in, packed, out, g, init, bias,
                                                 residual, with_relu);
}

// Without split weights; without a residual.
template <class ExecutionSpace, class Input, class PackedWeight, class Bias, class Residual,
          class Output>
void conv2d_nchw(const char* label, const Input& in, const PackedWeight& packed,
                 const Output& out, const ConvGeometry g, const ConvInit init, const Bias& bias,
                 const Residual& residual, const bool with_relu) {
  conv2d_nchw<ExecutionSpace>(
      label, in, packed,
      Kokkos::View<const float*****, typename Output::memory_space>(), out, g, init, bias,
      residual, with_relu);
}

template <class ExecutionSpace, class Input, class PackedWeight, class SplitWeight, class Bias,
          class Output>
void conv2d_nchw(const char* label, const Input& in, const PackedWeight& packed,
                 const SplitWeight& split, const Output& out, const ConvGeometry g,
                 const ConvInit init, const Bias& bias, const bool with_relu) {
  conv2d_nchw<ExecutionSpace>(
      label, in, packed, split, out, g, init, bias,
      Kokkos::View<const typename Output::non_const_value_type****,
                   typename Output::memory_space>(),
      with_relu);
}

template <class ExecutionSpace, class Input, class PackedWeight, class Bias, class Output>
void conv2d_nchw(const char* label, const Input& in, const PackedWeight& packed,
                 const Output& out, const ConvGeometry g, const ConvInit init, const Bias& bias,
                 const bool with_relu) {
  conv2d_nchw<ExecutionSpace>(
      label, in, packed, out, g, init, bias,
      Kokkos::View<const typename Output::non_const_value_type****,
                   typename Output::memory_space>(),
      with_relu);
}

// `packed` (float32, conv2d_nchw's layout) split for the CUDA tensor-core tiles
// (ConvTilesSplit), once, by initialize(): each weight x becomes big = x rounded to tf32 (10
// mantissa bits, to nearest, ties away from zero: PTX's cvt.rna) and small = x - big rounded
// the same way, laid out as the 16 x 8 fragments of `mma.sync m16n8k8` over k = tap *
// channels_in + ic:
//   split[oc / 16][kh][kw][ic / 8][part * 128 + lane * 4 + e], part 0 big, 1 small,
// lane = (oc % 8) * 4 + ic % 4, e = oc % 16 / 8 + ic % 8 / 4 * 2 (zeros past the last output
// channel). Needs a multiple of 8 input channels. Any backend (integer arithmetic).
KOKKOS_INLINE_FUNCTION float round_tf32(const float x) {
  const uint32_t bits = bit_cast<uint32_t>(x);
  if ((bits & 0x7f800000u) == 0x7f800000u) return x;  // inf and NaN stay
  return bit_cast<float>((bits + 0x1000u) & 0xffffe000u);
}

template <class ExecutionSpace, class PackedWeight, class SplitWeight>
void split_tf32_weight(const char* label, const PackedWeight& packed, const SplitWeight& split) {
  const int64_t count = split.size(), blocks = packed.extent(0);
  const int64_t channels_in = packed.extent(1), kernel_h = packed.extent(2);
  const int64_t kernel_w = packed.extent(3);
  Kokkos::parallel_for(
      label, Kokkos::RangePolicy<ExecutionSpace, Kokkos::IndexType<int64_t>>(0, count),
      KOKKOS_LAMBDA(int64_t i) {
        const int e = int(i % 4), lane = int(i / 4 % 32), part = int(i / 128 % 2);
        i /= 256;
        const int64_t group = i % (channels_in / 8);
        i /= channels_in / 8;
        const int64_t kw = i % kernel_w;
        i /= kernel_w;
        const int64_t kh = i % kernel_h, fragment = i / kernel_h;
        const int64_t oc = fragment * 16 + lane / 4 + 8 * (e % 2);
        const int64_t ic = group * 8 + lane % 4 + 4 * (e / 2);
        const int64_t block = oc / conv_channel_block;
        const float x =
            block < blocks ? float(packed(block, ic, kh, kw, oc % conv_channel_block)) : 0.0f;
        const float big = round_tf32(x);
        split(fragment, kh, kw, group, part * 128 + lane * 4 + e) =
            part == 0 ? big : round_tf32(x - big);
      });
}

// Max pooling with the -inf padding read around the input instead of copied in:
// out[n][c][oh][ow] = max(start, max over the window's taps inside `in`), start = -inf or the
// value already in `out`. NaN propagates, as in the model (arith.maximumf).
struct PoolGeometry {
  int64_t kernel_h, kernel_w, stride_h, stride_w, dilation_h, dilation_w, pad_h, pad_w;
};

template <class ExecutionSpace, class Input, class Output>
void max_pool2d_nchw(const char* label, const Input& in, const Output& out,
                     const PoolGeometry g, const bool from_lowest) {
  using T = typename Output::non_const_value_type;
  const int64_t channels = out.extent(1), height_out = out.extent(2), width_out = out.extent(3);
  const int64_t height_in = in.extent(2), width_in = in.extent(3);
  const int64_t total = int64_t(out.extent(0)) * channels * height_out * width_out;
  using range = Kokkos::RangePolicy<ExecutionSpace, Kokkos::IndexType<int64_t>>;
  Kokkos::parallel_for(label, range(0, total), KOKKOS_LAMBDA(int64_t i) {
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

// The `bias` argument of a convolution without one.
template <class T, class MemorySpace>
Kokkos::View<const T*, MemorySpace> no_bias() {
  return {};
}

}  // namespace lapis
