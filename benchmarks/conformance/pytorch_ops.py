"""PyTorch operator conformance: every case in pytorch_cases.py through the TorchScript path and
the torch.export (.pt2) path, built in one CMake project (batch_build.py), run through the C API
and compared with eager PyTorch; writes a table.

    python benchmarks/conformance/pytorch_ops.py --jobs 2 \\
        --table benchmarks/conformance/pytorch_results.md

Three phases, as onnx_run.py does them: capture and export every case-path in worker processes
(each with a time limit; a failure is one line, never a crash or a hang), build all exported
packages at once, then run each built case-path in a process of its own (onnx_exec.py) against
the eager output saved at export time. Tolerance: float max abs error <= 1e-4 * max(1, max|ref|);
int64 and bool outputs exact. Every case-path ends in exactly one category.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))

import onnx_run  # noqa: E402

PATHS = ("torchscript", "pt2")
PATH_LABELS = {"torchscript": "TorchScript", "pt2": ".pt2"}
PASSED = "passed"
CATEGORIES = {
    PASSED: "passed",
    "capture": "failed at capture (torch.jit.trace / torch.export.export)",
    "frontend": "failed in our frontend (loading, TorchScript -> torch.export)",
    "import": "failed in torch-mlir (FX import, torch dialect, torch -> linalg)",
    "lowering": "failed in our MLIR lowering passes",
    "emitter": "failed in our emitter",
    "build": "failed to build",
    "wrong": "wrong numbers",
    "runtime": "error at run time (exception, crash or time-out)",
}
EXPORT_TIMEOUT = 300.0
TOLERANCE = 1e-4


def case_key(name: str, path: str) -> str:
    """The package name of a case-path: a C identifier, unique in the batch build."""
    return f"c_{name}_{'ts' if path == 'torchscript' else 'pt2'}"


# --- export (worker processes) ---------------------------------------------------------------

def export_case(name: str, path: str, case_dir: str, package_dir: str) -> dict:
    """Capture case `name` through `path`, save its inputs and eager outputs beside it (the
    layout onnx_exec.py reads), and export the package; returns {category, stage, reason}
    (category None: exported)."""
    import numpy as np
    import torch

    from benchmarks.conformance.pytorch_cases import CASES
    from exporter import emit, frontend, importer, lowering, package
    from exporter.errors import ExportError

    case_dir, result = Path(case_dir), {"category": None, "stage": "", "reason": ""}
    case_dir.mkdir(parents=True, exist_ok=True)
    _, factory, make_inputs = next(c for c in CASES if c[0] == name)
    torch.manual_seed(0)
    module = factory().eval()
    inputs = make_inputs()
    with torch.no_grad():
        reference = module(*inputs)
    references = [reference] if isinstance(reference, torch.Tensor) else list(reference)
    arrays = {f"in_{i}": t.numpy() for i, t in enumerate(inputs)}
    arrays.update({f"out_{i}": t.detach().numpy() for i, t in enumerate(references)})
    np.savez(case_dir / "data.npz", **arrays)
    scale = max([1.0] + [float(np.abs(r.detach().numpy().astype(np.float64)).max(initial=0))
                         for r in references if r.is_floating_point()])
    (case_dir / "case.json").write_text(json.dumps({
        "name": name, "path": path, "inputs": len(inputs), "outputs": len(references),
        "rtol": 0.0, "atol": TOLERANCE * scale}))

    stage = "capture"
    try:
        if path == "torchscript":
            model = case_dir / "model.pt"
            torch.jit.save(torch.jit.trace(module, inputs), str(model))
            shapes = [tuple(t.shape) for t in inputs]
        else:
            model = case_dir / "model.pt2"
            torch.export.save(torch.export.export(module, inputs), str(model))
            shapes = None
        stage = "frontend"
        loaded = frontend.load(model, shapes)
        stage = "import"
        imported = importer.to_linalg(loaded)
        stage = "lowering"
        lowered = lowering.run(imported, "openmp")
        stage = "emitter"
        source = emit.kokkos(lowered, case_key(name, path), "openmp")
        stage = "package"
        package.write(source, Path(package_dir), package.PackageOptions(force=True))
    except ExportError as exc:
        return {**result, "category": _category(stage), "stage": _where(stage, exc.message),
                "reason": _one_line(exc.message)}
    except Exception as exc:  # torch's own errors at capture, or an internal error
        kind = "" if stage == "capture" else "internal error: "
        return {**result, "category": _category(stage), "stage": stage,
                "reason": f"{kind}{type(exc).__name__}: {_one_line(str(exc))}"}
    return result


def _category(stage: str) -> str:
    return {"package": "emitter"}.get(stage, stage)


def _where(stage: str, message: str) -> str:
    """The pass or step a failure happened in, from the importer's and lowering's messages."""
    if stage == "import":
        for marker, where in (("decomposition failed", "torch.export decompositions"),
                              ("could not import the graph", "FX import"),
                              ("lowering to torch dialect", "torch dialect pipeline"),
                              ("no lowering for it to linalg", "torch -> linalg"),
                              ("lowering to linalg-on-tensors", "torch -> linalg pipeline"),
                              ("torch-mlir has no op", "FX import (no torch-mlir op)")):
            if marker in message:
                return where
    if stage == "lowering":
        match = re.search(r"MLIR lowering step '([^']+)'", message)
        if match:
            return match.group(1)
        if "cannot lower it to Kokkos" in message:
            return "foreign dialect"
    return {"package": "package"}.get(stage, stage)


def _one_line(text: str) -> str:
    text = (text.strip().splitlines() or [""])[0]
    text = re.sub(r"^/\S+: ", "", text)       # drop the model path
    return text[:240]


def _worker(connection) -> None:
    import warnings
    warnings.filterwarnings("ignore")
    while True:
        task = connection.recv()
        if task is None:
            return
        try:
            result = export_case(*task)
        except BaseException as exc:  # noqa: BLE001  (kept alive for the next case)
            result = {"category": "emitter", "stage": "export",
                      "reason": f"internal error: {type(exc).__name__}: {exc}"[:240]}
        connection.send(result)


class WorkerPool(onnx_run.WorkerPool):
    """onnx_run's pool (time limit per task, a killed worker replaced) running export_case."""

    def _start(self):
        parent, child = self.context.Pipe()
        process = self.context.Process(target=_worker, args=(child,), daemon=True)
        process.start()
        return {"process": process, "connection": parent, "task": None, "since": 0.0}


# --- the whole run -----------------------------------------------------------------------------

def select(keys: list[str] | None = None, substring: str = "") -> list[tuple[str, str]]:
    """(case, path) pairs: those named as "case:path" (or "case": both paths) in `keys`, else
    every case whose name contains `substring`."""
    from benchmarks.conformance.pytorch_cases import CASES

    names = [case[0] for case in CASES]
    if keys:
        chosen = []
        for key in keys:
            name, _, path = key.partition(":")
            if name not in names or (path and path not in PATHS):
                raise SystemExit(f"unknown case-path '{key}' (case names: pytorch_cases.py, "
                                 f"paths: {', '.join(PATHS)})")
            chosen += [(name, p) for p in ([path] if path else PATHS)]
        return chosen
    return [(name, path) for name in names if substring in name for path in PATHS]


def run(pairs: list[tuple[str, str]], jobs: int, work: Path, optimization: str = "-O1",
        log=print) -> dict:
    started = time.monotonic()
    timings = {}
    work.mkdir(parents=True, exist_ok=True)
    records = {case_key(n, p): {"name": n, "path": p, "key": case_key(n, p)} for n, p in pairs}
    tasks = [(case_key(n, p), n, p, str(work / "cases" / case_key(n, p)),
              str(work / "packages" / case_key(n, p))) for n, p in pairs]
    exported = onnx_run.export_all(WorkerPool(jobs, EXPORT_TIMEOUT), tasks, log, every=20)
    for key, result in exported.items():
        if "timed out" in result["reason"] or "process died" in result["reason"]:
            result = {**result, "category": "import", "stage": "export"}
        records[key].update(result)
    timings["export"] = time.monotonic() - started
    log(f"export done in {timings['export']:.0f} s")

    onnx_run.build_and_run(records, work, jobs, optimization, timings, log)
    timings["total"] = time.monotonic() - started
    import torch
    summary = {"cases": records, "timings": timings, "jobs": jobs, "optimization": optimization,
               "environment": {"torch": torch.__version__}}
    (work / "results.json").write_text(json.dumps(summary, indent=1))
    return summary


def render_table(summary: dict, command: str) -> str:
    records = list(summary["cases"].values())
    counts = Counter(record["category"] for record in records)
    by_path = {path: Counter(r["category"] for r in records if r["path"] == path)
               for path in PATHS}
    timings = summary["timings"]
    cases = sorted({r["name"] for r in records}, key=lambda n: _case_order().get(n, 0))
    lines = ["# PyTorch operator conformance", "",
             f"{len(cases)} cases x {len(PATHS)} paths = {len(records)} case-paths, torch "
             f"{summary['environment']['torch']}, {summary['jobs']} jobs, batch build "
             f"{summary['optimization']}. Wall time {timings['total'] / 60:.1f} min "
             f"(export {timings['export']:.0f} s, build {timings['build']:.0f} s, "
             f"run {timings['run']:.0f} s).", "",
             f"Regenerate: `{command}`", "",
             "Tolerance: float max abs error <= 1e-4 * max(1, max|ref|) against eager PyTorch; "
             "int64 and bool outputs exact.", "",
             f"**Passed: {counts.get(PASSED, 0)} of {len(records)}** (TorchScript "
             f"{by_path['torchscript'].get(PASSED, 0)}, .pt2 {by_path['pt2'].get(PASSED, 0)}).",
             "", "| result | case-paths | TorchScript | .pt2 |", "|---|---|---|---|"]
    for key, label in CATEGORIES.items():
        lines.append(f"| {label} | {counts.get(key, 0)} | {by_path['torchscript'].get(key, 0)}"
                     f" | {by_path['pt2'].get(key, 0)} |")
    for key, label in CATEGORIES.items():
        if key == PASSED:
            continue
        members = [r for r in records if r["category"] == key]
        if not members:
            continue
        lines += ["", f"## {label[0].upper()}{label[1:]} ({len(members)})", "",
                  "| where | reason | case-paths |", "|---|---|---|"]
        groups = defaultdict(list)
        for record in members:
            groups[(record.get("stage", ""), onnx_run._reason_key(record.get("reason", "")))
                   ].append(f"{record['name']} ({PATH_LABELS[record['path']]})")
        for (stage, reason), names in sorted(groups.items(), key=lambda g: (-len(g[1]), g[0])):
            lines.append(f"| {stage} | {reason.replace('|', '/')} | {len(names)}: "
                         f"{', '.join(sorted(names))} |")
    lines += ["", "## Per case", "", "| case | TorchScript | .pt2 |", "|---|---|---|"]
    table = {(r["name"], r["path"]): r for r in records}
    for name in cases:
        cells = []
        for path in PATHS:
            record = table.get((name, path))
            if record is None:
                cells.append("")
            elif record["category"] == PASSED:
                cells.append("passed")
            else:
                cells.append(f"{record['category']}: {record['reason']}".replace("|", "/")[:160])
        lines.append(f"| {name} | {' | '.join(cells)} |")
    return "\n".join(lines) + "\n"


def _case_order() -> dict[str, int]:
    from benchmarks.conformance.pytorch_cases import CASES
    return {case[0]: index for index, case in enumerate(CASES)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-k", default="", help="only cases whose name contains this")
    parser.add_argument("--only", nargs="*", help="case-paths, 'case:path' or 'case' (both)")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--work", type=Path, default=ROOT / "out" / "pytorch-conformance")
    parser.add_argument("--table", type=Path, help="write the markdown table here")
    parser.add_argument("--optimization", default="-O1",
                        help="compiler flags for the batch build (default -O1)")
    parser.add_argument("--from-results", type=Path,
                        help="only render the table of an earlier run's results.json")
    arguments = parser.parse_args(argv)
    if arguments.from_results:
        summary = json.loads(arguments.from_results.read_text())
    else:
        summary = run(select(arguments.only, arguments.k), arguments.jobs, arguments.work,
                      arguments.optimization)
    command = ("python benchmarks/conformance/pytorch_ops.py --jobs 2 "
               "--table benchmarks/conformance/pytorch_results.md")
    table = render_table(summary, command)
    if arguments.table:
        arguments.table.write_text(table)
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
