"""Handler for the dense matrix products of exporter/matmul.py: calls of
kokkos_support/lapis/gemm.hpp."""
from __future__ import annotations

from ..matmul import MATMUL
from .emitter import KokkosEmitter, handles, location_label


@handles(MATMUL)
def _matmul(em: KokkosEmitter, op) -> None:
    """`lapis.matmul(A, B, C) {init}`: C = A B (init zero) or C += A B (init accumulate)."""
    from torch_mlir import ir
    a, b, c = (em.memref(v).cname for v in op.operands)
    init = ir.StringAttr(op.attributes["init"]).value
    em.kernel_count += 1
    em.line(f"// {location_label(op) or op.name}: dense matrix product"
            + (", zero fill folded in" if init == "zero" else ", adding to C") + " (lapis/gemm.hpp)")
    em.line(f'lapis::matmul<execution_space>("{em.kernel_label(op, "matmul")}", {a}, {b}, {c}, '
            f"lapis::MatmulInit::{init});")
