"""The tuned-kernel calls after bufferization (dense linear algebra, recurrences, scatter-adds,
attention, FFTs: exporter/linalg.py, recurrent.py, scatter.py, attention.py and fft.py have the whole
path): each call of a declaration becomes an op of the `lapis` dialect that writes its
results, `lapis.dense_solve(%A, %B, %X)`, which the emitter turns into a call of a header of
kokkos_support/lapis/. A result that is only copied into an output argument is written there
directly; a dynamic size of a result (the batch, the steps, the rows, the queries) is the
same dimension of the first operand.
"""
from __future__ import annotations

import re

from ..diagnostics import walk
from ..errors import ExportError
from .. import attention, fft, layer_norm, linalg, recurrent, scatter
from .sparse import _copied_to_output

OPS = {**linalg.OPS, **recurrent.OPS, **scatter.OPS, **attention.OPS, **layer_norm.OPS,
       **fft.OPS}
_CALLEES = {callee: lapis_op for callee, lapis_op, _ in OPS.values()}


def replace_calls(module) -> int:
    """`%X = call @lapis_dense_solve(%A, %B)` -> `%X = memref.alloc(); lapis.dense_solve(%A,
    %B, %X)`; the declarations go. Returns how many calls."""
    from torch_mlir import ir

    module.context.allow_unregistered_dialects = True
    calls = [op for op in walk(module.operation) if op.name == "func.call"
             and _base_callee(ir.FlatSymbolRefAttr(op.attributes["callee"]).value)]
    for call in calls:
        callee = _base_callee(ir.FlatSymbolRefAttr(call.attributes["callee"]).value)
        targets, copies = [], []
        with ir.InsertionPoint(call), call.location:
            for result in call.results:
                output = _copied_to_output(result)
                if output is not None:     # the function returns it: write it there
                    targets.append(output[0])
                    copies.append(output[1])
                else:
                    targets.append(_alloc(ir.MemRefType(result.type), call.operands[0], callee))
            ir.Operation.create(_CALLEES[callee], operands=[*call.operands, *targets])
        for copy in copies:
            copy.erase()
        for result, target in zip(call.results, targets):
            result.replace_all_uses_with(target)     # (none left where a copy went)
        call.erase()
    for op in list(module.body.operations):
        op = op.operation
        if op.name == "func.func" and _base_callee(ir.StringAttr(op.attributes["sym_name"]).value):
            op.erase()
    return len(calls)


def _alloc(memref_type, first_operand, callee: str):
    """A 64-byte aligned buffer of `memref_type`, its dynamic sizes those of `first_operand`."""
    from torch_mlir import ir

    index = ir.IndexType.get()
    sizes = []
    for dim, extent in enumerate(memref_type.shape):
        if extent != ir.ShapedType.get_dynamic_size():
            continue
        source = ir.MemRefType(first_operand.type)
        if dim >= source.rank or source.shape[dim] != ir.ShapedType.get_dynamic_size():
            raise ExportError(f"{callee.removeprefix('lapis_')}: a dynamic size in dimension "
                              f"{dim} of its result is not supported",
                              hint="a dynamic size of the result must be the same dimension "
                                   "of the first operand (the batch, the steps of a "
                                   "recurrence, the rows of a scatter, the queries of "
                                   "attention)")
        position = ir.Operation.create("arith.constant", results=[index], attributes={
            "value": ir.IntegerAttr.get(index, dim)}).results[0]
        sizes.append(ir.Operation.create("memref.dim", results=[index],
                                         operands=[first_operand, position]).results[0])
    return ir.Operation.create(
        "memref.alloc", results=[memref_type], operands=sizes, attributes={
            "alignment": ir.IntegerAttr.get(ir.IntegerType.get_signless(64), 64),
            "operandSegmentSizes": ir.DenseI32ArrayAttr.get([len(sizes), 0])}).results[0]


def _base_callee(name: str) -> str | None:
    """'lapis_dense_solve_1' -> 'lapis_dense_solve'; None for other functions."""
    base = re.sub(r"_\d+$", "", name)
    return base if base in _CALLEES else None
