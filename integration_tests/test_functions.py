"""Python functions exported end to end (examples/science_kernels.py): axpby with 0-d scalar
inputs, gemv, a Jacobi step and conjugate gradients with a fixed iteration count, each built
and run through its C API and compared with calling the Python function itself:
max |ours - python| <= 1e-5 * max |python| in float32, 1e-10 in float64."""
from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch

from .functions import KERNELS, build, export, relative_error, run_cases

TOLERANCE = {"float32": 1e-5, "float64": 1e-10}


@pytest.fixture(scope="module")
def kernels():
    spec = importlib.util.spec_from_file_location("science_kernels", KERNELS)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return tmp_path_factory.mktemp("functions")


def compare(root, kernels, function: str, shapes: tuple[str, ...],
            cases: dict[str, list[torch.Tensor]], dtype: str, options=()) -> str:
    """Export, build, run `cases`, compare each output with the Python function; returns the
    export's stdout."""
    package, stdout = export(root, function, *shapes, options=options)
    library = build(root, package)
    ours = run_cases(root, package, library,
                     {case: [t.numpy() for t in inputs] for case, inputs in cases.items()})
    for case, inputs in cases.items():
        reference = getattr(kernels, function)(*inputs).numpy()
        (result,) = ours[case]
        assert result.shape == reference.shape and result.dtype == reference.dtype
        error = relative_error(result, reference)
        assert error <= TOLERANCE[dtype], f"{function} {case}: relative error {error:.3g}"
    return stdout


def test_axpby_with_scalar_inputs(root, kernels):
    g = torch.Generator().manual_seed(0)
    x, y = (torch.randn(1000, generator=g, dtype=torch.float64) for _ in range(2))
    scalar = lambda value: torch.tensor(value, dtype=torch.float64)   # noqa: E731
    cases = {f"a{i}": [scalar(a), x, scalar(b), y]
             for i, (a, b) in enumerate([(2.5, -0.5), (0.0, 1.0), (-3.0, 1e3)])}
    compare(root, kernels, "axpby", ("scalar:float64", "1000:float64") * 2, cases, "float64")


def test_gemv(root, kernels):
    g = torch.Generator().manual_seed(1)
    cases = {"random": [torch.randn(300, 200, generator=g), torch.randn(200, generator=g)]}
    compare(root, kernels, "gemv", ("300x200", "200"), cases, "float32")


def test_jacobi_step(root, kernels):
    A, b, x = kernels.jacobi_step_example_inputs()
    # A few sweeps from the same start: each output fed back as the next input.
    cases, current = {}, x
    for sweep in range(3):
        cases[f"sweep{sweep}"] = [A, b, current]
        current = kernels.jacobi_step(A, b, current)
    compare(root, kernels, "jacobi_step", ("64x64", "64", "64"), cases, "float32")


def test_conjugate_gradients_fixed_iterations_and_verify(root, kernels):
    A, b, x0 = kernels.cg_example_inputs()
    g = torch.Generator().manual_seed(4)
    other = kernels.spd_matrix(64, seed=5)
    cases = {"example": [A, b, x0],
             "warm_start": [other, b, torch.randn(64, generator=g, dtype=torch.float64)]}
    # --verify runs the package on cg_example_inputs() against the function (1e-10 in float64).
    stdout = compare(root, kernels, "cg", ("64x64:float64", "64:float64", "64:float64"), cases,
                     "float64", options=("--verify",))
    assert "tolerance 1e-10) — PASS" in stdout, stdout
    # Ten iterations reduce the residual of this well-conditioned system by orders of magnitude.
    x = kernels.cg(A, b, x0)
    assert float(torch.linalg.norm(b - A @ x)) < 1e-3 * float(torch.linalg.norm(b))
    np.testing.assert_array_equal(x0.numpy(), np.zeros(64))   # the input is left alone
