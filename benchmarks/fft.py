"""FFTs on the CPU: the exported FFT kernel (kokkos_support/lapis/fft.hpp) against the dense DFT
product the exporter otherwise makes and torch.fft, at the same thread count; and an FNO2d
(2 spectral layers, 12 modes, width 32, 64x64 grid) against PyTorch eager. Writes a markdown
table.

    python benchmarks/fft.py [--sizes 64 512 4096] [--threads 1 2] [--rounds 5] [--runs 20]

Each transform case is a batch of lines, `fft` of complex lines ([lines, n, 2] pairs in and
out) or `rfft` of real ones; lines = 2^16 / n (at least 16). Both packages come from the same
model: `kernel` exported with the cost rule told that the kernel always wins
(exporter.fft.FFT_COST = 0), `dense` with the rule told that it never does (inf). The FNO is
exported as the rule has it (its truncated transforms stay dense products) and with the
kernel forced. Contenders run in rounds (A B C A B C ...) so that other load on the machine
falls on all alike; a round is a median of `--runs` steps, the table the median of rounds.
Ours are timed in C++ (sample_app), torch.fft in Python. The cost rule's constant FFT_COST is
the kernel's time per line / (n log2 n) over the dense product's time per line / (its real
multiply-adds), printed per case as `cost`.
"""
from __future__ import annotations

import argparse
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from cpu import Python, error, machine, median_ms, sh  # noqa: E402
from exporter import fft as fft_rule  # noqa: E402
from integration_tests import fno  # noqa: E402
from kokkos_support.provision import ensure_kokkos  # noqa: E402

TOTAL = 1 << 16


class ComplexFft(torch.nn.Module):
    def forward(self, x):
        return torch.view_as_real(torch.fft.fft(torch.view_as_complex(x)))


class RealFft(torch.nn.Module):
    def forward(self, x):
        return torch.view_as_real(torch.fft.rfft(x))


class Package:
    """An exported package run by sample_app; each round one process, timed in C++."""

    def __init__(self, work: Path, name: str, model, example, cost: float, kokkos_root: Path):
        from exporter import emit, frontend, importer, lowering, package
        model_file, out = work / f"{name}.pt2", work / f"{name}_pkg"
        torch.export.save(torch.export.export(model, (example,)), str(model_file))
        saved, fft_rule.FFT_COST = fft_rule.FFT_COST, cost
        try:
            lowered = lowering.run(importer.to_linalg(frontend.load(model_file, None)), "openmp")
            source = emit.kokkos(lowered, name, "openmp")
        finally:
            fft_rule.FFT_COST = saved
        package.write(source, out, package.PackageOptions(force=True, weights_mode="file"))
        self.build = work / f"{name}_app"
        sh(["cmake", "-S", REPO / "sample_app", "-B", self.build, "-DCMAKE_BUILD_TYPE=Release",
            f"-DKokkos_ROOT={kokkos_root}", f"-DLAPIS_PACKAGE_DIR={out}", f"-DLAPIS_MODEL={name}"])
        sh(["nice", "-n", "5", "cmake", "--build", self.build, "-j", "2"])
        self.input, self.output = work / f"{name}_in.bin", work / f"{name}_out.bin"
        example.numpy().astype(np.float32).tofile(self.input)
        self.threads, self.runs = 1, None
        self.fft_calls = (out / "src" / f"{name}.cpp").read_text().count("lapis/fft.hpp)")

    def round(self, runs: int) -> float:
        env = {**os.environ, "OMP_NUM_THREADS": str(self.threads), "OMP_PROC_BIND": "false"}
        out = sh([self.build / "sample_app", "--input", self.input, "--output", self.output,
                  "--steps", runs, "--warmup", 2], env)
        return float(out.split("median_ms=")[1].split()[0])

    def result(self) -> np.ndarray:
        return np.fromfile(self.output, dtype=np.float32)


def torch_contender(model, example) -> Python:
    def eager():
        with torch.inference_mode():
            return model(example).numpy()
    return Python("PyTorch", eager)


def measure(contenders: dict, threads: int, rounds: int, runs: int) -> dict:
    torch.set_num_threads(threads)
    times = {name: [] for name in contenders}
    for _ in range(rounds):
        for name, contender in contenders.items():
            if isinstance(contender, Package):
                contender.threads = threads
            time.sleep(0.3)
            times[name].append(contender.round(contender.runs or runs if
                                               isinstance(contender, Package) else runs))
    return {name: float(np.median(t)) for name, t in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="*", default=[64, 512, 4096])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--no-fno", action="store_true")
    parser.add_argument("--max-dense-complex", type=int, default=512,
                        help="longest complex transform also run as a dense product (its "
                             "matrix has (2n)^2 entries)")
    parser.add_argument("--output", type=Path, default=REPO / "benchmarks" / "results_fft.md")
    args = parser.parse_args()
    kokkos_root = ensure_kokkos()
    rows, fno_rows = [], []
    with tempfile.TemporaryDirectory(prefix="lapis-fft-") as tmp:
        work = Path(tmp)
        for n in args.sizes:
            lines = max(16, TOTAL // n)
            for kind, model, shape in (("fft", ComplexFft(), (lines, n, 2)),
                                       ("rfft", RealFft(), (lines, n))):
                example = torch.randn(*shape, generator=torch.Generator().manual_seed(1))
                name = f"{kind}{n}"
                contenders = {
                    "kernel": Package(work, f"{name}_kernel", model, example, 0.0, kokkos_root)}
                if kind == "rfft" or n <= args.max_dense_complex:
                    contenders["dense"] = Package(work, f"{name}_dense", model, example,
                                                  math.inf, kokkos_root)
                    if n >= 4096:          # a product of 10^8 multiply-adds and more
                        contenders["dense"].runs = 3
                contenders["PyTorch"] = torch_contender(model, example)
                dense_madds = (n if kind == "rfft" else 2 * n) * \
                    (2 * (n // 2 + 1) if kind == "rfft" else 2 * n)
                for threads in args.threads:
                    medians = measure(contenders, threads, args.rounds, args.runs)
                    reference = contenders["PyTorch"].result()
                    errors = {k: error(c.result(), reference) for k, c in contenders.items()}
                    cost = (medians["kernel"] / (n * math.log2(n))) / \
                        (medians["dense"] / dense_madds) if "dense" in medians else math.nan
                    rows.append((kind, n, lines, threads, medians, errors, cost))
                    print(kind, n, threads, {k: round(v, 4) for k, v in medians.items()},
                          f"cost {cost:.1f}", flush=True)
        if not args.no_fno:
            net, shape = fno.fno2d()
            example = torch.randn(*shape, generator=torch.Generator().manual_seed(1))
            contenders = {
                "ours (rule)": Package(work, "fno2d_rule", net, example, fft_rule.FFT_COST,
                                       kokkos_root),
                "ours (kernel forced)": Package(work, "fno2d_kernel", net, example, 0.0,
                                                kokkos_root),
                "ours (dense forced)": Package(work, "fno2d_dense", net, example, math.inf,
                                               kokkos_root),
                "PyTorch eager": torch_contender(net, example)}
            calls = {k: c.fft_calls for k, c in contenders.items() if isinstance(c, Package)}
            for threads in args.threads:
                medians = measure(contenders, threads, args.rounds, max(5, args.runs // 2))
                reference = contenders["PyTorch eager"].result()
                errors = {k: error(c.result(), reference) for k, c in contenders.items()}
                fno_rows.append((threads, medians))
                print("fno2d", threads, {k: round(v, 3) for k, v in medians.items()}, flush=True)
    write_table(args, rows, fno_rows, errors if fno_rows else {}, calls if fno_rows else {},
                tuple(shape) if fno_rows else ())


def write_table(args, rows, fno_rows, fno_errors, fno_calls, fno_shape) -> None:
    commit = sh(["git", "-C", REPO, "rev-parse", "--short", "HEAD"]).strip()
    lines = [
        "# FFT benchmark: the FFT kernel vs the dense DFT product vs torch.fft (CPU)", "",
        f"Commit {commit}. Machine: {machine()}; torch {torch.__version__}; Kokkos 3.4.01 "
        "(OpenMP backend), packages built -O3 (Release).",
        f"Command: `python benchmarks/fft.py --sizes {' '.join(map(str, args.sizes))} "
        f"--threads {' '.join(map(str, args.threads))} --rounds {args.rounds} --runs "
        f"{args.runs}` (dense complex products up to n = {args.max_dense_complex}: at 4096 "
        "the matrix has 2^26 entries). Contenders run in turn, "
        f"{args.rounds} rounds; each round a median of "
        "its steps, the table the median of the rounds, in ms. `kernel`: the package with "
        "every transform on lapis::fft / lapis::rfft; `dense`: the same model with every "
        "transform a product with its DFT matrix (what the exporter did before, and still "
        "does for truncated spectra); `PyTorch`: torch.fft eager (oneMKL in torch's CPU build) at the same "
        "threads. Ratios are ours / PyTorch; below 1 is faster. `cost` is the measured "
        "constant of the cost rule (exporter/fft.py FFT_COST): the kernel's time per n log2 n "
        "over the dense product's time per real multiply-add. Max error: max |x - torch| / "
        "max |torch|.", "",
        "| transform | n | lines | threads | kernel | dense | PyTorch | kernel / PyTorch | "
        "dense / PyTorch | cost | max err kernel, dense |",
        "|---|---|---|---|---|---|---|---|---|---|---|"]
    for kind, n, count, threads, medians, errors, cost in rows:
        k, d, t = medians["kernel"], medians.get("dense", math.nan), medians["PyTorch"]
        dense = f"{d:.4f} | {d / t:.2f}" if "dense" in medians else "not run | —"
        dense_error = f"{errors['dense']:.1e}" if "dense" in errors else "—"
        lines.append(f"| {kind} | {n} | {count} | {threads} | {k:.4f} | {dense.split(' | ')[0]} "
                     f"| {t:.4f} | {k / t:.2f} | {dense.split(' | ')[1]} | {cost:.1f} | "
                     f"{errors['kernel']:.1e}, {dense_error} |")
    if fno_rows:
        lines += [
            "", f"## FNO2d (integration_tests/fno.py: 2 spectral layers, 12 modes, width 32), "
            f"input {'x'.join(map(str, fno_shape))}", "",
            "`ours (rule)` is the export as shipped; `ours (kernel forced)` sends every "
            "transform the kernel can take to it, `ours (dense forced)` none. FFT kernel calls in the package: " +
            ", ".join(f"{k} {v}" for k, v in fno_calls.items()) + ". Max error: " +
            ", ".join(f"{k} {v:.1e}" for k, v in fno_errors.items()) + ".", "",
            "| threads | ours (rule) | ours (kernel forced) | ours (dense forced) | "
            "PyTorch eager | rule / eager |",
            "|---|---|---|---|---|---|"]
        for threads, m in fno_rows:
            lines.append(f"| {threads} | {m['ours (rule)']:.3f} | "
                         f"{m['ours (kernel forced)']:.3f} | {m['ours (dense forced)']:.3f} | "
                         f"{m['PyTorch eager']:.3f} | "
                         f"{m['ours (rule)'] / m['PyTorch eager']:.2f} |")
    args.output.write_text("\n".join(lines) + "\n")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
