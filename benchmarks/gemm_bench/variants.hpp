// The tile variants gemm_bench times, one translation unit a precision (they build in
// parallel).
#pragma once

#include "lapis/gemm_tf32.hpp"

namespace gemm_bench {

// Variant v's name, or nullptr past the last.
const char* variant_name(int v);
// Runs variant v of the linear-layer tiles (B = the weight, [n][k]) on problem p.
template <lapis::Precision P>
void run_variant(int v, const Kokkos::Cuda& space, const lapis::detail::GemmProblem& p);
// The bfloat16 tiles (variants_bf16.cpp): A and B in p.a16 / p.b16, C in p.c16 or p.c.
const char* bf16_variant_name(int v);
void run_bf16_variant(int v, const Kokkos::Cuda& space, const lapis::detail::GemmProblem& p);

}  // namespace gemm_bench
