#!/usr/bin/env bash
# The evaluator benchmark (benchmarks/inline_eval.py) on a CUDA GPU, in one command, offline:
# Kokkos configured from a source tree with CUDA for Hopper (H100, H200), the two exported
# --backend cuda packages, sample_app/inline_eval against them, its check and its table.
#
#   benchmarks/inline_eval_gpu.sh KOKKOS_SOURCE [WORK_DIR]
#
# KOKKOS_SOURCE: a Kokkos 4.x source tree (e.g. .kokkos4/src); with CUDA 13, one whose
# bin/nvcc_wrapper defaults to an architecture CUDA 13 has (default_arch="sm_90", not sm_70). WORK_DIR (default
# build-inline-gpu): builds and results; a Kokkos installed there by an earlier run is reused.
# The packages: WORK_DIR/packages/inline_mlp{,64} if they exist (export them elsewhere with
# `python3 benchmarks/inline_eval.py --export-only WORK_DIR/packages --backend cuda`), else
# exported here with python3 (torch and torch-mlir needed). Environment: GRID (1024),
# REPEATS (50), CUDA_ARCH_OPTION (-DKokkos_ARCH_HOPPER90=ON), JOBS (all cores).
set -euo pipefail

if [ $# -lt 1 ] || [ ! -f "$1/CMakeLists.txt" ]; then
  echo "usage: $0 KOKKOS_SOURCE [WORK_DIR]   (KOKKOS_SOURCE: a Kokkos 4.x source tree)" >&2
  exit 2
fi
repo=$(cd "$(dirname "$0")/.." && pwd)
source_dir=$(cd "$1" && pwd)
work=$(mkdir -p "${2:-build-inline-gpu}" && cd "${2:-build-inline-gpu}" && pwd)
grid=${GRID:-1024}
repeats=${REPEATS:-50}
arch=${CUDA_ARCH_OPTION:--DKokkos_ARCH_HOPPER90=ON}
jobs=${JOBS:-$(nproc)}
kokkos="$work/kokkos"

if [ ! -f "$kokkos/lib/cmake/Kokkos/KokkosConfig.cmake" ] && \
   [ ! -f "$kokkos/lib64/cmake/Kokkos/KokkosConfig.cmake" ]; then
  echo "== Kokkos with CUDA from $source_dir"
  cmake -S "$source_dir" -B "$work/kokkos-build" -DCMAKE_BUILD_TYPE=Release \
    -DCMAKE_INSTALL_PREFIX="$kokkos" -DCMAKE_CXX_STANDARD=17 \
    -DCMAKE_CXX_COMPILER="$source_dir/bin/nvcc_wrapper" \
    -DKokkos_ENABLE_SERIAL=ON -DKokkos_ENABLE_CUDA=ON "$arch" -DKokkos_ENABLE_TESTS=OFF \
    -DKokkos_ENABLE_EXAMPLES=OFF > "$work/kokkos-configure.log"
  cmake --build "$work/kokkos-build" -j "$jobs" > "$work/kokkos-build.log"
  cmake --install "$work/kokkos-build" > /dev/null
fi

packages="$work/packages"
if [ ! -d "$packages/inline_mlp" ] || [ ! -d "$packages/inline_mlp64" ]; then
  echo "== exporting inline_mlp and inline_mlp64 (--backend cuda --evaluator)"
  if ! (cd "$repo" && python3 -c "import torch, torch_mlir" 2> /dev/null); then
    echo "$0: no packages in $packages and no python3 with torch and torch_mlir here; run" >&2
    echo "  python3 benchmarks/inline_eval.py --export-only DIR --backend cuda" >&2
    echo "where lapis-export runs, and copy DIR to $packages" >&2
    exit 2
  fi
  (cd "$repo" && python3 benchmarks/inline_eval.py --export-only "$packages" --backend cuda)
fi

echo "== sample_app/inline_eval against them"
cmake -S "$repo/sample_app/inline_eval" -B "$work/app" -DCMAKE_BUILD_TYPE=Release \
  -DKokkos_ROOT="$kokkos" -DCMAKE_CXX_COMPILER="$kokkos/bin/nvcc_wrapper" \
  -DLAPIS_MLP_DIR="$packages/inline_mlp" -DLAPIS_MLP64_DIR="$packages/inline_mlp64" \
  > "$work/app-configure.log"
cmake --build "$work/app" -j "$jobs" > "$work/app-build.log"

echo "== ${grid}x${grid} cells, median of $repeats (table also in $work/results_inline_eval_gpu.md)"
"$work/app/inline_eval" bench "$grid" "$repeats" | tee "$work/results_inline_eval_gpu.md"
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2> /dev/null \
  | tee -a "$work/results_inline_eval_gpu.md" || true
