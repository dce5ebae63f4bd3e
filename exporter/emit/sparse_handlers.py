"""Handlers for the CSR products of exporter/sparse.py: calls of kokkos_support/lapis/sparse.hpp."""
from __future__ import annotations

from ..sparse import OPS
from .emitter import KokkosEmitter, handles, location_label

_WHAT = {"lapis.csr_matvec": "CSR matrix-vector product",
         "lapis.csr_matmul": "CSR matrix times dense matrix"}


@handles(*(lapis_op for _, lapis_op, _ in OPS.values()))
def _csr_product(em: KokkosEmitter, op) -> None:
    """`lapis.csr_matvec(row_ptr, col_idx, values, x, y)` (or csr_matmul with B, Y)."""
    row_ptr, col_idx, values, dense, target = (em.memref(v).cname for v in op.operands)
    function = next(cxx for _, lapis_op, cxx in OPS.values() if lapis_op == op.name)
    short = op.name.removeprefix("lapis.")
    em.include("lapis/sparse.hpp")
    em.kernel_count += 1
    em.line(f"// {location_label(op) or op.name}: {_WHAT[op.name]} (lapis/sparse.hpp)")
    em.line(f'{function}<execution_space>(exec, "{em.kernel_label(op, short)}", {row_ptr}, {col_idx}, '
            f"{values}, {dense}, {target});")
