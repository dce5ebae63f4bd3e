"""Fourier neural operators as their papers write them (Li et al., 2021): a lifting layer,
spectral convolutions with complex weights on the lowest modes of an rFFT, a pointwise skip,
GELU, a projection. Random weights, fixed seeds; shared by the FFT tests and the zoo."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


class SpectralConv1d(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, modes: int,
                 dtype=torch.cfloat):
        super().__init__()
        self.modes = modes
        scale = 1 / (in_channels * out_channels)
        self.weights = nn.Parameter(scale * torch.rand(in_channels, out_channels, modes,
                                                       dtype=dtype))

    def forward(self, x):
        x_ft = torch.fft.rfft(x)
        out_ft = torch.zeros(x.shape[0], self.weights.shape[1], x.size(-1) // 2 + 1,
                             dtype=self.weights.dtype, device=x.device)
        out_ft[:, :, :self.modes] = torch.einsum("bix,iox->box", x_ft[:, :, :self.modes],
                                                 self.weights)
        return torch.fft.irfft(out_ft, n=x.size(-1))


class SpectralConv2d(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, modes1: int, modes2: int):
        super().__init__()
        self.modes1, self.modes2 = modes1, modes2
        scale = 1 / (in_channels * out_channels)
        self.weights1 = nn.Parameter(scale * torch.rand(in_channels, out_channels, modes1,
                                                        modes2, dtype=torch.cfloat))
        self.weights2 = nn.Parameter(scale * torch.rand(in_channels, out_channels, modes1,
                                                        modes2, dtype=torch.cfloat))

    def forward(self, x):
        m1, m2 = self.modes1, self.modes2
        x_ft = torch.fft.rfft2(x)
        out_ft = torch.zeros(x.shape[0], self.weights1.shape[1], x.size(-2), x.size(-1) // 2 + 1,
                             dtype=torch.cfloat, device=x.device)
        out_ft[:, :, :m1, :m2] = torch.einsum("bixy,ioxy->boxy", x_ft[:, :, :m1, :m2],
                                              self.weights1)
        out_ft[:, :, -m1:, :m2] = torch.einsum("bixy,ioxy->boxy", x_ft[:, :, -m1:, :m2],
                                               self.weights2)
        return torch.fft.irfft2(out_ft, s=(x.size(-2), x.size(-1)))


class FNO2d(nn.Module):
    """Input [batch, x, y, 3] (the field and the two coordinates), output [batch, x, y, 1]."""

    def __init__(self, modes: int = 12, width: int = 32, layers: int = 2):
        super().__init__()
        self.fc0 = nn.Linear(3, width)
        self.spectral = nn.ModuleList(SpectralConv2d(width, width, modes, modes)
                                      for _ in range(layers))
        self.skip = nn.ModuleList(nn.Conv2d(width, width, 1) for _ in range(layers))
        self.fc1 = nn.Linear(width, 128)
        self.fc2 = nn.Linear(128, 1)

    def forward(self, x):
        x = self.fc0(x).permute(0, 3, 1, 2)
        for index, (spectral, skip) in enumerate(zip(self.spectral, self.skip)):
            x = spectral(x) + skip(x)
            if index < len(self.spectral) - 1:
                x = F.gelu(x)
        x = x.permute(0, 2, 3, 1)
        return self.fc2(F.gelu(self.fc1(x)))


class FNO1d(nn.Module):
    """Input [batch, x, 2] (the field and the coordinate), output [batch, x, 1]."""

    def __init__(self, modes: int = 16, width: int = 32, layers: int = 2,
                 dtype=torch.float32):
        super().__init__()
        complex_dtype = torch.cdouble if dtype == torch.float64 else torch.cfloat
        self.fc0 = nn.Linear(2, width, dtype=dtype)
        self.spectral = nn.ModuleList(SpectralConv1d(width, width, modes, complex_dtype)
                                      for _ in range(layers))
        self.skip = nn.ModuleList(nn.Conv1d(width, width, 1, dtype=dtype)
                                  for _ in range(layers))
        self.fc1 = nn.Linear(width, 64, dtype=dtype)
        self.fc2 = nn.Linear(64, 1, dtype=dtype)

    def forward(self, x):
        x = self.fc0(x).permute(0, 2, 1)
        for index, (spectral, skip) in enumerate(zip(self.spectral, self.skip)):
            x = spectral(x) + skip(x)
            if index < len(self.spectral) - 1:
                x = F.gelu(x)
        x = x.permute(0, 2, 1)
        return self.fc2(F.gelu(self.fc1(x)))


def fno2d(seed: int = 0) -> tuple[nn.Module, tuple[int, ...]]:
    """The standard FNO2d (2 spectral layers, 12 modes, width 32) and its 64x64 input shape."""
    torch.manual_seed(seed)
    return FNO2d().eval().requires_grad_(False), (1, 64, 64, 3)


def fno1d(seed: int = 0, dtype=torch.float32) -> tuple[nn.Module, tuple[int, ...]]:
    torch.manual_seed(seed)
    return FNO1d(dtype=dtype).eval().requires_grad_(False), (2, 128, 2)
