"""Side-by-side CPU timing: exported packages (run by sample_app, timed in C++) against
PyTorch eager at the same thread count, in one run; writes a markdown table.

    python benchmarks/cpu.py [--models resnet18 resnet18:8 mlp small_cnn] [--threads 2] [--runs 20]

A model is named as in integration_tests/models.py, optionally with `:BATCH` to change the
batch size of its input.

Rows: model, backend, threads, ours (median ms), PyTorch eager (median ms), ratio
(ours / PyTorch; below 1 is faster than PyTorch), export+build time.
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
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from integration_tests.make_model import save_model  # noqa: E402
from integration_tests.models import build  # noqa: E402
from kokkos_support.provision import ensure_kokkos  # noqa: E402


def sh(command, env=None) -> str:
    result = subprocess.run([str(c) for c in command], capture_output=True, text=True, env=env)
    if result.returncode:
        sys.exit(f"{' '.join(map(str, command))} failed:\n{result.stderr[-2000:]}")
    return result.stdout


def torch_median_ms(model, example, threads: int, runs: int, warmup: int = 3) -> float:
    torch.set_num_threads(threads)
    times = []
    with torch.inference_mode():
        for i in range(warmup + runs):
            start = time.perf_counter()
            model(example)
            if i >= warmup:
                times.append((time.perf_counter() - start) * 1e3)
    return float(np.median(times))


def ours_median_ms(work: Path, model_name: str, backend: str, example, threads: int,
                   runs: int, kokkos_root: Path) -> tuple[float, float]:
    """Export + build sample_app (timed), then run it; returns (median ms, export+build s)."""
    model_file = work / f"{model_name}.pt2"
    package = work / f"{model_name}_{backend}"
    app_build = work / f"{model_name}_{backend}_app"
    start = time.perf_counter()
    sh([sys.executable, "-m", "cli", model_file, "--backend", backend, "--out", package,
        "--name", model_name, "--force", "-q"])
    sh(["cmake", "-S", REPO / "sample_app", "-B", app_build, "-DCMAKE_BUILD_TYPE=Release",
        f"-DKokkos_ROOT={kokkos_root}", f"-DLAPIS_PACKAGE_DIR={package}",
        f"-DLAPIS_MODEL={model_name}"])
    sh(["cmake", "--build", app_build, "-j", str(os.cpu_count() or 2)])
    export_build_s = time.perf_counter() - start
    input_file = work / f"{model_name}_in.bin"
    example.numpy().astype(np.float32).tofile(input_file)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "OMP_PROC_BIND": "false"}
    out = sh([app_build / "sample_app", "--input", input_file, "--output",
              work / f"{model_name}_{backend}_out.bin", "--steps", runs, "--warmup", 3], env)
    match = re.search(r"median_ms=([0-9.eE+-]+)", out)
    if not match:
        sys.exit(f"sample_app printed no timing:\n{out}")
    return float(match.group(1)), export_build_s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+",
                        default=["resnet18", "resnet18:8", "small_cnn", "mlp"])
    parser.add_argument("--backends", nargs="+", default=["serial", "openmp"])
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--output", type=Path, default=REPO / "benchmarks" / "results_cpu.md")
    args = parser.parse_args()
    kokkos_root = ensure_kokkos()
    rows = []
    with tempfile.TemporaryDirectory(prefix="lapis-bench-") as tmp:
        work = Path(tmp)
        for spec in args.models:
            base, _, batch = spec.partition(":")
            model, shape = build(base)
            if batch:
                shape = (int(batch), *shape[1:])
            model_name = f"{base}_b{batch}" if batch else base
            example = torch.randn(*shape, generator=torch.Generator().manual_seed(1))
            save_model(model, example, work / f"{model_name}.pt2", "export")
            for backend in args.backends:
                threads = 1 if backend == "serial" else args.threads
                ours, export_s = ours_median_ms(work, model_name, backend, example, threads,
                                               args.runs, kokkos_root)
                reference = torch_median_ms(model, example, threads, args.runs)
                rows.append((model_name, "x".join(map(str, shape)), backend, threads, ours,
                             reference, ours / reference, export_s))
                print(f"{model_name:10s} {backend:7s} threads={threads} ours={ours:9.3f} ms "
                      f"torch={reference:8.3f} ms ratio={ours / reference:6.2f} "
                      f"export+build={export_s:5.1f} s", flush=True)
    lines = [
        "# CPU benchmark: exported Kokkos package vs PyTorch eager",
        "",
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; "
        f"torch {torch.__version__}; Kokkos at {kokkos_root.name}.",
        f"Command: `python benchmarks/cpu.py --runs {args.runs} --threads {args.threads}`. "
        "Median of the timed runs after 3 warm-ups; ours timed in C++ by sample_app (fenced), "
        "PyTorch in the same process run with torch.inference_mode().",
        "",
        "| model | input | backend | threads | ours (ms) | PyTorch eager (ms) | ours / PyTorch "
        "| export + C++ build (s) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    lines += [f"| {m} | {s} | {b} | {t} | {o:.3f} | {r:.3f} | {q:.2f} | {e:.1f} |"
              for m, s, b, t, o, r, q, e in rows]
    args.output.write_text("\n".join(lines) + "\n")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
