"""The errors a user meets with the models scientists deploy: a shape that does not fit the
model, integer inputs that index (verify draws them valid, or takes --example-inputs), a
verification that fails after the package is written (exit 1), and generated C++ that does not
compile (our bug: one line, exit 3, the compiler's log in a file)."""
from __future__ import annotations

import types
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from torch import nn

import cli
import exporter
from exporter import frontend, verify
from exporter.errors import ExportError, InternalError
from exporter.verify import index_inputs


class TwoLayers(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(4, 3), nn.Linear(3, 2)

    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(x)))


class Gather(nn.Module):
    """Rows of a 3-row table picked by an int64 input, summed at positions of another."""

    def __init__(self):
        super().__init__()
        self.table = nn.Parameter(torch.randn(3, 4))

    def forward(self, x, rows, slots):
        picked = self.table.index_select(0, rows) + x[slots]
        return torch.zeros(5, 4).index_add(0, slots, picked)


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("model-errors")
    torch.manual_seed(0)
    paths = {"traced": root / "two_layers.pt", "gather": root / "gather.pt2"}
    torch.jit.save(torch.jit.trace(TwoLayers().eval(), (torch.randn(2, 4),)), paths["traced"])
    example = (torch.randn(5, 4), torch.tensor([0, 2, 1]), torch.tensor([4, 0, 4]))
    torch.export.save(torch.export.export(Gather().eval(), example), paths["gather"])
    return paths


def invoke(*args):
    return CliRunner().invoke(cli.command, [str(arg) for arg in args])


def one_line(result) -> str:
    """The error line of a run that printed one (+ a hint) and no traceback or torch logs."""
    lines = result.stderr.strip().splitlines()
    assert 1 <= len(lines) <= 2, result.stderr
    assert lines[0].startswith("lapis-export: error: "), result.stderr
    assert len(lines) == 1 or lines[1].startswith("  hint: "), result.stderr
    return lines[0]


@pytest.mark.parametrize("shape", ["2x5", "Nx5"])
def test_a_shape_that_does_not_fit_names_the_input_dimension_and_layer(files, tmp_path, shape):
    result = invoke(files["traced"], "--out", tmp_path / "pkg", "--input-shape", shape)
    assert result.exit_code == 2
    assert one_line(result).endswith(
        "input 0 ('x') dimension 1 is 5, but layer 'fc1' (Linear) takes 4 features")
    assert "s6" not in result.stderr and "fake_tensor" not in result.stderr


def test_index_inputs_are_drawn_below_what_they_index(files):
    model = frontend.load(files["gather"])
    bounds = index_inputs.index_bounds(model)
    assert sorted(bounds) == [1, 2]
    assert index_inputs.bound_for(bounds[1], {}) == 3     # rows index the 3-row table
    assert index_inputs.bound_for(bounds[2], {}) == 5     # slots index x and the 5-row sum
    torch.manual_seed(0)
    for _ in range(20):
        x, rows, slots = verify._random_inputs(torch, model, None, bounds)
        assert 0 <= int(rows.min()) and int(rows.max()) < 3 and int(slots.max()) < 5
    verify._reference_outputs(model, [x, rows, slots])   # the reference takes them


def test_index_bounds_follow_a_dynamic_node_count():
    class Edges(nn.Module):
        def forward(self, x, edge_index):
            return torch.zeros_like(x).index_add(0, edge_index[1], x[edge_index[0]])

    nodes, edges = torch.export.Dim("nodes"), torch.export.Dim("edges")
    program = torch.export.export(Edges(), (torch.randn(6, 2), torch.tensor([[0, 1], [2, 3]])),
                                  dynamic_shapes=({0: nodes}, {1: edges}))
    model = types.SimpleNamespace(kind="torch.export", program=program)
    bounds = index_inputs.index_bounds(model)
    x = next(n for n in program.graph.nodes if n.op == "placeholder" and n.name == "x")
    symbol = str(x.meta["val"].shape[0].node.expr)
    assert index_inputs.bound_for(bounds[1], {symbol: 7}) == 7


def test_example_inputs_files(files, tmp_path):
    model = frontend.load(files["gather"])
    tensors = (torch.randn(5, 4), torch.tensor([2, 2, 0]), torch.tensor([1, 1, 3]))
    np.savez(tmp_path / "inputs.npz", *[t.numpy() for t in tensors])
    torch.save(tensors, tmp_path / "inputs.pt")
    for name in ("inputs.npz", "inputs.pt"):
        loaded = verify.load_example_inputs(tmp_path / name, model)
        checked = verify._check_example_inputs(model, loaded, name)
        assert all(torch.equal(a, b) for a, b in zip(checked, tensors))
    torch.save((tensors[0],), tmp_path / "short.pt")
    with pytest.raises(ExportError, match="has 1 inputs, the model takes 3"):
        verify._check_example_inputs(
            model, verify.load_example_inputs(tmp_path / "short.pt", model), "short.pt")
    with pytest.raises(ExportError, match="cannot be read"):
        verify.load_example_inputs(tmp_path / "missing.npz", model)


def test_example_inputs_need_verify_and_a_file(files, tmp_path):
    inputs = tmp_path / "x.npz"
    np.savez(inputs, np.zeros(3))
    result = invoke(files["gather"], "--out", tmp_path / "pkg", "--example-inputs", inputs)
    assert result.exit_code == 2 and "--example-inputs is for --verify" in one_line(result)
    result = invoke(files["gather"], "--out", tmp_path / "pkg", "--verify", "--example-inputs",
                    tmp_path / "missing.npz")
    assert result.exit_code == 2 and "missing.npz" in one_line(result)


@pytest.fixture
def later_stages(monkeypatch):
    """importer..package replaced by stand-ins; the test sets verify.run."""
    def write(source, out, options):
        out.mkdir(parents=True, exist_ok=True)
        return out

    fakes = {
        "importer": types.SimpleNamespace(to_linalg=lambda model: types.SimpleNamespace(
            weights=[])),
        "lowering": types.SimpleNamespace(run=lambda imported, backend, precision="fp32": None),
        "emit": types.SimpleNamespace(kokkos=lambda lowered, name, backend, precision="fp32",
                                      row=None:
                                      exporter.handoff
                                      .EmittedSource(name=name, backend=backend, header="",
                                                     source="", weights=[], inputs=[],
                                                     outputs=[])),
        "package": types.SimpleNamespace(write=write,
                                          PackageOptions=lambda **kw: types.SimpleNamespace(**kw)),
    }
    for module, fake in fakes.items():
        monkeypatch.setattr(exporter, module, fake, raising=False)
    return monkeypatch


@pytest.mark.parametrize("failure,text", [
    (RuntimeError("demo_forward_host returned 3: out of range"),
     "RuntimeError: demo_forward_host returned 3: out of range"),
    (ExportError("the model itself failed on the verification inputs: IndexError: index 7"),
     "the model itself failed on the verification inputs: IndexError: index 7")])
def test_a_failed_verification_says_the_package_is_complete(files, tmp_path, later_stages,
                                                            failure, text):
    def fails(package_dir, model, example_inputs=None):
        raise failure
    later_stages.setattr(exporter, "verify", types.SimpleNamespace(run=fails), raising=False)
    out = tmp_path / "pkg"
    result = invoke(files["traced"], "--out", out, "--input-shape", "2x4", "--verify")
    assert result.exit_code == 1
    assert one_line(result) == f"lapis-export: error: verify failed: {text} (the package at " \
                               f"{out} is complete)"
    assert "internal error" not in result.stderr


def test_a_compile_failure_exits_3_in_one_line(files, tmp_path, later_stages):
    def does_not_compile(package_dir, model, example_inputs=None):
        raise InternalError("the generated C++ for 'two_layers' does not compile (first "
                            "error: src/two_layers.cpp:1:1: error: boom)",
                            hint="the compiler's full log is in /tmp/x.log")
    later_stages.setattr(exporter, "verify", types.SimpleNamespace(run=does_not_compile),
                         raising=False)
    result = invoke(files["traced"], "--out", tmp_path / "pkg", "--input-shape", "2x4",
                    "--verify")
    assert result.exit_code == 3
    assert one_line(result) == "lapis-export: error: internal error: the generated C++ for " \
        "'two_layers' does not compile (first error: src/two_layers.cpp:1:1: error: boom)"
    assert "/tmp/x.log" in result.stderr
