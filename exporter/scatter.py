"""Row scatter-adds: `out = self; out[index[e]] += source[e]` over the rows of a graph's edges
or a potential's pairs, as one tuned Kokkos kernel (kokkos_support/lapis/scatter.hpp).

Graph networks sum messages into their target nodes, and neural potentials sum pair terms into
atoms, through `index_add(0, index, source)`, `scatter_add(0, index expanded over the row,
source)` or `index_put((index,), source, accumulate=True)`; the backward of every
`index_select` / `x[index]` gather is one too, so a force field has one per gather. Left to
torch-mlir, each becomes a tensor of coordinates, a copy per coordinate and a loop on one
thread. importer/dense_passes.py replaces them by the op below (any row shape, a 1-D int64
index of any length, 0 included); along the pipeline it follows the CSR products' path
(exporter/sparse.py): a call of a declaration through import (importer/custom_ops.py), a
`lapis.index_add` op writing its result after bufferization (lowering/tuned_calls.py), a call
of lapis/scatter.hpp in the C++ (emit/dense_handlers.py).

The kernel adds each source row with atomics on GPUs and into per-thread copies on host
backends (summed afterwards), so the order of the additions, and with it the last bits of a
float sum, is not fixed. An index outside [0, rows) is skipped (PyTorch raises).
"""
from __future__ import annotations

import torch

# Custom op -> (callee name in the IR, lapis dialect op after bufferization, C++ function).
OPS = {"lapis.index_add": ("lapis_index_add", "lapis.index_add", "lapis::index_add_rows")}


@torch.library.custom_op("lapis::index_add", mutates_args=())
def index_add(self: torch.Tensor, index: torch.Tensor, source: torch.Tensor) -> torch.Tensor:
    """self with source[e] added to row index[e], for self [rows, ...], index [E] int64 and
    source [E, ...] of self's row shape."""
    return self.index_add(0, index, source).contiguous()


@index_add.register_fake
def _index_add_fake(self, index, source):
    return self.new_empty(self.shape)
