"""The API a simulation uses beyond forward(x, y), against PyTorch (max |ours - torch| <=
1e-4 * max |torch|): forward on execution space instances, its own Views (LayoutLeft, strided
subviews, blocks of rows), two models on two instances, weights replaced at run time
(lapis-export --weights-only, load_weights from a file and from memory, a foreign blob
refused), the column-major C API (sample_app/sim_api); and a Fortran host running a dynamic
MLP at two batch sizes with arrays in the model's own shape (sample_app/fortran_dynamic)."""
from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

from .compare import relative_error
from .conftest import REPO, run
from .make_model import save_model
from .models import build
from .test_hosts import require

TOLERANCE = 1e-4


def weights_only(model_file, out, backend="openmp"):
    run([sys.executable, "-m", "cli", model_file, "--weights-only", "--backend", backend,
         "--name", "mlp", "--out", out], cwd=REPO)
    return out


@pytest.fixture(scope="module")
def sim_api(workspace):
    mlp = workspace.package("mlp", "openmp")
    cnn = workspace.package("small_cnn", "openmp")
    build_dir = workspace.host("sim_api", f"-DLAPIS_MLP_DIR={mlp}", f"-DLAPIS_CNN_DIR={cnn}")
    return build_dir / "sim_api", mlp, cnn


def test_weights_only_writes_the_packages_blob(workspace, sim_api):
    _, mlp, _ = sim_api
    model_file, _, _ = workspace.model_file("mlp", "export")
    blob = weights_only(model_file, workspace.root / "mlp_again.weights")
    assert blob.read_bytes() == (mlp / "src" / "mlp.weights").read_bytes()


def test_the_simulation_api_matches_pytorch(workspace, sim_api):
    app, mlp, cnn = sim_api
    files = {}
    for model in ("mlp", "small_cnn"):
        _, example, reference = workspace.model_file(model, "export")
        tag = "mlp" if model == "mlp" else "cnn"
        for kind, array in (("input", example), ("reference", reference)):
            path = workspace.root / f"sim_api_{tag}_{kind}.bin"
            array.astype("<f4").tofile(path)
            files[f"--{tag}-{kind}"] = path
    # The mlp retrained (other weights, the same architecture), and its output on the input.
    retrained, _ = build("mlp", seed=1)
    _, example, _ = workspace.model_file("mlp", "export")
    retrained_file = workspace.root / "mlp_retrained.pt2"
    save_model(retrained, torch.from_numpy(example), retrained_file, "export")
    with torch.no_grad():
        retrained(torch.from_numpy(example)).numpy().astype("<f4").tofile(
            workspace.root / "sim_api_mlp_retrained.bin")
    files["--mlp-weights"] = weights_only(retrained_file, workspace.root / "retrained.weights")
    files["--mlp-weights-reference"] = workspace.root / "sim_api_mlp_retrained.bin"
    files["--mlp-own-weights"] = mlp / "src" / "mlp.weights"
    files["--foreign-weights"] = cnn / "src" / "small_cnn.weights"
    result = run([app, *[str(v) for item in files.items() for v in item]])
    lines = result.stdout.splitlines()
    assert "sim_api: 0 failure(s)" in lines, result.stdout
    for check in ("mlp on an instance, LayoutRight",
                  "mlp, LayoutLeft input and output, call 1",
                  "mlp, LayoutLeft input and output, call 2",
                  "mlp, input subview(state, ALL, make_pair(5, 5 + k)), output subview(field, "
                  "ALL, ALL, 1)",
                  "mlp, input and output subview(field, make_pair(i0, i1), ALL)",
                  "two models on two instances: mlp", "two models on two instances: small_cnn",
                  "load_weights(path): retrained weights",
                  "after the refused load_weights the weights are unchanged",
                  "load_weights(bytes, size): the package's own blob again",
                  "mlp_forward_host_colmajor"):
        assert any(line.startswith(f"ok: {check}: max abs error") for line in lines), \
            (check, result.stdout)
    refused = next(line for line in lines
                   if line.startswith("ok: load_weights of another model's blob: "))
    assert "the blob does not belong to this library" in refused or \
        "tensors, this model has" in refused, refused


def test_load_weights_refuses_a_changed_shape(workspace, sim_api):
    """A blob whose tensor has the right name and size but another shape: refused, naming it."""
    from weights import blob as blob_format
    from exporter.handoff import Weight
    app, mlp, _ = sim_api
    data = (mlp / "src" / "mlp.weights").read_bytes()
    # Rewrite the package's blob with its first tensor reshaped (same element count).
    arrays = read_blob(data)
    name, first = arrays[0]
    arrays[0] = (name, first.reshape(first.shape[::-1]))
    changed = workspace.root / "reshaped.weights"
    blob_format.write(changed, [Weight(name=n, cname=n, array=a) for n, a in arrays])
    result = run([app, "--load-only", changed])
    assert f"load_weights refused: weight '{name}' has shape " \
           f"{list(first.shape[::-1])} in the blob, but the code expects {list(first.shape)}" \
        in result.stdout, result.stdout


def read_blob(data: bytes) -> list[tuple[str, np.ndarray]]:
    """(name, array) of each tensor of a weight blob (weights/FORMAT.md)."""
    import struct
    count = struct.unpack_from("<I", data, 8)[0]
    types = {0: np.float32, 1: np.float64, 2: np.int64, 3: np.int32, 4: np.uint8, 5: np.int8}
    tensors = []
    for index in range(count):
        offset, nbytes, dtype, rank = struct.unpack_from("<QQII", data, 16 + 128 * index)
        dims = struct.unpack_from("<6Q", data, 16 + 128 * index + 24)[:rank]
        name = data[16 + 128 * index + 72:16 + 128 * index + 128].split(b"\0")[0].decode()
        array = np.frombuffer(data, types[dtype], nbytes // np.dtype(types[dtype]).itemsize,
                              offset).reshape(dims)
        tensors.append((name, array.copy()))
    return tensors


def test_fortran_host_runs_a_dynamic_mlp_at_two_sizes(workspace):
    require("gfortran", "gfortran")
    package = workspace.package("mlp", "openmp", fmt="dynamic")
    assert (package / "include" / "mlp.h").is_file()
    build_dir = workspace.host("fortran_dynamic", "-DLAPIS_MODEL=mlp",
                               f"-DLAPIS_PACKAGE_DIR={package}")
    model, (_, features) = build("mlp")
    arguments, references = [], []
    for n in (3, 17):
        x = torch.randn(n, features, generator=torch.Generator().manual_seed(n))
        with torch.no_grad():
            references.append(model(x).numpy())
        path = workspace.root / f"fortran_dynamic_{n}.bin"
        np.asfortranarray(x.numpy()).T.astype("<f4").tofile(path)   # x(n, features), column-major
        arguments += [path, n, workspace.root / f"fortran_dynamic_{n}_out.bin"]
    result = run([build_dir / "fortran_dynamic", *arguments])
    for n, reference, output in zip((3, 17), references, arguments[2::3]):
        ours = np.fromfile(output, dtype="<f4").reshape(reference.shape[::-1]).T
        assert relative_error(ours, reference) <= TOLERANCE, f"batch {n}"
        assert f"batch {n}: y(1, 1:3) =" in result.stdout
