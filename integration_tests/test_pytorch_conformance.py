"""A small subset of the PyTorch conformance table (benchmarks/conformance), both paths."""
import pytest

from benchmarks.conformance.pytorch_ops import PATHS, run_case

SUBSET = ["relu", "conv_bn_relu"]


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("name", SUBSET)
def test_case_matches_eager(name, path):
    assert run_case(name, path, timeout=600) == "passed"
