"""Frontend for ONNX files: load and check the model, pin its input shapes, infer the rest.

Called by frontend.load() for files whose content is an ONNX ModelProto. The LoadedModel it
returns carries the shape-inferred ModelProto as `program` and its graph outputs as
`outputs`; importer/onnx_graph.py takes them on.
"""
from __future__ import annotations

from pathlib import Path

from ..errors import ExportError
from ..handoff import LoadedModel, TensorSpec
from . import onnx_shapes

# Older models are converted to this opset before import (see _upgrade_opset).
MIN_OPSET = 17

_SHAPE_HINT = "e.g. --input-shape 1x3x224x224, one per model input, in order"


def onnx_dtypes() -> dict[int, str]:
    """ONNX element type -> our dtype name (the types the generated code carries)."""
    import onnx
    return {onnx.TensorProto.FLOAT: "float32", onnx.TensorProto.DOUBLE: "float64",
            onnx.TensorProto.INT64: "int64", onnx.TensorProto.INT32: "int32",
            onnx.TensorProto.BOOL: "bool"}


def load(path: Path, input_shapes: list[tuple[int, ...]] | None) -> LoadedModel:
    """Read `path` as an ONNX model with static input shapes (from the file or --input-shape)."""
    import onnx

    try:
        model = onnx.load(str(path))
    except Exception as exc:  # protobuf DecodeError, missing external data files, ...
        raise ExportError(f"{path}: could not read the ONNX model: {_first_line(exc)}") from exc
    return prepare(model, path, input_shapes)


def prepare(model, path: Path, input_shapes: list[tuple[int, ...]] | None = None
            ) -> LoadedModel:
    """Check `model` (an onnx.ModelProto), apply `input_shapes` and infer every other shape."""
    import onnx

    try:
        onnx.checker.check_model(model)
    except Exception as exc:  # onnx.checker.ValidationError and friends
        raise ExportError(f"{path}: not a valid ONNX model: {_first_line(exc)}") from exc
    graph = model.graph
    initialized = {tensor.name for tensor in graph.initializer}
    user_inputs = [value for value in graph.input if value.name not in initialized]
    if input_shapes is not None:
        if len(input_shapes) != len(user_inputs):
            raise ExportError(f"{path}: the model takes {len(user_inputs)} input(s) but "
                              f"{len(input_shapes)} --input-shape given", hint=_SHAPE_HINT)
        for value, shape in zip(user_inputs, input_shapes):
            _pin_shape(path, value, shape)
    _forget_output_symbols(graph, initialized)
    model = _upgrade_opset(model)
    model = _infer_shapes(path, model)
    # Shape arithmetic that inference does not evaluate (onnx_shapes.py), a few rounds: each
    # may give static shapes to more Shape nodes.
    for _ in range(4):
        if not onnx_shapes.has_unknown_shapes(model) or \
                not onnx_shapes.fold_shape_computations(model):
            break
        model = _infer_shapes(path, model)
    inputs = [_spec(path, value, f"input{index}", "input")
              for index, value in enumerate(value for value in model.graph.input
                                            if value.name not in initialized)]
    # Refuses non-tensor or shapeless outputs before importing.
    outputs = output_specs(path, model)
    return LoadedModel(path=path, kind="onnx", program=model, inputs=inputs, source_sha256="",
                       outputs=outputs)


def _infer_shapes(path: Path, model):
    import onnx

    try:
        return onnx.shape_inference.infer_shapes(model, strict_mode=True, data_prop=True)
    except Exception as exc:  # onnx.shape_inference.InferenceError
        raise ExportError(f"{path}: ONNX shape inference failed: {_first_line(exc)}") from exc


def _forget_output_symbols(graph, initialized: set[str]) -> None:
    """Output dimensions named by the exporter ("Add50_dim_0", where torch.onnx gave only the
    inputs dynamic axes) are left for shape inference to derive from the inputs' names."""
    names = {d.dim_param for value in graph.input if value.name not in initialized
             for d in value.type.tensor_type.shape.dim if d.dim_param}
    for value in graph.output:
        for dim in value.type.tensor_type.shape.dim:
            if dim.dim_param and dim.dim_param not in names:
                dim.ClearField("dim_param")


def _upgrade_opset(model):
    """Models older than MIN_OPSET are converted up to it with ONNX's version converter:
    torch-mlir's ONNX lowering covers the newer forms of many ops (MaxPool before 12,
    BatchNormalization before 15).
    A model the converter cannot handle is imported as it is."""
    import onnx
    from onnx import version_converter

    version = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    if version is None or version >= MIN_OPSET:
        return model
    try:
        converted = version_converter.convert_version(model, MIN_OPSET)
    except Exception:  # the converter lacks an adapter for some op: keep the original
        return model
    # Scan-8 -> 9 drops the batch dimension from the graph's inputs: a model whose interface
    # the conversion changes is not the model the caller has.
    def interface(graph):
        return [(value.name, _dims(value)) for value in [*graph.input, *graph.output]]
    return converted if interface(converted.graph) == interface(model.graph) else model


def output_specs(path: Path, model) -> list[TensorSpec]:
    """The graph outputs of a shape-inferred ModelProto."""
    return [_spec(path, value, f"output{index}", "output")
            for index, value in enumerate(model.graph.output)]


def _pin_shape(path: Path, value, shape: tuple[int, ...]) -> None:
    """Give the graph input `value` the static `shape`; fixed dims in the file must agree."""
    tensor_type = value.type.tensor_type
    dims = tensor_type.shape.dim
    if tensor_type.HasField("shape") and len(dims) != len(shape):
        raise ExportError(f"{path}: --input-shape {_format(shape)} for input '{value.name}' has "
                          f"{len(shape)} dimensions, the model's has {len(dims)}")
    for dim, given in zip(dims, shape):
        if dim.HasField("dim_value") and dim.dim_value != given:
            raise ExportError(f"{path}: --input-shape {_format(shape)} for input '{value.name}' "
                              f"disagrees with the model's shape {_format(_dims(value))}")
    # A letter (-1) keeps the model's own symbolic dimension, or names a new one after the
    # input and position (which --input-shape letters do not name across inputs).
    names = [d.dim_param if d.HasField("dim_param") else "" for d in dims] or [""] * len(shape)
    tensor_type.shape.ClearField("dim")
    for dim, (given, name) in enumerate(zip(shape, names)):
        if given < 0:
            tensor_type.shape.dim.add().dim_param = name or f"{value.name}_{dim}"
        else:
            tensor_type.shape.dim.add().dim_value = given


def _spec(path: Path, value, cname: str, role: str) -> TensorSpec:
    import onnx

    if not value.type.HasField("tensor_type"):
        raise ExportError(f"{path}: {role} '{value.name}' is not a tensor "
                          f"({value.type.WhichOneof('value')}); only tensors are supported")
    element = value.type.tensor_type.elem_type
    dtype = onnx_dtypes().get(element)
    if dtype is None:
        raise ExportError(f"{path}: {role} '{value.name}' has element type "
                          f"{onnx.TensorProto.DataType.Name(element).lower()}, which is not "
                          "supported", hint="supported: float32, float64, int64, int32, bool")
    shape = _dims(value)
    unknown = shape is None or any(not d.HasField("dim_value") and not d.dim_param
                                   for d in value.type.tensor_type.shape.dim)
    if unknown:
        shown = "unknown rank" if shape is None else _format(shape)
        raise ExportError(f"{path}: {role} '{value.name}' has no static shape ({shown})",
                          hint=(_SHAPE_HINT + "; a letter (Nx16) keeps a dimension dynamic")
                          if role == "input" else "pin the input shapes with --input-shape")
    # Symbolic dimensions stay dynamic: dimensions with the same name have the same size.
    symbols = tuple(None if d.HasField("dim_value") else d.dim_param
                    for d in value.type.tensor_type.shape.dim)
    return TensorSpec(name=value.name, cname=cname, dtype=dtype, shape=shape,
                      symbols=symbols if -1 in shape else ())


def _dims(value) -> tuple[int, ...] | None:
    tensor_type = value.type.tensor_type
    if not tensor_type.HasField("shape"):
        return None
    return tuple(d.dim_value if d.HasField("dim_value") else -1 for d in tensor_type.shape.dim)


def _format(shape: tuple[int, ...]) -> str:
    return "x".join("?" if d == -1 else str(d) for d in shape) or "(scalar)"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]
