"""Import and lowering: weights stay arguments with their names, batch norm folds into the
convolution, convolutions become tuned-kernel calls, and what reaches the emitter is the small
closed set of dialects it knows."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from exporter import graph_passes, importer, lowering
from exporter.handoff import LoadedModel, TensorSpec
from integration_tests.models import build

EMITTER_DIALECTS = {"func", "arith", "math", "memref", "scf", "cf", "lapis"}


def loaded(name: str) -> LoadedModel:
    model, shape = build(name)
    program = torch.export.export(model, (torch.randn(*shape),))
    return LoadedModel(path=Path(f"{name}.pt2"), kind="torch.export", program=program,
                       inputs=[TensorSpec("x", "input0", "float32", shape)], source_sha256="")


def op_names(module) -> list[str]:
    names = []

    def walk(op):
        names.append(op.name)
        for region in op.regions:
            for block in region.blocks:
                for inner in block.operations:
                    walk(inner.operation)
    for op in module.body.operations:
        walk(op.operation)
    return names


def test_fold_batch_norm_keeps_numerics():
    model, shape = build("small_cnn")
    example = torch.randn(*shape)
    program = torch.export.export(model, (example,))
    assert graph_passes.fold_batch_norm(program) == 2
    targets = [str(n.target) for n in program.graph.nodes]
    assert not any("batch_norm" in t for t in targets)
    torch.testing.assert_close(program.module()(example), model(example), rtol=1e-5, atol=1e-6)


def test_weights_are_named_arguments():
    imported = importer.to_linalg(loaded("mlp"))
    assert [w.name for w in imported.weights] == ["fc1.weight", "fc1.bias", "fc2.weight",
                                                  "fc2.bias", "fc3.weight", "fc3.bias"]
    assert [w.cname for w in imported.weights][0] == "fc1_weight"
    function = next(iter(imported.module.body.operations))
    assert len(function.regions[0].blocks[0].arguments) == 6 + 1
    assert imported.outputs[0].shape == (4, 10)
    assert "dense_resource" not in str(imported.module)


@pytest.mark.parametrize("name", ["mlp", "small_cnn"])
def test_lowering_reaches_emitter_dialects(name):
    lowered = lowering.run(importer.to_linalg(loaded(name)), "openmp")
    dialects = {op.split(".")[0] for op in op_names(lowered.module)} - {"builtin"}
    assert dialects <= EMITTER_DIALECTS
    assert "linalg" not in str(lowered.module)


def test_convolutions_become_tuned_kernels():
    lowered = lowering.run(importer.to_linalg(loaded("small_cnn")), "openmp")
    names = op_names(lowered.module)
    # conv1 and conv3 have groups=1; conv2 (groups=4) stays loops.
    assert names.count("lapis.conv2d_nchw") == 2
    text = lowered.module.operation.get_asm(enable_debug_info=True)
    assert 'loc("conv1/convolution")' in text
