"""Small dense linear algebra per cell or element: batched solves, inverses, determinants,
Cholesky factors and least-squares fits of small matrices, as tuned Kokkos kernels
(kokkos_support/lapis/dense_solve.hpp: LU with partial pivoting; one matrix per thread for
n <= 8, a team per matrix above).

`torch.linalg.solve`, `inv`, `det` and `cholesky` (and `torch.det`, `torch.cholesky`) in a
model need nothing from the user: importer/dense_passes.py replaces them by the custom ops
below before torch.export's decompositions, which would otherwise thread an effect token
through `aten._linalg_check_errors` (the check that raises on a singular matrix). There is no
such check in the package, as in LAPACK-free codes: a singular matrix gives inf/nan
(a zero pivot divides), a matrix that is not positive definite a nan in its Cholesky factor.

`torch.linalg.lstsq` cannot be traced by torch.export (its rank and singular-value outputs have
data-dependent shapes); call `lstsq` below instead, in the model:

    from exporter.linalg import lstsq
    x = lstsq(A, B)        # A [..., m, n] of full column rank, m >= n; B [..., m, k]

The ops take batches of matrices [batch, n, n] (the pass flattens and broadcasts the batch
dimensions of the torch op); along the pipeline they follow the CSR products' path
(exporter/sparse.py): a call of a declaration through import (importer/custom_ops.py), a
`lapis.*` op writing its result after bufferization (lowering/tuned_calls.py), a call of
lapis/dense_solve.hpp in the C++ (emit/dense_handlers.py).
"""
from __future__ import annotations

import torch

# Custom op -> (callee name in the IR, lapis dialect op after bufferization, C++ function).
OPS = {
    "lapis.dense_solve": ("lapis_dense_solve", "lapis.dense_solve", "lapis::dense_solve"),
    "lapis.dense_inv": ("lapis_dense_inv", "lapis.dense_inv", "lapis::dense_inverse"),
    "lapis.dense_det": ("lapis_dense_det", "lapis.dense_det", "lapis::dense_determinant"),
    "lapis.dense_cholesky": ("lapis_dense_cholesky", "lapis.dense_cholesky",
                             "lapis::dense_cholesky"),
    "lapis.lstsq": ("lapis_lstsq", "lapis.lstsq", "lapis::dense_lstsq"),
}
_FLOATS = (torch.float32, torch.float64)


@torch.library.custom_op("lapis::dense_solve", mutates_args=())
def dense_solve(A: torch.Tensor, B: torch.Tensor) -> torch.Tensor:
    """X with A X = B for A [batch, n, n], B [batch, n, k]."""
    _check("solve", A, B)
    return torch.linalg.solve(A, B).contiguous()


@torch.library.custom_op("lapis::dense_inv", mutates_args=())
def dense_inv(A: torch.Tensor) -> torch.Tensor:
    """A^-1 for A [batch, n, n]."""
    _check("inv", A)
    return torch.linalg.inv(A).contiguous()


@torch.library.custom_op("lapis::dense_det", mutates_args=())
def dense_det(A: torch.Tensor) -> torch.Tensor:
    """det A [batch] for A [batch, n, n]."""
    _check("det", A)
    return torch.linalg.det(A).contiguous()


@torch.library.custom_op("lapis::dense_cholesky", mutates_args=())
def dense_cholesky(A: torch.Tensor) -> torch.Tensor:
    """The lower Cholesky factor L (A = L L^T) of a symmetric positive definite A
    [batch, n, n]; only A's lower triangle is read."""
    _check("cholesky", A)
    return torch.linalg.cholesky(A).contiguous()


@torch.library.custom_op("lapis::lstsq", mutates_args=())
def _lstsq(A: torch.Tensor, B: torch.Tensor) -> torch.Tensor:
    _check("lstsq", A, B)
    return torch.linalg.lstsq(A, B, driver="gels").solution.contiguous()


@dense_solve.register_fake
def _solve_fake(A, B):
    _check("solve", A, B)
    return B.new_empty(B.shape)


@dense_inv.register_fake
def _inv_fake(A):
    _check("inv", A)
    return A.new_empty(A.shape)


@dense_det.register_fake
def _det_fake(A):
    _check("det", A)
    return A.new_empty(A.shape[:1])


@dense_cholesky.register_fake
def _cholesky_fake(A):
    _check("cholesky", A)
    return A.new_empty(A.shape)


@_lstsq.register_fake
def _lstsq_fake(A, B):
    _check("lstsq", A, B)
    return B.new_empty((A.shape[0], A.shape[2], B.shape[2]))


def lstsq(A: torch.Tensor, B: torch.Tensor) -> torch.Tensor:
    """The least-squares solution X of min ||A X - B|| (Householder QR) for A [..., m, n] of
    full column rank with m >= n, B [..., m, k] or [..., m]; batch dimensions broadcast.
    In eager mode and for --verify it is torch.linalg.lstsq (driver 'gels')."""
    vector = B.dim() == A.dim() - 1
    if vector:
        B = B.unsqueeze(-1)
    batch = torch.broadcast_shapes(A.shape[:-2], B.shape[:-2])
    A3 = A.expand(*batch, *A.shape[-2:]).reshape(-1, *A.shape[-2:])
    B3 = B.expand(*batch, *B.shape[-2:]).reshape(-1, *B.shape[-2:])
    X = _lstsq(A3, B3).reshape(*batch, A.shape[-1], B.shape[-1])
    return X.squeeze(-1) if vector else X


def _check(name: str, A, B=None) -> None:
    """Shapes and dtypes the kernels take, as one-line errors at trace time."""
    problems = []
    if A.dim() != 3 or (name != "lstsq" and A.shape[1] != A.shape[2]):
        wanted = "matrices [batch, m, n]" if name == "lstsq" else "square matrices [batch, n, n]"
        problems.append(f"A must be a batch of {wanted} (got {list(A.shape)})")
    if A.dtype not in _FLOATS or (B is not None and B.dtype != A.dtype):
        problems.append("A and B must both be float32 or float64" if B is not None
                        else "A must be float32 or float64")
    if B is not None and (B.dim() != 3 or B.shape[:2] != A.shape[:2]):
        problems.append(f"B must be [batch, {'m' if name == 'lstsq' else 'n'}, k] with A's batch "
                        f"and rows (A {list(A.shape)}, B {list(B.shape)})")
    if name == "lstsq" and A.dim() == 3 and A.shape[1] < A.shape[2]:
        problems.append(f"A must have at least as many rows as columns (got {list(A.shape)})")
    if problems:
        raise ValueError(f"{name}: " + "; ".join(problems))


# ---- --verify: random matrices the ops are defined for --------------------------------------
_THROUGH = ("reshape", "view", "unsqueeze", "squeeze", "expand", "transpose", "_unsafe_view",
            "clone", "contiguous", "alias", "permute")


def valid_matrix_inputs(program, inputs: list) -> None:
    """Replace, in the random `inputs` of --verify (torch tensors, in user-input order), the
    matrices that reach a solve, inverse or determinant (through reshapes) by well-conditioned
    ones, A + n I, and those that reach a Cholesky factorisation by symmetric positive definite
    ones, A A^T + n I: random matrices are neither, and torch.linalg refuses them."""
    if not hasattr(program, "graph_signature"):   # an ONNX model
        return
    user_inputs = list(program.graph_signature.user_inputs)
    ops = {getattr(torch.ops.lapis, name.removeprefix("lapis.")).default: name
           for name in OPS if name != "lapis.lstsq"}
    for node in program.graph.nodes:
        if node.op != "call_function" or node.target not in ops:
            continue
        source = node.args[0]
        while isinstance(source, torch.fx.Node) and source.op == "call_function" and \
                getattr(source.target, "__name__", "").split(".")[0] in _THROUGH:
            source = source.args[0]
        if not isinstance(source, torch.fx.Node) or source.name not in user_inputs:
            continue
        index = user_inputs.index(source.name)
        A = inputs[index]
        if A.dim() < 2 or A.shape[-1] != A.shape[-2] or not A.is_floating_point():
            continue
        n = A.shape[-1]
        if ops[node.target] == "lapis.dense_cholesky":
            A = A @ A.transpose(-2, -1)
        inputs[index] = A + n * torch.eye(n, dtype=A.dtype)
