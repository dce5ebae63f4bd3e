// An experimental variant of lapis::detail::ConvTilesTF32 for conv_bench: compiled, not yet
// run on a GPU (no measurement, no correctness check so far). It replaces the register-staged
// double buffer with `cp.async` copies, `Stages` deep.
#pragma once

#include "lapis/kernels.hpp"

#if defined(KOKKOS_ENABLE_CUDA)
namespace lapis {
namespace detail {
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
struct ConvTilesAsync {
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

  static int64_t teams(int64_t channels_out, int64_t pixels) {
    return ((channels_out + BM - 1) / BM) * ((pixels + BN - 1) / BN);
  }

  template <class ExecutionSpace, class Input, class PackedWeight, class Bias, class Residual,
            class Output>
  static void run(const char* label, const Input& in, const PackedWeight& packed,
                  const Output& out, const ConvGeometry g, const ConvInit init,
                  const Bias& bias, const Residual& residual, const bool with_relu,
                  const int splits = 1) {
    const int64_t kernel_h = packed.extent(2), kernel_w = packed.extent(3);
    if (kernel_h == 1 && kernel_w == 1)
      run_taps<1, 1, ExecutionSpace>(label, in, packed, out, g, init, bias, residual, with_relu,
                                     splits);
    else if (kernel_h == 3 && kernel_w == 3)
      run_taps<3, 3, ExecutionSpace>(label, in, packed, out, g, init, bias, residual, with_relu,
                                     splits);
    else if (kernel_h == 7 && kernel_w == 7)
      run_taps<7, 7, ExecutionSpace>(label, in, packed, out, g, init, bias, residual, with_relu,
                                     splits);
    else
      run_taps<0, 0, ExecutionSpace>(label, in, packed, out, g, init, bias, residual, with_relu,
                                     splits);
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
    const int channels_out = out.extent(1), width_out = out.extent(3);
    const int plane = out.extent(2) * width_out, pixels = int(out.extent(0)) * plane;
    const int height_in = in.extent(2), width_in = in.extent(3);
    const int kernel_w = KW ? KW : int(packed.extent(3));
    const int taps = KH && KW ? KH * KW : int(packed.extent(2) * packed.extent(3));
    const int depth = int(in.extent(1)) * taps;
    const int tiles_m = (channels_out + BM - 1) / BM, blocks = packed.extent(0);
    const int tiles = teams(channels_out, pixels);
    const int slice = (depth / splits + BK - 1) / BK * BK;  // whole steps of k per split
    const int stride_h = g.stride_h, stride_w = g.stride_w, pad_h = g.pad_h, pad_w = g.pad_w;
    const int dilation_h = g.dilation_h, dilation_w = g.dilation_w;
    const bool with_residual = residual.data() != nullptr && splits == 1;
    const T* weights = packed.data();
    const T* image = in.data();
    const size_t scratch = size_t(Stages) * BK * (LDA + LDB) * sizeof(T);
    Kokkos::parallel_for(
        label,
        policy(tiles * splits, threads).set_scratch_size(0, Kokkos::PerTeam(scratch)),
        KOKKOS_LAMBDA(const member& team) {
          T* const a_tiles = static_cast<T*>(team.team_scratch(0).get_shmem_aligned(scratch, 16));
          T* const b_tiles = a_tiles + Stages * BK * LDA;
          const int rank = team.team_rank();
          const int tile = team.league_rank() % tiles;
          const int m0 = (tile % tiles_m) * BM, p0 = (tile / tiles_m) * BN;
          const int k_begin = team.league_rank() / tiles * slice;
          const int k_end = k_begin + slice < depth ? k_begin + slice : depth;
          const int p_stage = p0 + rank % BN;
          const int n_stage = p_stage / plane, q_stage = p_stage % plane;
          const int ih0 = (q_stage / width_out) * stride_h - pad_h;
          const int iw0 = (q_stage % width_out) * stride_w - pad_w;
          const bool p_valid = p_stage < pixels;
          const int n_safe = p_valid ? n_stage : 0;
          // Step k0's weights and input into stage `buffer` (zeros past k_end and the image).
          const auto load = [&](const int k0, const int buffer) {
            T* a_tile = a_tiles + buffer * BK * LDA;
            T* b_tile = b_tiles + buffer * BK * LDB;
            LAPIS_UNROLL
            for (int r = 0; r < a_chunks; ++r) {  // BM / 8 blocks x BK taps x two halves
              const int c = rank + r * threads;
              if (a_total % threads != 0 && c >= a_total) break;
              const int block = c / (2 * BK), k = (c / 2) % BK, half = c % 2;
              const int b = m0 / conv_channel_block + block;
              const bool valid = b < blocks && k0 + k < k_end;
              tf32::copy16(a_tile + k * LDA + block * conv_channel_block + half * 4,
                           valid ? weights + (int64_t(b) * depth + k0 + k) * conv_channel_block +
                                       half * 4
                                 : weights,
                           valid);
            }
            LAPIS_UNROLL
            for (int r = 0; r < b_staged; ++r) {  // BK taps x BN pixels
              const int kr = rank / BN + r * (threads / BN), k = k0 + kr;
              const int ic = k / taps, tap = k % taps;
              const int ih = ih0 + (tap / kernel_w) * dilation_h;
              const int iw = iw0 + (tap % kernel_w) * dilation_w;
              const bool valid = p_valid && k < k_end && ih >= 0 && ih < height_in && iw >= 0 &&
                                 iw < width_in;
              tf32::copy4(b_tile + kr * LDB + rank % BN,
                          valid ? &in(n_safe, ic, ih, iw) : image, valid);
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
            if (k_begin + s * BK < k_end) load(k_begin + s * BK, s);
            tf32::commit();
          }
          for (int k0 = k_begin, buffer = 0; k0 < k_end; k0 += BK) {
            tf32::wait<Stages - 2>();  // this step's copies (this thread's) have landed
            team.team_barrier();       // everyone's; and everyone is done with step - 1
            const int ahead = k0 + (Stages - 1) * BK;
            if (ahead < k_end) load(ahead, (buffer + Stages - 1) % Stages);
            tf32::commit();
            const T* a_tile = a_tiles + buffer * BK * LDA;
            const T* b_tile = b_tiles + buffer * BK * LDB;
            LAPIS_UNROLL
            for (int kk = 0; kk < BK; kk += 8)
              Tiles::step(a_tile + kk * LDA, b_tile + kk * LDB, wm0, wn0, lane, acc);
            buffer = buffer + 1 == Stages ? 0 : buffer + 1;
          }
          tf32::wait<0>();
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
        });
  }
};
}  // namespace detail
}  // namespace lapis
#endif
