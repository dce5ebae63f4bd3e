"""Dense matrix products: `linalg.matmul` on buffers becomes `lapis.matmul` (exporter/lowering/matmul.py),
with a zero fill before it folded in, and the emitter calls lapis::matmul for it (golden)."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from exporter import frontend, importer, lowering
from exporter.lowering import matmul

from .test_emit import GOLDEN, emit_ir, forward_body, spec
from .test_lowering import op_names

MAPS = ("indexing_maps = [affine_map<(d0, d1, d2) -> ({a})>, "
        "affine_map<(d0, d1, d2) -> (d2, d1)>, affine_map<(d0, d1, d2) -> (d0, d1)>]")


def rewritten(body: str, a_type: str = "memref<7x13xf32>", maps: str = "") -> str:
    """The function `body` (ops on %A [7, 13], %B [13, 5], %C [7, 5]) after replace_matmuls."""
    from torch_mlir import ir
    context = ir.Context()
    module = ir.Module.parse(f"""
func.func @forward(%A: {a_type}, %B: memref<13x5xf32>, %C: memref<7x5xf32>) {{
  %zero = arith.constant 0.0 : f32
  %one = arith.constant 1.0 : f32
  {body.format(a_type=a_type, maps=maps)}
  return
}}""", context)
    with context:
        matmul.replace_matmuls(module)
    return str(module)


PRODUCT = ("linalg.matmul {maps} ins(%A, %B : {a_type}, memref<13x5xf32>) "
           "outs(%C : memref<7x5xf32>)")


def test_zero_fill_folds_into_the_product():
    text = rewritten("linalg.fill ins(%zero : f32) outs(%C : memref<7x5xf32>)\n" + PRODUCT)
    assert '"lapis.matmul"(%arg0, %arg1, %arg2) {init = "zero"}' in text
    assert "linalg" not in text


def test_other_starts_accumulate():
    # A fill of 1.0 stays and the product adds to it, as linalg.matmul does; so without a fill.
    text = rewritten("linalg.fill ins(%one : f32) outs(%C : memref<7x5xf32>)\n" + PRODUCT)
    assert "linalg.fill" in text and '{init = "accumulate"}' in text
    assert '{init = "accumulate"}' in rewritten(PRODUCT)


def test_strided_operands_go_to_the_kernel_transposed_ones_stay_loops():
    strided = "memref<7x13xf32, strided<[26, 1], offset: 3>>"
    assert '"lapis.matmul"' in rewritten(PRODUCT, a_type=strided)
    transposed = rewritten(PRODUCT, a_type="memref<13x7xf32>", maps=MAPS.format(a="d2, d0"))
    assert "linalg.matmul" in transposed and "lapis.matmul" not in transposed


@pytest.mark.parametrize("shapes, op", [([(7, 13), (13, 5)], "lapis.matmul"),
                                        ([(3, 7, 13), (3, 13, 5)], "lapis.batch_matmul")])
def test_exported_gemm_lowers_to_the_kernel(shapes, op):
    loaded = frontend.load(Path("examples/science_kernels.py:gemm"), shapes, None, [None, None])
    names = op_names(lowering.run(importer.to_linalg(loaded), "openmp").module)
    assert names.count(op) == 1
    assert not any(name.startswith("linalg.") for name in names)


def test_golden_matmul():
    inputs = [spec("input0", (7, 13)), spec("input1", (13, 5))]
    emitted = emit_ir((GOLDEN / "matmul.mlir").read_text(), inputs, [spec("output0", (7, 5))])
    body = forward_body(emitted.source)
    golden = GOLDEN / "matmul.cpp"
    if os.environ.get("LAPIS_UPDATE_GOLDENS"):
        golden.write_text(body)
    assert body == golden.read_text()
    assert '#include "lapis/gemm.hpp"' in emitted.source
