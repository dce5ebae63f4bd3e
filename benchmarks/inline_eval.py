"""The model inside the simulation's own kernel (lapis-export --evaluator) against a launch of
forward(): a 2-D stencil on an N x N periodic grid gives each cell 3 features, and a 3-layer,
32-wide MLP (integration_tests/inline_eval.py) turns them into 2 values per cell.
sample_app/inline_eval times, in one run, stencil + inline MLP per thread, the same per team
with the weights in team scratch, the stencil's features through Evaluator(team, count, ...),
and the stencil followed by the batched forward() over all cells; PyTorch eager (the same
stencil with torch.roll, then the MLP) at the same thread count is the last row.

    python benchmarks/inline_eval.py [--grid 1024] [--repeats 10] [--threads 2]
    python benchmarks/inline_eval.py --export-only DIR --backend cuda   (for inline_eval_gpu.sh)
"""
from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from integration_tests import inline_eval  # noqa: E402
from kokkos_support.provision import ensure_kokkos  # noqa: E402

RESULTS = REPO / "benchmarks" / "results_inline_eval.md"


def sh(command, env=None) -> str:
    result = subprocess.run([str(c) for c in command], capture_output=True, text=True, env=env)
    if result.returncode:
        sys.exit(f"{' '.join(map(str, command))} failed:\n{result.stdout[-2000:]}"
                 f"{result.stderr[-2000:]}")
    return result.stdout


def export_packages(out: Path, backend: str) -> dict[str, Path]:
    out.mkdir(parents=True, exist_ok=True)
    return {name: inline_eval.export(path, out / name, name, backend)
            for name, path in inline_eval.save_models(out).items()}


def torch_median_ms(grid: int, threads: int, repeats: int) -> float:
    """The stencil (torch.roll) and the MLP in PyTorch eager, float32."""
    torch.set_num_threads(threads)
    i, j = torch.meshgrid(torch.arange(grid), torch.arange(grid), indexing="ij")
    x, y = 2 * torch.pi * i / grid, 2 * torch.pi * j / grid
    u = (torch.sin(x) * torch.cos(2 * y) + 0.1 * ((i * 7 + j * 13) % 17) / 17.0).float()
    net = inline_eval.network(torch.float32)

    def step():
        laplacian = (u.roll(1, 0) + u.roll(-1, 0) + u.roll(1, 1) + u.roll(-1, 1) - 4 * u)
        gradient = 0.5 * (u.roll(-1, 1) - u.roll(1, 1))
        return net(torch.stack([u, laplacian, gradient], -1).reshape(-1, 3))

    times = []
    with torch.inference_mode():
        for k in range(repeats + 2):
            start = time.perf_counter()
            step()
            if k >= 2:
                times.append((time.perf_counter() - start) * 1e3)
    return float(np.median(times))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--grid", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--export-only", type=Path, metavar="DIR",
                        help="only write the packages inline_mlp and inline_mlp64 to DIR")
    parser.add_argument("--backend", default="openmp")
    args = parser.parse_args()
    if args.export_only:
        for path in export_packages(args.export_only, args.backend).values():
            print(path)
        return
    kokkos = ensure_kokkos()
    with tempfile.TemporaryDirectory(prefix="inline_eval_") as tmp:
        work = Path(tmp)
        packages = export_packages(work, args.backend)
        build = work / "build"
        sh(["cmake", "-S", REPO / "sample_app" / "inline_eval", "-B", build,
            "-DCMAKE_BUILD_TYPE=Release", f"-DKokkos_ROOT={kokkos}",
            f"-DLAPIS_MLP_DIR={packages['inline_mlp']}",
            f"-DLAPIS_MLP64_DIR={packages['inline_mlp64']}"])
        sh(["cmake", "--build", build, "-j", "2"])
        env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "OMP_PROC_BIND": "false"}
        table = sh([build / "inline_eval", "bench", args.grid, args.repeats], env=env)
    eager = torch_median_ms(args.grid, args.threads, args.repeats)
    forward = float(next(line for line in table.splitlines()
                         if "batched forward()" in line).split("|")[2])
    lines = table.rstrip().splitlines()
    at = next(k for k, line in enumerate(lines) if line.startswith("| (the stencil"))
    lines.insert(at, f"| PyTorch eager: the stencil (torch.roll), then the MLP | {eager:.3f} | "
                     f"{forward / eager:.2f}x |")
    text = "\n".join([
        "# The model inside the simulation's kernel: lapis-export --evaluator",
        "",
        f"`python benchmarks/inline_eval.py --grid {args.grid} --repeats {args.repeats} "
        f"--threads {args.threads}`; {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} cores, OpenMP with {args.threads} threads (Kokkos "
        f"{kokkos.name.split('-')[1]}), torch {torch.__version__} with {args.threads} threads. "
        "Median of the repeats; each is one step over every cell, fenced. The last column is "
        "the batched forward()'s time over the row's (above 1: faster than the stencil "
        "followed by forward()). The model: Linear(3, 32) - SiLU - Linear(32, 32) - Tanh - "
        "Linear(32, 2), float32.",
        "",
        *lines,
        ""])
    RESULTS.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
