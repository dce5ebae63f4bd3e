"""Lowering stage: linalg-on-tensors -> buffers and loops, through upstream MLIR passes.

Third stage of the pipeline (frontend -> importer -> lowering -> emit -> package -> verify).
Between bufferization and the loops, our rewrites hand ops to tuned kernels: convolutions and
pooling (conv.py), linear layers on CUDA and host backends (linear.py), dense matrix products (matmul.py), CSR
products (sparse.py). The result uses a small closed set of dialects the emitter knows: func,
arith, math, memref, scf, cf (asserts) and the `lapis` ops of exporter/tuned_ops.py. Outputs become destination arguments appended
after the inputs.
"""
from __future__ import annotations

import functools

from .. import diagnostics
from ..errors import ExportError
from ..handoff import ImportedModel
from ..tuned_ops import HOST_BACKENDS
from . import conv, linear, matmul, sparse, transposes, tuned_calls

# Each step is (description, pass pipeline); None marks our own rewrites (conv.py, matmul.py,
# sparse.py).
# {tm_tensor} and {copy}: see TM_TENSOR_BUFFERIZE.
PIPELINE = (
    ("fuse elementwise ops",
     "builtin.module(func.func(linalg-fuse-elementwise-ops), canonicalize, cse)"),
    ("bufferize",
     "builtin.module({tm_tensor}one-shot-bufferize{{{copy}bufferize-function-boundaries "
     "allow-return-allocs-from-loops function-boundary-type-conversion=identity-layout-map "
     "unknown-type-conversion=identity-layout-map}}, "
     "buffer-results-to-out-params{{hoist-static-allocs modify-public-functions}}, "
     "canonicalize, cse)"),
    ("tuned kernels", None),
    ("linalg to parallel loops",
     "builtin.module(func.func(tm-tensor-to-loops, convert-linalg-to-parallel-loops), "
     "lower-affine, canonicalize, cse)"),
)
# torch-mlir's sort, scatter, scan and top-k (tm_tensor ops) bufferize by a pass of their own,
# whose buffers One-Shot analysis cannot follow: modules with them copy before each write.
TM_TENSOR_BUFFERIZE = {"tm_tensor": "func.func(tm-tensor-bufferize), ",
                       "copy": "copy-before-write "}


def run(imported: ImportedModel, backend: str, tuned_kernels: bool = True,
        precision: str = "fp32") -> ImportedModel:
    """Lower `imported.module` in place to loops over memrefs; returns the same hand-off.
    Without `tuned_kernels`, convolutions and matrix products stay loops (the evaluator's
    one-row function, which runs inside a caller's kernel: emit/evaluator.py). `precision`
    bf16 on CUDA gives the linear layers bfloat16 operands (linear.bf16_linear_layers)."""
    module = imported.module
    _register_torch_mlir_passes()
    fields = TM_TENSOR_BUFFERIZE if diagnostics.has_foreign_ops(module) else \
        {"tm_tensor": "", "copy": ""}
    with module.context:
        for description, pipeline in PIPELINE:
            if description == "bufferize":
                _read_only_arguments(module)
            if pipeline is not None:
                diagnostics.run_pipeline(module, pipeline.format(**fields),
                                         imported.source.path,
                                         f"MLIR lowering step '{description}'")
                continue
            try:
                sparse.replace_calls(module)     # first: they remove the declarations
                tuned_calls.replace_calls(module)
                if not tuned_kernels:
                    continue
                transposes.fold_transposes(module)
                conv.replace_linalg_ops(module, len(imported.weights), backend)
                if backend in HOST_BACKENDS:
                    conv.write_into_padded(module)
                if backend == "cuda" or backend in HOST_BACKENDS:
                    linear.replace_linear_convs(module, backend)
                if backend in HOST_BACKENDS:
                    linear.chain_linear_layers(module)
                matmul.replace_matmuls(module)
                if backend == "cuda":
                    linear.mark_linear_readers(module)
                if backend == "cuda" and precision == "bf16":
                    linear.bf16_linear_layers(module)
            except ExportError:
                raise
            except Exception as exc:
                raise ExportError(f"{imported.source.path}: MLIR lowering step "
                                  f"'{description}' failed: {str(exc).splitlines()[0]}") from exc
    diagnostics.check_foreign_ops(module, imported.source.path)   # what loops did not cover
    return imported


@functools.cache
def _register_torch_mlir_passes() -> None:
    """torch-mlir's own passes (tm-tensor-bufferize, tm-tensor-to-loops: sort, scatter, scan
    and top-k as loops) are in its C API library but not registered by its Python package."""
    import ctypes
    import os

    import torch_mlir._mlir_libs as libraries
    library = ctypes.CDLL(os.path.join(os.path.dirname(libraries.__file__),
                                       "libTorchMLIRAggregateCAPI.so"))
    library.torchMlirRegisterAllPasses()


def _read_only_arguments(module) -> None:
    """Inputs and weights are the caller's (const Views): bufferization must copy a tensor
    it would update in place (a determinant's LU factorisation) rather than write there."""
    from torch_mlir import ir
    for op in module.body.operations:
        op = op.operation
        if op.name != "func.func" or not len(op.regions[0].blocks):
            continue                  # a declaration (importer/custom_ops.py) marks its own
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
