"""Loaders for PyTorch's own files: a TorchScript archive (converted to a torch.export
program) and a torch.export program (.pt2), re-exported where --input-shape pins or frees
dimensions.
"""
from __future__ import annotations

import zipfile
from pathlib import Path

# A saved program may call the lapis:: custom ops (lstsq, the CSR products): registered here.
from .. import linalg, recurrent, sparse  # noqa: F401
from ..errors import ExportError
from ..handoff import LoadedModel
from .torch_program import (SHAPE_HINT, export_program, format_shape, input_specs, node_shape,
                            quiet_torch, sample_inputs, torch_errors, user_placeholders)


def load_torchscript(path: Path, input_shapes: list[tuple[int, ...]] | None) -> LoadedModel:
    import torch

    if not input_shapes:
        raise ExportError(f"{path}: TorchScript files do not record input shapes; pass "
                          "--input-shape ... once per input", hint=SHAPE_HINT)
    with torch_errors(path, "could not load the TorchScript archive"), quiet_torch():
        script = torch.jit.load(str(path), map_location="cpu")
    script.eval()
    arguments = script.forward.schema.arguments[1:]   # [0] is self
    if len(arguments) != len(input_shapes):
        raise ExportError(f"{path}: forward() takes {len(arguments)} input(s) but "
                          f"{len(input_shapes)} --input-shape given", hint=SHAPE_HINT)
    for argument in arguments:
        if str(argument.type) != "Tensor":
            raise ExportError(f"{path}: forward() input '{argument.name}' has type "
                              f"{argument.type}; only tensor inputs are supported")
    traced = _traced_inputs(path, len(arguments))
    sample = sample_inputs(input_shapes, [dtype for dtype, _ in traced] if traced else None)
    try:
        with torch_errors(path, "could not convert TorchScript to torch.export"), \
                quiet_torch():
            program = _converter(script, sample).convert()
            # The converter marks every dimension Dim.AUTO; re-export to pin the given shapes
            # (dynamic ones stay dynamic).
            program = export_program(program.module(), sample, input_shapes)
    except ExportError as exc:
        misfit = _shape_misfit(script, [a.name for a in arguments], input_shapes, traced)
        if misfit is None:
            raise
        raise ExportError(f"{path}: {misfit}", hint="--input-shape gives each input's shape "
                          "as the model takes it") from exc
    return LoadedModel(path=path, kind="torchscript", program=program,
                       inputs=input_specs(path, program), source_sha256="")


def _converter(script, sample):
    """torch's TorchScript -> torch.export converter, with the traced size arithmetic folded
    back into integers (see _fold_size_arithmetic)."""
    from torch._export.converter import TS2EPConverter

    class Converter(TS2EPConverter):
        def retrace_as_exported_program(self, gm, name_to_constant):
            _fold_size_arithmetic(gm)
            return super().retrace_as_exported_program(gm, name_to_constant)

    return Converter(script, sample)


def _fold_size_arithmetic(gm) -> None:
    """torch.jit.trace records `x.size(-1) // 2 + 1` as arithmetic on 0-d tensors
    (prim::NumToTensor, aten::floor_divide, aten::add) read back by aten::Int, which the
    converter turns into `.item()`: a data-dependent size that torch.export cannot reason about
    (an FNO's `out_ft[..., :modes]` then fails on "could not guard on u0 < 33"). Where such a
    read-back is arithmetic on sizes and constants only, compute it on the sizes themselves."""
    import operator

    import torch

    aten = torch.ops.aten
    binary = {aten.add.Tensor: operator.add, aten.add.Scalar: operator.add,
              aten.sub.Tensor: operator.sub, aten.sub.Scalar: operator.sub,
              aten.mul.Tensor: operator.mul, aten.mul.Scalar: operator.mul,
              aten.floor_divide.default: operator.floordiv,
              aten.floor_divide.Scalar: operator.floordiv,
              aten.remainder.Tensor: operator.mod, aten.remainder.Scalar: operator.mod}

    def integer(node, build):
        """The integer `node` holds, as an FX value built by `build`, or None."""
        if not isinstance(node, torch.fx.Node):
            return node if isinstance(node, int) and not isinstance(node, bool) else None
        if node.op == "get_attr":
            value = getattr(gm, node.target, None)
            if (isinstance(value, torch.Tensor) and value.dim() == 0
                    and not value.is_floating_point() and not value.is_complex()
                    and value.dtype != torch.bool):
                return int(value)
            return None
        if node.op != "call_function":
            return None
        if node.target is aten.scalar_tensor.default or node.target is aten.scalar_tensor:
            source = node.args[0]
            if isinstance(source, torch.fx.Node) and source.target in (
                    aten.sym_size, aten.sym_size.int, aten.sym_numel, aten.sym_numel.default):
                return source
            return integer(source, build)
        if node.target is aten._to_copy.default and set(node.kwargs) <= {"dtype"} and \
                node.kwargs.get("dtype") in (torch.int32, torch.int64):
            return integer(node.args[0], build)
        if node.target in binary and node.kwargs.get("alpha", 1) == 1 and len(node.args) == 2:
            left, right = (integer(a, build) for a in node.args)
            if left is None or right is None:
                return None
            return build(binary[node.target], left, right)
        if node.target is aten.neg.default:
            value = integer(node.args[0], build)
            return None if value is None else build(operator.neg, value)
        return None

    for node in list(gm.graph.nodes):
        if node.op != "call_function" or node.target is not aten._local_scalar_dense.default:
            continue
        # A dry run first: fold only what folds entirely.
        if integer(node.args[0], lambda op, a, b=None: 0) is None:
            continue
        with gm.graph.inserting_before(node):
            value = integer(node.args[0], lambda op, *args: gm.graph.call_function(op, args))
        if isinstance(value, torch.fx.Node):
            node.replace_all_uses_with(value)
        else:                 # a size that folded to a number
            _replace_with_constant(node, value)
    gm.graph.eliminate_dead_code()
    gm.recompile()


def _replace_with_constant(node, value: int) -> None:
    for user in list(node.users):
        user.args = tuple(_substitute(a, node, value) for a in user.args)
        user.kwargs = {k: _substitute(v, node, value) for k, v in user.kwargs.items()}


def _substitute(argument, node, value):
    if argument is node:
        return value
    if isinstance(argument, (list, tuple)):
        return type(argument)(_substitute(a, node, value) for a in argument)
    return argument


# Storage classes in a pickle -> the dtype of the tensor they hold.
_STORAGE_DTYPES = {"torch FloatStorage": "float32", "torch DoubleStorage": "float64",
                   "torch LongStorage": "int64", "torch IntStorage": "int32",
                   "torch BoolStorage": "bool"}


def _shape_misfit(script, names: list[str], shapes: list[tuple[int, ...]],
                  traced: list[tuple[str, tuple[int, ...]]] | None) -> str | None:
    """Why inputs of `shapes` do not fit the traced model, in its own terms ("input 0 ('x')
    dimension 1 is 5, but layer 'fc1' (Linear) takes 4 features"), or None if the shapes the
    model was traced with are unknown or agree with them. The model is converted at its traced
    shapes and run on inputs of the given ones until an op fails; the layer is the module
    whose weights that op reads."""
    import torch

    if not traced:
        return None
    misfits = [(index, dim, given, shape[dim])
               for index, (wanted, (_, shape)) in enumerate(zip(shapes, traced))
               if len(wanted) == len(shape)
               for dim, given in enumerate(wanted) if given >= 0 and given != shape[dim]]
    if not misfits:
        return None
    index, dim, given, expected = misfits[0]
    where = f"input {index} ('{names[index]}') dimension {dim} is {given}"
    generator = torch.Generator().manual_seed(0)
    failing = None
    try:
        with quiet_torch():
            sample = tuple(torch.zeros(shape, dtype=getattr(torch, dtype))
                           for dtype, shape in traced)
            module = _converter(script, sample).convert().module()
            given_inputs = [torch.randn([d if d >= 0 else t for d, t in zip(wanted, shape)],
                                        generator=generator).to(getattr(torch, dtype))
                            for wanted, (dtype, shape) in zip(shapes, traced)]
            failing = _failing_node(module, given_inputs)
    except Exception:   # the diagnosis is best effort: the plain message follows
        failing = None
    layer = _layer_of(failing, script) if failing is not None else None
    if layer is None:
        return f"{where}, but the model was traced with {expected} there"
    path, kind = layer
    unit = {"Linear": "features", "Bilinear": "features"}.get(kind, "channels" if kind.startswith(
        ("Conv", "BatchNorm", "GroupNorm", "InstanceNorm")) else "")
    takes = f"takes {expected} {unit}" if unit else f"was traced with {expected} there"
    return f"{where}, but layer '{path}' ({kind}) {takes}"


def _failing_node(module, inputs):
    """The first node of the GraphModule `module` that raises on `inputs`, or None."""
    import torch

    class Failed(Exception):   # the node kept aside: fx's Interpreter rewrites args[0]
        def __init__(self, node):
            super().__init__(str(node))
            self.node = node

    class Interpreter(torch.fx.Interpreter):
        def run_node(self, node):
            if node.op == "call_module" and node.target == "_guards_fn":
                return None    # the traced shapes' guards: the ops below are what misfit
            try:
                return super().run_node(node)
            except Failed:
                raise
            except Exception as exc:
                raise Failed(node) from exc

    try:
        with torch.no_grad():
            Interpreter(module).run(*inputs)
    except Failed as failed:
        return failed.node
    return None


def _layer_of(node, script) -> tuple[str, str] | None:
    """(module path, module type) of the first weight `node` reads (a get_attr of
    'fc1.weight'), the type from the TorchScript module's original name."""
    for argument in node.all_input_nodes:
        if argument.op == "get_attr" and "." in str(argument.target):
            path = str(argument.target).rpartition(".")[0]
            module = script
            for part in path.split("."):    # ScriptModules have no get_submodule
                module = getattr(module, part, None)
            return path, getattr(module, "original_name", None) or "module"
    return None


def _traced_input_dtypes(path: Path, count: int) -> list[str] | None:
    """The dtypes of the example inputs torch.jit.trace stored in the archive; None when the
    archive has none (torch.jit.script) or they are not `count` tensors of supported dtypes;
    the inputs are then taken as float32."""
    traced = _traced_inputs(path, count)
    return [dtype for dtype, _ in traced] if traced else None


def _traced_inputs(path: Path, count: int) -> list[tuple[str, tuple[int, ...]]] | None:
    """(dtype, shape) of each example input torch.jit.trace stored in the archive
    (traced_inputs.pkl). Read by an unpickler that builds nothing but tuples, lists, dicts and
    placeholders for the tensors (their data left out), so no code of the file runs."""
    import collections
    import io
    import pickle

    class Unpickler(pickle.Unpickler):
        def find_class(self, module, name):
            if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
                return lambda storage, offset, size, *rest: (storage, tuple(size))
            if (module, name) == ("collections", "OrderedDict"):
                return collections.OrderedDict
            if (module, name) == ("torch.jit._pickle", "restore_type_tag"):
                return lambda value, type_tag: value
            if module == "torch" and name.endswith("Storage"):
                return f"torch {name}"
            raise pickle.UnpicklingError(f"{module}.{name} is not read")

        def persistent_load(self, pid):   # ('storage', <storage class>, key, location, size)
            return _STORAGE_DTYPES.get(pid[1]) if isinstance(pid, tuple) else None

    try:
        with zipfile.ZipFile(path) as archive:
            member = next((name for name in archive.namelist()
                           if name.endswith("/traced_inputs.pkl")), None)
            if member is None:
                return None
            data = archive.read(member)
        inputs = Unpickler(io.BytesIO(data)).load().get("forward")
    except Exception:  # not a pickle we can read: no traced inputs, as for a scripted module
        return None
    if not isinstance(inputs, (list, tuple)) or len(inputs) != count or not all(
            isinstance(entry, tuple) and len(entry) == 2 and entry[0] for entry in inputs):
        return None
    return [(dtype, shape) for dtype, shape in inputs]


def load_exported(path: Path, input_shapes: list[tuple[int, ...]] | None) -> LoadedModel:
    import torch

    with torch_errors(path, "could not load the torch.export program"), quiet_torch():
        program = torch.export.load(str(path))
    placeholders = user_placeholders(program)
    if input_shapes is not None:
        if len(input_shapes) != len(placeholders):
            raise ExportError(f"{path}: the program takes {len(placeholders)} input(s) but "
                              f"{len(input_shapes)} --input-shape given", hint=SHAPE_HINT)
        for index, (node, given) in enumerate(zip(placeholders, input_shapes)):
            recorded = node_shape(node)
            if recorded is not None and (len(recorded) != len(given) or any(
                    r != -1 and g != -1 and r != g for r, g in zip(recorded, given))):
                raise ExportError(f"{path}: --input-shape {format_shape(given)} for input "
                                  f"{index} ('{node.name}') disagrees with the recorded shape "
                                  f"{format_shape(recorded)}")
            fixed = [d for d, (r, g) in enumerate(zip(recorded or (), given))
                     if r != -1 and g == -1]
            if fixed:
                raise ExportError(f"{path}: --input-shape {format_shape(given)} for input "
                                  f"{index} ('{node.name}') makes a dimension dynamic that the "
                                  f"program fixed ({format_shape(recorded)})",
                                  hint="export it with a torch.export.Dim for that dimension, "
                                  f"e.g. dynamic_shapes=({{{fixed[0]}: torch.export.Dim('n')}},)")
    specs = input_specs(path, program)
    if input_shapes is not None and [spec.shape for spec in specs] != list(input_shapes):
        # Pin the dimensions given as numbers, free those given as letters.
        sample = sample_inputs(input_shapes, [spec.dtype for spec in specs])
        with torch_errors(path, "could not re-export the program for --input-shape"), \
                quiet_torch():
            program = export_program(program.module(), sample, input_shapes)
        specs = input_specs(path, program)
    return LoadedModel(path=path, kind="torch.export", program=program, inputs=specs,
                       source_sha256="")

