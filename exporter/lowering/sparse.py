"""The CSR products after bufferization (exporter/sparse.py has the whole path): each call
of a product's declaration becomes an op of the `lapis` dialect writing its result, which the
emitter turns into a call of kokkos_support/lapis/sparse.hpp.
"""
from __future__ import annotations

import re

from ..diagnostics import walk
from ..errors import ExportError
from ..sparse import CALLEES


def replace_calls(module) -> int:
    """After bufferization: `%y = call @lapis_csr_matvec(%p, %c, %v, %x) -> memref` becomes
    `%y = memref.alloc(); lapis.csr_matvec(%p, %c, %v, %x, %y)`; the declarations go."""
    from torch_mlir import ir

    module.context.allow_unregistered_dialects = True
    calls = [op for op in walk(module.operation) if op.name == "func.call"
             and _base_callee(ir.FlatSymbolRefAttr(op.attributes["callee"]).value)]
    for call in calls:
        callee = ir.FlatSymbolRefAttr(call.attributes["callee"]).value
        result_type = ir.MemRefType(call.results[0].type)
        if not result_type.has_static_shape:
            raise ExportError(f"{callee.removeprefix('lapis_')}: a result of dynamic shape "
                              "(a dynamic row count) is not supported yet",
                              hint="give row_ptr and the dense operand fixed --input-shape "
                                   "sizes; nnz (col_idx, values) may be dynamic")
        output = _copied_to_output(call.results[0])
        with ir.InsertionPoint(call), call.location:
            if output is not None:         # the function returns the product: write it there
                target, copy = output
            else:
                target = ir.Operation.create(
                    "memref.alloc", results=[result_type], operands=[], attributes={
                        "alignment": ir.IntegerAttr.get(ir.IntegerType.get_signless(64), 64),
                        "operandSegmentSizes": ir.DenseI32ArrayAttr.get([0, 0])}).results[0]
            ir.Operation.create(CALLEES[_base_callee(callee)],
                                operands=[*call.operands, target])
        if output is not None:
            copy.erase()
        else:
            call.results[0].replace_all_uses_with(target)
        call.erase()
    for op in list(module.body.operations):
        op = op.operation
        if op.name == "func.func" and _base_callee(ir.StringAttr(op.attributes["sym_name"]).value):
            op.erase()
    return len(calls)


def _copied_to_output(result):
    """(argument, copy) when `result`'s one use is `memref.copy result, argument` into a
    function argument (an output) that nothing else uses; else None."""
    from torch_mlir import ir

    uses = list(result.uses)
    if len(uses) != 1 or uses[0].owner.name != "memref.copy" or uses[0].operand_number != 0:
        return None
    copy = uses[0].owner.operation
    target = copy.operands[1]
    if not isinstance(target, ir.BlockArgument) or len(list(target.uses)) != 1 or \
            str(target.type) != str(result.type):
        return None
    return target, copy


def _base_callee(name: str) -> str | None:
    """'lapis_csr_matvec_1' -> 'lapis_csr_matvec'; None for other functions."""
    match = re.fullmatch(r"(lapis_csr_mat(?:vec|mul))(?:_\d+)?", name)
    return match[1] if match else None
