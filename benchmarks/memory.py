"""Peak memory of an exported package against PyTorch's, model by model, on the CPU.

    python3 benchmarks/memory.py [--cases resnet18 transformer wide_mlp:1024 ...]

Ours: the package exported for OpenMP runs one forward() in sample_app with
benchmarks/memory_tracker.cpp as the Kokkos Tools library, which reports the peak of the bytes
Kokkos held (weights, intermediate buffers, the app's input and output Views). The manifest
gives the intermediate buffers' bytes as planned by liveness and as they were before, each
buffer with memory of its own.

PyTorch: eager under inference_mode, one forward after a warm-up, profiled with
profile_memory; the peak of the tensor bytes the forward allocates (its intermediates and its
output, from the profiler's memory timeline) plus the parameters, buffers and input it reads.
Both sides count tensors only: neither the Python interpreter and PyTorch's libraries nor
Kokkos's and the app's code.

Writes the table to benchmarks/results_memory.md (--output).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.cpu import Ours, machine, sh  # noqa: E402
from integration_tests.make_model import save_model  # noqa: E402
from integration_tests.models import build  # noqa: E402
from integration_tests.zoo import UNet  # noqa: E402
from kokkos_support.provision import ensure_kokkos  # noqa: E402

MB = 1e6


def model_for(spec: str):
    """(model, example input, name) of a case: a test model, `NAME:BATCH` for another batch,
    `unet:HxW` for the zoo's U-Net on a HxW two-channel field."""
    base, _, size = spec.partition(":")
    if base == "unet":
        height, width = (int(s) for s in (size or "256x256").split("x"))
        torch.manual_seed(0)
        model, shape = UNet().eval(), (1, 2, height, width)
    else:
        model, shape = build(base)
        if size:
            shape = (int(size), *shape[1:])
    example = torch.randn(*shape, generator=torch.Generator().manual_seed(1))
    return model.eval(), example, f"{base}_{'x'.join(map(str, shape))}".replace("x", "_")


def torch_peak(model, example) -> int:
    """Peak bytes of the tensors one eager forward allocates (profiler memory timeline)."""
    from torch.profiler import ProfilerActivity, profile
    from torch.profiler._memory_profiler import Action
    with torch.inference_mode():
        model(example)
        with profile(activities=[ProfilerActivity.CPU], profile_memory=True,
                     record_shapes=True, with_stack=True) as prof:
            model(example)
    live = peak = 0
    for _, action, _, size in sorted(prof._memory_profile().timeline, key=lambda r: r[0]):
        if action == Action.CREATE:
            live += size
        elif action == Action.DESTROY:
            live -= size
        peak = max(peak, live)
    return peak


def tensor_bytes(tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", nargs="+",
                        default=["resnet18", "transformer", "wide_mlp:1024", "wide_mlp:65536",
                                 "unet:256x256"])
    parser.add_argument("--output", type=Path, default=REPO / "benchmarks" / "results_memory.md")
    args = parser.parse_args()
    kokkos_root = ensure_kokkos()
    rows = []
    with tempfile.TemporaryDirectory(prefix="lapis-memory-") as tmp:
        work = Path(tmp)
        tracker = work / "libmemory_tracker.so"
        sh(["g++", "-O2", "-shared", "-fPIC", REPO / "benchmarks" / "memory_tracker.cpp",
            "-o", tracker])
        for spec in args.cases:
            model, example, name = model_for(spec)
            save_model(model, example, work / f"{name}.pt2", "export")
            ours = Ours(work, name, example, 2, kokkos_root)
            manifest = json.loads((work / f"{name}_openmp" / "lapis_manifest.json").read_text())
            env = {**ours.env, "KOKKOS_PROFILE_LIBRARY": str(tracker),
                   "KOKKOS_TOOLS_LIBS": str(tracker)}
            run = subprocess.run([str(c) for c in (
                ours.app_build / "sample_app", "--input", ours.input, "--output", ours.output,
                "--steps", 1)], capture_output=True, text=True, env=env, check=True)
            measured = int(run.stdout.split("kokkos_peak_bytes=")[1].split()[0])
            weights = tensor_bytes([*model.parameters(), *model.buffers()])
            with torch.no_grad():
                output = model(example)
            io = tensor_bytes([example, output])
            theirs = torch_peak(model, example)
            memory = manifest["memory"]
            row = dict(case=spec, shape="x".join(map(str, example.shape)), weights=weights,
                       ours_weights=manifest["weights"]["bytes"],
                       unshared=memory["intermediate_bytes_unshared"],
                       planned=memory["intermediate_bytes"],
                       bound=memory["intermediate_bytes_live_at_once"], measured=measured,
                       torch_forward=theirs, torch_total=weights + example.numel() * 4 + theirs,
                       io=io)
            rows.append(row)
            print({k: (round(v / MB, 2) if isinstance(v, int) else v) for k, v in row.items()},
                  flush=True)
    commit = sh(["git", "-C", REPO, "rev-parse", "--short", "HEAD"]).strip()
    lines = [
        "# Peak memory: ours against PyTorch (CPU, float32)",
        "",
        f"`python3 benchmarks/memory.py` at {commit}; {machine()}. MB = 10^6 bytes.",
        "",
        "Ours: the peak of the bytes Kokkos held over initialize() and one forward() in "
        "sample_app (benchmarks/memory_tracker.cpp): weights, intermediate buffers, the app's "
        "input and output. Intermediates: the manifest's `memory` (buffers sharing storage by "
        "liveness; before: each buffer its own; in brackets the most bytes of them live at "
        "one op, which no plan can beat). PyTorch: eager, inference_mode; the peak of "
        "the tensor bytes one forward allocates (profiler memory timeline), and that plus the "
        "parameters, buffers and input.",
        "",
        "| model | input | weights | ours intermediates: before → after (most live at once) "
        "| ours peak, measured | PyTorch forward's tensors | PyTorch weights + input + forward "
        "| ours / PyTorch |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['case']} | {r['shape']} | {r['weights'] / MB:.2f} | "
            f"{r['unshared'] / MB:.2f} → {r['planned'] / MB:.2f} ({r['bound'] / MB:.2f}) | "
            f"{r['measured'] / MB:.2f} | "
            f"{r['torch_forward'] / MB:.2f} | {r['torch_total'] / MB:.2f} | "
            f"{r['measured'] / r['torch_total']:.2f} |")
    args.output.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
