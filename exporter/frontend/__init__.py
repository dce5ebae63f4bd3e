"""Frontend stage: read a model file, say what it is, and hand on a program to import.

First stage of the pipeline (frontend -> importer -> lowering -> emit -> package -> verify).
The format comes from the file's content, never from unpickling it (detect.py); each format
has its loader (torch_files.py, onnx_model.py, function.py for `file.py:function`), and every
loader returns the program as the file has it, not decomposed or rewritten: that is the
importer's work.
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from ..errors import ExportError
from ..handoff import LoadedModel
from . import detect, function, onnx_model, torch_files
from .rows import one_row
from .torch_program import (DTYPE_NAMES, EXAMPLE_EXTENT, FLOAT_DTYPES, SHAPE_HINT,
                            convert_dtype, extent_in_range)

__all__ = ["load", "one_row", "parse_input_spec", "parse_input_shape", "extent_in_range", "DTYPE_NAMES",
           "FLOAT_DTYPES", "EXAMPLE_EXTENT"]


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
        raise ExportError(f"--input-shape '{text}': empty shape", hint=SHAPE_HINT)
    dims = []
    for part in parts:
        if part.isdigit() and int(part) > 0:
            dims.append(int(part))
        elif len(part) == 1 and part.isascii() and part.isalpha():   # "N": a dynamic dimension
            dims.append(-1)
        else:
            raise ExportError(f"--input-shape '{text}': '{part}' is not a positive size "
                              "or a one-letter dimension name", hint=SHAPE_HINT)
    return tuple(dims)


def load(path: Path, input_shapes: list[tuple[int, ...]] | None = None,
         dtype: str | None = None, input_dtypes: list[str | None] | None = None) -> LoadedModel:
    """Load `path` (TorchScript archive, torch.export file, ONNX model, or `file.py:function`,
    see function.py). A -1 in `input_shapes` makes that dimension dynamic; `dtype`
    ("float32" | "float64") converts the model's floating-point weights, inputs and arithmetic
    to that type (PyTorch models); `input_dtypes` (from `--input-shape 1001:int64`) are the
    functions' input dtypes."""
    if dtype is not None and dtype not in FLOAT_DTYPES:
        raise ExportError(f"--dtype {dtype}: not a floating-point type the exporter converts to",
                          hint="choose one of " + ", ".join(FLOAT_DTYPES))
    target = function.split_target(str(path))
    if target is not None:
        source, function_name = target
        model = function.load(source, function_name, input_shapes,
                              list(input_dtypes or [None] * len(input_shapes or [])), dtype)
        model.source_sha256 = detect.sha256(source)
        return model
    path = Path(path)
    if any(input_dtypes or ()):
        raise ExportError(f"{path}: a dtype in --input-shape is for Python functions; a "
                          "model's input dtypes are its own", hint="drop the ':DTYPE' part")
    head = detect.read_head(path)
    kind = detect.detect_format(path, head)
    model = _LOADERS[kind](path, input_shapes)
    if dtype is not None:
        model = convert_dtype(model, dtype)
    model.source_sha256 = detect.sha256(path)
    return model


_LOADERS: dict[str, Callable[[Path, list[tuple[int, ...]] | None], LoadedModel]] = {
    "torchscript": torch_files.load_torchscript,
    "torch.export": torch_files.load_exported,
    "onnx": onnx_model.load,
}


