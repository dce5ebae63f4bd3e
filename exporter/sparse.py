"""Sparse matrices in exported functions: CSR products that become tuned Kokkos kernels.

    from exporter.sparse import csr_matvec, csr_matmul
    def spmv(row_ptr, col_idx, values, x):
        return csr_matvec(row_ptr, col_idx, values, x)

The CSR convention: a matrix of `rows` rows is three tensors, `row_ptr` [rows + 1] (int64 or
int32, row_ptr[0] == 0, nondecreasing), `col_idx` [nnz] (same dtype) and `values` [nnz]
(float32 or float64); row r's nonzeros are values[row_ptr[r]:row_ptr[r + 1]] in the columns
col_idx[...]. The matrix has as many columns as `x` has entries (`B` has rows). Empty rows give
zeros. torch sparse CSR tensors cannot be inputs (torch.export does not trace them).

The products are torch.library custom ops (`lapis::csr_matvec`, `lapis::csr_matmul`) with a
reference implementation (PyTorch's own CSR product, used in eager mode and by --verify) and a
fake one for torch.export. Along the pipeline:

1. import (importer/custom_ops.py): torch-mlir imports a custom op as
   `torch.operator "torch.lapis.*"`; rewrite_custom_ops() turns it into a call of a private
   function declaration, whose argument and result types torch-mlir's backend type conversion
   carries to builtin tensors. The linalg-on-tensors contract check refuses calls, so
   linalg_pipeline() leaves it out and check_contract() does its work for every other op.
2. bufferization: the declaration's arguments are marked read-only, so nothing is copied.
3. replace_calls() (lowering/sparse.py, with the tuned kernels): the call becomes a
   `memref.alloc` for its result and an op of the unregistered `lapis` dialect writing it, as
   lowering/conv.py does for convolutions; emit/sparse_handlers.py turns that into a call of
   kokkos_support/lapis/sparse.hpp.
"""
from __future__ import annotations

import torch

# Custom op -> (callee name in the IR, lapis dialect op after bufferization, C++ function).
OPS = {
    "lapis.csr_matvec": ("lapis_csr_matvec", "lapis.csr_matvec", "lapis::csr_matvec"),
    "lapis.csr_matmul": ("lapis_csr_matmul", "lapis.csr_matmul", "lapis::csr_matmul"),
}
# Callee name in the IR -> lapis dialect op.
CALLEES = {callee: lapis_op for callee, lapis_op, _ in OPS.values()}
_INDEX_DTYPES = (torch.int64, torch.int32)
_VALUE_DTYPES = (torch.float32, torch.float64)


# ---- the Python API -------------------------------------------------------------------------
@torch.library.custom_op("lapis::csr_matvec", mutates_args=())
def csr_matvec(row_ptr: torch.Tensor, col_idx: torch.Tensor, values: torch.Tensor,
               x: torch.Tensor) -> torch.Tensor:
    """y = A x for the CSR matrix A = (row_ptr, col_idx, values) with len(x) columns."""
    _check("csr_matvec", row_ptr, col_idx, values, x, rank=1)
    matrix = _csr(row_ptr, col_idx, values, x.shape[0])
    return (matrix @ x.unsqueeze(1)).squeeze(1).contiguous()


@torch.library.custom_op("lapis::csr_matmul", mutates_args=())
def csr_matmul(row_ptr: torch.Tensor, col_idx: torch.Tensor, values: torch.Tensor,
               B: torch.Tensor) -> torch.Tensor:
    """Y = A B for the CSR matrix A = (row_ptr, col_idx, values) and a dense B [cols, k]."""
    _check("csr_matmul", row_ptr, col_idx, values, B, rank=2)
    return (_csr(row_ptr, col_idx, values, B.shape[0]) @ B).contiguous()


@csr_matvec.register_fake
def _csr_matvec_fake(row_ptr, col_idx, values, x):
    _check("csr_matvec", row_ptr, col_idx, values, x, rank=1)
    return values.new_empty((row_ptr.shape[0] - 1,))


@csr_matmul.register_fake
def _csr_matmul_fake(row_ptr, col_idx, values, B):
    _check("csr_matmul", row_ptr, col_idx, values, B, rank=2)
    return values.new_empty((row_ptr.shape[0] - 1, B.shape[1]))


def _csr(row_ptr, col_idx, values, columns: int) -> torch.Tensor:
    import warnings

    rows = row_ptr.shape[0] - 1
    with warnings.catch_warnings():   # "sparse CSR tensor support is in beta"
        warnings.simplefilter("ignore", UserWarning)
        return torch.sparse_csr_tensor(row_ptr.to(torch.int64), col_idx.to(torch.int64), values,
                                       size=(rows, columns))


def _check(name: str, row_ptr, col_idx, values, dense, rank: int) -> None:
    """The CSR convention's shape and dtype rules, as one-line errors at trace time."""
    what = "x" if rank == 1 else "B"
    problems = []
    if row_ptr.dim() != 1 or col_idx.dim() != 1 or values.dim() != 1:
        problems.append("row_ptr, col_idx and values must be 1-d")
    if row_ptr.dtype not in _INDEX_DTYPES or col_idx.dtype != row_ptr.dtype:
        problems.append(f"row_ptr and col_idx must both be int64 or int32 (got "
                        f"{_dtype(row_ptr)}, {_dtype(col_idx)})")
    if values.dtype not in _VALUE_DTYPES or dense.dtype != values.dtype:
        problems.append(f"values and {what} must both be float32 or float64 (got "
                        f"{_dtype(values)}, {_dtype(dense)})")
    if dense.dim() != rank:
        problems.append(f"{what} must be {rank}-d (got {dense.dim()}-d)")
    if row_ptr.dim() == 1 and row_ptr.shape[0] < 1:
        problems.append("row_ptr needs rows + 1 >= 1 entries")
    if problems:
        raise ValueError(f"{name}: " + "; ".join(problems))


def _dtype(tensor) -> str:
    return str(tensor.dtype).removeprefix("torch.")


# ---- --verify: random matrices that obey the convention -------------------------------------
def valid_csr_inputs(program, inputs: list) -> None:
    """Replace, in the random `inputs` of --verify (torch tensors, in user-input order), the
    row pointers and column indices that reach a CSR product directly by valid random ones:
    nonzeros spread over the rows at random, columns within the dense operand's rows."""
    if not hasattr(program, "graph_signature"):   # an ONNX model: no CSR products
        return
    user_inputs = list(program.graph_signature.user_inputs)
    targets = (torch.ops.lapis.csr_matvec.default, torch.ops.lapis.csr_matmul.default)
    generator = torch.Generator().manual_seed(0)
    for node in program.graph.nodes:
        if node.op != "call_function" or node.target not in targets:
            continue
        row_ptr, col_idx, values, dense = node.args
        names = [getattr(arg, "name", None) for arg in (row_ptr, col_idx, values, dense)]
        if not all(name in user_inputs for name in names[:3]):
            continue               # computed indices: the function's own business
        p, c = (user_inputs.index(name) for name in names[:2])
        rows, nnz = inputs[p].shape[0] - 1, inputs[c].shape[0]
        columns = (inputs[user_inputs.index(names[3])].shape[0] if names[3] in user_inputs
                   else int(dense.meta["val"].shape[0]))
        if rows < 1 or columns < 1:
            continue
        row_of = torch.sort(torch.randint(0, rows, (nnz,), generator=generator)).values
        counts = torch.bincount(row_of, minlength=rows)
        inputs[p] = torch.cat([counts.new_zeros(1), counts.cumsum(0)]).to(inputs[p].dtype)
        inputs[c] = torch.randint(0, columns, (nnz,), generator=generator).to(inputs[c].dtype)
