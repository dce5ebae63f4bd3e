"""PyTorch operator conformance: export each case in pytorch_cases.py through TorchScript and
.pt2, build, run through the C API and compare with eager PyTorch; write pytorch_ops.md.

    python -m benchmarks.conformance.pytorch_ops [-k SUBSTRING] [--timeout 600]

Each case runs in its own worker process with a timeout, so a failure is one line, never a crash.
Tolerance: float max abs error <= 1e-4 * max(1, max|ref|); int/bool outputs exact.
"""
import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PATHS = ("torchscript", "pt2")


def run_one(name: str, path: str) -> str:
    import numpy as np
    import torch
    from benchmarks.conformance.pytorch_cases import CASES
    from exporter import verify
    from exporter.errors import ExportError

    _, factory, make_inputs = next(c for c in CASES if c[0] == name)
    torch.manual_seed(0)
    module = factory().eval()
    inputs = make_inputs()
    with torch.no_grad():
        ref = module(*inputs)
    refs = [ref] if isinstance(ref, torch.Tensor) else list(ref)
    with tempfile.TemporaryDirectory(prefix="lapis-conf-") as tmp:
        tmp = Path(tmp)
        try:
            if path == "torchscript":
                model = tmp / "m.pt"
                torch.jit.save(torch.jit.trace(module, inputs), str(model))
            else:
                model = tmp / "m.pt2"
                torch.export.save(torch.export.export(module, inputs), str(model))
        except Exception as e:  # noqa: BLE001 - reported as one line
            return "failed at capture: " + str(e).splitlines()[0][:160]
        cmd = [sys.executable, str(ROOT / "cli.py"), str(model), "--out", str(tmp / "pkg"),
               "--name", f"c_{name}", "-q"]
        if path == "torchscript":
            cmd += ["--input-shape=" + "x".join(map(str, t.shape)) for t in inputs]
        res = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
        if res.returncode != 0:
            line = (res.stderr.strip().splitlines() or ["(no message)"])[0][:200]
            return "failed at import/lowering/emit: " + line
        try:
            lib = verify.build(tmp / "pkg", tmp / "build")
        except ExportError as e:
            return "failed to build: " + str(e).splitlines()[-1][:160]
        with verify.load_module(tmp / "pkg", lib) as pkg:
            ours = pkg.forward(*[t.numpy() for t in inputs])
    for mine, theirs in zip(ours, refs):
        theirs = theirs.detach().numpy()
        if mine.shape != theirs.shape:
            return f"wrong numbers: shape {list(mine.shape)} vs {list(theirs.shape)}"
        if theirs.dtype.kind in "biu":
            if not np.array_equal(mine.astype(theirs.dtype), theirs):
                return "wrong numbers: integer/bool output differs"
        else:
            err = float(np.abs(mine.astype(np.float64) - theirs).max(initial=0))
            tol = 1e-4 * max(1.0, float(np.abs(theirs).max(initial=0)))
            if err > tol:
                return f"wrong numbers: max abs error {err:.3g} > {tol:.3g}"
    return "passed"


def run_case(name: str, path: str, timeout: int) -> str:
    try:
        res = subprocess.run([sys.executable, "-m", "benchmarks.conformance.pytorch_ops",
                              "--one", name, path], capture_output=True, text=True,
                             cwd=ROOT, timeout=timeout)
    except subprocess.TimeoutExpired:
        return f"timed out after {timeout} s"
    lines = res.stdout.strip().splitlines()
    if res.returncode != 0 or not lines:
        tail = (res.stderr.strip().splitlines() or ["no output"])[-1][:160]
        return "crashed in worker: " + tail
    return lines[-1]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--one", nargs=2)
    parser.add_argument("-k", default="")
    parser.add_argument("--timeout", type=int, default=600)
    parser.add_argument("--out", default=str(Path(__file__).with_name("pytorch_ops.md")))
    args = parser.parse_args()
    if args.one:
        print(run_one(*args.one))
        return
    from benchmarks.conformance.pytorch_cases import CASES
    rows = []
    for name, _, _ in CASES:
        if args.k in name:
            statuses = [run_case(name, p, args.timeout) for p in PATHS]
            rows.append((name, *statuses))
            print(json.dumps(rows[-1]), flush=True)
    passed = sum(s == "passed" for r in rows for s in r[1:])
    lines = ["# PyTorch operator conformance", "",
             f"{passed} of {2 * len(rows)} case-paths passed.", "",
             "| case | TorchScript | .pt2 |", "|---|---|---|"]
    lines += [f"| {n} | {a} | {b} |" for n, a, b in rows]
    Path(args.out).write_text("\n".join(lines) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
