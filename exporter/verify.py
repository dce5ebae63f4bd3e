"""Verify stage: build a package as a shared library, call it through ctypes and compare with
the reference framework's output on a seeded random input."""
from __future__ import annotations

import ctypes
import json
import os
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import ExportError
from .handoff import LoadedModel

_CTYPES = {"float32": ctypes.c_float, "float64": ctypes.c_double, "int64": ctypes.c_int64,
           "int32": ctypes.c_int32, "bool": ctypes.c_uint8}
_NUMPY = {"float32": np.float32, "float64": np.float64, "int64": np.int64, "int32": np.int32,
          "bool": np.uint8}


@dataclass
class VerifyResult:
    max_abs_error: float
    max_abs_reference: float
    relative_error: float
    passed: bool
    build_seconds: float


def build(package_dir: Path, build_dir: Path, shared: bool = True) -> Path:
    """Configure and build the package with CMake against the project's Kokkos; returns the
    library's path."""
    from kokkos_support.provision import ensure_kokkos

    manifest = json.loads((Path(package_dir) / "lapis_manifest.json").read_text())
    name = manifest["name"]
    steps = [["cmake", "-S", str(package_dir), "-B", str(build_dir), "-DCMAKE_BUILD_TYPE=Release",
              f"-DKokkos_ROOT={ensure_kokkos()}", f"-DBUILD_SHARED_LIBS={'ON' if shared else 'OFF'}"],
             ["cmake", "--build", str(build_dir), "-j", str(os.cpu_count() or 2)]]
    for command in steps:
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode != 0:
            tail = "\n".join((result.stdout + result.stderr).strip().splitlines()[-15:])
            raise ExportError(f"building {package_dir} failed ({' '.join(command[:2])}):\n{tail}")
    suffix = ".so" if shared else ".a"
    library = Path(build_dir) / f"lib{name}{suffix}"
    if not library.exists():
        raise ExportError(f"building {package_dir} produced no {library.name}")
    return library


class PackageModule:
    """A built package called through its C API: `forward(*arrays) -> list of arrays`."""

    def __init__(self, library: Path, manifest: dict):
        self.manifest = manifest
        self.name = manifest["name"]
        self._lib = ctypes.CDLL(str(library))
        self._call("initialize")

    def _function(self, suffix: str):
        return getattr(self._lib, f"{self.name}_{suffix}")

    def _call(self, suffix: str, *arguments) -> None:
        if self._function(suffix)(*arguments) != 0:
            message = ctypes.c_char_p(self._function("last_error")()).value or b""
            raise RuntimeError(f"{self.name}_{suffix}: {message.decode()}")

    def forward(self, *inputs: np.ndarray) -> list[np.ndarray]:
        specs_in, specs_out = self.manifest["inputs"], self.manifest["outputs"]
        if len(inputs) != len(specs_in):
            raise ValueError(f"{self.name} takes {len(specs_in)} inputs, got {len(inputs)}")
        arguments, outputs = [], []
        for array, spec in zip(inputs, specs_in):
            array = np.ascontiguousarray(array, dtype=_NUMPY[spec["dtype"]])
            if list(array.shape) != spec["shape"]:
                raise ValueError(f"input {spec['cname']}: shape {list(array.shape)}, "
                                 f"expected {spec['shape']}")
            arguments.append(array)
        for spec in specs_out:
            outputs.append(np.zeros(spec["shape"], dtype=_NUMPY[spec["dtype"]]))
        pointers = [a.ctypes.data_as(ctypes.POINTER(_CTYPES[s["dtype"]]))
                    for a, s in zip([*arguments, *outputs], [*specs_in, *specs_out])]
        self._call("forward_host", *pointers)
        return outputs

    def close(self) -> None:
        self._call("finalize")


def load_module(package_dir: Path, library: Path) -> PackageModule:
    manifest = json.loads((Path(package_dir) / "lapis_manifest.json").read_text())
    return PackageModule(library, manifest)


def run(package_dir: Path, model: LoadedModel, tolerance: float = 1e-4,
        seed: int = 0) -> VerifyResult:
    """Build `package_dir`, run it on a seeded random input and compare with `model`."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    inputs = [_random_input(spec.dtype, spec.shape, generator) for spec in model.inputs]
    with torch.no_grad():
        reference = model.program.module()(*inputs)
    references = [reference] if isinstance(reference, torch.Tensor) else list(reference)
    with tempfile.TemporaryDirectory(prefix="lapis-verify-") as build_dir:
        start = time.perf_counter()
        library = build(package_dir, Path(build_dir))
        build_seconds = time.perf_counter() - start
        os.environ.setdefault("OMP_PROC_BIND", "false")   # quiets Kokkos' OpenMP advice
        module = load_module(package_dir, library)
        try:
            ours = module.forward(*[t.numpy() for t in inputs])
        finally:
            module.close()
    max_error = max(float(np.abs(o.astype(np.float64) - r.numpy()).max()) if o.size else 0.0
                    for o, r in zip(ours, references))
    max_reference = max(float(np.abs(r.numpy()).max()) if r.numel() else 0.0
                        for r in references)
    relative = max_error / (max_reference or 1.0)
    return VerifyResult(max_error, max_reference, relative, relative <= tolerance, build_seconds)


def _random_input(dtype: str, shape, generator):
    import torch

    if dtype in ("float32", "float64"):
        return torch.randn(*shape, generator=generator,
                           dtype=torch.float32 if dtype == "float32" else torch.float64)
    if dtype == "bool":
        return torch.randint(0, 2, shape, generator=generator).bool()
    return torch.randint(0, 10, shape, generator=generator,
                         dtype=torch.int64 if dtype == "int64" else torch.int32)
