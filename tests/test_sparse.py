"""The CSR products' Python API (exporter/sparse.py): the reference implementation against
scipy.sparse (empty rows included), the CSR convention's checks as one-line errors at export,
the IR rewrite (no copies of the operands) and the emitted C++ (a golden). End to end through
built packages: integration_tests/test_sparse.py."""
from __future__ import annotations

import os

import numpy as np
import pytest
import scipy.sparse
import torch

from exporter.handoff import TensorSpec
from exporter.sparse import csr_matmul, csr_matvec

from .test_emit import GOLDEN, emit_ir, forward_body
from .test_function_frontend import assert_user_error, invoke


def matrix_with_empty_rows() -> scipy.sparse.csr_matrix:
    """7 x 5, rows 0, 3 and 6 empty."""
    dense = np.zeros((7, 5))
    dense[1, [0, 4]] = [1.5, -2.0]
    dense[2, 2] = 3.0
    dense[4, [1, 2, 3]] = [0.5, 4.0, -1.0]
    dense[5, 0] = 2.5
    return scipy.sparse.csr_matrix(dense)


def torch_csr(matrix, index_dtype=torch.int64):
    return (torch.from_numpy(matrix.indptr).to(index_dtype),
            torch.from_numpy(matrix.indices).to(index_dtype), torch.from_numpy(matrix.data))


@pytest.mark.parametrize("index_dtype", [torch.int64, torch.int32])
def test_reference_matches_scipy_with_empty_rows(index_dtype):
    A = matrix_with_empty_rows()
    x = np.arange(5.0) - 2.0
    B = np.arange(10.0).reshape(5, 2)
    y = csr_matvec(*torch_csr(A, index_dtype), torch.from_numpy(x)).numpy()
    Y = csr_matmul(*torch_csr(A, index_dtype), torch.from_numpy(B)).numpy()
    np.testing.assert_allclose(y, A @ x, rtol=1e-15)
    np.testing.assert_allclose(Y, A @ B, rtol=1e-15)
    assert not y[[0, 3, 6]].any() and not Y[[0, 3, 6]].any()


def test_convention_errors_are_one_line_at_export(tmp_path):
    path = tmp_path / "bad.py"
    path.write_text("from exporter.sparse import csr_matvec\n\n"
                    "def f(p, c, v, x):\n    return csr_matvec(p, c, v, x)\n")
    result = invoke(f"{path}:f", "--input-shape", "4:int64", "--input-shape", "5:int32",
                    "--input-shape", "5", "--input-shape", "3:float64", "--out", tmp_path / "o")
    assert_user_error(result, "csr_matvec: row_ptr and col_idx must both be int64 or int32 "
                      "(got int64, int32); values and x must both be float32 or float64 "
                      "(got float32, float64)")


def test_rewrite_leaves_no_copies(tmp_path):
    """The products read their operands in place and write the output argument directly."""
    from pathlib import Path

    from exporter import frontend, importer, lowering
    path = tmp_path / "f.py"
    path.write_text("from exporter.sparse import csr_matvec\n\n"
                    "def f(p, c, v, x):\n    return csr_matvec(p, c, v, x)\n")
    loaded = frontend.load(Path(f"{path}:f"), [(4,), (5,), (5,), (3,)], None,
                           ["int64", "int64", None, None])
    lowered = lowering.run(importer.to_linalg(loaded), "openmp")
    text = str(lowered.module)
    assert '"lapis.csr_matvec"(%arg0, %arg1, %arg2, %arg3, %arg4)' in text, text
    assert "memref.copy" not in text and "memref.alloc" not in text and "func.call" not in text


def test_golden_csr_products():
    def spec(cname, dtype, shape):
        return TensorSpec(name=cname, cname=cname, dtype=dtype, shape=shape)
    inputs = [spec("input0", "int64", (4,)), spec("input1", "int64", (5,)),
              spec("input2", "float32", (5,)), spec("input3", "float32", (3,)),
              spec("input4", "float32", (3, 2))]
    outputs = [spec("output0", "float32", (3,)), spec("output1", "float32", (3, 2))]
    emitted = emit_ir((GOLDEN / "csr_products.mlir").read_text(), inputs, outputs)
    body = forward_body(emitted.source)
    golden = GOLDEN / "csr_products.cpp"
    if os.environ.get("LAPIS_UPDATE_GOLDENS"):
        golden.write_text(body)
    assert body == golden.read_text()
    assert emitted.kernel_count == 3
    assert '#include "lapis/sparse.hpp"' in emitted.source


def test_export_is_deterministic(tmp_path):
    """Two exports of a function with both products give the same C++ byte for byte."""
    from pathlib import Path

    from exporter import emit, frontend, importer, lowering
    path = tmp_path / "g.py"
    path.write_text("from exporter.sparse import csr_matmul, csr_matvec\n\n"
                    "def g(p, c, v, x, B):\n"
                    "    return csr_matvec(p, c, v, x) * 2.0, csr_matmul(p, c, v, B)\n")

    def source() -> str:
        loaded = frontend.load(Path(f"{path}:g"), [(4,), (-1,), (-1,), (3,), (3, 2)], None,
                               ["int32", "int32", None, None, None])
        lowered = lowering.run(importer.to_linalg(loaded), "openmp")
        return emit.kokkos(lowered, "g", "openmp").source
    first = source()
    assert first == source()
    assert "lapis::csr_matvec<execution_space>" in first
    assert "lapis::csr_matmul<execution_space>" in first
