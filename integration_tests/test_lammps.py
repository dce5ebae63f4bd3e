"""LAMMPS as the host of an exported neural potential: sample_app/lammps (lammps_md) links
Debian's liblammps and the package of sample_app/lammps/potential.py exported in float64 with
`--grad 0:positions`, and integrates 108 atoms (fcc, periodic, 300 K) with velocity Verlet for
1,000 steps, the model supplying forces, energy and virial through `fix external`. Checked:

- forces at step 0 against PyTorch autograd of the same module, on the dumped positions and
  pairs and on an independent periodic neighbour search: max |ours - torch| <= 1e-10 x max |F|;
- the total energy over the run (bounds and their grounds at ENERGY_ERROR);
- the virial's pressure, and each diagonal component, against -dE/dV by central differences
  of the energy under a small strain of the box (relative 1e-7).

liblammps-dev comes from Debian (scripts/test.sh installs it); without it these tests skip.
"""
from __future__ import annotations

import ctypes.util
import glob
import importlib.util
import itertools
import re
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from .conftest import REPO, run

SAMPLE = REPO / "sample_app" / "lammps"
FORCE_TOLERANCE = 1e-10       # float64 export
PRESSURE_TOLERANCE = 1e-7     # relative; measured 2e-10 to 1e-9 (strain 1e-5, 15 digits)
NKTV2P = 1.6021765e6          # LAMMPS metal units: bar per eV/Angstrom^3
STEPS = 1000
TIMESTEP = 0.001              # ps
STRAIN = 1e-5
# Velocity Verlet conserves a shadow energy: the total energy oscillates by O(dt^2) about a
# constant and does not drift. Measured on this system: max |E(t) - E(0)| over 1 ps is 6.7e-5,
# 2.7e-4 and 1.07e-3 eV at dt = 0.5, 1 and 2 fs (a factor 4 per doubling), i.e. 8.4e-4 x the
# standard deviation of the potential energy (0.32 eV) at 1 fs; the slope of a linear fit,
# times the run's length, is 4.6e-6 eV (1.5e-5 x that deviation). Forces that are not the
# energy's gradient (a sign, a missed ghost, a stale neighbour) move E by a sizeable part of the
# potential energy's fluctuation. The bounds leave a factor ~3.5 (deviation) and ~7 (drift).
ENERGY_ERROR = 3e-3           # max |E(t) - E(0)| / std(PE)
ENERGY_DRIFT = 1e-4           # |slope x duration| / std(PE)
# 108 atoms are too few for two OpenMP threads to gain, and two spinning threads slow to a crawl
# on two shared cores.
ONE_THREAD = {"OMP_NUM_THREADS": "1"}


def load_potential():
    spec = importlib.util.spec_from_file_location("lammps_potential", SAMPLE / "potential.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def lammps_missing() -> str | None:
    """Why the LAMMPS library or its CMake package is missing, or None."""
    configs = glob.glob("/usr/lib/*/cmake/LAMMPS/LAMMPSConfig.cmake") + glob.glob(
        "/usr/local/lib*/cmake/LAMMPS/LAMMPSConfig.cmake")
    if ctypes.util.find_library("lammps") is None or not configs:
        return ("LAMMPS library not found: install the Debian packages lammps and liblammps-dev "
                "(bash scripts/test.sh does)")
    return None


@pytest.fixture(scope="module")
def potential():
    return load_potential()


@pytest.fixture(scope="module")
def lammps_md(workspace, potential) -> Path:
    """lammps_md built with the float64 potential exported with its gradient."""
    reason = lammps_missing()
    if reason:
        pytest.skip(reason)
    model_file = workspace.root / "potential.pt2"
    potential.save(model_file, torch.float64)
    package = workspace.root / "pkg_potential_grad"
    run([sys.executable, "-m", "cli", model_file, "--out", package, "--name", "potential",
         "--grad", "0:positions"], cwd=REPO)
    build_dir = workspace.host("lammps", "-DLAPIS_MODEL=potential",
                               f"-DLAPIS_PACKAGE_DIR={package}")
    return build_dir / "lammps_md"


def thermo(stdout: str) -> dict[str, np.ndarray]:
    """The thermo table LAMMPS printed: column name -> values per printed step."""
    lines = stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.split()[:1] == ["Step"])
    names = lines[start].split()
    rows = []
    for line in lines[start + 1:]:
        if line.startswith("Loop time"):
            break
        rows.append([float(value) for value in line.split()])
    table = np.array(rows)
    return {name: table[:, column] for column, name in enumerate(names)}


def read_dump(path: Path) -> dict[str, np.ndarray]:
    """What lammps_md --dump wrote (its layout is described at write_dump in main.cpp)."""
    data = path.read_bytes()
    atoms, owned, pairs = np.frombuffer(data, "<i8", 3)
    fields = [("positions", "<f8", (atoms, 3)), ("edge_index", "<i8", (2, pairs)),
              ("local_mask", "<f8", (atoms,)), ("tags", "<i8", (atoms,)),
              ("forces", "<f8", (owned, 3)), ("energy", "<f8", ()), ("virial", "<f8", (6,)),
              ("box", "<f8", (2, 3))]
    offset, out = 24, {}
    for name, dtype, shape in fields:
        count = int(np.prod(shape))
        out[name] = np.frombuffer(data, dtype, count, offset).reshape(shape)
        offset += count * 8
    assert offset == len(data), f"{path}: {len(data) - offset} bytes left over"
    return out


def owned_forces(potential, positions, edge_index, local_mask, tags, owned: int):
    """PyTorch's energy, and -dE/dx with every ghost's part added to the atom of its tag."""
    model = potential.Potential(torch.float64)
    x = torch.tensor(positions, requires_grad=True)
    energy = model(x, torch.tensor(edge_index), torch.tensor(local_mask))
    gradient, = torch.autograd.grad(energy, x)
    local_of_tag = {int(tag): k for k, tag in enumerate(tags[:owned])}
    forces = np.zeros((owned, 3))
    np.add.at(forces, [local_of_tag[int(tag)] for tag in tags], -gradient.numpy())
    return float(energy.detach()), forces


def periodic_graph(positions: np.ndarray, box: np.ndarray, cutoff: float):
    """The owned atoms and their 26 periodic images, and every pair (owned atom, atom or image)
    closer than `cutoff`: a neighbour search of our own (the box is wider than the cutoff)."""
    lengths = box[1] - box[0]
    assert np.all(lengths > cutoff)
    shifts = [s for s in itertools.product((0, -1, 1), repeat=3)]  # (0, 0, 0) first: the owned
    images = np.concatenate([positions + np.array(s) * lengths for s in shifts])
    distance = np.linalg.norm(images[None, :, :] - positions[:, None, :], axis=2)
    centre, neighbour = np.nonzero((distance < cutoff) & (distance > 0))
    mask = np.zeros(len(images))
    mask[:len(positions)] = 1.0
    tags = np.tile(np.arange(1, len(positions) + 1), len(shifts))
    return images, np.stack([centre, neighbour]), mask, tags


@pytest.fixture(scope="module")
def trajectory(workspace, lammps_md):
    """1,000 steps from a jittered lattice at 300 K, thermo every step, step 0 dumped."""
    dump = workspace.root / "lammps_step0.bin"
    result = run([lammps_md, "--steps", STEPS, "--timestep", TIMESTEP, "--thermo", 1,
                  "--jitter", 0.1, "--temperature", 300, "--dump", dump], env=ONE_THREAD,
                 timeout=600)
    assert f"lammps_md: potential (float64), 108 atoms, {STEPS} steps" in result.stdout
    table = thermo(result.stdout)
    # atoms re-wrapped into the box and the ghosts made anew: N and E change under the model
    builds = re.search(r"^Neighbor list builds = (\d+)$", result.stdout, re.M)
    table["neighbour_list_builds"] = int(builds.group(1))
    return table, read_dump(dump)


def test_forces_match_autograd(potential, trajectory):
    table, step0 = trajectory
    owned = step0["forces"].shape[0]
    assert owned == 108 and step0["local_mask"].sum() == owned
    assert not np.any(step0["local_mask"][owned:]), "ghosts come after the owned atoms"
    scale = np.abs(step0["forces"]).max()
    assert scale > 0.1, "jittered atoms feel forces (eV/Angstrom)"

    # the same positions and pairs
    energy, forces = owned_forces(potential, step0["positions"], step0["edge_index"],
                                  step0["local_mask"], step0["tags"], owned)
    assert abs(step0["energy"] - energy) <= FORCE_TOLERANCE * abs(energy)
    assert np.abs(step0["forces"] - forces).max() <= FORCE_TOLERANCE * scale
    # LAMMPS' potential energy is the model's
    assert abs(table["PotEng"][0] - energy) <= 1e-12 * abs(energy) + 1e-12

    # the pairs of an independent search: LAMMPS' list, ghosts and masks give the same system
    graph = periodic_graph(step0["positions"][:owned], step0["box"], potential.CUTOFF)
    independent_energy, independent = owned_forces(potential, *graph, owned)
    assert abs(independent_energy - energy) <= FORCE_TOLERANCE * abs(energy)
    assert np.abs(step0["forces"] - independent).max() <= FORCE_TOLERANCE * scale
    # same number of directed pairs within the cutoff
    assert graph[1].shape[1] == step0["edge_index"].shape[1]


def test_total_energy_is_conserved(trajectory):
    table, _ = trajectory
    steps, total, potential_energy = table["Step"], table["TotEng"], table["PotEng"]
    assert steps[-1] == STEPS and len(steps) == STEPS + 1
    assert table["neighbour_list_builds"] > 0
    fluctuation = potential_energy.std()
    assert fluctuation > 0.05, "the atoms move (eV)"
    deviation = np.abs(total - total[0]).max()
    drift = np.polyfit(steps * TIMESTEP, total, 1)[0] * STEPS * TIMESTEP
    assert deviation <= ENERGY_ERROR * fluctuation, (deviation, fluctuation)
    assert abs(drift) <= ENERGY_DRIFT * fluctuation, (drift, fluctuation)


def test_virial_matches_finite_difference_pressure(lammps_md):
    """P_aa (bar) from the virial LAMMPS received, against -dE/dV of the energy under a strain
    of the box along a (remapping the atoms), and the pressure against an isotropic strain."""

    def step0(*scale: float) -> dict[str, float]:
        result = run([lammps_md, "--steps", 0, "--jitter", 0.1, "--temperature", 300,
                      "--scale", ",".join(repr(s) for s in scale)], env=ONE_THREAD)
        return {name: values[0] for name, values in thermo(result.stdout).items()}

    unstrained = step0(1.0, 1.0, 1.0)
    assert unstrained["c_virial_pressure"] > 1e4, "the repulsive core pushes outwards"
    strains = {"c_virial_pressure": (1.0, 1.0, 1.0)}
    strains.update({f"c_virial_pressure[{a + 1}]": tuple(float(a == b) for b in range(3))
                    for a in range(3)})
    for column, direction in strains.items():
        plus = step0(*(1.0 + STRAIN * d for d in direction))
        minus = step0(*(1.0 - STRAIN * d for d in direction))
        finite_difference = -(plus["PotEng"] - minus["PotEng"]) / (
            plus["Volume"] - minus["Volume"]) * NKTV2P
        virial = unstrained[column]
        assert abs(virial - finite_difference) <= PRESSURE_TOLERANCE * abs(finite_difference), \
            f"{column}: virial {virial!r} bar, -dE/dV {finite_difference!r} bar"
