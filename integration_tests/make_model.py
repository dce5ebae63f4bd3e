"""Write a test model as a TorchScript or torch.export file, plus a seeded input and PyTorch's
output for it as raw float32 files (what sample_app reads and writes).

    python -m integration_tests.make_model resnet18 --format torchscript --out resnet18.pt \
        --input input.bin --reference reference.bin
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from .models import build


def save_model(model: torch.nn.Module, example: torch.Tensor, path: Path, fmt: str) -> None:
    if fmt == "torchscript":
        torch.jit.save(torch.jit.trace(model, (example,)), str(path))
    elif fmt == "dynamic":   # torch.export with a batch of any size
        batch = torch.export.Dim("batch", min=1, max=1 << 20)
        torch.export.save(torch.export.export(model, (example,), dynamic_shapes=({0: batch},)),
                          str(path))
    else:
        torch.export.save(torch.export.export(model, (example,)), str(path))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", choices=["mlp", "small_cnn", "resnet18", "conv_zoo",
                                          "residual_net"])
    parser.add_argument("--format", choices=["torchscript", "export"], default="export")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--input", type=Path)
    parser.add_argument("--reference", type=Path)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    model, shape = build(args.model, args.seed)
    generator = torch.Generator().manual_seed(args.seed + 1)
    example = torch.randn(*shape, generator=generator)
    save_model(model, example, args.out, args.format)
    if args.input:
        example.numpy().astype(np.float32).tofile(args.input)
    if args.reference:
        with torch.no_grad():
            model(example).numpy().astype(np.float32).tofile(args.reference)
    print(args.out)


if __name__ == "__main__":
    main()
