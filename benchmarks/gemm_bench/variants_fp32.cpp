#include "variants_impl.hpp"

namespace gemm_bench {

const char* variant_name(const int v) {
  static const char* const names[] = {
      "128x128 k16x2 (1)",        "128x64 k16x3 (3)",         "64x64 k16x2",
      "paired 128x128 k16x2",     "paired 128x64 k16x3",      "paired 64x64 k16x2",
      "paired 128x128 k32x2 cuda", "paired 128x128 k32x3 cuda", "paired 128x64 k32x3 cuda",
      "paired 128x128 warps 64x64 k32x3 cuda", "paired 64x64 k16x2, 8 teams",
      "wgmma 128x128 ring 4, 3 buffers (fp32: 3, 2)", "wgmma ring 5, 2 buffers (fp32: 2, 2)",
      "wgmma 128x256 ring 2, 2 buffers (fp32: as 11)", "wgmma ring 3, 3 buffers (fp32: as 11)"};
#if defined(LAPIS_WGMMA)
  constexpr int count = 15;
#else
  constexpr int count = 11;
#endif
  return v >= 0 && v < count ? names[v] : nullptr;
}

template void run_variant<lapis::Precision::fp32>(int, const Kokkos::Cuda&,
                                                  const lapis::detail::GemmProblem&);

}  // namespace gemm_bench
