"""Small spectral and complex-valued models, one family of ops each: every torch.fft transform
with its norm modes, lengths that pad and trim, full transforms long enough for the FFT
kernel, complex elementwise ops and products, the views between real and complex. Outputs are real (torch.view_as_real of complex results), as
the exported C API carries no complex types. Used by test_fft.py and tests/test_complex_ops.py.
"""
from __future__ import annotations

import torch
import torch.nn as nn

NORMS = ("backward", "ortho", "forward")


def _flat(*tensors):
    return torch.cat([t.reshape(t.shape[0], -1) for t in tensors], 1)


def _complex_weight(*shape, dtype=torch.cfloat):
    return nn.Parameter(torch.randn(*shape, dtype=dtype), requires_grad=False)


class RfftNorms(nn.Module):
    def forward(self, x):
        return _flat(*(torch.view_as_real(torch.fft.rfft(x, norm=n)) for n in NORMS))


class IrfftNorms(nn.Module):
    """irfft of a filtered spectrum in every norm, and with lengths that pad and trim."""

    def __init__(self, dtype=torch.cfloat):
        super().__init__()
        self.filter = _complex_weight(9, dtype=dtype)

    def forward(self, x):
        spectrum = torch.fft.rfft(x) * self.filter
        return _flat(*(torch.fft.irfft(spectrum, n=16, norm=n) for n in NORMS),
                     torch.fft.irfft(spectrum, n=20), torch.fft.irfft(spectrum, n=10),
                     torch.fft.irfft(spectrum))


class FftIfft(nn.Module):
    def __init__(self):
        super().__init__()
        self.filter = _complex_weight(16)

    def forward(self, x):
        outputs = []
        for norm in NORMS:
            spectrum = torch.fft.fft(x, norm=norm)
            outputs.append(torch.view_as_real(spectrum))
            outputs.append(torch.view_as_real(torch.fft.ifft(spectrum * self.filter, norm=norm)))
        outputs.append(torch.view_as_real(torch.fft.fft(x, n=20)))
        outputs.append(torch.view_as_real(torch.fft.ifft(torch.fft.fft(x), n=12)))
        return _flat(*outputs)


class ComplexFft2(nn.Module):
    """Transforms of a complex input given as (re, im) pairs: fft2, ifft2, fftn."""

    def forward(self, x):
        z = torch.view_as_complex(x)
        return _flat(torch.view_as_real(torch.fft.fft2(z)),
                     torch.view_as_real(torch.fft.ifft2(z, norm="ortho")),
                     torch.view_as_real(torch.fft.fftn(z, dim=(0, 2), norm="forward")))


class Rfft2Irfft2(nn.Module):
    def __init__(self, dtype=torch.cfloat):
        super().__init__()
        self.filter = _complex_weight(8, 5, dtype=dtype)

    def forward(self, x):
        outputs = []
        for norm in NORMS:
            spectrum = torch.fft.rfft2(x, norm=norm)
            outputs.append(torch.view_as_real(spectrum))
            outputs.append(torch.fft.irfft2(spectrum * self.filter, s=(8, 8), norm=norm))
        return _flat(*outputs)


class RfftnIrfftn(nn.Module):
    def forward(self, x):
        spectrum = torch.fft.rfftn(x, dim=(1, 2, 3), norm="ortho")
        return _flat(torch.view_as_real(spectrum),
                     torch.fft.irfftn(spectrum * 0.5, s=(4, 6, 8), dim=(1, 2, 3), norm="ortho"))


class TruncatedSpectrum(nn.Module):
    """The FNO pattern in 1-D without weights: keep the lowest modes, transform back."""

    def forward(self, x):
        return torch.fft.irfft(torch.fft.rfft(x)[..., :5], n=x.shape[-1])


class ComplexElementwise(nn.Module):
    def __init__(self, dtype=torch.cfloat):
        super().__init__()
        self.w = _complex_weight(3, 8, dtype=dtype)

    def forward(self, x):
        z = torch.view_as_complex(x)
        w = self.w
        pairs = [z * w, z / w, z + w, z - w, z * 2.5, z + (1 - 2j), torch.conj(z) * w,
                 torch.exp(z * 0.1), -z, torch.complex(z.real, w.imag),
                 torch.polar(z.abs(), w.angle())]
        reals = [z.abs(), z.angle(), (z * w).real, (z / w).imag, torch.view_as_real(z * w)[..., 1]]
        return _flat(*(torch.view_as_real(p) for p in pairs), *reals)


class ComplexMatmul(nn.Module):
    """Complex products: with a complex weight (folded at export), with a real matrix, and
    between two computed complex tensors."""

    def __init__(self):
        super().__init__()
        self.w = _complex_weight(6, 5)
        self.real = nn.Parameter(torch.randn(6, 4), requires_grad=False)

    def forward(self, x):
        z = torch.view_as_complex(x)                          # [2, 4, 6]
        spectrum = torch.fft.fft(z)
        return _flat(torch.view_as_real(z @ self.w),
                     torch.view_as_real(z @ self.real.to(z.dtype)),
                     torch.view_as_real(torch.einsum("bij,bkj->bik", z, spectrum)))


class FftKernel(nn.Module):
    """Full transforms long enough for the FFT kernel (exporter/fft.py's cost rule):
    power-of-two lengths 256 and 512, mixed radices 60, 96 and 15 (3 x 5), zero-padded
    inputs, every norm, and an odd prime length (61) that stays a dense DFT product."""

    def forward(self, x):                        # x [2, 3, 512]
        fft = torch.fft
        outputs = []
        for norm in NORMS:
            spectrum = fft.rfft(x, norm=norm)
            outputs.append(torch.view_as_real(spectrum))
            outputs.append(fft.irfft(spectrum * 0.5, norm=norm))
            z = fft.fft(x[..., :256], norm=norm)
            outputs.append(torch.view_as_real(z))
            outputs.append(torch.view_as_real(fft.ifft(z * (1 - 2j), norm=norm)))
        mixed = fft.rfft(x[..., :60])
        outputs += [torch.view_as_real(mixed), fft.irfft(mixed * 2, norm="ortho"),
                    torch.view_as_real(fft.ifft(fft.fft(x[..., :96]), norm="forward")),
                    torch.view_as_real(fft.fft(x[..., 100:115] + 0j)),
                    torch.view_as_real(fft.fft(x[..., :61])),
                    torch.view_as_real(fft.rfft(x[..., :100], n=128)),
                    fft.irfft(fft.rfft(x[..., :200])[..., :40], n=160)]
        grid = x.reshape(2, 3, 16, 32)
        planes = fft.rfft2(grid, norm="ortho")
        outputs += [torch.view_as_real(planes), fft.irfft2(planes * 0.25, s=(16, 32)),
                    torch.view_as_real(fft.ifft2(fft.fft2(grid[..., :20]), norm="forward"))]
        return _flat(*outputs)


class FftLines(nn.Module):
    """The FFT kernel over a dynamic number of lines [lines, 96]: rfft / irfft (96 = 4 4 2 3),
    fft / ifft of 60 (4 3 5) in two norms."""

    def forward(self, x):
        spectrum = torch.fft.rfft(x)
        z = torch.fft.fft(x[:, :60], norm="ortho")
        return torch.cat([torch.view_as_real(spectrum).reshape(-1, 98),
                          torch.fft.irfft(spectrum * 0.5, n=96),
                          torch.view_as_real(torch.fft.ifft(z * (1 + 1j), norm="forward"))
                          .reshape(-1, 120)], 1)


class DftOnnx(nn.Module):
    """What torch.onnx.export(dynamo=True) writes as ONNX DFT: transforms of real tensors."""

    def forward(self, x):
        return _flat(torch.view_as_real(torch.fft.rfft(x, norm="ortho")),
                     torch.view_as_real(torch.fft.ifft(torch.fft.fft(x, norm="forward")[..., :5])))


class DftOnnxLong(nn.Module):
    """ONNX DFTs long enough for the FFT kernel: a one-sided 512, a full 512 of a real signal,
    its inverse (a complex input), a mixed-radix 96 along another axis, and a prime 61 that
    stays a DFT product."""

    def forward(self, x):                        # x [2, 3, 512]
        fft = torch.fft
        z = fft.fft(x, norm="forward")
        return _flat(torch.view_as_real(fft.rfft(x, norm="ortho")),
                     torch.view_as_real(fft.ifft(z)),
                     torch.view_as_real(fft.fft(x[..., :96].transpose(1, 2), dim=1)),
                     torch.view_as_real(fft.rfft(x[..., :61])))


def build(name: str, seed: int = 0):
    """(module, input shape, dtype) of case `name`."""
    torch.manual_seed(seed)
    double = torch.float64
    table = {
        "rfft_norms": (RfftNorms, (2, 3, 16), torch.float32),
        "irfft_norms": (IrfftNorms, (2, 3, 16), torch.float32),
        "fft_ifft": (FftIfft, (2, 3, 16), torch.float32),
        "complex_fft2": (ComplexFft2, (2, 6, 8, 2), torch.float32),
        "rfft2_irfft2": (Rfft2Irfft2, (2, 3, 8, 8), torch.float32),
        "rfftn_irfftn": (RfftnIrfftn, (2, 4, 6, 8), torch.float32),
        "truncated_spectrum": (TruncatedSpectrum, (2, 3, 32), torch.float32),
        "complex_elementwise": (ComplexElementwise, (2, 3, 8, 2), torch.float32),
        "complex_matmul": (ComplexMatmul, (2, 4, 6, 2), torch.float32),
        "dft_onnx": (DftOnnx, (2, 3, 16), torch.float32),
        "dft_onnx_long": (DftOnnxLong, (2, 3, 512), torch.float32),
        "fft_kernel": (FftKernel, (2, 3, 512), torch.float32),
        "fft_kernel_f64": (FftKernel, (2, 3, 512), double),
        "fft_lines": (FftLines, (4, 96), torch.float32),
        "rfft2_irfft2_f64": (lambda: Rfft2Irfft2(torch.cdouble), (2, 3, 8, 8), double),
        "irfft_norms_f64": (lambda: IrfftNorms(torch.cdouble), (2, 3, 16), double),
        "complex_elementwise_f64": (lambda: ComplexElementwise(torch.cdouble), (2, 3, 8, 2),
                                    double),
    }
    factory, shape, dtype = table[name]
    module = factory().eval()
    return module, shape, dtype


NAMES = ("rfft_norms", "irfft_norms", "fft_ifft", "complex_fft2", "rfft2_irfft2",
         "rfftn_irfftn", "truncated_spectrum", "complex_elementwise", "complex_matmul",
         "dft_onnx", "dft_onnx_long", "rfft2_irfft2_f64", "irfft_norms_f64", "complex_elementwise_f64",
         "fft_kernel", "fft_kernel_f64", "fft_lines")
