#include "variants_impl.hpp"

namespace gemm_bench {

const char* variant_name(const int v) {
  static const char* const names[] = {
      "128x128 k16x2 (1)",        "128x64 k16x3 (3)",         "64x64 k16x2",
      "paired 128x128 k16x2",     "paired 128x64 k16x3",      "paired 64x64 k16x2",
      "paired 128x128 k32x2 cuda", "paired 128x128 k32x3 cuda", "paired 128x64 k32x3 cuda",
      "paired 128x128 warps 64x64 k32x3 cuda", "paired 64x64 k16x2, 8 teams",
      "wgmma 128x128 ring 4, 3 buffers (fp32: 3, 2), cp.async",
      "wgmma ring 5, 2 buffers (fp32: 2, 2)",
      "wgmma 128x256 ring 2, 2 buffers (fp32: as 11)", "wgmma ring 3, 3 buffers (fp32: as 11)",
      "wgmma tf32 direct, ring 6 (fp32: as 11)", "wgmma tf32 direct, ring 4 (fp32: as 11)",
      "wgmma tf32 direct 128x256, ring 4 (fp32: as 11)",
      "64x64 k16x2, fp32 sums fresh each k step", "128x64 k16x3, fp32 sums fresh each k step",
      "wgmma as 11, copy engine (the default)",
      "wgmma tf32 direct ring 6, copy engine (fp32: as 20)",
      "wgmma tf32 direct 128x256 ring 4, copy engine (fp32: as 20)",
      "64x64 k16x2 staged store (fp32: fresh sums)",
      "wgmma tf32 direct ring 3, copy engine, 2 blocks an SM (fp32: as 20)"};
#if !defined(LAPIS_WGMMA)
  // The wgmma tiles: Hopper builds only.
  if ((v >= 11 && v < 18) || (v >= 20 && v < 23) || v == 24) return "";
#endif
  return v >= 0 && v < 25 ? names[v] : nullptr;
}

template void run_variant<lapis::Precision::fp32>(int, const Kokkos::Cuda&,
                                                  const lapis::detail::GemmProblem&);

}  // namespace gemm_bench
