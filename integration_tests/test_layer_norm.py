"""LayerNorm as one kernel (exporter/layer_norm.py -> lapis/layer_norm.hpp) against PyTorch:
over the last dimension and over the last two, float32 at 1e-5 and float64 at 1e-12 relative
to the largest reference value, with a dynamic row count run at several sizes (0 rows
included), and without an affine part (torch's decomposition, left as it is). Built twice:
as shipped (a row per thread) and with LAPIS_LAYER_NORM_TEAMS (the GPU path, a team per row,
on the host threads)."""
from __future__ import annotations

import pytest
import torch

from . import batched

TOLERANCE = {torch.float32: 1e-5, torch.float64: 1e-12}


class Norms(torch.nn.Module):
    def __init__(self, dtype):
        super().__init__()
        torch.manual_seed(0)
        self.last = torch.nn.LayerNorm(48, eps=1e-6, dtype=dtype)
        self.two = torch.nn.LayerNorm([5, 12], dtype=dtype)
        self.plain = torch.nn.LayerNorm(12, elementwise_affine=False, dtype=dtype)
        with torch.no_grad():          # trained-looking affine parts
            for norm in (self.last, self.two):
                norm.weight.uniform_(0.5, 1.5)
                norm.bias.uniform_(-0.5, 0.5)

    def forward(self, x, y):
        # x [N, 48] offset far from 0 (the variance of deviations, not E[x^2] - E[x]^2)
        return self.last(x * 3.0 + 100.0), self.two(y), self.plain(y)


def inputs(rows: int, dtype, seed: int):
    generator = torch.Generator().manual_seed(seed)
    return (torch.randn(rows, 48, generator=generator, dtype=dtype),
            torch.randn(rows, 5, 12, generator=generator, dtype=dtype))


SIZES = (0, 1, 300)
PATHS = {"rows": "-O1", "teams": "-O1 -DLAPIS_LAYER_NORM_TEAMS"}


@pytest.fixture(scope="module")
def built(tmp_path_factory, kokkos_root):
    work = tmp_path_factory.mktemp("layer_norm")
    rows = torch.export.Dim("rows", min=0, max=1 << 20)
    packages, modules = {}, {}
    for dtype in TOLERANCE:
        name = f"norms_{str(dtype).removeprefix('torch.')}"
        modules[dtype] = Norms(dtype).eval()
        program = torch.export.export(modules[dtype], inputs(4, dtype, 0),
                                      dynamic_shapes=({0: rows}, {0: rows}))
        torch.export.save(program, work / f"{name}.pt2")
        packages[dtype] = batched.export(work / f"{name}.pt2", work / name, name)
    results = {}
    for path, flags in PATHS.items():
        libraries = batched.build({p.name: p for p in packages.values()}, work / path,
                                  kokkos_root, optimization=flags)
        jobs, references = {}, {}
        for dtype, package in packages.items():
            for size in SIZES:
                run_inputs = inputs(size, dtype, size + 1)
                with torch.no_grad():
                    references[dtype, size] = [r.numpy() for r in modules[dtype](*run_inputs)]
                jobs[dtype, size] = (libraries[package.name], package,
                                     [t.numpy() for t in run_inputs])
        outputs = batched.run(jobs, work / path)
        results[path] = {key: (outputs[key], references[key]) for key in jobs}
    return packages, results


def test_affine_layer_norms_are_one_call_each(built):
    packages, _ = built
    for package in packages.values():
        source = (package / "src" / f"{package.name}.cpp").read_text()
        assert source.count("lapis::layer_norm_rows(") == 2, package.name


@pytest.mark.parametrize("path", list(PATHS))
@pytest.mark.parametrize("dtype", list(TOLERANCE), ids=["float32", "float64"])
@pytest.mark.parametrize("size", SIZES)
def test_matches_pytorch(built, path, dtype, size):
    ours, reference = built[1][path][dtype, size]
    for index, (mine, theirs) in enumerate(zip(ours, reference)):
        batched.assert_close(mine, theirs, TOLERANCE[dtype], f"output {index}, {size} rows")
