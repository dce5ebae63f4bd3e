"""The models of sample_app/inline_eval (a stencil calling an exported MLP per cell): a 3-layer,
32-wide MLP from the stencil's 3 features to 2 values per cell, in float32 (inline_mlp) and
float64 (inline_mlp64), exported with --evaluator. Shared by integration_tests/
test_inline_eval.py and benchmarks/inline_eval.py.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
MODELS = {"inline_mlp": torch.float32, "inline_mlp64": torch.float64}
FEATURES, OUTPUTS = 3, 2
VARIANTS = ("thread", "team", "rows", "forward")


def network(dtype: torch.dtype) -> torch.nn.Module:
    """Linear(3, 32) - SiLU - Linear(32, 32) - Tanh - Linear(32, 2), seeded."""
    torch.manual_seed(7)
    net = torch.nn.Sequential(torch.nn.Linear(FEATURES, 32), torch.nn.SiLU(),
                              torch.nn.Linear(32, 32), torch.nn.Tanh(),
                              torch.nn.Linear(32, OUTPUTS))
    return net.to(dtype).eval()


def save_models(directory: Path) -> dict[str, Path]:
    """name -> its .pt2, with a dynamic batch (one row per cell)."""
    paths = {}
    for name, dtype in MODELS.items():
        example = torch.randn(16, FEATURES, dtype=dtype)
        batch = torch.export.Dim("cells", min=1, max=1 << 24)
        program = torch.export.export(network(dtype), (example,), dynamic_shapes=({0: batch},))
        paths[name] = directory / f"{name}.pt2"
        torch.export.save(program, str(paths[name]))
    return paths


def export(model: Path, out: Path, name: str, backend: str) -> Path:
    """The package of `model` with its evaluator, through the pipeline the CLI runs."""
    from exporter import emit, frontend, importer, lowering, package

    loaded = frontend.load(model)
    row = lowering.run(importer.to_linalg(frontend.one_row(loaded), tuned_kernels=False),
                       backend, tuned_kernels=False)
    lowered = lowering.run(importer.to_linalg(loaded), backend)
    package.write(emit.kokkos(lowered, name, backend, row=row), out,
                  package.PackageOptions(force=True))
    return out


def read_outputs(directory: Path, name: str, cells: int) -> dict[str, np.ndarray]:
    """What `inline_eval check` wrote for model `name`: the features and each variant."""
    dtype = np.float32 if MODELS[name] == torch.float32 else np.float64
    arrays = {"features": np.fromfile(directory / f"{name}_features.bin", dtype=dtype)
              .reshape(cells, FEATURES)}
    for variant in VARIANTS:
        arrays[variant] = np.fromfile(directory / f"{name}_{variant}.bin", dtype=dtype) \
            .reshape(cells, OUTPUTS)
    return arrays


def reference(name: str, features: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return network(MODELS[name])(torch.from_numpy(features)).numpy()
