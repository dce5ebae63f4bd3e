"""Writer (and, for tests, reader) of the weight blob described in FORMAT.md.

The C++ reader is kokkos_support/lapis/weight_blob.hpp; the two must agree on this layout.
"""
from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

MAGIC = b"LAPISWB1"
HEADER = struct.Struct("<8sII")                  # magic, count, reserved
ENTRY = struct.Struct("<QQII6Q56s")              # offset, nbytes, dtype, rank, dims, name
ALIGNMENT = 64
MAX_RANK = 6
DTYPE_CODES = {np.dtype(np.float32): 0, np.dtype(np.float64): 1, np.dtype(np.int64): 2,
               np.dtype(np.int32): 3, np.dtype(np.bool_): 4, np.dtype(np.uint8): 4,
               np.dtype(np.int8): 5, np.dtype(np.float16): 6}
CODE_DTYPES = {0: np.float32, 1: np.float64, 2: np.int64, 3: np.int32, 4: np.bool_, 5: np.int8,
               6: np.float16}


def _aligned(offset: int) -> int:
    return -(-offset // ALIGNMENT) * ALIGNMENT


def write(path: Path, weights) -> int:
    """Write `weights` (objects with .name and .array) to `path`; returns the bytes written."""
    arrays = [np.ascontiguousarray(w.array) for w in weights]
    offset = _aligned(HEADER.size + ENTRY.size * len(arrays))
    entries, data = [], []
    for weight, array in zip(weights, arrays):
        if array.dtype not in DTYPE_CODES:
            raise ValueError(f"weight '{weight.name}': dtype {array.dtype} has no blob code")
        if array.ndim > MAX_RANK:
            raise ValueError(f"weight '{weight.name}': rank {array.ndim} > {MAX_RANK}")
        dims = list(array.shape) + [0] * (MAX_RANK - array.ndim)
        name = weight.name.encode()[:55]
        entries.append(ENTRY.pack(offset, array.nbytes, DTYPE_CODES[array.dtype], array.ndim,
                                  *dims, name))
        data.append((offset, array.astype(array.dtype.newbyteorder("<"), copy=False).tobytes()))
        offset = _aligned(offset + array.nbytes)
    blob = bytearray(offset)
    blob[:HEADER.size] = HEADER.pack(MAGIC, len(arrays), 0)
    for index, entry in enumerate(entries):
        start = HEADER.size + index * ENTRY.size
        blob[start:start + ENTRY.size] = entry
    for start, payload in data:
        blob[start:start + len(payload)] = payload
    Path(path).write_bytes(bytes(blob))
    return len(blob)


def read(path: Path) -> list[tuple[str, np.ndarray]]:
    """The (name, array) pairs stored in a blob."""
    raw = Path(path).read_bytes()
    magic, count, _ = HEADER.unpack_from(raw, 0)
    if magic != MAGIC:
        raise ValueError(f"{path}: not a lapis weight blob")
    tensors = []
    for index in range(count):
        offset, nbytes, code, rank, *rest = ENTRY.unpack_from(raw, HEADER.size + index * ENTRY.size)
        dims, name = rest[:MAX_RANK][:rank], rest[MAX_RANK]
        array = np.frombuffer(raw, dtype=CODE_DTYPES[code], count=nbytes // np.dtype(
            CODE_DTYPES[code]).itemsize, offset=offset).reshape(dims)
        tensors.append((name.rstrip(b"\0").decode(), array))
    return tensors
