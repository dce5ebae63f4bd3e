"""Frontend stage: read a model file, say what it is, and hand on a torch.export program.

First stage of the pipeline (frontend -> importer -> lowering -> emit -> package). The format
comes from the file's content, never from unpickling it; every loader returns a static-shape
ExportedProgram (decompositions are left to the importer) and the input specs it implies.
"""
from __future__ import annotations

import contextlib
import hashlib
import logging
import re
import warnings
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path

from .errors import ExportError
from .handoff import LoadedModel, TensorSpec

DTYPE_NAMES = ("float32", "float64", "int64", "int32", "bool")
FLOAT_DTYPES = ("float32", "float64")
# Size of a dynamic dimension in the example inputs torch.export traces with: not 0 or 1, which
# it would specialise on.
_EXAMPLE_EXTENT = 4

_SELF_CONTAINED_HINT = (
    "save a self-contained file instead: "
    "torch.jit.save(torch.jit.trace(model, example), 'model.pt') or "
    "torch.export.save(torch.export.export(model, (example,)), 'model.pt2')")
_SHAPE_HINT = ("e.g. --input-shape 1x3x224x224, one per model input, in order (scalar for a 0-d "
               "input; 1001:int64 with a dtype, for Python functions)")


def parse_input_spec(text: str) -> tuple[tuple[int, ...], str | None]:
    """"1001:int64" -> ((1001,), "int64"); "scalar:float64" -> ((), "float64"); a shape
    without ":DTYPE" -> (shape, None), the model's (or for functions float32)."""
    shape_text, colon, dtype = text.strip().partition(":")
    if not colon:
        return parse_input_shape(shape_text), None
    if dtype not in DTYPE_NAMES:
        raise ExportError(f"--input-shape '{text}': '{dtype}' is not a dtype",
                          hint="the part after ':' is one of " + ", ".join(DTYPE_NAMES))
    return parse_input_shape(shape_text), dtype


def parse_input_shape(text: str) -> tuple[int, ...]:
    """"1x3x224x224" -> (1, 3, 224, 224); a letter such as "N" marks a dynamic dimension (-1);
    "scalar" is a 0-d input, ()."""
    if text.strip().lower() == "scalar":
        return ()
    parts = text.strip().lower().split("x") if text.strip() else []  # "1X3" is fine too
    if not parts:
        raise ExportError(f"--input-shape '{text}': empty shape", hint=_SHAPE_HINT)
    dims = []
    for part in parts:
        if part.isdigit() and int(part) > 0:
            dims.append(int(part))
        elif len(part) == 1 and part.isascii() and part.isalpha():   # "N": a dynamic dimension
            dims.append(-1)
        else:
            raise ExportError(f"--input-shape '{text}': '{part}' is not a positive size "
                              "or a one-letter dimension name", hint=_SHAPE_HINT)
    return tuple(dims)


def load(path: Path, input_shapes: list[tuple[int, ...]] | None = None,
         dtype: str | None = None, input_dtypes: list[str | None] | None = None) -> LoadedModel:
    """Load `path` (TorchScript archive, torch.export file, ONNX model, or `file.py:function`,
    see function_frontend.py). A -1 in `input_shapes` makes that dimension dynamic; `dtype`
    ("float32" | "float64") converts the model's floating-point weights, inputs and arithmetic
    to that type (PyTorch models); `input_dtypes` (from `--input-shape 1001:int64`) are the
    functions' input dtypes."""
    from . import function_frontend

    if dtype is not None and dtype not in FLOAT_DTYPES:
        raise ExportError(f"--dtype {dtype}: not a floating-point type the exporter converts to",
                          hint="choose one of " + ", ".join(FLOAT_DTYPES))
    target = function_frontend.split_target(str(path))
    if target is not None:
        source, function_name = target
        model = function_frontend.load(source, function_name, input_shapes,
                                       list(input_dtypes or [None] * len(input_shapes or [])),
                                       dtype)
        model.source_sha256 = _sha256(source)
        return model
    path = Path(path)
    if any(input_dtypes or ()):
        raise ExportError(f"{path}: a dtype in --input-shape is for Python functions; a "
                          "model's input dtypes are its own", hint="drop the ':DTYPE' part")
    head = _read_head(path)
    kind = _detect_format(path, head)
    model = _LOADERS[kind](path, input_shapes)
    if dtype is not None:
        model = _convert_dtype(model, dtype)
    model.source_sha256 = _sha256(path)
    return model


# --- format detection --------------------------------------------------------------------------

def _read_head(path: Path) -> bytes:
    if not path.exists():
        raise ExportError(f"{path}: no such file")
    if path.is_dir():
        raise ExportError(f"{path}: is a directory, not a model file")
    if not path.is_file():   # a FIFO or a device would block or never end
        raise ExportError(f"{path}: is not a regular file (a pipe or a device?)",
                          hint="save the model to a file first")
    try:
        with path.open("rb") as file:
            head = file.read(64)
    except OSError as exc:
        raise ExportError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    if not head:
        raise ExportError(f"{path}: the file is empty")
    return head


def _detect_format(path: Path, head: bytes) -> str:
    """'torchscript' | 'torch.export' | 'onnx', from the bytes; refuses pickles and the unknown."""
    if head.startswith(b"PK\x03\x04"):
        return _zip_format(path)
    if head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        # A pickle PROTO opcode: torch.save's legacy (non-zip) format.
        raise ExportError(f"{path}: is a pickle (legacy torch.save format); loading it would "
                          "run arbitrary code, so it is refused", hint=_SELF_CONTAINED_HINT)
    if _looks_like_onnx(head):
        return "onnx"
    known = (".pt", ".pt2", ".pth", ".ts", ".onnx")
    extension = (f"; its extension {path.suffix} is none of {', '.join(known)}"
                 if path.suffix.lower() not in known else "")
    raise ExportError(f"{path}: not a recognised model file (expected a TorchScript archive, a "
                      f"torch.export .pt2 file or an ONNX model{extension})",
                      hint=_SELF_CONTAINED_HINT)


def _zip_format(path: Path) -> str:
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:
        # ValueError: e.g. a member name that is not valid UTF-8 in a damaged directory.
        detail = " ".join(str(exc).split()) or type(exc).__name__
        raise ExportError(f"{path}: damaged or truncated zip archive ({detail})") from exc
    # Members sit under one top-level folder ("model/code/...", "model/data.pkl").
    inner = {name.split("/", 1)[1] for name in names if "/" in name}
    if any(name.startswith(("aotinductor/", "data/aotinductor/")) for name in inner):
        raise ExportError(f"{path}: is an AOTInductor-compiled package, not an exported program",
                          hint="save the program itself: torch.export.save(program, 'model.pt2')")
    if "constants.pkl" in inner and any(name.startswith("code/") for name in inner):
        return "torchscript"
    if "archive_format" in inner or any(re.fullmatch(r"models/[^/]+\.json", name)
                                        or name.startswith("serialized_exported_program")
                                        for name in inner):
        return "torch.export"
    if "data.pkl" in inner:
        what = _pickled_what(path, names)
        raise ExportError(f"{path}: is a pickled {what} saved with torch.save; loading it would "
                          "run arbitrary code, so it is refused", hint=_SELF_CONTAINED_HINT)
    raise ExportError(f"{path}: is a zip archive but not a TorchScript or torch.export file")


def _pickled_what(path: Path, names: list[str]) -> str:
    """What torch.save pickled, from the pickle's first opcode, without executing anything:
    a state_dict starts with an (Ordered)dict, a whole model with its class."""
    import pickletools

    member = next(name for name in names if name.endswith("/data.pkl"))
    try:
        with zipfile.ZipFile(path) as archive:
            ops = pickletools.genops(archive.read(member))
            op, arg, _ = next(op for op in ops if op[0].name not in ("PROTO", "FRAME"))
    except Exception:  # a malformed pickle is still a pickle; the message stays generic
        return "object"
    if op.name in ("EMPTY_DICT", "DICT") or arg == "collections OrderedDict":
        return "state_dict (weights without the model's code)"
    if op.name == "GLOBAL" and arg:
        return f"model (class {str(arg).replace(' ', '.')})"
    return "object"


def _looks_like_onnx(head: bytes) -> bool:
    """An ONNX ModelProto serialises ir_version (field 1, varint) first, then a few known
    fields; check the first of them with a minimal protobuf wire reader."""
    model_fields = {1: 0, 2: 2, 3: 2, 4: 2, 5: 0, 6: 2, 7: 2, 8: 2, 14: 2, 20: 2, 25: 2}
    position, seen = 0, []
    while position < len(head) and len(seen) < 3:
        tag, position = _varint(head, position)
        if tag is None or model_fields.get(tag >> 3) != tag & 7:
            return False
        value, position = _varint(head, position)
        if value is None:
            return False
        seen.append(tag >> 3)
        if tag & 7 == 2:
            position += value
    return bool(seen) and seen[0] == 1


def _varint(data: bytes, position: int) -> tuple[int | None, int]:
    value = shift = 0
    while position < len(data) and shift < 64:
        byte = data[position]
        position += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, position
        shift += 7
    return None, position


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# --- one loader per format ---------------------------------------------------------------------

def _load_torchscript(path: Path, input_shapes: list[tuple[int, ...]] | None) -> LoadedModel:
    import torch
    from torch._export.converter import TS2EPConverter

    if not input_shapes:
        raise ExportError(f"{path}: TorchScript files do not record input shapes; pass "
                          "--input-shape ... once per input", hint=_SHAPE_HINT)
    with _torch_errors(path, "could not load the TorchScript archive"), _quiet_torch():
        script = torch.jit.load(str(path), map_location="cpu")
    script.eval()
    arguments = script.forward.schema.arguments[1:]   # [0] is self
    if len(arguments) != len(input_shapes):
        raise ExportError(f"{path}: forward() takes {len(arguments)} input(s) but "
                          f"{len(input_shapes)} --input-shape given", hint=_SHAPE_HINT)
    for argument in arguments:
        if str(argument.type) != "Tensor":
            raise ExportError(f"{path}: forward() input '{argument.name}' has type "
                              f"{argument.type}; only tensor inputs are supported")
    sample = _sample_inputs(input_shapes, _traced_input_dtypes(path, len(arguments)))
    with _torch_errors(path, "could not convert TorchScript to torch.export"), _quiet_torch():
        program = TS2EPConverter(script, sample).convert()
        # The converter marks every dimension Dim.AUTO; re-export to pin the given shapes
        # (dynamic ones stay dynamic).
        program = _export(program.module(), sample, input_shapes)
    return LoadedModel(path=path, kind="torchscript", program=program,
                       inputs=_input_specs(path, program), source_sha256="")


# Storage classes in a pickle -> the dtype of the tensor they hold.
_STORAGE_DTYPES = {"torch FloatStorage": "float32", "torch DoubleStorage": "float64",
                   "torch LongStorage": "int64", "torch IntStorage": "int32",
                   "torch BoolStorage": "bool"}


def _traced_input_dtypes(path: Path, count: int) -> list[str] | None:
    """The dtypes of the example inputs torch.jit.trace stored in the archive
    (traced_inputs.pkl: each tensor's storage class, its data left out), read from the pickle's
    opcodes without executing it. None when the archive has none (torch.jit.script) or they
    are not `count` tensors of supported dtypes; the inputs are then taken as float32."""
    import pickletools

    try:
        with zipfile.ZipFile(path) as archive:
            member = next((name for name in archive.namelist()
                           if name.endswith("/traced_inputs.pkl")), None)
            if member is None:
                return None
            data = archive.read(member)
        memo: dict[int, object] = {}
        values: list[object] = []   # the strings and globals pushed, in order
        for op, argument, _ in pickletools.genops(data):
            if op.name in ("GLOBAL", "BINUNICODE", "SHORT_BINUNICODE", "UNICODE"):
                values.append(argument)
            elif op.name in ("BINPUT", "LONG_BINPUT", "PUT"):
                memo[argument] = values[-1] if values else None
            elif op.name in ("BINGET", "LONG_BINGET", "GET"):
                values.append(memo.get(argument))
            else:
                values.append(None)
    except Exception:  # not a pickle we can read: no dtypes, as for a scripted module
        return None
    # A storage's persistent id is ('storage', <storage class>, key, location, size).
    dtypes = [_STORAGE_DTYPES.get(kind) for tag, kind in zip(values, values[1:])
              if tag == "storage"]
    if len(dtypes) != count or None in dtypes:
        return None
    return dtypes


def _load_exported(path: Path, input_shapes: list[tuple[int, ...]] | None) -> LoadedModel:
    import torch

    with _torch_errors(path, "could not load the torch.export program"), _quiet_torch():
        program = torch.export.load(str(path))
    placeholders = _user_placeholders(program)
    if input_shapes is not None:
        if len(input_shapes) != len(placeholders):
            raise ExportError(f"{path}: the program takes {len(placeholders)} input(s) but "
                              f"{len(input_shapes)} --input-shape given", hint=_SHAPE_HINT)
        for index, (node, given) in enumerate(zip(placeholders, input_shapes)):
            recorded = _node_shape(node)
            if recorded is not None and (len(recorded) != len(given) or any(
                    r != -1 and g != -1 and r != g for r, g in zip(recorded, given))):
                raise ExportError(f"{path}: --input-shape {_format_shape(given)} for input "
                                  f"{index} ('{node.name}') disagrees with the recorded shape "
                                  f"{_format_shape(recorded)}")
            fixed = [d for d, (r, g) in enumerate(zip(recorded or (), given))
                     if r != -1 and g == -1]
            if fixed:
                raise ExportError(f"{path}: --input-shape {_format_shape(given)} for input "
                                  f"{index} ('{node.name}') makes a dimension dynamic that the "
                                  f"program fixed ({_format_shape(recorded)})",
                                  hint="export it with a torch.export.Dim for that dimension, "
                                  f"e.g. dynamic_shapes=({{{fixed[0]}: torch.export.Dim('n')}},)")
    specs = _input_specs(path, program)
    if input_shapes is not None and [spec.shape for spec in specs] != list(input_shapes):
        # Pin the dimensions given as numbers, free those given as letters.
        sample = _sample_inputs(input_shapes, [spec.dtype for spec in specs])
        with _torch_errors(path, "could not re-export the program for --input-shape"), \
                _quiet_torch():
            program = _export(program.module(), sample, input_shapes)
        specs = _input_specs(path, program)
    return LoadedModel(path=path, kind="torch.export", program=program, inputs=specs,
                       source_sha256="")


def _load_onnx(path: Path, input_shapes: list[tuple[int, ...]] | None) -> LoadedModel:
    from . import onnx_frontend
    return onnx_frontend.load(path, input_shapes)


_LOADERS: dict[str, Callable[[Path, list[tuple[int, ...]] | None], LoadedModel]] = {
    "torchscript": _load_torchscript,
    "torch.export": _load_exported,
    "onnx": _load_onnx,
}


# --- helpers -----------------------------------------------------------------------------------

def _export(module, sample: tuple, shapes: list[tuple[int, ...]]):
    """torch.export of `module` on `sample`, with the dimensions that are -1 in `shapes`
    dynamic (Dim.DYNAMIC: torch.export finds which of them must be equal)."""
    import torch

    dynamic = tuple({dim: torch.export.Dim.DYNAMIC for dim, extent in enumerate(shape)
                     if extent < 0} or None for shape in shapes)
    if all(entry is None for entry in dynamic):
        return torch.export.export(module, sample, strict=False)
    return torch.export.export(module, sample, dynamic_shapes=dynamic, strict=False)


def _convert_dtype(model: LoadedModel, dtype: str) -> LoadedModel:
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
    with _torch_errors(model.path, f"could not convert the model to {dtype}"), _quiet_torch():
        module = model.program.module().to(getattr(torch, dtype))
        program = _export(module, _sample_inputs(examples, dtypes), shapes)
    return LoadedModel(path=model.path, kind=model.kind, program=program,
                       inputs=_input_specs(model.path, program), source_sha256="")


def extent_in_range(program, symbol: str, wanted: int = _EXAMPLE_EXTENT) -> int:
    """`wanted`, moved into the range the program allows for the dynamic size `symbol`."""
    for variable, bounds in program.range_constraints.items():
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


def _user_placeholders(program) -> list:
    user_inputs = set(program.graph_signature.user_inputs)
    return [node for node in program.graph.nodes
            if node.op == "placeholder" and node.name in user_inputs]


def _node_shape(node) -> tuple[int, ...] | None:
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


def _input_specs(path: Path, program) -> list[TensorSpec]:
    import torch

    specs = []
    for index, node in enumerate(_user_placeholders(program)):
        value = node.meta.get("val")
        if not isinstance(value, torch.Tensor):
            raise ExportError(f"{path}: input {index} ('{node.name}') is not a tensor "
                              f"({type(value).__name__}); only tensor inputs are supported")
        dtype = str(value.dtype).removeprefix("torch.")
        if dtype not in DTYPE_NAMES:
            raise ExportError(f"{path}: input {index} ('{node.name}') has dtype {dtype}, which "
                              "is not supported", hint="supported: " + ", ".join(DTYPE_NAMES))
        shape = _node_shape(node)
        symbols = _node_symbols(path, index, node) if -1 in shape else ()
        specs.append(TensorSpec(name=node.name, cname=f"input{index}", dtype=dtype, shape=shape,
                                symbols=symbols))
    return specs


def _sample_inputs(shapes: list[tuple[int, ...]], dtypes: list[str] | None = None) -> tuple:
    import torch

    generator = torch.Generator().manual_seed(0)
    dtypes = dtypes or ["float32"] * len(shapes)
    return tuple(torch.randn([d if d > 0 else _EXAMPLE_EXTENT for d in shape],
                             generator=generator).to(getattr(torch, dtype))
                 for shape, dtype in zip(shapes, dtypes))


def _format_shape(shape: tuple[int, ...]) -> str:
    return "x".join("?" if d == -1 else str(d) for d in shape) or "(scalar)"


@contextlib.contextmanager
def _torch_errors(path: Path, doing: str) -> Iterator[None]:
    """Torch's own exceptions about a user's file become one-line ExportErrors."""
    try:
        yield
    except ExportError:
        raise
    except Exception as exc:  # torch raises many types (RuntimeError, ValueError, ...)
        text = str(exc).strip()
        first = text.splitlines()[0] if text else type(exc).__name__
        raise ExportError(f"{path}: {doing}: {first}") from exc


@contextlib.contextmanager
def _quiet_torch() -> Iterator[None]:
    """Silence the warnings torch.export logs while converting (they are about its own
    guesses, e.g. Dim.AUTO specialisation, not about the user's model)."""
    loggers = [logging.getLogger(name) for name in
               ("torch._export", "torch.export", "torch.fx.experimental.symbolic_shapes")]
    levels = [logger.level for logger in loggers]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for logger in loggers:
            logger.setLevel(logging.ERROR)
        try:
            yield
        finally:
            for logger, level in zip(loggers, levels):
                logger.setLevel(level)
