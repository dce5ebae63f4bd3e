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

_SELF_CONTAINED_HINT = (
    "save a self-contained file instead: "
    "torch.jit.save(torch.jit.trace(model, example), 'model.pt') or "
    "torch.export.save(torch.export.export(model, (example,)), 'model.pt2')")
_SHAPE_HINT = "e.g. --input-shape 1x3x224x224, one per model input, in order"


def parse_input_shape(text: str) -> tuple[int, ...]:
    """"1x3x224x224" -> (1, 3, 224, 224); a letter such as "N" marks a dynamic dimension (-1)."""
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


def load(path: Path, input_shapes: list[tuple[int, ...]] | None = None) -> LoadedModel:
    """Load `path` (TorchScript archive, torch.export file or ONNX model)."""
    path = Path(path)
    head = _read_head(path)
    kind = _detect_format(path, head)
    if input_shapes and any(-1 in shape for shape in input_shapes):
        raise ExportError("--input-shape: dynamic dimensions are not supported yet",
                          hint="give every dimension of --input-shape as a number")
    model = _LOADERS[kind](path, input_shapes)
    model.source_sha256 = _sha256(path)
    return model


# --- format detection --------------------------------------------------------------------------

def _read_head(path: Path) -> bytes:
    if not path.exists():
        raise ExportError(f"{path}: no such file")
    if path.is_dir():
        raise ExportError(f"{path}: is a directory, not a model file")
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
    raise ExportError(f"{path}: not a recognised model file (expected a TorchScript archive, a "
                      "torch.export .pt2 file or an ONNX model)")


def _zip_format(path: Path) -> str:
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError) as exc:
        raise ExportError(f"{path}: damaged or truncated zip archive ({exc})") from exc
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
    sample = _sample_inputs(input_shapes)
    with _torch_errors(path, "could not convert TorchScript to torch.export"), _quiet_torch():
        program = TS2EPConverter(script, sample).convert()
        # The converter marks every dimension Dim.AUTO; re-export to pin the given shapes.
        program = torch.export.export(program.module(), sample, strict=False)
    return LoadedModel(path=path, kind="torchscript", program=program,
                       inputs=_input_specs(path, program), source_sha256="")


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
                    r != -1 and r != g for r, g in zip(recorded, given))):
                raise ExportError(f"{path}: --input-shape {_format_shape(given)} for input "
                                  f"{index} ('{node.name}') disagrees with the recorded shape "
                                  f"{_format_shape(recorded)}")
    specs = _input_specs(path, program, allow_dynamic=input_shapes is not None)
    if input_shapes is not None and any(-1 in spec.shape for spec in specs):
        sample = _sample_inputs(input_shapes, [spec.dtype for spec in specs])
        with _torch_errors(path, "could not specialise the program to --input-shape"), \
                _quiet_torch():
            program = torch.export.export(program.module(), sample, strict=False)
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


def _input_specs(path: Path, program, allow_dynamic: bool = False) -> list[TensorSpec]:
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
        if -1 in shape and not allow_dynamic:
            raise ExportError(f"{path}: dynamic dimensions are not supported yet (input "
                              f"{index} '{node.name}' has shape {_format_shape(shape)})",
                              hint="pass --input-shape with every dimension as a number")
        specs.append(TensorSpec(name=node.name, cname=f"input{index}", dtype=dtype, shape=shape))
    return specs


def _sample_inputs(shapes: list[tuple[int, ...]], dtypes: list[str] | None = None) -> tuple:
    import torch

    generator = torch.Generator().manual_seed(0)
    dtypes = dtypes or ["float32"] * len(shapes)
    return tuple(torch.randn(shape, generator=generator).to(getattr(torch, dtype))
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
