"""Dense matrix products: `linalg.matmul` (`linalg.batch_matmul`) on buffers becomes
`lapis.matmul` (`lapis.batch_matmul`), a call of the register-blocked kernel in
kokkos_support/lapis/gemm.hpp instead of one dot-product loop per output element.

`linalg.matmul ins(A, B) outs(C)` accumulates: C += A B. The bufferized IR usually zero-fills C
just before it; that fill folds into the call (`init = "zero"`: the kernel writes C without
reading it). Otherwise the kernel adds to what C holds (`init = "accumulate"`). Operands of any
strides are fine (the kernel reads the Views' strides); a product with non-default indexing
maps (a transposed operand), mixed element types or an output that shares a buffer with an
input stays loops.
"""
from __future__ import annotations

from ..tuned_ops import BATCH_MATMUL, MATMUL
from .buffers import fill_value, neighbour, root, writes_only

_ELEMENTS = ("f32", "f64")
# linalg op -> (lapis op, operand rank, its default indexing maps: C[i, j] += A[i, k] B[k, j],
# per batch entry b for batch_matmul). Other maps (a transposed operand, a broadcast) stay loops.
OPS = {
    "linalg.matmul": (MATMUL, 2, [
        "affine_map<(d0, d1, d2) -> (d0, d2)>", "affine_map<(d0, d1, d2) -> (d2, d1)>",
        "affine_map<(d0, d1, d2) -> (d0, d1)>"]),
    "linalg.batch_matmul": (BATCH_MATMUL, 3, [
        "affine_map<(d0, d1, d2, d3) -> (d0, d1, d3)>",
        "affine_map<(d0, d1, d2, d3) -> (d0, d3, d2)>",
        "affine_map<(d0, d1, d2, d3) -> (d0, d1, d2)>"]),
}


def replace_matmuls(module) -> int:
    """Swap each eligible `linalg.matmul` (`linalg.batch_matmul`) in `module` for
    `lapis.matmul` (`lapis.batch_matmul`); returns how many."""
    module.context.allow_unregistered_dialects = True
    replaced = 0
    for function in module.body.operations:
        if function.operation.name != "func.func" or not len(function.regions[0].blocks):
            continue
        for op in list(function.regions[0].blocks[0].operations):
            op = op.operation
            if op.name in OPS and _eligible(op):
                _replace(op)
                replaced += 1
    return replaced


def _eligible(op) -> bool:
    from torch_mlir import ir
    if len(op.operands) != 3 or "cast" in op.attributes:
        return False
    _, rank, maps = OPS[op.name]
    if "indexing_maps" in op.attributes and [
            str(m) for m in ir.ArrayAttr(op.attributes["indexing_maps"])] != maps:
        return False
    types = [v.type for v in op.operands]
    if not all(isinstance(t, ir.MemRefType) for t in types):
        return False
    types = [ir.MemRefType(t) for t in types]
    if any(t.rank != rank for t in types) or len({str(t.element_type) for t in types}) != 1:
        return False
    if str(types[0].element_type) not in _ELEMENTS:
        return False
    a, b, c = op.operands
    return root(c) != root(a) and root(c) != root(b)


def _replace(op) -> None:
    from torch_mlir import ir
    a, b, c = op.operands
    init, folded = "accumulate", []
    before = neighbour(op, -1)
    if before is not None and writes_only(before, c) and fill_value(before) == 0.0:
        init = "zero"
        folded.append(before)
    with ir.InsertionPoint(op), op.location:
        ir.Operation.create(OPS[op.name][0], operands=[a, b, c],
                            attributes={"init": ir.StringAttr.get(init)})
    op.erase()
    for fill in folded:
        fill.erase()
