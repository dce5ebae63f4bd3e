"""Import and lowering: weights stay arguments with their names, batch norm folds into the
convolution, convolutions become tuned-kernel calls, and what reaches the emitter is the small
closed set of dialects it knows."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from exporter import importer, lowering
from exporter.importer import graph_passes
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
    # conv1 and conv3 have groups=1; conv2 (groups=4) stays loops. fc (imported as a 1x1
    # convolution) becomes the packed linear layer of host backends.
    assert names.count("lapis.conv2d_nchw") == 2
    assert names.count("lapis.linear") == 1
    text = lowered.module.operation.get_asm(enable_debug_info=True)
    assert 'loc("conv1/convolution")' in text


def _convolutions(module, name: str = "lapis.conv2d_nchw") -> dict[str, str]:
    """location -> each lapis.conv2d_nchw (or op `name`), as printed."""
    found = {}
    for function in module.body.operations:
        if not len(function.regions) or not len(function.regions[0].blocks):
            continue                      # declarations
        for op in function.regions[0].blocks[0].operations:
            if op.operation.name == name:
                found[str(op.location).split('"')[1]] = str(op)
    return found


def test_ops_around_a_convolution_fold_into_it():
    host = _convolutions(lowering.run(importer.to_linalg(loaded("small_cnn")), "openmp").module)
    conv1 = host["conv1/convolution"]
    # The batch-norm-folded bias broadcast and the ReLU go into the call; on host backends the
    # padded copy stays (the x86 tiles read a padded input), but its zero fill goes.
    assert 'init = "bias"' in conv1 and "relu = true" in conv1
    assert "padding = array<i64: 0, 0>" in conv1
    module = lowering.run(importer.to_linalg(loaded("small_cnn")), "cuda").module
    device = _convolutions(module)
    # Off the host, the kernel reads around the unpadded input: the copy goes too.
    assert "padding = array<i64: 1, 1>" in device["conv1/convolution"]
    # On CUDA the linear layer is a lapis.linear, its bias folded in; the softmax after it stays.
    fc = _convolutions(module, "lapis.linear")["fc/convolution"]
    assert 'init = "bias"' in fc and 'activation = "none"' in fc


def test_consecutive_linear_layers_become_one_chain_on_host_backends():
    """The wide MLP's five Linear layers (SiLU folded into four) are one lapis.linear_chain on
    host backends, the buffers between them gone and the head writing the result itself (no
    copy after it); on CUDA they stay lapis.linear calls."""
    host = lowering.run(importer.to_linalg(loaded("wide_mlp")), "openmp").module
    names = op_names(host)
    assert names.count("lapis.linear_chain") == 1 and "lapis.linear" not in names
    assert "memref.alloc" not in names and "memref.copy" not in names
    (chain,) = _convolutions(host, "lapis.linear_chain").values()
    assert 'activations = "silu,silu,silu,silu,none"' in chain
    device = op_names(lowering.run(importer.to_linalg(loaded("wide_mlp")), "cuda").module)
    assert device.count("lapis.linear") == 5 and "lapis.linear_chain" not in device


def test_gelu_read_through_a_reshape_folds_into_the_linear_layer():
    """A transformer's feed-forward: linear1 writes [B*S, F] rows that GELU reads as [B, S, F]
    (and the second layer's GELU through the same view, merged by CSE); both GELUs go into
    linear1's epilogue, on host backends and CUDA alike, and no GELU loop is left."""
    for backend in ("openmp", "cuda"):
        module = lowering.run(importer.to_linalg(loaded("transformer")), backend).module
        linear1 = {k: v for k, v in _convolutions(module, "lapis.linear").items()
                   if "linear1" in k}
        assert len(linear1) == 2, backend
        assert all('activation = "gelu"' in op for op in linear1.values()), (backend, linear1)
        assert "math.erf" not in op_names(module), backend


def test_feed_forward_residual_add_folds_into_linear2():
    """A transformer layer's `x + linear2(...)` (the sum read as [B, S, C], the layer's rows as
    [B*S, C]) becomes linear2's epilogue, on host backends and CUDA alike; the add and
    linear2's own buffer go. The attention's residual add reads the projection's rows in
    another order and stays."""
    for backend in ("openmp", "cuda"):
        module = lowering.run(importer.to_linalg(loaded("transformer")), backend).module
        found = _convolutions(module, "lapis.linear")
        assert [k for k, v in found.items() if "residual" in v] == \
            ["encoder.layers.0.linear2/convolution", "encoder.layers.1.linear2/convolution"], \
            (backend, found)


def test_head_split_copies_become_strided_views():
    """nn.MultiheadAttention's QKV split and q, k and v head-split transposes are read in
    place: the attention's k and v (and the loop scaling q) read strided views of the
    projection's own [L, B, 3 D] rows (k at offset D, v at 2 D), and the attention writes a
    strided view of the head merge's buffer, on host backends and CUDA alike; the copies and
    their buffers go."""
    for backend in ("openmp", "cuda"):
        module = lowering.run(importer.to_linalg(loaded("transformer")), backend).module
        function = next(f for f in module.body.operations
                        if len(f.regions) and len(f.regions[0].blocks))
        attentions = [op.operation for op in function.regions[0].blocks[0].operations
                      if op.operation.name == "lapis.attention"]
        assert len(attentions) == 2, backend
        for attention in attentions:
            for offset, operand in zip((64, 128), list(attention.operands)[1:3]):  # k, v
                assert operand.owner.name == "memref.reinterpret_cast", (backend, operand)
                assert f"strided<[192, 16, 384, 1], offset: {offset}>" in str(operand.type), \
                    operand.type
                assert operand.owner.operands[0].owner.name == "memref.alloc"
            assert "linalg.transpose" not in str(function), backend
            merged = attention.operands[3]
            assert merged.owner.name == "memref.reinterpret_cast", (backend, merged)
            assert "strided<[64, 16, 128, 1]>" in str(merged.type), merged.type


def test_inputs_are_never_written_in_place():
    """A tensor update of an input (a determinant's LU step does this) bufferizes into a copy:
    the inputs are the caller's const Views."""
    from torch_mlir import ir

    from exporter.handoff import ImportedModel
    context = ir.Context()
    module = ir.Module.parse("""func.func @forward(%x: tensor<4xf32>) -> tensor<4xf32> {
      %c0 = arith.constant 0 : index
      %one = arith.constant 1.0 : f32
      %y = tensor.insert %one into %x[%c0] : tensor<4xf32>
      return %y : tensor<4xf32>
    }""", context)
    spec = TensorSpec("x", "input0", "float32", (4,))
    source = LoadedModel(path=Path("update.mlir"), kind="mlir", program=None, inputs=[spec],
                         source_sha256="")
    lowering.run(ImportedModel(module=module, weights=[], inputs=[spec],
                               outputs=[TensorSpec("y", "output0", "float32", (4,))],
                               source=source), "openmp")
    function = next(iter(module.body.operations)).operation
    x = function.regions[0].blocks[0].arguments[0]
    writes = [use.owner.name for use in x.uses
              if use.owner.name == "memref.store" and use.operand_number == 1
              or use.owner.name == "memref.copy" and use.operand_number == 1]
    assert writes == [], str(module)
    assert "memref.store" in str(module)


def test_residual_add_folds_into_the_convolution():
    """A basic block's `relu(conv2(...) + identity)` becomes the convolution's epilogue, on the
    host and off it; where the add feeds a reduction (the average pool) it stays."""
    for backend in ("openmp", "cuda"):
        found = _convolutions(lowering.run(importer.to_linalg(loaded("residual_net")),
                                           backend).module)
        conv2 = found["block1.conv2/convolution"]
        assert "residual = true" in conv2 and "relu = true" in conv2
        assert "residual" not in found["block2.conv2/convolution"]
        assert "residual" not in found["block1.conv1/convolution"]


def test_max_pool_reads_around_its_input():
    """The -inf padded copy before a max pool (fill + copy) and its output's -inf fill fold
    into one lapis.max_pool2d_nchw that skips the taps outside the input, on host and device
    backends alike."""
    for backend in ("openmp", "cuda"):
        lowered = lowering.run(importer.to_linalg(loaded("small_cnn")), backend)
        names = op_names(lowered.module)
        assert names.count("lapis.max_pool2d_nchw") == 1
        pool = next(str(op) for op in lowered.module.body.operations[0].regions[0].blocks[0]
                    .operations if op.operation.name == "lapis.max_pool2d_nchw")
        assert 'init = "lowest"' in pool and "padding = array<i64: 1, 1>" in pool
        assert "kernel = array<i64: 3, 3>" in pool


def test_padded_inputs_are_written_in_place_on_host_backends():
    """On host backends a padded convolution input is a zero-bordered buffer of its own; the
    convolution or max pooling before it writes the buffer's interior, and the residual and
    downsample readers of that value read it there: only the model input is copied in."""
    module = lowering.run(importer.to_linalg(loaded("residual_net")), "openmp").module
    body = [op.operation for op in
            module.body.operations[0].regions[0].blocks[0].operations]
    zeroed = {op.results[0] for op in body if "lapis.zeroed" in op.attributes}
    interiors = {op.results[0] for op in body
                 if op.name == "memref.subview" and op.operands[0] in zeroed}
    copies = [op for op in body if op.name == "memref.copy" and op.operands[1] in interiors]
    assert len(copies) == 1 and "%arg" in copies[0].operands[0].get_name(), str(module)
    written = [op for op in body if op.name == "lapis.conv2d_nchw"
               and op.operands[len(op.operands) - 1] in interiors]
    assert len(written) == 3, str(module)     # conv1, block1.conv1, block1.conv2 (+ residual)
    block2_reads = [op for op in body if op.name == "lapis.conv2d_nchw"
                    and "downsample" in str(op.location) and op.operands[0] in interiors]
    assert len(block2_reads) == 1, str(module)


class _ReadAgain(torch.nn.Module):
    """relu(conv1(x) + x), where conv1's output is read again afterwards."""

    def __init__(self):
        super().__init__()
        self.conv1 = torch.nn.Conv2d(4, 4, 3, padding=1)
        self.conv2 = torch.nn.Conv2d(4, 4, 1)

    def forward(self, x):
        y = self.conv1(x)
        return self.conv2(torch.relu(y + x)) * y


def test_residual_add_stays_when_the_convolution_output_is_read_again():
    x = torch.randn(1, 4, 6, 6)
    program = torch.export.export(_ReadAgain().eval(), (x,))
    model = LoadedModel(path=Path("read_again.pt2"), kind="torch.export", program=program,
                        inputs=[TensorSpec("x", "input0", "float32", (1, 4, 6, 6))],
                        source_sha256="")
    for backend in ("openmp", "cuda"):
        found = _convolutions(lowering.run(importer.to_linalg(model), backend).module)
        assert "residual" not in found["conv1/convolution"]


def test_sort_and_scatter_become_loops():
    """torch-mlir's tm_tensor ops (sort, scan, scatter, top-k) reach the emitter as loops."""
    class Ops(torch.nn.Module):
        def forward(self, x):
            index = torch.tensor([[1, 0, 2], [0, 2, 1]])
            scattered = torch.zeros(2, 3).scatter_add(1, index, x)
            return torch.sort(x, 1)[0] + torch.cumsum(x, 1) + scattered
    program = torch.export.export(Ops(), (torch.randn(2, 3),))
    model = LoadedModel(path=Path("ops.pt2"), kind="torch.export", program=program,
                        inputs=[TensorSpec("x", "input0", "float32", (2, 3))], source_sha256="")
    imported = importer.to_linalg(model)
    assert {"tm_tensor.sort", "tm_tensor.scan", "tm_tensor.scatter"} <= set(
        op_names(imported.module))
    lowered = lowering.run(imported, "openmp")
    dialects = {name.split(".")[0] for name in op_names(lowered.module)}
    assert dialects <= EMITTER_DIALECTS, dialects
