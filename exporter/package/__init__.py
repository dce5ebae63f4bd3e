"""Package stage: the generated C++, the weight blob, the support headers and the CMake
project rendered from templates/cmake/, written to --out atomically and deterministically.

Fifth stage of the pipeline (frontend -> importer -> lowering -> emit -> package -> verify);
bindings.py renders the C header and the Fortran module of the C API.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from weights import blob

from .. import __version__, templates
from ..errors import ExportError
from ..handoff import C_API_TYPES, CXX_TYPES, EmittedSource, TensorSpec, dynamic_extents
from . import bindings

SUPPORT_HEADERS = Path(__file__).resolve().parents[2] / "kokkos_support" / "lapis"

# backend -> (Kokkos' name for it, its spellings in Kokkos_DEVICES and Kokkos_ENABLE_<X>; the
# first is Kokkos 4's, Kokkos 3.4 calls Threads "PTHREAD").
KOKKOS_BACKENDS = {"serial": ("Serial", ["SERIAL"]),
                   "openmp": ("OpenMP", ["OPENMP"]),
                   "threads": ("Threads", ["THREADS", "PTHREAD"]),
                   "cuda": ("Cuda", ["CUDA"]),
                   "hip": ("HIP", ["HIP"]),
                   "sycl": ("SYCL", ["SYCL"])}
WEIGHTS_MODES = ("embed", "file")


@dataclass
class PackageOptions:
    weights_mode: str = "embed"          # "embed": linked into the library; "file": beside it
    source_path: Path | None = None      # the model file, recorded in the manifest
    source_sha256: str = ""
    force: bool = False                  # replace an existing non-empty `out`


def write(source: EmittedSource, out: Path, options: PackageOptions) -> Path:
    """Write the package for `source` to `out` and return `out`. The package is assembled in a
    temporary directory beside `out` and moved into place only when complete; on any failure
    (or Ctrl-C) `out` is left as it was."""
    out = Path(out)
    _check(source, out, options)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    except OSError as exc:
        raise ExportError(f"--out {out}: cannot write there ({exc.strerror})") from exc
    replaced = None
    try:
        os.chmod(staging, 0o777 & ~_umask())      # mkdtemp makes it private
        _write_tree(staging, source, options)
        if out.exists() or out.is_symlink():
            replaced = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
            out.rename(replaced / "old")
        staging.rename(out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        if replaced is not None and (replaced / "old").exists() and not out.exists():
            (replaced / "old").rename(out)
        raise
    finally:
        if replaced is not None:
            shutil.rmtree(replaced, ignore_errors=True)
    return out


def _check(source: EmittedSource, out: Path, options: PackageOptions) -> None:
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", source.name):
        raise ExportError(f"package name '{source.name}' is not a C identifier")
    if source.backend not in KOKKOS_BACKENDS:
        raise ExportError(f"unknown backend '{source.backend}'",
                          hint=f"one of {', '.join(KOKKOS_BACKENDS)}")
    if options.weights_mode not in WEIGHTS_MODES:
        raise ExportError(f"unknown weights mode '{options.weights_mode}'",
                          hint="--weights embed or --weights file")
    if options.force or not (out.exists() or out.is_symlink()):
        return
    if not out.is_dir() or out.is_symlink():
        raise ExportError(f"--out {out}: exists and is not a directory; pass --force to "
                          "replace it")
    if any(out.iterdir()):
        raise ExportError(f"--out {out}: exists and is not empty; pass --force to replace it")


def _write_tree(root: Path, source: EmittedSource, options: PackageOptions) -> None:
    name = source.name
    for directory in ("cmake", "include", "src/lapis"):
        (root / directory).mkdir(parents=True)
    _write_text(root / "include" / f"{name}.hpp", source.header)
    _write_text(root / "src" / f"{name}.cpp", source.source)
    source_name = options.source_path.name if options.source_path else "a model"
    # The C API for C and Fortran callers (absent where it cannot be spelled; see bindings).
    c_header = bindings.c_header(name, source.inputs, source.outputs, source_name)
    fortran = bindings.fortran_module(name, source.inputs, source.outputs, source_name)
    for path, text in ((f"{name}.h", c_header), (f"{name}_mod.f90", fortran)):
        if text is not None:
            _write_text(root / "include" / path, text)
    try:
        weight_bytes = blob.write(root / "src" / f"{name}.weights", source.weights)
    except blob.BlobError as exc:
        raise ExportError(exc.message, hint=exc.hint) from exc
    for header in sorted(SUPPORT_HEADERS.glob("*.hpp")):
        shutil.copyfile(header, root / "src" / "lapis" / header.name)
    if source.evaluator:   # the header's evaluator calls these in the host's own kernels
        (root / "include" / "lapis").mkdir()
        shutil.copyfile(SUPPORT_HEADERS / "scalar.hpp", root / "include" / "lapis" / "scalar.hpp")

    fields = _fields(source, options, weight_bytes)
    _write_text(root / "CMakeLists.txt", templates.render("cmake/CMakeLists.txt.in", fields))
    _write_text(root / "cmake" / f"{name}Config.cmake.in",
                templates.render("cmake/Config.cmake.in", fields,
                                 keep=("PACKAGE_INIT", "PACKAGE_CMAKE_INSTALL_INCLUDEDIR")))
    _write_text(root / "src" / f"{name}_weights.S", templates.render("cmake/weights.S.in", fields))
    _write_text(root / "README.md", templates.render("cmake/README.md.in", fields))
    _write_text(root / "lapis_manifest.json",
                json.dumps(_manifest(source, options, weight_bytes), indent=2, sort_keys=True)
                + "\n")


def _fields(source: EmittedSource, options: PackageOptions, weight_bytes: int) -> dict[str, str]:
    """The @FIELDS@ of templates/cmake/*.in."""
    name = source.name
    backend, spellings = KOKKOS_BACKENDS[source.backend]
    specs = [(spec, True) for spec in source.inputs] + [(spec, False) for spec in source.outputs]
    c_params = ", ".join(f"{'const ' if is_input else ''}{C_API_TYPES[spec.dtype]}* {spec.cname}"
                         for spec, is_input in specs)
    c_params = "".join(f"int64_t {extent.cname}, " for extent in dynamic_extents(source.inputs)) \
        + c_params
    embedded = options.weights_mode == "embed"
    sizes: dict[str, str] = {}   # dynamic size name -> its variable in the README's example
    for extent in dynamic_extents(source.inputs):
        sizes.setdefault(extent.symbol, "n" if not sizes else f"n{len(sizes) + 1}")
    return {
        "NAME": name, "VERSION": __version__,
        "KOKKOS_BACKEND": backend, "KOKKOS_DEVICE": spellings[0],
        "KOKKOS_DEVICE_SPELLINGS": ";".join(spellings),
        "EMBED_WEIGHTS": "ON" if embedded else "OFF",
        "SOURCE": options.source_path.name if options.source_path else "a model",
        "IO_TABLE": _io_table(source),
        "WEIGHT_COUNT": str(len(source.weights)), "WEIGHT_BYTES": str(weight_bytes),
        "WEIGHTS_WHERE": ("linked into the library (`src/" + name + "_weights.S`)." if embedded
                          else "read at run time (see the options below)."),
        "VIEW_DECLARATIONS": "\n".join(_view_declaration(name, spec, is_input, sizes)
                                       for spec, is_input in specs),
        "CALL_ARGS": ", ".join(spec.cname for spec, _ in specs),
        "C_FORWARD": f"{name}_forward_host({c_params})",
        "EVALUATOR_SECTION": _evaluator_section(source),
    }


def _evaluator_section(source: EmittedSource) -> str:
    """The README's section on NAME::Evaluator, for packages exported with --evaluator."""
    if not source.evaluator:
        return ""
    rows = ["x", *(f"{s.cname}_row" for s in source.inputs[1:]),
            "y", *(f"{s.cname}_row" for s in source.outputs[1:])]
    return templates.render("cmake/README_evaluator.md.in", {
        "NAME": source.name, "INPUT_TYPE": CXX_TYPES[source.inputs[0].dtype],
        "OUTPUT_TYPE": CXX_TYPES[source.outputs[0].dtype], "EXAMPLE_ARGS": ", ".join(rows)})


def _io_table(source: EmittedSource) -> str:
    rows = ["| argument | role | name in the model | element type | shape |",
            "|---|---|---|---|---|"]
    for role, specs in (("input", source.inputs), ("output", source.outputs)):
        rows += [f"| `{s.cname}` | {role} | `{s.name}` | {s.dtype} | "
                 f"{' x '.join(str(d) if d >= 0 else '?' for d in s.shape) or 'scalar'} |"
                 for s in specs]
    return "\n".join(rows)


def _view_declaration(name: str, spec: TensorSpec, is_input: bool,
                      sizes: dict[str, str]) -> str:
    view_type = f"{name}::{spec.cname}_view{'::non_const_type' if is_input else ''}"
    extents = "".join(f", {d if d >= 0 else sizes.get(spec.symbols[dim], 'n')}"
                      for dim, d in enumerate(spec.shape))
    return f'  {view_type} {spec.cname}("{spec.cname}"{extents});'


def _manifest(source: EmittedSource, options: PackageOptions, weight_bytes: int) -> dict:
    return {
        "name": source.name,
        "backend": source.backend,
        "precision": source.precision,
        "inputs": [spec.to_json() for spec in source.inputs],
        "outputs": [spec.to_json() for spec in source.outputs],
        "weights": {"count": len(source.weights), "bytes": weight_bytes,
                    "mode": options.weights_mode, "file": f"src/{source.name}.weights"},
        "source": {"file": options.source_path.name if options.source_path else None,
                   "sha256": options.source_sha256},
        "tool": {"name": "lapis-export", "version": __version__},
        "kernels": source.kernel_count,
        # Bytes of forward()'s intermediate buffers that initialize() allocates, shared by
        # liveness, and what they would take each on its own; buffers with dynamic extents
        # come on top, in blocks forward() grows.
        "memory": source.memory,
        # NAME::Evaluator in the header (lapis-export --evaluator; row-independent models).
        "evaluator": source.evaluator,
    }


def _write_text(path: Path, text: str) -> None:
    with open(path, "w", encoding="utf-8", newline="\n") as file:
        file.write(text)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
