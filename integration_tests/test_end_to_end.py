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
    ("resnet18", "serial", "export"),
    ("resnet18", "openmp", "torchscript"),
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


def test_install_and_find_package(workspace, tmp_path):
    """cmake --install the package, then a separate project uses find_package(mlp)."""
    package = workspace.package("mlp", "serial", "export")
    prefix, build_dir = tmp_path / "prefix", tmp_path / "build"
    run(["cmake", "-S", package, "-B", build_dir, "-DCMAKE_BUILD_TYPE=Release",
         f"-DKokkos_ROOT={workspace.kokkos_root}", f"-DCMAKE_INSTALL_PREFIX={prefix}"])
    run(["cmake", "--build", build_dir, "-j", "2"])
    run(["cmake", "--install", build_dir])
    consumer = tmp_path / "consumer"
    consumer.mkdir()
    (consumer / "CMakeLists.txt").write_text(
        "cmake_minimum_required(VERSION 3.16)\nproject(consumer C CXX)\n"
        "find_package(mlp REQUIRED)\nadd_executable(consumer main.c)\n"
        "set_target_properties(consumer PROPERTIES LINKER_LANGUAGE CXX)\n"
        "target_link_libraries(consumer PRIVATE mlp::mlp)\n")
    # A C caller: the C API needs nothing but the header's extern "C" part.
    (consumer / "main.c").write_text(r'''
#include <stdio.h>
int mlp_initialize(void); int mlp_finalize(void); const char* mlp_last_error(void);
int mlp_forward_host(const float* input0, float* output0);
int main(void) {
  float x[4 * 32], y[4 * 10];
  for (int i = 0; i < 4 * 32; ++i) x[i] = (float)(i % 7) * 0.1f;
  if (mlp_initialize() || mlp_forward_host(x, y) || mlp_finalize()) {
    printf("error: %s\n", mlp_last_error());
    return 1;
  }
  for (int i = 0; i < 4 * 10; ++i) printf("%.8e\n", y[i]);
  return 0;
}
''')
    run(["cmake", "-S", consumer, "-B", consumer / "build", f"-DCMAKE_PREFIX_PATH={prefix}",
         f"-DKokkos_ROOT={workspace.kokkos_root}"])
    run(["cmake", "--build", consumer / "build"])
    result = run([consumer / "build" / "consumer"])
    ours = np.array([float(v) for v in result.stdout.split()], dtype=np.float32).reshape(4, 10)
    import torch

    from .models import build
    model, _ = build("mlp")
    x = (np.arange(4 * 32) % 7).astype(np.float32).reshape(4, 32) * np.float32(0.1)
    with torch.no_grad():
        reference = model(torch.from_numpy(x)).numpy()
    assert relative_error(ours, reference) <= TOLERANCE
