// lapis-export host convolution tiles, shipped into every exported package (src/lapis/).
// x86-64 host backends (Serial, OpenMP, Threads) built with GCC or Clang, float32, weights in
// blocks of 32 output channels (packed so at export, exporter/tuned_ops.py), no padding to read
// around (the lowering pads the input on host backends), contiguous undilated input columns,
// stride 1 or 2 along them. conv2d_nchw (conv.hpp) hands such calls to conv2d_nchw_x86.
//
// Register tiles of 32 output channels (two zmm) x 7 or 8 output columns (AVX-512F), 16
// channels x 4 or 6 columns (AVX2+FMA) or 8 x 6 (baseline x86-64), summed over every input
// channel and tap with the input values read straight from the rows of the image; the epilogue
// (start value, residual, ReLU) runs on the sums before their one store. The instruction set
// is picked once at run time (__builtin_cpu_supports); LAPIS_CONV_ISA=avx2|baseline forces a
// lower one.
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

#include <immintrin.h>

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

// What one block of output channels starts from, and what is applied to its sums before they
// are stored.
struct BlockEpilogue {
  ConvInit init;
  const float* bias;        // conv_host_channel_block values (ConvInit::bias)
  const float* residual;    // residual(n, first channel of the block, 0, 0), or nullptr
  int64_t residual_c, residual_h, residual_w;  // its strides
  bool relu;
};

// The rows of a task and the input channels of one pass over them: the weights of a pass
// (chunk_channels of them) stay in L1 while every tile of the rows reads them, and the tiles'
// sums between passes wait in `partial` ([rows][width][channels of the tile], floats).
struct RowGroup {
  int64_t first_row, rows, width, chunk_channels;
  float* partial;
};

template <int Bytes>
struct simd {
  typedef float type __attribute__((vector_size(Bytes)));
};

// Adds to one tile's sums (`Columns` output columns x `Vectors` vectors of output channels)
// input channels [ic_begin, ic_end), every tap. `origin`: the input at the tile's first column
// and the row of its first filter row; `weights`: the block's weights at the tile's first
// channel. Each filter row of each input channel also fetches a cache line into L2: from
// `ahead` on, a line further each (`ahead_step` 64; 0 keeps to the one line).
template <int Bytes, int Vectors, int Columns, int StrideW, int KernelW>
inline __attribute__((always_inline)) void tile_sums(
    const ConvShape& s, const float* origin, const float* weights, const int64_t ic_begin,
    const int64_t ic_end, typename simd<Bytes>::type (&acc)[Columns][Vectors],
    const char* ahead, const int64_t ahead_step) {
  using vec = typename simd<Bytes>::type;
  constexpr int lanes = Bytes / int(sizeof(float));
  constexpr int B = conv_host_channel_block;
  const int64_t kernel_h = s.kernel_h, kernel_w = KernelW ? KernelW : s.kernel_w;
  const int64_t row_step = s.dilation_h * s.in_h;
  for (int64_t ic = ic_begin; ic < ic_end; ++ic) {
    for (int64_t kh = 0; kh < kernel_h; ++kh) {
      __builtin_prefetch(ahead + ((ic - ic_begin) * kernel_h + kh) * ahead_step, 0, 2);
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

// Stores a tile none of whose columns is stored yet: `target` is out(n, block channel c, oh,
// first column), `residual_at` the residual's offset of (oh, first column). The columns run in
// fixed loops the compiler unrolls and vectorizes; each condition is tested once a tile.
template <int Columns, int Channels>
inline __attribute__((always_inline)) void tile_epilogue(
    const float (&sums)[Columns][Channels], const int64_t stored, const int64_t c,
    float* const target, const int64_t out_c, const int64_t residual_at,
    const BlockEpilogue& e) {
  float v[Channels][Columns];
  for (int64_t o = 0; o < stored; ++o) {
#pragma GCC unroll 16
    for (int j = 0; j < Columns; ++j) v[o][j] = sums[j][o];
  }
  if (e.init == ConvInit::accumulate) {
    for (int64_t o = 0; o < stored; ++o)
#pragma GCC unroll 16
      for (int j = 0; j < Columns; ++j) v[o][j] = target[(c + o) * out_c + j] + v[o][j];
  } else {
    for (int64_t o = 0; o < stored; ++o) {
      const float start = e.init == ConvInit::bias ? e.bias[c + o] : 0.0f;
#pragma GCC unroll 16
      for (int j = 0; j < Columns; ++j) v[o][j] = start + v[o][j];
    }
  }
  if (e.residual) {
    const float* residual = e.residual + residual_at;
    for (int64_t o = 0; o < stored; ++o)
#pragma GCC unroll 16
      for (int j = 0; j < Columns; ++j)
        v[o][j] += residual[(c + o) * e.residual_c + j * e.residual_w];
  }
  if (e.relu) {
    for (int64_t o = 0; o < stored; ++o)
#pragma GCC unroll 16
      for (int j = 0; j < Columns; ++j) v[o][j] = detail::relu(v[o][j]);
  }
  for (int64_t o = 0; o < stored; ++o)
#pragma GCC unroll 16
    for (int j = 0; j < Columns; ++j) target[(c + o) * out_c + j] = v[o][j];
}

// tile_epilogue on AVX-512F for tiles of 7 or 8 columns x 32 channels: an 8 x 16 transpose of
// each vector of channels (three rounds of vpermt2ps) gives two channels' columns a vector,
// which the epilogue finishes and stores with masks. A call, not inlined: GCC inlines no
// AVX-512 code into block_rows, which is compiled for every instruction set.
template <int Columns>
__attribute__((target("avx512f"))) inline void tile_epilogue_avx512(
    const typename simd<64>::type (&acc)[Columns][2], const int64_t stored, const int64_t c,
    float* const target, const int64_t out_c, const float* const residual,
    const BlockEpilogue& e) {
  static_assert(Columns == 7 || Columns == 8, "tiles of 7 or 8 columns");
  const __m512i pairs_lo = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
  const __m512i pairs_hi =
      _mm512_setr_epi32(8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31);
  const __m512i quads_lo = _mm512_setr_epi32(0, 1, 16, 17, 2, 3, 18, 19, 4, 5, 20, 21, 6, 7, 22, 23);
  const __m512i quads_hi =
      _mm512_setr_epi32(8, 9, 24, 25, 10, 11, 26, 27, 12, 13, 28, 29, 14, 15, 30, 31);
  const __m512i rows_lo = _mm512_setr_epi32(0, 1, 2, 3, 16, 17, 18, 19, 4, 5, 6, 7, 20, 21, 22, 23);
  const __m512i rows_hi =
      _mm512_setr_epi32(8, 9, 10, 11, 24, 25, 26, 27, 12, 13, 14, 15, 28, 29, 30, 31);
  const __mmask16 first = (1u << Columns) - 1, second = __mmask16(first << 8);
  const __m512 zero = _mm512_setzero_ps();
  for (int v = 0; v < 2; ++v) {
    __m512 r[8];
    for (int j = 0; j < 8; ++j) r[j] = j < Columns ? __m512(acc[j][v]) : zero;
    __m512 a[4][2], b[2][4];   // a[column pair][channels 0-7 | 8-15]; b[columns 0-3 | 4-7][q]
    for (int m = 0; m < 4; ++m) {
      a[m][0] = _mm512_permutex2var_ps(r[2 * m], pairs_lo, r[2 * m + 1]);
      a[m][1] = _mm512_permutex2var_ps(r[2 * m], pairs_hi, r[2 * m + 1]);
    }
    for (int half = 0; half < 2; ++half)
      for (int h = 0; h < 2; ++h) {
        b[half][2 * h] = _mm512_permutex2var_ps(a[2 * half][h], quads_lo, a[2 * half + 1][h]);
        b[half][2 * h + 1] =
            _mm512_permutex2var_ps(a[2 * half][h], quads_hi, a[2 * half + 1][h]);
      }
    // b[.][q] holds channels 4q..4q+3 of this vector; each output vector two of them.
    for (int k = 0; k < 8; ++k) {
      const int q = k / 2;
      __m512 x = _mm512_permutex2var_ps(b[0][q], k % 2 ? rows_hi : rows_lo, b[1][q]);
      const int64_t o = v * 16 + 2 * k;        // the channel of the first 8 lanes
      if (o >= stored) break;
      const __mmask16 mask = o + 1 < stored ? __mmask16(first | second) : first;
      float* const row = target + (c + o) * out_c;
      if (e.init == ConvInit::accumulate) {
        const __m512 old = _mm512_mask_loadu_ps(zero, mask & first, row);
        x = _mm512_add_ps(_mm512_mask_loadu_ps(old, mask & second, row + out_c - 8), x);
      } else if (e.init == ConvInit::bias) {
        const __m512 start = _mm512_mask_mov_ps(_mm512_set1_ps(e.bias[c + o]), second,
                                                _mm512_set1_ps(o + 1 < stored ? e.bias[c + o + 1]
                                                                              : 0.0f));
        x = _mm512_add_ps(start, x);
      } else {
        x = _mm512_add_ps(zero, x);
      }
      if (residual) {
        const float* const from = residual + (c + o) * e.residual_c;
        const __m512 lower = _mm512_mask_loadu_ps(zero, mask & first, from);
        x = _mm512_add_ps(x, _mm512_mask_loadu_ps(lower, mask & second,
                                                  from + e.residual_c - 8));
      }
      if (e.relu) x = _mm512_mask_mov_ps(x, _mm512_cmp_ps_mask(x, zero, _CMP_LE_OQ), zero);
      _mm512_mask_storeu_ps(row, mask & first, x);
      _mm512_mask_storeu_ps(row + out_c - 8, mask & second, x);
    }
  }
}

// Rows of one block of output channels, in passes over chunks of input channels: tiles of
// `Columns` from the left of each row; where `Columns` does not divide the width, the last
// tile overlaps the one before and stores only the columns not yet stored (so `accumulate` and
// residuals are added once). width >= Columns. `out`: out(n, first channel of the block, 0, 0).
template <int Bytes, int Vectors, int Columns, int StrideW, int KernelW>
inline __attribute__((always_inline)) void block_rows(const ConvShape& s, const float* image,
                                                      const float* weights, float* out,
                                                      const RowGroup& g, const int64_t valid,
                                                      const BlockEpilogue& e) {
  using vec = typename simd<Bytes>::type;
  constexpr int lanes = Bytes / int(sizeof(float));
  constexpr int channels = Vectors * lanes;
  const int64_t width = g.width;
  // The weights of the next pass (past the last: the next block's first) are fetched into L2
  // a line a filter row while the first tiles of this pass compute: deep layers stream
  // megabytes of weights from memory that each serve few output pixels, and fetched only when
  // first read they stall the pass.
  const int64_t pass_lines = g.chunk_channels * s.kernel_h * s.kernel_w *
                             conv_host_channel_block * int64_t(sizeof(float)) / 64;
  for (int64_t c = 0; c < valid; c += channels) {
    for (int64_t ic0 = 0; ic0 < s.channels_in; ic0 += g.chunk_channels) {
      const int64_t ic1 = ic0 + g.chunk_channels < s.channels_in ? ic0 + g.chunk_channels
                                                                 : s.channels_in;
      const bool first = ic0 == 0, last_pass = ic1 == s.channels_in;
      const char* ahead = reinterpret_cast<const char*>(
          weights + ic1 * s.kernel_h * s.kernel_w * conv_host_channel_block);
      int64_t fetched = 0;
      for (int64_t r = 0; r < g.rows; ++r) {
        const int64_t oh = g.first_row + r;
        const float* origin = image + oh * s.stride_h * s.in_h;
        float* partial_row = g.partial + r * width * channels;
        for (int64_t done = 0; done < width;) {
          const int64_t ow0 = done + Columns <= width ? done : width - Columns;
          const int64_t step = fetched < pass_lines ? 64 : 0;
          vec acc[Columns][Vectors];
#pragma GCC unroll 16
          for (int j = 0; j < Columns; ++j)
#pragma GCC unroll 4
            for (int v = 0; v < Vectors; ++v)
              if (first)
                acc[j][v] = vec{};
              else
                __builtin_memcpy(&acc[j][v], partial_row + (ow0 + j) * channels + v * lanes,
                                 sizeof(vec));
          tile_sums<Bytes, Vectors, Columns, StrideW, KernelW>(
              s, origin + ow0 * StrideW, weights + c, ic0, ic1, acc, ahead + fetched * 64, step);
          if (step) fetched += (ic1 - ic0) * s.kernel_h;
          if (!last_pass) {
#pragma GCC unroll 16
            for (int j = 0; j < Columns; ++j)
              if (ow0 + j >= done)
#pragma GCC unroll 4
                for (int v = 0; v < Vectors; ++v)
                  __builtin_memcpy(partial_row + (ow0 + j) * channels + v * lanes,
                                   &acc[j][v], sizeof(vec));
            done = ow0 + Columns;
            continue;
          }
          const int64_t stored = valid - c < channels ? valid - c : channels;
          if constexpr (Bytes == 64 && Vectors == 2 && (Columns == 7 || Columns == 8)) {
            if (done == ow0 && (!e.residual || e.residual_w == 1)) {
              tile_epilogue_avx512<Columns>(
                  acc, stored, c, out + oh * s.out_h + ow0, s.out_c,
                  e.residual ? e.residual + oh * e.residual_h + ow0 : nullptr, e);
              done = ow0 + Columns;
              continue;
            }
          }
          float sums[Columns][channels];
          __builtin_memcpy(sums, acc, sizeof(sums));
          if (done == ow0) {
            tile_epilogue<Columns>(sums, stored, c, out + oh * s.out_h + ow0, s.out_c,
                                   oh * e.residual_h + ow0 * e.residual_w, e);
            done = ow0 + Columns;
            continue;
          }
          for (int64_t o = 0; o < stored; ++o) {
            float* target = out + (c + o) * s.out_c + oh * s.out_h;
            const float start = e.init == ConvInit::bias ? e.bias[c + o] : 0.0f;
            const float* residual =
                e.residual ? e.residual + (c + o) * e.residual_c + oh * e.residual_h : nullptr;
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
  }
}

using rows_function = void (*)(const ConvShape&, const float*, const float*, float*,
                               const RowGroup&, int64_t, const BlockEpilogue&);

template <int Columns, int StrideW, int KernelW>
__attribute__((target("avx512f,fma"))) void row_avx512(
    const ConvShape& s, const float* image, const float* weights, float* out,
    const RowGroup& g, int64_t valid, const BlockEpilogue& e) {
  block_rows<64, 2, Columns, StrideW, KernelW>(s, image, weights, out, g, valid, e);
}

template <int Columns, int StrideW, int KernelW>
__attribute__((target("avx2,fma"))) void row_avx2(
    const ConvShape& s, const float* image, const float* weights, float* out,
    const RowGroup& g, int64_t valid, const BlockEpilogue& e) {
  block_rows<32, 2, Columns, StrideW, KernelW>(s, image, weights, out, g, valid, e);
}

template <int Columns, int StrideW>
void row_baseline(const ConvShape& s, const float* image, const float* weights, float* out,
                  const RowGroup& g, int64_t valid, const BlockEpilogue& e) {
  block_rows<16, 2, Columns, StrideW, 0>(s, image, weights, out, g, valid, e);
}

template <int Columns, int StrideW>
rows_function avx512_row_for(const int64_t kernel_w) {
  switch (kernel_w) {  // a known filter width unrolls the tap loop
    case 1: return row_avx512<Columns, StrideW, 1>;
    case 3: return row_avx512<Columns, StrideW, 3>;
    case 7: return row_avx512<Columns, StrideW, 7>;
    default: return row_avx512<Columns, StrideW, 0>;
  }
}

template <int Columns, int StrideW>
rows_function avx2_row_for(const int64_t kernel_w) {
  switch (kernel_w) {
    case 1: return row_avx2<Columns, StrideW, 1>;
    case 3: return row_avx2<Columns, StrideW, 3>;
    default: return row_avx2<Columns, StrideW, 0>;
  }
}

// AVX-512F: 7 columns where 7 divides the width (every ResNet width), else 8, 4 or 1. AVX2:
// 4 columns where 7 divides the width (6 would compute 12 columns for a row of 7), else 6 or 1.
template <int StrideW>
rows_function row_for(const int64_t kernel_w, const int64_t width) {
  switch (isa()) {
    case Isa::avx512:
      if (width % 7 == 0) return avx512_row_for<7, StrideW>(kernel_w);
      if (width >= 8) return avx512_row_for<8, StrideW>(kernel_w);
      return width >= 4 ? row_avx512<4, StrideW, 0> : row_avx512<1, StrideW, 0>;
    case Isa::avx2:
      if (width % 7 == 0 && width >= 4) return avx2_row_for<4, StrideW>(kernel_w);
      return width >= 6 ? avx2_row_for<6, StrideW>(kernel_w) : row_avx2<1, StrideW, 0>;
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

// conv2d_nchw on the host tiles: one task per (image, channel block, group of output rows).
// A group takes as many rows as its partial sums fit in partial_floats, fewer where that would
// leave under 4 tasks a thread; a pass over its rows takes the input channels whose weights
// fill chunk_floats (16 KiB: they stay in L1 while every tile of the group reads them).
template <class ExecutionSpace, class Input, class PackedWeight, class Bias, class Residual,
          class Output>
void conv2d_nchw_x86(const ExecutionSpace& space, const char* label,
                     const Input& in, const PackedWeight& packed,
                     const Output& out, const ConvGeometry g, const ConvInit init,
                     const Bias& bias, const Residual& residual, const bool with_relu) {
  constexpr int B = conv_host_channel_block;
  constexpr int64_t partial_floats = 16384, chunk_floats = 4096;
  const ConvShape s{int64_t(in.extent(1)), int64_t(packed.extent(2)),
                    int64_t(packed.extent(3)), g.stride_h, g.stride_w, g.dilation_h,
                    g.dilation_w, int64_t(in.stride(1)), int64_t(in.stride(2)),
                    int64_t(in.stride(3)), int64_t(out.stride(1)), int64_t(out.stride(2))};
  const int64_t batch = out.extent(0), channels_out = out.extent(1);
  const int64_t height_out = out.extent(2), width_out = out.extent(3);
  const int64_t blocks = packed.extent(0);
  const int64_t tap_floats = s.kernel_h * s.kernel_w * B;
  int64_t chunk = chunk_floats / tap_floats > 0 ? chunk_floats / tap_floats : 1;
  // Few input channels of a wide filter (a stem's 3 of 7 x 7): one pass, no partial sums to
  // store and reload, while the weights still fit L1 twice over.
  if (s.channels_in * tap_floats <= 2 * chunk_floats) chunk = s.channels_in;
  int64_t rows = 1;
  if (width_out * B > partial_floats)
    chunk = s.channels_in;   // no room for a row's partial sums: one pass
  else
    rows = partial_floats / (width_out * B) < height_out ? partial_floats / (width_out * B)
                                                         : height_out;
  const int64_t enough_tasks = space.concurrency() > 1 ? 4 * space.concurrency() : 1;
  while (rows > 1 && batch * blocks * ((height_out + rows - 1) / rows) < enough_tasks)
    rows = (rows + 1) / 2;
  const int64_t groups = (height_out + rows - 1) / rows;
  // One flat range of tasks, split evenly among the threads: an MDRangePolicy's tiles put a
  // convolution of two channel blocks (ResNet's first layers) on one thread.
  using range = Kokkos::RangePolicy<ExecutionSpace, Kokkos::IndexType<int64_t>>;
  const conv_host::rows_function block_rows =
      g.stride_w == 1 ? conv_host::row_for<1>(s.kernel_w, width_out)
                      : conv_host::row_for<2>(s.kernel_w, width_out);
  const bool with_residual = residual.data() != nullptr;
  Kokkos::parallel_for(
      label, range(space, 0, batch * blocks * groups), [=](const int64_t task) {
        const int64_t group = task % groups, block = (task / groups) % blocks,
                      n = task / (groups * blocks);
        const int64_t valid = channels_out - block * B < B ? channels_out - block * B : B;
        float bias_block[B] = {};
        if (init == ConvInit::bias)
          for (int64_t o = 0; o < valid; ++o) bias_block[o] = float(bias(block * B + o));
        const conv_host::BlockEpilogue e{
            init, bias_block, with_residual ? &residual(n, block * B, 0, 0) : nullptr,
            with_residual ? int64_t(residual.stride(1)) : 0,
            with_residual ? int64_t(residual.stride(2)) : 0,
            with_residual ? int64_t(residual.stride(3)) : 0, with_relu};
        alignas(64) float partial[partial_floats];
        const int64_t first_row = group * rows;
        const conv_host::RowGroup row_group{
            first_row, height_out - first_row < rows ? height_out - first_row : rows, width_out,
            chunk, partial};
        block_rows(s, &in(n, 0, 0, 0), &packed(block, 0, 0, 0, 0), &out(n, block * B, 0, 0),
                   row_group, valid, e);
      });
}
}  // namespace detail
}  // namespace lapis
#endif
