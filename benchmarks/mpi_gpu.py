"""Two GPUs, one MPI rank each: ResNet18, a batch of 128 split over two ranks of sample_app/mpi.

Against one rank on one GPU and against PyTorch, in one run; writes a markdown table.

Two halves, as benchmarks/gpu.py (whose export and build it reuses):

    # where lapis-export runs: CUDA packages at batch 64 and 128, the CPU reference
    python benchmarks/mpi_gpu.py export --out mpi-run/
    # on a machine with 2 GPUs (CUDA, CMake, Open MPI, PyTorch; a Kokkos built with CUDA at
    # KOKKOS, as benchmarks/results_gpu.md describes):
    python benchmarks/mpi_gpu.py run mpi-run/ --kokkos-root KOKKOS [--steps 200]

`run` builds sample_app/mpi against both packages with KOKKOS's nvcc_wrapper and runs, on the
seeded batch of 128 (or its first 64 samples):
  - 1 rank, batch 128 package: one GPU, the whole batch;
  - 1 rank, batch 64 package: one GPU, half of it (what each rank does below, alone);
  - 2 ranks, batch 64 package: each on its own GPU (node-local rank 0 -> device 0, 1 -> 1);
  - 2 ranks, batch 64 package, --devices 1: both on device 0.
Each rank's forward is timed by mpi_app (median of the steps after 20 warm-ups, fenced, the
ranks starting each step together); the gathered output is checked against PyTorch on the GPU
(TF32 off; max abs error <= 1e-4 * max |reference|) and against the CPU reference of export.
"""
from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import re
import shutil
import sys
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks import gpu  # noqa: E402
from integration_tests.models import build  # noqa: E402

MODEL, BATCH = "resnet18", 128
WHOLE, HALF = f"{MODEL}_b{BATCH}", f"{MODEL}_b{BATCH // 2}"   # the packages gpu.export names
# (label, package, ranks, mpi_app arguments)
RUNS = [
    ("1 rank, 1 GPU, whole batch", WHOLE, 1, []),
    ("1 rank, 1 GPU, half batch", HALF, 1, []),
    ("2 ranks, a GPU each", HALF, 2, []),
    ("2 ranks, both on GPU 0", HALF, 2, ["--devices", "1"]),
]
DEVICE_LINE = re.compile(r"^rank (\d+) of \d+: node-local rank \d+ of \d+, (.*)$", re.M)
TIME_LINE = re.compile(r"^rank (\d+) of \d+: samples .* forward median_ms=([0-9.]+)", re.M)
SLOWEST = re.compile(r"slowest rank's forward median_ms=([0-9.]+)")


def export(args) -> None:
    gpu.export(argparse.Namespace(models=[f"{MODEL}:{BATCH // 2}", f"{MODEL}:{BATCH}"],
                                  out=args.out))


def mpirun(args, app: Path, ranks: int, input_file: Path, output: Path,
           extra: list[str]) -> str:
    root = ["--allow-run-as-root"] if os.geteuid() == 0 else []
    return gpu.sh(["mpirun", *root, "--bind-to", "none", *args.mpirun_args, "-np", ranks, app,
                   "--input", input_file, "--output", output, "--steps", args.steps,
                   "--warmup", 20, *extra],
                  # containers often forbid the cross-process copies Open MPI tries first
                  env={**os.environ, "OMPI_MCA_btl_vader_single_copy_mechanism": "none"})


def run(args) -> None:
    for tool in ("mpirun", "mpicxx"):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} not found: this needs Open MPI (openmpi-bin, libopenmpi-dev)")
    if torch.cuda.device_count() < 2:
        sys.exit(f"this needs 2 GPUs; torch sees {torch.cuda.device_count()}")
    work = args.work.resolve()
    entries = {e["name"]: e for e in json.loads((work / "runs.json").read_text())}
    with concurrent.futures.ThreadPoolExecutor(max_workers=len(entries)) as pool:
        list(pool.map(lambda e: gpu.build_app(work, e, args.kokkos_root, args.cmake_args, "mpi"),
                      entries.values()))

    whole = entries[WHOLE]
    example = gpu.seeded_input(whole["shape"])
    if gpu.sha256(example) != whole["input_sha256"]:
        sys.exit("the seeded input differs from the one exported")
    inputs = {n: work / f"mpi_in{n}.bin" for n in (BATCH, BATCH // 2)}
    for n, path in inputs.items():
        example[:n].numpy().astype(np.float32).tofile(path)
    cpu_reference = np.fromfile(work / f"{whole['name']}.reference.bin",
                                dtype=np.float32).reshape(BATCH, -1)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    model = build(MODEL)[0].cuda().eval()
    eager_ms, graph_ms, torch_out = gpu.torch_times(model, example.cuda(), args.steps)
    torch_out = torch_out.reshape(BATCH, -1)

    rows, failed = [], False
    for label, name, ranks, extra in RUNS:
        per_rank = entries[name]["shape"][0]
        samples = ranks * per_rank
        tag = "".join(f"_{a.lstrip('-')}" for a in extra)
        output = work / f"mpi_out_{name}_np{ranks}{tag}.bin"
        text = mpirun(args, work / f"{name}_mpi" / "mpi_app", ranks, inputs[samples], output,
                      extra)
        print(f"--- {label}\n{text}", end="", flush=True)
        devices = dict(DEVICE_LINE.findall(text))
        times = {int(r): float(ms) for r, ms in TIME_LINE.findall(text)}
        slowest = SLOWEST.search(text)
        if len(devices) != ranks or len(times) != ranks or not slowest:
            sys.exit(f"mpi_app did not print a device and a time per rank:\n{text}")
        shared = "--devices" in extra  # both ranks asked onto one GPU
        if ranks == 2 and (devices["0"] == devices["1"]) != shared:
            sys.exit(f"{label}: the ranks' devices are not as asked:\n{text}")
        ours = np.fromfile(output, dtype=np.float32).reshape(samples, -1)
        error = gpu.relative_error(ours, torch_out[:samples])
        error_cpu = gpu.relative_error(ours, cpu_reference[:samples])
        ok = error <= gpu.TOLERANCE and error_cpu <= gpu.TOLERANCE
        failed |= not ok
        ms = float(slowest.group(1))
        rows.append((label, ranks, per_rank, " / ".join(f"{times[r]:.3f}" for r in sorted(times)),
                     ms, samples / ms * 1e3, error, error_cpu, "yes" if ok else "NO"))

    lines = [
        "# Two GPUs, one MPI rank each: ResNet18 through sample_app/mpi",
        "",
        f"GPUs: {', '.join(torch.cuda.get_device_name(i) for i in range(2))}; torch "
        f"{torch.__version__} (TF32 off). Command: `python benchmarks/mpi_gpu.py run DIR "
        f"--kokkos-root KOKKOS --steps {args.steps}` after `python benchmarks/mpi_gpu.py export "
        "--out DIR`. Forward per rank: median of the steps after 20 warm-ups, each step "
        "fenced, the ranks starting each step together (MPI_Barrier). Throughput: the run's "
        "samples over the slowest rank's median. Errors: max |ours - ref| / max |ref| of the "
        "gathered output against PyTorch on the GPU and the CPU reference.",
        f"PyTorch on one GPU, batch {BATCH}: eager {eager_ms:.3f} ms, CUDA graph "
        f"{graph_ms:.3f} ms ({BATCH / graph_ms * 1e3:.0f} samples/s).",
        "",
        "| run | ranks | samples per rank | forward per rank (ms) | slowest rank (ms) "
        "| samples/s | error vs GPU | error vs CPU | match |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    lines += [f"| {label} | {r} | {n} | {t} | {ms:.3f} | {rate:.0f} | {e:.1e} | {ec:.1e} | {ok} |"
              for label, r, n, t, ms, rate, e, ec, ok in rows]
    args.output.write_text("\n".join(lines) + "\n")
    print("\n".join(lines[3:]))
    print(f"wrote {args.output}")
    if failed:
        sys.exit("some outputs did not match PyTorch")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    p = commands.add_parser("export", help="export ResNet18 for the cuda backend")
    p.add_argument("--out", type=Path, required=True)
    p = commands.add_parser("run", help="build, check and time on the 2-GPU machine")
    p.add_argument("work", type=Path)
    p.add_argument("--kokkos-root", type=Path, required=True)
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--cmake-arg", action="append", default=[], dest="cmake_args",
                   help="an extra option for the mpi_app builds (--cmake-arg=-DX=Y)")
    p.add_argument("--mpirun-arg", action="append", default=[], dest="mpirun_args",
                   help="an extra option for mpirun (--mpirun-arg=--report-bindings)")
    p.add_argument("--output", type=Path, default=REPO / "benchmarks" / "results_mpi_gpu.md")
    args = parser.parse_args()
    export(args) if args.command == "export" else run(args)


if __name__ == "__main__":
    main()
