"""Compare two raw float32 files: max |ours - reference| <= tolerance * max |reference|.

    python -m integration_tests.compare output.bin reference.bin --tolerance 1e-4
"""
from __future__ import annotations

import argparse
import sys

import numpy as np


def relative_error(ours: np.ndarray, reference: np.ndarray) -> float:
    scale = float(np.abs(reference).max()) or 1.0
    return float(np.abs(ours.astype(np.float64) - reference).max()) / scale


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("ours")
    parser.add_argument("reference")
    parser.add_argument("--tolerance", type=float, default=1e-4)
    args = parser.parse_args()
    ours = np.fromfile(args.ours, dtype=np.float32)
    reference = np.fromfile(args.reference, dtype=np.float32)
    if ours.shape != reference.shape:
        sys.exit(f"compare: {args.ours} has {ours.size} values, {args.reference} has "
                 f"{reference.size}")
    error = relative_error(ours, reference)
    verdict = "PASS" if error <= args.tolerance else "FAIL"
    print(f"max |ours - torch| / max |torch| = {error:.3e} (tolerance {args.tolerance:g}): "
          f"{verdict}")
    sys.exit(0 if verdict == "PASS" else 1)


if __name__ == "__main__":
    main()
