"""Complex values as real pairs (exporter/importer/complex_ops.py): the rewritten torch.export
graph, run in PyTorch, gives eager PyTorch's numbers for every spectral case; DFT matrices
match numpy.fft; ops it cannot rewrite are one error naming them."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.export.graph_signature import InputKind

from exporter import fft as fft_rule
from exporter.errors import ExportError
from exporter.importer import complex_ops
from integration_tests import fno, spectral_cases


def _rewritten(module, example, fft_kernel=True):
    from torch_mlir.extras.fx_decomp_util import get_decomposition_table
    program = torch.export.export(module, (example,))
    program = program.run_decompositions(get_decomposition_table())
    complex_ops.to_real_pairs(program, "model.pt2", fft_kernel)
    return program


def _run(program, example):
    arguments = []
    for spec in program.graph_signature.input_specs:
        if spec.kind == InputKind.USER_INPUT:
            arguments.append(example)
        else:
            table = program.state_dict if spec.target in program.state_dict \
                else program.constants
            arguments.append(table[spec.target])
    for node in program.graph.nodes:      # what torch-mlir's importer reads
        for key in ("val", "tensor_meta"):
            value = node.meta.get(key)
            assert not (getattr(value, "dtype", None) in (torch.complex64, torch.complex128)), \
                f"{node.name}: {key} is complex"
    return program.graph_module(*arguments)[0]


def _check(module, example, tolerance):
    with torch.no_grad():
        expected = module(example)
        ours = _run(_rewritten(module, example), example)
    scale = max(1.0, float(expected.abs().max()))
    assert ours.shape == expected.shape and ours.dtype == expected.dtype
    assert float((ours - expected).abs().max()) <= tolerance * scale


@pytest.mark.parametrize("name", spectral_cases.NAMES)
def test_case_matches_eager(name):
    module, shape, dtype = spectral_cases.build(name)
    example = torch.randn(*shape, dtype=dtype, generator=torch.Generator().manual_seed(1))
    _check(module, example, 1e-10 if dtype == torch.float64 else 1e-5)


@pytest.mark.parametrize("model", ["fno1d", "fno2d", "fno1d_f64"])
def test_fno_matches_eager(model):
    net, shape = fno.fno1d(dtype=torch.float64) if model == "fno1d_f64" else \
        getattr(fno, model)()
    dtype = torch.float64 if model == "fno1d_f64" else torch.float32
    example = torch.randn(*shape, dtype=dtype, generator=torch.Generator().manual_seed(1))
    _check(net, example, 1e-10 if dtype == torch.float64 else 1e-5)


def test_fno_computes_only_the_kept_modes():
    net, shape = fno.fno2d()
    program = _rewritten(net, torch.randn(*shape), fft_kernel=False)
    matrices = {spec.target: tuple(program.constants[spec.target].shape)
                for spec in program.graph_signature.input_specs
                if spec.target and spec.target.startswith("dft_")}
    # rfft2 of 64x64 keeping 12 of 33 columns and 24 of 64 rows; the inverse reads those only
    assert matrices == {"dft_rc_64x12": (64, 24), "dft_cc_64x24": (128, 48),
                        "dft_cc_64x64": (48, 128), "dft_cr_64x64": (24, 64)}
    # the complex weights became real blocks; the originals left the blob
    assert not any(t.is_complex() for t in program.state_dict.values())
    assert "spectral.0.weights1" not in program.state_dict


def test_fno_transforms_follow_the_cost_rule():
    """Each of the FNO's four transforms along an axis is the FFT kernel exactly where
    exporter/fft.py's rule prefers it; the others stay truncated products."""
    net, shape = fno.fno2d()
    program = _rewritten(net, torch.randn(*shape))
    # (n, entries read, entries kept, real in, real out) of rfft2's two axes and irfft2's two,
    # as dense products of the kept and the non-zero modes
    transforms = {"dft_rc_64x12": (64, 64, 12, True, False),
                  "dft_cc_64x24": (64, 64, 24, False, False),
                  "dft_cc_64x64": (64, 24, 64, False, False),
                  "dft_cr_64x64": (64, 12, 64, False, True)}
    kernel = {name for name, cost in transforms.items() if fft_rule.prefers_fft(*cost)}
    matrices = {spec.target for spec in program.graph_signature.input_specs
                if spec.target and spec.target.startswith("dft_")}
    assert matrices == set(transforms) - kernel
    calls = [n for n in program.graph.nodes if str(n.target).startswith("lapis.")]
    assert len(calls) == 2 * len(kernel)            # two spectral layers
    _check(net, torch.randn(*shape, generator=torch.Generator().manual_seed(1)), 1e-5)


@pytest.mark.parametrize("n", [2, 3, 4, 5, 8, 12, 15, 60, 64, 96, 100, 243, 256, 512])
def test_fft_kernel_passes_match_numpy(n):
    """fft.hpp's Stockham indexing and twiddle table, as exporter/fft.py states them in NumPy
    (the C++ runs the same passes: integration_tests/test_fft.py)."""
    rng = np.random.default_rng(n)
    signal = rng.standard_normal((3, n)) + 1j * rng.standard_normal((3, n))
    np.testing.assert_allclose(fft_rule.stockham(signal, -1), np.fft.fft(signal), atol=1e-10)
    np.testing.assert_allclose(fft_rule.stockham(signal, 1), np.fft.ifft(signal) * n,
                               atol=1e-10)


def test_fft_rule():
    assert fft_rule.radices(60) == [4, 3, 5] and fft_rule.radices(512) == [4, 4, 4, 4, 2]
    assert fft_rule.radices(7) is None and fft_rule.radices(1) is None
    assert fft_rule.prefers_fft(512, 512, 512, False, False)          # a full transform
    assert not fft_rule.prefers_fft(61, 61, 61, False, False)         # a prime length
    assert not fft_rule.prefers_fft(512, 512, 2, True, False)         # two modes kept


@pytest.mark.parametrize("n", [7, 8])
def test_dft_matrices_match_numpy(n):
    rng = np.random.default_rng(0)
    signal = rng.standard_normal(n)
    spectrum = signal @ complex_ops.dft_matrix(n, range(n), range(n // 2 + 1), True, False, -1)
    np.testing.assert_allclose(spectrum[0::2] + 1j * spectrum[1::2], np.fft.rfft(signal),
                               atol=1e-12)
    full = np.fft.fft(signal + 1j * rng.standard_normal(n))
    pairs = np.stack([full.real, full.imag], -1).reshape(-1)
    back = pairs @ complex_ops.dft_matrix(n, range(n), range(n), False, False, 1, 1 / n)
    np.testing.assert_allclose(back[0::2] + 1j * back[1::2], np.fft.ifft(full), atol=1e-12)
    half = np.fft.rfft(signal)
    pairs = np.stack([half.real, half.imag], -1).reshape(-1)
    real = pairs @ complex_ops.dft_matrix(n, range(n // 2 + 1), range(n), False, True, 1, 1 / n)
    np.testing.assert_allclose(real, signal, atol=1e-12)


class _Log(torch.nn.Module):
    def forward(self, x):
        return torch.view_as_real(torch.log(torch.fft.fft(x)))


class _ComplexOut(torch.nn.Module):
    def forward(self, x):
        return torch.fft.fft(x)


def test_unsupported_op_is_one_line_naming_it():
    with pytest.raises(ExportError) as error:
        _rewritten(_Log(), torch.randn(2, 8))
    assert str(error.value) == "model.pt2: op aten.log on complex tensors is not supported"


def test_complex_output_says_how_to_return_it():
    with pytest.raises(ExportError) as error:
        _rewritten(_ComplexOut(), torch.randn(2, 8))
    assert "model output 0 is complex" in str(error.value)
    assert "view_as_real" in error.value.hint
