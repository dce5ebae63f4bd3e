"""Which kind of model file a path holds, from its bytes: TorchScript archive, torch.export
program, ONNX model, or something refused with a reason (a pickle, an AOTInductor package,
an unknown format). Nothing here unpickles or imports the file.
"""
from __future__ import annotations

import hashlib
import re
import zipfile
from pathlib import Path

from ..errors import ExportError
from .torch_program import SELF_CONTAINED_HINT


def read_head(path: Path) -> bytes:
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



def detect_format(path: Path, head: bytes) -> str:
    """'torchscript' | 'torch.export' | 'onnx', from the bytes; refuses pickles and the unknown."""
    if head.startswith(b"PK\x03\x04"):
        return _zip_format(path)
    if head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        # A pickle PROTO opcode: torch.save's legacy (non-zip) format.
        raise ExportError(f"{path}: is a pickle (legacy torch.save format); loading it would "
                          "run arbitrary code, so it is refused", hint=SELF_CONTAINED_HINT)
    if _looks_like_onnx(head):
        return "onnx"
    known = (".pt", ".pt2", ".pth", ".ts", ".onnx")
    extension = (f"; its extension {path.suffix} is none of {', '.join(known)}"
                 if path.suffix.lower() not in known else "")
    raise ExportError(f"{path}: not a recognised model file (expected a TorchScript archive, a "
                      f"torch.export .pt2 file or an ONNX model{extension})",
                      hint=SELF_CONTAINED_HINT)


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
                          "run arbitrary code, so it is refused", hint=SELF_CONTAINED_HINT)
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


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()

