#!/usr/bin/env bash
# The test command of the README: installs the project (and, once, Kokkos into the cache),
# then runs the unit tests and the end-to-end integration tests.
set -euo pipefail
cd "$(dirname "$0")/.."
# The Fortran and MPI sample hosts need gfortran and OpenMPI, the HIP compile hipcc, the LAMMPS
# host liblammps (Debian).
missing=()
command -v gfortran >/dev/null || missing+=(gfortran)
command -v mpirun >/dev/null || missing+=(openmpi-bin)
command -v mpicxx >/dev/null || missing+=(libopenmpi-dev)
# hipcc and the HIP runtime headers (ROCm 5.2) compile the HIP packages (nothing runs).
command -v hipcc >/dev/null || missing+=(hipcc libamdhip64-dev)
# LAMMPS' library and CMake package for the sample_app/lammps host.
compgen -G '/usr/lib/*/cmake/LAMMPS/LAMMPSConfig.cmake' >/dev/null || missing+=(lammps liblammps-dev)
if ((${#missing[@]})); then
  sudo=()
  [[ $(id -u) == 0 ]] || sudo=(sudo)
  echo "installing ${missing[*]} (apt-get)" >&2
  "${sudo[@]}" apt-get update -qq
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    "${missing[@]}" >/dev/null
fi
python3 -m pip install --quiet --disable-pip-version-check -e '.[test]'
# clang++ (and its OpenMP header) for the warnings gate in integration_tests/test_quality_gate.py.
if ! command -v clang++ >/dev/null || [ -z "$(find /usr/lib/llvm-* -name omp.h 2>/dev/null)" ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get update -qq && apt-get install -y -qq clang libomp-dev >/dev/null
  else
    echo "test.sh: clang++ or libomp-dev missing (apt-get install clang libomp-dev); its tests skip" >&2
  fi
fi
python3 -m kokkos_support.provision >/dev/null
python3 -m kokkos_support.provision --hip >/dev/null   # once: about 2 minutes on 2 cores
python3 -m pytest -q --durations=25 tests integration_tests "$@"
