"""Weight blob writer (and, for tests, reader): the package stage writes one per model; the
C++ reader kokkos_support/lapis/weight_blob.hpp loads it in initialize(). Layout: FORMAT.md.
"""
from __future__ import annotations

import struct
from pathlib import Path
from typing import Sequence

import numpy as np




class BlobError(ValueError):
    """A tensor the blob cannot hold; the package stage reports it as the user's error."""

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message, self.hint = message, hint


MAGIC = b"LAPISWB1"
HEADER = struct.Struct("<8sII")          # magic, count, reserved
ENTRY = struct.Struct("<QQII6Q56s")      # offset, nbytes, dtype code, rank, dims[6], name
ALIGNMENT = 64
MAX_RANK = 6
NAME_BYTES = 55                          # the 56th byte stays NUL, for C readers

# (numpy kind, item size) -> dtype code; bool and uint8 share a code (one byte, 0 or 1).
# NumPy has no bfloat16: bfloat16 tensors are uint16 arrays of their bits (code 7).
DTYPE_CODES = {("f", 4): 0, ("f", 8): 1, ("i", 8): 2, ("i", 4): 3, ("b", 1): 4, ("u", 1): 4,
               ("i", 1): 5, ("f", 2): 6, ("u", 2): 7}
CODE_DTYPES = {0: "<f4", 1: "<f8", 2: "<i8", 3: "<i4", 4: "|b1", 5: "|i1", 6: "<f2",
               7: "<u2"}


def write(path: Path, weights: Sequence) -> int:
    """Write `weights` (exporter.handoff.Weight: .name, .array) to `path` in blob order;
    returns the number of bytes written. The same weights always give the same bytes."""
    blob = bytearray(HEADER.pack(MAGIC, len(weights), 0))
    blob += bytes(ENTRY.size * len(weights))
    for index, weight in enumerate(weights):
        array = _little_endian(weight.name, np.asarray(weight.array))
        blob += bytes(_padding(len(blob)))
        ENTRY.pack_into(blob, HEADER.size + index * ENTRY.size, len(blob), array.nbytes,
                        DTYPE_CODES[array.dtype.kind, array.dtype.itemsize], array.ndim,
                        *array.shape, *[0] * (MAX_RANK - array.ndim),
                        weight.name.encode()[:NAME_BYTES])
        blob += array.tobytes(order="C")
    blob += bytes(_padding(len(blob)))
    Path(path).write_bytes(blob)
    return len(blob)


def read(path: Path) -> list[tuple[str, np.ndarray]]:
    """The (name, array) pairs stored in the blob at `path`, in blob order."""
    raw = Path(path).read_bytes()
    magic, count, _ = HEADER.unpack_from(raw, 0)
    if magic != MAGIC:
        raise ValueError(f"{path}: not a lapis weight blob (magic {magic!r})")
    tensors = []
    for index in range(count):
        offset, nbytes, code, rank, *dims, name = ENTRY.unpack_from(
            raw, HEADER.size + index * ENTRY.size)
        dtype = np.dtype(CODE_DTYPES[code])
        array = np.frombuffer(raw, dtype=dtype, count=nbytes // dtype.itemsize, offset=offset)
        tensors.append((name.rstrip(b"\0").decode(errors="replace"),
                        array.reshape(dims[:rank])))
    return tensors


def _padding(size: int) -> int:
    return -size % ALIGNMENT


def _little_endian(name: str, array: np.ndarray) -> np.ndarray:
    if (array.dtype.kind, array.dtype.itemsize) not in DTYPE_CODES:
        raise BlobError(f"weight '{name}' has element type {array.dtype}, which the weight "
                        "blob cannot hold",
                        hint="supported: float16/32/64, bfloat16 (as uint16 bits), int8/32/64, "
                             "uint8, bool")
    if array.ndim > MAX_RANK:
        raise BlobError(f"weight '{name}' has rank {array.ndim}; Kokkos Views (and the "
                        f"weight blob) go up to rank {MAX_RANK}")
    return array.astype(array.dtype.newbyteorder("<"), copy=False)   # tobytes() orders it
