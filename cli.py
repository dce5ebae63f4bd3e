"""Command line: `lapis-export MODEL --out DIR ...` runs the whole pipeline and reports.

Arguments are checked first (cheaply), then frontend -> importer -> lowering -> emit -> package
(-> verify). User errors are one line on stderr (exit 2); internal bugs exit 3.
"""
from __future__ import annotations

import re
import sys
import traceback
from pathlib import Path

import click

from exporter import __version__

BACKENDS = ("serial", "openmp", "threads", "cuda", "hip", "sycl")

# Names that cannot be the package's namespace / CMake target / symbol prefix.
_TAKEN_NAMES = frozenset({"Kokkos", "std", "lapis", "lapis_kmath", "main"})
_CMAKE_RESERVED = frozenset({"all", "clean", "help", "install", "package", "test", "edit_cache",
                             "rebuild_cache", "ALL_BUILD", "ZERO_CHECK", "INSTALL", "RUN_TESTS"})


class _OneLineErrors(click.Command):
    """Click's usage errors in our one-line format (keeping Click's exit code); the command's
    return value becomes the exit status."""

    def main(self, args=None, prog_name=None, standalone_mode: bool = True, **extra):
        try:
            status = super().main(args, prog_name or "lapis-export", standalone_mode=False,
                                  **extra)
        except click.ClickException as exc:
            _report(exc.format_message(), "see lapis-export --help")
            status = exc.exit_code
        except click.Abort:
            click.echo("lapis-export: interrupted", err=True)
            status = 130
        if not standalone_mode:
            return status
        sys.exit(status or 0)


@click.command(cls=_OneLineErrors, context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("model", type=click.Path(path_type=Path))
@click.option("--out", "out", required=True, type=click.Path(path_type=Path),
              help="Directory to write the CMake package to.")
@click.option("--backend", type=click.Choice(BACKENDS), default="openmp", show_default=True,
              help="Kokkos backend the package is built for.")
@click.option("--name", help="Namespace, CMake target and symbol prefix "
                             "[default: the model file's stem].")
@click.option("--input-shape", "input_shapes", multiple=True, metavar="1x3x224x224",
              help="Shape of one input (repeat, in order); needed for TorchScript.")
@click.option("--dtype", type=click.Choice(["float32", "float64"]), default=None,
              help="Compute in this floating-point type (weights, inputs and outputs "
                   "converted) [default: as the model is].")
@click.option("--weights", "weights_mode", type=click.Choice(["embed", "file"]), default="embed",
              show_default=True, help="Link the weight blob into the library, or keep it beside.")
@click.option("--verify", "verify_flag", is_flag=True,
              help="Build the package, run it and compare with PyTorch; exit 1 if it differs.")
@click.option("--force", is_flag=True, help="Replace a non-empty --out directory.")
@click.option("-v", "--verbose", is_flag=True, help="Show tracebacks on errors.")
@click.option("-q", "--quiet", is_flag=True, help="No progress output.")
@click.version_option(__version__, prog_name="lapis-export")
def command(model: Path, out: Path, backend: str, name: str | None, input_shapes: tuple[str, ...],
            dtype: str | None, weights_mode: str, verify_flag: bool, force: bool, verbose: bool,
            quiet: bool) -> int:
    """Compile MODEL (TorchScript .pt or torch.export .pt2) into a Kokkos C++ CMake package."""
    import warnings

    from exporter.errors import ExportError

    warnings.filterwarnings("ignore", category=FutureWarning)   # torch's deprecation notes
    try:
        return _export(model, out, backend, name, input_shapes, weights_mode, verify_flag, force,
                       progress=not quiet and sys.stderr.isatty(), dtype=dtype)
    except ExportError as exc:
        if verbose:
            traceback.print_exc()
        _report(exc.message, exc.hint)
        return 2
    except KeyboardInterrupt:
        click.echo("lapis-export: interrupted", err=True)
        return 130
    except Exception as exc:
        if verbose:
            traceback.print_exc()
        first = (str(exc).strip().splitlines() or [""])[0]
        _report(f"internal error: {type(exc).__name__}: {first}",
                None if verbose else "this is a bug in lapis-export; rerun with -v for the "
                                     "traceback")
        return 3


def _export(model: Path, out: Path, backend: str, name: str | None, shape_texts: tuple[str, ...],
            weights_mode: str, verify_flag: bool, force: bool, progress: bool,
            dtype: str | None = None) -> int:
    from exporter import frontend

    shapes = [frontend.parse_input_shape(text) for text in shape_texts] or None
    name = check_name(name) if name is not None else default_name(model)
    check_out(out, force)

    def stage(text: str) -> None:
        if progress:
            click.echo(f"lapis-export: {text}...", err=True)

    stage(f"loading {model}")
    loaded = frontend.load(model, shapes, dtype)
    from exporter import emit, importer, lowering, package

    stage("importing")
    imported = importer.to_linalg(loaded)
    stage("lowering")
    lowered = lowering.run(imported, backend)
    stage("emitting C++")
    source = emit.kokkos(lowered, name, backend)
    stage("writing package")
    options = package.PackageOptions(weights_mode=weights_mode, source_path=model,
                                     source_sha256=loaded.source_sha256, force=force)
    pkg_dir = package.write(source, out, options)

    weight_bytes = sum(weight.array.nbytes for weight in source.weights)
    click.echo(str(pkg_dir))
    click.echo(f"  {name} ({backend}): {len(source.weights)} weights, "
               f"{_format_bytes(weight_bytes)}, {source.kernel_count} kernels")
    click.echo("  use it from CMake:\n"
               f"    add_subdirectory({pkg_dir})\n"
               f"    target_link_libraries(app PRIVATE {name}::{name})")
    if not verify_flag:
        return 0
    from exporter import verify

    stage("building and verifying")
    result = verify.run(pkg_dir, loaded)
    verdict = "PASS" if result.passed else "FAIL"
    click.echo(f"verify: max abs error {result.max_abs_error:.3g} "
               f"(relative {result.relative_error:.3g}, tolerance {result.tolerance:g}) — "
               f"{verdict}")
    return 0 if result.passed else 1


def default_name(model: Path) -> str:
    """The model file's stem as a C++ identifier ("resnet-18.v2" -> resnet_18_v2)."""
    from exporter.errors import ExportError

    ident = re.sub(r"[^0-9A-Za-z_]", "_", model.stem)
    try:
        return check_name(ident)
    except ExportError:   # "1st", "class", "test", "__x": keep the stem, make it usable
        return "m_" + ident.lstrip("_")


def check_name(name: str) -> str:
    """`name` if it can be a namespace, a CMake target and a C symbol prefix."""
    from exporter.errors import ExportError

    hint = "use letters, digits and _, starting with a letter, e.g. --name my_model"
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name or "") or not name.isascii():
        raise ExportError(f"--name '{name}': not a valid C++ identifier", hint=hint)
    from exporter.names import CXX_KEYWORDS

    if name in CXX_KEYWORDS:
        raise ExportError(f"--name '{name}': is a C++ keyword", hint=hint)
    if name in _TAKEN_NAMES or name.startswith("__") or re.match(r"_[A-Z]", name):
        raise ExportError(f"--name '{name}': is reserved or already used by the generated code",
                          hint=hint)
    if name in _CMAKE_RESERVED:
        raise ExportError(f"--name '{name}': is a reserved CMake target name", hint=hint)
    return name


def check_out(out: Path, force: bool) -> None:
    """Refuse to clobber an existing non-empty --out unless --force (package.write replaces it)."""
    from exporter.errors import ExportError

    if force or not out.exists():
        return
    if not out.is_dir():
        raise ExportError(f"--out {out}: exists and is not a directory; pass --force to "
                          "replace it")
    if any(out.iterdir()):
        raise ExportError(f"--out {out}: exists and is not empty; pass --force to replace it")


def _format_bytes(count: int) -> str:
    if count < 1024:
        return f"{count} bytes"
    return f"{count / 1024:.1f} KiB" if count < 1024**2 else f"{count / 1024**2:.1f} MiB"


def _report(message: str, hint: str | None = None) -> None:
    click.echo(f"lapis-export: error: {message}", err=True)
    if hint:
        click.echo(f"  hint: {hint}", err=True)


def main() -> None:
    command()


if __name__ == "__main__":
    main()
