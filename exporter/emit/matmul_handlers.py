"""Handler for the dense matrix products of lowering/matmul.py: calls of
kokkos_support/lapis/gemm.hpp."""
from __future__ import annotations

from ..tuned_ops import BATCH_MATMUL, MATMUL
from .emitter import KokkosEmitter, handles, location_label


@handles(MATMUL, BATCH_MATMUL)
def _matmul(em: KokkosEmitter, op) -> None:
    """`lapis.matmul(A, B, C) {init}`: C = A B (init zero) or C += A B (init accumulate);
    `lapis.batch_matmul` the same for each entry of a batch."""
    from torch_mlir import ir
    a, b, c = (em.memref(v).cname for v in op.operands)
    init = ir.StringAttr(op.attributes["init"]).value
    em.include("lapis/gemm.hpp")
    em.kernel_count += 1
    short = op.name.removeprefix("lapis.")
    what = "batched dense matrix product" if op.name == BATCH_MATMUL else "dense matrix product"
    start = ", zero fill folded in" if init == "zero" else ", adding to C"
    em.line(f"// {location_label(op) or op.name}: {what}{start} (lapis/gemm.hpp)")
    em.line(f'lapis::{short}<execution_space>(exec, "{em.kernel_label(op, short)}", {a}, {b}, {c}, '
            f"lapis::MatmulInit::{init});")
