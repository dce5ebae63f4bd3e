"""Computational-science kernels as plain Python functions over torch tensors, for

    lapis-export examples/science_kernels.py:cg --input-shape 64x64:float64 \
        --input-shape 64:float64 --input-shape 64:float64 --out cg_pkg --verify

Each `<name>_example_inputs()` gives the inputs --verify runs the function on where random ones
would not do (a definite matrix for CG, a dominant diagonal for Jacobi, valid CSR indices).
"""
import torch

from exporter.sparse import csr_matmul, csr_matvec

CG_ITERATIONS = 10


def axpby(a, x, b, y):
    """a x + b y, with a and b 0-d tensors (--input-shape scalar)."""
    return a * x + b * y


def gemv(A, x):
    return A @ x


def jacobi_step(A, b, x):
    """One Jacobi sweep for A x = b: x' = (b - (A - D) x) / diag(A)."""
    d = torch.diagonal(A)
    return (b - A @ x + d * x) / d


def cg(A, b, x):
    """CG_ITERATIONS steps of conjugate gradients for a symmetric positive definite A."""
    r = b - A @ x
    p = r
    rr = torch.dot(r, r)
    for _ in range(CG_ITERATIONS):
        Ap = A @ p
        alpha = rr / torch.dot(p, Ap)
        x = x + alpha * p
        r = r - alpha * Ap
        rr_next = torch.dot(r, r)
        p = r + (rr_next / rr) * p
        rr = rr_next
    return x


def spmv(row_ptr, col_idx, values, x):
    """y = A x for the CSR matrix A (exporter/sparse.py's convention)."""
    return csr_matvec(row_ptr, col_idx, values, x)


def spmm(row_ptr, col_idx, values, B):
    """Y = A B for the CSR matrix A and a dense B."""
    return csr_matmul(row_ptr, col_idx, values, B)


def sparse_jacobi_step(row_ptr, col_idx, values, diagonal, b, x):
    """A Jacobi sweep with a CSR matrix: x' = x + (b - A x) / diag(A)."""
    return x + (b - csr_matvec(row_ptr, col_idx, values, x)) / diagonal


# ---- inputs for --verify --------------------------------------------------------------------
def spd_matrix(n: int, dtype=torch.float64, seed: int = 0) -> torch.Tensor:
    """A well-conditioned symmetric positive definite matrix."""
    generator = torch.Generator().manual_seed(seed)
    m = torch.randn(n, n, generator=generator, dtype=dtype)
    return m @ m.T / n + torch.eye(n, dtype=dtype)


def cg_example_inputs():
    generator = torch.Generator().manual_seed(1)
    b = torch.randn(64, generator=generator, dtype=torch.float64)
    return spd_matrix(64), b, torch.zeros(64, dtype=torch.float64)


def jacobi_step_example_inputs():
    generator = torch.Generator().manual_seed(2)
    A = torch.randn(64, 64, generator=generator) + 64 * torch.eye(64)
    return A, torch.randn(64, generator=generator), torch.randn(64, generator=generator)


def laplacian_1d(n: int, dtype=torch.float64):
    """The n x n matrix tridiag(-1, 2, -1) in CSR: (row_ptr, col_idx, values)."""
    rows = torch.arange(n).repeat_interleave(3)
    cols = rows + torch.tensor([-1, 0, 1]).repeat(n)
    vals = torch.tensor([-1.0, 2.0, -1.0], dtype=dtype).repeat(n)
    keep = (cols >= 0) & (cols < n)
    counts = torch.bincount(rows[keep], minlength=n)
    row_ptr = torch.cat([torch.zeros(1, dtype=torch.int64), counts.cumsum(0)])
    return row_ptr, cols[keep].contiguous(), vals[keep].contiguous()


def spmv_example_inputs():
    """For --input-shape 1001:int64 N:int64 N:float64 1000:float64 (nnz dynamic)."""
    generator = torch.Generator().manual_seed(3)
    return (*laplacian_1d(1000), torch.randn(1000, generator=generator, dtype=torch.float64))


def gemm(A, B):
    """A dense matrix product (lapis::matmul, kokkos_support/lapis/gemm.hpp, no BLAS):
    benchmarks/sparse.py times it."""
    return A @ B
