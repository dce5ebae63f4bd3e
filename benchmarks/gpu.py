"""Side-by-side GPU timing: exported CUDA packages (run by sample_app, timed in C++) against
PyTorch eager and PyTorch with CUDA graphs on the same GPU, in one run; writes a markdown table.

Two halves, because the export needs torch-mlir and the GPU machine need not have it:

    # where lapis-export runs: models, seeded inputs, CPU reference outputs, CUDA packages
    python benchmarks/gpu.py export --models resnet18 resnet18:64 small_cnn mlp --out gpu-run/
    # on the GPU machine (CUDA, CMake, PyTorch; a Kokkos built with CUDA at KOKKOS):
    python benchmarks/gpu.py run gpu-run/ --kokkos-root KOKKOS [--runs 200]

A model spec may name a precision (`resnet18:64@tf32`, `wide_mlp@tf32`: lapis-export
--precision); `run --json FILE` also writes the rows and per-kernel times (for the linear
layers' TFLOP/s) as JSON. `torch DIR --json FILE` times PyTorch alone, TF32 off and on (and, for
models exported @bf16, the model and input in bfloat16): eager,
CUDA graph (channels_last too for images) and torch.compile(mode="reduce-overhead"), with each
mode's error against a float64 run on the GPU; `table OURS.json TORCH.json` writes the
precision table (benchmarks/results_gpu_precision.md).

`run` builds sample_app against every package with the Kokkos' nvcc_wrapper, runs it, checks its
output against PyTorch's float64 run on the GPU with the same weights and input (nn.Multihead-
Attention's fused fast path off: on CUDA it is 1.4e-4 off the layers' definition; max abs error
<= 1e-4 * max |reference|) and against the CPU reference written by `export`, reports the error
against PyTorch's float32 output too, times PyTorch the
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


def model_spec(spec: str) -> tuple[str, str, tuple[int, ...], str]:
    """`resnet18:64@tf32` -> (package name, model name, input shape, precision)."""
    spec, _, precision = spec.partition("@")
    base, _, batch = spec.partition(":")
    _, shape = build(base)
    if batch:
        shape = (int(batch), *shape[1:])
    name = (f"{base}_b{batch}" if batch else base) + (f"_{precision}" if precision else "")
    return name, base, tuple(shape), precision or "fp32"


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
        name, base, shape, precision = model_spec(spec)
        model, _ = build(base)
        example = seeded_input(shape)
        save_model(model, example, models / f"{name}.pt2", "export")
        with torch.no_grad():
            model(example).numpy().astype(np.float32).tofile(out / f"{name}.reference.bin")
        start = time.perf_counter()
        sh([sys.executable, "-m", "cli", models / f"{name}.pt2", "--backend", "cuda", "--out",
            out / name, "--name", name, "--force", "-q", "--precision", precision], cwd=REPO)
        export_s = time.perf_counter() - start
        blob = out / name / "src" / f"{name}.weights"
        digest = hashlib.sha256(blob.read_bytes()).hexdigest()[:16]
        shared = out / "blobs" / f"{digest}.weights"
        if not shared.exists():
            shutil.move(blob, shared)
        else:
            blob.unlink()
        entries.append({"name": name, "model": base, "shape": list(shape), "blob": shared.name,
                        "precision": precision,
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


# max |ours - ref| / max |ref| allowed against PyTorch (TF32 off) and the CPU reference, by
# --precision: TF32 products round both operands to 10 mantissa bits, bfloat16 ones to 7 (and
# bf16 stores the activations between linear layers in bfloat16).
TOLERANCES = {"fp32": 1e-4, "tf32": 5e-3, "bf16": 2e-2}


def float64_output(model, example) -> np.ndarray:
    """The model in float64 on the GPU: the reference the errors are measured against. With
    nn.MultiheadAttention's fast path off: on CUDA, torch._transformer_encoder_layer_fwd
    differs from the layers' own definition by 1.4e-4 of the output even in float64 (measured
    on the H200 with torch 2.11; the slow path agrees with PyTorch's CPU run to 3e-7)."""
    import copy
    fast_path = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        with torch.inference_mode():
            return copy.deepcopy(model).double()(example.double()).cpu().numpy().ravel()
    finally:
        torch.backends.mha.set_fastpath_enabled(fast_path)


def kernel_times(work: Path, entry: dict, steps: int) -> dict[str, tuple[int, float]]:
    """Per kernel label: (calls, ms a call), each launch waited for (CUDA_LAUNCH_BLOCKING)."""
    library = work / "libkt.so"
    if not library.exists():
        sh(["g++", "-O2", "-shared", "-fPIC", REPO / "benchmarks" / "kernel_timer.cpp", "-o",
            library])
    name = entry["name"]
    env = {**os.environ, "CUDA_LAUNCH_BLOCKING": "1", "KOKKOS_TOOLS_LIBS": str(library)}
    text = sh([work / f"{name}_app" / "sample_app", "--input", work / f"{name}.input.bin",
               "--output", work / f"{name}.kernels.bin", "--steps", steps, "--warmup", 5],
              env=env)
    times = {}
    for line in text.splitlines():
        match = re.match(r"(\S+)\s+(\d+)\s+([0-9.]+)\s+[0-9.]+%$", line)
        if match:
            calls, total = int(match.group(2)), float(match.group(3))
            times[match.group(1)] = (calls, total / calls)
    return times


def run(args) -> None:
    work = args.work.resolve()
    entries = json.loads((work / "runs.json").read_text())
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    with concurrent.futures.ThreadPoolExecutor(max_workers=len(entries)) as pool:
        build_s = dict(zip([e["name"] for e in entries],
                           pool.map(lambda e: build_app(work, e, args.kokkos_root, args.cmake_args),
                                    entries)))
    rows, failed, records = [], False, []
    device = torch.cuda.get_device_name()
    for entry in entries:
        name = entry["name"]
        precision = entry.get("precision", "fp32")
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
        reference64 = float64_output(model, example)
        error = max(relative_error(ours_out, torch_out), relative_error(ours_graph_out, torch_out))
        error_cpu = max(relative_error(ours_out, cpu_reference),
                        relative_error(ours_graph_out, cpu_reference))
        error64 = max(relative_error(ours_out, reference64),
                      relative_error(ours_graph_out, reference64))
        tolerance = TOLERANCES[precision]
        # The arbiter is the float64 run (the layers' own definition); PyTorch's float32 output
        # is no reference for models that take its fused transformer fast path.
        ok = error64 <= tolerance and error_cpu <= tolerance
        failed |= not ok
        kernels = kernel_times(work, entry, 20) if args.kernel_times else {}
        records.append({"name": name, "model": entry["model"], "shape": entry["shape"],
                        "precision": precision, "forward_ms": ours_ms,
                        "forward_graph_ms": ours_graph_ms, "torch_eager_ms": eager_ms,
                        "torch_graph_ms": graph_ms, "error_vs_torch": error,
                        "error_vs_cpu": error_cpu, "error_vs_float64": error64,
                        "torch_error_vs_float64": relative_error(torch_out, reference64),
                        "ok": ok, "kernels": kernels})
        rows.append((name, "x".join(map(str, entry["shape"])), ours_ms, ours_graph_ms, eager_ms,
                     graph_ms, error, error_cpu, "yes" if ok else "NO", build_s[name],
                     entry["export_s"]))
        print(f"{name:18s} ours={ours_ms:8.3f} ms ours_graph={ours_graph_ms:8.3f} ms "
              f"eager={eager_ms:8.3f} ms graph={graph_ms:8.3f} ms "
              f"eager/ours_graph={eager_ms / ours_graph_ms:5.2f} "
              f"err_gpu={error:.1e} err_cpu={error_cpu:.1e} err_f64={error64:.1e}", flush=True)
        for label, (calls, ms) in sorted(kernels.items(), key=lambda k: -k[1][1])[:8]:
            print(f"    {label:50s} {calls:5d} calls {ms:8.3f} ms", flush=True)
    if args.json:
        args.json.write_text(json.dumps({"device": device, "torch": torch.__version__,
                                         "rows": records}, indent=1) + "\n")
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


def median_ms(step, runs: int) -> float:
    times = []
    for i in range(20 + runs):
        start = time.perf_counter()
        step()
        torch.cuda.synchronize()
        if i >= 20:
            times.append((time.perf_counter() - start) * 1e3)
    return float(np.median(times))


def graphed(model, example):
    """A CUDA graph of model(example), and the output tensor it writes."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(3):
            model(example)
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        output = model(example)
    return graph, output


def torch_modes(args) -> None:
    """PyTorch alone, TF32 off and on (and bf16: the model and its input in bfloat16, where a
    package of the model was exported @bf16): eager, CUDA graph, CUDA graph on channels_last
    (4-D inputs) and torch.compile(mode="reduce-overhead"); ms and error against float64."""
    import copy
    work = args.work.resolve()
    entries = json.loads((work / "runs.json").read_text())
    seen, records = set(), []
    for entry in entries:
        key = (entry["model"], tuple(entry["shape"]))
        if key in seen:
            continue
        seen.add(key)
        original, _ = build(entry["model"])
        original = original.cuda().eval()
        example32 = seeded_input(entry["shape"]).cuda()
        reference64 = float64_output(original, example32)
        bf16 = any(e["model"] == entry["model"] and tuple(e["shape"]) == key[1] and
                   e.get("precision") == "bf16" for e in entries)
        for mode in ("fp32", "tf32") + (("bf16",) if bf16 else ()):
            tf32 = mode == "tf32"
            torch.backends.cuda.matmul.allow_tf32 = tf32
            torch.backends.cudnn.allow_tf32 = tf32
            model, example = original, example32
            if mode == "bf16":
                model, example = copy.deepcopy(original).bfloat16(), example32.bfloat16()
            row = {"model": entry["model"], "shape": entry["shape"], "tf32": tf32, "mode": mode}
            with torch.inference_mode():
                row["eager_ms"] = median_ms(lambda: model(example), args.runs)
                out = model(example).float().cpu().numpy().ravel()
                row["eager_error"] = relative_error(out, reference64)
                graph, output = graphed(model, example)
                row["graph_ms"] = median_ms(graph.replay, args.runs)
                if example.dim() == 4:
                    last = model.to(memory_format=torch.channels_last)
                    image = example.to(memory_format=torch.channels_last)
                    graph_cl, output_cl = graphed(last, image)
                    row["graph_channels_last_ms"] = median_ms(graph_cl.replay, args.runs)
                    graph_cl.replay()
                    row["graph_channels_last_error"] = relative_error(
                        output_cl.float().cpu().numpy().ravel(), reference64)
                    model = model.to(memory_format=torch.contiguous_format)
                if not args.skip_compile:
                    torch._dynamo.reset()
                    start = time.perf_counter()
                    compiled = torch.compile(model, mode="reduce-overhead")
                    for _ in range(3):
                        compiled(example)
                    row["compile_s"] = time.perf_counter() - start
                    row["compile_ms"] = median_ms(lambda: compiled(example), args.runs)
                    row["compile_error"] = relative_error(
                        compiled(example).float().cpu().numpy().ravel(), reference64)
            records.append(row)
            print(json.dumps(row), flush=True)
            # After every row: what a run cut short has measured stays.
            args.json.write_text(json.dumps({"device": torch.cuda.get_device_name(),
                                             "torch": torch.__version__, "rows": records},
                                            indent=1) + "\n")


def table(args) -> None:
    """The precision table from `run --json` and `torch --json` files."""
    ours = json.loads(args.ours.read_text())
    theirs = json.loads(args.torch.read_text())
    pytorch = {(r["model"], tuple(r["shape"]), r.get("mode", "tf32" if r["tf32"] else "fp32")): r
               for r in theirs["rows"]}

    def best(row) -> tuple[float, str, float]:
        options = [(row["eager_ms"], "eager", row["eager_error"])]
        options.append((row["graph_ms"], "CUDA graph", row["eager_error"]))
        if "graph_channels_last_ms" in row:
            options.append((row["graph_channels_last_ms"], "CUDA graph + channels_last",
                            row["graph_channels_last_error"]))
        if "compile_ms" in row:
            options.append((row["compile_ms"], "torch.compile", row["compile_error"]))
        return min(options)

    lines = [
        "| model | input | precision | ours forward_graph (ms) | error vs float64 | PyTorch "
        "same precision: eager / CUDA graph / torch.compile (ms) | PyTorch best (ms) "
        "| PyTorch error vs float64 | PyTorch best / ours |",
        "|---|---|---|---|---|---|---|---|---|"]
    for row in ours["rows"]:
        mode = pytorch.get((row["model"], tuple(row["shape"]), row["precision"]))
        if mode is None:
            continue
        fastest, how, error = best(mode)
        compiled = f"{mode['compile_ms']:.3f}" if "compile_ms" in mode else "-"
        lines.append(
            f"| {row['model']} | {'x'.join(map(str, row['shape']))} | {row['precision']} "
            f"| {row['forward_graph_ms']:.3f} | {row['error_vs_float64']:.1e} "
            f"| {mode['eager_ms']:.3f} / {mode['graph_ms']:.3f} / {compiled} "
            f"| {fastest:.3f} ({how}) | {error:.1e} | {fastest / row['forward_graph_ms']:.2f} |")
    print("\n".join(lines))
    if args.output:
        args.output.write_text("\n".join(lines) + "\n")


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
    p.add_argument("--json", type=Path, help="also write the rows as JSON here")
    p.add_argument("--kernel-times", action="store_true",
                   help="time each kernel too (a Kokkos Tools library, launches waited for)")
    p = commands.add_parser("torch", help="time PyTorch alone in its modes, TF32 off and on")
    p.add_argument("work", type=Path)
    p.add_argument("--runs", type=int, default=200)
    p.add_argument("--json", type=Path, required=True)
    p.add_argument("--skip-compile", action="store_true")
    p = commands.add_parser("table", help="the precision table from run's and torch's JSON")
    p.add_argument("ours", type=Path)
    p.add_argument("torch", type=Path)
    p.add_argument("--output", type=Path)
    args = parser.parse_args()
    {"export": export, "run": run, "torch": torch_modes, "table": table}[args.command](args)


if __name__ == "__main__":
    main()
