"""LayerNorm as one kernel (kokkos_support/lapis/layer_norm.hpp): per row, the mean, the
variance of the deviations and the affine output in one pass over the row's memory, instead of
the nine kernels (a float64 var_mean among them) of torch-mlir's decomposition.

importer/dense_passes.py replaces `aten.layer_norm` with both a weight and a bias (nn.LayerNorm's
default; transformers, MLP-Mixers, graph networks) over any trailing shape: the input is viewed
as [rows, features], the row count may be dynamic, and eps travels as a one-element tensor of
the input's type. Without weight or bias the decomposition stays. The op follows the CSR
products' path (exporter/sparse.py) to `lapis.layer_norm` after bufferization
(lowering/tuned_calls.py), emitted by emit/dense_handlers.py.
"""
from __future__ import annotations

import torch

# Custom op -> (callee name in the IR, lapis dialect op after bufferization, C++ function).
OPS = {"lapis.layer_norm": ("lapis_layer_norm", "lapis.layer_norm", "lapis::layer_norm_rows")}


@torch.library.custom_op("lapis::layer_norm", mutates_args=())
def layer_norm(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor,
               eps: torch.Tensor) -> torch.Tensor:
    """(x - mean) / sqrt(var + eps) * weight + bias over each row of x [rows, features]."""
    return torch.nn.functional.layer_norm(x, x.shape[-1:], weight, bias,
                                          float(eps.reshape(-1)[0])).contiguous()


@layer_norm.register_fake
def _layer_norm_fake(x, weight, bias, eps):
    return x.new_empty(x.shape)
