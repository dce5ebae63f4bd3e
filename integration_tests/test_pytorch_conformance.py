"""The CI subset of the PyTorch conformance table (benchmarks/conformance/pytorch_ops.py):
case-paths across op families and both capture paths, int64 and bool tensors in and out, exported in
worker processes and built in one batch; each must match eager PyTorch."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks" / "conformance"))

SUBSET = [
    "add:torchscript",
    "int64_arith:pt2",                   # int64 in and out
    "int64_compare_bool_out:torchscript",  # int64 in, bool out
    "where_bool_mask:torchscript",       # bool in
    "gather_int64:pt2",
    "embedding_int64:torchscript",
    "argmax:torchscript",                # int64 out
    "var:pt2",
    "amax_two_dims:torchscript",
    "bmm:pt2",
    "linear:torchscript",
    "conv1d_dil_groups:pt2",
    "conv2d_groups:torchscript",
    "conv_transpose2d_pad_outpad:pt2",
    "maxpool2d_pad_ceil:torchscript",
    "adaptive_maxpool2d:pt2",
    "groupnorm:pt2",
    "layernorm:torchscript",
    "gelu:pt2",
    "softmax:torchscript",
    "cat:torchscript",
    "sdpa_bool_mask:pt2",
    "conv_bn_relu:torchscript",
    "conv_bn_relu:pt2",
    "transformer_encoder_layer:pt2",
    "lstm_cell:torchscript",
]


@pytest.fixture(scope="module")
def conformance(tmp_path_factory, kokkos_root) -> dict:
    import pytorch_ops
    return pytorch_ops.run(pytorch_ops.select(SUBSET), jobs=2,
                           work=tmp_path_factory.mktemp("pytorch-conformance"),
                           log=lambda text: None)


@pytest.mark.parametrize("key", SUBSET)
def test_case_matches_eager(conformance, key):
    import pytorch_ops
    name, _, path = key.partition(":")
    record = conformance["cases"][pytorch_ops.case_key(name, path)]
    assert record["category"] == "passed", f"{record['category']}: {record['reason']}"
