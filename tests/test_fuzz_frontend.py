"""Fuzzing the frontend: mutated model files (bit flips, truncation, shuffled chunks) must give a
clean ExportError or load; never another exception, a crash or a hang.

Bounded: a fixed, seeded set of mutations of a small TorchScript and torch.export file, fed to
frontend.load by one worker process (tests/fuzz_worker.py); each file has HANG_SECONDS.
"""
from __future__ import annotations

import random
import selectors
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from torch import nn

REPO = Path(__file__).resolve().parents[1]
CASES_PER_MUTATION = 8
HANG_SECONDS = 60   # a healthy load of these files takes about a second


def bit_flips(data: bytes, rng: random.Random) -> bytes:
    mutated = bytearray(data)
    for _ in range(rng.randint(1, 16)):
        position = rng.randrange(len(mutated))
        mutated[position] ^= 1 << rng.randrange(8)
    return bytes(mutated)


def truncation(data: bytes, rng: random.Random) -> bytes:
    return data[:rng.randrange(1, len(data))]


def shuffled_chunks(data: bytes, rng: random.Random) -> bytes:
    count = rng.randint(2, 16)
    cuts = sorted(rng.sample(range(1, len(data)), count - 1))
    chunks = [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)])]
    while len(chunks) > 1 and chunks == sorted(chunks, key=lambda c: data.index(c)):
        rng.shuffle(chunks)
    rng.shuffle(chunks)
    return b"".join(chunks)


MUTATIONS = {"bit_flips": bit_flips, "truncation": truncation,
             "shuffled_chunks": shuffled_chunks}


@pytest.fixture(scope="module")
def mutated_files(tmp_path_factory) -> list[tuple[Path, str]]:
    root = tmp_path_factory.mktemp("fuzz")
    torch.manual_seed(0)
    model, example = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2)).eval(), \
        torch.randn(1, 4)
    originals = {"pt": root / "mlp.pt", "pt2": root / "mlp.pt2"}
    torch.jit.save(torch.jit.trace(model, example), originals["pt"])
    torch.export.save(torch.export.export(model, (example,)), originals["pt2"])
    files = []
    for suffix, original in originals.items():
        data = original.read_bytes()
        for mutation, mutate in MUTATIONS.items():
            for case in range(CASES_PER_MUTATION):
                rng = random.Random(f"{suffix}/{mutation}/{case}")
                path = root / f"{mutation}_{case}.{suffix}"
                path.write_bytes(mutate(data, rng))
                files.append((path, f"{mutation} #{case} of {original.name}"))
    return files


def test_mutated_files_give_clean_errors(mutated_files):
    worker = subprocess.Popen([sys.executable, "-m", "tests.fuzz_worker", "1x4",
                               *[str(path) for path, _ in mutated_files]], cwd=REPO,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    selector = selectors.DefaultSelector()
    selector.register(worker.stdout, selectors.EVENT_READ)
    outcomes: dict[int, str] = {}
    current, deadline = None, time.monotonic() + HANG_SECONDS
    try:
        while len(outcomes) < len(mutated_files):
            if not selector.select(timeout=max(0.0, deadline - time.monotonic())):
                what = mutated_files[current][1] if current is not None else "start-up"
                pytest.fail(f"frontend.load hung on {what} (> {HANG_SECONDS} s)")
            line = worker.stdout.readline()
            if not line:
                worker.wait(timeout=HANG_SECONDS)
                what = mutated_files[current][1] if current is not None else "start-up"
                pytest.fail(f"the worker died (exit {worker.returncode}) on {what}:\n"
                            f"{worker.stderr.read()[-3000:]}")
            kind, index, *rest = line.rstrip("\n").split(" ", 2)
            if kind == "start":
                current, deadline = int(index), time.monotonic() + HANG_SECONDS
            else:
                outcomes[int(index)] = f"{kind} {' '.join(rest)}"
    finally:
        if worker.poll() is None:
            worker.kill()
        worker.wait()
        worker.stdout.close()
        worker.stderr.close()
    bugs = [f"{mutated_files[i][1]}: {text}" for i, text in sorted(outcomes.items())
            if text.startswith("bug")]
    assert not bugs, "\n".join(bugs)
    errors = [text for text in outcomes.values() if text.startswith("error")]
    # An error names the file it is about, on one line.
    for index, text in outcomes.items():
        if text.startswith("error"):
            assert str(mutated_files[index][0]) in text, text
    # The mutations do reach the error paths (most of them break the file).
    assert len(errors) >= len(mutated_files) // 2
