"""Host programs beyond the C++ sample_app: an installed package found with find_package from
C and Fortran hosts, an MPI program with a batch slice per rank, and two models in one program.
All compare with PyTorch: max |ours - torch| <= 1e-4 * max |torch| in float32.

gfortran and OpenMPI come from Debian packages (scripts/test.sh installs them); without them
these tests fail with a message saying so.
"""
from __future__ import annotations

import os
import shutil
import subprocess

import numpy as np
import pytest
import torch

from .compare import relative_error
from .conftest import RUN_ENV, run
from .models import build

TOLERANCE = 1e-4
RANKS = 2


def require(tool: str, debian_package: str) -> str:
    path = shutil.which(tool)
    if path is None:
        pytest.fail(f"{tool} not found: install the Debian package {debian_package} "
                    f"(bash scripts/test.sh does)", pytrace=False)
    return path


def write_input(workspace, tag: str, array: np.ndarray):
    path = workspace.root / f"{tag}_in.bin"
    array.astype("<f4").tofile(path)
    return path, workspace.root / f"{tag}_out.bin"


def read_output(path, shape) -> np.ndarray:
    return np.fromfile(path, dtype="<f4").reshape(shape)


@pytest.fixture(scope="module")
def mlp_prefix(workspace):
    """mlp (OpenMP) built on its own and installed: what the find_package hosts use."""
    return workspace.installed_package("mlp", "openmp")


def test_install_and_find_package_from_c(workspace, mlp_prefix):
    """cmake --install, then a separate C project: find_package(mlp), mlp::mlp, mlp.h."""
    for installed in ("include/mlp.hpp", "include/mlp.h", "include/mlp_mod.f90",
                      "lib/cmake/mlp/mlpConfig.cmake", "lib/cmake/mlp/mlpTargets.cmake"):
        assert (mlp_prefix / installed).is_file(), installed
    _, example, reference = workspace.model_file("mlp", "export")
    build_dir = workspace.host("c", "-DLAPIS_MODEL=mlp", f"-DCMAKE_PREFIX_PATH={mlp_prefix}")
    input_file, output_file = write_input(workspace, "c_host", example)
    result = run([build_dir / "c_host", "--input", input_file, "--output", output_file,
                  "--steps", 3])
    assert "ran 3 step(s)" in result.stdout
    assert relative_error(read_output(output_file, reference.shape), reference) <= TOLERANCE


def test_fortran_host_matches_pytorch(workspace, mlp_prefix):
    require("gfortran", "gfortran")
    _, example, reference = workspace.model_file("mlp", "export")
    build_dir = workspace.host("fortran", "-DLAPIS_MODEL=mlp",
                               f"-DCMAKE_PREFIX_PATH={mlp_prefix}")
    input_file, output_file = write_input(workspace, "fortran_host", example)
    result = run([build_dir / "fortran_host", input_file, output_file])
    assert relative_error(read_output(output_file, reference.shape), reference) <= TOLERANCE
    # The host prints y(:, 1) of its y(10, 4): column 1 is the model's row 0, as the module's
    # notes on array order say.
    lines = result.stdout.splitlines()
    first = lines.index("samples: 4, first sample:")
    printed = np.array([float(v) for v in lines[first + 1:first + 11]])
    assert relative_error(printed, reference[0]) <= TOLERANCE
    # The error path through mlp_error_message(): a call before initialization.
    assert "before initialize: code 1, mlp_forward_host called before mlp_initialize" in lines


@pytest.fixture(scope="module")
def mpi_app(workspace, mlp_prefix):
    require("mpicxx", "libopenmpi-dev")
    build_dir = workspace.host("mpi", "-DLAPIS_MODEL=mlp", f"-DCMAKE_PREFIX_PATH={mlp_prefix}")
    return build_dir / "mpi_app"


def mpirun(app, *args, env=None, check=True) -> subprocess.CompletedProcess:
    """`mpirun -np RANKS app args` on this machine, one thread per rank."""
    root = ["--allow-run-as-root"] if os.geteuid() == 0 else []
    command = [require("mpirun", "openmpi-bin"), *root, "--oversubscribe", "--bind-to", "none",
               "-np", RANKS, app, *args]
    env = {"OMP_NUM_THREADS": "1",
           # containers often forbid the cross-process copies Open MPI tries first
           "OMPI_MCA_btl_vader_single_copy_mechanism": "none", **(env or {})}
    if check:
        return run(command, env=env, timeout=120)
    return subprocess.run([str(c) for c in command], capture_output=True, text=True,
                          env={**RUN_ENV, **env}, timeout=120)


# (mpi_app arguments, environment, the device each node-local rank takes, devices it counts)
DEVICE_CHOICES = {
    "one_device_per_rank": ((), {}, (0, 1), RANKS),
    "ranks_share_one_device": (("--devices", "1"), {}, (0, 0), 1),
    "KOKKOS_DEVICE_ID_wins": ((), {"KOKKOS_DEVICE_ID": "1"}, (1, 1), RANKS),
}


@pytest.mark.parametrize("choice", DEVICE_CHOICES, ids=list(DEVICE_CHOICES))
def test_mpi_ranks_each_run_their_slice(workspace, mpi_app, choice):
    """Each rank takes the device of its node-local rank (on OpenMP it reports the id it would
    use), runs its slice of the batch, and rank 0 gathers; all of it against PyTorch."""
    args, env, devices, count = DEVICE_CHOICES[choice]
    model, (batch, features) = build("mlp")
    samples = torch.randn(RANKS * batch, features, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        reference = model(samples).numpy()
    input_file, output_file = write_input(workspace, f"mpi_app_{choice}", samples.numpy())
    result = mpirun(mpi_app, "--input", input_file, "--output", output_file, "--steps", 3,
                    *args, env=env)
    for rank in range(RANKS):
        # one node here: the node-local rank is the rank
        assert (f"rank {rank} of {RANKS}: node-local rank {rank} of {RANKS}, device "
                f"{devices[rank]} of {count} not used: OpenMP runs on the host with 1 thread(s)"
                in result.stdout), result.stdout
        rows = slice(rank * batch, (rank + 1) * batch)
        assert (f"rank {rank} of {RANKS}: samples {rows.start} to {rows.stop - 1} on OpenMP, "
                f"forward median_ms=" in result.stdout), result.stdout
        ours = read_output(f"{output_file}.rank{rank}", (batch, reference.shape[1]))
        assert relative_error(ours, reference[rows]) <= TOLERANCE, f"rank {rank}"
    assert "of 3 step(s)" in result.stdout
    assert f"model mlp: {RANKS} ranks x {batch} samples, gathered into {output_file}; " \
           "slowest rank's forward median_ms=" in result.stdout
    gathered = read_output(output_file, reference.shape)
    assert relative_error(gathered, reference) <= TOLERANCE


def test_mpi_app_refuses_kokkos_options_once(workspace, mpi_app):
    """Kokkos is initialized from settings (to give it the device), so its command-line options
    would be ignored: mpi_app says so in one line, from one rank, before Kokkos starts."""
    result = mpirun(mpi_app, "--kokkos-num-threads=2", "--input", "in.bin", "--output", "out.bin",
                    check=False)
    assert result.returncode != 0
    message = ("mpi_app: --kokkos-num-threads=2: mpi_app sets up Kokkos itself; use Kokkos' "
               "environment variables (KOKKOS_NUM_THREADS, KOKKOS_DEVICE_ID, ...) instead")
    assert result.stderr.count(message) == 1, result.stderr


def test_two_models_in_one_program(workspace):
    """mlp and small_cnn add_subdirectory()'d into one project (install rules on, so that
    their export sets meet too), linked into one executable and both called in one run."""
    packages = {"A": ("mlp", workspace.package("mlp", "openmp")),
                "B": ("small_cnn", workspace.package("small_cnn", "openmp"))}
    definitions = []
    for which, (model, package) in packages.items():
        definitions += [f"-DLAPIS_MODEL_{which}={model}", f"-DLAPIS_PACKAGE_DIR_{which}={package}",
                        f"-D{model}_INSTALL=ON"]
    build_dir = workspace.host("two_models", *definitions)
    files, references = [], {}
    for which, (model, _) in packages.items():
        _, example, references[which] = workspace.model_file(model, "export")
        files.append(write_input(workspace, f"two_models_{model}", example))
    for api in ("cpp", "c"):
        result = run([build_dir / "two_models", "--api", api,
                      "--input-a", files[0][0], "--output-a", files[0][1],
                      "--input-b", files[1][0], "--output-b", files[1][1]])
        for (which, reference), (_, output_file) in zip(references.items(), files):
            ours = read_output(output_file, reference.shape)
            assert relative_error(ours, reference) <= TOLERANCE, f"model {which}, {api} API"
            output_file.unlink()
        if api == "c":
            # mlp_finalize() left Kokkos up for small_cnn; small_cnn_finalize() stopped it.
            assert "after the last finalize, Kokkos is finalized" in result.stdout
