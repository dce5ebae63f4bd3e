"""The graph rewrites to tuned kernels (importer/dense_passes.py): torch.linalg ops and
nn.LSTM / nn.GRU become the custom ops of exporter/linalg.py and exporter/recurrent.py, whose
reference implementations match torch; through lowering they are one `lapis.*` op each, with no
copies, emitted as calls of lapis/dense_solve.hpp and lapis/recurrent.hpp. Numbers from built
packages: integration_tests/test_linalg.py and test_sequence_models.py."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from exporter import emit, importer, lowering
from exporter.frontend import torch_program
from exporter.handoff import LoadedModel
from exporter.importer import dense_passes


class Linalg(torch.nn.Module):
    def forward(self, A, b, S):
        return (torch.linalg.solve(A, b), torch.linalg.inv(A), torch.linalg.det(A),
                torch.linalg.cholesky(S, upper=True))


def program_of(module, inputs, dynamic=None):
    return torch.export.export(module, inputs, dynamic_shapes=dynamic)


def lowered(module, inputs, dynamic=None):
    program = program_of(module, inputs, dynamic)
    loaded = LoadedModel(path=Path("m.pt2"), kind="export", program=program,
                         inputs=torch_program.input_specs(Path("m.pt2"), program),
                         source_sha256="")
    return lowering.run(importer.to_linalg(loaded), "openmp")


def spd(batch, n, seed=0):
    A = torch.randn(batch, n, n, generator=torch.Generator().manual_seed(seed))
    return A @ A.mT + n * torch.eye(n)


def test_linalg_ops_become_custom_ops_that_match_torch():
    """Unbatched and 4-d batches, a vector right-hand side, the upper factor."""
    A = spd(6, 3).reshape(2, 3, 3, 3)
    b = torch.randn(2, 3, 3)                  # a batch of vectors (A's shape without the last)
    S = spd(1, 4)[0]                          # one matrix, no batch
    module = Linalg()
    program = program_of(module, (A, b, S))
    assert dense_passes.dense_linalg_as_calls(program) == 4
    targets = {str(n.target) for n in program.graph.nodes if n.op == "call_function"}
    assert {"lapis.dense_solve.default", "lapis.dense_inv.default", "lapis.dense_det.default",
            "lapis.dense_cholesky.default"} <= targets
    assert not any("linalg" in t for t in targets)
    for ours, theirs in zip(program.module()(A, b, S), module(A, b, S)):
        torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)


class LowerLinalg(torch.nn.Module):
    def forward(self, A, b, S):
        return (torch.linalg.solve(A, b), torch.linalg.inv(A), torch.linalg.det(A),
                torch.linalg.cholesky(S))


def test_one_call_per_op_no_copies_and_a_dynamic_batch():
    """Each op writes the output argument itself; the batch is read from the Views."""
    batch = torch.export.Dim("batch", min=1, max=1024)
    module = lowered(LowerLinalg(), (spd(8, 3), torch.randn(8, 3, 2), spd(8, 3, 1)),
                     ({0: batch}, {0: batch}, {0: batch})).module
    text = str(module)
    for op in ("dense_solve", "dense_inv", "dense_det", "dense_cholesky"):
        assert text.count(f'"lapis.{op}"') == 1, text
    assert "func.call" not in text and "memref.copy" not in text


def test_emitted_calls_name_the_matrix_order():
    result = lowered(Linalg(), (spd(8, 3), torch.randn(8, 3, 2), spd(8, 10, 1)))
    source = emit.kokkos(result, "m", "openmp").source
    assert 'lapis::dense_solve<3, execution_space>(exec, "m::dense_solve"' in source
    assert "lapis::dense_inverse<3, execution_space>" in source
    assert "lapis::dense_determinant<3, execution_space>" in source
    assert "lapis::dense_cholesky<10, execution_space>" in source
    assert '#include "lapis/dense_solve.hpp"' in source


@pytest.mark.parametrize("cell", [torch.nn.LSTM, torch.nn.GRU])
@pytest.mark.parametrize("layout", ["two_layers", "bidirectional_seq_first", "unbatched",
                                    "no_bias"])
def test_recurrent_layers_become_loops_that_match_torch(cell, layout):
    torch.manual_seed(0)
    options = {"two_layers": dict(num_layers=2, batch_first=True),
               "bidirectional_seq_first": dict(bidirectional=True),
               "unbatched": dict(num_layers=2),
               "no_bias": dict(bias=False, batch_first=True)}[layout]
    rnn = cell(5, 7, **options).eval()
    x = torch.randn(*((6, 5) if layout == "unbatched" else (3, 6, 5)))
    program = program_of(rnn, (x,))
    layers = dense_passes.recurrences_as_loops(program)
    assert layers == 1
    targets = {str(n.target) for n in program.graph.nodes if n.op == "call_function"}
    assert not {"aten.lstm.input", "aten.gru.input"} & targets
    with torch.no_grad():
        ours, theirs = program.module()(x), rnn(x)
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)


def test_an_lstm_over_many_steps_is_a_few_kernels():
    """torch.export unrolls the steps; the recurrence op keeps them a loop in C++."""
    torch.manual_seed(0)
    rnn = torch.nn.LSTM(4, 8, num_layers=2, batch_first=True).eval()
    result = lowered(rnn, (torch.randn(2, 40, 4),))
    emitted = emit.kokkos(result, "m", "openmp")
    assert emitted.source.count("lapis::lstm_recurrence<execution_space>") == 2
    assert emitted.kernel_count < 20
    assert '#include "lapis/recurrent.hpp"' in emitted.source
