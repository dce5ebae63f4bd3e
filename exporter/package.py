"""Package stage: write the generated sources, the weight blob and the rendered CMake project
into --out, atomically (assembled beside it, moved into place only when complete)."""
from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from . import __version__, templates
from .errors import ExportError
from .handoff import CXX_TYPES, EmittedSource

SUPPORT_HEADERS = Path(__file__).resolve().parents[1] / "kokkos_support" / "lapis"

# Backend -> Kokkos device name as Kokkos_DEVICES spells it (and Kokkos 3.4's other spelling).
KOKKOS_DEVICES = {"serial": ("Serial", "SERIAL"), "openmp": ("OpenMP", "OPENMP"),
                  "threads": ("Threads", "PTHREAD"), "cuda": ("Cuda", "CUDA"),
                  "hip": ("HIP", "HIP"), "sycl": ("SYCL", "SYCL")}


@dataclass
class PackageOptions:
    weights_mode: str = "embed"          # "embed" | "file"
    source_path: Path | None = None
    source_sha256: str = ""
    force: bool = False


def write(source: EmittedSource, out: Path, options: PackageOptions) -> Path:
    """Write the package for `source` to `out`; returns `out`."""
    from weights import blob

    out = Path(out)
    if out.exists() and not options.force and (not out.is_dir() or any(out.iterdir())):
        raise ExportError(f"--out {out}: exists and is not empty; pass --force to replace it")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    except OSError as exc:
        raise ExportError(f"--out {out}: cannot write there ({exc.strerror})") from exc
    try:
        _write_tree(staging, source, options, blob)
        if out.exists():
            _remove(out)
        staging.rename(out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out


def _write_tree(root: Path, source: EmittedSource, options: PackageOptions, blob) -> None:
    name = source.name
    (root / "include").mkdir()
    (root / "src" / "lapis").mkdir(parents=True)
    (root / "cmake").mkdir()
    (root / "include" / f"{name}.hpp").write_text(source.header)
    (root / "src" / f"{name}.cpp").write_text(source.source)
    weight_bytes = blob.write(root / "src" / f"{name}.weights", source.weights)
    for header in sorted(SUPPORT_HEADERS.glob("*.hpp")):
        shutil.copyfile(header, root / "src" / "lapis" / header.name)
    device, device_upper_alias = KOKKOS_DEVICES[source.backend]
    fields = {"NAME": name, "VERSION": __version__, "BACKEND": source.backend,
              "KOKKOS_DEVICE": device, "KOKKOS_DEVICE_UPPER": device.upper(),
              "KOKKOS_DEVICE_ALIAS": device_upper_alias,
              "EMBED_WEIGHTS": "ON" if options.weights_mode == "embed" else "OFF",
              "SOURCE": options.source_path.name if options.source_path else "a model",
              "IO_TABLE": _io_table(source),
              "CALL_ARGS": ", ".join(s.cname for s in [*source.inputs, *source.outputs])}
    (root / "CMakeLists.txt").write_text(templates.render("cmake/CMakeLists.txt.in", fields))
    (root / "cmake" / f"{name}Config.cmake.in").write_text(
        templates.render("cmake/Config.cmake.in", fields, keep=("PACKAGE_INIT",)))
    (root / "src" / f"{name}_weights.S").write_text(templates.render("cmake/weights.S.in", fields))
    (root / "README.md").write_text(templates.render("cmake/README.md.in", fields))
    manifest = {
        "name": name,
        "backend": source.backend,
        "inputs": [spec.to_json() for spec in source.inputs],
        "outputs": [spec.to_json() for spec in source.outputs],
        "weights": {"count": len(source.weights), "bytes": weight_bytes,
                    "mode": options.weights_mode},
        "source": {"file": options.source_path.name if options.source_path else None,
                   "sha256": options.source_sha256},
        "tool": {"name": "lapis-export", "version": __version__},
        "kernels": source.kernel_count,
    }
    (root / "lapis_manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")


def _io_table(source: EmittedSource) -> str:
    rows = ["| argument | role | source name | element type | shape |", "|---|---|---|---|---|"]
    for role, specs in (("input", source.inputs), ("output", source.outputs)):
        rows += [f"| `{s.cname}` | {role} | `{s.name}` | {CXX_TYPES[s.dtype]} | "
                 f"{list(s.shape)} |" for s in specs]
    return "\n".join(rows)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink()
