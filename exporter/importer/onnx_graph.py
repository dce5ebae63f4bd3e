"""Import stage for ONNX models: torch-mlir's ONNX importer, its ONNX -> torch lowering, then
the same linalg-on-tensors pipeline as the PyTorch path. Nodes that lowering gets wrong are
first rewritten into ONNX ops it gets right (onnx_rewrites.py).

Weights stay out of the IR: float initializers (and large float Constant nodes) become function
arguments ahead of the user inputs, their arrays kept here for the weight blob. Small constants
(shapes, axes, scales) stay in the IR, where the ONNX lowering needs their values.
"""
from __future__ import annotations

import re

import numpy as np

from ..errors import ExportError
from ..handoff import ImportedModel, LoadedModel, Weight
from ..names import c_identifier
from . import custom_ops, onnx_rewrites

# Float tensors with more elements than this are weights; smaller ones stay IR constants.
LITERAL_MAX_ELEMENTS = 16

# (description, pass pipeline); the second is the one importer/__init__.py runs for PyTorch
# models.
PIPELINE = (
    ("torch dialect", "builtin.module(torch-onnx-to-torch-backend-pipeline)"),
    ("linalg-on-tensors", "builtin.module(torch-backend-to-linalg-on-tensors-backend-pipeline"
                          "{allow-non-finites=true})"),
)


# torch-onnx-to-torch-backend-pipeline without its shape reification (about 0.6 s a model,
# parsing torch-mlir's shape library twice): the frontend has already inferred static shapes.
# Used first; a model it does not take to linalg is retried with the full pipeline.
FAST_TORCH_PIPELINE = (
    "builtin.module(func.func(convert-torch-onnx-to-torch{allow-non-finites=true}), "
    "func.func(torch-decompose-complex-ops), func.func(canonicalize), "
    "func.func(torch-scalarize-shapes), torch-refine-public-return, func.func(canonicalize), "
    "func.func(torch-decompose-complex-ops), func.func(canonicalize))")


def to_linalg(model: LoadedModel) -> ImportedModel:
    """Import the shape-inferred ModelProto in `model.program` as linalg-on-tensors."""
    import onnx

    proto = onnx.ModelProto()
    proto.CopyFrom(model.program)
    if onnx_rewrites.rewrite(proto):     # nodes torch-mlir would lower to wrong numbers
        proto = onnx.shape_inference.infer_shapes(proto, strict_mode=True, data_prop=True)
    weights = _lift_weights(proto.graph)
    outputs = model.outputs      # the rewrites keep every graph output as it was
    proto.graph.name = "forward"

    try:
        module = _import_and_lower(proto, FAST_TORCH_PIPELINE)
        if _has_dynamic_shapes(module):
            module = None     # shape reification would have made them static
    except ExportError:
        module = None    # retried with torch-mlir's full pipeline, whose error is reported
    if module is None:
        try:
            module = _import_and_lower(proto, PIPELINE[0][1])
        except ExportError as exc:
            raise ExportError(f"{model.path}: {exc.message}", hint=exc.hint) from exc
    return ImportedModel(module=module, weights=weights, inputs=model.inputs, outputs=outputs,
                         source=model)


def _has_dynamic_shapes(module) -> bool:
    return re.search(r"tensor<[^>]*\?", str(module)) is not None


def _import_and_lower(proto, torch_pipeline: str):
    """A fresh context and module for `proto`, lowered to linalg-on-tensors."""
    from torch_mlir import ir
    from torch_mlir.compiler_utils import TorchMlirCompilerError, run_pipeline_with_repro_report
    from torch_mlir.dialects import torch as torch_d
    from torch_mlir.extras import onnx_importer

    context = ir.Context()
    torch_d.register_dialect(context)
    try:
        info = onnx_importer.ModelInfo(proto)
        module = info.create_module(context=context)
        cache = onnx_importer.ContextCache(context)
        cache.__class__ = _InlineConstants
        importer = onnx_importer.NodeImporter.define_function(info.main_graph, module.operation,
                                                              context_cache=cache)
        importer.import_all()
    except Exception as exc:  # OnnxImportError, or an assertion on an odd graph
        raise ExportError(f"torch-mlir could not import the ONNX graph: "
                          f"{_first_line(exc)}") from exc
    calls = custom_ops.rewrite_custom_ops(module)   # the FFT kernel's nodes (onnx_rewrites)
    if calls:
        _declare_opset(module)
    diagnostics: list[str] = []

    def collect(diagnostic) -> bool:    # handled: kept for the one-line message, not printed
        # The importer names each op's location after its ONNX node.
        diagnostics.append(f"{diagnostic.message} [at {diagnostic.location}]")
        return True
    context.attach_diagnostic_handler(collect)
    to_linalg = PIPELINE[1][1]
    if calls:
        with context:
            to_linalg = custom_ops.linalg_pipeline(to_linalg)
    for description, pipeline in ((PIPELINE[0][0], torch_pipeline), (PIPELINE[1][0], to_linalg)):
        try:
            run_pipeline_with_repro_report(module, pipeline, f"lowering to {description}")
        except TorchMlirCompilerError as exc:
            report = "\n".join(diagnostics) + "\n" + str(exc)
            raise ExportError(f"lowering to {description} failed: "
                              f"{unsupported_op_summary(report)}",
                              hint="the op named above has no torch-mlir lowering to linalg"
                              ) from exc
    if calls:
        custom_ops.check_contract(module, "the ONNX graph")
    return module


def _declare_opset(module) -> None:
    """The ONNX -> torch pass wants every function to say its opset: the custom ops'
    declarations say the graph's."""
    from torch_mlir import ir

    functions = [op.operation for op in module.body.operations if op.operation.name == "func.func"]
    attributes = functions[0].attributes
    meta = [(attributes[i].name, attributes[i].attr) for i in range(len(attributes))
            if attributes[i].name.startswith("torch.onnx_meta.")]
    for function in functions[1:]:
        for name, value in meta:
            if name not in function.attributes:
                function.attributes[name] = value


def _lift_weights(graph) -> list:
    """Move float initializers (and large float Constant nodes) to graph inputs placed before
    the user inputs, so that they become the leading function arguments; returns them."""
    import onnx
    from onnx import numpy_helper

    float_types = (onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE)
    for node in list(graph.node):    # Constant nodes holding weights become initializers
        if node.op_type == "Constant" and len(node.attribute) == 1 \
                and node.attribute[0].name == "value" \
                and node.attribute[0].t.data_type in float_types \
                and int(np.prod(node.attribute[0].t.dims)) > LITERAL_MAX_ELEMENTS:
            tensor = onnx.TensorProto()
            tensor.CopyFrom(node.attribute[0].t)
            tensor.name = node.output[0]
            graph.initializer.append(tensor)
            graph.node.remove(node)
    lifted, kept, used = [], [], set()
    weights: list[Weight] = []
    for tensor in graph.initializer:
        if tensor.data_type in float_types and \
                int(np.prod(tensor.dims)) > LITERAL_MAX_ELEMENTS:
            lifted.append(tensor)
        else:
            kept.append(tensor)
    lifted_names = {tensor.name for tensor in lifted}
    initialized = lifted_names | {tensor.name for tensor in kept}
    user_inputs = [value for value in graph.input if value.name not in initialized]
    weight_inputs = []
    for tensor in lifted:
        array = np.require(numpy_helper.to_array(tensor), requirements="C")   # 0-d stays 0-d
        cname = c_identifier(tensor.name, prefix="w")
        while cname in used:
            cname += "_"
        used.add(cname)
        weights.append(Weight(name=tensor.name, cname=cname, array=array))
        weight_inputs.append(onnx.helper.make_tensor_value_info(
            tensor.name, tensor.data_type, list(tensor.dims)))
    del graph.input[:]
    graph.input.extend([*weight_inputs, *user_inputs])
    del graph.initializer[:]
    graph.initializer.extend(kept)
    return weights


def _inline_attr(tensor):
    """A DenseElementsAttr for an ONNX constant (torch-mlir's importer would make a
    dense_resource, whose bytes the Python bindings cannot give back to the emitter)."""
    from onnx import numpy_helper
    from torch_mlir import ir

    # reshaped: np.ascontiguousarray gives a 0-d array one dimension
    array = np.ascontiguousarray(numpy_helper.to_array(tensor)).reshape(tuple(tensor.dims))
    if array.dtype == np.bool_:
        return ir.DenseElementsAttr.get(array, shape=list(array.shape),
                                        type=ir.IntegerType.get_signless(1))
    return ir.DenseElementsAttr.get(array, signless=False)


def _context_cache_class():
    from torch_mlir.extras import onnx_importer

    class InlineConstants(onnx_importer.ContextCache):
        __slots__ = ()

        def tensor_proto_to_attr(self, tp):
            if tp.HasField("raw_data") and tp.data_type in _INLINE_TYPES:
                return _inline_attr(tp)
            return super().tensor_proto_to_attr(tp)
    return InlineConstants


_INLINE_TYPES = (1, 6, 7, 9, 11)   # FLOAT, INT32, INT64, BOOL, DOUBLE
_InlineConstants = _context_cache_class()


def unsupported_op_summary(report: str) -> str:
    """One line naming the ONNX or torch op(s) that failed to lower, from torch-mlir's report."""
    onnx_ops = re.findall(r"failed to legalize operation 'torch\.operator'.*?"
                          r"name = \"onnx\.(\w+)\"", report, flags=re.S)
    onnx_ops += re.findall(r"torch\.operator \"onnx\.(\w+)\"", report)
    if onnx_ops:
        distinct = sorted(set(onnx_ops))
        return f"ONNX op '{distinct[0]}'{_node_of(report, distinct[0])} has no lowering" + (
            f" (and {len(distinct) - 1} other op kinds)" if len(distinct) > 1 else "")
    ops = re.findall(r"failed to legalize operation '([^']+)'", report)
    ops += re.findall(r"unsupported by backend contract: module op '([^']+)'", report)
    ops += re.findall(r"found an op that was marked as backend illegal.*?'([\w.]+)'", report)
    if ops:
        distinct = sorted(set(ops))
        return f"op '{distinct[0]}' is not supported" + (
            f" (and {len(distinct) - 1} other unsupported op kinds)" if len(distinct) > 1 else "")
    errors = [line.split("error:", 1)[1].strip() for line in report.splitlines()
              if "error:" in line]
    return errors[0] if errors else (report.strip().splitlines() or ["unknown error"])[0]


def _node_of(report: str, op_type: str) -> str:
    """" (node '/enc/layers.0/self_attn/Transpose_1')": the first failing node of that type,
    from the location the diagnostic carries; "" when it has no name."""
    for line in report.splitlines():
        if f'"onnx.{op_type}"' in line:
            match = re.search(r'\[at loc\("([^"]+)"\)\]', line)
            if match and match[1] not in ("onnx_importer.none",):
                return f" (node '{match[1]}')"
    return ""


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]
