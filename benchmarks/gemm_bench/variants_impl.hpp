// Included once a precision by variants_fp32.cpp and variants_tf32.cpp.
#pragma once

#include "variants.hpp"

namespace gemm_bench {

template <lapis::Precision P>
void run_variant(const int v, const Kokkos::Cuda& space, const lapis::detail::GemmProblem& p) {
  using namespace lapis::detail;
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
    default:
      return launch_tiles<GemmTiles<64, 64, 32, 32, 16, 2, 8, true, P, false, true>>(space, label,
                                                                                    p);
  }
}

}  // namespace gemm_bench
