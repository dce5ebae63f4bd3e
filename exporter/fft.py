"""FFTs as one kernel (kokkos_support/lapis/fft.hpp): a Stockham transform of radix 4, 2, 3 and 5
per line, O(n log n), where the dense DFT product of importer/complex_ops.py costs O(n * kept
outputs) per line.

complex_ops.py turns every torch.fft transform into one-dimensional transforms along the last
axis of [lines, n(, 2)] and asks `prefers_fft` which way each goes: the kernel for a (nearly)
full transform of a length with only the factors 2, 3 and 5, the product with a DFT matrix
for a truncated one (a Fourier neural operator keeps a few modes) or a length with another
prime factor. The ops below follow the CSR products' path (exporter/sparse.py) to a
`lapis.fft*` op after bufferization (lowering/tuned_calls.py), emitted by
emit/dense_handlers.py. Each takes the signal, a twiddle table exp(-2 pi i k / n) of the
transform's length (made at export, in the weight blob) and the norm's scale as a one-element
tensor; an input shorter than n is zero-padded (for irfft: the spectrum beyond it is zero),
and rfft writes the one-sided n // 2 + 1 coefficients.
"""
from __future__ import annotations

import math

import numpy as np
import torch

# Custom op -> (callee name in the IR, lapis dialect op after bufferization, C++ function).
OPS = {
    "lapis.fft": ("lapis_fft", "lapis.fft", "lapis::fft"),
    "lapis.ifft": ("lapis_ifft", "lapis.ifft", "lapis::ifft"),
    "lapis.rfft": ("lapis_rfft", "lapis.rfft", "lapis::rfft"),
    "lapis.irfft": ("lapis_irfft", "lapis.irfft", "lapis::irfft"),
}

# The rule, in real multiply-adds per line: the dense product costs (real inputs) x (real
# outputs) of its matrix; the kernel about FFT_COST * n log2 n. FFT_COST is measured
# (benchmarks/fft.py, results_fft.md): the dense product runs the tuned matrix product, the
# kernel's passes go through scratch memory and twiddle loads, so a flop of it costs more.
FFT_COST = 6.0
RADICES = (4, 2, 3, 5)


def radices(n: int) -> list[int] | None:
    """The passes of fft.hpp for length n (its `factor`), or None if n has a prime factor
    other than 2, 3 and 5."""
    passes, rest = [], n
    for radix in RADICES:
        while rest % radix == 0:
            passes.append(radix)
            rest //= radix
    return passes if rest == 1 and n > 1 else None


def prefers_fft(n: int, inputs: int, outputs: int, real_in: bool, real_out: bool) -> bool:
    """Whether a length-n transform of `inputs` given and `outputs` kept entries per line is
    cheaper as the kernel than as the dense product with its DFT matrix."""
    if radices(n) is None:
        return False
    dense = inputs * (1 if real_in else 2) * outputs * (1 if real_out else 2)
    return FFT_COST * n * math.log2(n) < dense


def twiddles(n: int, dtype: torch.dtype) -> torch.Tensor:
    """[n, 2]: exp(-2 pi i k / n), k = 0 .. n-1, as (re, im) pairs."""
    angle = -2 * np.pi * np.arange(n) / n
    return torch.from_numpy(np.stack([np.cos(angle), np.sin(angle)], 1)).to(dtype)


def stockham(x: np.ndarray, sign: int) -> np.ndarray:
    """fft.hpp's passes in NumPy (its indexing, checked by tests/test_fft_kernel.py): the
    length-n DFT of each row of complex x, sign -1 forward, +1 inverse, unscaled."""
    n = x.shape[-1]
    table = np.exp(-2j * np.pi * np.arange(n) / n)
    if sign > 0:
        table = table.conj()
    src, s = x.astype(np.complex128), 1
    for radix in radices(n) or []:
        dst = np.empty_like(src)
        quarter, step = n // radix, n // (s * radix)
        j = np.arange(quarter)
        k = j % s
        v = np.stack([src[..., j + r * quarter] * table[r * k * step] for r in range(radix)])
        roots = np.exp(sign * 2j * np.pi * np.outer(np.arange(radix), np.arange(radix)) / radix)
        v = np.tensordot(roots, v, 1)        # DFT_R of the gathered points
        out = (j // s) * s * radix + k
        for r in range(radix):
            dst[..., out + r * s] = v[r]
        src, s = dst, s * radix
    return src


def _reference(x, twiddles, scale, kind):
    """What the kernels compute, in torch (for the fake graph's eager runs)."""
    n = twiddles.shape[0]
    if kind == "rfft":
        full = torch.fft.rfft(x, n=n)
    elif kind == "irfft":
        return torch.fft.irfft(torch.view_as_complex(x.contiguous()), n=n,
                               norm="forward") * scale.reshape(())
    else:
        z = torch.view_as_complex(x.contiguous())
        full = torch.fft.fft(z, n=n) if kind == "fft" else torch.fft.ifft(z, n=n, norm="forward")
    return torch.view_as_real(full * scale.reshape(())).contiguous()


@torch.library.custom_op("lapis::fft", mutates_args=())
def fft(x: torch.Tensor, twiddles: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return _reference(x, twiddles, scale, "fft")


@torch.library.custom_op("lapis::ifft", mutates_args=())
def ifft(x: torch.Tensor, twiddles: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return _reference(x, twiddles, scale, "ifft")


@torch.library.custom_op("lapis::rfft", mutates_args=())
def rfft(x: torch.Tensor, twiddles: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return _reference(x, twiddles, scale, "rfft")


@torch.library.custom_op("lapis::irfft", mutates_args=())
def irfft(x: torch.Tensor, twiddles: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return _reference(x, twiddles, scale, "irfft")


@fft.register_fake
def _fft_fake(x, twiddles, scale):
    return x.new_empty((x.shape[0], twiddles.shape[0], 2))


@ifft.register_fake
def _ifft_fake(x, twiddles, scale):
    return x.new_empty((x.shape[0], twiddles.shape[0], 2))


@rfft.register_fake
def _rfft_fake(x, twiddles, scale):
    return x.new_empty((x.shape[0], twiddles.shape[0] // 2 + 1, 2))


@irfft.register_fake
def _irfft_fake(x, twiddles, scale):
    return x.new_empty((x.shape[0], twiddles.shape[0]))
