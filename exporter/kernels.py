"""Tuned kernels: which linalg ops the lowering hands to kokkos_support/lapis/kernels.hpp
instead of loop nests, and how their weights are laid out for them at export.

A replaced op becomes an op of the `lapis` dialect (unregistered: the passes after it leave it
alone) with the same operands; the emitter turns it into a call of the C++ kernel.
"""
from __future__ import annotations

import numpy as np

# Must match lapis::conv_channel_block in kokkos_support/lapis/kernels.hpp.
CONV_CHANNEL_BLOCK = 8

CONV2D = "lapis.conv2d_nchw"


def replace_linalg_ops(module, weight_count: int) -> int:
    """Swap `linalg.conv_2d_nchw_fchw` on buffers whose filter is a weight argument used only
    there for `lapis.conv2d_nchw`. Returns how many ops were replaced."""
    from torch_mlir import ir

    module.context.allow_unregistered_dialects = True
    replaced = 0
    for function in module.body.operations:
        if function.operation.name != "func.func":
            continue
        for op in list(function.regions[0].blocks[0].operations):
            op = op.operation
            if op.name != "linalg.conv_2d_nchw_fchw" or not _is_packable_weight(
                    op.operands[1], weight_count):
                continue
            with ir.InsertionPoint(op), op.location:
                ir.Operation.create(CONV2D, operands=list(op.operands), attributes={
                    "strides": op.attributes["strides"],
                    "dilations": op.attributes["dilations"]})
            op.erase()
            replaced += 1
    return replaced


def _is_packable_weight(value, weight_count: int) -> bool:
    from torch_mlir import ir
    return (isinstance(value, ir.BlockArgument) and value.arg_number < weight_count
            and len(list(value.uses)) == 1)


def packed_layout(argument) -> str | None:
    """The tuned-kernel layout a weight argument needs, or None to keep it as is."""
    uses = list(argument.uses)
    if len(uses) == 1 and uses[0].owner.name == CONV2D and uses[0].operand_number == 1:
        return CONV2D
    return None


def pack_conv_weight(weight: np.ndarray) -> np.ndarray:
    """[OC, IC, KH, KW] -> [ceil(OC / B), IC, KH, KW, B], zero-padded output channels."""
    channels, *rest = weight.shape
    blocks = -(-channels // CONV_CHANNEL_BLOCK)
    padded = np.zeros((blocks * CONV_CHANNEL_BLOCK, *rest), dtype=weight.dtype)
    padded[:channels] = weight
    packed = padded.reshape(blocks, CONV_CHANNEL_BLOCK, *rest).transpose(0, 2, 3, 4, 1)
    return np.ascontiguousarray(packed)
