"""Linear layers on matrix-product kernels instead of the convolution tiles.

The importer runs `linear` as a 1x1 convolution of 1x1 images (importer/graph_passes.py), and
conv.py makes it a `lapis.conv2d_nchw` with its bias (and an in-place ReLU) folded in. Such a
call becomes `lapis.linear`: on CUDA x W^T on the tensor cores (kokkos_support/lapis/
gemm_tf32.hpp, float32, the weight kept as [out][in]); on host backends the packed AVX-512 /
AVX2 kernel of gemm_host.hpp (float32 and float64, the op marked `packed`: the emitter packs
the weight into the kernel's panels, tuned_ops.pack_linear_weight). The elementwise activation
after it (SiLU, GELU, tanh, ReLU, sigmoid) goes into its epilogue when the layer's own output
is read by nothing else.
"""
from __future__ import annotations

from ..tuned_ops import CONV2D, HOST_BACKENDS, LINEAR, PACKED_ATTRIBUTE
from .buffers import constant_value, root
from .conv import _dead_after, _next_past_allocs

# Body of the elementwise op after a linear layer (block argument x, constants by value), as
# torch-mlir lowers each activation -> the epilogue's name for it.
_BODIES = {
    ("arith.negf", "math.exp", "arith.addf", "arith.divf", "arith.mulf"): "silu",
    ("arith.divf", "math.erf", "arith.addf", "arith.mulf", "arith.mulf"): "gelu",
    ("math.tanh",): "tanh",
    ("arith.cmpf", "arith.select"): "relu",
    ("arith.negf", "math.exp", "arith.addf", "arith.divf"): "sigmoid",
}
_CONSTANTS = {"silu": [1.0, 1.0], "gelu": [1.41421354, 1.0, 0.5], "tanh": [], "relu": [0.0, 0.0],
              "sigmoid": [1.0, 1.0]}


def replace_linear_convs(module, backend: str = "cuda") -> int:
    """Swap every `lapis.conv2d_nchw` that is a linear layer (1x1 filter over 1x1 images,
    stride 1, no padding or residual; float32, or on host backends float64 too) for
    `lapis.linear`; returns how many."""
    host = backend in HOST_BACKENDS
    elements = ("f32", "f64") if host else ("f32",)
    replaced = 0
    for function in module.body.operations:
        if function.operation.name != "func.func" or not len(function.regions[0].blocks):
            continue
        for op in list(function.regions[0].blocks[0].operations):
            op = op.operation
            if op.name == CONV2D and _is_linear(op, elements):
                _replace(op, packed=host)
                replaced += 1
    return replaced


def _is_linear(conv, elements) -> bool:
    from torch_mlir import ir
    import numpy as np
    if "residual" in conv.attributes or list(ir.DenseI64ArrayAttr(
            conv.attributes["padding"])) != [0, 0]:
        return False
    if [int(v) for v in np.asarray(conv.attributes["strides"])] != [1, 1]:
        return False
    source, weight, target = (ir.MemRefType(conv.operands[i].type) for i in (0, 1, -1))
    return (str(target.element_type) in elements and list(weight.shape[2:]) == [1, 1]
            and list(source.shape[2:]) == [1, 1] and list(target.shape[2:]) == [1, 1])


def _replace(conv, packed: bool) -> None:
    from torch_mlir import ir
    operands = list(conv.operands)
    init = ir.StringAttr(conv.attributes["init"]).value
    activation = "relu" if ir.BoolAttr(conv.attributes["relu"]).value else "none"
    at, folded = conv, None
    if activation == "none":
        after = _next_past_allocs(conv)
        found = _activation(after, operands[-1])
        # In place, or into a buffer of its own while the layer's own output is read by
        # nothing else (its start is the bias or zero, not what the buffer held) -- and never
        # into a buffer the layer reads (bufferization reuses the input's buffer for the
        # activation's result when the input dies at the layer).
        reads = {root(value) for value in operands[:-1]}
        if found and root(after.operands[1]) not in reads and (
                after.operands[1] == operands[-1] or (
                    init != "accumulate" and _dead_after(after, operands[-1]))):
            activation, at, folded = found, after, after
            operands[-1] = after.operands[1]
    with ir.InsertionPoint(at), conv.location:
        ir.Operation.create(LINEAR, operands=operands, attributes={
            "init": ir.StringAttr.get(init), "activation": ir.StringAttr.get(activation),
            **({PACKED_ATTRIBUTE: ir.UnitAttr.get()} if packed else {})})
    conv.erase()
    if folded is not None:
        folded.erase()


def _activation(op, buffer) -> str | None:
    """The activation `op` applies, if it is `linalg.generic ins(buffer) outs(buffer or
    another of the same shape)`, elementwise (identity maps, parallel loops), with one of _BODIES."""
    from torch_mlir import ir
    if op is None or op.name != "linalg.generic" or len(op.operands) != 2:
        return None
    source, result = op.operands
    if source != buffer or str(source.type) != str(result.type):
        return None
    maps = ir.ArrayAttr(op.attributes["indexing_maps"])
    identity = str(ir.AffineMap.get_identity(ir.MemRefType(buffer.type).rank))
    if any(str(ir.AffineMapAttr(m).value) != identity for m in maps) or any(
            "parallel" not in str(t) for t in ir.ArrayAttr(op.attributes["iterator_types"])):
        return None
    block = op.regions[0].blocks[0]
    body = [o.operation for o in block.operations]
    names = tuple(o.name for o in body[:-1])
    name = _BODIES.get(names)
    if name is None or body[-1].operands[0] != body[-2].results[0]:
        return None
    x = block.arguments[0]
    # Each op reads x or the op before it (or constants): a chain, no other values.
    produced = {x} | {r for o in body[:-1] for r in o.results}
    constants = []
    for o in body[:-1]:
        for value in o.operands:
            if value in produced:
                continue
            number = constant_value(value)
            if number is None:
                return None
            constants.append(number)
    expected = _CONSTANTS[name]
    if len(constants) != len(expected) or any(
            abs(c - e) > 1e-6 * max(1.0, abs(e)) for c, e in zip(constants, expected)):
        return None
    if name == "relu":
        compare, select = body[0], body[1]
        if compare.operands[0] != x or list(select.operands)[1] != x:
            return None
        from .conv import CMPF_UGT
        if ir.IntegerAttr(compare.attributes["predicate"]).value != CMPF_UGT:
            return None
    elif name == "sigmoid":
        if body[0].operands[0] != x:
            return None
    elif body[0].operands[0] != x or x not in list(body[-2].operands):
        return None     # silu and gelu end in x * ...; tanh's one op reads x
    return name
