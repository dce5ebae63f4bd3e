"""The ops and attributes of the unregistered `lapis` dialect that lowering writes and the
emitter reads (each a call of a tuned kernel in kokkos_support/lapis/), and the weight layouts
those kernels want, packed at export.
"""
from __future__ import annotations

import numpy as np

# Must match lapis::conv_channel_block in kokkos_support/lapis/conv_common.hpp.
CONV_CHANNEL_BLOCK = 8
# float32 convolutions on host backends: the x86 tiles' 32 output channels (two zmm). Must match
# lapis::conv_host_channel_block in kokkos_support/lapis/conv_host.hpp.
HOST_CONV_CHANNEL_BLOCK = 32

CONV2D = "lapis.conv2d_nchw"
MAX_POOL = "lapis.max_pool2d_nchw"
# On a memref.alloc: the emitter zero-fills the buffer once, in initialize().
ZEROED_ATTRIBUTE = "lapis.zeroed"

# Host backends run the x86 convolution tiles, which want the input already padded; the others
# read around the unpadded input, which saves two kernels (fill, copy) per convolution.
HOST_BACKENDS = ("serial", "openmp", "threads")

# Dense matrix products (lowering/matmul.py, kokkos_support/lapis/gemm.hpp).
MATMUL = "lapis.matmul"
BATCH_MATMUL = "lapis.batch_matmul"
# A linear layer (a 1x1 convolution of 1x1 images) with its bias and activation
# (lowering/linear.py). CUDA: kokkos_support/lapis/gemm_tf32.hpp, the weight stays [out][in].
# Host backends (the op carries PACKED_ATTRIBUTE): lapis::linear_packed of gemm.hpp, the weight
# packed at export into the panels of its micro-kernel (pack_linear_weight).
LINEAR = "lapis.linear"
PACKED_ATTRIBUTE = "packed"
# CUDA (lowering/linear.py mark_linear_readers): a linear layer whose output only other linear
# layers read, as their input x, carries FEEDS_LINEAR, and those readers READS_LINEAR. Under
# --precision tf32 the first stores its output rounded to tf32 and the readers' tiles read it
# as it is (emit/matmul_handlers.py; lapis::Tf32Rounded in gemm_tf32.hpp).
FEEDS_LINEAR = "feeds_linear"
READS_LINEAR = "reads_linear"
# CUDA --precision bf16 (lowering/linear.py bf16_linear_layers): a linear layer on the tensor
# cores (16 output columns or more) carries BF16_ATTRIBUTE and reads x in bfloat16: a buffer
# that only such layers touch is allocated in bfloat16 (its writers store their outputs so),
# any other input is rounded into one first by BF16_ROUND (x, x in bfloat16); the weight is
# stored in bfloat16 at export (read_as_bf16).
BF16_ATTRIBUTE = "bf16"
BF16_ROUND = "lapis.round_to_bf16"
# Consecutive packed linear layers run as one (host backends, lowering/linear.py): operands
# x, W1, bias1, W2, bias2, ..., y; the attribute "activations" names each layer's, comma-separated.
LINEAR_CHAIN = "lapis.linear_chain"
ACTIVATIONS = ("none", "relu", "silu", "gelu", "tanh", "sigmoid")
# Must match lapis::gemm_host::panel_width in kokkos_support/lapis/gemm_host.hpp.
LINEAR_PANEL_BYTES = 128


def packed_layout(argument) -> str | None:
    """The tuned-kernel layout a weight argument needs, or None to keep it as is."""
    uses = list(argument.uses)
    if len(uses) == 1 and uses[0].operand_number == 1:
        owner = uses[0].owner
        if owner.name == CONV2D:
            return CONV2D
        if owner.name == LINEAR and PACKED_ATTRIBUTE in owner.attributes:
            return LINEAR
    if len(uses) == 1 and uses[0].owner.name == LINEAR_CHAIN:
        number, operands = uses[0].operand_number, len(uses[0].owner.operands)
        if number % 2 == 1 and number < operands - 1:
            return LINEAR
    return None


def read_as_tf32(argument) -> bool:
    """A weight that only CUDA linear layers read, as their W, at least one of them a
    READS_LINEAR one: under --precision tf32 it is rounded to tf32 at export (round_to_tf32),
    so that those layers' tiles read both operands as they are."""
    uses = list(argument.uses)
    return bool(uses) and all(
        use.owner.name == LINEAR and use.operand_number == 1 and
        PACKED_ATTRIBUTE not in use.owner.attributes for use in uses) and any(
        READS_LINEAR in use.owner.attributes for use in uses)


def read_as_bf16(argument) -> bool:
    """A weight that only CUDA linear layers with bfloat16 operands read, as their W: stored
    in bfloat16 at export (bfloat16_bits)."""
    uses = list(argument.uses)
    return bool(uses) and all(
        use.owner.name == LINEAR and use.operand_number == 1 and
        BF16_ATTRIBUTE in use.owner.attributes for use in uses)


def round_to_tf32(array: np.ndarray) -> np.ndarray:
    """float32 -> the nearest tf32 values (10 mantissa bits; ties away from zero), as float32;
    infinities and NaN as they are. Must match lapis::round_tf32 in
    kokkos_support/lapis/conv_tf32.hpp."""
    word = np.ascontiguousarray(array, dtype=np.float32).view(np.uint32)
    rounded = (word + np.uint32(0x1000)) & np.uint32(0xffffe000)
    special = (word & np.uint32(0x7f800000)) == np.uint32(0x7f800000)
    return np.where(special, word, rounded).view(np.float32).reshape(array.shape)


def conv_channel_block(backend: str, dtype: np.dtype) -> int:
    """Output channels per packed block of a convolution weight for this backend and type."""
    if backend in HOST_BACKENDS and np.dtype(dtype) == np.float32:
        return HOST_CONV_CHANNEL_BLOCK
    return CONV_CHANNEL_BLOCK


def pack_conv_weight(weight: np.ndarray, block: int = CONV_CHANNEL_BLOCK) -> np.ndarray:
    """[OC, IC, KH, KW] -> [ceil(OC / B), IC, KH, KW, B], zero-padded output channels."""
    channels, *rest = weight.shape
    blocks = -(-channels // block)
    padded = np.zeros((blocks * block, *rest), dtype=weight.dtype)
    padded[:channels] = weight
    packed = padded.reshape(blocks, block, *rest).transpose(0, 2, 3, 4, 1)
    return np.ascontiguousarray(packed)


def pack_linear_weight(weight: np.ndarray) -> np.ndarray:
    """[N, K] (or [N, K, 1, 1]) -> [ceil(N / P), K, P], P = LINEAR_PANEL_BYTES of the element
    type: each panel holds P output columns, K rows of them, the columns past N zero."""
    columns, depth = weight.shape[:2]
    width = LINEAR_PANEL_BYTES // weight.dtype.itemsize
    panels = -(-columns // width)
    padded = np.zeros((panels * width, depth), dtype=weight.dtype)
    padded[:columns] = weight.reshape(columns, depth)
    return np.ascontiguousarray(padded.reshape(panels, width, depth).transpose(0, 2, 1))


def bfloat16_bits(array: np.ndarray) -> np.ndarray:
    """float32 -> the bits of the nearest bfloat16 (ties to even) as uint16; NaN stays NaN.
    Must match lapis::to_bfloat16 in kokkos_support/lapis/support.hpp."""
    word = np.ascontiguousarray(array, dtype=np.float32).view(np.uint32)
    rounded = ((word + np.uint32(0x7fff) + ((word >> 16) & np.uint32(1))) >> 16).astype(np.uint16)
    nan = (word & np.uint32(0x7fffffff)) > np.uint32(0x7f800000)
    return np.where(nan, ((word >> 16) | np.uint32(0x40)).astype(np.uint16), rounded)


def pack_linear_weight_bf16(weight: np.ndarray) -> np.ndarray:
    """--precision bf16: [N, K] float32 -> [ceil(N / P), K, P] bfloat16 bits (uint16), P = 32
    columns (one zmm of float32 sums); in each panel the rows go in pairs along K, each column's
    two values side by side ([K / 2][P][2], the operand order of vdpbf16ps), an odd K's last
    row alone ([P]). Columns past N zero."""
    columns, depth = weight.shape[:2]
    width = LINEAR_PANEL_BYTES // 4
    panels = -(-columns // width)
    padded = np.zeros((panels * width, depth), dtype=np.uint16)
    padded[:columns] = bfloat16_bits(weight.reshape(columns, depth))
    by_panel = padded.reshape(panels, width, depth).transpose(0, 2, 1)   # [panels][K][P]
    pairs = depth // 2
    paired = by_panel[:, :2 * pairs].reshape(panels, pairs, 2, width).transpose(0, 1, 3, 2)
    flat = np.concatenate([paired.reshape(panels, -1), by_panel[:, 2 * pairs:].reshape(panels, -1)],
                          axis=1)
    return np.ascontiguousarray(flat.reshape(panels, depth, width))
