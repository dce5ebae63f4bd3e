#include "variants_impl.hpp"

namespace gemm_bench {

template void run_variant<lapis::Precision::tf32>(int, const Kokkos::Cuda&,
                                                  const lapis::detail::GemmProblem&);

}  // namespace gemm_bench
