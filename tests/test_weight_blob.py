"""The weight blob: Python writer/reader round trip, layout rules, and the C++ reader."""
from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest

from exporter.handoff import Weight
from weights import blob

REPO = Path(__file__).resolve().parents[1]


def sample_weights():
    rng = np.random.default_rng(0)
    return [Weight("conv.weight", "conv_weight", rng.standard_normal((4, 3, 3, 3), np.float32)),
            Weight("steps", "steps", np.arange(5, dtype=np.int64)),
            Weight("mask", "mask", np.array([True, False, True])),
            Weight("scale", "scale", np.array(2.5, dtype=np.float64))]


def test_round_trip(tmp_path):
    weights = sample_weights()
    size = blob.write(tmp_path / "m.weights", weights)
    assert size == (tmp_path / "m.weights").stat().st_size
    for weight, (name, array) in zip(weights, blob.read(tmp_path / "m.weights")):
        assert name == weight.name
        np.testing.assert_array_equal(array, weight.array)


def test_layout_is_aligned_and_deterministic(tmp_path):
    blob.write(tmp_path / "a", sample_weights())
    blob.write(tmp_path / "b", sample_weights())
    raw = (tmp_path / "a").read_bytes()
    assert raw == (tmp_path / "b").read_bytes()
    assert raw[:8] == b"LAPISWB1"
    for index in range(4):
        offset, *_ = blob.ENTRY.unpack_from(raw, blob.HEADER.size + index * blob.ENTRY.size)
        assert offset % 64 == 0


def test_long_names_are_truncated(tmp_path):
    long_name = "layer" * 20
    blob.write(tmp_path / "w", [Weight(long_name, "w", np.zeros(2, np.float32))])
    assert blob.read(tmp_path / "w")[0][0] == long_name[:55]


def test_cpp_reader(tmp_path, kokkos_root):
    """weight_blob.hpp reads what blob.py writes, and rejects a mismatched View."""
    weights = sample_weights()[:2]
    blob.write(tmp_path / "m.weights", weights)
    source = tmp_path / "reader.cpp"
    source.write_text(r'''
#include <Kokkos_Core.hpp>
#include <cstdio>
#include "lapis/weight_blob.hpp"
int main(int argc, char** argv) {
  Kokkos::initialize(argc, argv);
  int status = 0;
  {
    auto blob = lapis::WeightBlob::from_file(argv[1]);
    Kokkos::View<float****, Kokkos::LayoutRight> w("w", 4, 3, 3, 3);
    Kokkos::View<int64_t*, Kokkos::LayoutRight> steps("steps", 5);
    lapis::load_weight(blob, 0, "conv.weight", w);
    lapis::load_weight(blob, 1, "steps", steps);
    auto h = Kokkos::create_mirror_view_and_copy(Kokkos::HostSpace(), w);
    std::printf("%.6f %.6f %ld\n", h(0, 0, 0, 0), h(3, 2, 2, 2), long(steps(4)));
    Kokkos::View<float*, Kokkos::LayoutRight> wrong("wrong", 7);
    try { lapis::load_weight(blob, 0, "conv.weight", wrong); status = 2; }
    catch (const std::runtime_error& e) { std::printf("mismatch: %s\n", e.what()); }
    try { lapis::load_weight(blob, 1, "other", steps); status = 3; }
    catch (const std::runtime_error& e) { std::printf("mismatch: %s\n", e.what()); }
  }
  Kokkos::finalize();
  return status;
}
''')
    (tmp_path / "CMakeLists.txt").write_text(f'''
cmake_minimum_required(VERSION 3.16)
project(reader CXX)
find_package(Kokkos REQUIRED)
add_executable(reader reader.cpp)
target_include_directories(reader PRIVATE {REPO / "kokkos_support"})
target_link_libraries(reader Kokkos::kokkos)
''')
    build = tmp_path / "build"
    subprocess.run(["cmake", "-S", tmp_path, "-B", build, f"-DKokkos_ROOT={kokkos_root}"],
                   check=True, capture_output=True)
    subprocess.run(["cmake", "--build", build], check=True, capture_output=True)
    result = subprocess.run([build / "reader", tmp_path / "m.weights"], capture_output=True,
                            text=True, env={"OMP_PROC_BIND": "false", "PATH": "/usr/bin"})
    assert result.returncode == 0, result.stdout + result.stderr
    first, last = weights[0].array[0, 0, 0, 0], weights[0].array[3, 2, 2, 2]
    values = result.stdout.splitlines()[0].split()
    assert float(values[0]) == pytest.approx(first, abs=1e-6)
    assert float(values[1]) == pytest.approx(last, abs=1e-6)
    assert values[2] == "4"
    assert "bytes in the blob" in result.stdout and "expected 'other'" in result.stdout
