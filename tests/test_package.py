"""The package stage: files, manifest, atomic writes and --force."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from exporter import package
from exporter.errors import ExportError
from exporter.handoff import Weight

from .test_emit import CASES, GOLDEN, emit_ir


@pytest.fixture
def source():
    inputs, outputs = CASES["elementwise"]
    emitted = emit_ir((GOLDEN / "elementwise.mlir").read_text(), inputs, outputs)
    emitted.weights = [Weight("w", "w", np.arange(6, dtype=np.float32))]
    return emitted


def options(**kwargs):
    return package.PackageOptions(source_path=Path("model.pt2"), source_sha256="ab" * 32,
                                  **kwargs)


def test_layout_and_manifest(tmp_path, source):
    out = package.write(source, tmp_path / "pkg", options())
    files = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    assert files == ["CMakeLists.txt", "README.md", "cmake/goldenConfig.cmake.in",
                     "include/golden.hpp", "lapis_manifest.json", "src/golden.cpp",
                     "src/golden.weights", "src/golden_weights.S", "src/lapis/kernels.hpp",
                     "src/lapis/support.hpp", "src/lapis/weight_blob.hpp"]
    manifest = json.loads((out / "lapis_manifest.json").read_text())
    assert manifest["name"] == "golden" and manifest["backend"] == "openmp"
    assert manifest["inputs"] == [{"name": "input0", "cname": "input0", "dtype": "float32",
                                   "shape": [4, 8]}]
    assert manifest["source"] == {"file": "model.pt2", "sha256": "ab" * 32}
    assert manifest["weights"]["count"] == 1 and manifest["weights"]["mode"] == "embed"
    cmake = (out / "CMakeLists.txt").read_text()
    assert "add_library(golden::golden ALIAS golden)" in cmake
    assert "@" not in cmake.replace("@progbits", "")
    assert "@PACKAGE_INIT@" in (out / "cmake" / "goldenConfig.cmake.in").read_text()


def test_weights_mode_file(tmp_path, source):
    out = package.write(source, tmp_path / "pkg", options(weights_mode="file"))
    assert 'option(golden_EMBED_WEIGHTS "Link the weight blob into the library" OFF)' in \
        (out / "CMakeLists.txt").read_text()


def test_existing_output_needs_force(tmp_path, source):
    out = tmp_path / "pkg"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(ExportError, match="exists and is not empty; pass --force"):
        package.write(source, out, options())
    assert (out / "notes.txt").read_text() == "mine"
    package.write(source, out, options(force=True))
    assert not (out / "notes.txt").exists() and (out / "CMakeLists.txt").exists()


def test_failure_leaves_nothing_behind(tmp_path, source, monkeypatch):
    from weights import blob

    def broken(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(blob, "write", broken)
    with pytest.raises(KeyboardInterrupt):
        package.write(source, tmp_path / "pkg", options())
    assert list(tmp_path.iterdir()) == []


def test_identical_bytes_twice(tmp_path, source):
    first = package.write(source, tmp_path / "a", options())
    second = package.write(source, tmp_path / "b", options())
    for path in first.rglob("*"):
        if path.is_file():
            assert path.read_bytes() == (second / path.relative_to(first)).read_bytes()
