"""Side-by-side CPU timing: exported packages (run by sample_app, timed in C++) against PyTorch
eager, torch.compile, ONNX Runtime and OpenVINO at the same thread count, in one run; writes a
markdown table.

    python benchmarks/cpu.py [--cases wide_mlp:1024 wide_mlp:65536 gemm512 resnet18]
                             [--threads 1 2] [--rounds 5] [--runs 10]
                             [--wait-policy default|active|passive]

A case is a model of integration_tests/models.py, optionally with `:BATCH`, or `gemm512`: the
512^3 float32 product of lapis::matmul (gemm_host_check, timed in C++) against NumPy and
PyTorch. Each thread count of `--threads` gives a table of its own (NumPy's BLAS limited to it
too, through threadpoolctl); `--wait-policy` sets OMP_WAIT_POLICY for our processes (idle
OpenMP threads spinning or sleeping: on a machine shared with other work it matters at 2
threads). The table also states this machine's measured FMA peak (benchmarks/fma_peak.c)
and the GFLOP/s of our products. Contenders run in rounds (A B C ... A B C ...), so that noise from other work on the
machine falls on all alike; each round gives a median of `--runs` steps, the table the median
of the rounds. Every contender's output is compared with PyTorch eager's (max error / max
|PyTorch|). Ratios are against the faster of ONNX Runtime and OpenVINO. Needs the `bench`
extra (pip install -e .[bench]).

`--precision bf16`: ours exported with --precision bf16 (gemm512: lapis::matmul<..., bf16>)
against PyTorch under torch.autocast(bfloat16) (gemm512: a bfloat16 product) and OpenVINO
with INFERENCE_PRECISION_HINT bf16, each cell with its error against PyTorch eager in float32;
the ratio against the faster of those two.
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

GEMM_SIZE = 512


def sh(command, env=None) -> str:
    result = subprocess.run([str(c) for c in command], capture_output=True, text=True, env=env)
    if result.returncode:
        sys.exit(f"{' '.join(map(str, command))} failed:\n{result.stderr[-2000:]}")
    return result.stdout


def our_env(threads: int, wait_policy: str) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "OMP_PROC_BIND": "false"}
    env.pop("OMP_WAIT_POLICY", None)
    if wait_policy != "default":
        env["OMP_WAIT_POLICY"] = wait_policy
    return env


def fma_peak(work: Path) -> str:
    """benchmarks/fma_peak.c's report: clock and measured FMA rate of one core."""
    program = work / "fma_peak"
    sh(["cc", "-O2", REPO / "benchmarks" / "fma_peak.c", "-o", program])
    return sh([program]).strip()


def median_ms(step, runs: int) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        step()
        times.append((time.perf_counter() - start) * 1e3)
    return float(np.median(times))


def error(ours: np.ndarray, reference: np.ndarray) -> float:
    reference = reference.astype(np.float64)
    return float(np.abs(ours.astype(np.float64).reshape(reference.shape) - reference).max()
                 / (np.abs(reference).max() or 1.0))


class Ours:
    """The exported package in sample_app; each round one process, timed in C++."""
    name = "ours"

    def __init__(self, work: Path, model_name: str, example, threads: int, kokkos_root: Path,
                 precision: str = "fp32"):
        model_file = work / f"{model_name}.pt2"
        package = work / f"{model_name}_openmp"
        self.app_build = work / f"{model_name}_app"
        sh([sys.executable, "-m", "cli", model_file, "--backend", "openmp", "--out", package,
            "--name", model_name, "--force", "-q", "--precision", precision])
        sh(["cmake", "-S", REPO / "sample_app", "-B", self.app_build,
            "-DCMAKE_BUILD_TYPE=Release", f"-DKokkos_ROOT={kokkos_root}",
            f"-DLAPIS_PACKAGE_DIR={package}", f"-DLAPIS_MODEL={model_name}"])
        sh(["nice", "-n", "5", "cmake", "--build", self.app_build, "-j", "2"])
        self.input = work / f"{model_name}_in.bin"
        self.output = work / f"{model_name}_out.bin"
        example.numpy().astype(np.float32).tofile(self.input)
        self.threads, self.wait_policy = threads, "default"

    @property
    def env(self) -> dict:
        return our_env(self.threads, self.wait_policy)

    def round(self, runs: int) -> float:
        out = sh([self.app_build / "sample_app", "--input", self.input, "--output",
                  self.output, "--steps", runs, "--warmup", 2], self.env)
        return float(re.search(r"median_ms=([0-9.eE+-]+)", out).group(1))

    def result(self) -> np.ndarray:
        return np.fromfile(self.output, dtype=np.float32)

    def profile(self, kernel_timer: Path, runs: int) -> str:
        """Per-kernel times of `runs` steps (benchmarks/kernel_timer.cpp as the tools library)."""
        env = {**self.env, "KOKKOS_PROFILE_LIBRARY": str(kernel_timer),
               "KOKKOS_TOOLS_LIBS": str(kernel_timer)}
        result = subprocess.run([str(c) for c in (
            self.app_build / "sample_app", "--input", self.input, "--output", self.output,
            "--steps", runs, "--warmup", 2)], capture_output=True, text=True, env=env)
        return result.stdout + result.stderr


class Python:
    """A Python-side contender: `step()` runs one inference."""

    def __init__(self, name: str, step):
        self.name, self.step = name, step

    def round(self, runs: int) -> float:
        self.step()
        return median_ms(self.step, runs)

    def result(self) -> np.ndarray:
        return np.asarray(self.step())


def torch_contenders(model, example) -> list[Python]:
    def eager():
        with torch.inference_mode():
            return model(example).numpy()
    compiled = torch.compile(model)

    def compiled_step():
        with torch.inference_mode():
            return compiled(example).numpy()
    return [Python("PyTorch eager", eager), Python("torch.compile", compiled_step)]


def bf16_contenders(model, example, work: Path, model_name: str, threads: int) -> list[Python]:
    """PyTorch eager in float32 (the reference), PyTorch under bfloat16 autocast, OpenVINO with
    bfloat16 inference precision."""
    import openvino
    path = work / f"{model_name}.onnx"
    torch.onnx.export(model, (example,), str(path), input_names=["x"], output_names=["y"],
                      dynamo=False)
    compiled = openvino.Core().compile_model(str(path), "CPU", {
        "INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY",
        "INFERENCE_PRECISION_HINT": "bf16"})
    request = compiled.create_infer_request()
    x = example.numpy()

    def eager():
        with torch.inference_mode():
            return model(example).numpy()

    def autocast():
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
            return model(example).float().numpy()
    return [Python("PyTorch eager", eager), Python("PyTorch bf16", autocast),
            Python("OpenVINO bf16", lambda: request.infer({0: x})[0].copy())]


def onnx_contenders(model, example, work: Path, model_name: str, threads: int) -> list[Python]:
    import onnxruntime
    import openvino
    path = work / f"{model_name}.onnx"
    torch.onnx.export(model, (example,), str(path), input_names=["x"], output_names=["y"],
                      dynamo=False)
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = onnxruntime.InferenceSession(str(path), options,
                                           providers=["CPUExecutionProvider"])
    x = example.numpy()
    compiled = openvino.Core().compile_model(str(path), "CPU", {
        "INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY",
        "INFERENCE_PRECISION_HINT": "f32"})
    request = compiled.create_infer_request()
    return [Python("ONNX Runtime", lambda: session.run(None, {"x": x})[0]),
            Python("OpenVINO", lambda: request.infer({0: x})[0].copy())]


class GemmKernel:
    """lapis::matmul on 512^3 float32 (gemm_host_check --time, timed in C++)."""
    name = "ours"

    def __init__(self, work: Path, threads: int, kokkos_root: Path, precision: str = "fp32"):
        self.option = "--time-bf16" if precision == "bf16" else "--time"
        build_dir = work / "gemm_host_check"
        sh(["cmake", "-S", REPO / "integration_tests" / "gemm_host_check", "-B", build_dir,
            "-DCMAKE_BUILD_TYPE=Release", f"-DKokkos_ROOT={kokkos_root}"])
        sh(["nice", "-n", "5", "cmake", "--build", build_dir, "-j", "2"])
        self.program = build_dir / "gemm_host_check"
        self.threads, self.wait_policy = threads, "default"
        self.isa = None

    @property
    def env(self) -> dict:
        return our_env(self.threads, self.wait_policy)

    def round(self, runs: int) -> float:
        out = sh([self.program, self.option, GEMM_SIZE, GEMM_SIZE, GEMM_SIZE, runs], self.env)
        self.isa = ["baseline", "AVX2", "AVX-512F", "AVX512_BF16", "AMX-BF16"][
            int(re.search(r"isa=(\d)", out).group(1))]
        return float(re.search(r"median_ms=([0-9.eE+-]+)", out).group(1))

    def result(self) -> np.ndarray:   # all-ones A times all-halves B: every entry K / 2
        return np.full((GEMM_SIZE, GEMM_SIZE), GEMM_SIZE / 2, dtype=np.float32)


def gemm_contenders(precision: str = "fp32") -> list[Python]:
    a = np.ones((GEMM_SIZE, GEMM_SIZE), np.float32)
    b = np.full((GEMM_SIZE, GEMM_SIZE), 0.5, np.float32)
    ta, tb = torch.from_numpy(a), torch.from_numpy(b)
    if precision == "bf16":
        ha, hb = ta.bfloat16(), tb.bfloat16()
        return [Python("NumPy", lambda: a @ b),
                Python("PyTorch bf16", lambda: (ha @ hb).float().numpy())]
    return [Python("NumPy", lambda: a @ b), Python("PyTorch eager", lambda: (ta @ tb).numpy())]


def machine() -> str:
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        model = re.search(r"Model name:\s*(.+)", lscpu).group(1).strip()
        flags = re.search(r"Flags:\s*(.+)", lscpu).group(1).split()
        isa = "AVX-512F" if "avx512f" in flags else "AVX2+FMA" if "avx2" in flags else "SSE2"
        return f"{model}, {os.cpu_count()} cores, widest vectors {isa}"
    except Exception:
        return f"{platform.machine()}, {os.cpu_count()} cores"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", nargs="+",
                        default=["wide_mlp:1024", "wide_mlp:65536", "gemm512", "resnet18",
                                 "transformer"])
    parser.add_argument("--threads", type=int, nargs="+", default=[2])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--wait-policy", choices=["default", "active", "passive"],
                        default="default", help="OMP_WAIT_POLICY of our processes")
    parser.add_argument("--profile", default="wide_mlp:1024",
                        help="case whose per-kernel times are listed under the table")
    parser.add_argument("--output", type=Path, default=REPO / "benchmarks" / "results_cpu.md")
    parser.add_argument("--precision", choices=["fp32", "bf16"], default="fp32",
                        help="ours in this precision, against contenders in it")
    args = parser.parse_args()
    from threadpoolctl import threadpool_limits
    kokkos_root = ensure_kokkos()
    rows = {t: [] for t in args.threads}
    profiles, gemm_isa, flops = {}, None, {}
    with tempfile.TemporaryDirectory(prefix="lapis-bench-") as tmp:
        work = Path(tmp)
        peak = fma_peak(work)
        print(peak, flush=True)
        for spec in args.cases:
            model = example = model_name = None
            if spec == "gemm512":
                ours = GemmKernel(work, args.threads[0], kokkos_root, args.precision)
                shape = (GEMM_SIZE, GEMM_SIZE, GEMM_SIZE)
                flops[spec] = 2 * GEMM_SIZE ** 3
            else:
                base, _, batch = spec.partition(":")
                model, shape = build(base)
                model = model.eval()
                if batch:
                    shape = (int(batch), *shape[1:])
                model_name = f"{base}_b{batch or shape[0]}"
                example = torch.randn(*shape, generator=torch.Generator().manual_seed(1))
                save_model(model, example, work / f"{model_name}.pt2", "export")
                ours = Ours(work, model_name, example, args.threads[0], kokkos_root,
                            args.precision)
                flops[spec] = linear_flops(model, shape[0])
            ours.wait_policy = args.wait_policy
            for threads in args.threads:
                torch.set_num_threads(threads)
                ours.threads = threads
                if spec == "gemm512":
                    contenders = [ours, *gemm_contenders(args.precision)]
                elif args.precision == "bf16":
                    contenders = [ours, *bf16_contenders(model, example, work, model_name,
                                                         threads)]
                else:
                    contenders = [ours, *torch_contenders(model, example),
                                  *onnx_contenders(model, example, work, model_name, threads)]
                # 65536-row MLPs take a second a step: fewer steps per round.
                runs = max(3, args.runs // 3) if np.prod(shape) > 1e6 else args.runs
                times = {c.name: [] for c in contenders}
                with threadpool_limits(limits=threads, user_api="blas"):
                    for _ in range(args.rounds):
                        for contender in contenders:
                            time.sleep(0.5)   # the previous contender's threads stop spinning
                            times[contender.name].append(contender.round(runs))
                    reference = contenders[1].result()   # PyTorch eager (gemm512: NumPy)
                    errors = {c.name: error(c.result(), reference) for c in contenders}
                medians = {name: float(np.median(t)) for name, t in times.items()}
                rivals = [medians[n] for n in ("ONNX Runtime", "OpenVINO", "PyTorch bf16",
                                               "OpenVINO bf16") if n in medians]
                best = min(rivals) if rivals else \
                    min(v for n, v in medians.items() if n != "ours")
                rows[threads].append((spec, "x".join(map(str, shape)), medians, errors, best))
                print(threads, spec, {n: round(v, 3) for n, v in medians.items()},
                      {n: f"{e:.1e}" for n, e in errors.items()}, flush=True)
                if spec == args.profile and isinstance(ours, Ours):
                    timer = work / "libkernel_timer.so"
                    sh(["g++", "-O2", "-shared", "-fPIC",
                        REPO / "benchmarks" / "kernel_timer.cpp", "-o", timer])
                    profiles[threads] = ours.profile(timer, args.runs)
                if spec == "gemm512":
                    gemm_isa = ours.isa
    commit = sh(["git", "-C", REPO, "rev-parse", "--short", "HEAD"]).strip()
    names = ["ours", "PyTorch eager", "torch.compile", "ONNX Runtime", "OpenVINO", "NumPy"]
    if args.precision == "bf16":
        names = ["ours", "PyTorch bf16", "OpenVINO bf16", "PyTorch eager", "NumPy"]
    threads_text = " ".join(map(str, args.threads))
    lines = [
        "# CPU benchmark: exported Kokkos package vs PyTorch, ONNX Runtime and OpenVINO",
        "",
        f"Commit {commit}. Machine: {machine()}; torch {torch.__version__}; Kokkos at "
        f"{kokkos_root.name} (OpenMP backend).",
        f"Command: `python benchmarks/cpu.py --precision {args.precision} --cases "
        f"{' '.join(args.cases)} --threads "
        f"{threads_text} --rounds {args.rounds} --runs {args.runs} --wait-policy "
        f"{args.wait_policy}`. Every contender at the table's thread count (NumPy's BLAS "
        "limited to it through threadpoolctl); our processes with OMP_PROC_BIND=false and "
        f"OMP_WAIT_POLICY {args.wait_policy if args.wait_policy != 'default' else 'unset'}. "
        f"Contenders run in turn, {args.rounds} rounds; each round a median of its steps "
        "(after warm-up), the table the median of the rounds, in ms. Ours timed in C++ "
        "(sample_app, fenced; gemm512: gemm_host_check on lapis::matmul), the others in "
        "Python. `ratio` = ours / the faster of ONNX Runtime and OpenVINO (gemm512: of NumPy "
        "and PyTorch); below 1 is faster. `max err` = the largest max |x - PyTorch| / "
        "max |PyTorch| over the contenders. `GFLOP/s` = ours, the products' 2 M N K over "
        "its time.",
        "",
        f"FMA peak of one core (benchmarks/fma_peak.c): {peak.replace(chr(10), '; ')}.",
    ]
    for threads in args.threads:
        lines += ["", f"## {threads} thread{'s' if threads > 1 else ''}", "",
                  "| case | shape | " + " | ".join(names) + " | ratio | max err | GFLOP/s |",
                  "|---|---|" + "---|" * (len(names) + 3)]
        for spec, shape, medians, errors, best in rows[threads]:
            cells = [(f"{medians[n]:.3f}" + (f" ({errors[n]:.1e})" if args.precision == "bf16"
                                              else "")) if n in medians else "" for n in names]
            lines.append(f"| {spec} | {shape} | " + " | ".join(cells) +
                         f" | {medians['ours'] / best:.2f} | {max(errors.values()):.1e} | "
                         f"{flops[spec] / medians['ours'] * 1e-6:.0f} |")
    if gemm_isa:
        lines += ["", f"gemm512 ran the {gemm_isa} kernel."]
    for threads, profile in profiles.items():
        lines += ["", f"Per-kernel times of ours, {args.profile}, {threads} thread"
                  f"{'s' if threads > 1 else ''}, {args.runs} steps "
                  "(benchmarks/kernel_timer.cpp):", "", "```", profile.strip(), "```"]
    args.output.write_text("\n".join(lines) + "\n")
    print(f"wrote {args.output}")


def linear_flops(model, batch: int) -> int:
    """2 M N K over the model's Linear layers (0 for models without them)."""
    return sum(2 * batch * m.in_features * m.out_features for m in model.modules()
               if isinstance(m, torch.nn.Linear))


if __name__ == "__main__":
    main()
