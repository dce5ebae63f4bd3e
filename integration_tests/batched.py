"""Many small packages exported in this process and built in one CMake build
(benchmarks/conformance/batch_build.py), then run on given inputs in a subprocess per library
(its Kokkos beside no other OpenMP runtime):

    packages = {name: export(path, work / name, name) for ...}
    libraries = build(packages, work, kokkos_root)
    outputs = run({key: (libraries[name], packages[name], [x, ...])}, work)[key]

Run as a module it is that subprocess: `python -m integration_tests.batched LIB PKG IO.npz
[PKG IO.npz ...]` reads in_0, in_1, ... from each IO.npz and writes out_0, ... back into it.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def export(model: Path, out: Path, name: str, input_shapes=None) -> Path:
    """The package of `model` (.pt2, .pt or .onnx) written to `out` as `name`, openmp."""
    from exporter import emit, frontend, importer, lowering, package

    loaded = frontend.load(model, input_shapes)
    lowered = lowering.run(importer.to_linalg(loaded), "openmp")
    package.write(emit.kokkos(lowered, name, "openmp"), out,
                  package.PackageOptions(force=True))
    return out


def build(packages: dict[str, Path], work: Path, kokkos_root, batch_size: int = 8,
          optimization: str = "-O1") -> dict[str, Path]:
    """name -> the shared library holding that package; fails naming the first error.
    Tests build at -O1 (quicker to compile, the same numbers); a benchmark passes the
    packages' own release flags, "-O3 -DNDEBUG"."""
    sys.path.insert(0, str(REPO / "benchmarks" / "conformance"))
    import batch_build

    built = batch_build.build(packages, work / "build", str(kokkos_root), jobs=2,
                              batch_size=batch_size, optimization=optimization)
    failed = {name: result.error for name, result in built.items() if result.library is None}
    assert not failed, f"packages did not build: {failed}"
    return {name: result.library for name, result in built.items()}


def run(jobs: dict, work: Path, env: dict | None = None) -> dict:
    """{key: (library, package_dir, inputs)} -> {key: the package's outputs for inputs}, one
    subprocess per library (its packages share one Kokkos), with `env` added to its
    environment."""
    by_library: dict[Path, list] = {}
    for index, (key, (library, package_dir, inputs)) in enumerate(jobs.items()):
        io = work / f"run_{index}.npz"
        np.savez(io, **{f"in_{i}": array for i, array in enumerate(inputs)})
        by_library.setdefault(Path(library), []).append((key, Path(package_dir), io))
    outputs = {}
    for library, entries in by_library.items():
        arguments = [str(a) for _, package_dir, io in entries for a in (package_dir, io)]
        result = subprocess.run([sys.executable, "-m", "integration_tests.batched",
                                 str(library), *arguments], cwd=REPO, capture_output=True,
                                text=True, env={"OMP_NUM_THREADS": "2", "OMP_PROC_BIND": "false",
                                                "PATH": "/usr/bin:/bin", **(env or {})})
        assert result.returncode == 0, f"{library.name} failed:\n{result.stderr[-3000:]}"
        for key, _, io in entries:
            data = np.load(io)
            outputs[key] = [data[f"out_{i}"] for i in range(sum(k.startswith("out_")
                                                                for k in data.files))]
    return outputs


def assert_close(ours: np.ndarray, reference: np.ndarray, relative: float, what: str) -> None:
    """max |ours - reference| <= relative * max |reference| (one scale per output)."""
    assert ours.shape == reference.shape, f"{what}: shape {ours.shape}, want {reference.shape}"
    scale = max(float(np.abs(reference).max(initial=0.0)), 1e-30)
    error = float(np.abs(ours.astype(np.float64) - reference.astype(np.float64)).max(initial=0))
    assert error <= relative * scale, \
        f"{what}: max abs error {error:.3g} > {relative:g} x max |reference| {scale:.3g}"


def _main(library: str, *pairs: str) -> None:
    """Open every package first and close them in reverse: the first one's initialize starts
    Kokkos, and its finalize, last, ends it."""
    sys.path.insert(0, str(REPO))
    from exporter.verify import load_module

    runs: dict[str, list[str]] = {}
    for package_dir, io in zip(pairs[::2], pairs[1::2]):
        runs.setdefault(package_dir, []).append(io)
    modules = []
    try:
        for package_dir in runs:
            modules.append(load_module(Path(package_dir), Path(library)))
        for module, ios in zip(modules, runs.values()):
            for io in ios:
                data = np.load(io)
                inputs = [data[f"in_{i}"] for i in range(len(data.files))]
                outputs = module.forward(*inputs)
                np.savez(io, **{f"in_{i}": a for i, a in enumerate(inputs)},
                         **{f"out_{i}": a for i, a in enumerate(outputs)})
    finally:
        for module in reversed(modules):
            module.close()


if __name__ == "__main__":
    _main(*sys.argv[1:])
