"""float32 convolutions on host backends (kokkos_support/lapis/conv_host.hpp): the register
tiles of 32 output channels on weights packed at export in blocks of 32, and the portable
kernel on the same weights where the tiles do not apply (dilated or stride-3 columns).

One package holds every case: 3x3, 1x1, 7x7 and 5x5 filters, stride 1 and 2 (and 3, and a
dilation, for the portable kernel), padding, output channel counts that are not multiples of
32, widths that are not multiples of the column tiles (the overlapped last tile) and narrower
than them, batches of 1 to 3, with the bias, ReLU and residual add (+ ReLU) the lowering folds
into the call. It is built once and run under every instruction set this machine has, forced
in turn (LAPIS_CONV_ISA), against torch.nn.functional.conv2d in float32: max |ours - torch| <=
1e-5 * max |torch| for each output.
"""
from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

from .conftest import REPO, run
from .functions import RUNNER, build, relative_error

TOLERANCE = 1e-5

# (channels in, channels out, filter, stride, padding, dilation, height, width, batch, bias,
#  epilogue): epilogue "relu" = relu(conv), "residual" = relu(conv + r) with r an input,
# "none" = conv alone.
CASES = [
    (64, 64, 3, 1, 1, 1, 14, 14, 1, True, "relu"),        # a ResNet block's 3x3, width 14
    (20, 40, 3, 1, 1, 1, 9, 11, 2, False, "residual"),     # 40 channels, width 11 (overlap)
    (16, 48, 3, 2, 1, 1, 15, 13, 1, True, "none"),         # stride 2, width 7 out
    (24, 70, 1, 2, 0, 1, 10, 18, 1, False, "none"),        # a downsample's 1x1, stride 2
    (3, 33, 7, 2, 3, 1, 23, 29, 1, True, "relu"),          # conv1-like 7x7 / 2
    (5, 7, 5, 1, 2, 1, 6, 3, 2, True, "residual"),         # width 3: single columns
    (32, 64, 3, 1, 0, 1, 9, 9, 1, True, "relu"),           # no padding, width 7
    (64, 32, 1, 1, 0, 1, 5, 5, 3, False, "relu"),          # width 5: 4-column tiles, batch 3
    (12, 100, 3, 1, 1, 1, 6, 6, 1, True, "residual"),      # width 6, 100 channels
    (8, 16, 3, 1, 2, 2, 12, 12, 1, True, "relu"),          # dilated: the portable kernel
    (6, 10, 3, 3, 1, 1, 13, 16, 1, False, "none"),         # stride 3: the portable kernel
]


def output_shape(case) -> tuple[int, ...]:
    cin, cout, k, stride, pad, dilation, h, w, batch, _, _ = case
    size = [(n + 2 * pad - dilation * (k - 1) - 1) // stride + 1 for n in (h, w)]
    return (batch, cout, *size)


class Convolutions(torch.nn.Module):
    """Every case as one convolution (with its epilogue) of its own input."""

    def __init__(self):
        super().__init__()
        generator = torch.Generator().manual_seed(3)
        self.convs = torch.nn.ModuleList()
        for cin, cout, k, stride, pad, dilation, *_, bias, _ in CASES:
            conv = torch.nn.Conv2d(cin, cout, k, stride=stride, padding=pad,
                                   dilation=dilation, bias=bias)
            with torch.no_grad():
                conv.weight.copy_(torch.randn(conv.weight.shape, generator=generator) * 0.2)
                if bias:
                    conv.bias.copy_(torch.randn(cout, generator=generator))
            self.convs.append(conv)

    def forward(self, *inputs):
        outputs, rest = [], list(inputs)
        for conv, case in zip(self.convs, CASES):
            x = rest.pop(0)
            y = conv(x)
            if case[-1] == "residual":
                y = torch.relu(y + rest.pop(0))
            elif case[-1] == "relu":
                y = torch.relu(y)
            outputs.append(y)
        return tuple(outputs)


def example_inputs() -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(5)
    inputs = []
    for case in CASES:
        cin, _, _, _, _, _, h, w, batch, _, epilogue = case
        inputs.append(torch.randn(batch, cin, h, w, generator=generator))
        if epilogue == "residual":
            inputs.append(torch.randn(*output_shape(case), generator=generator))
    return inputs


def available_isas() -> list[str]:
    """The values of LAPIS_CONV_ISA this machine can run, widest first."""
    flags = open("/proc/cpuinfo").read() if sys.platform == "linux" else ""
    isas = ["baseline"]
    if " avx2" in flags and " fma" in flags:
        isas.insert(0, "avx2")
        if " avx512f" in flags:
            isas.insert(0, "avx512")
    return isas


@pytest.fixture(scope="module")
def convolutions(tmp_path_factory):
    """(package, library, inputs, PyTorch's outputs): the cases exported for OpenMP."""
    root = tmp_path_factory.mktemp("conv_host")
    model = Convolutions().eval()
    inputs = example_inputs()
    path = root / "convolutions.pt2"
    torch.export.save(torch.export.export(model, tuple(inputs)), path)
    package = root / "convolutions"
    run([sys.executable, "-m", "cli", path, "--out", package, "-q"], cwd=REPO)
    with torch.no_grad():
        reference = [y.numpy() for y in model(*inputs)]
    return package, build(root, package), [x.numpy() for x in inputs], reference


def test_weights_packed_in_host_blocks(convolutions):
    """Every convolution is a lapis::conv2d_nchw call on weights packed 32 channels a block."""
    package, *_ = convolutions
    source = (package / "src" / "convolutions.cpp").read_text()
    assert source.count("lapis::conv2d_nchw<execution_space>(") == len(CASES), source
    for cin, cout, k, *_ in CASES:
        assert f"packed for lapis::conv2d_nchw as [{-(-cout // 32)}, {cin}, {k}, {k}, 32]" \
            in source


@pytest.mark.parametrize("isa", available_isas())
def test_convolutions_match_torch(convolutions, tmp_path, isa):
    package, library, inputs, reference = convolutions
    arrays = tmp_path / "in.npz"
    outputs = tmp_path / "out.npz"
    np.savez(arrays, **{f"all__{i}": np.ascontiguousarray(x) for i, x in enumerate(inputs)})
    run([sys.executable, "-c", RUNNER, package, library, arrays, outputs], cwd=REPO,
        env={"LAPIS_CONV_ISA": isa})
    results = np.load(outputs)
    for index, (case, expected) in enumerate(zip(CASES, reference)):
        ours = results[f"all__{index}"]
        assert ours.shape == expected.shape, (case, ours.shape, expected.shape)
        error = relative_error(ours, expected)
        assert error <= TOLERANCE, f"{isa} case {case}: {error:.3g}"
