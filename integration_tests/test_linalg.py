"""Small dense linear algebra end to end (exporter/linalg.py -> lapis/dense_solve.hpp):
torch.linalg.solve, inv, det, cholesky and exporter.linalg.lstsq on batches of well-conditioned
random matrices (fixed seeds), float32 at 1e-4 and float64 at 1e-10 relative to the largest
reference value, against torch.linalg. 3x3 runs one matrix per thread; 12x12 a team per
matrix; one solve has a dynamic batch, run at several sizes. All packages in one build."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from exporter.linalg import lstsq

from . import batched

TOLERANCE = {torch.float32: 1e-4, torch.float64: 1e-10}


class SmallDense(torch.nn.Module):
    """Every op on 3x3 matrices (one per thread): solve with a matrix and with a vector
    right-hand side, inverse, determinant, Cholesky factor; least squares on 6x3."""

    def forward(self, A, B, b, S, M, C):
        return (torch.linalg.solve(A, B), torch.linalg.solve(A, b), torch.linalg.inv(A),
                torch.linalg.det(A), torch.linalg.cholesky(S), lstsq(M, C))


class TeamDense(torch.nn.Module):
    """12x12 matrices (a team per matrix): solve, inverse, determinant, upper Cholesky."""

    def forward(self, A, B, S):
        return (torch.linalg.solve(A, B), torch.linalg.inv(A), torch.linalg.det(A),
                torch.linalg.cholesky(S, upper=True))


class BroadcastSolve(torch.nn.Module):
    def forward(self, A, B):
        return torch.linalg.solve(A, B)


class CellUpdate(torch.nn.Module):
    """A per-cell model around a solve: a small MLP's output is the right-hand side."""

    def __init__(self):
        super().__init__()
        self.mlp = torch.nn.Sequential(torch.nn.Linear(3, 16), torch.nn.Tanh(),
                                       torch.nn.Linear(16, 3))

    def forward(self, A, x):
        return torch.linalg.solve(A, self.mlp(x)) + x


def well_conditioned(batch: int, n: int, dtype, seed: int, spd: bool = False):
    generator = torch.Generator().manual_seed(seed)
    A = torch.randn(batch, n, n, generator=generator, dtype=torch.float64)
    A = A @ A.transpose(-2, -1) + n * torch.eye(n, dtype=torch.float64) if spd else \
        A + 2 * n ** 0.5 * torch.eye(n, dtype=torch.float64)
    return A.to(dtype)


def randn(*shape, dtype, seed):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def _cases():
    """name -> (module, inputs, names of the outputs)."""
    cases = {}
    for dtype, tag in ((torch.float32, "f32"), (torch.float64, "f64")):
        cases[f"dense3_{tag}"] = (SmallDense(), (
            well_conditioned(1000, 3, dtype, 1), randn(1000, 3, 2, dtype=dtype, seed=2),
            randn(1000, 3, dtype=dtype, seed=3), well_conditioned(1000, 3, dtype, 4, spd=True),
            randn(500, 6, 3, dtype=dtype, seed=5), randn(500, 6, 2, dtype=dtype, seed=6)),
            ("solve_matrix", "solve_vector", "inv", "det", "cholesky", "lstsq"))
        cases[f"dense12_{tag}"] = (TeamDense(), (
            well_conditioned(64, 12, dtype, 7), randn(64, 12, 3, dtype=dtype, seed=8),
            well_conditioned(64, 12, dtype, 9, spd=True)),
            ("solve", "inv", "det", "cholesky_upper"))
    # Batch dimensions [2, 50] broadcast against one shared right-hand side per row.
    cases["solve4_broadcast_f64"] = (BroadcastSolve(), (
        well_conditioned(100, 4, torch.float64, 10).reshape(2, 50, 4, 4),
        randn(50, 4, 1, dtype=torch.float64, seed=11)), ("solve",))
    torch.manual_seed(0)
    cases["cell_update_dynamic_f32"] = (CellUpdate().eval(), (
        well_conditioned(1000, 3, torch.float32, 12), randn(1000, 3, dtype=torch.float32,
                                                            seed=13)), ("update",))
    return cases


CASES = _cases()
DYNAMIC = {"cell_update_dynamic_f32"}
DYNAMIC_BATCHES = (1, 7, 2500)
OUTPUTS = [(name, index, what) for name, (_, _, outputs) in CASES.items() if name not in DYNAMIC
           for index, what in enumerate(outputs)]


@pytest.fixture(scope="module")
def built(tmp_path_factory, kokkos_root):
    work = tmp_path_factory.mktemp("linalg")
    packages = {}
    for name, (module, inputs, _) in CASES.items():
        dynamic = None
        if name in DYNAMIC:
            batch = torch.export.Dim("batch", min=1, max=1 << 20)
            dynamic = tuple({0: batch} for _ in inputs)
        path = work / f"{name}.pt2"
        torch.export.save(torch.export.export(module, inputs, dynamic_shapes=dynamic), path)
        packages[name] = batched.export(path, work / name, name)
    libraries = batched.build(packages, work, kokkos_root, batch_size=2)
    jobs, references = {}, {}
    for name, (module, inputs, _) in CASES.items():
        runs = [(batch, (well_conditioned(batch, 3, torch.float32, 20 + batch),
                         randn(batch, 3, dtype=torch.float32, seed=21)))
                for batch in DYNAMIC_BATCHES] if name in DYNAMIC else [(None, inputs)]
        if name == "dense3_f32":      # and once with a singular matrix
            singular = [t.clone() for t in inputs]
            singular[0][5] = torch.tensor([[1.0, 2, 3], [2, 4, 6], [1, 0, 1]])  # rank 2
            runs.append(("singular", tuple(singular)))
        for tag, run_inputs in runs:
            with torch.no_grad():
                reference = module(*run_inputs) if tag != "singular" else None
            references[name, tag] = reference if isinstance(reference, tuple) else (reference,)
            jobs[name, tag] = (libraries[name], packages[name], [t.numpy() for t in run_inputs])
    outputs = batched.run(jobs, work)
    return {key: (outputs[key], [r.numpy() for r in references[key] if r is not None])
            for key in jobs}


@pytest.mark.parametrize("name,index,what", OUTPUTS,
                         ids=[f"{name}-{what}" for name, _, what in OUTPUTS])
def test_matches_torch_linalg(built, name, index, what):
    ours, reference = built[name, None]
    tolerance = TOLERANCE[CASES[name][1][0].dtype]
    batched.assert_close(ours[index], reference[index], tolerance, f"{name}: {what}")


@pytest.mark.parametrize("batch", DYNAMIC_BATCHES)
def test_dynamic_batch(built, batch):
    """One package with a dynamic batch, run at several sizes."""
    ours, reference = built["cell_update_dynamic_f32", batch]
    batched.assert_close(ours[0], reference[0], TOLERANCE[torch.float32], f"batch {batch}")


def test_singular_matrix_gives_non_finite_values(built):
    """No error check in the package: a zero pivot divides, as LAPACK-free codes do."""
    (solution, _, _, determinant, _, _), _ = built["dense3_f32", "singular"]
    assert not np.isfinite(solution[5]).all() and np.isfinite(np.delete(solution, 5, 0)).all()
    assert determinant[5] == 0.0
