"""Lowering stage: linalg-on-tensors -> buffers and loops, through upstream MLIR passes.

The result uses a small closed set of dialects the emitter knows: func, arith, math, memref,
scf, cf (asserts). Outputs become destination arguments appended after the inputs.
"""
from __future__ import annotations

from . import kernels, unsupported
from .errors import ExportError
from .handoff import ImportedModel

# Each step is (description, pass pipeline); None marks our own rewrite (kernels.py).
PIPELINE = (
    ("fuse elementwise ops",
     "builtin.module(func.func(linalg-fuse-elementwise-ops), canonicalize, cse)"),
    ("bufferize",
     "builtin.module(one-shot-bufferize{bufferize-function-boundaries allow-return-allocs-from-loops "
     "function-boundary-type-conversion=identity-layout-map "
     "unknown-type-conversion=identity-layout-map}, "
     "buffer-results-to-out-params{hoist-static-allocs modify-public-functions}, "
     "canonicalize, cse)"),
    ("tuned kernels", None),
    ("linalg to parallel loops",
     "builtin.module(func.func(convert-linalg-to-parallel-loops), lower-affine, "
     "canonicalize, cse)"),
)


def run(imported: ImportedModel, backend: str) -> ImportedModel:
    """Lower `imported.module` in place to loops over memrefs; returns the same hand-off."""
    module = imported.module
    unsupported.check_foreign_ops(module, imported.source.path)
    with module.context:
        for description, pipeline in PIPELINE:
            if description == "bufferize":
                _read_only_arguments(module)
            if pipeline is not None:
                unsupported.run_pipeline(module, pipeline, imported.source.path,
                                         f"MLIR lowering step '{description}'")
                continue
            try:
                kernels.replace_linalg_ops(module, len(imported.weights), backend)
            except ExportError:
                raise
            except Exception as exc:
                raise ExportError(f"{imported.source.path}: MLIR lowering step "
                                  f"'{description}' failed: {str(exc).splitlines()[0]}") from exc
    return imported


def _read_only_arguments(module) -> None:
    """Inputs and weights are the caller's (const Views): bufferization must copy a tensor
    it would update in place (a determinant's LU factorisation) rather than write there."""
    from torch_mlir import ir
    for op in module.body.operations:
        op = op.operation
        if op.name != "func.func":
            continue
        arguments = op.regions[0].blocks[0].arguments
        old = list(ir.ArrayAttr(op.attributes["arg_attrs"])) if "arg_attrs" in op.attributes \
            else [ir.DictAttr.get({}) for _ in arguments]
        new = []
        for argument, attrs in zip(arguments, old):
            entries = {named.name: named.attr for named in ir.DictAttr(attrs)}
            if isinstance(argument.type, ir.RankedTensorType):
                entries["bufferization.writable"] = ir.BoolAttr.get(False)
            new.append(ir.DictAttr.get(entries))
        op.attributes["arg_attrs"] = ir.ArrayAttr.get(new)
