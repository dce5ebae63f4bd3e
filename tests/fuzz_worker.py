"""Feeds model files to frontend.load one after another, reporting each outcome on one line:
`start I`, then `ok I`, `error I MESSAGE` (a one-line ExportError) or `bug I ...` (anything
else). A crash or a hang shows as a missing line to the parent (tests/test_fuzz_frontend.py).

    python -m tests.fuzz_worker SHAPE FILE...      (SHAPE: --input-shape text, e.g. 1x4)
"""
from __future__ import annotations

import sys
import warnings
from pathlib import Path


def main(argv: list[str]) -> None:
    warnings.filterwarnings("ignore")
    from exporter import frontend
    from exporter.errors import ExportError

    shape = frontend.parse_input_shape(argv[0])
    for index, name in enumerate(argv[1:]):
        print(f"start {index}", flush=True)
        path = Path(name)
        # TorchScript files need the shape; a .pt2 records its own.
        shapes = [shape] if path.suffix == ".pt" else None
        try:
            frontend.load(path, shapes)
        except ExportError as exc:
            one_line = " ".join(str(exc).split())
            # cli.py prints the message as it is: it must be one line.
            kind = "error" if "\n" not in str(exc) and "\r" not in str(exc) else "bug"
            print(f"{kind} {index} {one_line}", flush=True)
        except BaseException as exc:  # what the test is looking for
            one_line = " ".join(str(exc).split())[:300]
            print(f"bug {index} {type(exc).__name__}: {one_line}", flush=True)
        else:
            print(f"ok {index}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
