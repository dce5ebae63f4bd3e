"""Find a Kokkos installation for building exported packages, or build one once.

Order: ``Kokkos_ROOT`` / ``CMAKE_PREFIX_PATH`` from the environment (an installed Kokkos the
user already has), then a cached build of Kokkos 3.4.01 (Serial + OpenMP) made from the source
that ships inside the ``pykokkos-base==0.0.7`` sdist on PyPI.
Usable as a script: ``python -m kokkos_support.provision`` prints the install prefix;
``python -m kokkos_support.provision --hip`` builds (once) and prints a Kokkos 3.4.01 with its HIP
backend, compiled with Debian's ``hipcc`` (ROCm 5.2), for compiling HIP packages where no AMD
GPU is at hand.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

KOKKOS_VERSION = "3.4.01"
SDIST = "pykokkos-base==0.0.7"
_SDIST_DIR = "pykokkos-base-0.0.7"


def cache_dir() -> Path:
    root = os.environ.get("LAPIS_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "lapis-export")
    return Path(root)


def _has_kokkos_config(prefix: Path) -> bool:
    return any(prefix.glob("lib*/cmake/Kokkos/KokkosConfig.cmake"))


def find_installed() -> Path | None:
    """An installed Kokkos named by the environment, if any."""
    candidates = []
    if os.environ.get("Kokkos_ROOT"):
        candidates.append(os.environ["Kokkos_ROOT"])
    candidates += [p for p in os.environ.get("CMAKE_PREFIX_PATH", "").split(os.pathsep) if p]
    for candidate in candidates:
        if _has_kokkos_config(Path(candidate)):
            return Path(candidate)
    return None


def cached_prefix() -> Path:
    return cache_dir() / f"kokkos-{KOKKOS_VERSION}-serial-openmp"


# The HIP build: Serial on the host beside HIP, for an MI50/MI60 (gfx906), an architecture
# ROCm 5.2 supports and Kokkos 3.4 names; nothing runs here, the build only has to compile.
HIP_ARCH = "VEGA906"


def cached_hip_prefix() -> Path:
    return cache_dir() / f"kokkos-{KOKKOS_VERSION}-hip-{HIP_ARCH.lower()}"


def hip_compiler() -> str | None:
    """hipcc, if installed (Debian: apt-get install hipcc libamdhip64-dev)."""
    return shutil.which("hipcc")


def _log(message: str) -> None:
    print(f"[kokkos] {message}", file=sys.stderr, flush=True)


def build_cached(jobs: int | None = None, hip: bool = False) -> Path:
    """Build Kokkos 3.4.01 Serial+OpenMP (or, with `hip`, Serial+HIP with hipcc) into the
    cache (once); return its prefix."""
    prefix = cached_hip_prefix() if hip else cached_prefix()
    if _has_kokkos_config(prefix):
        return prefix
    cache_dir().mkdir(parents=True, exist_ok=True)
    jobs = jobs or os.cpu_count() or 2
    with tempfile.TemporaryDirectory(prefix="kokkos-build-", dir=cache_dir()) as tmp:
        tmp_path = Path(tmp)
        _log(f"downloading the Kokkos {KOKKOS_VERSION} source ({SDIST} sdist)")
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary",
                        "pykokkos-base", SDIST, "-d", str(tmp_path)], check=True,
                       stdout=subprocess.DEVNULL)
        archive = next(tmp_path.glob("pykokkos-base-*.tar.gz"))
        with tarfile.open(archive) as tar:
            members = [m for m in tar.getmembers()
                       if m.name.startswith(f"{_SDIST_DIR}/external/kokkos/")]
            tar.extractall(tmp_path, members=members, filter="data")
        source = tmp_path / _SDIST_DIR / "external" / "kokkos"
        build = tmp_path / "build"
        staging = Path(str(prefix) + ".partial")
        shutil.rmtree(staging, ignore_errors=True)
        _log(f"configuring and building Kokkos with {jobs} jobs into {prefix}")
        if hip:
            compiler = hip_compiler()
            if compiler is None:
                raise RuntimeError("hipcc not found: apt-get install hipcc libamdhip64-dev")
            backends = [f"-DCMAKE_CXX_COMPILER={compiler}", "-DKokkos_ENABLE_HIP=ON",
                        f"-DKokkos_ARCH_{HIP_ARCH}=ON"]
        else:
            backends = ["-DKokkos_ENABLE_OPENMP=ON"]
        subprocess.run(["cmake", "-S", str(source), "-B", str(build),
                        "-DCMAKE_BUILD_TYPE=Release", "-DCMAKE_CXX_STANDARD=17",
                        "-DCMAKE_POSITION_INDEPENDENT_CODE=ON", "-DKokkos_ENABLE_SERIAL=ON",
                        *backends,
                        "-DKokkos_ENABLE_TESTS=OFF", "-DKokkos_ENABLE_EXAMPLES=OFF",
                        f"-DCMAKE_INSTALL_PREFIX={staging}"],
                       check=True, stdout=subprocess.DEVNULL)
        subprocess.run(["cmake", "--build", str(build), "-j", str(jobs)], check=True,
                       stdout=subprocess.DEVNULL)
        subprocess.run(["cmake", "--install", str(build)], check=True, stdout=subprocess.DEVNULL)
        staging.rename(prefix)
    return prefix


def ensure_kokkos() -> Path:
    """The Kokkos prefix to build against: installed if found, else the cached build."""
    return find_installed() or build_cached()


if __name__ == "__main__":
    print(build_cached(hip=True) if "--hip" in sys.argv[1:] else ensure_kokkos())
