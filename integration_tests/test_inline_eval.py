"""The evaluator (lapis-export --evaluator): an exported MLP called per cell inside a 2-D stencil
kernel of the host's own (sample_app/inline_eval), per thread and per team with the weights in
team scratch, against the batched forward() and PyTorch on the same features; float32 to 1e-5
relative, float64 to 1e-12. (Models whose rows are not independent: tests/test_evaluator.py.)
"""
from __future__ import annotations

import re

import pytest

from . import inline_eval
from .compare import relative_error
from .conftest import REPO, run

GRID = 48    # cells per side: 2304 cells, rows of 48 cells per team
TOLERANCES = {"inline_mlp": 1e-5, "inline_mlp64": 1e-12}


@pytest.fixture(scope="module")
def inline_outputs(tmp_path_factory, kokkos_root):
    work = tmp_path_factory.mktemp("inline_eval")
    packages = {name: inline_eval.export(path, work / name, name, "openmp")
                for name, path in inline_eval.save_models(work).items()}
    build_dir = work / "build"
    run(["cmake", "-S", REPO / "sample_app" / "inline_eval", "-B", build_dir,
         "-DCMAKE_BUILD_TYPE=Release", f"-DKokkos_ROOT={kokkos_root}",
         f"-DLAPIS_MLP_DIR={packages['inline_mlp']}",
         f"-DLAPIS_MLP64_DIR={packages['inline_mlp64']}"])
    run(["nice", "cmake", "--build", build_dir, "-j", "2"])
    out = work / "out"
    out.mkdir()
    run([build_dir / "inline_eval", "check", GRID, out])
    return {name: inline_eval.read_outputs(out, name, GRID * GRID) for name in packages}, packages


@pytest.mark.parametrize("name", list(TOLERANCES))
@pytest.mark.parametrize("variant", ["thread", "team", "rows"])
def test_inline_evaluator_matches_forward_and_pytorch(inline_outputs, name, variant):
    outputs = inline_outputs[0][name]
    expected = inline_eval.reference(name, outputs["features"])
    assert relative_error(outputs[variant], expected) <= TOLERANCES[name]
    assert relative_error(outputs[variant], outputs["forward"]) <= TOLERANCES[name]
    assert relative_error(outputs["forward"], expected) <= TOLERANCES[name]


def test_evaluator_is_in_the_header_and_manifest(inline_outputs):
    package = inline_outputs[1]["inline_mlp64"]
    header = (package / "include" / "inline_mlp64.hpp").read_text()
    assert "struct Evaluator {" in header and "Evaluator evaluator();" in header
    # float64 throughout: the row's pointers, its local arrays and the weights.
    assert "void operator()(const double* input0, double* output0) const" in header
    evaluator = header[header.index("struct Evaluator"):header.index("Evaluator evaluator();")]
    assert not re.search(r"\bfloat\b", evaluator)
    assert '#include "lapis/scalar.hpp"' in header
    assert (package / "include" / "lapis" / "scalar.hpp").is_file()
    assert '"evaluator": true' in (package / "lapis_manifest.json").read_text()


@pytest.fixture(scope="module")
def cuda_package(tmp_path_factory):
    work = tmp_path_factory.mktemp("inline_cuda")
    path = inline_eval.save_models(work)["inline_mlp"]
    return inline_eval.export(path, work / "inline_mlp", "inline_mlp", "cuda")


def test_cuda_evaluator_is_device_code_on_the_forward_weights(cuda_package):
    """--backend cuda: the Evaluator's Views are in CudaSpace, nothing host-only is in its
    device functions, and it reads the State's weights (lapis::linear keeps them [out][in],
    as the one-row code does: no second copy)."""
    from .test_cuda_package import HOST_ONLY

    header = (cuda_package / "include" / "inline_mlp.hpp").read_text()
    source = (cuda_package / "src" / "inline_mlp.cpp").read_text()
    assert "using memory_space = Kokkos::CudaSpace;" in header
    evaluator = header[header.index("struct Evaluator {"):header.index("Evaluator evaluator();")]
    device = "\n".join(line for line in evaluator[evaluator.index("KOKKOS_INLINE_FUNCTION"):]
                       .splitlines() if not line.strip().startswith("//"))
    assert not HOST_ONLY.search(device), HOST_ONLY.search(device)
    assert "lapis::linear<" in source and "evaluator_" not in source
    filled = re.findall(r"model\.(\w+) = state->(\w+);", source)
    assert len(filled) == 6 and all(member == state for member, state in filled), filled
