"""Dynamic batch and float64, end to end: one package runs at batch 1, 7, 64 and 1000 (and 7
again) in one process, its buffers re-planned at each change, each result compared with
PyTorch: max |ours - torch| <= 1e-4 * max |torch| in float32, 1e-10 in float64."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from exporter import verify

from .compare import relative_error
from .conftest import REPO, RUN_ENV, run
from .models import build

BATCHES = (1, 7, 64, 1000, 7)
TOLERANCE = {"float32": 1e-4, "float64": 1e-10}

# Each package's library in a fresh process (Kokkos initializes once per process).
RUNNER = """
import sys
import numpy as np
from exporter import verify
package, library, inputs, outputs = sys.argv[1:]
arrays = np.load(inputs)
with verify.load_module(package, library) as module:
    results = {key: module.forward(arrays[key])[0] for key in arrays.files}
np.savez(outputs, **results)
"""


# The package's allocations around each call: through a Kokkos Tools library that counts them.
COUNTER = """
import ctypes, sys
import numpy as np
from exporter import verify
package, library, counter, *batches = sys.argv[1:]
count = ctypes.CDLL(counter).allocation_count
count.restype = ctypes.c_uint64
with verify.load_module(package, library) as module:
    for batch in batches:
        x = np.zeros((int(batch), 32), np.float32)
        before = count()
        module.forward(x)
        print(count() - before)
"""


def run_batches(workspace, package, model: str, dtype: str) -> dict[int, float]:
    """Run `package` (built as a shared library, called through ctypes) at each of BATCHES;
    returns the relative error against PyTorch per batch size."""
    net, shape = build(model)
    net = net.to(getattr(torch, dtype))
    generator = torch.Generator().manual_seed(2)
    inputs = {f"batch{i}_{n}": torch.randn(n, *shape[1:], generator=generator,
                                           dtype=getattr(torch, dtype))
              for i, n in enumerate(BATCHES)}
    tag = package.name
    library = verify.build(package, workspace.root / f"{tag}_shared")
    np.savez(workspace.root / f"{tag}_in.npz", **{k: v.numpy() for k, v in inputs.items()})
    run([sys.executable, "-c", RUNNER, package, library, workspace.root / f"{tag}_in.npz",
         workspace.root / f"{tag}_out.npz"], cwd=REPO)
    ours = np.load(workspace.root / f"{tag}_out.npz")
    errors = {}
    with torch.no_grad():
        for key, x in inputs.items():
            reference = net(x).numpy()
            assert ours[key].dtype == reference.dtype and ours[key].shape == reference.shape
            errors[key] = relative_error(ours[key], reference)
    return errors


@pytest.mark.parametrize("model", ["mlp", "small_cnn"])
def test_dynamic_batch_matches_pytorch(workspace, model):
    """A .pt2 exported with torch.export.Dim on the batch."""
    package = workspace.package(model, "openmp", "dynamic")
    errors = run_batches(workspace, package, model, "float32")
    assert max(errors.values()) <= TOLERANCE["float32"], errors


def test_float64_with_a_dynamic_batch_from_torchscript(workspace):
    """--dtype float64 and a letter in --input-shape (TorchScript); the convolutions take the
    tuned kernel's portable path, the float-only AVX2 one does not apply."""
    package = workspace.package("small_cnn", "openmp", "torchscript", options=(
        "--input-shape", "Nx3x32x32", "--dtype", "float64"))
    errors = run_batches(workspace, package, "small_cnn", "float64")
    assert max(errors.values()) <= TOLERANCE["float64"], errors


def test_sample_app_at_a_chosen_batch(workspace):
    """The C++ API (Views of any batch) and the C API (the batch as its first argument)."""
    package = workspace.package("mlp", "openmp", "dynamic")
    app = workspace.sample_app(package, "mlp")
    net, _ = build("mlp")
    x = torch.randn(7, 32, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        reference = net(x).numpy()
    input_file = workspace.root / "mlp_dynamic_in.bin"
    x.numpy().tofile(input_file)
    for api in ("cpp", "c"):
        output_file = workspace.root / f"mlp_dynamic_{api}_out.bin"
        run([app, "--input", input_file, "--output", output_file, "--api", api, "--batch", 7])
        ours = np.fromfile(output_file, dtype=np.float32).reshape(7, 10)
        assert relative_error(ours, reference) <= TOLERANCE["float32"]
    missing = subprocess.run([str(app), "--input", str(input_file), "--output",
                              str(output_file)], capture_output=True, text=True, env=RUN_ENV)
    assert missing.returncode == 1 and "--batch" in missing.stderr


def test_buffers_are_reallocated_only_when_the_batch_changes(workspace):
    """Nothing is allocated in forward() while the batch stays the same; a larger batch grows
    the blocks of storage the buffers share once; a smaller one fits in them."""
    package = workspace.package("mlp", "openmp", "dynamic")
    library = verify.build(package, workspace.root / f"{package.name}_shared")  # built once
    counter = workspace.root / "liballocation_counter.so"
    run(["c++", "-O1", "-shared", "-fPIC", REPO / "integration_tests" / "allocation_counter.cpp",
         "-o", counter])
    env = {**RUN_ENV, "KOKKOS_PROFILE_LIBRARY": str(counter), "KOKKOS_TOOLS_LIBS": str(counter)}
    result = subprocess.run([sys.executable, "-c", COUNTER, str(package), str(library),
                             str(counter), "7", "7", "7", "64", "64", "1", "1"],
                            capture_output=True, text=True, env=env, cwd=REPO)
    assert result.returncode == 0, result.stderr[-3000:]
    first, same, same_again, grown, grown_same, shrunk, shrunk_same = \
        (int(line) for line in result.stdout.split())
    assert first > 0                                 # the dynamic buffers, planned at batch 7
    assert same == same_again == grown_same == shrunk_same == 0
    assert grown == first                            # each block grown once for batch 64
    assert shrunk == 0                               # batch 1 fits in the blocks of batch 64
