"""Computational-science kernels on the CPU: SpMV / SpMM (CSR, exporter.sparse) and a dense
GEMM exported from examples/science_kernels.py, against SciPy / NumPy and PyTorch, in one run;
writes a markdown table.

    python benchmarks/sparse.py [--threads 1 2] [--runs 200]

Ours: the package built with the OpenMP backend, called through its C API (NAME_forward_host,
which fences before it returns; on host backends it wraps the caller's buffers, no copies) in a
C++ loop timed with std::chrono. References: SciPy's CSR product (single-threaded by design),
NumPy's BLAS matmul, PyTorch's sparse CSR and dense matmul, at the same thread count, each in a
process of its own. Each of our results is checked against SciPy/NumPy.
Rows: kernel, size, dtype, threads, ours, SciPy/NumPy and PyTorch (median / best ms), ratios
ours / them (below 1: ours is faster).
"""
from __future__ import annotations

import argparse
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import scipy.sparse
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from kokkos_support.provision import ensure_kokkos  # noqa: E402

KERNELS = REPO / "examples" / "science_kernels.py"
C_TYPES = {"float32": "float", "float64": "double", "int64": "int64_t", "int32": "int32_t"}

TIMER = r"""// Times NAME_forward_host (which fences) on inputs read from files; prints the median and
// the best time in ms.
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <vector>

extern "C" int @NAME@_initialize(void);
extern "C" int @NAME@_finalize(void);
extern "C" const char* @NAME@_last_error(void);
extern "C" int @NAME@_forward_host(@PARAMS@);

static std::vector<char> read(const char* path, size_t bytes) {
  std::vector<char> data(bytes);
  std::ifstream file(path, std::ios::binary);
  file.read(data.data(), std::streamsize(bytes));
  if (!file) { std::fprintf(stderr, "cannot read %s\n", path); std::exit(1); }
  return data;
}

int main(int argc, char** argv) {
  const int runs = std::atoi(argv[1]), warmup = std::atoi(argv[2]);
  if (@NAME@_initialize() != 0) { std::fprintf(stderr, "%s\n", @NAME@_last_error()); return 1; }
@READ@
  std::vector<double> times;
  for (int i = 0; i < warmup + runs; ++i) {
    const auto start = std::chrono::steady_clock::now();
    if (@NAME@_forward_host(@ARGS@) != 0) {
      std::fprintf(stderr, "%s\n", @NAME@_last_error());
      return 1;
    }
    const auto stop = std::chrono::steady_clock::now();
    if (i >= warmup)
      times.push_back(std::chrono::duration<double, std::milli>(stop - start).count());
  }
  std::sort(times.begin(), times.end());
  std::printf("median_ms=%.6f best_ms=%.6f\n", times[times.size() / 2], times.front());
@WRITE@
  @NAME@_finalize();
  return 0;
}
"""

CMAKE = """cmake_minimum_required(VERSION 3.16)
project(timer_@NAME@ CXX)
set(CMAKE_CXX_STANDARD 17)
find_package(Kokkos REQUIRED)
add_subdirectory(@PACKAGE@ package)
add_executable(timer timer.cpp)
target_link_libraries(timer PRIVATE @NAME@::@NAME@)
"""


def sh(command, env=None, cwd=None) -> str:
    result = subprocess.run([str(c) for c in command], capture_output=True, text=True, env=env,
                            cwd=cwd)
    if result.returncode:
        sys.exit(f"{' '.join(map(str, command))} failed:\n{result.stdout[-2000:]}"
                 f"{result.stderr[-2000:]}")
    return result.stdout


def timings_ms(call, runs: int, warmup: int = 5) -> tuple[float, float]:
    """(median, best) of `runs` timed calls after `warmup` untimed ones, in ms."""
    times = []
    for i in range(warmup + runs):
        start = time.perf_counter()
        call()
        if i >= warmup:
            times.append((time.perf_counter() - start) * 1e3)
    return float(np.median(times)), float(min(times))


class Ours:
    """KERNELS:function exported for these inputs (openmp) with its C API timer built."""

    def __init__(self, work: Path, function: str, inputs: list[np.ndarray], output_shape,
                 output_dtype, kokkos_root: Path):
        name = f"bench_{function}"
        package, build = work / name, work / f"{name}_timer"
        shapes = [f"{'x'.join(map(str, a.shape))}:{a.dtype}" for a in inputs]
        start = time.perf_counter()
        sh([sys.executable, "-m", "cli", f"{KERNELS}:{function}", "--out", package, "--name",
            name, "--backend", "openmp", "--force", "-q",
            *[item for shape in shapes for item in ("--input-shape", shape)]], cwd=REPO)
        out_type = C_TYPES[str(np.dtype(output_dtype))]
        params = [f"const {C_TYPES[str(a.dtype)]}*" for a in inputs] + [f"{out_type}*"]
        read = "\n".join(f"  auto in{i} = read(argv[{3 + i}], {a.nbytes});"
                         for i, a in enumerate(inputs))
        out_bytes = int(np.prod(output_shape)) * np.dtype(output_dtype).itemsize
        read += f"\n  std::vector<char> out0({out_bytes});"
        args = [f"reinterpret_cast<const {C_TYPES[str(a.dtype)]}*>(in{i}.data())"
                for i, a in enumerate(inputs)] + [f"reinterpret_cast<{out_type}*>(out0.data())"]
        write = (f"  std::ofstream(argv[{3 + len(inputs)}], std::ios::binary)"
                 f".write(out0.data(), {out_bytes});")
        source = build / "src"
        source.mkdir(parents=True, exist_ok=True)
        fields = {"NAME": name, "PARAMS": ", ".join(params), "READ": read,
                  "ARGS": ", ".join(args), "WRITE": write, "PACKAGE": str(package)}
        for file, template in (("timer.cpp", TIMER), ("CMakeLists.txt", CMAKE)):
            text = template
            for key, value in fields.items():
                text = text.replace(f"@{key}@", value)
            (source / file).write_text(text)
        sh(["cmake", "-S", source, "-B", build / "b", "-DCMAKE_BUILD_TYPE=Release",
            f"-DKokkos_ROOT={kokkos_root}"])
        sh(["cmake", "--build", build / "b", "-j", "2"])
        self.export_build_s = time.perf_counter() - start
        self.files = []
        for i, array in enumerate(inputs):
            self.files.append(work / f"{name}_in{i}.bin")
            np.ascontiguousarray(array).tofile(self.files[-1])
        self.timer, self.result_file = build / "b" / "timer", work / f"{name}_out.bin"
        self.output_shape, self.output_dtype = output_shape, output_dtype

    def time(self, threads: int, runs: int) -> tuple[tuple[float, float], np.ndarray]:
        """((median, best) ms, the output of the last run)."""
        env = {**os.environ, "OMP_NUM_THREADS": str(threads), "OMP_PROC_BIND": "false"}
        out = sh([self.timer, runs, 5, *self.files, self.result_file], env)
        match = re.search(r"median_ms=([0-9.eE+-]+) best_ms=([0-9.eE+-]+)", out)
        if not match:
            sys.exit(f"the timer printed no timing:\n{out}")
        result = np.fromfile(self.result_file, dtype=self.output_dtype)
        return (float(match[1]), float(match[2])), result.reshape(self.output_shape)


def reference_ms(work: Path, library: str, kernel: str, arrays: dict[str, np.ndarray],
                 threads: int, runs: int) -> tuple[float, float]:
    """(Median, best) ms of SciPy/NumPy (`library` "scipy") or PyTorch ("torch") computing `kernel`,
    each in a process of its own: in one process the BLAS and OpenMP thread pools of the two
    spin against each other on a small machine."""
    data = work / f"{kernel}_reference.npz"
    if not data.exists():
        np.savez(data, **arrays)
    pools = {name: str(threads) for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                                             "MKL_NUM_THREADS")}
    out = sh([sys.executable, __file__, "--worker", library, kernel, data, str(threads),
              str(runs)], env={**os.environ, **pools})
    median, best = out.split()[-2:]
    return float(median), float(best)


def worker(library: str, kernel: str, data: str, threads: int, runs: int) -> None:
    arrays = dict(np.load(data))
    if kernel.partition("_")[0] in ("spmv", "spmm"):
        n = arrays["row_ptr"].shape[0] - 1
        columns = arrays["dense"].shape[0]
        if library == "scipy":
            A = scipy.sparse.csr_matrix((arrays["values"], arrays["col_idx"], arrays["row_ptr"]),
                                        shape=(n, columns))
            dense = arrays["dense"]
        else:
            torch.set_num_threads(threads)
            with warnings.catch_warnings():   # torch: sparse CSR support is in beta
                warnings.simplefilter("ignore")
                A = torch.sparse_csr_tensor(*(torch.from_numpy(arrays[key]) for key in (
                    "row_ptr", "col_idx", "values")), size=(n, columns))
            dense = torch.from_numpy(arrays["dense"])
        print(*timings_ms(lambda: A @ dense, runs))
        return
    first, second = arrays["A"], arrays["B"]
    if library == "torch":
        torch.set_num_threads(threads)
        first, second = torch.from_numpy(first), torch.from_numpy(second)
    print(*timings_ms(lambda: first @ second, runs))


def check(name: str, result: np.ndarray, reference: np.ndarray, tolerance: float) -> float:
    reference = np.asarray(reference, dtype=np.float64)
    error = float(np.abs(result - reference).max() / np.abs(reference).max())
    if error > tolerance:
        sys.exit(f"{name}: relative error {error:.3g} over {tolerance:g}")
    return error


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, os.cpu_count() or 2])
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--n", type=int, default=10_000, help="rows and columns of the CSR matrix")
    parser.add_argument("--density", type=float, nargs="+", default=[1e-3, 1e-2])
    parser.add_argument("--spmm-columns", type=int, default=16)
    parser.add_argument("--gemm", type=int, default=512)
    parser.add_argument("--worker", nargs=5, help=argparse.SUPPRESS)
    parser.add_argument("--work", type=Path, help="keep the packages and timers here")
    parser.add_argument("--output", type=Path,
                        default=REPO / "benchmarks" / "results_sparse.md")
    args = parser.parse_args()
    if args.worker:
        library, kernel, data, threads, runs = args.worker
        worker(library, kernel, data, int(threads), int(runs))
        return
    kokkos_root = ensure_kokkos()
    load_before = os.getloadavg()[0]
    rng = np.random.default_rng(0)
    rows = []

    def row(kernel, size, dtype, threads, mine, first, second, export_s, first_name, error):
        kernel = {"spmv": "SpMV", "spmm": "SpMM", "gemm": "GEMM"}[kernel.partition("_")[0]]
        ratios = [(m / a, m / b) for m, a, b in zip(mine, first, second)]   # median, best
        rows.append((kernel, size, dtype, threads, mine, first, second, ratios, export_s,
                     first_name, error))
        print(f"{kernel:5s} {size:28s} {dtype:8s} threads={threads} ours={mine[0]:8.3f} ms "
              f"{first_name}={first[0]:8.3f} ms torch={second[0]:8.3f} ms  median ratios "
              f"{ratios[0][0]:5.2f} {ratios[0][1]:5.2f}, best {ratios[1][0]:5.2f} "
              f"{ratios[1][1]:5.2f}  (export+build {export_s:.1f} s, error {error:.1e})",
              flush=True)

    with tempfile.TemporaryDirectory(prefix="lapis-bench-sparse-") as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        n = args.n

        def measure(kernel, size, dtype, package, reference_name, arrays, expected,
                    tolerance, runs):
            for threads in args.threads:
                mine, result = package.time(threads, runs)
                error = check(kernel, result, expected, tolerance)
                first = reference_ms(work, "scipy", kernel, arrays, threads, runs)
                row(kernel, size, dtype, threads, mine, first,
                    reference_ms(work, "torch", kernel, arrays, threads, runs),
                    package.export_build_s, reference_name, error)

        for density in args.density:
            A = scipy.sparse.random(n, n, density=density, format="csr", random_state=rng,
                                    dtype=np.float64)
            csr = [A.indptr.astype(np.int64), A.indices.astype(np.int64), A.data]
            named = dict(zip(("row_ptr", "col_idx", "values"), csr))
            size = f"{n}x{n}, nnz {A.nnz:,} ({density:g})"
            x = rng.standard_normal(n)
            package = Ours(work, "spmv", [*csr, x], (n,), np.float64, kokkos_root)
            measure(f"spmv_{density:g}", size, "float64", package, "SciPy",
                    {**named, "dense": x}, A @ x, 1e-12, args.runs)
            if density == args.density[0]:
                B = rng.standard_normal((n, args.spmm_columns))
                package = Ours(work, "spmm", [*csr, B], (n, args.spmm_columns), np.float64,
                               kokkos_root)
                measure("spmm", f"{size} x {args.spmm_columns}", "float64", package, "SciPy",
                        {**named, "dense": B}, A @ B, 1e-12, args.runs)
        m = args.gemm
        G1, G2 = (rng.standard_normal((m, m)).astype(np.float32) for _ in range(2))
        package = Ours(work, "gemm", [G1, G2], (m, m), np.float32, kokkos_root)
        measure("gemm", f"{m}x{m} @ {m}x{m}", "float32", package, "NumPy", {"A": G1, "B": G2},
                G1.astype(np.float64) @ G2.astype(np.float64), 1e-5, max(5, args.runs // 20))
        load_after = os.getloadavg()[0]

    command = (f"python benchmarks/sparse.py --threads {' '.join(map(str, args.threads))} "
               f"--runs {args.runs}"
               + (f" --n {args.n}" if args.n != 10_000 else ""))
    lines = [
        "# Sparse and dense kernels on the CPU: exported package vs SciPy/NumPy and PyTorch",
        "",
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; "
        f"torch {torch.__version__}, numpy {np.__version__}, scipy {scipy.__version__}; "
        f"Kokkos at {kokkos_root.name}, OpenMP backend. The machine is shared: load average "
        f"{load_before:.1f} before the run, {load_after:.1f} after.",
        f"Command: `{command}`. Median of the timed runs after 5 warm-ups (GEMM: "
        f"{max(5, args.runs // 20)} runs). Ours: the C API (NAME_forward_host, fenced) in a C++ "
        "loop at OMP_NUM_THREADS=threads; SciPy's CSR product is single-threaded, NumPy's "
        "matmul is its BLAS (OPENBLAS_NUM_THREADS=threads), PyTorch runs at "
        "torch.set_num_threads(threads); each reference in a process of its own. The CSR "
        "matrix is scipy.sparse.random (seed 0), the result checked against SciPy/NumPy (max "
        "relative error shown).",
        "",
        "Each time is `median / best` of the runs, and so is each ratio: on a loaded machine "
        "the best run is the closer estimate of the kernel's own speed.",
        "",
        "| kernel | size | dtype | threads | ours (ms) | SciPy/NumPy (ms) | PyTorch (ms) "
        "| ours / SciPy-NumPy | ours / PyTorch | error | export + build (s) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]

    def pair(values, digits: int) -> str:
        return " / ".join(f"{v:.{digits}f}" for v in values)
    lines += [f"| {k} | {s} | {d} | {th} | {pair(o, 3)} | {pair(f, 3)} ({fn}) | {pair(t, 3)} "
              f"| {pair([r[0] for r in q], 2)} | {pair([r[1] for r in q], 2)} | {err:.1e} "
              f"| {e:.1f} |" for k, s, d, th, o, f, t, q, e, fn, err in rows]
    args.output.write_text("\n".join(lines) + "\n")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
