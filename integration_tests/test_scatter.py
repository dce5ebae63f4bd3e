"""Row scatter-adds end to end (exporter/scatter.py -> lapis/scatter.hpp): every way a graph
network or a pair potential sums edge rows into nodes (`index_add` with and without alpha,
`scatter_add` and `scatter_reduce(sum)` of an expanded index, `index_put(accumulate=True)`,
1-D and [E, 2, 3] rows), with the node and edge counts dynamic, against PyTorch: float32 at
1e-5 and float64 at 1e-12 relative to the largest reference value. Run at no edges, at a few,
and at enough for both host threads to take a share (their copies summed afterwards)."""
from __future__ import annotations

import pytest
import torch

from . import batched

TOLERANCE = {torch.float32: 1e-5, torch.float64: 1e-12}
# (nodes, edges): none at all, no edges, a few (one thread), many (two threads, two copies).
SIZES = ((0, 0), (7, 0), (50, 300), (3000, 40000))


class Scatters(torch.nn.Module):
    def forward(self, x, edge_index, pair_terms):
        source, target = edge_index[0], edge_index[1]
        messages = x[source] * 0.5 + x.index_select(0, target)             # [E, 4]
        return (torch.zeros_like(x).index_add(0, target, messages, alpha=2.0),
                x.scatter_add(0, target.unsqueeze(1).expand(-1, 4), messages),
                x.scatter_reduce(0, target[:, None].expand_as(messages), messages, "sum"),
                torch.zeros_like(x).index_put((source,), messages, accumulate=True),
                x.new_zeros(x.shape[0]).index_add(0, source, messages.sum(1)),
                x.new_zeros(x.shape[0], 2, 3).index_add(0, target, pair_terms))


def inputs(nodes: int, edges: int, dtype, seed: int):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(nodes, 4, generator=generator, dtype=dtype)
    edge_index = torch.randint(0, max(nodes, 1), (2, edges), generator=generator)
    pair_terms = torch.randn(edges, 2, 3, generator=generator, dtype=dtype)
    return x, edge_index, pair_terms


@pytest.fixture(scope="module")
def built(tmp_path_factory, kokkos_root):
    work = tmp_path_factory.mktemp("scatter")
    nodes = torch.export.Dim("nodes", min=0, max=1 << 24)
    edges = torch.export.Dim("edges", min=0, max=1 << 26)
    packages = {}
    for dtype in TOLERANCE:
        name = f"scatters_{str(dtype).removeprefix('torch.')}"
        program = torch.export.export(Scatters(), inputs(6, 10, dtype, 0),
                                      dynamic_shapes=({0: nodes}, {1: edges}, {0: edges}))
        torch.export.save(program, work / f"{name}.pt2")
        packages[name] = batched.export(work / f"{name}.pt2", work / name, name)
    libraries = batched.build(packages, work, kokkos_root)
    jobs, references = {}, {}
    for dtype in TOLERANCE:
        name = f"scatters_{str(dtype).removeprefix('torch.')}"
        for seed, size in enumerate(SIZES):
            run_inputs = inputs(*size, dtype, seed + 1)
            references[dtype, size] = [r.numpy() for r in Scatters()(*run_inputs)]
            jobs[dtype, size] = (libraries[name], packages[name],
                                 [t.numpy() for t in run_inputs])
    return packages, batched.run(jobs, work), references


def test_every_scatter_is_one_tuned_call(built):
    """Six scatters, six calls of lapis::index_add_rows, and no sequential loop left."""
    packages, _, _ = built
    for package in packages.values():
        source = next((package / "src").glob("scatters_*.cpp")).read_text()
        assert source.count("lapis::index_add_rows(") == 6
        assert "sequential code" not in source


@pytest.mark.parametrize("dtype", list(TOLERANCE), ids=["float32", "float64"])
@pytest.mark.parametrize("size", SIZES, ids=[f"{n}nodes_{e}edges" for n, e in SIZES])
def test_matches_pytorch(built, dtype, size):
    _, outputs, references = built
    for index, (ours, reference) in enumerate(zip(outputs[dtype, size], references[dtype, size])):
        batched.assert_close(ours, reference, TOLERANCE[dtype], f"output {index} at {size}")
