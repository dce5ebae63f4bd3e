"""Shared, expensive artefacts for the end-to-end tests: the Kokkos install, model files,
exported packages and sample_app builds are made once per run and reused."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from .make_model import save_model
from .models import build

REPO = Path(__file__).resolve().parents[1]
RUN_ENV = {**os.environ, "OMP_NUM_THREADS": "2", "OMP_PROC_BIND": "false"}


def run(command: list[str], env: dict[str, str] | None = None,
        **kwargs) -> subprocess.CompletedProcess:
    """Run `command` with RUN_ENV (plus `env`); fail with its output if it fails."""
    result = subprocess.run([str(c) for c in command], capture_output=True, text=True,
                            env={**RUN_ENV, **(env or {})}, **kwargs)
    if result.returncode != 0:
        raise AssertionError(f"{' '.join(map(str, command))} failed ({result.returncode}):\n"
                             f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result


class Workspace:
    """Model files, packages and sample_app builds under one temporary directory, cached."""

    def __init__(self, root: Path, kokkos_root: Path):
        self.root = root
        self.kokkos_root = kokkos_root
        self._cache: dict = {}

    def model_file(self, model: str, fmt: str) -> tuple[Path, np.ndarray, np.ndarray]:
        """The saved model, a seeded input and PyTorch's output for it."""
        key = ("model", model, fmt)
        if key not in self._cache:
            net, shape = build(model)
            example = torch.randn(*shape, generator=torch.Generator().manual_seed(1))
            suffix = "pt" if fmt == "torchscript" else "dynamic.pt2" if fmt == "dynamic" else "pt2"
            path = self.root / f"{model}.{suffix}"
            save_model(net, example, path, fmt)
            with torch.no_grad():
                reference = net(example).numpy()
            self._cache[key] = (path, example.numpy(), reference)
        return self._cache[key]

    def package(self, model: str, backend: str, fmt: str = "export",
                weights: str = "embed", options: tuple[str, ...] = ()) -> Path:
        """The exported package; `options` are more lapis-export arguments."""
        key = ("package", model, backend, fmt, weights, options)
        if key not in self._cache:
            path, example, _ = self.model_file(model, fmt)
            tag = "".join(f"_{o.lstrip('-')}" for o in options)
            out = self.root / f"pkg_{model}_{backend}_{fmt}_{weights}{tag}"
            command = [sys.executable, "-m", "cli", path, "--backend", backend, "--out", out,
                       "--name", model, "--weights", weights, *options]
            if fmt == "torchscript" and "--input-shape" not in options:
                command += ["--input-shape", "x".join(map(str, example.shape))]
            run(command, cwd=REPO)
            self._cache[key] = out
        return self._cache[key]

    def sample_app(self, package: Path, model: str) -> Path:
        key = ("app", package)
        if key not in self._cache:
            build_dir = package.with_name(package.name + "_app")
            run(["cmake", "-S", REPO / "sample_app", "-B", build_dir,
                 "-DCMAKE_BUILD_TYPE=Release", f"-DKokkos_ROOT={self.kokkos_root}",
                 f"-DLAPIS_PACKAGE_DIR={package}", f"-DLAPIS_MODEL={model}"])
            run(["cmake", "--build", build_dir, "-j", "2"])
            self._cache[key] = build_dir / "sample_app"
        return self._cache[key]

    def installed_package(self, model: str, backend: str) -> Path:
        """The package built on its own and `cmake --install`ed; returns the prefix."""
        key = ("installed", model, backend)
        if key not in self._cache:
            package = self.package(model, backend)
            prefix = package.with_name(package.name + "_prefix")
            build_dir = package.with_name(package.name + "_build")
            run(["cmake", "-S", package, "-B", build_dir, "-DCMAKE_BUILD_TYPE=Release",
                 f"-DKokkos_ROOT={self.kokkos_root}", f"-DCMAKE_INSTALL_PREFIX={prefix}"])
            run(["nice", "cmake", "--build", build_dir, "-j", "2"])
            run(["cmake", "--install", build_dir])
            self._cache[key] = prefix
        return self._cache[key]

    def host(self, name: str, *definitions: str) -> Path:
        """Configure and build the sample host sample_app/NAME (c, fortran, mpi, two_models)
        with the given -D definitions; returns its build directory."""
        build_dir = self.root / f"host_{name}"
        run(["cmake", "-S", REPO / "sample_app" / name, "-B", build_dir,
             "-DCMAKE_BUILD_TYPE=Release", f"-DKokkos_ROOT={self.kokkos_root}", *definitions])
        run(["nice", "cmake", "--build", build_dir, "-j", "2"])
        return build_dir


@pytest.fixture(scope="session")
def workspace(tmp_path_factory, kokkos_root) -> Workspace:
    return Workspace(tmp_path_factory.mktemp("e2e"), kokkos_root)
