"""--evaluator: models whose rows are not independent, or whose row does not fit a thread, are
refused in one line (and nothing is written); a row-independent one gets NAME::Evaluator, whose
one-row code is what the model computes (the numbers: integration_tests/test_inline_eval.py)."""
from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner

import cli


def invoke(*args):
    return CliRunner().invoke(cli.command, [str(arg) for arg in args])


def save(tmp_path, module, example, dynamic=True):
    shapes = ({0: torch.export.Dim("batch", min=2, max=1024)},) if dynamic else None
    program = torch.export.export(module.eval(), (example,), dynamic_shapes=shapes)
    path = tmp_path / "model.pt2"
    torch.export.save(program, str(path))
    return path


def assert_refused(result, *words: str) -> None:
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert 1 <= len(lines) <= 2 and lines[0].startswith("lapis-export: error: --evaluator"), \
        result.stderr
    for word in words:
        assert word in lines[0], result.stderr
    assert "Traceback" not in result.output


class SumOverRows(torch.nn.Module):
    def forward(self, x):
        return torch.tanh(x) - x.sum(0)


class Gram(torch.nn.Module):
    def forward(self, x):
        return x @ x.T


class BatchStatistics(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.norm = torch.nn.BatchNorm1d(4)

    def forward(self, x):
        return self.norm(x)


@pytest.mark.parametrize("module", [SumOverRows, Gram, BatchStatistics])
def test_rows_that_are_not_independent_are_refused(tmp_path, module):
    torch.manual_seed(0)
    net = module()
    if isinstance(net, BatchStatistics):
        net.train()   # batch statistics: every row's output depends on every row
        program = torch.export.export(net, (torch.randn(8, 4),), dynamic_shapes=(
            {0: torch.export.Dim("batch", min=2, max=1024)},))
        path = tmp_path / "model.pt2"
        torch.export.save(program, str(path))
    else:
        path = save(tmp_path, net, torch.randn(8, 4))
    result = invoke(path, "--out", tmp_path / "pkg", "--evaluator")
    assert_refused(result, "rows are not independent")
    assert not (tmp_path / "pkg").exists()


def test_a_row_too_big_for_a_thread_is_refused(tmp_path):
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(8, 8192), torch.nn.ReLU(), torch.nn.Linear(8192, 1))
    result = invoke(save(tmp_path, net, torch.randn(4, 8)), "--out", tmp_path / "pkg",
                    "--evaluator")
    assert_refused(result, "8192 elements", "local array")


def test_a_scalar_input_has_no_rows(tmp_path):
    class Scale(torch.nn.Module):
        def forward(self, x, s):
            return x * s
    program = torch.export.export(Scale(), (torch.randn(4, 3), torch.tensor(2.0)))
    path = tmp_path / "scale.pt2"
    torch.export.save(program, str(path))
    assert_refused(invoke(path, "--out", tmp_path / "pkg", "--evaluator"), "scalar")


def test_evaluator_of_a_row_independent_model(tmp_path):
    """A LayerNorm over the features and a softmax over them keep rows independent: the
    header gets the evaluator, with the model's own weight names, and the manifest says so."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(5, 16), torch.nn.LayerNorm(16), torch.nn.GELU(),
                              torch.nn.Linear(16, 3), torch.nn.Softmax(dim=-1))
    out = tmp_path / "pkg"
    result = invoke(save(tmp_path, net, torch.randn(8, 5)), "--out", out, "--name", "head",
                    "--evaluator", "-q")
    assert result.exit_code == 0, result.output
    header = (out / "include" / "head.hpp").read_text()
    evaluator = header[header.index("struct Evaluator {"):]
    assert "static constexpr int input0_size = 5;" in evaluator
    assert "static constexpr int output0_size = 3;" in evaluator
    assert "KOKKOS_INLINE_FUNCTION void operator()(const float* input0, float* output0) const" \
        in evaluator
    assert "unmanaged<const float[16][5][1][1]> w_0_weight;" in evaluator
    assert "Kokkos::parallel_for(" not in evaluator.split("static void evaluate(")[1]
    assert json.loads((out / "lapis_manifest.json").read_text())["evaluator"] is True
    plain = tmp_path / "plain"
    assert invoke(tmp_path / "model.pt2", "--out", plain, "--name", "head", "-q").exit_code == 0
    assert "Evaluator" not in (plain / "include" / "head.hpp").read_text()
    assert json.loads((plain / "lapis_manifest.json").read_text())["evaluator"] is False


def test_a_model_traced_at_a_fixed_batch_gets_an_evaluator(tmp_path):
    """A .pt2 of batch 16 (no dynamic dimension): its rows are checked at 16 and the row is
    exported from the same program, whose shape checks the exporter passes by."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.Tanh())
    out = tmp_path / "pkg"
    result = invoke(save(tmp_path, net, torch.randn(16, 3), dynamic=False), "--out", out,
                    "--name", "fixed", "--evaluator", "-q")
    assert result.exit_code == 0, result.output
    header = (out / "include" / "fixed.hpp").read_text()
    assert "static constexpr int output0_size = 8;" in header
    assert "input0 (input 'input'): float32 [16, 3]" in header   # forward() keeps its batch
