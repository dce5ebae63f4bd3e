"""The CSR kernels on a device backend: SpMV (float64) and SpMM (float32, 16 columns) of a
10,000 x 10,000 matrix (density 1e-3, seed 0, rows 0, 5000, 9999 and every 97th empty),
exported for CUDA (and for OpenMP, to check a Kokkos 4.x host build of the team version too),
built and run where the GPU is, and compared with SciPy's result.

Two halves, as benchmarks/gpu.py, because the export needs torch-mlir and the GPU machine need
not have it:

    # where lapis-export runs: packages, C API timers, inputs and SciPy's outputs
    python benchmarks/sparse_device.py export --out sparse-run/
    # on the GPU machine (CMake, numpy; a Kokkos built with CUDA and OpenMP at KOKKOS):
    bash sparse-run/run.sh KOKKOS

run.sh builds every timer with KOKKOS's nvcc_wrapper, runs it (the C API: on CUDA it copies
the inputs to the device and the output back in each call, which the times include) and prints
the relative error against SciPy (tolerance 1e-12 in float64, 1e-5 in float32) and PASS/FAIL.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import numpy as np
import scipy.sparse

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.sparse import C_TYPES, TIMER  # noqa: E402

N, COLUMNS = 10_000, 16
EMPTY_ROWS = [0, N // 2, N - 1, *range(97, N - 1, 97)]

CMAKE = """cmake_minimum_required(VERSION 3.16)
project(timer_@NAME@ CXX)
set(CMAKE_CXX_STANDARD 17)
find_package(Kokkos REQUIRED)
add_subdirectory(${CMAKE_CURRENT_SOURCE_DIR}/../pkg package)
add_executable(timer timer.cpp)
target_link_libraries(timer PRIVATE @NAME@::@NAME@)
"""

COMPARE = """import sys
import numpy as np
case, timing = sys.argv[1], sys.argv[2]
dtype = open(f"{case}/dtype.txt").read().strip()
ours = np.fromfile(f"{case}/out.bin", dtype=dtype).astype(np.float64)
reference = np.fromfile(f"{case}/expected.bin", dtype=np.float64)
error = np.abs(ours - reference).max() / np.abs(reference).max()
tolerance = 1e-12 if dtype == "float64" else 1e-5
print(f"{case}: {timing.strip()} relative error {error:.2e} (tolerance {tolerance:g}) "
      f"{'PASS' if error <= tolerance else 'FAIL'}")
sys.exit(0 if error <= tolerance else 1)
"""

RUN = r"""#!/usr/bin/env bash
# bash run.sh KOKKOS: build and run each case against the Kokkos installed at KOKKOS.
set -euo pipefail
KOKKOS=$(cd "$1" && pwd)
cd "$(dirname "$0")"
export NVCC_WRAPPER_DEFAULT_ARCH=${NVCC_WRAPPER_DEFAULT_ARCH:-sm_90}
status=0
for entry in @CASES@; do
  case=${entry%%:*}; flags=${entry#*:}; build=$case/build${flags:+_teams}
  cmake -S $case/src -B $build -DCMAKE_BUILD_TYPE=Release -DKokkos_ROOT=$KOKKOS \
        -DCMAKE_CXX_COMPILER=$KOKKOS/bin/nvcc_wrapper "-DCMAKE_CXX_FLAGS=$flags" > $build.log 2>&1
  cmake --build $build -j "$(nproc)" >> $build.log 2>&1 || { tail -30 $build.log; exit 1; }
  timing=$(OMP_NUM_THREADS=$(nproc) OMP_PROC_BIND=false ./$build/timer 200 10 \
           $case/in0.bin $case/in1.bin $case/in2.bin $case/in3.bin $case/out.bin)
  python3 compare.py $case "$build $timing" || status=1
done
exit $status
"""


def matrix(dtype) -> scipy.sparse.csr_matrix:
    rng = np.random.default_rng(0)
    holes = scipy.sparse.random(N, N, density=1e-3, format="csr", random_state=rng,
                                dtype=dtype).tolil()
    for row in EMPTY_ROWS:
        holes.rows[row], holes.data[row] = [], []
    return holes.tocsr()


def export_case(out: Path, name: str, function: str, backend: str, inputs, expected,
                dtype) -> None:
    """The package (nnz dynamic), its C API timer's sources, the inputs and SciPy's output."""
    root = out / name
    (root / "src").mkdir(parents=True, exist_ok=True)
    shapes = ["x".join(map(str, a.shape)) if i not in (1, 2) else "N"
              for i, a in enumerate(inputs)]
    subprocess.run([sys.executable, "-m", "cli", f"{REPO}/examples/science_kernels.py:{function}",
                    "--out", root / "pkg", "--name", name, "--backend", backend, "--force", "-q",
                    *[item for shape, a in zip(shapes, inputs)
                      for item in ("--input-shape", f"{shape}:{a.dtype}")]],
                   cwd=REPO, check=True, stdout=subprocess.DEVNULL)
    nnz = inputs[1].shape[0]           # the C API's two dynamic extents (col_idx, values) first
    out_type = C_TYPES[np.dtype(dtype).name]
    out_bytes = int(np.prod(expected.shape)) * np.dtype(dtype).itemsize
    fields = {
        "NAME": name,
        "PARAMS": ", ".join(["int64_t", "int64_t"]
                            + [f"const {C_TYPES[a.dtype.name]}*" for a in inputs]
                            + [f"{out_type}*"]),
        "READ": "\n".join(f"  auto in{i} = read(argv[{3 + i}], {a.nbytes});"
                          for i, a in enumerate(inputs))
        + f"\n  std::vector<char> out0({out_bytes});",
        "ARGS": ", ".join([str(nnz), str(nnz)]
                          + [f"reinterpret_cast<const {C_TYPES[a.dtype.name]}*>(in{i}.data())"
                             for i, a in enumerate(inputs)]
                          + [f"reinterpret_cast<{out_type}*>(out0.data())"]),
        "WRITE": f"  std::ofstream(argv[{3 + len(inputs)}], std::ios::binary)"
                 f".write(out0.data(), {out_bytes});",
    }
    for file, template in (("timer.cpp", TIMER), ("CMakeLists.txt", CMAKE)):
        text = template
        for key, value in fields.items():
            text = text.replace(f"@{key}@", value)
        (root / "src" / file).write_text(text)
    for i, array in enumerate(inputs):
        np.ascontiguousarray(array).tofile(root / f"in{i}.bin")
    np.asarray(expected, dtype=np.float64).tofile(root / "expected.bin")
    (root / "dtype.txt").write_text(np.dtype(dtype).name + "\n")


def export(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    A, A32 = matrix(np.float64), matrix(np.float32)
    rng = np.random.default_rng(1)
    x = rng.standard_normal(N)
    B = rng.standard_normal((N, COLUMNS)).astype(np.float32)
    csr64 = [A.indptr.astype(np.int64), A.indices.astype(np.int64), A.data]
    csr32 = [A32.indptr.astype(np.int64), A32.indices.astype(np.int64), A32.data]
    export_case(out, "spmv_cuda", "spmv", "cuda", [*csr64, x], A @ x, np.float64)
    export_case(out, "spmm_cuda", "spmm", "cuda", [*csr32, B],
                A32.astype(np.float64) @ B.astype(np.float64), np.float32)
    export_case(out, "spmv_openmp", "spmv", "openmp", [*csr64, x], A @ x, np.float64)
    cases = ["spmv_cuda:", "spmm_cuda:", "spmv_openmp:", "spmv_openmp:-DLAPIS_SPARSE_TEAMS"]
    (out / "run.sh").write_text(RUN.replace("@CASES@", " ".join(cases)))
    (out / "compare.py").write_text(COMPARE)
    print(f"wrote {out}; on the GPU machine: bash {out}/run.sh KOKKOS")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("export").add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    export(args.out)


if __name__ == "__main__":
    main()
