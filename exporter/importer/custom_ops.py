"""The custom ops of tuned kernels through torch-mlir's import (the CSR products of
exporter/sparse.py, the small dense linear algebra of exporter/linalg.py, the recurrences of
exporter/recurrent.py): each `torch.operator "torch.lapis.*"` becomes a call of a private
declaration, which the backend type conversion carries to builtin tensors and the contract
check (done here instead of by torch-mlir's pipeline, which refuses calls) lets through.
"""
from __future__ import annotations

import re
from pathlib import Path

from ..diagnostics import HINT, op_location, unsupported_message, walk
from ..errors import ExportError
from .. import attention, fft, layer_norm, linalg, recurrent, scatter, sparse

OPS = {**sparse.OPS, **linalg.OPS, **recurrent.OPS, **scatter.OPS, **attention.OPS,
       **layer_norm.OPS, **fft.OPS}
CALLEES = {callee for callee, _, _ in OPS.values()}

_CONTRACT_CHECK = ",torch-verify-linalg-on-tensors-backend-contract"


def _custom_name(op) -> str:
    """The custom op a `torch.operator` stands for: "torch.lapis.fft" from the FX importer,
    "onnx.lapis_fft" from the ONNX importer (a node of onnx_rewrites.FFT_DOMAIN) -> "lapis.fft"."""
    from torch_mlir import ir

    name = ir.StringAttr(op.attributes["name"]).value
    if name.startswith("onnx.lapis_"):
        return "lapis." + name.removeprefix("onnx.lapis_")
    return name.removeprefix("torch.")


def rewrite_custom_ops(module) -> int:
    """Replace each `torch.operator "torch.lapis.*"` (or an ONNX node's "onnx.lapis_*") in
    `module` by a `func.call` of a private declaration of the same types; returns how many."""
    from torch_mlir import ir

    found = [op for op in walk(module.operation) if op.name == "torch.operator"
             and _custom_name(op) in OPS]
    if not found:
        return 0
    declared: dict[str, object] = {}
    with module.context:
        read_only = ir.DictAttr.get({"bufferization.access": ir.StringAttr.get("read")})
        for op in found:
            custom = _custom_name(op)
            base = OPS[custom][0]
            argument_types = [value.type for value in op.operands]
            result_types = [result.type for result in op.results]
            signature = (custom, tuple(str(t) for t in argument_types),
                         tuple(str(t) for t in result_types))
            callee = declared.get(signature)
            if callee is None:            # one declaration per op and set of types
                taken = sum(1 for c in declared.values() if re.sub(r"_\d+$", "", c) == base)
                callee = f"{base}_{taken}" if taken else base
                declared[signature] = callee
                with ir.InsertionPoint(module.body), ir.Location.unknown():
                    ir.Operation.create("func.func", regions=1, attributes={
                        "sym_name": ir.StringAttr.get(callee),
                        "sym_visibility": ir.StringAttr.get("private"),
                        "function_type": ir.TypeAttr.get(
                            ir.FunctionType.get(argument_types, result_types)),
                        "arg_attrs": ir.ArrayAttr.get([read_only] * len(argument_types))})
            with ir.InsertionPoint(op), op.location:
                call = ir.Operation.create("func.call", results=result_types,
                                           operands=list(op.operands),
                                           attributes={"callee": ir.FlatSymbolRefAttr.get(callee)})
            for old, new in zip(op.results, call.results):
                old.replace_all_uses_with(new)
            op.erase()
    return len(found)


def linalg_pipeline(pipeline: str) -> str:
    """torch-mlir's torch -> linalg-on-tensors pipeline without its final contract check, which
    refuses the calls; check_contract() takes its place."""
    from torch_mlir.passmanager import PassManager

    expanded = str(PassManager.parse(pipeline))
    if _CONTRACT_CHECK not in expanded:
        raise ExportError("internal: torch-mlir's linalg-on-tensors pipeline has no contract "
                          "check to leave out")
    return expanded.replace(_CONTRACT_CHECK, "")


def check_contract(module, path: Path) -> None:
    """What the contract check would have said of ops other than our calls: torch-dialect ops
    or values left over mean an op had no lowering."""
    from torch_mlir import ir

    left = []
    for op in walk(module.operation):
        types = [str(v.type) for v in [*op.operands, *op.results]]
        if op.name.startswith(("torch.", "torch_c.")) or any(t.startswith("!torch.")
                                                             for t in types):
            if op.name == "func.call" and re.sub(r"_\d+$", "", ir.FlatSymbolRefAttr(
                    op.attributes["callee"]).value) in CALLEES:
                continue
            left.append((op.name, op_location(op.location)))
    keep = ("torch.constant.", "torch.prim.ListConstruct", "torch_c.", "torch.derefine")
    left = [entry for entry in left if not entry[0].startswith(keep)] or left
    if left:
        raise ExportError(unsupported_message(path, left, "torch-mlir cannot lower it to linalg"),
                          hint=HINT)
