"""Attention as one fused kernel (kokkos_support/lapis/attention.hpp): softmax(q k^T + mask) v
per batch entry and head with an online softmax, so the [L, S] score matrix never goes to
memory, instead of the two batched products, the softmax's five passes and the copies that
torch's decomposition of `scaled_dot_product_attention` makes.

importer/dense_passes.py replaces `aten.scaled_dot_product_attention` (what nn.MultiheadAttention,
nn.TransformerEncoder / Decoder and F.scaled_dot_product_attention export to) when q, k and v
are [B, H, L, D] or [B, L, D] with the same batch and heads, D and DV at most MAX_HEAD_DIM,
dropout 0 (a model in eval mode) and no grouped-query heads: q is multiplied by the scale
(1 / sqrt(D) unless given), and the call is one of the ops below: no mask, a causal one
(is_causal=True), or attn_mask (boolean, True keeps a key, or float, added to the scores)
viewed as [B|1, H|1, L|1, S] without broadcasting it in memory. The rest stays torch's
decomposition. Along the pipeline the ops follow the CSR products' path (exporter/sparse.py)
to a `lapis.attention*` op after bufferization (lowering/tuned_calls.py), emitted by
emit/dense_handlers.py with D and DV as template arguments.
"""
from __future__ import annotations

import torch

MAX_HEAD_DIM = 256

# Custom op -> (callee name in the IR, lapis dialect op after bufferization, C++ function).
OPS = {
    "lapis.attention": ("lapis_attention", "lapis.attention", "lapis::attention"),
    "lapis.attention_causal": ("lapis_attention_causal", "lapis.attention_causal",
                               "lapis::attention_causal"),
    "lapis.attention_masked": ("lapis_attention_masked", "lapis.attention_masked",
                               "lapis::attention_masked"),
}


def _reference(q, k, v, mask=None, causal=False):
    """What the kernel computes, in torch (q already scaled); fully masked rows give 0."""
    scores = q @ k.transpose(-2, -1)
    if causal:
        keep = torch.ones(q.shape[-2], k.shape[-2], dtype=torch.bool).tril()
        scores = scores.masked_fill(~keep, float("-inf"))
    elif mask is not None:
        scores = scores.masked_fill(~mask, float("-inf")) if mask.dtype == torch.bool \
            else scores + mask
    weights = torch.softmax(scores, dim=-1)
    return torch.nan_to_num(weights, nan=0.0) @ v


@torch.library.custom_op("lapis::attention", mutates_args=())
def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    return _reference(q, k, v).contiguous()


@torch.library.custom_op("lapis::attention_causal", mutates_args=())
def attention_causal(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    return _reference(q, k, v, causal=True).contiguous()


@torch.library.custom_op("lapis::attention_masked", mutates_args=())
def attention_masked(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                     mask: torch.Tensor) -> torch.Tensor:
    return _reference(q, k, v, mask=mask).contiguous()


def _fake(q, k, v, *mask):
    return q.new_empty((*q.shape[:-1], v.shape[-1]))


for _op in (attention, attention_causal, attention_masked):
    _op.register_fake(_fake)
