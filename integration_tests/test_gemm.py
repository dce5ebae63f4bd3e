"""Dense matrix products end to end (lapis::matmul, kokkos_support/lapis/gemm.hpp): the
exported `A @ B` of examples/science_kernels.py, built and run through its C API, against NumPy
in float64: max |ours - numpy| <= 1e-5 * max |numpy| in float32, 1e-12 in float64. Odd sizes
exercise every edge of the register tiles; K > 256 the blocking over K. One package per dtype,
with dynamic extents, serves every size; the host tiles (AVX2 or baseline, as the machine has)
and the portable Kokkos version (LAPIS_GEMM_PORTABLE) run the same cases."""
from __future__ import annotations

import numpy as np
import pytest

from .functions import build, export, relative_error, run_cases

SIZES = {"float32": [(1, 1, 1), (7, 13, 5), (65, 129, 33), (512, 512, 512)],
         "float64": [(7, 13, 5), (65, 129, 33), (300, 270, 257)]}
TOLERANCE = {"float32": 1e-5, "float64": 1e-12}


def cases(dtype: str) -> dict[str, list[np.ndarray]]:
    rng = np.random.default_rng(0)
    return {f"{m}x{k}x{n}": [rng.standard_normal((m, k)).astype(dtype),
                             rng.standard_normal((k, n)).astype(dtype)]
            for m, k, n in SIZES[dtype]}


@pytest.fixture(scope="module", params=["float32", "float64"])
def package(request, tmp_path_factory):
    dtype = request.param
    root = tmp_path_factory.mktemp(f"gemm_{dtype}")
    package, _ = export(root, "gemm", f"MxK:{dtype}", f"KxN:{dtype}")
    return root, package, dtype


def check(results: dict, inputs: dict, dtype: str) -> None:
    for case, (a, b) in inputs.items():
        (result,) = results[case]
        reference = a.astype(np.float64) @ b.astype(np.float64)
        assert result.shape == reference.shape and result.dtype == np.dtype(dtype), case
        error = relative_error(result, reference)
        assert error <= TOLERANCE[dtype], f"gemm {dtype} {case}: relative error {error:.3g}"


@pytest.mark.parametrize("version", ["host", "portable"])
def test_gemm_matches_numpy(package, version):
    root, package, dtype = package
    library = build(root, package, "-DLAPIS_GEMM_PORTABLE" if version == "portable" else "")
    inputs = cases(dtype)
    check(run_cases(root, package, library, inputs), inputs, dtype)


def test_static_extents_and_verify(tmp_path):
    # Static extents (the Views' extents known at compile time) and --verify's own comparison.
    package, stdout = export(tmp_path, "gemm", "65x129", "129x33", options=("--verify",))
    assert "PASS" in stdout, stdout
    inputs = {"65x129x33": cases("float32")["65x129x33"]}
    check(run_cases(tmp_path, package, build(tmp_path, package), inputs), inputs, "float32")
