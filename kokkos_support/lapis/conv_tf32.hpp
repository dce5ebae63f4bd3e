// lapis-export tensor-core convolution tiles, shipped into every exported package (src/lapis/).
// CUDA, float32 ("3xTF32", float32 accuracy): ConvTilesTF32 (staging through registers),
// ConvTilesAsync (cp.async), ConvTilesSplit (weights split at initialize()) and
// conv2d_nchw_tiled_tf32, which picks among them (LAPIS_CONV_TF32_TILES); compiled only with
// KOKKOS_ENABLE_CUDA. split_tf32_weight, which initialize() runs for ConvTilesSplit, and
// round_tf32 build on any backend.
#pragma once

#include <Kokkos_Core.hpp>

#include <cstddef>
#include <cstdint>

#include "conv_common.hpp"
#include "conv_launch.hpp"
#include "support.hpp"

namespace lapis {
namespace detail {

#if defined(KOKKOS_ENABLE_CUDA)
// CUDA: ConvTiles' implicit matrix product (conv_tiles.hpp) on the tensor cores, at float32
// accuracy ("3xTF32").
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
// d = a * b to float32 accuracy as mma3, d's old value ignored (the first product adds zero).
KOKKOS_FORCEINLINE_FUNCTION void mma3_fresh(float (&d)[4], const uint32_t (&a_big)[4],
                                            const uint32_t (&a_small)[4],
                                            const uint32_t (&b_big)[2],
                                            const uint32_t (&b_small)[2]) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm("mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 "
      "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%10, %10, %10, %10};"
      : "=f"(d[0]), "=f"(d[1]), "=f"(d[2]), "=f"(d[3])
      : "r"(a_small[0]), "r"(a_small[1]), "r"(a_small[2]), "r"(a_small[3]), "r"(b_big[0]),
        "r"(b_big[1]), "f"(0.0f));
#else
  for (float& x : d) x = 0.0f;
#endif
  mma(d, a_big, b_small);
  mma(d, a_big, b_big);
}
}  // namespace tf32

template <int BM, int BN, int WM, int WN, int MinTeams, Precision P = Precision::fp32>
struct ConvTilesTF32 : TileLaunch<ConvTilesTF32<BM, BN, WM, WN, MinTeams, P>, BM, BN> {
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
      for (int nt = 0; nt < NT; ++nt) {
        if (P == Precision::fp32)
          tf32::mma3(acc[mt][nt], a_big, a_small, b_big[nt], b_small[nt]);
        else  // tf32: one product of the rounded parts
          tf32::mma(acc[mt][nt], a_big, b_big[nt]);
      }
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
  static void run_taps(const ExecutionSpace& space, const char* label,
                       const Input& in, const PackedWeight& packed,
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
        policy(space, grid.tiles * splits, threads).set_scratch_size(0, Kokkos::PerTeam(scratch)),
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

template <int BM, int BN, int WM, int WN, int KStep, int Stages, int MinTeams,
          Precision P = Precision::fp32>
struct ConvTilesAsync
    : TileLaunch<ConvTilesAsync<BM, BN, WM, WN, KStep, Stages, MinTeams, P>, BM, BN> {
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
  using Tiles = ConvTilesTF32<BM, BN, WM, WN, MinTeams, P>;

  template <int KH, int KW, class ExecutionSpace, class Input, class PackedWeight, class Bias,
            class Residual, class Output>
  static void run_taps(const ExecutionSpace& space, const char* label,
                       const Input& in, const PackedWeight& packed,
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
        policy(space, grid.tiles * splits, threads).set_scratch_size(0, Kokkos::PerTeam(scratch)),
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

template <int BM, int BN, int WM, int WN, int Stages, int MinTeams,
          Precision P = Precision::fp32>
struct ConvTilesSplit
    : TileLaunch<ConvTilesSplit<BM, BN, WM, WN, Stages, MinTeams, P>, BM, BN> {
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
  using Tiles = ConvTilesTF32<BM, BN, WM, WN, MinTeams, P>;

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
      for (int nt = 0; nt < NT; ++nt) {
        if (P == Precision::fp32)
          tf32::mma3(acc[mt][nt], a_big, a_small, b_big[nt], b_small[nt]);
        else  // tf32: one product of the rounded parts
          tf32::mma(acc[mt][nt], a_big, b_big[nt]);
      }
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
  static void run_taps(const ExecutionSpace& space, const char* label,
                       const Input& in, const SplitWeight& split,
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
        policy(space, grid.tiles * splits, threads).set_scratch_size(0, Kokkos::PerTeam(scratch)),
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
              // tf32 products read the big parts only (the first half of a fragment).
              if (P != Precision::fp32 && c % (fragment / 4) >= fragment / 8) continue;
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

// 3xTF32 on the tensor cores (CUDA, float32; P = tf32: one TF32 product of the rounded
// operands, and the split tiles read only the weights' big parts). LAPIS_CONV_TF32_TILES picks the tile set
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
template <class ExecutionSpace, Precision P, class Input, class PackedWeight, class SplitWeight,
          class Bias, class Residual, class Output>
void conv2d_nchw_tiled_tf32(const ExecutionSpace& space, const char* label,
                            const Input& in, const PackedWeight& packed,
                            const SplitWeight& split, const Output& out, const ConvGeometry g,
                            const ConvInit init, const Bias& bias, const Residual& residual,
                            const bool with_relu) {
#if LAPIS_CONV_TF32_TILES == 6 || LAPIS_CONV_TF32_TILES == 7
  constexpr int stages = LAPIS_CONV_TF32_TILES == 6 ? 3 : 2;
  if (split.data() != nullptr) {
    conv2d_nchw_tiled_with<ConvTilesSplit<128, 128, 64, 32, stages, 2, P>,
                           ConvTilesSplit<64, 256, 64, 32, stages, 2, P>,
                           ConvTilesSplit<64, 64, 32, 32, stages, 4, P>, ExecutionSpace>(
        space, label, in, split, out, g, init, bias, residual, with_relu);
    return;
  }
#else
  (void)split;
#endif
#if LAPIS_CONV_TF32_TILES == 2
  conv2d_nchw_tiled_with<ConvTilesTF32<128, 128, 64, 32, 2, P>,
                         ConvTilesTF32<64, 256, 64, 32, 2, P>,
                         ConvTilesTF32<64, 64, 32, 32, 4, P>, ExecutionSpace>(
      space, label, in, packed, out, g, init, bias, residual, with_relu);
#elif LAPIS_CONV_TF32_TILES >= 4 && LAPIS_CONV_TF32_TILES != 5
  conv2d_nchw_tiled_with<ConvTilesAsync<128, 128, 64, 32, 16, 2, 2, P>,
                         ConvTilesAsync<64, 256, 64, 32, 16, 2, 2, P>,
                         ConvTilesAsync<64, 64, 32, 32, 16, 2, 4, P>, ExecutionSpace>(
      space, label, in, packed, out, g, init, bias, residual, with_relu);
#elif LAPIS_CONV_TF32_TILES == 5
  conv2d_nchw_tiled_with<ConvTilesAsync<128, 128, 64, 32, 8, 4, 2, P>,
                         ConvTilesAsync<64, 256, 64, 32, 8, 4, 2, P>,
                         ConvTilesAsync<64, 64, 32, 32, 8, 4, 4, P>, ExecutionSpace>(
      space, label, in, packed, out, g, init, bias, residual, with_relu);
#else
  conv2d_nchw_tiled_with<ConvTilesTF32<128, 128, 32, 32, 1, P>,
                         ConvTilesTF32<64, 256, 32, 32, 1, P>,
                         ConvTilesTF32<64, 64, 32, 32, 4, P>, ExecutionSpace>(
      space, label, in, packed, out, g, init, bias, residual, with_relu);
#endif
}
#endif

}  // namespace detail

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
void split_tf32_weight(const ExecutionSpace& space, const char* label,
                       const PackedWeight& packed, const SplitWeight& split) {
  const int64_t count = split.size(), blocks = packed.extent(0);
  const int64_t channels_in = packed.extent(1), kernel_h = packed.extent(2);
  const int64_t kernel_w = packed.extent(3);
  Kokkos::parallel_for(
      label, Kokkos::RangePolicy<ExecutionSpace, Kokkos::IndexType<int64_t>>(space, 0, count),
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

}  // namespace lapis
