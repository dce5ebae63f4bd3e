"""Recurrent layers as loops: the recurrence of an LSTM or GRU layer as one custom op, a loop
over the steps in C++ (kokkos_support/lapis/recurrent.hpp) instead of the per-step kernels
torch.export's decompositions unroll it into.

importer/dense_passes.py rewrites `nn.LSTM` / `nn.GRU` (any number of layers, either direction,
batch_first or not, with or without biases) into, per layer and direction, the input projection
of all steps at once, `pre = x W_ih^T + b_ih` [batch, steps, gates * hidden] (a matrix
product), and one of the ops below for the part that depends on the previous step. PyTorch's
gate order and equations:

    LSTM  (i, f, g, o) = pre_t + h W_hh^T + b_hh;  c = sig(f) c + sig(i) tanh(g);
          h = sig(o) tanh(c)
    GRU   (r, z) = sig(pre_t + h W_hh^T + b_hh) for their gates; n = tanh(pre_n + r (h W_hn^T +
          b_hn));  h = (1 - z) n + z h

They follow the CSR products' path (exporter/sparse.py) to a `lapis.*` op after
bufferization (lowering/tuned_calls.py), emitted by emit/dense_handlers.py.
"""
from __future__ import annotations

import torch

OPS = {
    "lapis.lstm_recurrence": ("lapis_lstm_recurrence", "lapis.lstm_recurrence",
                              "lapis::lstm_recurrence"),
    "lapis.gru_recurrence": ("lapis_gru_recurrence", "lapis.gru_recurrence",
                             "lapis::gru_recurrence"),
}


@torch.library.custom_op("lapis::lstm_recurrence", mutates_args=())
def lstm_recurrence(pre: torch.Tensor, w_hh: torch.Tensor, b_hh: torch.Tensor,
                    h0: torch.Tensor, c0: torch.Tensor
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(h of every step [batch, steps, hidden], last h, last c) for pre [batch, steps, 4H]."""
    h, c = h0, c0
    outputs = []
    for step in range(pre.shape[1]):
        i, f, g, o = (pre[:, step] + h @ w_hh.T + b_hh).chunk(4, dim=1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        outputs.append(h)
    out = torch.stack(outputs, 1) if outputs else pre.new_empty(h0.shape[0], 0, h0.shape[1])
    return out, h.clone(), c.clone()


@torch.library.custom_op("lapis::gru_recurrence", mutates_args=())
def gru_recurrence(pre: torch.Tensor, w_hh: torch.Tensor, b_hh: torch.Tensor,
                   h0: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(h of every step [batch, steps, hidden], last h) for pre [batch, steps, 3H]."""
    h = h0
    outputs = []
    for step in range(pre.shape[1]):
        x_r, x_z, x_n = pre[:, step].chunk(3, dim=1)
        h_r, h_z, h_n = (h @ w_hh.T + b_hh).chunk(3, dim=1)
        r, z = torch.sigmoid(x_r + h_r), torch.sigmoid(x_z + h_z)
        h = (1 - z) * torch.tanh(x_n + r * h_n) + z * h
        outputs.append(h)
    out = torch.stack(outputs, 1) if outputs else pre.new_empty(h0.shape[0], 0, h0.shape[1])
    return out, h.clone()


@lstm_recurrence.register_fake
def _lstm_fake(pre, w_hh, b_hh, h0, c0):
    return pre.new_empty(pre.shape[0], pre.shape[1], h0.shape[1]), h0.new_empty(h0.shape), \
        c0.new_empty(c0.shape)


@gru_recurrence.register_fake
def _gru_fake(pre, w_hh, b_hh, h0):
    return pre.new_empty(pre.shape[0], pre.shape[1], h0.shape[1]), h0.new_empty(h0.shape)
