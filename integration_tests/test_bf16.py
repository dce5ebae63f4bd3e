"""--precision bf16 on host backends end to end: an MLP (one lapis::linear_chain, weights in
bfloat16) and a matrix product of two inputs (lapis::matmul<..., Precision::bf16>), exported,
built once and run on the default kernel (AMX tiles where the CPU has AMX-BF16, else float FMA
on operands rounded to bfloat16) and on the others this CPU has (LAPIS_GEMM_ISA=avx512: FMA;
avx512_bf16: vdpbf16ps), against PyTorch in float32.

Tolerance: max |ours - PyTorch fp32| <= 2e-2 * max |PyTorch fp32| (--verify's for bf16), and
within 3x of PyTorch's own bfloat16 error (torch.autocast on the CPU against float32) on the
same inputs. The kernels agree to summation order, which through layers of bfloat16-rounded
activations (a float sum one ulp apart can round to the neighbouring bfloat16) leaves them
within 1e-3 of max |ours| of each other."""
from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

from .conftest import REPO, run
from .functions import build, relative_error, run_cases
from .test_gemm import available_isas

# The default (AMX tiles where the CPU has AMX-BF16, else float FMA on widened operands), and
# the other kernels this CPU has, forced.
KERNELS = ["default"] + [isa for isa in ("avx512", "avx512_bf16") if isa in available_isas()]
TOLERANCE = 2e-2


class Product(torch.nn.Module):
    def forward(self, a, b):
        return a @ b


def mlp() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Linear(16, 256), torch.nn.SiLU(), torch.nn.Linear(256, 257), torch.nn.GELU(),
        torch.nn.Linear(257, 64), torch.nn.Tanh(), torch.nn.Linear(64, 3)).eval()


def cases():
    rng = np.random.default_rng(5)
    x = rng.standard_normal((300, 16)).astype("float32")
    a = rng.standard_normal((70, 301)).astype("float32")
    b = rng.standard_normal((301, 45)).astype("float32")
    return {"mlp": (mlp(), [x]), "product": (Product().eval(), [a, b])}


@pytest.fixture(scope="module")
def packages(tmp_path_factory):
    """Each model exported with --precision bf16 and built, with its inputs and PyTorch's
    float32 and autocast-bfloat16 outputs."""
    root = tmp_path_factory.mktemp("bf16")
    built = {}
    for name, (model, inputs) in cases().items():
        tensors = tuple(torch.from_numpy(array) for array in inputs)
        path = root / f"{name}.pt2"
        torch.export.save(torch.export.export(model, tensors), path)
        package = root / name
        run([sys.executable, "-m", "cli", path, "--out", package, "--precision", "bf16", "-q"],
            cwd=REPO)
        with torch.no_grad():
            reference = model(*tensors).numpy()
            with torch.autocast("cpu", dtype=torch.bfloat16):
                autocast = model(*tensors).float().numpy()
        built[name] = (package, build(root, package), inputs, reference, autocast)
    return root, built


@pytest.mark.parametrize("name", ["mlp", "product"])
def test_bf16_matches_pytorch_as_its_own_bf16_does(packages, name):
    root, built = packages
    package, library, inputs, reference, autocast = built[name]
    source = (package / "src" / f"{name}.cpp").read_text()
    assert "lapis::bfloat16" in source if name == "mlp" else "Precision::bf16" in source
    assert '"precision": "bf16"' in (package / "lapis_manifest.json").read_text()
    assert "bf16, bfloat16 products" in (package / "include" / f"{name}.hpp").read_text()
    theirs = relative_error(autocast, reference)
    results = {}
    for kernel in KERNELS:
        env = {} if kernel == "default" else {"LAPIS_GEMM_ISA": kernel}
        (results[kernel],) = run_cases(root, package, library, {"x": inputs}, env=env)["x"]
        ours = relative_error(results[kernel], reference)
        assert ours <= TOLERANCE, f"{name} {kernel}: {ours:.3g}"
        assert ours <= 3 * theirs, f"{name} {kernel}: {ours:.3g}, PyTorch bf16 {theirs:.3g}"
    for kernel in KERNELS[1:]:
        assert relative_error(results[kernel], results["default"]) <= 1e-3, kernel
