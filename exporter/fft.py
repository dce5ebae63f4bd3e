"""FFTs as one kernel (kokkos_support/lapis/fft.hpp): a Stockham transform of radix 4, 2, 3 and 5
per line, O(n log n), where the dense DFT product of importer/complex_ops.py costs O(n * kept
outputs) per line.

complex_ops.py turns every torch.fft transform into one-dimensional transforms along the last
axis of [lines, n(, 2)] and asks `prefers_fft` which way each goes: the kernel for a (nearly)
full transform of a length with only the factors 2, 3 and 5, the product with a DFT matrix
for a truncated one (a Fourier neural operator keeps a few modes) or a length with another
prime factor. The ops below follow the CSR products' path (exporter/sparse.py) to a
`lapis.fft*` op after bufferization (lowering/tuned_calls.py), emitted by
emit/dense_handlers.py. Each takes the signal, the twiddle table of the transform's passes
(`twiddles`: n - 1 rows for length n, made at export, in the weight blob) and the norm's
scale as a one-element tensor; an input shorter than n is zero-padded (for irfft: the
spectrum beyond it is zero), and rfft writes the one-sided n // 2 + 1 coefficients.
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
# outputs) of its matrix; the kernel about FFT_COST * n log2 n. Measured by benchmarks/fft.py
# (results_fft.md, column `cost`: the kernel's time per n log2 n over the dense product's
# time per multiply-add, with the product on the tuned matrix kernel): 0.3 to 0.6 on one
# core. 1.0 leaves the dense product the transforms where the two are within 2x.
FFT_COST = 1.0
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
    """[n - 1, 2]: the twiddle factors of fft.hpp's passes, exp(-2 pi i r k / (s R)) for
    r = 1 .. R-1 and k = 0 .. s-1 per pass of radix R (s: the product of the earlier radices),
    as (re, im) pairs."""
    angles, s = [], 1
    for radix in radices(n):
        r, k = np.meshgrid(np.arange(1, radix), np.arange(s), indexing="ij")
        angles.append((-2 * np.pi * r * k / (s * radix)).reshape(-1))
        s *= radix
    angle = np.concatenate(angles)
    return torch.from_numpy(np.stack([np.cos(angle), np.sin(angle)], 1)).to(dtype)


def stockham(x: np.ndarray, sign: int) -> np.ndarray:
    """fft.hpp's passes in NumPy, on its twiddle table (indexing checked by
    tests/test_complex_ops.py): the length-n DFT of each row of complex x, sign -1 forward,
    +1 inverse, unscaled."""
    n = x.shape[-1]
    table = twiddles(n, torch.float64).numpy()
    table = table[:, 0] + 1j * table[:, 1]
    if sign > 0:
        table = table.conj()
    src, s, offset = x.astype(np.complex128), 1, 0
    for radix in radices(n):
        dst = np.empty_like(src)
        j = np.arange(n // radix)
        b, k = j // s, j % s
        v = [src[..., j]] + [src[..., j + r * (n // radix)] * table[offset + (r - 1) * s + k]
                             for r in range(1, radix)]
        roots = np.exp(sign * 2j * np.pi * np.outer(np.arange(radix), np.arange(radix)) / radix)
        v = np.tensordot(roots, np.stack(v), 1)        # DFT_R of the gathered points
        for r in range(radix):
            dst[..., b * s * radix + k + r * s] = v[r]
        offset += (radix - 1) * s
        src, s = dst, s * radix
    return src


def _reference(x, twiddles, scale, kind):
    """What the kernels compute, in torch (for the fake graph's eager runs)."""
    n = twiddles.shape[0] + 1
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
    return x.new_empty((x.shape[0], twiddles.shape[0] + 1, 2))


@ifft.register_fake
def _ifft_fake(x, twiddles, scale):
    return x.new_empty((x.shape[0], twiddles.shape[0] + 1, 2))


@rfft.register_fake
def _rfft_fake(x, twiddles, scale):
    return x.new_empty((x.shape[0], (twiddles.shape[0] + 1) // 2 + 1, 2))


@irfft.register_fake
def _irfft_fake(x, twiddles, scale):
    return x.new_empty((x.shape[0], twiddles.shape[0] + 1))
