"""What the frontend's loaders share: torch.export of a module on sample inputs with the
dynamic dimensions asked for, the input specs a program implies, dtype conversion, and torch's
exceptions and logging turned into one-line ExportErrors.
"""
from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator
from pathlib import Path

from ..errors import ExportError
from ..handoff import LoadedModel, TensorSpec

DTYPE_NAMES = ("float32", "float64", "int64", "int32", "bool")
FLOAT_DTYPES = ("float32", "float64")
# Size of a dynamic dimension in the example inputs torch.export traces with: not 0 or 1, which
# it would specialise on.
EXAMPLE_EXTENT = 4

SELF_CONTAINED_HINT = (
    "save a self-contained file instead: "
    "torch.jit.save(torch.jit.trace(model, example), 'model.pt') or "
    "torch.export.save(torch.export.export(model, (example,)), 'model.pt2')")
SHAPE_HINT = ("e.g. --input-shape 1x3x224x224, one per model input, in order (scalar for a 0-d "
               "input; 1001:int64 with a dtype, for Python functions)")



def export_program(module, sample: tuple, shapes: list[tuple[int, ...]]):
    """torch.export of `module` on `sample`, with the dimensions that are -1 in `shapes`
    dynamic (Dim.DYNAMIC: torch.export finds which of them must be equal)."""
    import torch

    dynamic = tuple({dim: torch.export.Dim.DYNAMIC for dim, extent in enumerate(shape)
                     if extent < 0} or None for shape in shapes)
    if all(entry is None for entry in dynamic):
        return torch.export.export(module, sample, strict=False)
    return torch.export.export(module, sample, dynamic_shapes=dynamic, strict=False)


def convert_dtype(model: LoadedModel, dtype: str) -> LoadedModel:
    """The model with its floating-point parameters, buffers and inputs in `dtype`,
    re-exported so that every op computes in it."""
    import torch

    if model.kind == "onnx":
        raise ExportError(f"{model.path}: --dtype converts PyTorch models only")
    if all(spec.dtype not in FLOAT_DTYPES or spec.dtype == dtype for spec in model.inputs) and \
            all(not value.is_floating_point() or value.dtype == getattr(torch, dtype)
                for value in [*model.program.state_dict.values(),
                              *model.program.constants.values()]
                if isinstance(value, torch.Tensor)):
        return model
    shapes = [spec.shape for spec in model.inputs]
    dtypes = [dtype if spec.dtype in FLOAT_DTYPES else spec.dtype for spec in model.inputs]
    examples = [tuple(extent_in_range(model.program, spec.symbols[dim]) if extent < 0 else extent
                      for dim, extent in enumerate(spec.shape)) for spec in model.inputs]
    with torch_errors(model.path, f"could not convert the model to {dtype}"), quiet_torch():
        module = model.program.module().to(getattr(torch, dtype))
        program = export_program(module, sample_inputs(examples, dtypes), shapes)
    return LoadedModel(path=model.path, kind=model.kind, program=program,
                       inputs=input_specs(model.path, program), source_sha256="")


def extent_in_range(program, symbol: str, wanted: int = EXAMPLE_EXTENT) -> int:
    """`wanted`, moved into the range the program allows for the dynamic size `symbol`."""
    # ONNX models (a ModelProto) have no range constraints.
    for variable, bounds in getattr(program, "range_constraints", {}).items():
        if str(variable) == symbol:
            lower, upper = _finite(bounds.lower), _finite(bounds.upper)
            if lower is not None:
                wanted = max(wanted, lower)
            return min(wanted, upper) if upper is not None else wanted
    return wanted


def _finite(bound) -> int | None:
    """A range bound as an int, None for an infinite one (torch's int_oo claims to be
    finite to sympy, but has no integer value)."""
    try:
        return int(bound)
    except (TypeError, ValueError, AttributeError, OverflowError):
        return None


def user_placeholders(program) -> list:
    user_inputs = set(program.graph_signature.user_inputs)
    return [node for node in program.graph.nodes
            if node.op == "placeholder" and node.name in user_inputs]


def node_shape(node) -> tuple[int, ...] | None:
    import torch

    value = node.meta.get("val")
    if not isinstance(value, torch.Tensor):
        return None
    return tuple(int(d) if isinstance(d, int) else -1 for d in value.shape)


def _node_symbols(path: Path, index: int, node) -> tuple[str | None, ...]:
    """The size names of a placeholder's dynamic dimensions (None for static ones)."""
    import sympy

    symbols = []
    for dim in node.meta["val"].shape:
        if isinstance(dim, int):
            symbols.append(None)
            continue
        expression = dim.node.expr
        if not isinstance(expression, sympy.Symbol):
            raise ExportError(f"{path}: input {index} ('{node.name}') has a dimension of size "
                              f"{expression}; dynamic input sizes must be plain sizes, not "
                              "expressions of others", hint="use one torch.export.Dim per "
                              "dimension")
        symbols.append(str(expression))
    return tuple(symbols)


def input_specs(path: Path, program) -> list[TensorSpec]:
    import torch

    specs = []
    for index, node in enumerate(user_placeholders(program)):
        value = node.meta.get("val")
        if not isinstance(value, torch.Tensor):
            raise ExportError(f"{path}: input {index} ('{node.name}') is not a tensor "
                              f"({type(value).__name__}); only tensor inputs are supported")
        dtype = str(value.dtype).removeprefix("torch.")
        if dtype not in DTYPE_NAMES:
            raise ExportError(f"{path}: input {index} ('{node.name}') has dtype {dtype}, which "
                              "is not supported", hint="supported: " + ", ".join(DTYPE_NAMES))
        shape = node_shape(node)
        symbols = _node_symbols(path, index, node) if -1 in shape else ()
        specs.append(TensorSpec(name=node.name, cname=f"input{index}", dtype=dtype, shape=shape,
                                symbols=symbols))
    return specs


def sample_inputs(shapes: list[tuple[int, ...]], dtypes: list[str] | None = None) -> tuple:
    import torch

    generator = torch.Generator().manual_seed(0)
    dtypes = dtypes or ["float32"] * len(shapes)
    return tuple(torch.randn([d if d > 0 else EXAMPLE_EXTENT for d in shape],
                             generator=generator).to(getattr(torch, dtype))
                 for shape, dtype in zip(shapes, dtypes))


def format_shape(shape: tuple[int, ...]) -> str:
    return "x".join("?" if d == -1 else str(d) for d in shape) or "(scalar)"


@contextlib.contextmanager
def torch_errors(path: Path, doing: str) -> Iterator[None]:
    """Torch's own exceptions about a user's file become one-line ExportErrors."""
    try:
        yield
    except ExportError:
        raise
    except Exception as exc:  # torch raises many types (RuntimeError, ValueError, ...)
        text = str(exc).strip()
        first = text.splitlines()[0] if text else type(exc).__name__
        raise ExportError(f"{path}: {doing}: {first}") from exc


# lapis-export -v: torch's own logging is shown (else quiet_torch silences it).
SHOW_TORCH_LOGS = False


@contextlib.contextmanager
def quiet_torch() -> Iterator[None]:
    """Silence what torch.export logs while converting: warnings about its own guesses
    (Dim.AUTO specialisation), and the fake-tensor tracebacks it logs before raising the
    error that becomes our one line."""
    loggers = [logging.getLogger(name) for name in
               ("torch._export", "torch.export", "torch.fx.experimental.symbolic_shapes",
                "torch._subclasses.fake_tensor", "torch._dynamo", "torch._export.converter")]
    levels = [logger.level for logger in loggers]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for logger in loggers:
            logger.setLevel(logging.ERROR if SHOW_TORCH_LOGS else logging.CRITICAL)
        try:
            yield
        finally:
            for logger, level in zip(loggers, levels):
                logger.setLevel(level)
