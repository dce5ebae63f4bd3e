"""The weight blob: Python writer/reader round trip and layout rules, and the C++ reader
(kokkos_support/tests, built against the project's Kokkos and fed a blob written here).
Set LAPIS_TEST_KOKKOS_ROOTS (os.pathsep-separated prefixes) to also test other Kokkos installs."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

from exporter.handoff import Weight
from weights import blob

REPO = Path(__file__).resolve().parents[1]
LONG_NAME = "layer" * 16


def cpp_test_weights() -> list[Weight]:
    """The tensors kokkos_support/tests/test_weight_blob.cpp expects, in its order."""
    arrays = [("conv.weight", (np.arange(48, dtype=np.float32) * 0.25 - 3).reshape(4, 3, 2, 2)),
              ("steps", np.arange(5, dtype=np.int64) * 10_000_000_000),
              ("mask", np.array([True, False, True])),
              ("scale", np.array(2.5, dtype=np.float64)),
              ("half", np.array([0.5, -1, 2, 1024], dtype=np.float16)),
              (LONG_NAME, np.array([1, 2], dtype=np.float32)),
              ("ints", np.array([[1, -2], [3, -4]], dtype=np.int32)),
              ("bytes", np.array([-1, 0, 127], dtype=np.int8))]
    return [Weight(name, name.replace(".", "_"), array) for name, array in arrays]


def test_round_trip(tmp_path):
    weights = cpp_test_weights()
    size = blob.write(tmp_path / "m.weights", weights)
    assert size == (tmp_path / "m.weights").stat().st_size
    stored = blob.read(tmp_path / "m.weights")
    assert [name for name, _ in stored] == [w.name[:55] for w in weights]
    for weight, (_, array) in zip(weights, stored):
        assert array.dtype == weight.array.dtype and array.shape == weight.array.shape
        np.testing.assert_array_equal(array, weight.array)


def test_layout(tmp_path):
    weights = cpp_test_weights()
    blob.write(tmp_path / "m.weights", weights)
    raw = (tmp_path / "m.weights").read_bytes()
    assert raw[:16] == b"LAPISWB1" + (8).to_bytes(4, "little") + bytes(4)
    assert len(raw) % 64 == 0
    end_of_index = 16 + 128 * len(weights)
    for index, weight in enumerate(weights):
        offset, nbytes, code, rank, *dims, name = blob.ENTRY.unpack_from(raw, 16 + 128 * index)
        assert offset % 64 == 0 and offset >= end_of_index
        assert nbytes == weight.array.nbytes and rank == weight.array.ndim
        assert dims == [*weight.array.shape] + [0] * (6 - rank)
        assert raw[offset:offset + nbytes] == weight.array.tobytes()
        assert name.endswith(b"\0")
    assert [blob.ENTRY.unpack_from(raw, 16 + 128 * i)[2] for i in range(8)] == \
        [0, 2, 4, 1, 6, 0, 3, 5]


def test_deterministic_and_zero_padded(tmp_path):
    blob.write(tmp_path / "a", cpp_test_weights())
    blob.write(tmp_path / "b", cpp_test_weights())
    raw = (tmp_path / "a").read_bytes()
    assert raw == (tmp_path / "b").read_bytes()
    # Only index entries and tensor data are non-zero: the gaps are zero.
    used = bytearray(len(raw))
    used[:16 + 128 * 8] = b"\1" * (16 + 128 * 8)
    for index in range(8):
        offset, nbytes, *_ = blob.ENTRY.unpack_from(raw, 16 + 128 * index)
        used[offset:offset + nbytes] = b"\1" * nbytes
    assert all(byte == 0 for byte, mark in zip(raw, used) if not mark)


def test_big_endian_input_is_stored_little_endian(tmp_path):
    big = np.array([1.5, -2.0], dtype=">f4")
    blob.write(tmp_path / "w", [Weight("w", "w", big)])
    [(_, array)] = blob.read(tmp_path / "w")
    assert array.dtype == np.dtype("<f4")
    np.testing.assert_array_equal(array, big)


def test_empty_blob(tmp_path):
    assert blob.write(tmp_path / "w", []) == 64
    assert blob.read(tmp_path / "w") == []


def test_unsupported_dtype_is_a_clear_error(tmp_path):
    with pytest.raises(blob.BlobError, match="weight 'c' has element type complex64"):
        blob.write(tmp_path / "w", [Weight("c", "c", np.zeros(2, np.complex64))])


def kokkos_roots(default: Path) -> list[Path]:
    extra = os.environ.get("LAPIS_TEST_KOKKOS_ROOTS", "")
    return [default] + [Path(p) for p in extra.split(os.pathsep) if p]


def test_cpp_reader(tmp_path, kokkos_root):
    """weight_blob.hpp reads what blob.py writes, and each mismatch throws a clear message;
    lapis::erf in float32 stays within 2 ulp of erf (kokkos_support/tests/test_scalar.cpp)."""
    blob.write(tmp_path / "m.weights", cpp_test_weights())
    for number, root in enumerate(kokkos_roots(kokkos_root)):
        build = tmp_path / f"build{number}"
        for command in (["cmake", "-S", REPO / "kokkos_support" / "tests", "-B", build,
                         f"-DKokkos_ROOT={root}", "-DCMAKE_BUILD_TYPE=Release"],
                        ["cmake", "--build", build, "-j", "2"]):
            result = subprocess.run(command, capture_output=True, text=True)
            assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        result = subprocess.run([build / "test_weight_blob", tmp_path / "m.weights"],
                                capture_output=True, text=True,
                                env={**os.environ, "OMP_PROC_BIND": "false"})
        assert result.returncode == 0, f"Kokkos at {root}:\n{result.stdout}{result.stderr}"
        assert "0 failures" in result.stdout
        # the same build's check of scalar.hpp's float erf (the GELU kernels' vectorised one)
        result = subprocess.run([build / "test_scalar"], capture_output=True, text=True,
                                env={**os.environ, "OMP_PROC_BIND": "false"})
        assert result.returncode == 0 and "\n0 failures" in result.stdout, \
            f"Kokkos at {root}:\n{result.stdout}{result.stderr}"
