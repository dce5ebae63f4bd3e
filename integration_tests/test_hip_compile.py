"""The HIP backend compiles: the exported HIP packages of the MLP and the small CNN, and the
two_models sample host linking both, built with Debian's hipcc (ROCm 5.2) against Kokkos
3.4.01 with its HIP backend (gfx906), built once into the cache by
`python -m kokkos_support.provision --hip`. Nothing runs: there is no AMD GPU here.
ResNet18's HIP package takes longer to compile: LAPIS_HIP_RESNET18=1 adds it.

hipcc and libamdhip64-dev come from Debian (scripts/test.sh installs them); without hipcc
these tests fail with a message saying so."""
from __future__ import annotations

import os

import pytest

from kokkos_support import provision

from .conftest import REPO, run
from .test_hosts import require


@pytest.fixture(scope="module")
def hip_kokkos():
    require("hipcc", "hipcc (and libamdhip64-dev)")
    return provision.build_cached(hip=True)


def hip_build(source, build_dir, kokkos, *definitions):
    run(["cmake", "-S", source, "-B", build_dir, "-DCMAKE_BUILD_TYPE=Release",
         f"-DKokkos_ROOT={kokkos}", f"-DCMAKE_CXX_COMPILER={provision.hip_compiler()}",
         *definitions])
    run(["nice", "cmake", "--build", build_dir, "-j", "2"], timeout=1800)


def test_hip_packages_and_a_host_compile(workspace, hip_kokkos):
    packages = {"A": ("mlp", workspace.package("mlp", "hip")),
                "B": ("small_cnn", workspace.package("small_cnn", "hip"))}
    for model, package in packages.values():   # Kokkos 3 spells the backend Experimental::HIP
        assert "Kokkos::Experimental::HIP" in (package / "include" / f"{model}.hpp").read_text()
    definitions = []
    for which, (model, package) in packages.items():
        definitions += [f"-DLAPIS_MODEL_{which}={model}", f"-DLAPIS_PACKAGE_DIR_{which}={package}"]
    build_dir = workspace.root / "hip_two_models"
    hip_build(REPO / "sample_app" / "two_models", build_dir, hip_kokkos, *definitions)
    host = build_dir / "two_models"
    assert host.is_file() and os.access(host, os.X_OK)
    # The device code is there: an offload bundle for gfx906 in each package's library.
    for model, _ in packages.values():
        library = next(build_dir.glob(f"{model}/lib{model}.*"))
        assert b"gfx906" in library.read_bytes(), library


@pytest.mark.skipif(not os.environ.get("LAPIS_HIP_RESNET18"),
                    reason="ResNet18's HIP compile is opt-in: LAPIS_HIP_RESNET18=1")
def test_hip_resnet18_compiles(workspace, hip_kokkos):
    package = workspace.package("resnet18", "hip")
    build_dir = workspace.root / "hip_resnet18"
    hip_build(REPO / "sample_app", build_dir, hip_kokkos, f"-DLAPIS_PACKAGE_DIR={package}",
              "-DLAPIS_MODEL=resnet18")
    assert (build_dir / "sample_app").is_file()


def test_hip_evaluator_in_a_host_kernel_compiles(tmp_path, hip_kokkos):
    """NAME::Evaluator is device code: sample_app/inline_eval, whose stencil kernels call it
    per thread and per team (weights in scratch), compiles for the GPU with hipcc. The float32
    model alone: the float64 one is the same templates (its host build runs in
    test_inline_eval.py), and hipcc takes minutes a package."""
    from . import inline_eval

    name, path = next((n, p) for n, p in inline_eval.save_models(tmp_path).items()
                      if n == "inline_mlp")
    package = inline_eval.export(path, tmp_path / name, name, "hip")
    build_dir = tmp_path / "build"
    hip_build(REPO / "sample_app" / "inline_eval", build_dir, hip_kokkos,
              f"-DLAPIS_MLP_DIR={package}")
    host = build_dir / "inline_eval"
    assert host.is_file() and b"gfx906" in host.read_bytes()
