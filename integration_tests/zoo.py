"""The zoo: surrogates that simulation codes embed, as small models with random weights (fixed
seeds). Each entry of ZOO says how to build the model, its example inputs, which of its input
dimensions are dynamic, which formats to export it through and the sizes to run it at;
test_zoo.py exports every (model, format) pair, builds them in one batch and compares with
PyTorch. A new family is one more ZooModel in the table.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.nn import functional as F

# Formats a model is exported through: torch.export (.pt2), TorchScript (torch.jit.trace),
# ONNX by torch.onnx.export(dynamo=True) and by the legacy TorchScript-based exporter.
FORMATS = ("pt2", "torchscript", "onnx_dynamo", "onnx_legacy")


class MessagePassing(nn.Module):
    """One round of a graph network on a mesh or particle graph: messages from the source
    node's features along each edge, summed at the destination node, then a node update."""

    def __init__(self, features: int = 8, hidden: int = 16, aggregate: str = "scatter_add"):
        super().__init__()
        self.aggregate = aggregate
        self.message = nn.Linear(2 * features, hidden)
        self.update = nn.Linear(features + hidden, features)

    def forward(self, x, edge_index):
        src, dst = edge_index[0], edge_index[1]
        messages = torch.relu(self.message(torch.cat([x[src], x.index_select(0, dst)], dim=1)))
        summed = torch.zeros(x.shape[0], messages.shape[1], dtype=x.dtype)
        if self.aggregate == "index_add":
            summed = summed.index_add(0, dst, messages)
        else:
            summed = summed.scatter_add(0, dst[:, None].expand(-1, messages.shape[1]), messages)
        return x + self.update(torch.cat([x, summed], dim=1))


class DeepONet(nn.Module):
    """Branch net on the sensor values, trunk net on the query points, their inner product
    plus a scalar output bias (a 0-d parameter)."""

    def __init__(self, sensors: int = 16, coords: int = 2, width: int = 32):
        super().__init__()
        self.branch = nn.Sequential(nn.Linear(sensors, width), nn.Tanh(), nn.Linear(width, width))
        self.trunk = nn.Sequential(nn.Linear(coords, width), nn.Tanh(), nn.Linear(width, width))
        self.bias = nn.Parameter(torch.zeros(()))
        with torch.no_grad():
            self.bias.fill_(0.25)

    def forward(self, u, y):
        return torch.einsum("bi,pi->bp", self.branch(u), self.trunk(y)) + self.bias


class FourierPINN(nn.Module):
    """A physics-informed MLP on random Fourier features of (x, t): sin and cos of
    2*pi*B*x, then tanh layers. Computes in float64 (PINNs are often trained so)."""

    def __init__(self, coords: int = 2, frequencies: int = 16, width: int = 32):
        super().__init__()
        self.register_buffer("frequencies", torch.randn(coords, frequencies))
        self.net = nn.Sequential(nn.Linear(2 * frequencies, width), nn.Tanh(),
                                 nn.Linear(width, width), nn.Tanh(), nn.Linear(width, 1))
        self.scale = 0.5

    def forward(self, x):
        projected = 2 * math.pi * x @ self.frequencies
        features = torch.cat([torch.sin(projected), torch.cos(projected)], dim=-1)
        return self.net(features) * self.scale


class Scalars(nn.Module):
    """0-d tensors of every kind: a parameter, float and int64 buffers, a constant made in
    forward() (lifted by the exporters), Python floats, and a 0-d output."""

    def __init__(self, features: int = 4):
        super().__init__()
        self.fc = nn.Linear(features, features)
        self.gain = nn.Parameter(torch.tensor(1.5))
        self.register_buffer("shift", torch.tensor(0.25))
        self.register_buffer("steps", torch.tensor(3))

    def forward(self, x):
        y = self.fc(x) * self.gain + self.shift
        y = y * self.steps + torch.tensor(2 * math.pi)
        return y * 0.5, (y * self.gain).sum()


def _block(inputs: int, outputs: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(inputs, outputs, 3, padding=1), nn.ReLU(),
                         nn.Conv2d(outputs, outputs, 3, padding=1), nn.ReLU())


class UNet(nn.Module):
    """Two levels: down by max pooling, up by ConvTranspose2d (or bilinear upsampling and a
    1x1 convolution), skip connections concatenated."""

    def __init__(self, channels: int = 2, width: int = 8, bilinear: bool = False):
        super().__init__()
        self.bilinear = bilinear
        self.enc1, self.enc2 = _block(channels, width), _block(width, 2 * width)
        self.bottom = _block(2 * width, 4 * width)
        if bilinear:
            self.up2 = nn.Conv2d(4 * width, 2 * width, 1)
            self.up1 = nn.Conv2d(2 * width, width, 1)
        else:
            self.up2 = nn.ConvTranspose2d(4 * width, 2 * width, 2, stride=2)
            self.up1 = nn.ConvTranspose2d(2 * width, width, 2, stride=2)
        self.dec2, self.dec1 = _block(4 * width, 2 * width), _block(2 * width, width)
        self.head = nn.Conv2d(width, channels, 1)

    def _up(self, layer, x):
        if self.bilinear:
            x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
        return layer(x)

    def forward(self, x):
        e1 = self.enc1(x)
        e2 = self.enc2(F.max_pool2d(e1, 2))
        b = self.bottom(F.max_pool2d(e2, 2))
        d2 = self.dec2(torch.cat([self._up(self.up2, b), e2], dim=1))
        d1 = self.dec1(torch.cat([self._up(self.up1, d2), e1], dim=1))
        return self.head(d1)


class Encoder(nn.Module):
    """A 2-layer transformer encoder over a short sequence of tokens, optionally with a
    key-padding mask (True: padding)."""

    def __init__(self, width: int = 32, heads: int = 4, masked: bool = False):
        super().__init__()
        layer = nn.TransformerEncoderLayer(width, heads, 64, dropout=0.0, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
        self.masked = masked

    def forward(self, x, *mask):
        return self.encoder(x, src_key_padding_mask=mask[0] if mask else None)


class FieldModel3D(nn.Module):
    """Conv3d + GroupNorm + GELU on a 3-D field."""

    def __init__(self, channels: int = 2, width: int = 8):
        super().__init__()
        self.conv1 = nn.Conv3d(channels, width, 3, padding=1)
        self.norm = nn.GroupNorm(2, width)
        self.conv2 = nn.Conv3d(width, channels, 3, padding=1)

    def forward(self, x):
        return self.conv2(F.gelu(self.norm(self.conv1(x))))


class SequenceModel(nn.Module):
    """A 2-layer LSTM over a short sequence, its last hidden state through a linear head."""

    def __init__(self, features: int = 4, hidden: int = 16):
        super().__init__()
        self.lstm = nn.LSTM(features, hidden, num_layers=2, batch_first=True)
        self.head = nn.Linear(hidden, 1)

    def forward(self, x):
        out, _ = self.lstm(x)
        return self.head(out[:, -1])


class CellSolve(nn.Module):
    """A per-cell update around a batched 3x3 solve: a small MLP gives the right-hand side."""

    def __init__(self, size: int = 3, hidden: int = 16):
        super().__init__()
        self.rhs = nn.Sequential(nn.Linear(size, hidden), nn.Tanh(), nn.Linear(hidden, size))

    def forward(self, A, x):
        return torch.linalg.solve(A, self.rhs(x)) + x


def _cells(count: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Well-conditioned 3x3 matrices (a random one plus 3 I) and a state per cell."""
    A = _randn(count, 3, 3, seed=seed) + 3 * torch.eye(3)
    return A, _randn(count, 3, seed=seed + 1)


def _graph(nodes: int, edges: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(nodes, 8, generator=generator)
    edge_index = torch.randint(0, max(nodes, 1), (2, edges), generator=generator)
    return x, edge_index


def _padding_mask() -> torch.Tensor:
    mask = torch.zeros(2, 6, dtype=torch.bool)
    mask[0, 4:] = True
    mask[1, 5:] = True
    return mask


def _randn(*shape: int, seed: int = 1, dtype=torch.float32) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


@dataclass
class ZooModel:
    name: str                                     # package name: a C identifier
    build: Callable[[], nn.Module]
    inputs: Callable[[], tuple]                   # the example inputs it is exported with
    formats: tuple[str, ...] = FORMATS
    # Per input, {dimension: size name} of its dynamic dimensions (the same name: one size).
    dynamic: tuple[dict[int, str], ...] = ()
    # More inputs to run the package at (dynamic models: other sizes, 0 where meaningful).
    runs: Callable[[], list[tuple]] = field(default=lambda: [])
    dtype: torch.dtype = torch.float32
    # Formats whose file computes differently from the module, so compared with the file's
    # own reference (onnx.reference) instead of eager PyTorch.
    file_reference: tuple[str, ...] = ()

    @property
    def tolerance(self) -> float:
        return 1e-10 if self.dtype == torch.float64 else 1e-4

    def model(self) -> nn.Module:
        torch.manual_seed(0)
        return self.build().to(self.dtype).eval()


ZOO = [
    ZooModel("gnn", MessagePassing, lambda: _graph(6, 10, seed=1)),
    ZooModel("gnn_scatter_dynamic", MessagePassing, lambda: _graph(6, 10, seed=1),
             formats=("pt2", "onnx_dynamo", "onnx_legacy"),
             dynamic=({0: "nodes"}, {1: "edges"}),
             runs=lambda: [_graph(3, 5, seed=2), _graph(50, 200, seed=3)]),
    # index_add: the legacy ONNX exporter refuses it (duplicate indices)
    ZooModel("gnn_dynamic", lambda: MessagePassing(aggregate="index_add"),
             lambda: _graph(6, 10, seed=1), formats=("pt2", "torchscript", "onnx_dynamo"),
             dynamic=({0: "nodes"}, {1: "edges"}),
             runs=lambda: [_graph(3, 5, seed=2), _graph(50, 200, seed=3), _graph(6, 0, seed=4),
                           _graph(0, 0, seed=5)]),
    ZooModel("deeponet", DeepONet, lambda: (_randn(4, 16), _randn(5, 2, seed=2))),
    ZooModel("scalars", Scalars, lambda: (_randn(3, 4),)),
    # torch.onnx's dynamo exporter stores 2*pi as a float32 number in the float64 graph
    # (6.2831854820251465), which moves the outputs by ~1e-7 from PyTorch's.
    ZooModel("pinn", FourierPINN, lambda: (_randn(16, 2, dtype=torch.float64),),
             dtype=torch.float64, file_reference=("onnx_dynamo",)),
    ZooModel("unet", UNet, lambda: (_randn(1, 2, 16, 16),)),
    ZooModel("unet_bilinear", lambda: UNet(bilinear=True), lambda: (_randn(1, 2, 16, 16),)),
    ZooModel("encoder", Encoder, lambda: (_randn(2, 6, 32),)),
    ZooModel("encoder_masked", lambda: Encoder(masked=True),
             lambda: (_randn(2, 6, 32), _padding_mask())),
    ZooModel("field3d", FieldModel3D, lambda: (_randn(1, 2, 6, 6, 6),)),
    ZooModel("lstm", SequenceModel, lambda: (_randn(2, 8, 4),)),
    # torch.onnx writes no linalg.solve (neither exporter has a conversion for it).
    ZooModel("cell_solve", CellSolve, lambda: _cells(8, seed=3),
             formats=("pt2", "torchscript"), dynamic=({0: "cells"}, {0: "cells"}),
             runs=lambda: [_cells(1, seed=4), _cells(100, seed=5), _cells(0, seed=6)]),
]


def by_name(name: str) -> ZooModel:
    return next(entry for entry in ZOO if entry.name == name)


def save(entry: ZooModel, fmt: str, path) -> None:
    """Write `entry` as `fmt` to `path`, with its dynamic dimensions dynamic where the format
    records them (TorchScript records none: the exporter's --input-shape says)."""
    import warnings

    model, inputs = entry.model(), entry.inputs()
    names = [f"input{index}" for index in range(len(inputs))]
    if fmt == "pt2":
        dims = {}
        shapes = tuple({dim: dims.setdefault(name, torch.export.Dim(name, min=0, max=1 << 20))
                        for dim, name in spec.items()} or None
                       for spec in entry.dynamic) or None
        torch.export.save(torch.export.export(model, inputs, dynamic_shapes=shapes), str(path))
    elif fmt == "torchscript":
        # check_trace=False: the encoder's re-trace check trips on its fast-path branches
        torch.jit.save(torch.jit.trace(model, inputs, check_trace=False), str(path))
    elif fmt in ("onnx_dynamo", "onnx_legacy"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if fmt == "onnx_dynamo":
                dims = {}
                shapes = tuple({dim: dims.setdefault(name, torch.export.Dim(name))
                                for dim, name in spec.items()} or None
                               for spec in entry.dynamic) or None
                torch.onnx.export(model, inputs, str(path), dynamo=True, input_names=names,
                                  dynamic_shapes=shapes, verbose=False)
            else:
                axes = {name: dict(spec) for name, spec in zip(names, entry.dynamic) if spec}
                torch.onnx.export(model, inputs, str(path), dynamo=False, input_names=names,
                                  dynamic_axes=axes or None, opset_version=17)
    else:
        raise ValueError(f"unknown format {fmt}")


def input_shapes(entry: ZooModel) -> list[str]:
    """--input-shape arguments for a TorchScript file: a letter per dynamic dimension."""
    letters: dict[str, str] = {}
    shapes = []
    for index, tensor in enumerate(entry.inputs()):
        spec = entry.dynamic[index] if index < len(entry.dynamic) else {}
        dims = [letters.setdefault(spec[d], "NEMKLP"[len(letters)]) if d in spec else str(n)
                for d, n in enumerate(tensor.shape)]
        shapes.append("x".join(dims) or "scalar")
    return shapes
