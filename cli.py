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

# Names that cannot be the package's namespace / CMake target / symbol prefix: namespaces and
# global names the generated code and its includes use, and common C macros.
_TAKEN_NAMES = frozenset({"Kokkos", "std", "lapis", "lapis_kmath", "main", "size_t", "ptrdiff_t",
                          "int8_t", "int16_t", "int32_t", "int64_t", "uint8_t", "uint16_t",
                          "uint32_t", "uint64_t", "intptr_t", "uintptr_t", "memcpy", "memset",
                          "printf", "malloc", "free", "abort", "exit", "errno", "assert", "NULL",
                          "EOF", "stdin", "stdout", "stderr", "unix", "linux", "omp"})
# Macro prefixes of Kokkos, of our support headers and of the compilers.
_TAKEN_PREFIXES = ("KOKKOS_", "Kokkos_", "LAPIS_", "__")
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
              help="Shape of one input (repeat, in order); needed for TorchScript and Python "
                   "functions. 'scalar' is a 0-d input; ':int64' etc. gives a function "
                   "input's dtype.")
@click.option("--dtype", type=click.Choice(["float32", "float64"]), default=None,
              help="Compute in this floating-point type (weights, inputs and outputs "
                   "converted) [default: as the model is].")
@click.option("--precision", type=click.Choice(["fp32", "tf32", "bf16"]), default="fp32",
              show_default=True,
              help="Products of float32 convolutions and matrix products: fp32 (float32 "
                   "accuracy), tf32 (TF32 tensor cores; --backend cuda), bf16 (bfloat16 "
                   "operands of linear layers, and on host backends of matrix products, "
                   "float32 sums; host backends and cuda).")
@click.option("--grad", "grads", multiple=True, metavar="OUTPUT:INPUT",
              help="Also return the gradient of OUTPUT (summed if not a scalar) with respect "
                   "to INPUT, compiled at export: e.g. energy:positions (repeat for more).")
@click.option("--evaluator", is_flag=True,
              help="Also put NAME::Evaluator in the header: the model as a function a host's own "
                   "kernels call per point (row-independent models: MLPs, per-cell networks).")
@click.option("--weights", "weights_mode", type=click.Choice(["embed", "file"]), default="embed",
              show_default=True, help="Link the weight blob into the library, or keep it beside.")
@click.option("--verify", "verify_flag", is_flag=True,
              help="Build the package, run it and compare with PyTorch; exit 1 if it differs.")
@click.option("--weights-only", is_flag=True,
              help="Write only the weight blob to the file --out names (for NAME::load_weights "
                   "of a package exported with the same options).")
@click.option("--example-inputs", "example_inputs",
              type=click.Path(path_type=Path, exists=True, dir_okay=False),
              help="Inputs for --verify (a .pt or .npz of the input tensors) instead of "
                   "random ones, e.g. valid indices of a graph's edges.")
@click.option("--force", is_flag=True, help="Replace a non-empty --out directory.")
@click.option("-v", "--verbose", is_flag=True, help="Show tracebacks on errors.")
@click.option("-q", "--quiet", is_flag=True,
              help="No progress output, and only the package's path as the summary.")
@click.version_option(__version__, prog_name="lapis-export")
def command(model: Path, out: Path, backend: str, name: str | None, input_shapes: tuple[str, ...],
            dtype: str | None, precision: str, grads: tuple[str, ...], evaluator: bool,
            weights_mode: str,
            verify_flag: bool,
            weights_only: bool, example_inputs: Path | None, force: bool, verbose: bool,
            quiet: bool) -> int:
    """Compile MODEL (TorchScript .pt, torch.export .pt2, ONNX, or a Python function as
    file.py:function) into a Kokkos C++ CMake package."""
    import warnings

    from exporter.errors import ExportError, InternalError
    from exporter.frontend import torch_program

    warnings.filterwarnings("ignore", category=FutureWarning)   # torch's deprecation notes
    torch_program.SHOW_TORCH_LOGS = verbose
    if example_inputs is not None and not verify_flag:
        _report("--example-inputs is for --verify", "add --verify, or drop --example-inputs")
        return 2
    try:
        return _export(model, out, backend, name, input_shapes, weights_mode, verify_flag, force,
                       progress=not quiet and sys.stderr.isatty(), quiet=quiet, dtype=dtype,
                       precision=precision, weights_only=weights_only,
                       example_inputs=example_inputs, verbose=verbose, grads=grads,
                       evaluator=evaluator)
    except ExportError as exc:
        if verbose:
            traceback.print_exc()
        _report(exc.message, exc.hint)
        return 2
    except InternalError as exc:
        if verbose:
            traceback.print_exc()
        _report(f"internal error: {exc.message}", exc.hint)
        return 3
    except KeyboardInterrupt:
        click.echo("lapis-export: interrupted", err=True)
        return 130
    except BrokenPipeError:
        # stdout's reader went away (`| head -1`): nothing left to say, and no traceback at exit.
        import os
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
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
            quiet: bool = False, dtype: str | None = None, precision: str = "fp32",
            weights_only: bool = False, example_inputs: Path | None = None,
            verbose: bool = False, grads: tuple[str, ...] = (),
            evaluator: bool = False) -> int:
    from exporter import frontend
    from exporter.progress import Progress

    from exporter.frontend.function import split_target

    specs = [frontend.parse_input_spec(text) for text in shape_texts]
    shapes = [shape for shape, _ in specs] or None
    function = split_target(str(model))     # `file.py:function`: (file, function name)
    source_file = function[0] if function else model
    if name is not None:
        name = check_name(name)
    else:
        name = default_name(Path(function[1].rpartition(".")[2]) if function else model)
    if weights_only:
        _check_weights_out(out, force, verify_flag)
    else:
        check_out(out, force, source_file)
    check_precision(precision, backend, dtype)
    steps = Progress(progress)

    with steps.step(f"loading {model.name}"):
        loaded = frontend.load(model, shapes, dtype, [given for _, given in specs])
    check_model_precision(precision, loaded)
    if grads:
        from exporter.frontend import gradients
        with steps.step("differentiating"):
            loaded = gradients.add_gradients(loaded, list(grads))
    from exporter import emit, importer, lowering, package

    row = None
    if evaluator:   # the model once more at one row, for NAME::Evaluator (before the import
        # rewrites the program's graph in place)
        with steps.step("checking rows for the evaluator"):
            one_row = frontend.one_row(loaded)
        with steps.step("lowering one row"):
            row = lowering.run(importer.to_linalg(one_row, tuned_kernels=False), backend,
                               tuned_kernels=False)
    with steps.step("importing"):
        ops = _count_ops(loaded)   # before the graph rewrites of the import
        imported = importer.to_linalg(loaded)
    with steps.step("lowering"):
        lowered = lowering.run(imported, backend, precision=precision)
    with steps.step("emitting C++"):
        source = emit.kokkos(lowered, name, backend, precision, row=row)
    if weights_only:
        with steps.step("writing the weight blob"):
            size = _write_blob(source, out)
        click.echo(str(out))
        if not quiet:
            click.echo(f"  {name} ({backend}): {len(source.weights)} tensors, "
                       f"{_format_bytes(size)}, for {name}::load_weights()")
        return 0
    with steps.step("writing package"):
        options = package.PackageOptions(weights_mode=weights_mode, source_path=model,
                                         source_sha256=loaded.source_sha256, force=force)
        pkg_dir = package.write(source, out, options)

    click.echo(str(pkg_dir))
    if not quiet:
        _summary(ops, imported, source, pkg_dir)
    if not verify_flag:
        return 0
    from exporter import verify
    from exporter.errors import ExportError, InternalError

    try:
        with steps.step("building and verifying"):
            result = verify.run(pkg_dir, loaded, example_inputs=example_inputs)
    except InternalError:
        raise
    except Exception as exc:  # the reference or the package failed on the inputs
        if verbose:
            traceback.print_exc()
        if isinstance(exc, ExportError):
            what, hint = exc.message, exc.hint
        else:
            what = f"{type(exc).__name__}: {(str(exc).strip().splitlines() or [''])[0]}"
            hint = None
        _report(f"verify failed: {what} (the package at {pkg_dir} is complete)", hint)
        return 1
    verdict = "PASS" if result.passed else "FAIL"
    click.echo(f"verify: max abs error {result.max_abs_error:.3g} "
               f"(relative {result.relative_error:.3g}, tolerance {result.tolerance:g}"
               f"{'' if precision == 'fp32' else ' for ' + precision + ' products'}) — "
               f"{verdict}")
    return 0 if result.passed else 1


def _count_ops(loaded) -> int:
    """The source model's ops: ONNX nodes, or the torch.export graph's calls."""
    if loaded.kind == "onnx":
        return len(loaded.program.graph.node)
    graph = getattr(loaded.program, "graph", None)
    return sum(1 for node in graph.nodes if node.op == "call_function") if graph else 0


def _summary(ops: int, imported, source, pkg_dir: Path) -> None:
    """What was exported and how to use it, after the package path (stdout). Parameters are
    the model's; the weight bytes are the blob's (tuned-kernel layouts pad some tensors)."""
    used = {weight.name for weight in source.weights}
    parameters = sum(int(weight.array.size) for weight in imported.weights if weight.name in used)
    weight_bytes = sum(weight.array.nbytes for weight in source.weights)
    name = source.name
    click.echo(f"  {name} ({source.backend}): {ops} ops in {source.kernel_count} kernels, "
               f"{parameters:,} parameters in {len(source.weights)} weights "
               f"({_format_bytes(weight_bytes)})")
    click.echo(f"  build it:  cmake -S {pkg_dir} -B build-{name} -DKokkos_ROOT=<your Kokkos> "
               f"&& cmake --build build-{name}")
    click.echo("  or use it from CMake:\n"
               f"    add_subdirectory({pkg_dir})\n"
               f"    target_link_libraries(app PRIVATE {name}::{name})")


def check_precision(precision: str, backend: str, dtype: str | None) -> None:
    """--precision other than fp32: TF32 products are the CUDA tensor cores'; bfloat16 products
    are the host backends' (the packed GEMM: vdpbf16ps where the CPU has AVX512_BF16) and
    CUDA's (linear layers: wgmma on Hopper); both apply to float32 models."""
    from exporter.errors import ExportError
    from exporter.tuned_ops import HOST_BACKENDS

    if precision == "fp32":
        return
    if dtype == "float64":
        raise ExportError(f"--precision {precision}: applies to float32 models, not "
                          "--dtype float64")
    if precision == "bf16" and backend not in HOST_BACKENDS and backend != "cuda":
        raise ExportError(f"--precision bf16: only the host backends (openmp, serial, threads) "
                          f"and cuda have bfloat16 products; {backend} computes in float32",
                          hint="leave out --precision, or export for a host backend")
    if precision == "tf32" and backend != "cuda":
        raise ExportError(f"--precision {precision}: only --backend cuda has TF32 products; "
                          f"{backend} computes in float32",
                          hint="leave out --precision, or export with --backend cuda")


def check_model_precision(precision: str, loaded) -> None:
    """A model of float64 inputs computes in float64: no lower-precision products."""
    from exporter.errors import ExportError

    if precision != "fp32" and any(spec.dtype == "float64" for spec in loaded.inputs):
        raise ExportError(f"--precision {precision}: applies to float32 models; this one "
                          "computes in float64")


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
    if name in _TAKEN_NAMES or name.startswith(_TAKEN_PREFIXES) or re.match(r"_[A-Z]", name):
        raise ExportError(f"--name '{name}': is reserved or already used by the generated code",
                          hint=hint)
    if name in _CMAKE_RESERVED:
        raise ExportError(f"--name '{name}': is a reserved CMake target name", hint=hint)
    return name


def check_out(out: Path, force: bool, model: Path | None = None) -> None:
    """Refuse to clobber an existing non-empty --out unless --force (package.write replaces it),
    and say now, before the long steps, if --out cannot be written."""
    from exporter.errors import ExportError

    _check_out_writable(out)
    if force and out.exists() and model is not None:
        resolved = out.resolve()
        for inside, what in ((model, "the model file"), (Path.cwd(), "the current directory")):
            if resolved == inside.resolve() or resolved in inside.resolve().parents:
                raise ExportError(f"--out {out}: contains {what}; --force would delete it",
                                  hint="choose a new directory for the package")
    if force or not out.exists():
        return
    if not out.is_dir():
        raise ExportError(f"--out {out}: exists and is not a directory; pass --force to "
                          "replace it")
    if any(out.iterdir()):
        raise ExportError(f"--out {out}: exists and is not empty; pass --force to replace it")


def _check_weights_out(out: Path, force: bool, verify_flag: bool) -> None:
    """--weights-only writes one file: refuse a directory, and an existing file without
    --force."""
    from exporter.errors import ExportError

    if verify_flag:
        raise ExportError("--weights-only and --verify do not go together",
                          hint="--verify builds a package; export one without --weights-only")
    _check_out_writable(out)
    if out.is_dir():
        raise ExportError(f"--out {out}: is a directory; --weights-only writes a file",
                          hint="name the blob file, e.g. --out model.weights")
    if out.exists() and not force:
        raise ExportError(f"--out {out}: exists; pass --force to replace it")


def _write_blob(source, out: Path) -> int:
    """The package's weight blob (the same packing) alone, written beside `out` and moved
    into place when complete."""
    import os
    import tempfile

    from exporter.errors import ExportError
    from weights import blob

    out.absolute().parent.mkdir(parents=True, exist_ok=True)
    handle, partial = tempfile.mkstemp(prefix=f".{out.name}.partial-", dir=out.absolute().parent)
    os.close(handle)
    try:
        size = blob.write(Path(partial), source.weights)
        os.chmod(partial, 0o644)
        os.replace(partial, out)
    except blob.BlobError as exc:
        raise ExportError(exc.message, hint=exc.hint) from exc
    finally:
        if os.path.exists(partial):
            os.unlink(partial)
    return size


def _check_out_writable(out: Path) -> None:
    """The package is assembled beside --out: the nearest existing parent must be a writable
    directory."""
    import os

    from exporter.errors import ExportError

    parent = out.absolute().parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise ExportError(f"--out {out}: cannot be created ({parent} is not a directory)")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ExportError(f"--out {out}: cannot be written ({parent} is not writable)",
                          hint="choose a directory you can write to")


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
