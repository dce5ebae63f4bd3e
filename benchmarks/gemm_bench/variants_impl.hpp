// Included once a precision by variants_fp32.cpp and variants_tf32.cpp.
#pragma once

#include "variants.hpp"

namespace gemm_bench {

template <lapis::Precision P>
void run_variant(const int v, const Kokkos::Cuda& space, const lapis::detail::GemmProblem& p) {
  using namespace lapis::detail;
  using lapis::Precision;
  const char* label = "gemm_bench";
  switch (v) {
    case 0: return launch_tiles<GemmTiles<128, 128, 64, 32, 16, 2, 2, true, P>>(space, label, p);
    case 1: return launch_tiles<GemmTiles<128, 64, 64, 32, 16, 3, 4, true, P>>(space, label, p);
    case 2: return launch_tiles<GemmTiles<64, 64, 32, 32, 16, 2, 4, true, P>>(space, label, p);
    // Paired fragment reads (16-byte loads, two mma steps a load).
    case 3:
      return launch_tiles<GemmTiles<128, 128, 64, 32, 16, 2, 2, true, P, false, true>>(space,
                                                                                      label, p);
    case 4:
      return launch_tiles<GemmTiles<128, 64, 64, 32, 16, 3, 4, true, P, false, true>>(space,
                                                                                     label, p);
    case 5:
      return launch_tiles<GemmTiles<64, 64, 32, 32, 16, 2, 4, true, P, false, true>>(space, label,
                                                                                    p);
    case 6:
      return launch_tiles<GemmTiles<128, 128, 64, 32, 32, 2, 2, true, P, false, true>>(space,
                                                                                      label, p);
    case 7:
      return launch_tiles<GemmTiles<128, 128, 64, 32, 32, 3, 2, true, P, false, true>>(space,
                                                                                      label, p);
    case 8:
      return launch_tiles<GemmTiles<128, 64, 64, 32, 32, 3, 3, true, P, false, true>>(space,
                                                                                     label, p);
    case 9:
      return launch_tiles<GemmTiles<128, 128, 64, 64, 32, 3, 1, true, P, false, true>>(space,
                                                                                      label, p);
    case 10:
      return launch_tiles<GemmTiles<64, 64, 32, 32, 16, 2, 8, true, P, false, true>>(space, label,
                                                                                    p);
    // fp32: each k step's products summed from zero, then added in float (tf32: as 2 and 1).
    case 18:
      return launch_tiles<GemmTiles<64, 64, 32, 32, 16, 2, 4, true, P, false, false, true>>(
          space, label, p);
    case 19:
      return launch_tiles<GemmTiles<128, 64, 64, 32, 16, 3, 4, true, P, false, false, true>>(
          space, label, p);
    // 2 and 18 with the outputs staged in shared memory (a loop over 16-byte pieces, not
    // unrolled, instead of each thread's pairs of columns 8 rows apart).
    case 23:
      return launch_tiles<
          GemmTiles<64, 64, 32, 32, 16, 2, 4, true, P, true, false, P == Precision::fp32>>(
          space, label, p);
#if defined(LAPIS_WGMMA)
    // wgmma (sm_90a) copied by cp.async: ring 4 deep, 3 buffers (fp32: 3, 2);
    // tf32: ring 5 deep, 2 buffers (fp32: 2, 2); 128 x 256 blocks, ring 2 deep, 2 buffers;
    // ring 3 deep, 3 buffers (fp32: as the first).
    case 11:
      return WgmmaTiles<128, P == Precision::fp32 ? 3 : 4, P == Precision::fp32 ? 2 : 3,
                        P>::run_cuda(space, label, p);
    case 12:
      return WgmmaTiles<128, P == Precision::fp32 ? 2 : 5, 2, P>::run_cuda(space, label, p);
    case 13:
      if constexpr (P == Precision::fp32)
        return HopperTiles<P>::run_cuda(space, label, p);
      else
        return WgmmaTiles<256, 2, 2, P>::run_cuda(space, label, p);
    case 14:
      if constexpr (P == Precision::fp32)
        return HopperTiles<P>::run_cuda(space, label, p);
      else
        return WgmmaTiles<128, 3, 3, P>::run_cuda(space, label, p);
    // The tiles linear layers take (11's, copied by the tensor memory accelerator); tf32 read
    // from the ring as it is, ring 6 deep, and 128 x 256 blocks ring 4 deep, copied so (fp32:
    // the first).
    case 20: return HopperTiles<P>::run_cuda(space, label, p);
    // tf32 read from the ring, 3 deep: 97 KiB, two blocks a multiprocessor (one block's
    // epilogue under the other's products).
    case 21:
    case 22:
    case 24:
      if constexpr (P == Precision::fp32)
        return HopperTiles<P>::run_cuda(space, label, p);
      else if (v == 21)
        return WgmmaTiles<128, 6, 0, P, true>::run_cuda(space, label, p);
      else if (v == 22)
        return WgmmaTiles<256, 4, 0, P, true>::run_cuda(space, label, p);
      else
        return WgmmaTiles<128, 3, 0, P, true>::run_cuda(space, label, p);
    // tf32 read from the ring as it is (no rounding pass): ring 6 deep; 4 deep; 128 x 256
    // blocks, ring 4 deep (fp32: the tiles of 11).
    default:
      if constexpr (P == Precision::fp32)
        return HopperTiles<P>::run_cuda(space, label, p);
      else if (v == 15)
        return WgmmaTiles<128, 6, 0, P>::run_cuda(space, label, p);
      else if (v == 16)
        return WgmmaTiles<128, 4, 0, P>::run_cuda(space, label, p);
      else
        return WgmmaTiles<256, 4, 0, P>::run_cuda(space, label, p);
#else
    default: return;
#endif
  }
}

}  // namespace gemm_bench
