"""Side-by-side GPU timing: exported CUDA packages (run by sample_app, timed in C++) against
PyTorch eager and PyTorch with CUDA graphs on the same GPU, in one run; writes a markdown table.

Two halves, because the export needs torch-mlir and the GPU machine need not have it:

    # where lapis-export runs: models, seeded inputs, CPU reference outputs, CUDA packages
    python benchmarks/gpu.py export --models resnet18 resnet18:64 small_cnn mlp --out gpu-run/
    # on the GPU machine (CUDA, CMake, PyTorch; a Kokkos built with CUDA at KOKKOS):
    python benchmarks/gpu.py run gpu-run/ --kokkos-root KOKKOS [--runs 200]

`run` builds sample_app against every package with the Kokkos' nvcc_wrapper, runs it, checks its
output against PyTorch on the GPU with the same weights and input (TF32 off; max abs error
<= 1e-4 * max |reference|) and against the CPU reference written by `export`, times PyTorch the
same way sample_app times ours (forward, then synchronise, per step; median after warm-up), and
writes benchmarks/results_gpu.md. Weight blobs that are byte-identical across packages (one model
at two batch sizes) travel once, under blobs/, and `run` puts them back.
"""
from __future__ import annotations

import argparse
import concurrent.futures
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from integration_tests.models import build  # noqa: E402

TOLERANCE = 1e-4


def sh(command, env=None, cwd=None) -> str:
    result = subprocess.run([str(c) for c in command], capture_output=True, text=True, env=env,
                            cwd=cwd)
    if result.returncode:
        sys.exit(f"{' '.join(map(str, command))} failed:\n{result.stdout[-3000:]}"
                 f"{result.stderr[-3000:]}")
    return result.stdout


def model_spec(spec: str) -> tuple[str, str, tuple[int, ...]]:
    """`resnet18:64` -> (package name, model name, input shape)."""
    base, _, batch = spec.partition(":")
    _, shape = build(base)
    if batch:
        shape = (int(batch), *shape[1:])
    return (f"{base}_b{batch}" if batch else base), base, tuple(shape)


def seeded_input(shape) -> torch.Tensor:
    """The input, remade from its seed on each machine (a batch of 64 images is 38 MB)."""
    return torch.randn(*shape, generator=torch.Generator().manual_seed(1))


def sha256(tensor: torch.Tensor) -> str:
    return hashlib.sha256(tensor.numpy().astype(np.float32).tobytes()).hexdigest()


def export(args) -> None:
    import tempfile
    from integration_tests.make_model import save_model
    models = Path(tempfile.mkdtemp(prefix="lapis-gpu-models-"))  # not carried: weights again
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    (out / "blobs").mkdir(exist_ok=True)
    entries = []
    for spec in args.models:
        name, base, shape = model_spec(spec)
        model, _ = build(base)
        example = seeded_input(shape)
        save_model(model, example, models / f"{name}.pt2", "export")
        with torch.no_grad():
            model(example).numpy().astype(np.float32).tofile(out / f"{name}.reference.bin")
        start = time.perf_counter()
        sh([sys.executable, "-m", "cli", models / f"{name}.pt2", "--backend", "cuda", "--out",
            out / name, "--name", name, "--force", "-q"], cwd=REPO)
        export_s = time.perf_counter() - start
        blob = out / name / "src" / f"{name}.weights"
        digest = hashlib.sha256(blob.read_bytes()).hexdigest()[:16]
        shared = out / "blobs" / f"{digest}.weights"
        if not shared.exists():
            shutil.move(blob, shared)
        else:
            blob.unlink()
        entries.append({"name": name, "model": base, "shape": list(shape), "blob": shared.name,
                        "input_sha256": sha256(example), "export_s": round(export_s, 1)})
        print(f"exported {name} {shape} in {export_s:.1f} s", flush=True)
    (out / "runs.json").write_text(json.dumps(entries, indent=1) + "\n")
    shutil.rmtree(models)


def build_app(work: Path, entry: dict, kokkos_root: Path, cmake_args: list[str],
              host: str = "") -> float:
    """Builds sample_app (or the host sample_app/HOST) against the package, into
    work/NAME_app (work/NAME_HOST); returns the seconds it took."""
    name = entry["name"]
    package = work / name
    blob = package / "src" / f"{name}.weights"
    if not blob.exists():
        shutil.copyfile(work / "blobs" / entry["blob"], blob)
    build_dir = work / f"{name}_{host or 'app'}"
    start = time.perf_counter()
    sh(["cmake", "-S", REPO / "sample_app" / host, "-B", build_dir, "-DCMAKE_BUILD_TYPE=Release",
        f"-DKokkos_ROOT={kokkos_root}", f"-DCMAKE_CXX_COMPILER={kokkos_root}/bin/nvcc_wrapper",
        f"-DLAPIS_PACKAGE_DIR={package}", f"-DLAPIS_MODEL={name}", *cmake_args])
    sh(["cmake", "--build", build_dir, "-j", "4"])
    return time.perf_counter() - start


def ours(work: Path, entry: dict, runs: int, graph: bool) -> tuple[float, np.ndarray]:
    """sample_app's median step time, with forward() or forward_graph(), and its output."""
    name = entry["name"]
    output = work / f"{name}.ours{'_graph' if graph else ''}.bin"
    text = sh([work / f"{name}_app" / "sample_app", "--input", work / f"{name}.input.bin",
               "--output", output, "--steps", runs, "--warmup", 20,
               *(["--graph"] if graph else [])])
    match = re.search(r"median_ms=([0-9.eE+-]+)", text)
    if not match:
        sys.exit(f"sample_app printed no timing:\n{text}")
    return float(match.group(1)), np.fromfile(output, dtype=np.float32)


def torch_times(model, example, runs: int) -> tuple[float, float, np.ndarray]:
    """(eager median ms, CUDA-graph median ms, output) with a sync after every step."""
    def median(step) -> float:
        times = []
        for i in range(20 + runs):
            start = time.perf_counter()
            step()
            torch.cuda.synchronize()
            if i >= 20:
                times.append((time.perf_counter() - start) * 1e3)
        return float(np.median(times))

    with torch.inference_mode():
        eager = median(lambda: model(example))
        output = model(example).float().cpu().numpy().ravel()
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(3):
                model(example)
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            model(example)
        graphed = median(graph.replay)
    return eager, graphed, output


def relative_error(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-30))


def run(args) -> None:
    work = args.work.resolve()
    entries = json.loads((work / "runs.json").read_text())
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    with concurrent.futures.ThreadPoolExecutor(max_workers=len(entries)) as pool:
        build_s = dict(zip([e["name"] for e in entries],
                           pool.map(lambda e: build_app(work, e, args.kokkos_root, args.cmake_args),
                                    entries)))
    rows, failed = [], False
    device = torch.cuda.get_device_name()
    for entry in entries:
        name = entry["name"]
        model, _ = build(entry["model"])
        model = model.cuda().eval()
        example = seeded_input(entry["shape"])
        if sha256(example) != entry["input_sha256"]:
            sys.exit(f"{name}: the seeded input differs from the one exported")
        example.numpy().astype(np.float32).tofile(work / f"{name}.input.bin")
        example = example.cuda()
        ours_ms, ours_out = ours(work, entry, args.runs, graph=False)
        ours_graph_ms, ours_graph_out = ours(work, entry, args.runs, graph=True)
        eager_ms, graph_ms, torch_out = torch_times(model, example, args.runs)
        cpu_reference = np.fromfile(work / f"{name}.reference.bin", dtype=np.float32)
        error = max(relative_error(ours_out, torch_out), relative_error(ours_graph_out, torch_out))
        error_cpu = max(relative_error(ours_out, cpu_reference),
                        relative_error(ours_graph_out, cpu_reference))
        ok = error <= TOLERANCE and error_cpu <= TOLERANCE
        failed |= not ok
        rows.append((name, "x".join(map(str, entry["shape"])), ours_ms, ours_graph_ms, eager_ms,
                     graph_ms, error, error_cpu, "yes" if ok else "NO", build_s[name],
                     entry["export_s"]))
        print(f"{name:12s} ours={ours_ms:8.3f} ms ours_graph={ours_graph_ms:8.3f} ms "
              f"eager={eager_ms:8.3f} ms graph={graph_ms:8.3f} ms "
              f"eager/ours_graph={eager_ms / ours_graph_ms:5.2f} "
              f"err_gpu={error:.1e} err_cpu={error_cpu:.1e}", flush=True)
    lines = [
        "# GPU benchmark: exported Kokkos CUDA package vs PyTorch on the same GPU",
        "",
        f"GPU: {device}; torch {torch.__version__} (TF32 off); Kokkos at "
        f"{args.kokkos_root.name}. Command: `python benchmarks/gpu.py run DIR --kokkos-root "
        f"KOKKOS --runs {args.runs}` after `python benchmarks/gpu.py export --out DIR`.",
        "Each step is one forward followed by a device synchronisation, timed on the host; "
        "median of the timed steps after 20 warm-ups. Ours is timed in C++ by sample_app, "
        "through forward() (one launch per kernel) and forward_graph() (the same kernels "
        "replayed as one CUDA graph); PyTorch eager and CUDA-graph replay in the same run. "
        "Errors are max |ours - ref| / max |ref| (the worse of our two runs) against PyTorch "
        "on the GPU and against the CPU reference written at export.",
        "",
        "| model | input | ours forward (ms) | ours forward_graph (ms) | PyTorch eager (ms) "
        "| PyTorch CUDA graph (ms) | eager / ours graph | PyTorch graph / ours graph "
        "| error vs GPU | error vs CPU | match | sample_app build (s) | export (s) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    lines += [f"| {n} | {s} | {o:.3f} | {og:.3f} | {e:.3f} | {g:.3f} | {e / og:.2f} "
              f"| {g / og:.2f} | {er:.1e} | {ec:.1e} | {ok} | {b:.0f} | {x} |"
              for n, s, o, og, e, g, er, ec, ok, b, x in rows]
    args.output.write_text("\n".join(lines) + "\n")
    print(f"wrote {args.output}")
    if failed:
        sys.exit("some outputs did not match PyTorch")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    p = commands.add_parser("export", help="export the models for the cuda backend")
    p.add_argument("--models", nargs="+", default=["resnet18", "resnet18:64", "small_cnn", "mlp"])
    p.add_argument("--out", type=Path, required=True)
    p = commands.add_parser("run", help="build, check and time on the GPU machine")
    p.add_argument("work", type=Path)
    p.add_argument("--kokkos-root", type=Path, required=True)
    p.add_argument("--runs", type=int, default=200)
    p.add_argument("--cmake-arg", action="append", default=[], dest="cmake_args",
                   help="an extra option for the sample_app builds (--cmake-arg=-DX=Y)")
    p.add_argument("--output", type=Path, default=REPO / "benchmarks" / "results_gpu.md")
    args = parser.parse_args()
    export(args) if args.command == "export" else run(args)


if __name__ == "__main__":
    main()
