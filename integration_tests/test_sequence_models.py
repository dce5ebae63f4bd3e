"""Sequence surrogates end to end (integration_tests/sequence_models.py), against PyTorch at
1e-4 relative: nn.TransformerEncoder with and without a key-padding mask from .pt2 and both
torch.onnx exporters (the TorchScript one computes its reshape targets at run time:
frontend/onnx_shapes.py), and LSTM / GRU layers as loops over the steps (exporter/recurrent.py)
from .pt2 and TorchScript, one way and both ways. All packages in one build."""
from __future__ import annotations

import warnings

import pytest
import torch

from . import batched
from .sequence_models import recurrent, transformer

TOLERANCE = 1e-4


def _models():
    """name -> (model, inputs, format)."""
    models = {}
    for masked in (False, True):
        model, inputs = transformer(masked)
        tag = "transformer_masked" if masked else "transformer"
        for fmt in ("pt2", "onnx_legacy", "onnx_dynamo"):
            models[f"{tag}_{fmt}"] = (model, inputs, fmt)
    for cell in ("lstm", "gru"):
        models[f"{cell}_pt2"] = (*recurrent(cell), "pt2")
        models[f"{cell}_bidirectional_pt2"] = (*recurrent(cell, steps=7, bidirectional=True),
                                               "pt2")
    models["lstm_torchscript"] = (*recurrent("lstm", steps=20), "torchscript")
    return models


MODELS = _models()


def _save(model, inputs, fmt: str, path_stem) -> tuple:
    """The model file in `fmt`, and the --input-shape list it needs (None: from the file)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if fmt == "pt2":
            path = path_stem.with_suffix(".pt2")
            torch.export.save(torch.export.export(model, inputs), path)
        elif fmt == "torchscript":
            path = path_stem.with_suffix(".pt")
            torch.jit.save(torch.jit.trace(model, inputs), str(path))
            return path, [tuple(t.shape) for t in inputs]
        else:
            path = path_stem.with_suffix(".onnx")
            torch.onnx.export(model, inputs, path, dynamo=fmt == "onnx_dynamo",
                              **({"verbose": False} if fmt == "onnx_dynamo" else {}))
    return path, None


@pytest.fixture(scope="module")
def results(tmp_path_factory, kokkos_root):
    work = tmp_path_factory.mktemp("sequence")
    packages = {}
    for name, (model, inputs, fmt) in MODELS.items():
        path, shapes = _save(model, inputs, fmt, work / name)
        packages[name] = batched.export(path, work / name, name, shapes)
    libraries = batched.build(packages, work, kokkos_root, batch_size=3)
    jobs, references = {}, {}
    for name, (model, inputs, _) in MODELS.items():
        with torch.no_grad():
            reference = model(*inputs)
        references[name] = reference if isinstance(reference, tuple) else (reference,)
        jobs[name] = (libraries[name], packages[name], [t.numpy() for t in inputs])
    outputs = batched.run(jobs, work)
    return {name: (outputs[name], [r.numpy() for r in references[name]]) for name in jobs}


@pytest.mark.parametrize("name", list(MODELS))
def test_matches_pytorch(results, name):
    ours, reference = results[name]
    assert len(ours) == len(reference)
    for index, (mine, theirs) in enumerate(zip(ours, reference)):
        batched.assert_close(mine, theirs, TOLERANCE, f"{name} output {index}")
