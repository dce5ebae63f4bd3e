"""Sequence surrogates and small dense linear algebra, as simulation codes embed them: a
transformer encoder (with and without a key-padding mask), a 2-layer LSTM and GRU over a
sequence, and per-cell batched solves. Random weights, fixed seeds; each builder returns the
model and its example inputs, so that other test tables can import them."""
from __future__ import annotations

import torch
from torch import nn


class TransformerEncoder(nn.Module):
    """nn.TransformerEncoder, 2 layers, d_model 64, 4 heads; `masked` adds a key-padding mask
    computed from the input (the last `padding` positions of every sequence are padding)."""

    def __init__(self, masked: bool = False, padding: int = 3):
        super().__init__()
        layer = nn.TransformerEncoderLayer(d_model=64, nhead=4, dim_feedforward=128,
                                           dropout=0.0, batch_first=True)
        self.enc = nn.TransformerEncoder(layer, num_layers=2, enable_nested_tensor=False)
        self.masked = masked
        self.padding = padding

    def forward(self, x):
        if not self.masked:
            return self.enc(x)
        positions = torch.arange(x.shape[1], device=x.device)
        mask = (positions >= x.shape[1] - self.padding).unsqueeze(0).expand(x.shape[0], -1)
        return self.enc(x, src_key_padding_mask=mask)


class Recurrent(nn.Module):
    """A 2-layer LSTM or GRU (hidden 64, batch_first) and a linear head on every step; or,
    `bidirectional`, one layer each way over [steps, batch, features] (batch_first=False),
    returning the last hidden states too."""

    def __init__(self, cell: str = "lstm", features: int = 8, hidden: int = 64,
                 bidirectional: bool = False):
        super().__init__()
        kind = {"lstm": nn.LSTM, "gru": nn.GRU}[cell]
        self.bidirectional = bidirectional
        self.rnn = kind(features, hidden, num_layers=1 if bidirectional else 2,
                        batch_first=not bidirectional, bidirectional=bidirectional)
        self.head = nn.Linear(hidden * (2 if bidirectional else 1), 4)

    def forward(self, x):
        out, state = self.rnn(x)
        if self.bidirectional:
            h_n = state[0] if isinstance(state, tuple) else state
            return self.head(out), h_n
        return self.head(out)


def transformer(masked: bool = False, seed: int = 0):
    torch.manual_seed(seed)
    model = TransformerEncoder(masked).eval()
    x = torch.randn(2, 10, 64, generator=torch.Generator().manual_seed(seed + 1))
    return model, (x,)


def recurrent(cell: str = "lstm", steps: int = 50, seed: int = 0,
              bidirectional: bool = False):
    torch.manual_seed(seed)
    model = Recurrent(cell, hidden=16 if bidirectional else 64,
                      bidirectional=bidirectional).eval()
    shape = (steps, 3, 8) if bidirectional else (4, steps, 8)
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(seed + 1))
    return model, (x,)
