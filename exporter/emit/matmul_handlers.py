"""Handlers for the dense matrix products of lowering/matmul.py (calls of
kokkos_support/lapis/gemm.hpp; on CUDA, of gemm_tf32.hpp's tensor-core tiles) and for the
linear layers of lowering/linear.py (CUDA: lapis::linear, gemm_tf32.hpp; host backends:
lapis::linear_packed, gemm.hpp, on the weight packed at export; consecutive ones,
lapis::linear_chain)."""
from __future__ import annotations

from ..tuned_ops import (BATCH_MATMUL, BF16_ATTRIBUTE, BF16_ROUND, FEEDS_LINEAR, LINEAR,
                         LINEAR_CHAIN, MATMUL, PACKED_ATTRIBUTE, READS_LINEAR)
from .emitter import KokkosEmitter, handles, location_label


@handles(MATMUL, BATCH_MATMUL)
def _matmul(em: KokkosEmitter, op) -> None:
    """`lapis.matmul(A, B, C) {init}`: C = A B (init zero) or C += A B (init accumulate);
    `lapis.batch_matmul` the same for each entry of a batch."""
    from torch_mlir import ir
    a, b, c = (em.memref(v).cname for v in op.operands)
    init = ir.StringAttr(op.attributes["init"]).value
    short = op.name.removeprefix("lapis.")
    tensor_cores = em.backend == "cuda"
    em.include("lapis/gemm_tf32.hpp" if tensor_cores else "lapis/gemm.hpp")
    em.kernel_count += 1
    what = "batched dense matrix product" if op.name == BATCH_MATMUL else "dense matrix product"
    start = ", zero fill folded in" if init == "zero" else ", adding to C"
    where = "lapis/gemm_tf32.hpp, tensor cores" if tensor_cores else "lapis/gemm.hpp" + (
        ", bfloat16 operands" if em.precision == "bf16" else "")
    if tensor_cores and em.precision == "bf16":   # no bfloat16 tiles for these: tf32 products
        where += ", tf32 products under --precision bf16"
    em.line(f"// {location_label(op) or op.name}: {what}{start} ({where})")
    call = em.tuned_kernel(f"{short}_tensor_core" if tensor_cores else short,
                           ("tf32", "bf16"), cuda_bf16_as="tf32")
    em.line(f'{call}(exec, "{em.kernel_label(op, short)}", {a}, {b}, {c}, '
            f"lapis::MatmulInit::{init});")


@handles(LINEAR)
def _linear(em: KokkosEmitter, op) -> None:
    """`lapis.linear(x, W, [bias], y) {init, activation[, packed]}`: y = activation(init + x W^T)."""
    from torch_mlir import ir
    source, weight, *bias, target = (em.memref(v) for v in op.operands)
    residual = bias.pop() if "residual" in op.attributes else None
    init = ir.StringAttr(op.attributes["init"]).value
    activation = ir.StringAttr(op.attributes["activation"]).value
    packed = PACKED_ATTRIBUTE in op.attributes
    element = "double" if str(ir.MemRefType(op.operands[-1].type).element_type) == "f64" \
        else "float"
    bias_view = bias[0].cname if bias else f"lapis::no_bias<{element}, memory_space>()"
    folded = ", ".join(part for part, present in (
        ("bias", init == "bias"), (activation, activation != "none"),
        ("residual add", residual is not None)) if present)
    em.include("lapis/gemm.hpp" if packed else "lapis/gemm_tf32.hpp")
    em.include("lapis/conv.hpp")   # lapis::no_bias
    em.kernel_count += 1
    head = em.backend == "cuda" and ir.MemRefType(op.operands[1].type).shape[0] < 16
    # CUDA --precision bf16 (lowering/linear.py): bfloat16 operands, or a head reading x in
    # bfloat16 (float32 W and products)
    bf16 = BF16_ATTRIBUTE in op.attributes or _element(op.operands[0]) == "bf16"
    where = "packed host kernel" if packed else \
        "CUDA cores, a warp a row" if head else "tensor cores"  # lapis::linear's rule
    if (packed and em.precision == "bf16" and element == "float") or \
            BF16_ATTRIBUTE in op.attributes:
        where += ", bfloat16 operands"
    elif bf16:
        where += ", x in bfloat16"
    em.line(f"// {location_label(op) or op.name}: linear layer on the {where}"
            + (f" ({folded} folded in)" if folded else ""))
    rounded = _tf32_rounded(em, op, weight.cname)
    if rounded != "none":
        em.line("// " + {"inputs": "x and W hold tf32 values, read as they are",
                         "output": "y stored rounded to tf32: only linear layers read it",
                         "inputs_and_output": "x and W hold tf32 values, read as they are; y "
                         "stored rounded to tf32"}[rounded])
    if bf16:
        em.line("// " + ("y stored in bfloat16: only linear layers read it"
                         if _element(op.operands[-1]) == "bf16" else "y in float32"))
    call = "lapis::linear_packed<execution_space>" if packed else \
        "lapis::linear<execution_space, lapis::Precision::bf16>" if bf16 else \
        em.tuned_kernel("linear", cuda_bf16_as="fp32")
    em.line(f'{call}(exec, "{em.kernel_label(op, "linear")}", {source.cname}, '
            f"{weight.cname}, {bias_view}, "
            + (f"{residual.cname}, " if residual is not None else "")
            + f"{target.cname}, lapis::ConvInit::{init}, lapis::Activation::{activation}"
            + (f", lapis::Tf32Rounded::{rounded}" if rounded != "none" else "") + ");")


def _element(value) -> str:
    from torch_mlir import ir
    return str(ir.MemRefType(value.type).element_type)


@handles(BF16_ROUND)
def _round_to_bf16(em: KokkosEmitter, op) -> None:
    """`lapis.round_to_bf16(x, y)`: x into y in bfloat16, for a linear layer that reads it."""
    source, target = (em.memref(v) for v in op.operands)
    em.include("lapis/gemm_tf32.hpp")
    em.kernel_count += 1
    em.line(f"// {location_label(op) or op.name}: the next linear layer's input rounded to "
            "bfloat16 (its tensor cores read bfloat16)")
    em.line(f'lapis::round_to_bfloat16(exec, "{em.kernel_label(op, "to_bf16")}", '
            f"{source.cname}, {target.cname});")


def _tf32_rounded(em: KokkosEmitter, op, weight: str) -> str:
    """--precision tf32 on CUDA, a layer of a chain of linear layers (lowering/linear.py
    mark_linear_readers): `inputs` where its x was stored rounded to tf32 by the layer before
    and its W rounded at export (tuned_ops.read_as_tf32), `output` where only linear layers
    read its y, both, or none (lapis::Tf32Rounded, gemm_tf32.hpp)."""
    if em.backend != "cuda" or em.precision != "tf32":
        return "none"
    inputs = READS_LINEAR in op.attributes and weight in em.tf32_weights
    output = FEEDS_LINEAR in op.attributes
    return {(False, False): "none", (True, False): "inputs", (False, True): "output",
            (True, True): "inputs_and_output"}[(inputs, output)]


@handles(LINEAR_CHAIN)
def _linear_chain(em: KokkosEmitter, op) -> None:
    """`lapis.linear_chain(x, W1, bias1, ..., y) {activations}`: consecutive linear layers, each
    one's output the next one's input, run a block of rows at a time through all of them."""
    from torch_mlir import ir
    source, *layers, target = (em.memref(v) for v in op.operands)
    activations = ir.StringAttr(op.attributes["activations"]).value.split(",")
    em.include("lapis/gemm.hpp")
    em.kernel_count += 1
    operands = ", bfloat16 operands" if em.precision == "bf16" else ""
    em.line(f"// {location_label(op) or op.name}: {len(activations)} linear layers on the "
            f"packed host kernel{operands}, a block of rows through all of them at a time")
    em.line(f'lapis::linear_chain<execution_space>(exec, "{em.kernel_label(op, "linear_chain")}"'
            f", {source.cname}, {target.cname},")
    for index, activation in enumerate(activations):
        weight, bias = layers[2 * index], layers[2 * index + 1]
        end = ");" if index + 1 == len(activations) else ","
        em.line(f"    lapis::chain_layer({weight.cname}, {bias.cname}, "
                f"lapis::Activation::{activation}){end}")
