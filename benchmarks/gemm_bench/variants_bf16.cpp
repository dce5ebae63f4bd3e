// --precision bf16 on Hopper: WgmmaTiles<..., Precision::bf16> (bfloat16 operands read from
// the copy engine's ring as they are), by ring depth and block width.
#include "variants.hpp"

namespace gemm_bench {

const char* bf16_variant_name(const int v) {
  static const char* const names[] = {
      "128 x 128, ring 6 (Bf16HopperTiles)", "128 x 128, ring 3 (97 KiB: 2 blocks an SM)",
      "128 x 128, ring 4", "128 x 256, ring 4", "128 x 256, ring 3"};
#if !defined(LAPIS_WGMMA)
  return v >= 0 && v < 5 ? "" : nullptr;
#else
  return v >= 0 && v < 5 ? names[v] : nullptr;
#endif
}

void run_bf16_variant(const int v, const Kokkos::Cuda& space,
                      const lapis::detail::GemmProblem& p) {
#if defined(LAPIS_WGMMA)
  using namespace lapis::detail;
  using lapis::Precision;
  const char* label = "gemm_bench_bf16";
  switch (v) {
    case 0: return Bf16HopperTiles::run_cuda(space, label, p);
    case 1: return WgmmaTiles<128, 3, 0, Precision::bf16, true>::run_cuda(space, label, p);
    case 2: return WgmmaTiles<128, 4, 0, Precision::bf16, true>::run_cuda(space, label, p);
    case 3: return WgmmaTiles<256, 4, 0, Precision::bf16, true>::run_cuda(space, label, p);
    default: return WgmmaTiles<256, 3, 0, Precision::bf16, true>::run_cuda(space, label, p);
  }
#else
  (void)v, (void)space, (void)p;
#endif
}

}  // namespace gemm_bench
