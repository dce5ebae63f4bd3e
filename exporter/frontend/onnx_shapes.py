"""Shape arithmetic of ONNX models folded into constants, where ONNX's shape inference stops.

Models from torch.onnx's TorchScript exporter (dynamo=False) compute reshape targets at run
time: Shape -> Slice/Gather -> Concat chains, with an op (Mod) that shape inference's data
propagation does not evaluate; the Reshape after it then has no known rank, nor has anything
after it, and torch-mlir cannot lower a rank-less Transpose. With every input shape static these
chains are constants: evaluate them here (small integer tensors only, with ONNX's reference
implementation), so that shape inference sees constant targets.
"""
from __future__ import annotations

import numpy as np

# Ops evaluated when their inputs are known; outputs are kept only if integer and small.
_FOLDABLE = {"Add", "Sub", "Mul", "Div", "Mod", "Neg", "Abs", "Min", "Max", "Concat", "Gather",
             "Slice", "Squeeze", "Unsqueeze", "Reshape", "Cast", "Equal", "Less", "Greater",
             "Where", "Not", "And", "Or", "Range", "ReduceProd", "ReduceSum", "Expand",
             "Identity", "ConstantOfShape", "Floor", "Ceil", "Sqrt"}
_LARGEST = 1024


def has_unknown_shapes(model) -> bool:
    """Whether shape inference left some node output without a static shape."""
    shapes = _static_shapes(model.graph)
    return any(name and name not in shapes for node in model.graph.node for name in node.output)


def fold_shape_computations(model) -> int:
    """Replace, in place, each node whose inputs are constants or static shapes and whose
    outputs are small integer tensors by Constant nodes; returns how many were folded."""
    from onnx import numpy_helper

    graph = model.graph
    known: dict[str, np.ndarray] = {}
    for tensor in graph.initializer:
        if _small_integer_shape(tensor.dims, tensor.data_type):
            known[tensor.name] = numpy_helper.to_array(tensor)
    shapes = _static_shapes(graph)
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 17)
    folded = 0
    shift = 0      # nodes inserted so far beyond the ones replaced
    for position, node in enumerate(list(graph.node)):
        if node.domain not in ("", "ai.onnx"):
            continue
        values = _evaluate(node, known, shapes, opset)
        if values is None:
            continue
        if node.op_type == "Constant":
            known.update(zip(node.output, values))
            continue
        replacements = [_constant(name, value) for name, value in zip(node.output, values)]
        index = position + shift
        del graph.node[index]
        for offset, constant in enumerate(replacements):
            graph.node.insert(index + offset, constant)
        shift += len(replacements) - 1
        known.update(zip(node.output, values))
        folded += 1
    if folded:
        _drop_unused_constants(graph)
    return folded


def _evaluate(node, known, shapes, opset):
    """The node's outputs as arrays, or None if they are not small constant integer tensors."""
    from onnx import helper, numpy_helper

    if node.op_type == "Constant":
        value = next((a for a in node.attribute if a.name == "value"), None)
        if value is None or not _small_integer_shape(value.t.dims, value.t.data_type):
            return None
        return [numpy_helper.to_array(value.t)]
    if node.op_type == "Shape":
        shape = shapes.get(node.input[0])
        if shape is None:
            return None
        attributes = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        start, end = attributes.get("start", 0), attributes.get("end", len(shape))
        return [np.array(shape[slice(start, end)], dtype=np.int64)]
    if node.op_type == "Size":
        shape = shapes.get(node.input[0])
        return None if shape is None else [np.array(int(np.prod(shape)), dtype=np.int64)]
    if node.op_type not in _FOLDABLE or not all(not name or name in known
                                                for name in node.input):
        return None
    from onnx.reference import ReferenceEvaluator

    inputs = [name for name in node.input if name]
    probe = helper.make_graph(
        [node], "fold", [helper.make_tensor_value_info(name, helper.np_dtype_to_tensor_dtype(
            known[name].dtype), known[name].shape) for name in inputs],
        [helper.make_tensor_value_info(name, 0, None) for name in node.output])
    try:
        results = ReferenceEvaluator(helper.make_model(
            probe, opset_imports=[helper.make_opsetid("", opset)])).run(
                None, {name: known[name] for name in inputs})
    except Exception:  # an op the reference does not evaluate: leave it to the model
        return None
    results = [np.asarray(r) for r in results]
    if not all(r.dtype.kind in "iub" and r.size <= _LARGEST for r in results):
        return None
    return results


def _static_shapes(graph) -> dict[str, tuple[int, ...]]:
    shapes = {}
    for value in [*graph.input, *graph.value_info, *graph.output]:
        tensor = value.type.tensor_type
        if not tensor.HasField("shape"):
            continue
        dims = [d.dim_value if d.HasField("dim_value") else None for d in tensor.shape.dim]
        if all(d is not None for d in dims):
            shapes[value.name] = tuple(dims)
    return shapes


def _small_integer_shape(dims, data_type) -> bool:
    from onnx import TensorProto

    integer = data_type in (TensorProto.INT64, TensorProto.INT32, TensorProto.BOOL)
    return integer and int(np.prod(dims, dtype=np.int64)) <= _LARGEST


def _constant(name: str, value: np.ndarray):
    from onnx import helper, numpy_helper

    return helper.make_node("Constant", [], [name], name=f"{name}_folded",
                            value=numpy_helper.from_array(np.asarray(value), name))


def _drop_unused_constants(graph) -> None:
    """Constant nodes nothing reads any more (the folded chains' leaves)."""
    while True:
        used = {name for node in graph.node for name in node.input}
        used |= {value.name for value in graph.output}
        used |= {name for node in graph.node for attribute in node.attribute
                 for sub in [*([attribute.g] if attribute.HasField("g") else []),
                             *attribute.graphs]
                 for inner in sub.node for name in inner.input}
        dead = [node for node in graph.node
                if node.op_type == "Constant" and not any(o in used for o in node.output)]
        if not dead:
            return
        for node in dead:
            graph.node.remove(node)
