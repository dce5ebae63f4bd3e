// lapis-export portable convolution tiles, shipped into every exported package (src/lapis/):
// ConvTiles, the implicit matrix product in TeamPolicy teams with the operands staged in team
// scratch memory, fused multiply-adds in the output's element type. conv2d_nchw (conv.hpp)
// runs them on device backends: HIP, SYCL, and CUDA with LAPIS_CONV_FMA or for element types
// other than float.
#pragma once

#include <Kokkos_Core.hpp>

#include <cstddef>
#include <cstdint>

#include "conv_common.hpp"
#include "conv_launch.hpp"

namespace lapis {
namespace detail {

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
  static void run_taps(const ExecutionSpace& space, const char* label,
                       const Input& in, const PackedWeight& packed,
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
        policy(space, grid.tiles * splits, threads).set_scratch_size(0, Kokkos::PerTeam(scratch)),
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

// Float32 fused multiply-adds in the tiles (any GPU backend).
template <class ExecutionSpace, class Input, class PackedWeight, class Bias, class Residual,
          class Output>
void conv2d_nchw_tiled_fma(const ExecutionSpace& space, const char* label,
                           const Input& in, const PackedWeight& packed,
                           const Output& out, const ConvGeometry g, const ConvInit init,
                           const Bias& bias, const Residual& residual, const bool with_relu) {
  conv2d_nchw_tiled_with<ConvTiles<128, 128, 8, 8>, ConvTiles<64, 256, 8, 8>,
                         ConvTiles<64, 64, 4, 4>, ExecutionSpace>(space, label, in, packed, out, g,
                                                                  init, bias, residual,
                                                                  with_relu);
}

}  // namespace detail
}  // namespace lapis
