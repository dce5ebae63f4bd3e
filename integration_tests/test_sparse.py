"""CSR products end to end (exporter/sparse.py -> lapis/sparse.hpp): SpMV in float64 and SpMM
in float32 on a random 10,000 x 10,000 matrix (fixed seed, density 1e-3, about 100,000
nonzeros) and on the same matrix with its first, middle and last rows (and every 97th) empty,
against scipy.sparse: max |ours - scipy| <= 1e-12 * max |scipy| (float64), 1e-5 (float32);
empty rows exactly 0. nnz is a dynamic dimension, so one package runs every matrix; the team
(device) version of the kernels is run on the host too, built with LAPIS_SPARSE_TEAMS."""
from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse

from .functions import build, export, relative_error, run_cases

N = 10_000
DENSITY = 1e-3
COLUMNS = 16          # of the dense matrix in SpMM
EMPTY_ROWS = [0, N // 2, N - 1, *range(97, N - 1, 97)]


def matrices(dtype) -> dict[str, scipy.sparse.csr_matrix]:
    rng = np.random.default_rng(0)
    random = scipy.sparse.random(N, N, density=DENSITY, format="csr", random_state=rng,
                                 dtype=dtype)
    holes = random.tolil()
    for row in EMPTY_ROWS:
        holes.rows[row], holes.data[row] = [], []
    holes = holes.tocsr()
    assert all(holes.indptr[r] == holes.indptr[r + 1] for r in EMPTY_ROWS)
    return {"random": random, "empty_rows": holes}


def csr_inputs(matrix) -> list[np.ndarray]:
    return [matrix.indptr.astype(np.int64), matrix.indices.astype(np.int64), matrix.data]


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return tmp_path_factory.mktemp("sparse")


@pytest.fixture(scope="module")
def spmv_package(root):
    package, _ = export(root, "spmv", f"{N + 1}:int64", "N:int64", "N:float64", f"{N}:float64")
    return package


@pytest.fixture(scope="module")
def spmm_package(root):
    package, _ = export(root, "spmm", f"{N + 1}:int64", "N:int64", "N", f"{N}x{COLUMNS}")
    return package


@pytest.mark.parametrize("teams", [False, True], ids=["host_rows", "teams"])
def test_spmv_against_scipy(root, spmv_package, teams):
    library = build(root, spmv_package, "-DLAPIS_SPARSE_TEAMS" if teams else "")
    x = np.random.default_rng(1).standard_normal(N)
    cases = matrices(np.float64)
    ours = run_cases(root, spmv_package, library,
                     {name: [*csr_inputs(matrix), x] for name, matrix in cases.items()})
    for name, matrix in cases.items():
        (y,) = ours[name]
        reference = matrix @ x
        assert y.shape == (N,) and y.dtype == np.float64
        assert relative_error(y, reference) <= 1e-12, name
    assert not ours["empty_rows"][0][EMPTY_ROWS].any()


@pytest.mark.parametrize("teams", [False, True], ids=["host_rows", "teams"])
def test_spmm_against_scipy(root, spmm_package, teams):
    library = build(root, spmm_package, "-DLAPIS_SPARSE_TEAMS" if teams else "")
    B = np.random.default_rng(2).standard_normal((N, COLUMNS)).astype(np.float32)
    cases = matrices(np.float32)
    ours = run_cases(root, spmm_package, library,
                     {name: [*csr_inputs(matrix), B] for name, matrix in cases.items()})
    for name, matrix in cases.items():
        (Y,) = ours[name]
        reference = matrix.astype(np.float64) @ B.astype(np.float64)
        assert Y.shape == (N, COLUMNS) and Y.dtype == np.float32
        assert relative_error(Y, reference) <= 1e-5, name
    assert not ours["empty_rows"][0][EMPTY_ROWS].any()


def test_verify_draws_valid_csr_indices(root):
    """--verify on a function with no example inputs: random values, but row pointers and
    column indices that obey the convention (else it would read out of bounds)."""
    _, stdout = export(root, "sparse_jacobi_step", "201:int32", "N:int32", "N:float64",
                       "200:float64", "200:float64", "200:float64", options=("--verify",))
    assert "tolerance 1e-10) — PASS" in stdout, stdout
