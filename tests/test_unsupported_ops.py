"""An op the pipeline cannot lower is one error line: the op, where in the model it came from,
and how many other unsupported ops there are — and nothing else on stderr (MLIR's own
diagnostics are collected, not printed)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from torch import nn

import cli

REPO = Path(__file__).resolve().parents[1]


class Block(nn.Module):
    def __init__(self, op):
        super().__init__()
        self.fc = nn.Linear(4, 4)
        self.op = op

    def forward(self, x):
        return self.op(self.fc(x))


class Model(nn.Module):
    def __init__(self, op):
        super().__init__()
        self.block = Block(op)

    def forward(self, x):
        return self.block(x)


OPS = {
    # torch-mlir has no torch-dialect op for it
    "i0": (lambda y: torch.special.i0(y), ["op aten.i0 at 'block/i0'", "torch-mlir has no op"]),
    # torch-mlir has no lowering to linalg for two of them; sort becomes a tm_tensor op,
    # which lowering turns into loops
    "several": (lambda y: torch.erfinv(y.tanh() * 0.5) + torch.erfinv(y.sin() * 0.5)
                + torch.sort(y, 1)[0],
                ["op aten.erfinv at 'block/erfinv'", "no lowering for it to linalg",
                 "1 other unsupported op: aten.erfinv at 'block/erfinv'"]),
    # an effectful op (torch.export threads a token through it; solve, inv and cholesky have
    # tuned kernels without the check, exporter/linalg.py)
    "lu_factor": (lambda y: torch.linalg.lu_factor(y @ y.T + torch.eye(4))[0],
                  ["op aten._linalg_check_errors", "side effects"]),
}


@pytest.fixture(scope="module")
def model_files(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("unsupported")
    torch.manual_seed(0)
    paths = {}
    for name, (op, _) in OPS.items():
        paths[name] = root / f"{name}.pt2"
        program = torch.export.export(Model(op).eval(), (torch.randn(4, 4),))
        torch.export.save(program, paths[name])
    return paths


@pytest.mark.parametrize("case", ["i0", "lu_factor"])
def test_unsupported_op_is_named_with_its_location(model_files, tmp_path, case):
    result = CliRunner().invoke(cli.command, [str(model_files[case]), "--out",
                                              str(tmp_path / "pkg")])
    assert result.exit_code == 2, result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 2 and lines[1].startswith("  hint: "), result.stderr
    assert lines[0].startswith(f"lapis-export: error: {model_files[case]}: ")
    for part in OPS[case][1]:
        assert part in lines[0], lines[0]
    assert not (tmp_path / "pkg").exists()


def test_several_unsupported_ops_are_counted_and_stderr_stays_clean(model_files, tmp_path):
    # A separate process: MLIR prints diagnostics to file descriptor 2 unless they are caught.
    result = subprocess.run([sys.executable, "-m", "cli", str(model_files["several"]), "--out",
                             str(tmp_path / "pkg")], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 2
    lines = result.stderr.splitlines()
    assert len(lines) == 2 and lines[1].startswith("  hint: "), result.stderr
    for part in OPS["several"][1]:
        assert part in lines[0], lines[0]
    assert result.stdout == ""
