"""MLIR types -> C++ spellings for the Kokkos emitter (scalars, Views, literals)."""
from __future__ import annotations

import math

import numpy as np

from ..errors import ExportError


def scalar(mlir_type) -> str:
    """C++ type of an MLIR scalar type (f32 -> float, index -> int64_t, i1 -> bool)."""
    from torch_mlir import ir

    if isinstance(mlir_type, ir.F32Type):
        return "float"
    if isinstance(mlir_type, ir.F64Type):
        return "double"
    if isinstance(mlir_type, ir.BF16Type):   # CUDA --precision bf16 (lowering/linear.py)
        return "lapis::bfloat16"
    if isinstance(mlir_type, ir.IndexType):
        return "int64_t"
    if isinstance(mlir_type, ir.IntegerType):
        width = ir.IntegerType(mlir_type).width
        if width == 1:
            return "bool"
        if width in (8, 16, 32, 64):
            return f"int{width}_t"
    raise ExportError(f"element type {mlir_type} is not supported by the Kokkos emitter",
                      hint="float32, float64 and 1/8/16/32/64-bit integers are supported")


def numpy_dtype(mlir_type) -> np.dtype:
    return np.dtype({"float": np.float32, "double": np.float64, "int64_t": np.int64,
                     "int32_t": np.int32, "int16_t": np.int16, "int8_t": np.int8,
                     "bool": np.bool_}[scalar(mlir_type)])


def unsigned(cxx_type: str) -> str:
    return {"int64_t": "uint64_t", "int32_t": "uint32_t", "int16_t": "uint16_t",
            "int8_t": "uint8_t", "bool": "bool"}[cxx_type]


def float_literal(value: float, cxx_type: str) -> str:
    """A literal that round-trips exactly: 1e-05f, 16.0f, lapis::infinity<float>()."""
    if math.isnan(value):
        return f"lapis::quiet_nan<{cxx_type}>()"
    if math.isinf(value):
        return f"{'-' if value < 0 else ''}lapis::infinity<{cxx_type}>()"
    if cxx_type == "float":
        text = _shortest_float32(value)
        return text + "f"
    text = repr(float(value))
    return text if any(c in text for c in ".en") else text + ".0"


def _shortest_float32(value: float) -> str:
    f = np.float32(value)
    text = np.format_float_scientific(f, unique=True, trim="-")
    positional = np.format_float_positional(f, unique=True, trim="-")
    text = positional if len(positional) <= len(text) else text
    if not any(c in text for c in ".e"):
        text += ".0"
    return text


def int_literal(value: int, cxx_type: str) -> str:
    if cxx_type == "bool":
        return "true" if value & 1 else "false"
    if cxx_type == "int64_t" and not -2**31 <= value < 2**31:
        return f"int64_t({value}LL)" if value != -2**63 else "INT64_MIN"
    return str(value) if cxx_type in ("int64_t", "int32_t") else f"{cxx_type}({value})"


def scalar_bytes(cxx_type: str) -> int:
    """Bytes of one element of a C++ scalar type that scalar() spells."""
    return {"float": 4, "double": 8, "lapis::bfloat16": 2, "int64_t": 8, "int32_t": 4, "int16_t": 2, "int8_t": 1,
            "uint64_t": 8, "uint32_t": 4, "uint16_t": 2, "uint8_t": 1, "bool": 1}[cxx_type]
