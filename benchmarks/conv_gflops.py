"""GFLOP/s of each convolution of an exported ResNet18 (batch 1), from its per-kernel times.

    python benchmarks/conv_gflops.py PROFILE

PROFILE: what sample_app prints with benchmarks/kernel_timer.cpp as its Kokkos tools library
(the blocks under "Per-kernel times" that `benchmarks/cpu.py --profile resnet18` writes). A
convolution's kernel is `<layer>_convolution`, or `<layer>_convolution_1` where the layer pads
its input (the first kernel is then the copy into the padded buffer, not counted here); its
flops are 2 x output channels x input channels x filter taps x output pixels.
"""
from __future__ import annotations

import re
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from integration_tests.models import build  # noqa: E402


def convolutions() -> dict[str, tuple[int, bool]]:
    """layer name -> (flops, whether it pads its input), from one forward of the model."""
    model, shape = build("resnet18")
    found = {}

    def record(name):
        def hook(module, inputs, output):
            found[name] = (2 * module.out_channels * module.in_channels
                           * module.kernel_size[0] * module.kernel_size[1]
                           * output.shape[2] * output.shape[3], module.padding[0] > 0)
        return hook

    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Conv2d):
            module.register_forward_hook(record(name))
    with torch.no_grad():
        model.eval()(torch.zeros(*shape))
    return found


def main() -> None:
    text = Path(sys.argv[1]).read_text()
    total_ms = total_flops = 0.0
    for name, (flops, padded) in convolutions().items():
        label = name.replace(".", "_") + ("_convolution_1" if padded else "_convolution")
        calls, ms = re.search(r"::" + label + r"\s+(\d+)\s+([0-9.]+)", text).groups()
        ms = float(ms) / int(calls)
        total_ms += ms
        total_flops += flops
        print(f"{name:24s} {flops / 1e6:7.1f} MFLOP {ms:7.3f} ms {flops / ms * 1e-6:6.1f} GFLOP/s")
    print(f"{'all convolutions':24s} {total_flops / 1e6:7.1f} MFLOP {total_ms:7.3f} ms "
          f"{total_flops / total_ms * 1e-6:6.1f} GFLOP/s")


if __name__ == "__main__":
    main()
