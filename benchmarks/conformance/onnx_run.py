"""Conformance on ONNX's own backend test suite: export every case with lapis-export, build the
packages in one CMake project (batch_build.py), run each against the suite's expected outputs
with the suite's rtol/atol, and write a table.

    python benchmarks/conformance/onnx_run.py --subset full --jobs 2 \\
        --table benchmarks/conformance/onnx_results.md

Exports run in worker processes (each case with a time limit, so one bad case cannot hang the
run); each built case runs in a process of its own. Every case ends in exactly one category.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import signal
import subprocess
import sys
import time
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from multiprocessing.connection import wait
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))

import batch_build  # noqa: E402
import onnx_cases  # noqa: E402

# Categories, in table order.
PASSED = "passed"
CATEGORIES = {
    PASSED: "passed",
    "interface": "refused: model interface (non-tensor or unsupported element type, "
                 "dynamic shape)",
    "import": "failed at import/lowering in torch-mlir (ONNX import, ONNX -> torch, "
              "torch -> linalg)",
    "lowering": "failed in our MLIR lowering passes",
    "emitter": "failed in our emitter",
    "build": "failed to build",
    "wrong": "wrong numbers",
    "random": "random output: shape/dtype checked, values not comparable",
    "runtime": "error at run time (exception, crash or time-out)",
}
EXPORT_TIMEOUT = 180.0
RUN_TIMEOUT = 120.0


# --- export (worker processes) ---------------------------------------------------------------

# Export stages in order; a worker publishes the one it is in, for when it dies there.
STAGES = ("frontend", "import", "lowering", "emitter", "package")
STAGE_CATEGORIES = {"frontend": "interface", "package": "emitter"}
STAGE_WORK = {"frontend": "checking the ONNX model", "import": "torch-mlir's import to linalg",
              "lowering": "the MLIR lowering passes", "emitter": "the Kokkos emitter",
              "package": "writing the package"}


def export_case(case_dir: str, package_dir: str, on_stage=lambda stage: None) -> dict:
    """Export one case; returns {category, stage, reason, linalg} (category None: exported).
    `on_stage(name)` is called as each of STAGES begins."""
    import onnx

    from exporter import emit, importer, lowering, package
    from exporter.frontend import onnx_model
    from exporter.errors import ExportError

    meta = json.loads((Path(case_dir) / "case.json").read_text())
    result = {"category": None, "stage": "", "reason": "", "linalg": False}
    if not meta["tensor_data"]:
        return {**result, "category": "interface", "stage": "frontend",
                "reason": "inputs or outputs are sequences/optionals, not tensors"}
    shapes = [tuple(shape) for shape in meta["input_shapes"]]
    model_path = Path(case_dir) / "model.onnx"
    stage = "frontend"
    on_stage(stage)
    try:
        loaded = onnx_model.prepare(onnx.load(str(model_path)), model_path, shapes)
        stage = "import"
        on_stage(stage)
        imported = importer.to_linalg(loaded)
        result["linalg"] = True
        stage = "lowering"
        on_stage(stage)
        lowered = lowering.run(imported, "openmp")
        stage = "emitter"
        on_stage(stage)
        source = emit.kokkos(lowered, meta["name"], "openmp")
        stage = "package"
        on_stage(stage)
        package.write(source, Path(package_dir), package.PackageOptions(force=True))
    except ExportError as exc:
        category = STAGE_CATEGORIES.get(stage, stage)
        return {**result, "category": category, "stage": _import_pass(stage, exc.message),
                "reason": _one_line(exc.message)}
    except Exception as exc:  # an internal error: recorded as such, never a crash of the run
        category = STAGE_CATEGORIES.get(stage, stage)
        return {**result, "category": category, "stage": stage,
                "reason": f"internal error: {type(exc).__name__}: {_one_line(str(exc))}"}
    return result


def _import_pass(stage: str, message: str) -> str:
    if stage != "import":
        return stage
    for marker, name in (("could not import the ONNX graph", "ONNX import"),
                         ("lowering to torch dialect", "ONNX -> torch"),
                         ("lowering to linalg-on-tensors", "torch -> linalg")):
        if marker in message:
            return name
    return stage


def _one_line(text: str) -> str:
    text = (text.strip().splitlines() or [""])[0]
    if ": " in text and text.startswith("/"):
        text = text.split(": ", 1)[1]        # drop the model path
    return text[:240]


def _worker(connection, stage) -> None:
    import warnings
    warnings.filterwarnings("ignore")

    def on_stage(name: str) -> None:
        stage.value = STAGES.index(name)
    while True:
        task = connection.recv()
        if task is None:
            return
        try:
            result = export_case(*task, on_stage=on_stage)
        except BaseException as exc:  # noqa: BLE001  (kept alive for the next case)
            result = {"category": "emitter", "stage": "export", "linalg": False,
                      "reason": f"internal error: {type(exc).__name__}: {exc}"[:240]}
        connection.send(result)


class WorkerPool:
    """`jobs` export processes; a case over `timeout` seconds has its worker killed and
    replaced, and is recorded as timed out."""

    def __init__(self, jobs: int, timeout: float):
        self.context = multiprocessing.get_context("spawn")
        self.timeout = timeout
        self.workers = [self._start() for _ in range(jobs)]

    def _start(self):
        parent, child = self.context.Pipe()
        stage = self.context.Value("i", 0)
        process = self.context.Process(target=_worker, args=(child, stage), daemon=True)
        process.start()
        return {"process": process, "connection": parent, "task": None, "since": 0.0,
                "stage": stage}

    def map(self, tasks: list[tuple[str, str, str]], progress) -> dict[str, dict]:
        """tasks: (key, case_dir, package_dir) -> {key: result}."""
        pending, results = list(reversed(tasks)), {}
        while pending or any(w["task"] for w in self.workers):
            for worker in self.workers:
                if worker["task"] is None and pending:
                    key, *arguments = pending.pop()
                    worker["task"], worker["since"] = key, time.monotonic()
                    worker["connection"].send(tuple(arguments))
            busy = [w for w in self.workers if w["task"]]
            ready = wait([w["connection"] for w in busy], timeout=1.0)
            for index, worker in enumerate(self.workers):
                if not worker["task"]:
                    continue
                key = worker["task"]
                if worker["connection"] in ready:
                    try:
                        results[key] = worker["connection"].recv()
                    except (EOFError, ConnectionResetError):
                        results[key] = self._death(worker)
                        self.workers[index] = self._replace(worker)
                        progress(key, results[key])
                        continue
                    worker["task"] = None
                    progress(key, results[key])
                elif time.monotonic() - worker["since"] > self.timeout:
                    results[key] = {"category": "import", "stage": "export", "linalg": False,
                                    "reason": f"export timed out after {self.timeout:.0f} s"}
                    self.workers[index] = self._replace(worker)
                    progress(key, results[key])
        return results

    @staticmethod
    def _death(worker) -> dict:
        """A worker that died mid-case (a crash in native code: LLVM out of memory, SIGFPE):
        the case fails in the stage it was in, with the signal as its reason."""
        worker["process"].join(timeout=10)
        code = worker["process"].exitcode
        how = f"signal {signal.Signals(-code).name}" if code is not None and code < 0 and \
            -code in signal.Signals._value2member_map_ else f"exit {code}"
        stage = STAGES[worker["stage"].value]
        linalg = STAGES.index(stage) > STAGES.index("import")
        return {"category": STAGE_CATEGORIES.get(stage, stage), "stage": stage,
                "linalg": linalg, "reason": f"the export process crashed ({how}) in "
                                            f"{STAGE_WORK[stage]}"}

    def _replace(self, worker):
        worker["process"].kill()
        worker["process"].join()
        return self._start()

    def close(self) -> None:
        for worker in self.workers:
            try:
                worker["connection"].send(None)
            except OSError:
                pass
            worker["process"].join(timeout=10)
            if worker["process"].is_alive():
                worker["process"].kill()


# --- run ---------------------------------------------------------------------------------------

def run_case(library: Path, package_dir: Path, case_dir: Path) -> dict:
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "OMP_PROC_BIND": "false"}
    try:
        finished = subprocess.run(
            [sys.executable, str(HERE / "onnx_exec.py"), str(library), str(package_dir),
             str(case_dir)], capture_output=True, text=True, timeout=RUN_TIMEOUT,
            env=environment)
    except subprocess.TimeoutExpired:
        return {"category": "runtime", "reason": f"timed out after {RUN_TIMEOUT:.0f} s"}
    lines = [line for line in finished.stdout.splitlines() if line.startswith("{")]
    if not lines:
        how = f"signal {-finished.returncode}" if finished.returncode < 0 else \
            f"exit {finished.returncode}"
        tail = (finished.stderr.strip().splitlines() or [""])[-1][:200]
        return {"category": "runtime", "reason": f"crashed ({how}) {tail}".strip()}
    outcome = json.loads(lines[-1])
    category = {"passed": PASSED, "wrong": "wrong", "random": "random"}.get(
        outcome["status"], "runtime")
    return {"category": category, "reason": outcome["detail"]}


# --- the whole run -----------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subset", choices=("ci", "full"), default="ci")
    parser.add_argument("--only", nargs="*", help="case names (overrides --subset)")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--work", type=Path, default=ROOT / "out" / "onnx-conformance")
    parser.add_argument("--table", type=Path, help="write the markdown table here")
    parser.add_argument("--optimization", default="-O1",
                        help="compiler flags for the batch build (default -O1)")
    parser.add_argument("--from-results", type=Path,
                        help="only render the table of an earlier run's results.json")
    parser.add_argument("--merge", type=Path, nargs="+", default=[],
                        help="with --from-results: results.json files of later --only runs, "
                             "whose cases replace the earlier run's")
    arguments = parser.parse_args(argv)
    if arguments.merge and not arguments.from_results:
        parser.error("--merge needs --from-results (the run the cases are merged into)")
    if arguments.from_results:
        results = json.loads(arguments.from_results.read_text())
        for path in arguments.merge:
            results = merge(results, json.loads(path.read_text()))
    else:
        results = run(arguments.subset, arguments.only, arguments.jobs, arguments.work,
                      arguments.optimization)
    table = render_table(results, arguments)
    if arguments.table:
        arguments.table.write_text(table)
    print(table)
    return 0


def run(subset: str, only: list[str] | None, jobs: int, work: Path,
        optimization: str = "-O1", log=print) -> dict:
    started = time.monotonic()
    timings = {}
    cases = onnx_cases.collect()
    if only:
        cases = [case for case in cases if case.name in set(only)]
    elif subset == "ci":
        cases = onnx_cases.ci_subset(cases)
    work.mkdir(parents=True, exist_ok=True)
    for case in cases:
        onnx_cases.write(case, work / "cases" / case.name)
    timings["collect"] = time.monotonic() - started
    log(f"{len(cases)} cases collected in {timings['collect']:.0f} s")

    records = {case.name: {"name": case.name, "kind": case.kind, "family": case.family}
               for case in cases}
    tasks = [(case.name, str(work / "cases" / case.name), str(work / "packages" / case.name))
             for case in cases]
    exported = export_all(WorkerPool(jobs, EXPORT_TIMEOUT), tasks, log, every=100)
    for name, result in exported.items():
        records[name].update(result)
    timings["export"] = time.monotonic() - started - timings["collect"]
    log(f"export done in {timings['export']:.0f} s")

    build_and_run(records, work, jobs, optimization, timings, log)
    timings["total"] = time.monotonic() - started
    summary = {"cases": records, "timings": timings, "jobs": jobs, "subset": subset,
               "optimization": optimization, "environment": onnx_cases.environment()}
    (work / "results.json").write_text(json.dumps(summary, indent=1))
    return summary


def export_all(pool: WorkerPool, tasks: list, log, every: int) -> dict:
    """Every export task through `pool` (closed after), a progress line every `every` done."""
    done = Counter()

    def progress(key, result):
        done["n"] += 1
        if done["n"] % every == 0:
            log(f"  exported {done['n']}/{len(tasks)}")
    try:
        return pool.map(tasks, progress)
    finally:
        pool.close()


def build_and_run(records: dict, work: Path, jobs: int, optimization: str, timings: dict,
                  log=print) -> None:
    """Build every exported case (category still None) in one batched build, then run each
    built one in a process of its own against the outputs saved beside it; `records` and
    `timings` are updated in place. Shared with the PyTorch harness (pytorch_ops.py)."""
    from kokkos_support.provision import ensure_kokkos

    to_build = {key: work / "packages" / key for key, record in records.items()
                if record["category"] is None}
    mark = time.monotonic()
    built = batch_build.build(to_build, work / "build", ensure_kokkos(), jobs=jobs,
                              optimization=optimization) if to_build else {}
    timings["build"] = time.monotonic() - mark
    log(f"built {sum(b.library is not None for b in built.values())}/{len(to_build)} in "
        f"{timings['build']:.0f} s")
    runnable = []
    for key, outcome in built.items():
        if outcome.library is None:
            records[key].update(category="build", stage="build", reason=outcome.error)
        else:
            runnable.append(key)

    mark = time.monotonic()
    with ThreadPoolExecutor(jobs) as executor:
        outcomes = executor.map(lambda key: run_case(
            built[key].library, work / "packages" / key, work / "cases" / key), runnable)
        for key, outcome in zip(runnable, outcomes):
            records[key].update(stage="run", **outcome)
    timings["run"] = time.monotonic() - mark


def merge(summary: dict, partial: dict) -> dict:
    """`summary` with the cases of `partial` (a later --only run) in place of its own; the
    re-run cases are listed under "rerun". Timings stay those of `summary`'s run."""
    unknown = sorted(set(partial["cases"]) - set(summary["cases"]))
    if unknown:
        raise SystemExit(f"--merge: cases not in the earlier run: {', '.join(unknown[:5])}")
    return {**summary, "cases": {**summary["cases"], **partial["cases"]},
            "rerun": sorted(set(summary.get("rerun", [])) | set(partial["cases"]))}


# Why the lowered cases that do not pass fail, where the one-line reason does not say it (the
# rewrites of exporter/onnx_rewrites.py fix the others); shown only while a case still fails.
KNOWN_CAUSES = {
    **{name: "the expected values are draws of NumPy's random generator, which no other "
             "implementation reproduces; ours come from torch-mlir's"
       for name in ("test_bernoulli", "test_bernoulli_double", "test_bernoulli_expanded",
                    "test_bernoulli_double_expanded")},
}


def render_table(summary: dict, arguments=None) -> str:
    records = list(summary["cases"].values())
    counts = Counter(record["category"] for record in records)
    linalg = [record for record in records if record.get("linalg")]
    linalg_passed = sum(record["category"] == PASSED for record in linalg)
    timings = summary["timings"]
    lines = ["# ONNX backend test suite through lapis-export", "",
             f"{len(records)} cases ({summary['subset']}), onnx "
             f"{summary['environment']['onnx']}, {summary['jobs']} jobs, batch build "
             f"{summary['optimization']}. Wall time {timings['total'] / 60:.1f} min "
             f"(collect {timings['collect']:.0f} s, export {timings['export']:.0f} s, "
             f"build {timings['build']:.0f} s, run {timings['run']:.0f} s).", "",
             "Regenerate: `python benchmarks/conformance/onnx_run.py --subset full --jobs 2 "
             "--table benchmarks/conformance/onnx_results.md`; re-run some cases with "
             "`--only CASE... --work DIR` and merge them with `--from-results FULL/results.json "
             "--merge DIR/results.json --table ...`.", "",
             f"**Cases torch-mlir lowers to linalg-on-tensors: {len(linalg)}; of those, "
             f"passed: {linalg_passed}.**", ""]
    linalg_random = sum(record["category"] == "random" for record in linalg)
    if linalg_random:
        lines += [f"Of the {len(linalg) - linalg_passed} lowered cases that did not pass, "
                  f"{linalg_random} draw random numbers ({CATEGORIES['random']}): they count "
                  "as lowered, not as passed.", ""]
    rerun = summary.get("rerun", [])
    if rerun:
        were = "case was" if len(rerun) == 1 else "cases were"
        lines += [f"After that run, {len(rerun)} {were} re-run with `--only` and merged "
                  "into it with `--from-results ... --merge ...` (listed at the end); the "
                  "timings are the full run's.", ""]
    lines += ["| result | cases |", "|---|---|"]
    for key, label in CATEGORIES.items():
        lines.append(f"| {label} | {counts.get(key, 0)} |")
    lines += ["", "## By kind", "", "| kind | cases | passed | reached linalg |",
              "|---|---|---|---|"]
    by_kind = defaultdict(list)
    for record in records:
        by_kind[record["kind"]].append(record)
    for kind, members in sorted(by_kind.items()):
        lines.append(f"| {kind} | {len(members)} | "
                     f"{sum(r['category'] == PASSED for r in members)} | "
                     f"{sum(bool(r.get('linalg')) for r in members)} |")
    for key, label in CATEGORIES.items():
        if key == PASSED:
            continue
        members = [r for r in records if r["category"] == key]
        if not members:
            continue
        lines += ["", f"## {label[0].upper()}{label[1:]} ({len(members)})", "",
                  "| where | reason | cases |", "|---|---|---|"]
        groups = defaultdict(list)
        for record in members:
            groups[(record.get("stage", ""), _reason_key(record.get("reason", "")))].append(
                record["name"])
        for (stage, reason), names in sorted(groups.items(), key=lambda g: (-len(g[1]), g[0])):
            shown = ", ".join(sorted(names)[:8]) + (f" … (+{len(names) - 8})"
                                                    if len(names) > 8 else "")
            lines.append(f"| {stage} | {reason.replace('|', '/')} | {len(names)}: {shown} |")
    traced = [r for r in linalg if r["category"] != PASSED and r["name"] in KNOWN_CAUSES]
    if traced:
        lines += ["", "## Causes of the lowered cases that do not pass", "",
                  "| case | result | cause |", "|---|---|---|"]
        for record in sorted(traced, key=lambda r: r["name"]):
            lines.append(f"| {record['name']} | {CATEGORIES[record['category']]} | "
                         f"{KNOWN_CAUSES[record['name']]} |")
    if rerun:
        lines += ["", f"## Re-run after the full run ({len(rerun)})", "", ", ".join(rerun)]
    return "\n".join(lines) + "\n"


def _reason_key(reason: str) -> str:
    """Reasons grouped: numbers and SSA names dropped, so that the same cause groups once."""
    import re
    reason = re.sub(r" \((from|at) loc\(.*$", "", reason)
    reason = re.sub(r"%[\w#]+", "%v", reason)
    reason = re.sub(r"\b\d+(\.\d+)?(e-?\d+)?\b", "N", reason)
    return reason[:160]


if __name__ == "__main__":
    sys.exit(main())
