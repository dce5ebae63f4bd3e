"""Export, build and run Python functions of examples/science_kernels.py for the end-to-end
tests: each package built once as a shared library, run through its C API in a fresh process
(Kokkos initializes once per process)."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from exporter import verify

from .conftest import REPO, run

KERNELS = REPO / "examples" / "science_kernels.py"

RUNNER = """
import sys
import numpy as np
from exporter import verify
package, library, inputs, outputs = sys.argv[1:]
arrays = np.load(inputs)
cases = sorted({key.rpartition("__")[0] for key in arrays.files})
results = {}
with verify.load_module(package, library) as module:
    for case in cases:
        count = sum(1 for key in arrays.files if key.rpartition("__")[0] == case)
        for index, value in enumerate(module.forward(*[arrays[f"{case}__{i}"]
                                                       for i in range(count)])):
            results[f"{case}__{index}"] = value
np.savez(outputs, **results)
"""


def shape_options(*shapes: str) -> list[str]:
    return [item for shape in shapes for item in ("--input-shape", shape)]


def export(root: Path, function: str, *shapes: str, options: tuple[str, ...] = ()) -> tuple:
    """Export KERNELS:function with the given --input-shape texts; (package, stdout)."""
    package = root / f"fn_{function}"
    result = run([sys.executable, "-m", "cli", f"{KERNELS}:{function}", *shape_options(*shapes),
                  "--out", package, "--force", "-q", *options], cwd=REPO)
    return package, result.stdout


def build(root: Path, package: Path, cmake_flags: str = "") -> Path:
    """The package as a shared library; `cmake_flags` as CMAKE_CXX_FLAGS (a separate build)."""
    if not cmake_flags:
        return verify.build(package, root / f"{package.name}_shared")
    from kokkos_support.provision import ensure_kokkos
    build_dir = root / f"{package.name}_shared_flags"
    run(["cmake", "-S", package, "-B", build_dir, "-DCMAKE_BUILD_TYPE=Release",
         f"-DKokkos_ROOT={ensure_kokkos()}", "-DBUILD_SHARED_LIBS=ON",
         f"-DCMAKE_CXX_FLAGS={cmake_flags}"])
    run(["cmake", "--build", build_dir, "--parallel", "2"])
    return build_dir / f"lib{verify.read_manifest(package)['name']}.so"


def run_cases(root: Path, package: Path, library: Path,
              cases: dict[str, list[np.ndarray]],
              env: dict[str, str] | None = None) -> dict[str, list[np.ndarray]]:
    """forward() of the built package on each case's inputs, in one fresh process (with `env`
    added to its environment)."""
    tag = library.parent.name
    inputs, outputs = root / f"{tag}_in.npz", root / f"{tag}_out.npz"
    np.savez(inputs, **{f"{case}__{i}": np.array(array, order="C")
                        for case, arrays in cases.items() for i, array in enumerate(arrays)})
    run([sys.executable, "-c", RUNNER, package, library, inputs, outputs], cwd=REPO, env=env)
    results = np.load(outputs)
    return {case: [results[key] for key in sorted(
        (k for k in results.files if k.rpartition("__")[0] == case),
        key=lambda k: int(k.rpartition("__")[2]))] for case in cases}


def relative_error(ours: np.ndarray, reference: np.ndarray) -> float:
    """max |ours - reference| / max |reference|, in float64."""
    reference = np.asarray(reference, dtype=np.float64)
    scale = float(np.abs(reference).max()) or 1.0
    return float(np.abs(ours.astype(np.float64) - reference).max()) / scale
