"""Run one built conformance case and compare with the suite's expected outputs.

    python onnx_exec.py LIBRARY PACKAGE_DIR CASE_DIR

Prints one JSON line: {"status": "passed" | "wrong" | "random" | "error", "detail": ...};
"random" for a model of random draws (case.json's random_ops) whose outputs have the expected
shapes and dtypes (and, for Bernoulli, only the values 0 and 1): their values are not
comparable. Run in its own process by onnx_run.py, so that a crash or a hang in generated code
fails only its case.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from exporter.verify import PackageModule, read_manifest  # noqa: E402


def compare(ours: np.ndarray, expected: np.ndarray, rtol: float, atol: float) -> str:
    """'' when `ours` matches `expected` as ONNX's backend runner checks it, else why not."""
    if ours.shape != expected.shape:
        return f"shape {list(ours.shape)}, expected {list(expected.shape)}"
    if ours.dtype != expected.dtype:
        return f"dtype {ours.dtype}, expected {expected.dtype}"
    if expected.dtype.kind in "fc":
        difference = np.abs(ours.astype(np.float64) - expected.astype(np.float64))
        allowed = atol + rtol * np.abs(expected.astype(np.float64))
        both_nan = np.isnan(ours) & np.isnan(expected)
        bad = ~((difference <= allowed) | both_nan | (ours == expected))
        if bad.any():
            return (f"{int(bad.sum())} of {bad.size} elements off, max abs error "
                    f"{float(np.nanmax(np.where(bad, difference, 0))):.3g}")
        return ""
    if not np.array_equal(ours, expected):
        return f"{int((ours != expected).sum())} of {ours.size} elements differ"
    return ""


def check_random(ours: np.ndarray, expected: np.ndarray, random_ops: list[str]) -> str:
    """'' when a random output is what the op can give: the expected shape and dtype, and for
    Bernoulli only zeros and ones; else why not."""
    if ours.shape != expected.shape:
        return f"shape {list(ours.shape)}, expected {list(expected.shape)}"
    if ours.dtype != expected.dtype:
        return f"dtype {ours.dtype}, expected {expected.dtype}"
    if "Bernoulli" in random_ops and not np.isin(ours, (0, 1)).all():
        return f"{int((~np.isin(ours, (0, 1))).sum())} of {ours.size} draws neither 0 nor 1"
    return ""


def main(library: str, package_dir: str, case_dir: str) -> dict:
    case = json.loads((Path(case_dir) / "case.json").read_text())
    data = np.load(Path(case_dir) / "data.npz")
    inputs = [data[f"in_{i}"] for i in range(case["inputs"])]
    expected = [data[f"out_{i}"] for i in range(case["outputs"])]
    manifest = read_manifest(Path(package_dir))
    with PackageModule(Path(library), manifest) as module:
        ours = module.forward(*inputs)
    if len(ours) != len(expected):
        return {"status": "wrong", "detail": f"{len(ours)} outputs, expected {len(expected)}"}
    random_ops = case.get("random_ops") or []
    for index, (mine, theirs) in enumerate(zip(ours, expected)):
        problem = check_random(mine, theirs, random_ops) if random_ops else \
            compare(mine, theirs, case["rtol"], case["atol"])
        if problem:
            return {"status": "wrong", "detail": f"output {index}: {problem}"}
    if random_ops:
        checked = "shape, dtype and draws (each a zero or a one)" if "Bernoulli" in \
            random_ops else "shape and dtype"
        return {"status": "random", "detail": f"random output ({', '.join(random_ops)}): "
                                              f"{checked} checked, values not comparable"}
    return {"status": "passed", "detail": ""}


if __name__ == "__main__":
    try:
        result = main(*sys.argv[1:4])
    except Exception as exc:  # reported as the case's one-line reason
        text = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        result = {"status": "error", "detail": f"{type(exc).__name__}: {text}"[:300]}
    print(json.dumps(result), flush=True)
