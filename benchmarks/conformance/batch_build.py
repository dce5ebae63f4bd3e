"""Build many exported packages at once: one CMake project, one shared library per batch of
packages, `make -jN`, so that thousands of small packages build in minutes on a few cores.

Each batch is one translation unit: the Kokkos and support headers are parsed once, then each
package's header and source follow wrapped in a namespace of their own (the generated sources
keep file-local helpers in an anonymous namespace, which would collide otherwise). The C API
symbols keep their names (NAME_forward_host, ...). A batch that fails to compile is split into
one library per package, so that one bad package only fails itself.
"""
from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

_SUPPORT = Path(__file__).resolve().parents[2] / "kokkos_support" / "lapis"
_INCLUDE = re.compile(r'^\s*#\s*include\s+[<"]([^>"]+)[>"].*$', re.M)


@dataclass
class Built:
    library: Path | None       # the shared library holding the package, or None
    error: str = ""            # the first compiler error line when it did not build


def build(packages: dict[str, Path], build_dir: Path, kokkos_root: str, jobs: int = 2,
          batch_size: int = 12, optimization: str = "-O1",
          timeout: float = 3600) -> dict[str, Built]:
    """Build every package (name -> package directory); returns name -> Built."""
    names = sorted(packages)
    batches = [names[i:i + batch_size] for i in range(0, len(names), batch_size)]
    results = _build_round(packages, batches, build_dir / "batched", kokkos_root, jobs,
                           optimization, timeout)
    failed = [name for name in names if results[name].library is None]
    if failed:
        single = _build_round(packages, [[name] for name in failed], build_dir / "single",
                              kokkos_root, jobs, optimization, timeout)
        results.update(single)
    return results


def _build_round(packages: dict[str, Path], batches: list[list[str]], root: Path,
                 kokkos_root: str, jobs: int, optimization: str,
                 timeout: float) -> dict[str, Built]:
    source_dir, binary_dir = root / "src", root / "build"
    source_dir.mkdir(parents=True, exist_ok=True)
    lines = ["cmake_minimum_required(VERSION 3.16)",
             "project(lapis_conformance LANGUAGES CXX ASM)",
             "find_package(Kokkos REQUIRED)",
             f'set(CMAKE_CXX_FLAGS_RELEASE "{optimization}")',
             "set(CMAKE_LIBRARY_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR}/lib)"]
    for index, batch in enumerate(batches):
        target = f"batch{index}"
        (source_dir / f"{target}.cpp").write_text(_batch_source(packages, batch))
        sources = [f"{target}.cpp"] + [str(packages[name] / "src" / f"{name}_weights.S")
                                       for name in batch]
        lines.append(f"add_library({target} SHARED {' '.join(sources)})")
        lines.append(f"target_link_libraries({target} PRIVATE Kokkos::kokkos)")
        lines.append(f"target_compile_features({target} PRIVATE cxx_std_17)")
        lines.append(f"target_compile_definitions({target} PRIVATE LAPIS_WEIGHTS_EMBEDDED)")
        includes = " ".join(str(packages[name] / "src") for name in batch)
        lines.append(f"target_include_directories({target} PRIVATE {_SUPPORT.parent} "
                     f"{includes})")
    (source_dir / "CMakeLists.txt").write_text("\n".join(lines) + "\n")
    configure = subprocess.run(
        ["cmake", "-S", str(source_dir), "-B", str(binary_dir), "-DCMAKE_BUILD_TYPE=Release",
         f"-DKokkos_ROOT={kokkos_root}"], capture_output=True, text=True)
    if configure.returncode != 0:
        error = _first_error(configure.stdout + configure.stderr) or "cmake configure failed"
        return {name: Built(None, error) for batch in batches for name in batch}
    log_path = root / "build.log"
    with log_path.open("w") as log:
        try:
            subprocess.run(["nice", "make", "-k", f"-j{jobs}", "-C", str(binary_dir)],
                           stdout=log, stderr=subprocess.STDOUT, timeout=timeout)
        except subprocess.TimeoutExpired:
            pass
    log_text = log_path.read_text(errors="replace")
    results = {}
    for index, batch in enumerate(batches):
        library = binary_dir / "lib" / f"libbatch{index}.so"
        for name in batch:
            if library.exists():
                results[name] = Built(library)
            else:
                results[name] = Built(None, _first_error(log_text, f"batch{index}.cpp")
                                      or "did not build")
    return results


def _batch_source(packages: dict[str, Path], batch: list[str]) -> str:
    """One translation unit for `batch`: every #include hoisted to the top (support headers
    from kokkos_support/lapis), then each package's header and source in `namespace case_N`."""
    includes: list[str] = ["Kokkos_Core.hpp"]
    bodies: list[str] = []
    for index, name in enumerate(batch):
        header = (packages[name] / "include" / f"{name}.hpp").read_text()
        source = (packages[name] / "src" / f"{name}.cpp").read_text()
        for text in (header, source):
            for include in _INCLUDE.findall(text):
                if include != f"{name}.hpp" and include not in includes:
                    includes.append(include)
        body = _INCLUDE.sub("", header.replace("#pragma once", "")) + "\n" + \
            _INCLUDE.sub("", source)
        bodies.append(f"// ---- {name}\nnamespace case_{index} {{\n{body}\n}}  "
                      f"// namespace case_{index}\n")
    head = "\n".join(f'#include "{i}"' if i.startswith("lapis/") else f"#include <{i}>"
                     for i in includes)
    batch_api = ('extern "C" int lapis_batch_initialize(void) {\n'
                 "  if (!Kokkos::is_initialized()) Kokkos::initialize();\n  return 0;\n}\n"
                 'extern "C" int lapis_batch_finalize(void) {\n'
                 "  if (Kokkos::is_initialized()) Kokkos::finalize();\n  return 0;\n}\n")
    return f"// Generated by batch_build.py: {len(batch)} packages.\n{head}\n\n" + \
        batch_api + "\n".join(bodies)


def _first_error(log: str, marker: str | None = None) -> str:
    for line in log.splitlines():
        if "error" in line and (marker is None or marker in line):
            return line.strip()[:300]
    return ""
