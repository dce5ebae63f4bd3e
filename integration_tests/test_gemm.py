"""Dense matrix products end to end (lapis::matmul, kokkos_support/lapis/gemm.hpp): the
exported `A @ B` of examples/science_kernels.py, built and run through its C API, against NumPy
in float64: max |ours - numpy| <= 1e-5 * max |numpy| in float32, 1e-12 in float64. Odd sizes
exercise every edge of the register tiles; K > 256 the blocking over K; 3-d operands the batched
product (linalg.batch_matmul). One package per dtype, with dynamic extents, serves every size
(the batched one has static extents); the host tiles (AVX2 or baseline, as the machine has)
and the portable Kokkos version (LAPIS_GEMM_PORTABLE) run the same cases."""
from __future__ import annotations

import sys

import numpy as np
import pytest

from .conftest import REPO, run
from .functions import build, export, relative_error, run_cases

# (batch, M, K, N); batch None: a plain 2-d product (linalg.matmul), else linalg.batch_matmul.
SIZES = {"float32": [(None, 1, 1, 1), (None, 7, 13, 5), (None, 65, 129, 33),
                     (None, 512, 512, 512)],
         "float64": [(None, 7, 13, 5), (None, 65, 129, 33), (None, 300, 270, 257)],
         "batched": [(3, 65, 300, 33)]}   # static extents: dynamic ones need a dynamic reshape
TOLERANCE = {"float32": 1e-5, "float64": 1e-12}


def cases(kind: str) -> dict[str, list[np.ndarray]]:
    rng = np.random.default_rng(0)
    dtype = "float32" if kind == "batched" else kind
    found = {}
    for batch, m, k, n in SIZES[kind]:
        lead = () if batch is None else (batch,)
        found["x".join(map(str, (*lead, m, k, n)))] = [
            rng.standard_normal((*lead, m, k)).astype(dtype),
            rng.standard_normal((*lead, k, n)).astype(dtype)]
    return found


@pytest.fixture(scope="module", params=["float32", "float64", "batched"])
def package(request, tmp_path_factory):
    kind = request.param
    dtype = "float32" if kind == "batched" else kind
    root = tmp_path_factory.mktemp(f"gemm_{kind}")
    shapes = ("3x65x300", "3x300x33") if kind == "batched" else ("MxK", "KxN")
    package, _ = export(root, "gemm", *(f"{shape}:{dtype}" for shape in shapes))
    return root, package, kind


def check(results: dict, inputs: dict, dtype: str) -> None:
    for case, (a, b) in inputs.items():
        (result,) = results[case]
        reference = a.astype(np.float64) @ b.astype(np.float64)
        assert result.shape == reference.shape and result.dtype == np.dtype(dtype), case
        error = relative_error(result, reference)
        assert error <= TOLERANCE[dtype], f"gemm {dtype} {case}: relative error {error:.3g}"


@pytest.mark.parametrize("version", ["host", "portable"])
def test_gemm_matches_numpy(package, version):
    root, package, kind = package
    library = build(root, package, "-DLAPIS_GEMM_PORTABLE" if version == "portable" else "")
    inputs = cases(kind)
    check(run_cases(root, package, library, inputs), inputs,
          "float32" if kind == "batched" else kind)


def test_static_extents_and_verify(tmp_path):
    # Static extents (the Views' extents known at compile time) and --verify's own comparison.
    package, stdout = export(tmp_path, "gemm", "65x129", "129x33", options=("--verify",))
    assert "PASS" in stdout, stdout
    inputs = {"65x129x33": cases("float32")["65x129x33"]}   # the same as the dynamic one's
    check(run_cases(tmp_path, package, build(tmp_path, package), inputs), inputs, "float32")


SLICED = '''
def sliced(A, B):
    return A[1:, 2:] @ B[:, 3:]
'''


def test_strided_operands_and_verify(tmp_path):
    # Slices are Views with row strides of their own: the host tiles read them in place.
    source = tmp_path / "sliced.py"
    source.write_text(SLICED)
    package = tmp_path / "sliced"
    result = run([sys.executable, "-m", "cli", f"{source}:sliced", "--input-shape", "40x70",
                  "--input-shape", "68x41", "--out", package, "--verify"], cwd=REPO)
    assert "PASS" in result.stdout, result.stdout
    assert "lapis::matmul<execution_space>(" in (package / "src" / "sliced.cpp").read_text()
