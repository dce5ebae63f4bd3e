"""The zoo (zoo.py) end to end: every model through every format its exporter writes, all
packages built in one batched CMake build (benchmarks/conformance/batch_build.py), each run
through its C API in a process of its own on the example inputs and, for dynamic models, at
several sizes (0 nodes and edges included), compared with eager PyTorch: max |ours - torch| <=
1e-4 * max |torch| (float64 models: 1e-10).

    python -m integration_tests.test_zoo [--table FILE]   # the model x format table
"""
from __future__ import annotations

import concurrent.futures
import json
import multiprocessing
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import torch

from . import zoo
from .compare import relative_error

REPO = Path(__file__).resolve().parents[1]
SUFFIXES = {"pt2": "pt2", "torchscript": "pt", "onnx_dynamo": "onnx", "onnx_legacy": "onnx"}

# The packages of one batch library run in one process (Kokkos initialized once, by the
# batch's own call, so that no package's finalize ends it): every input set of each package's
# .npz, its outputs saved by the same keys as soon as it has run.
RUNNER = """
import ctypes, sys
import numpy as np
from exporter import verify
library, *jobs = sys.argv[1:]
batch = ctypes.CDLL(library)
batch.lapis_batch_initialize()
for job in jobs:
    package, inputs, outputs = job.split("|")
    arrays = np.load(inputs)
    runs = sorted({key.split("_")[0] for key in arrays.files})
    results = {}
    with verify.load_module(package, library) as module:
        for run in runs:
            count = len([key for key in arrays.files if key.startswith(run + "_")])
            for index, out in enumerate(module.forward(*[arrays[f"{run}_in{i}"]
                                                         for i in range(count)])):
                results[f"{run}_out{index}"] = out
    np.savez(outputs, **results)
batch.lapis_batch_finalize()
"""


@dataclass
class Case:
    """One (model, format) pair and what happened to it."""
    entry: zoo.ZooModel
    fmt: str
    key: str
    model_file: Path | None = None
    package: Path | None = None
    error: str = ""                  # why it did not export, build or run
    export_seconds: float = 0.0
    errors: dict = field(default_factory=dict)   # input set -> relative error


def cases() -> list[tuple[str, str]]:
    return [(entry.name, fmt) for entry in zoo.ZOO for fmt in entry.formats]


def export(entry: zoo.ZooModel, fmt: str, work: Path) -> Case:
    """Save the model as `fmt` and export it, as `lapis-export` does; errors kept."""
    from exporter import emit, frontend, importer, lowering, package
    from exporter.errors import ExportError

    key = f"{entry.name}_{fmt}"
    case = Case(entry, fmt, key)
    path = case.model_file = work / f"{key}.{SUFFIXES[fmt]}"
    start = time.perf_counter()
    stage = "saving"
    try:
        zoo.save(entry, fmt, path)
        stage = "exporting"
        shapes = [frontend.parse_input_shape(text) for text in zoo.input_shapes(entry)] \
            if fmt == "torchscript" else None
        loaded = frontend.load(path, shapes)
        lowered = lowering.run(importer.to_linalg(loaded), "openmp")
        source = emit.kokkos(lowered, key, "openmp")
        case.package = package.write(source, work / f"pkg_{key}",
                                     package.PackageOptions(force=True))
    except ExportError as exc:
        case.error = f"{stage}: {exc.message}"
    except Exception as exc:  # torch's exporters, or an internal error of ours
        case.error = f"{stage}: {type(exc).__name__}: {(str(exc).splitlines() or [''])[0]}"
    case.export_seconds = time.perf_counter() - start
    return case


def _export_task(pair: tuple[str, str], work: Path) -> tuple[str, str, dict]:
    import warnings
    warnings.filterwarnings("ignore")
    name, fmt = pair
    case = export(zoo.by_name(name), fmt, work)
    return name, fmt, {"key": case.key, "model_file": case.model_file,
                       "package": case.package, "error": case.error,
                       "export_seconds": case.export_seconds}


def input_sets(entry: zoo.ZooModel) -> list[tuple]:
    sets = [entry.inputs(), *entry.runs()]
    return [tuple(t.to(entry.dtype) if t.is_floating_point() else t for t in inputs)
            for inputs in sets]


def run_cases(cases: list[Case], library: Path, work: Path) -> None:
    """Run the built packages of one library on every input set and compare with the
    reference; if the process dies, the cases it did not finish run one by one, so that a
    crash fails only its own case."""
    jobs = []
    for case in cases:
        arrays = {f"run{i}_in{j}": tensor.numpy()
                  for i, inputs in enumerate(input_sets(case.entry))
                  for j, tensor in enumerate(inputs)}
        inputs_file, outputs_file = work / f"{case.key}_in.npz", work / f"{case.key}_out.npz"
        outputs_file.unlink(missing_ok=True)
        np.savez(inputs_file, **arrays)
        jobs.append(f"{case.package}|{inputs_file}|{outputs_file}")
    result = _run([str(library), *jobs])
    for case, job in zip(cases, jobs):
        outputs_file = Path(job.split("|")[2])
        if not outputs_file.exists() and result.returncode != 0 and len(cases) > 1:
            alone = _run([str(library), job])
            if alone.returncode != 0:
                case.error = "running: " + _failure(alone)
                continue
        elif not outputs_file.exists():
            case.error = "running: " + _failure(result)
            continue
        compare_case(case, np.load(outputs_file))


def _run(arguments: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", RUNNER, *arguments], capture_output=True,
                          text=True, cwd=REPO, timeout=600,
                          env={"OMP_NUM_THREADS": "2", "OMP_PROC_BIND": "false",
                               "PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO)})


def _failure(result: subprocess.CompletedProcess) -> str:
    if result.returncode < 0:
        return f"crashed (signal {-result.returncode})"
    return (result.stderr.strip().splitlines() or [f"exit {result.returncode}"])[-1]


def compare_case(case: Case, ours) -> None:
    for i, inputs in enumerate(input_sets(case.entry)):
        for index, expected in enumerate(reference_outputs(case, inputs)):
            mine = ours[f"run{i}_out{index}"]
            if mine.shape != expected.shape:
                case.error = (f"input set {i} output {index}: shape {list(mine.shape)}, "
                              f"the reference {list(expected.shape)}")
                return
            case.errors[f"run{i}_out{index}"] = \
                relative_error(mine, expected) if expected.size else 0.0


def reference_outputs(case: Case, inputs: tuple) -> list[np.ndarray]:
    """Eager PyTorch's outputs, or the ONNX file's own (onnx.reference) where the zoo says."""
    if case.fmt in case.entry.file_reference:
        from onnx.reference import ReferenceEvaluator
        evaluator = ReferenceEvaluator(str(case.model_file))
        feeds = {name: tensor.numpy() for name, tensor in zip(evaluator.input_names, inputs)}
        return [np.asarray(r) for r in evaluator.run(None, feeds)]
    with torch.no_grad():
        reference = case.entry.model()(*inputs)
    references = [reference] if isinstance(reference, torch.Tensor) else list(reference)
    return [r.numpy() for r in references]


def run_zoo(work: Path, kokkos_root: str, jobs: int = 2) -> tuple[dict[str, Case], float]:
    """Export, build (one batch) and run every pair; returns the cases and the build time."""
    from benchmarks.conformance import batch_build

    work.mkdir(parents=True, exist_ok=True)
    all_cases = {}
    # Exported in worker processes (torch's exporters hold the GIL): the cases as plain data.
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(jobs, mp_context=context) as pool:
        for name, fmt, result in pool.map(_export_task, cases(), [work] * len(cases())):
            case = Case(zoo.by_name(name), fmt, **result)
            all_cases[case.key] = case
    built = {key: case.package for key, case in all_cases.items() if case.package}
    start = time.perf_counter()
    libraries = batch_build.build(built, work / "build", kokkos_root, jobs=jobs)
    build_seconds = time.perf_counter() - start
    print(f"zoo: {len(built)} packages built in {build_seconds:.0f} s", file=sys.stderr)
    by_library: dict[Path, list[Case]] = {}
    for key, result in libraries.items():
        if result.library is None:
            all_cases[key].error = f"building: {result.error}"
        else:
            by_library.setdefault(result.library, []).append(all_cases[key])
    for library, built_cases in by_library.items():
        run_cases(built_cases, library, work)
    return all_cases, build_seconds


@pytest.fixture(scope="module")
def zoo_results(tmp_path_factory, kokkos_root) -> dict[str, Case]:
    results, _ = run_zoo(tmp_path_factory.mktemp("zoo"), str(kokkos_root))
    return results


@pytest.mark.parametrize("name,fmt", cases())
def test_zoo_model_matches_pytorch(zoo_results, name, fmt):
    case = zoo_results[f"{name}_{fmt}"]
    assert not case.error, case.error
    assert case.errors and max(case.errors.values()) <= case.entry.tolerance, case.errors


def render_table(results: dict[str, Case], build_seconds: float) -> str:
    lines = ["| model | " + " | ".join(zoo.FORMATS) + " |",
             "|---|" + "---|" * len(zoo.FORMATS)]
    for entry in zoo.ZOO:
        cells = []
        for fmt in zoo.FORMATS:
            case = results.get(f"{entry.name}_{fmt}")
            if case is None:
                cells.append("—")
            elif case.error:
                cells.append(f"error: {case.error[:120]}")
            else:
                worst = max(case.errors.values())
                verdict = "pass" if worst <= entry.tolerance else "WRONG"
                cells.append(f"{verdict} ({worst:.1e}, export {case.export_seconds:.1f} s)")
        lines.append(f"| {entry.name} | " + " | ".join(cells) + " |")
    lines.append(f"\nAll packages built in one batch: {build_seconds:.0f} s.")
    return "\n".join(lines)


def main() -> None:
    import argparse
    import tempfile

    from kokkos_support.provision import ensure_kokkos

    parser = argparse.ArgumentParser(description="the zoo's model x format table")
    parser.add_argument("--table", type=Path)
    parser.add_argument("--work", type=Path)
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="lapis-zoo-"))
    results, build_seconds = run_zoo(work, str(ensure_kokkos()))
    table = render_table(results, build_seconds)
    print(table)
    if args.table:
        args.table.write_text(table + "\n")
    (work / "results.json").write_text(json.dumps(
        {key: {"error": case.error, "errors": case.errors,
               "export_seconds": case.export_seconds} for key, case in results.items()},
        indent=1))


if __name__ == "__main__":
    main()


def test_verify_draws_edge_indices_below_the_node_count(zoo_results, tmp_path):
    """`lapis-export --verify` on the dynamic graph network: its random edge_index must index
    the random node count of each trial (3 and 5 nodes), or the reference itself fails."""
    case = zoo_results["gnn_dynamic_pt2"]
    result = subprocess.run([sys.executable, "-m", "cli", str(case.model_file), "--out",
                             str(tmp_path / "pkg"), "--verify", "-q"], capture_output=True,
                            text=True, cwd=REPO, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "— PASS" in result.stdout
