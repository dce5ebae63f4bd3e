"""Max pooling (kokkos_support/lapis/pooling.hpp): on host backends a thread per output row
that folds one tap at a time into a run of columns (ResNet's 3x3/2 window on AVX-512: the
maximum down the rows, then across in vectors); on GPUs a thread per output, checked here
on the host with LAPIS_POOLING_PER_ELEMENT. Both against torch.nn.functional.max_pool2d on one
package of every geometry the lowering hands the kernel: ResNet's 3x3/2 with padding 1 (and
the U-Net's unpadded 2x2/2, which stays a loop), stride 1, a dilation, stride 3, ceil_mode, a
rectangular window, and NaNs in the input, which win as they do in PyTorch. Tolerance: exact
(a maximum rounds nothing).
"""
from __future__ import annotations

import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from .conftest import REPO, run
from .functions import build, run_cases

# (kernel, stride, padding, dilation, ceil_mode, channels, height, width)
CASES = [
    ((3, 3), (2, 2), (1, 1), (1, 1), False, 4, 17, 16),     # ResNet's stem
    ((2, 2), (2, 2), (0, 0), (1, 1), False, 3, 12, 10),     # U-Net's down step
    ((3, 3), (1, 1), (1, 1), (1, 1), False, 2, 7, 9),       # stride 1
    ((3, 3), (1, 2), (1, 1), (2, 2), False, 2, 11, 13),     # dilated
    ((3, 3), (3, 3), (0, 1), (1, 1), False, 2, 14, 11),     # stride 3
    ((3, 3), (2, 2), (1, 1), (1, 1), True, 3, 10, 12),      # ceil_mode: a partial last window
    ((2, 3), (1, 2), (1, 0), (1, 1), False, 2, 5, 15),      # rectangular window
    ((3, 3), (2, 2), (1, 1), (1, 1), False, 2, 6, 35),      # ResNet's, odd and over 16 wide
]


class Pools(torch.nn.Module):
    def forward(self, *inputs):
        return tuple(F.max_pool2d(x, k, s, p, d, ceil_mode=c)
                     for x, (k, s, p, d, c, *_) in zip(inputs, CASES))


def example_inputs() -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(7)
    inputs = [torch.randn(2, c, h, w, generator=generator) for *_, c, h, w in CASES]
    inputs[0][1, 2, 5, 6] = float("nan")      # a NaN inside windows
    inputs[1][0, 0, 0, 0] = float("nan")      # at the corner
    return inputs


@pytest.fixture(scope="module")
def pools(tmp_path_factory):
    root = tmp_path_factory.mktemp("pooling")
    model = Pools().eval()
    inputs = example_inputs()
    path = root / "pools.pt2"
    torch.export.save(torch.export.export(model, tuple(inputs)), path)
    package = root / "pools"
    run([sys.executable, "-m", "cli", path, "--out", package, "-q"], cwd=REPO)
    with torch.no_grad():
        reference = [y.numpy() for y in model(*inputs)]
    return root, package, [x.numpy() for x in inputs], reference


def test_every_padded_pool_is_the_kernel(pools):
    """The kernel takes each pool with padding (whose -inf padded copy and fill it saves); the
    U-Net's unpadded 2x2 pool stays the emitted loop, with nothing to fold."""
    _, package, *_ = pools
    source = (package / "src" / "pools.cpp").read_text()
    padded = sum(1 for case in CASES if any(case[2]))
    assert source.count("lapis::max_pool2d_nchw<execution_space>(") == padded, source


@pytest.mark.parametrize("path", ["rows", "per_element"])
def test_pools_match_torch(pools, path):
    root, package, inputs, reference = pools
    flags = "-DLAPIS_POOLING_PER_ELEMENT" if path == "per_element" else ""
    library = build(root, package, flags)
    (ours,) = run_cases(root, package, library, {"all": inputs}).values()
    for case, got, expected in zip(CASES, ours, reference):
        assert got.shape == expected.shape, (case, got.shape, expected.shape)
        np.testing.assert_array_equal(np.isnan(got), np.isnan(expected), err_msg=str(case))
        assert np.isnan(expected).any() == (case is CASES[0] or case is CASES[1])
        finite = ~np.isnan(expected)
        np.testing.assert_array_equal(got[finite], expected[finite], err_msg=str(case))
