"""Export -> build sample_app through add_subdirectory -> run -> compare with PyTorch.

Tolerance: max |ours - torch| <= 1e-4 * max |torch| in float32.
"""
from __future__ import annotations

import sys

import numpy as np
import pytest

from .compare import relative_error
from .conftest import REPO, run

TOLERANCE = 1e-4

CASES = [
    # (model, backend, file format)
    ("mlp", "serial", "export"),
    ("mlp", "openmp", "torchscript"),
    ("small_cnn", "serial", "torchscript"),
    ("small_cnn", "openmp", "export"),
    ("conv_zoo", "openmp", "export"),
    ("residual_net", "serial", "export"),
    ("resnet18", "serial", "export"),     # (TorchScript: the mlp's and small_cnn's cases)
]


def run_sample_app(workspace, model, backend, fmt, weights="embed", api="cpp", steps=1):
    _, example, reference = workspace.model_file(model, fmt)
    package = workspace.package(model, backend, fmt, weights)
    app = workspace.sample_app(package, model)
    tag = f"{model}_{backend}_{fmt}_{weights}_{api}"
    input_file = workspace.root / f"{tag}_in.bin"
    output_file = workspace.root / f"{tag}_out.bin"
    example.astype(np.float32).tofile(input_file)
    result = run([app, "--input", input_file, "--output", output_file, "--api", api,
                  "--steps", steps])
    ours = np.fromfile(output_file, dtype=np.float32).reshape(reference.shape)
    return ours, reference, result.stdout


@pytest.mark.parametrize("model,backend,fmt", CASES)
def test_sample_app_matches_pytorch(workspace, model, backend, fmt):
    ours, reference, _ = run_sample_app(workspace, model, backend, fmt)
    assert relative_error(ours, reference) <= TOLERANCE


def test_c_api_matches_pytorch(workspace):
    ours, reference, _ = run_sample_app(workspace, "small_cnn", "openmp", "export", api="c")
    assert relative_error(ours, reference) <= TOLERANCE


def test_weights_beside_the_library(workspace):
    ours, reference, _ = run_sample_app(workspace, "mlp", "openmp", "export", weights="file")
    assert relative_error(ours, reference) <= TOLERANCE


def test_simulation_loop_repeats_forward(workspace):
    ours, reference, stdout = run_sample_app(workspace, "mlp", "serial", "export", steps=5)
    assert relative_error(ours, reference) <= TOLERANCE
    assert "runs=5" in stdout


def test_verify_flag_builds_and_compares(workspace, tmp_path):
    path, _, _ = workspace.model_file("small_cnn", "export")
    result = run([sys.executable, "-m", "cli", path, "--out", tmp_path / "pkg", "--verify",
                  "--backend", "serial"], cwd=REPO)
    assert "PASS" in result.stdout


@pytest.mark.parametrize("fmt", ["export", "torchscript"])
def test_export_is_deterministic(workspace, tmp_path, fmt):
    """Two exports in separate processes give byte-identical packages (TorchScript goes through
    a conversion with its own tracing on the way)."""
    path, example, _ = workspace.model_file("small_cnn", fmt)
    shape = ["--input-shape", "x".join(map(str, example.shape))] if fmt == "torchscript" else []
    outputs = []
    for attempt in range(2):
        out = tmp_path / f"pkg{attempt}"
        run([sys.executable, "-m", "cli", path, "--out", out, "--name", "small_cnn", *shape],
            cwd=REPO)
        outputs.append({p.relative_to(out): p.read_bytes() for p in sorted(out.rglob("*"))
                        if p.is_file()})
    assert outputs[0] == outputs[1]

