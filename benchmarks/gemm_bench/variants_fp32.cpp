#include "variants_impl.hpp"

namespace gemm_bench {

const char* variant_name(const int v) {
  static const char* const names[] = {
      "k16x2 (1)",      "k8x3 (2)",       "128x64 k16x3 (3)", "k32x3 cuda (4)",
      "k16x4 cuda (5)", "k32x4 cuda (6)", "k16x3 cuda (7)",   "64x64 k16x2",
      "k32x3 cuda, staged store", "k16x4 cuda, staged store", "k16x2 cuda, staged store"};
  return v >= 0 && v < 11 ? names[v] : nullptr;
}

template void run_variant<lapis::Precision::fp32>(int, const Kokkos::Cuda&,
                                                  const lapis::detail::GemmProblem&);

}  // namespace gemm_bench
