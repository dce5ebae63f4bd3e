"""Derivatives compiled at export (--grad, and functions that differentiate themselves)
against PyTorch's autograd: an MLP, a CNN and a neural pair potential from .pt2 in float32 and
float64, the potential at 0, 1, 37 and 1,000 atoms with one library; a forward that calls
torch.autograd.grad; a PINN's Laplacian against torch.func.hessian. Tolerances: 1e-5 x max
|reference| in float32, 1e-10 in float64. All packages are built in one CMake build.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from . import batched
from . import gradient_cases as cases

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "sample_app" / "lammps"))
import potential as pair_potential  # noqa: E402

CASES_FILE = Path(cases.__file__)
TOLERANCE = {"float32": 1e-5, "float64": 1e-10}


def _export(target, out: Path, name: str, grads=(), input_shapes=None, dtypes=None):
    """The package of `target` (a .pt2 path or 'file.py:function') with `grads` requested."""
    from exporter import emit, frontend, importer, lowering, package
    from exporter.frontend import gradients

    loaded = frontend.load(target, input_shapes, None, dtypes)
    if grads:
        loaded = gradients.add_gradients(loaded, list(grads))
    lowered = lowering.run(importer.to_linalg(loaded), "openmp")
    package.write(emit.kokkos(lowered, name, "openmp"), out, package.PackageOptions(force=True))
    return out


def _save(module, example, path: Path, dynamic=None) -> Path:
    torch.export.save(torch.export.export(module, example, dynamic_shapes=dynamic), str(path))
    return path


def _pairs(atoms: int, seed: int, dtype) -> tuple:
    """Positions in a box sized for about 20 neighbours each, all pairs within the cutoff (both
    directions), half the atoms local."""
    generator = np.random.default_rng(seed)
    side = (atoms * 4 * np.pi * pair_potential.CUTOFF ** 3 / 3 / 20) ** (1 / 3) if atoms else 1
    positions = generator.uniform(0, side, (atoms, 3))
    difference = positions[None, :, :] - positions[:, None, :]
    distance = np.sqrt((difference ** 2).sum(-1))
    centre, neighbour = np.nonzero((distance < pair_potential.CUTOFF) & (distance > 0.8))
    mask = (np.arange(atoms) < max(atoms // 2, 1)).astype(np.float64)
    return (positions.astype(dtype), np.stack([centre, neighbour]).astype(np.int64),
            mask.astype(dtype))


def _autograd(module, inputs, wrt: int):
    """The module's outputs and d(sum of output 0)/d(input wrt) by PyTorch eagerly."""
    tensors = [torch.from_numpy(np.array(a)) for a in inputs]
    tensors[wrt].requires_grad_(True)
    output = module(*tensors)
    output = output[0] if isinstance(output, tuple) else output
    gradient, = torch.autograd.grad(output.sum(), tensors[wrt])
    return [output.detach().numpy(), gradient.numpy()]


@pytest.fixture(scope="module")
def built(tmp_path_factory, kokkos_root):
    work = tmp_path_factory.mktemp("gradients")
    models = {}
    packages = {}
    for dtype in ("float32", "float64"):
        torch_dtype = getattr(torch, dtype)
        potential = pair_potential.Potential(torch_dtype).eval()
        path = work / f"potential_{dtype}.pt2"
        pair_potential.save(path, torch_dtype)
        models[f"potential_{dtype}"] = potential
        packages[f"potential_{dtype}"] = _export(path, work / f"potential_{dtype}",
                                                 f"potential_{dtype}", ["energy:positions"])
        mlp = cases.mlp(torch_dtype)
        models[f"mlp_{dtype}"] = mlp
        batch = torch.export.Dim("batch", min=0)
        path = _save(mlp, (torch.randn(8, 4, dtype=torch_dtype),), work / f"mlp_{dtype}.pt2",
                     ({0: batch},))
        packages[f"mlp_{dtype}"] = _export(path, work / f"mlp_{dtype}", f"mlp_{dtype}",
                                           ["0:0"])
    cnn = cases.SmallCNN().eval()
    models["cnn"] = cnn
    path = _save(cnn, (torch.randn(3, 2, 8, 8),), work / "cnn.pt2")
    packages["cnn"] = _export(path, work / "cnn", "cnn", ["field"])
    for function, shape in (("energy_and_forces", "Nx3"), ("laplacian", "Nx2"),
                            ("gradient_func", "50x2"), ("laplacian_hessian", "16x2")):
        from exporter.frontend import parse_input_shape
        packages[function] = _export(f"{CASES_FILE}:{function}", work / function, function,
                                     input_shapes=[parse_input_shape(shape)],
                                     dtypes=["float64"])
    libraries = batched.build(packages, work, kokkos_root)
    return work, models, packages, libraries


def _run(built, name: str, inputs_list: list) -> list:
    work, _, packages, libraries = built
    jobs = {index: (libraries[name], packages[name], inputs)
            for index, inputs in enumerate(inputs_list)}
    outputs = batched.run(jobs, work)
    return [outputs[index] for index in range(len(inputs_list))]


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_potential_forces_match_autograd_at_any_atom_count(built, dtype):
    """Energy and dE/dpositions at 0, 1, 37 and 1,000 atoms (one library, sizes at run time)."""
    model = built[1][f"potential_{dtype}"]
    inputs_list = [_pairs(atoms, seed, np.dtype(dtype))
                   for seed, atoms in enumerate((0, 1, 37, 1000))]
    assert inputs_list[3][1].shape[1] > 10_000      # the large run has many pairs
    for atoms, inputs, ours in zip((0, 1, 37, 1000), inputs_list,
                                   _run(built, f"potential_{dtype}", inputs_list)):
        energy, gradient = _autograd(model, inputs, 0)
        assert ours[1].shape == (atoms, 3)
        batched.assert_close(ours[0], energy, TOLERANCE[dtype], f"energy, {atoms} atoms")
        if atoms:
            batched.assert_close(ours[1], gradient, TOLERANCE[dtype], f"forces, {atoms} atoms")


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_mlp_input_gradient_matches_autograd(built, dtype):
    model = built[1][f"mlp_{dtype}"]
    generator = np.random.default_rng(5)
    inputs_list = [(generator.standard_normal((rows, 4)).astype(dtype),) for rows in (1, 300)]
    for inputs, ours in zip(inputs_list, _run(built, f"mlp_{dtype}", inputs_list)):
        output, gradient = _autograd(model, inputs, 0)
        batched.assert_close(ours[0], output, TOLERANCE[dtype], "mlp output")
        batched.assert_close(ours[1], gradient, TOLERANCE[dtype], "mlp d output / d x")


def test_cnn_input_gradient_matches_autograd(built):
    field = np.random.default_rng(6).standard_normal((3, 2, 8, 8)).astype(np.float32)
    ours, = _run(built, "cnn", [(field,)])
    output, gradient = _autograd(built[1]["cnn"], (field,), 0)
    batched.assert_close(ours[0], output, 1e-5, "cnn output")
    batched.assert_close(ours[1], gradient, 1e-5, "cnn d output / d field")


def test_forward_calling_autograd_grad(built):
    positions = np.random.default_rng(7).standard_normal((25, 3))
    ours, = _run(built, "energy_and_forces", [(positions,)])
    energy, forces = cases.energy_and_forces(torch.from_numpy(positions))
    batched.assert_close(ours[0], energy.numpy(), 1e-10, "energy")
    batched.assert_close(ours[1], forces.numpy(), 1e-10, "forces")


@pytest.mark.parametrize("function, rows", [("laplacian", 1), ("laplacian", 200),
                                            ("laplacian_hessian", 16)])
def test_pinn_laplacian_matches_torch_func_hessian(built, function, rows):
    points = np.random.default_rng(rows).uniform(-1, 1, (rows, 2))
    ours, = _run(built, function, [(points,)])
    reference = cases.laplacian_reference(torch.from_numpy(points)).numpy()
    batched.assert_close(ours[0], reference, 1e-10, f"{function} at {rows} points")


def test_torch_func_grad_over_parameters(built):
    points = np.random.default_rng(8).uniform(-1, 1, (50, 2))
    ours, = _run(built, "gradient_func", [(points,)])
    tensor = torch.from_numpy(points).requires_grad_(True)
    gradient, = torch.autograd.grad(cases.pinn(tensor).sum(), tensor)
    batched.assert_close(ours[0], gradient.numpy(), 1e-10, "du/dx")


def _cli(*arguments: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cli", *arguments], cwd=REPO,
                          capture_output=True, text=True)


def test_gradient_errors_are_one_line(built, tmp_path):
    work = built[0]
    potential = work / "potential_float64.pt2"
    for grad, expected in (("energy:edge_index", "only floating-point inputs have gradients"),
                           ("energy:velocities", "has no input 'velocities'"),
                           ("energy:", "expected OUTPUT:INPUT"),
                           ("energy", "has no input 'energy'"),
                           ("5:positions", "has no output '5'")):
        result = _cli(str(potential), "--out", str(tmp_path / "out"), "--grad", grad)
        assert result.returncode == 2, (grad, result.stderr)
        assert expected in result.stderr, (grad, result.stderr)
        assert "Traceback" not in result.stderr
        assert result.stderr.count("\n") <= 2, result.stderr      # the error and a hint
        assert not (tmp_path / "out").exists()


def test_an_unsupported_op_in_a_function_that_differentiates_is_one_line(tmp_path):
    source = tmp_path / "nodiff.py"
    source.write_text("import torch\n"
                      "def f(x):\n"
                      "    with torch.enable_grad():\n"
                      "        x = x.detach().requires_grad_(True)\n"
                      "        y = torch.nextafter(x, torch.zeros_like(x)).sum()\n"
                      "        return torch.autograd.grad(y, x)[0]\n")
    result = _cli(f"{source}:f", "--input-shape", "4", "--out", str(tmp_path / "out"))
    assert result.returncode == 2, result.stderr
    assert "nextafter" in result.stderr and "Traceback" not in result.stderr, result.stderr
