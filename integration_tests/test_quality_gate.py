"""The generated code's quality gate and its behaviour under repeated use by a host.

- Our code compiles with -Wall -Wextra -Werror (the package option NAME_WARNINGS_AS_ERRORS) under
  g++ and clang++, with Kokkos' headers as system headers.
- host_checks (integration_tests/host_checks) built with AddressSanitizer, LeakSanitizer and
  UndefinedBehaviorSanitizer: initialize/finalize cycled three times through the C++ and the C
  API, the C API's forward from several host threads at once, calls out of order and wrong extents,
  and the first forward compared with PyTorch (max |ours - torch| <= 1e-4 * max |torch|).
One sanitizer build per model (Serial), with g++; one clang++ library build per model.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess

import numpy as np
import pytest

from .compare import relative_error
from .conftest import REPO, run

TOLERANCE = 1e-4
# conv_zoo takes every path of the tuned convolution (strides, padding, groups, 1x1 and 3x3
# filters) in a fraction of ResNet18's build; LAPIS_GATE_RESNET18=1 adds ResNet18 itself.
MODELS = ["mlp", "small_cnn", "conv_zoo"] + (["resnet18"] if os.environ.get("LAPIS_GATE_RESNET18")
                                             else [])
# -O1: sanitizer reports stay readable and the build stays quick; -g1 gives line numbers.
SANITIZE_FLAGS = ("-O1 -g1 -fsanitize=address,undefined -fno-omit-frame-pointer "
                  "-fno-sanitize-recover=undefined")
SANITIZE_ENV = {"ASAN_OPTIONS": "detect_leaks=1:abort_on_error=0:halt_on_error=1",
                "UBSAN_OPTIONS": "print_stacktrace=1:halt_on_error=1",
                "OMP_PROC_BIND": "false", "OMP_NUM_THREADS": "2"}


def sanitized_host_checks(workspace, model: str):
    """host_checks for `model` (Serial), sanitized, warnings as errors, g++."""
    package = workspace.package(model, "serial", "export")
    build = package.with_name(package.name + "_host_checks")
    # An unknown build type: neither CMake's per-configuration flags nor the package's default
    # -O3 apply, so the flags below are the whole story.
    run(["nice", "cmake", "-S", REPO / "integration_tests" / "host_checks", "-B", build,
         "-DCMAKE_CXX_COMPILER=g++", "-DCMAKE_BUILD_TYPE=Sanitize",
         f"-DCMAKE_CXX_FLAGS={SANITIZE_FLAGS}", f"-DKokkos_ROOT={workspace.kokkos_root}",
         f"-DLAPIS_PACKAGE_DIR={package}", f"-DLAPIS_MODEL={model}",
         f"-D{model}_WARNINGS_AS_ERRORS=ON", "-DCMAKE_EXPORT_COMPILE_COMMANDS=ON"])
    run(["nice", "cmake", "--build", build, "-j", "2"])
    return build


def run_sanitized(command: list) -> str:
    env = {**os.environ, **SANITIZE_ENV}
    result = subprocess.run([str(c) for c in command], capture_output=True, text=True, env=env)
    assert result.returncode == 0, f"{command[1]} failed ({result.returncode}):\n" \
        f"{result.stdout[-3000:]}\n{result.stderr[-5000:]}"
    for marker in ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:"):
        assert marker not in result.stderr, result.stderr[-5000:]
    return result.stdout


@pytest.mark.parametrize("model", MODELS)
def test_repeated_use_is_sanitizer_clean(workspace, model):
    _, example, reference = workspace.model_file(model, "export")
    build = sanitized_host_checks(workspace, model)
    input_file = build / "input.bin"
    output_file = build / "output.bin"
    example.astype(np.float32).tofile(input_file)
    # ResNet18 under the sanitizers takes seconds per forward: fewer threads there.
    threads = 2 if model == "resnet18" else 4
    stdout = run_sanitized([build / "host_checks", "cycles", "--input", input_file,
                            "--output", output_file, "--threads", threads])
    assert "FAILED" not in stdout, stdout
    ours = np.fromfile(output_file, dtype=np.float32).reshape(reference.shape)
    assert relative_error(ours, reference) <= TOLERANCE
    stdout = run_sanitized([build / "host_checks", "restart"])
    assert "FAILED" not in stdout, stdout

    # -Werror reached our sources, and Kokkos' headers came in as system headers.
    commands = json.loads((build / "compile_commands.json").read_text())
    command = next(c["command"] for c in commands if c["file"].endswith(f"src/{model}.cpp"))
    assert "-Werror" in command and "-Wextra" in command
    assert f"-isystem {workspace.kokkos_root}/include" in command


@pytest.mark.skipif(shutil.which("clang++") is None, reason="clang++ is not installed")
@pytest.mark.parametrize("model", MODELS)
def test_clang_compiles_without_warnings(workspace, model):
    package = workspace.package(model, "serial", "export")
    build = package.with_name(package.name + "_clang")
    # Debug: Clang's warnings come from its front end, so optimising would only cost time.
    run(["nice", "cmake", "-S", package, "-B", build, "-DCMAKE_CXX_COMPILER=clang++",
         "-DCMAKE_BUILD_TYPE=Debug", f"-DKokkos_ROOT={workspace.kokkos_root}",
         f"-D{model}_WARNINGS_AS_ERRORS=ON"])
    result = run(["nice", "cmake", "--build", build, "-j", "2", "--target", model, "--verbose"])
    assert "-Werror" in result.stdout
