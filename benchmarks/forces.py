"""Energy and forces of a neural pair potential: what `--grad energy:positions` costs against
the energy alone, and against PyTorch eager autograd and torch.compile at the same threads.

    python3 benchmarks/forces.py [--threads 2] [--rounds 3] [--steps 20]

The potential is sample_app/lammps/potential.py (radial features -> per-atom MLP, a repulsive
core) in float32, on atoms of a jittered cubic lattice (3 Angstrom apart, about 19 neighbours
each within the 5 Angstrom cutoff) with the neighbour pairs as input. Our packages are built
in one CMake build (OpenMP) and timed in a subprocess of their own through the C API
(`NAME_forward_host`: the inputs' copy in and the outputs' copy out included); PyTorch eager
and torch.compile in this process with torch.set_num_threads. Rounds alternate the contenders so that machine noise
hits all alike; each contender's outputs are checked against PyTorch's. Writes
benchmarks/results_forces.md.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
# What a package's own CMakeLists.txt compiles with in a Release build (the tests' -O1 builds
# are quicker to compile, not to run).
RELEASE_FLAGS = "-O3 -DNDEBUG"
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "sample_app" / "lammps"))


def lattice(atoms: int, seed: int = 0, spacing: float = 3.0, cutoff: float = 5.0):
    """Positions of `atoms` on a jittered cubic lattice and every pair (both directions)
    within `cutoff` of lattice offsets (so the count is exact for the unjittered lattice)."""
    side = int(np.ceil(atoms ** (1 / 3)))
    grid = np.stack(np.meshgrid(*[np.arange(side)] * 3, indexing="ij"), -1).reshape(-1, 3)
    grid = grid[:atoms]
    rng = np.random.default_rng(seed)
    positions = grid * spacing + rng.uniform(-0.1, 0.1, grid.shape)
    index = -np.ones((side,) * 3, dtype=np.int64)
    index[tuple(grid.T)] = np.arange(atoms)
    reach = int(cutoff // spacing)
    centres, neighbours = [], []
    for offset in np.ndindex(*(2 * reach + 1,) * 3):
        offset = np.array(offset) - reach
        if not offset.any() or np.linalg.norm(offset) * spacing >= cutoff - 0.2:
            continue
        target = grid + offset
        inside = ((target >= 0) & (target < side)).all(1)
        found = index[tuple(target[inside].T)]
        keep = found >= 0
        centres.append(np.arange(atoms)[inside][keep])
        neighbours.append(found[keep])
    edges = np.stack([np.concatenate(centres), np.concatenate(neighbours)]).astype(np.int64)
    return positions, edges, np.ones(atoms)


def export(path: Path, out: Path, name: str, grads: list[str]) -> Path:
    from exporter import emit, frontend, importer, lowering, package
    from exporter.frontend import gradients

    loaded = frontend.load(path)
    if grads:
        loaded = gradients.add_gradients(loaded, grads)
    lowered = lowering.run(importer.to_linalg(loaded), "openmp")
    package.write(emit.kokkos(lowered, name, "openmp"), out, package.PackageOptions(force=True))
    return out


def worker(library: str, package_dir: str, io: str, steps: int) -> None:
    """Time forward() on the inputs in `io`; write the outputs and the times (ms) back."""
    from exporter.verify import load_module

    module = load_module(Path(package_dir), Path(library))
    data = np.load(io)
    inputs = [data[f"in_{i}"] for i in range(3)]
    try:
        outputs = module.forward(*inputs)
        times = []
        for _ in range(steps):
            start = time.perf_counter()
            module.forward(*inputs)
            times.append((time.perf_counter() - start) * 1e3)
    finally:
        module.close()
    np.savez(io, **{f"out_{i}": a for i, a in enumerate(outputs)}, times=np.array(times))


def ours(library: Path, package_dir: Path, inputs, steps: int, threads: int, work: Path):
    io = work / f"{package_dir.name}_{len(inputs[0])}.npz"
    np.savez(io, **{f"in_{i}": a for i, a in enumerate(inputs)})
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "OMP_PROC_BIND": "false"}
    subprocess.run([sys.executable, __file__, "--worker", str(library), str(package_dir),
                    str(io), str(steps)], check=True, env=env, cwd=REPO)
    data = np.load(io)
    return float(np.median(data["times"])), [data[k] for k in sorted(data.files) if
                                             k.startswith("out_")]


def pytorch(model, inputs, steps: int, forces: bool):
    """PyTorch's median ms over `steps` calls (after one, which compiles a compiled model)."""
    import torch

    tensors = [torch.from_numpy(a) for a in inputs]

    def step():
        if not forces:
            with torch.no_grad():
                return [model(*tensors)]
        positions = tensors[0].detach().requires_grad_(True)
        energy = model(positions, *tensors[1:])
        gradient, = torch.autograd.grad(energy, positions)
        return [energy.detach(), gradient]

    outputs = step()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        times.append((time.perf_counter() - start) * 1e3)
    return float(np.median(times)), [o.numpy() for o in outputs]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--atoms", type=int, nargs="+", default=[1000, 100_000])
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results_forces.md")
    arguments = parser.parse_args()

    import torch

    import potential as pair_potential
    from integration_tests import batched
    from kokkos_support.provision import ensure_kokkos as find_kokkos

    torch.set_num_threads(arguments.threads)
    work = Path(tempfile.mkdtemp(prefix="forces_bench_"))
    model = pair_potential.Potential(torch.float32).eval()
    # torch.compile with its defaults: the backward of E+F compiled by AOTAutograd; each
    # atom count compiles once, in the call before the timed ones.
    compiled = torch.compile(model)
    pair_potential.save(work / "potential.pt2", torch.float32)
    start = time.perf_counter()
    packages = {"energy": export(work / "potential.pt2", work / "energy", "energy", []),
                "forces": export(work / "potential.pt2", work / "forces", "forces",
                                 ["energy:positions"])}
    libraries = batched.build(packages, work, find_kokkos(), optimization=RELEASE_FLAGS)
    build_s = time.perf_counter() - start
    rows = []
    for atoms in arguments.atoms:
        positions, edges, mask = lattice(atoms)
        inputs = (positions.astype(np.float32), edges, mask.astype(np.float32))
        times: dict[str, list[float]] = {k: [] for k in (
            "ours E", "ours E+F", "torch E", "torch E+F", "compile E", "compile E+F")}
        reference = pytorch(model, inputs, 1, True)[1]
        for _ in range(arguments.rounds):
            for key in times:
                if key.startswith("ours"):
                    name = "forces" if "F" in key else "energy"
                    ms, outputs = ours(libraries[name], packages[name], inputs,
                                       arguments.steps, arguments.threads, work)
                else:
                    ms, outputs = pytorch(compiled if key.startswith("compile") else model,
                                          inputs, arguments.steps, "F" in key)
                for mine, theirs in zip(outputs, reference):
                    batched.assert_close(mine, theirs, 1e-4, f"{key}, {atoms} atoms")
                times[key].append(ms)
        median = {key: statistics.median(values) for key, values in times.items()}
        rows.append((atoms, edges.shape[1], median))
        print(atoms, json.dumps({k: round(v, 3) for k, v in median.items()}), flush=True)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO,
                            capture_output=True, text=True).stdout.strip()
    lines = [
        "# Energy and forces of a neural pair potential (CPU)", "",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores; torch {torch.__version__}; "
        f"Kokkos {find_kokkos().name}; commit {commit}; {arguments.threads} threads; float32.",
        f"Command: `python3 benchmarks/forces.py --threads {arguments.threads} --rounds "
        f"{arguments.rounds} --steps {arguments.steps}`. Median ms of {arguments.steps} calls, "
        f"median over {arguments.rounds} alternating rounds; export + one CMake build of both "
        f"packages {build_s:.0f} s. Ours through the C API (copies in and out included); "
        "PyTorch eager (energy under no_grad; forces by torch.autograd.grad) and "
        "torch.compile(model) with its defaults (the same calls on the compiled module). Every "
        "output checked against PyTorch eager's (1e-4 relative).", "",
        "| atoms | pairs | ours E | ours E+F | E+F / E (ours) | PyTorch E | PyTorch E+F "
        "| torch.compile E | torch.compile E+F | ours E+F / best PyTorch E+F |",
        "|---|---|---|---|---|---|---|---|---|---|"]
    for atoms, pairs, m in rows:
        best = min(m["torch E+F"], m["compile E+F"])
        lines.append(f"| {atoms:,} | {pairs:,} | {m['ours E']:.3f} | {m['ours E+F']:.3f} | "
                     f"{m['ours E+F'] / m['ours E']:.2f} | {m['torch E']:.3f} | "
                     f"{m['torch E+F']:.3f} | {m['compile E']:.3f} | {m['compile E+F']:.3f} | "
                     f"{m['ours E+F'] / best:.2f} |")
    arguments.out.write_text("\n".join(lines) + "\n")
    print(arguments.out)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        worker(sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]))
    else:
        main()
