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
    from torch._export.converter import TS2EPConverter

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
    sample = sample_inputs(input_shapes, _traced_input_dtypes(path, len(arguments)))
    with torch_errors(path, "could not convert TorchScript to torch.export"), quiet_torch():
        program = TS2EPConverter(script, sample).convert()
        # The converter marks every dimension Dim.AUTO; re-export to pin the given shapes
        # (dynamic ones stay dynamic).
        program = export_program(program.module(), sample, input_shapes)
    return LoadedModel(path=path, kind="torchscript", program=program,
                       inputs=input_specs(path, program), source_sha256="")


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

