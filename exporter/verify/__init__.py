"""Verify stage (optional, after package): build the package as a shared library, call it
through its C API with ctypes on a seeded random input, and compare with the reference model:
PyTorch for PyTorch models and Python functions, onnx.reference for ONNX models.
"""
from __future__ import annotations

import ctypes
import json
import math
import os
import re
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import linalg, sparse
from ..errors import ExportError, InternalError
from ..frontend.torch_program import extent_in_range
from ..handoff import LoadedModel
from . import index_inputs

# manifest dtype -> (ctypes element type, NumPy dtype); bool travels as uint8_t in the C API.
ELEMENT_TYPES = {"float32": (ctypes.c_float, np.float32), "float64": (ctypes.c_double, np.float64),
                 "int64": (ctypes.c_int64, np.int64), "int32": (ctypes.c_int32, np.int32),
                 "bool": (ctypes.c_uint8, np.bool_)}
BUILD_JOBS = 2


@dataclass
class VerifyResult:
    max_abs_error: float
    max_abs_reference: float
    relative_error: float        # max_abs_error / max_abs_reference
    passed: bool                 # relative_error <= tolerance
    build_seconds: float
    tolerance: float = 1e-4


# Sizes a dynamic dimension takes in --verify: two, so that re-planning the buffers is checked.
VERIFY_EXTENTS = (3, 5)
# Tolerance by the outputs' element type: float32, or float64 throughout.
TOLERANCES = {"float32": 1e-4, "float64": 1e-10}
# float32 models exported with --precision tf32 (the manifest's "precision"): TF32 products
# round each operand to 10 mantissa bits (2^-11 relative), about 1e-3 of a layer's output;
# bf16 to 7 (2^-8 relative), a few 1e-3 of the largest output after a few layers (PyTorch's
# own bfloat16 autocast errs as much).
PRECISION_TOLERANCES = {"fp32": 1e-4, "tf32": 5e-3, "bf16": 2e-2}


def tolerance_for(model: LoadedModel, outputs: list[dict] | None = None) -> float:
    """1e-10 for a model computing in float64 (floating-point inputs and outputs; integer ones,
    such as CSR indices, do not count), else 1e-4."""
    dtypes = {spec.dtype for spec in model.inputs} | {spec["dtype"] for spec in outputs or []}
    floats = dtypes & set(TOLERANCES)
    return TOLERANCES["float64"] if floats == {"float64"} else TOLERANCES["float32"]


def run(package_dir: Path, model: LoadedModel, tolerance: float | None = None,
        seed: int = 0, example_inputs: Path | None = None) -> VerifyResult:
    """Build `package_dir`, run it and `model` on the same seeded random inputs (or on the
    tensors of the `example_inputs` file), compare. Dynamic dimensions are run at each of
    VERIFY_EXTENTS in turn, with one loaded library. Integer inputs that index a dimension
    are drawn below its extent (index_inputs.py)."""
    import torch

    if tolerance is None:
        manifest = read_manifest(package_dir)
        tolerance = tolerance_for(model, manifest["outputs"])
        if tolerance == TOLERANCES["float32"]:
            tolerance = PRECISION_TOLERANCES[manifest.get("precision", "fp32")]
    torch.manual_seed(seed)
    dynamic = any(spec.dynamic for spec in model.inputs)
    bounds = index_inputs.index_bounds(model) if model.example_inputs is None else {}
    trials = []
    for wanted in VERIFY_EXTENTS if dynamic and example_inputs is None else (None,):
        if example_inputs is not None:
            inputs = _check_example_inputs(model, load_example_inputs(example_inputs, model),
                                           str(example_inputs))
        elif model.example_inputs is not None:   # a function's own (frontend/function.py)
            inputs = _example_inputs(model)
        else:
            inputs = _random_inputs(torch, model, wanted, bounds)
            sparse.valid_csr_inputs(model.program, inputs)   # random but valid CSR indices
            linalg.valid_matrix_inputs(model.program, inputs)   # invertible, SPD matrices
        trials.append((inputs, _reference_outputs(model, inputs)))

    with tempfile.TemporaryDirectory(prefix="lapis-verify-") as build_dir:
        start = time.perf_counter()
        library = build(package_dir, Path(build_dir))
        build_seconds = time.perf_counter() - start
        with load_module(package_dir, library) as module:
            results = [module.forward(*[t.numpy() for t in inputs]) for inputs, _ in trials]

    max_error = max_reference = 0.0
    for ours, (_, references) in zip(results, trials):
        if len(ours) != len(references):
            raise ExportError(f"the package has {len(ours)} outputs, the model "
                              f"{len(references)}")
        for index, (mine, theirs) in enumerate(zip(ours, references)):
            if mine.shape != theirs.shape:
                raise ExportError(f"output {index}: the package gives shape {list(mine.shape)}, "
                                  f"the model {list(theirs.shape)}")
            max_error = max(max_error, _max_abs_difference(mine, theirs))
            max_reference = max(max_reference, float(np.abs(theirs.astype(np.float64)).max(
                initial=0.0)))
    relative = max_error / max_reference if max_reference > 0 else max_error
    return VerifyResult(max_error, max_reference, relative, relative <= tolerance, build_seconds,
                        tolerance)


def _reference_outputs(model: LoadedModel, inputs: list) -> list[np.ndarray]:
    """The source model's outputs on `inputs` (torch tensors): PyTorch for PyTorch models,
    ONNX's reference evaluator for ONNX models."""
    import torch

    if model.kind == "onnx":
        from onnx.reference import ReferenceEvaluator
        feeds = {spec.name: tensor.numpy() for spec, tensor in zip(model.inputs, inputs)}
        try:
            return [np.asarray(r) for r in ReferenceEvaluator(model.program).run(None, feeds)]
        except Exception as exc:   # the model on inputs it does not take
            text = (str(exc).strip().splitlines() or [""])[0]
            raise ExportError(f"onnx.reference failed on the verification inputs: "
                              f"{type(exc).__name__}: {text}",
                              hint="give inputs valid for the model with --example-inputs "
                                   "FILE (a .npz of its input arrays)") from exc
    try:
        with torch.no_grad():
            # A Python function is its own reference; a model file, its exported program.
            call = model.reference if model.reference is not None else model.program.module()
            reference = call(*[tensor.clone() for tensor in inputs])
    except Exception as exc:   # the user's model on inputs it does not take
        text = (str(exc).strip().splitlines() or [""])[0]
        raise ExportError(f"the model itself failed on the verification inputs: "
                          f"{type(exc).__name__}: {text}",
                          hint="give inputs valid for the model with --example-inputs FILE "
                               "(a .pt or .npz of its input tensors)") from exc
    references = [reference] if isinstance(reference, torch.Tensor) else list(reference)
    return [r.detach().cpu().numpy() for r in references]


def build(package_dir: Path, build_dir: Path, shared: bool = True) -> Path:
    """Configure and build the package (Release) against the project's Kokkos in `build_dir`;
    returns the library's path. A failed step raises ExportError with the end of its output."""
    from kokkos_support.provision import ensure_kokkos

    name = read_manifest(package_dir)["name"]
    steps = [["cmake", "-S", str(package_dir), "-B", str(build_dir),
              "-DCMAKE_BUILD_TYPE=Release", f"-DKokkos_ROOT={ensure_kokkos()}",
              f"-DBUILD_SHARED_LIBS={'ON' if shared else 'OFF'}"],
             ["cmake", "--build", str(build_dir), "--parallel", str(BUILD_JOBS)]]
    for command in steps:
        result = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True)
        if result.returncode != 0 and "-S" in command:   # the host's CMake or Kokkos
            raise ExportError(f"configuring the package {package_dir} failed:\n"
                              f"{_last_lines(result.stdout)}")
        if result.returncode != 0:
            # The package is ours: code it does not compile is our bug, not the user's.
            log = _save_log(name, result.stdout)
            raise InternalError(f"the generated C++ for '{name}' does not compile (first "
                                f"error: {_first_error(result.stdout)})",
                                hint=f"the compiler's full log is in {log}; this is a bug in "
                                     "lapis-export, please report it with the model")
    for suffix in ((".so", ".dylib") if shared else (".a",)):
        library = Path(build_dir) / f"lib{name}{suffix}"
        if library.exists():
            return library
    raise ExportError(f"building {package_dir} produced no lib{name} library in {build_dir}")


def read_manifest(package_dir: Path) -> dict:
    return json.loads((Path(package_dir) / "lapis_manifest.json").read_text(encoding="utf-8"))


def load_module(package_dir: Path, library: Path) -> PackageModule:
    """The built `library` of the package at `package_dir`, initialized and ready to call."""
    return PackageModule(library, read_manifest(package_dir))


class PackageModule:
    """A built package called through its C API: `forward(*arrays) -> list of arrays`.
    Initializes the model (and Kokkos, if needed) on construction; close() finalizes both."""

    def __init__(self, library: Path, manifest: dict):
        self.manifest = manifest
        self.name = manifest["name"]
        self._lib = ctypes.CDLL(str(library))
        self._function("last_error").restype = ctypes.c_char_p
        self._dynamic = [(i, d) for i, spec in enumerate(manifest["inputs"])
                         for d, extent in enumerate(spec["shape"]) if extent < 0]
        forward = self._function("forward_host")
        forward.restype = ctypes.c_int
        forward.argtypes = [ctypes.c_int64] * len(self._dynamic) + [
            ctypes.POINTER(ELEMENT_TYPES[spec["dtype"]][0])
            for spec in [*manifest["inputs"], *manifest["outputs"]]]
        # Kokkos' OpenMP backend advises on stderr about OMP_PROC_BIND when it is unset.
        unset = "OMP_PROC_BIND" not in os.environ
        if unset:
            os.environ["OMP_PROC_BIND"] = "false"
        try:
            self._call("initialize")
        finally:
            if unset:
                del os.environ["OMP_PROC_BIND"]
        self._open = True

    def forward(self, *inputs: np.ndarray,
                output_shapes: list[tuple[int, ...]] | None = None) -> list[np.ndarray]:
        """Run the model on `inputs` (converted to the manifest's dtypes); returns new output
        arrays. Dynamic output extents follow the input extents of the same size name (the
        manifest's "symbols"), unless `output_shapes` gives them."""
        specs_in, specs_out = self.manifest["inputs"], self.manifest["outputs"]
        if len(inputs) != len(specs_in):
            raise ValueError(f"{self.name} takes {len(specs_in)} inputs, got {len(inputs)}")
        arrays = []
        for array, spec in zip(inputs, specs_in):
            # np.require, not np.ascontiguousarray: that one turns a 0-d array into shape (1,).
            array = np.require(array, dtype=ELEMENT_TYPES[spec["dtype"]][1], requirements="C")
            if array.ndim != len(spec["shape"]) or any(
                    e >= 0 and e != a for e, a in zip(spec["shape"], array.shape)):
                raise ValueError(f"input {spec['cname']}: shape {list(array.shape)}, "
                                 f"expected {spec['shape']} (-1: any)")
            arrays.append(array)
        sizes = {spec["symbols"][d]: array.shape[d] for array, spec in zip(arrays, specs_in)
                 for d, extent in enumerate(spec["shape"]) if extent < 0}
        shapes = output_shapes or [tuple(sizes.get(symbol, -1) if extent < 0 else extent
                                         for extent, symbol in zip(
                                             spec["shape"], spec.get("symbols") or spec["shape"]))
                                   for spec in specs_out]
        if any(d < 0 for shape in shapes for d in shape):
            raise ValueError(f"{self.name} has outputs of dynamic shape: pass output_shapes")
        outputs = [np.zeros(shape, dtype=ELEMENT_TYPES[spec["dtype"]][1])
                   for shape, spec in zip(shapes, specs_out)]
        extents = [arrays[i].shape[d] for i, d in self._dynamic]
        pointers = [array.ctypes.data_as(ctypes.POINTER(ELEMENT_TYPES[spec["dtype"]][0]))
                    for array, spec in zip([*arrays, *outputs], [*specs_in, *specs_out])]
        self._call("forward_host", *extents, *pointers)
        return outputs

    def close(self) -> None:
        if getattr(self, "_open", False):
            self._open = False
            self._call("finalize")

    def __enter__(self) -> PackageModule:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def _function(self, suffix: str):
        return getattr(self._lib, f"{self.name}_{suffix}")

    def _call(self, suffix: str, *arguments) -> None:
        code = self._function(suffix)(*arguments)
        if code != 0:
            message = (self._function("last_error")() or b"").decode(errors="replace")
            raise RuntimeError(f"{self.name}_{suffix} returned {code}: {message}")


def _example_inputs(model: LoadedModel) -> list:
    """`<function>_example_inputs()`, checked against the exported inputs' shapes and dtypes."""
    import torch

    name = getattr(model.example_inputs, "__name__", "example_inputs")
    try:
        inputs = model.example_inputs()
    except Exception as exc:   # the user's code
        raise ExportError(f"{model.path}: {name}() failed: {type(exc).__name__}: {exc}") from exc
    inputs = [inputs] if isinstance(inputs, torch.Tensor) else list(inputs)
    if len(inputs) != len(model.inputs):
        raise ExportError(f"{model.path}: {name}() returned {len(inputs)} inputs, the function "
                          f"takes {len(model.inputs)}")
    for spec, tensor in zip(model.inputs, inputs):
        dtype = str(getattr(tensor, "dtype", "")).removeprefix("torch.")
        shape = tuple(getattr(tensor, "shape", ()))
        if dtype != spec.dtype or len(shape) != len(spec.shape) or any(
                e >= 0 and e != a for e, a in zip(spec.shape, shape)):
            raise ExportError(f"{model.path}: {name}() gives '{spec.name}' as {dtype} "
                              f"{list(shape)}, the package takes {spec.dtype} {list(spec.shape)}")
    return [tensor.detach().contiguous() for tensor in inputs]


def _random_inputs(torch, model: LoadedModel, wanted: int | None, bounds: dict) -> list:
    """Seeded random inputs; dynamic sizes near `wanted`; index inputs below their bound."""
    shapes = [[extent_in_range(model.program, spec.symbols[dim], wanted) if extent < 0
               else extent for dim, extent in enumerate(spec.shape)] for spec in model.inputs]
    sizes = {spec.symbols[dim]: shape[dim] for spec, shape in zip(model.inputs, shapes)
             for dim, extent in enumerate(spec.shape) if extent < 0}
    inputs = []
    for position, (spec, shape) in enumerate(zip(model.inputs, shapes)):
        high = index_inputs.bound_for(bounds.get(position, []), sizes)
        if high is not None and high <= 0 and math.prod(shape) > 0:
            raise ExportError(f"input {position} ('{spec.name}') indexes a dimension of size "
                              f"{high}, so no valid random indices exist",
                              hint="give the inputs with --example-inputs FILE (.pt or .npz)")
        inputs.append(_random_tensor(torch, spec.dtype, shape, high))
    return inputs


def load_example_inputs(path: Path, model: LoadedModel) -> list:
    """The tensors of --example-inputs FILE: a .npz (arrays by input name, or in order) or a
    .pt of a tensor, a list/tuple of tensors or a dict by input name (weights_only)."""
    import torch

    path = Path(path)
    names = [spec.name for spec in model.inputs]
    try:
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as archive:
                keys = names if set(names) <= set(archive.files) else archive.files
                return [torch.from_numpy(archive[key]) for key in keys]
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:   # missing file, not an archive, a pickle of other objects
        raise ExportError(f"--example-inputs {path}: cannot be read: "
                          f"{(str(exc).strip().splitlines() or [type(exc).__name__])[0]}",
                          hint="save a .npz (numpy.savez) or a .pt of tensors "
                               "(torch.save((x, edge_index), FILE))") from exc
    if isinstance(loaded, torch.Tensor):
        return [loaded]
    if isinstance(loaded, dict):
        missing = [name for name in names if name not in loaded]
        if missing:
            raise ExportError(f"--example-inputs {path}: has no tensor for input "
                              f"'{missing[0]}'", hint="its keys are the inputs' names: "
                              + ", ".join(names))
        return [loaded[name] for name in names]
    return list(loaded)


def _check_example_inputs(model: LoadedModel, inputs: list, where: str) -> list:
    """Given inputs, checked against the exported inputs' count, dtypes and shapes."""
    import torch

    if len(inputs) != len(model.inputs):
        raise ExportError(f"{where}: has {len(inputs)} inputs, the model takes "
                          f"{len(model.inputs)}")
    for spec, tensor in zip(model.inputs, inputs):
        if not isinstance(tensor, torch.Tensor):
            raise ExportError(f"{where}: '{spec.name}' is a {type(tensor).__name__}, "
                              "not a tensor")
        dtype = str(tensor.dtype).removeprefix("torch.")
        shape = tuple(tensor.shape)
        if dtype != spec.dtype or len(shape) != len(spec.shape) or any(
                e >= 0 and e != a for e, a in zip(spec.shape, shape)):
            raise ExportError(f"{where}: gives '{spec.name}' as {dtype} {list(shape)}, "
                              f"the package takes {spec.dtype} {list(spec.shape)}")
    return [tensor.detach().contiguous() for tensor in inputs]


def _random_tensor(torch, dtype: str, shape, high: int | None = None):
    if dtype in ("float32", "float64"):
        return torch.randn(tuple(shape), dtype=getattr(torch, dtype))   # () for a scalar
    if dtype == "bool":
        return torch.randint(0, 2, tuple(shape)).bool()
    return torch.randint(0, max(1, high) if high is not None else 10, tuple(shape),
                         dtype=getattr(torch, dtype))


def _max_abs_difference(ours: np.ndarray, reference: np.ndarray) -> float:
    ours, reference = ours.astype(np.float64), reference.astype(np.float64)
    difference = np.atleast_1d(np.abs(ours - reference))   # 0-d arrays subtract to a scalar
    difference[np.isnan(ours) & np.isnan(reference)] = 0.0    # NaN where the model has NaN
    difference[np.isnan(difference)] = np.inf
    return float(difference.max(initial=0.0))


def _first_error(log: str) -> str:
    """The compiler's first error line, without the build directory's path."""
    for line in log.splitlines():
        if re.search(r"\berror\b", line) and not line.startswith(("make", "gmake", "ninja")):
            return re.sub(r"^\S*/(src|include)/", r"\1/", line.strip())[:300]
    return "no error line in the log"


def _save_log(name: str, log: str) -> Path:
    handle, path = tempfile.mkstemp(prefix=f"lapis-export-{name}-", suffix=".build.log")
    with os.fdopen(handle, "w", encoding="utf-8") as file:
        file.write(log)
    return Path(path)


def _last_lines(output: str, count: int = 20) -> str:
    """The end of a build log, led by its first compiler errors when they scrolled away."""
    lines = output.rstrip().splitlines()
    tail = lines[-count:]
    errors = [line for line in lines[:-count] if re.search(r"\berror\b", line)][:5]
    return "\n".join(errors + (["..."] if errors else []) + tail)
