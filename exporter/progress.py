"""Progress of the long steps (import, lowering, emission, the --verify build) for cli.py.

Only for a person at a terminal: one line per step on stderr, its elapsed time ticking while it
runs and the total when it ends. Disabled, it writes nothing (pipes, logs, -q).
"""
from __future__ import annotations

import contextlib
import sys
import threading
import time
from collections.abc import Iterator
from typing import TextIO


class Progress:
    def __init__(self, enabled: bool, stream: TextIO | None = None, tick: float = 0.5):
        self.enabled = enabled
        self.stream = stream or sys.stderr
        self.tick = tick

    @contextlib.contextmanager
    def step(self, text: str) -> Iterator[None]:
        """`with progress.step("lowering"): ...` shows 'lapis-export: lowering... 3 s'."""
        if not self.enabled:
            yield
            return
        start = time.monotonic()
        done = threading.Event()

        def show(suffix: str, end: str = "") -> None:
            self.stream.write(f"\r\x1b[Klapis-export: {text}... {suffix}{end}")
            self.stream.flush()

        def ticker() -> None:
            while not done.wait(self.tick):
                show(f"{time.monotonic() - start:.0f} s")

        show("")
        thread = threading.Thread(target=ticker, daemon=True)
        thread.start()
        outcome = "failed"
        try:
            yield
            outcome = "done"
        finally:
            done.set()
            thread.join()
            show(f"{outcome} ({time.monotonic() - start:.1f} s)", "\n")
