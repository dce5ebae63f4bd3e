#!/usr/bin/env bash
# The main job of the README: make a ResNet18 TorchScript file (random weights, fixed seed),
# export it to a Kokkos package, build sample_app against it, run one inference and compare
# with PyTorch.
set -euo pipefail
cd "$(dirname "$0")/.."
BACKEND="${BACKEND:-openmp}"
export OMP_PROC_BIND="${OMP_PROC_BIND:-false}"   # quiets Kokkos' OpenMP binding advice
WORK="${WORK:-out/demo}"
python3 -m pip install --quiet --disable-pip-version-check -e .
KOKKOS_ROOT="$(python3 -m kokkos_support.provision)"
mkdir -p "$WORK"
python3 -m integration_tests.make_model resnet18 --format torchscript --out "$WORK/resnet18.pt" \
  --input "$WORK/input.bin" --reference "$WORK/reference.bin"
time lapis-export "$WORK/resnet18.pt" --input-shape 1x3x224x224 --backend "$BACKEND" \
  --out "$WORK/resnet18" --force
cmake -S sample_app -B "$WORK/build" -DCMAKE_BUILD_TYPE=Release -DKokkos_ROOT="$KOKKOS_ROOT" \
  -DLAPIS_PACKAGE_DIR="$PWD/$WORK/resnet18" -DLAPIS_MODEL=resnet18 >/dev/null
cmake --build "$WORK/build" -j "$(nproc)" >/dev/null
"$WORK/build/sample_app" --input "$WORK/input.bin" --output "$WORK/output.bin" --steps 5
python3 -m integration_tests.compare "$WORK/output.bin" "$WORK/reference.bin" --tolerance 1e-4
