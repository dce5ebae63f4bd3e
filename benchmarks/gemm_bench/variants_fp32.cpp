#include "variants_impl.hpp"

namespace gemm_bench {

const char* variant_name(const int v) {
  static const char* const names[] = {"128x128 k16x2 (1)", "128x64 k16x3 (3)", "64x64 k16x2",
                                      "128x128 k16x4 cuda, staged store (9)",
                                      "128x64 k16x3, staged store"};
  return v >= 0 && v < 5 ? names[v] : nullptr;
}

template void run_variant<lapis::Precision::fp32>(int, const Kokkos::Cuda&,
                                                  const lapis::detail::GemmProblem&);

}  // namespace gemm_bench
