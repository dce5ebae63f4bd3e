"""Frontend for plain Python functions: `lapis-export kernels.py:axpby --input-shape ...`.

The file is the user's own source code, imported like any module (so it runs: unlike a model
file, which is never unpickled). The named function is wrapped in an nn.Module and traced with
torch.export on sample inputs made from --input-shape; from there on it is a model like any
other. The function itself stays the reference that --verify compares with.
"""
from __future__ import annotations

import dataclasses
import importlib.util
import inspect
import re
import sys
from pathlib import Path

from ..errors import ExportError
from ..handoff import LoadedModel
from .torch_program import (EXAMPLE_EXTENT, FLOAT_DTYPES, export_program, input_specs,
                            quiet_torch, torch_errors)

# `path/to/file.py:function`; the function name may be dotted (`Solver.step` for a staticmethod).
_TARGET = re.compile(r"(?P<file>.+\.py):(?P<function>[A-Za-z_][A-Za-z0-9_.]*)")
_HINT = "name a function in a Python file: lapis-export kernels.py:axpby --input-shape ..."
_SHAPE_HINT = ("one --input-shape per argument, in order, e.g. --input-shape scalar "
               "--input-shape 1000 --input-shape 1001:int64")
# A function may provide the inputs --verify runs it on (CSR indices must be valid, a matrix
# may have to be positive definite): a function `<name>_example_inputs()` beside it, returning
# a tuple of tensors of the --input-shape shapes and dtypes.
EXAMPLE_SUFFIX = "_example_inputs"


def split_target(text: str) -> tuple[Path, str] | None:
    """'solvers.py:cg' -> (Path('solvers.py'), 'cg'); None for anything else (a model file).
    A bare `file.py` is an error: it must say which function."""
    match = _TARGET.fullmatch(text)
    if match:
        return Path(match["file"]), match["function"]
    if text.endswith(".py"):
        raise ExportError(f"{text}: a Python file needs the function to export after a colon",
                          hint=_HINT.replace("kernels.py", text))
    return None


def load(path: Path, function_name: str, shapes: list[tuple[int, ...]] | None,
         dtypes: list[str | None], dtype: str | None = None) -> LoadedModel:
    """Import `path`, take `function_name` and export it on inputs of `shapes` / `dtypes`
    (None: float32, or `dtype` when given)."""
    function = find_function(path, function_name)
    label = f"{path}:{function_name}"
    parameters = _tensor_parameters(function, label)
    if not shapes:
        raise ExportError(f"{label}: a function needs --input-shape for each of its "
                          f"{len(parameters)} argument(s) ({', '.join(parameters)})",
                          hint=_SHAPE_HINT)
    if len(shapes) != len(parameters):
        raise ExportError(f"{label}: takes {len(parameters)} argument(s) "
                          f"({', '.join(parameters)}) but {len(shapes)} --input-shape given",
                          hint=_SHAPE_HINT)
    default = dtype or "float32"
    dtypes = [given or default for given in dtypes]
    if dtype is not None:   # --dtype converts the floating-point inputs, as for models
        dtypes = [dtype if given in FLOAT_DTYPES else given for given in dtypes]
    sample = _sample(shapes, dtypes)
    try:
        with torch_errors(path, f"torch.export of {function_name} failed"), quiet_torch():
            program = export_program(_wrap(function, len(parameters)), sample, shapes)
    except ExportError as failed:
        # torch.export refuses torch.autograd.grad and torch.func transforms over modules;
        # make_fx traces them into plain ATen ops (gradients.py). Its error is the user's only
        # if that works no better.
        from .gradients import TRACE_EXTENTS, trace_program
        traced_at = [tuple(TRACE_EXTENTS[0] if extent < 0 else extent for extent in shape)
                     for shape in shapes]
        try:
            program = trace_program(lambda state, *inputs: function(*inputs),
                                    _sample(traced_at, dtypes), shapes,
                                    str(path), f"tracing {function_name}",
                                    known=getattr(function, "__globals__", {}))
        except ExportError as traced:
            # The trace's own diagnosis when it has one, else torch.export's error.
            raise (traced if "fixes a dynamic dimension" in traced.message else failed) \
                from None
    with torch_errors(path, f"torch.export of {function_name} failed"), quiet_torch():
        _check_program(program, label, parameters)
    specs = input_specs(path, program)
    specs = [dataclasses.replace(spec, name=name) for spec, name in zip(specs, parameters)]
    examples = getattr(sys.modules.get(_module_name(path)), function_name + EXAMPLE_SUFFIX,
                       None)
    return LoadedModel(path=path, kind="function", program=program, inputs=specs,
                       source_sha256="", reference=function,
                       example_inputs=examples if callable(examples) else None)


def _check_program(program, label: str, parameters: list[str]) -> None:
    """What the trace says the function does that a package cannot: update an input in place
    (torch.export would make the new value an extra output), return something not a tensor."""
    import torch

    # torch.export keeps in-place ops as they are; functionalizing shows what they update.
    functional = program.run_decompositions({})
    mutated = functional.graph_signature.user_inputs_to_mutate
    if mutated:
        placeholders = [spec.arg.name for spec in functional.graph_signature.input_specs
                        if spec.kind.name == "USER_INPUT"]
        names = [parameters[placeholders.index(name)] for name in mutated.values()
                 if name in placeholders]
        raise ExportError(f"{label}: updates its input '{(names or ['?'])[0]}' in place; an "
                          "exported function's inputs are read-only",
                          hint="compute a new tensor and return it (x = x * 2, not x.mul_(2))")
    output = next(node for node in program.graph.nodes if node.op == "output")
    for index, value in enumerate(output.args[0]):
        fake = value.meta.get("val") if isinstance(value, torch.fx.Node) else value
        if not isinstance(fake, torch.Tensor):
            raise ExportError(f"{label}: returns a {type(fake).__name__} as output {index}, "
                              "not a tensor", hint="return tensors (or a tuple of tensors)")


def find_function(path: Path, function_name: str):
    """The callable `function_name` of the module in `path`, imported under a private name."""
    if not path.exists():
        raise ExportError(f"{path}: no such file")
    if not path.is_file():
        raise ExportError(f"{path}: is not a regular file")
    module_name = _module_name(path)
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise ExportError(f"{path}: cannot be imported as a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module          # dataclasses and pickling look modules up
    folder = str(path.resolve().parent)
    sys.path.insert(0, folder)                 # so that it can import its neighbours
    try:
        spec.loader.exec_module(module)
    except SystemExit as exc:
        raise ExportError(f"{path}: importing it called exit({exc.code})",
                          hint="guard the script part with if __name__ == '__main__':") from exc
    except Exception as exc:   # the user's code may raise anything
        where = _user_line(exc, path)
        raise ExportError(f"{path}: importing it failed{where}: {type(exc).__name__}: "
                          f"{_first_line(exc)}") from exc
    finally:
        if sys.path and sys.path[0] == folder:
            del sys.path[0]
    target = module
    for part in function_name.split("."):
        if not hasattr(target, part):
            names = sorted(name for name, value in vars(module).items()
                           if inspect.isfunction(value) and value.__module__ == module_name
                           and not name.startswith("_"))
            known = f" (it defines {', '.join(names)})" if names else " (it defines none)"
            raise ExportError(f"{path}: no function '{function_name}'{known}")
        target = getattr(target, part)
    if not callable(target):
        raise ExportError(f"{path}: '{function_name}' is a {type(target).__name__}, "
                          "not a function")
    if isinstance(target, type):
        raise ExportError(f"{path}: '{function_name}' is a class, not a function",
                          hint="export an nn.Module with torch.export.save, or name a function")
    return target


def _module_name(path: Path) -> str:
    """The private name the user's file is imported under (in sys.modules)."""
    return "_lapis_user_" + re.sub(r"\W", "_", path.stem)


def _tensor_parameters(function, label: str) -> list[str]:
    """The names of the positional parameters the inputs bind to (those without defaults)."""
    try:
        signature = inspect.signature(function)
    except (TypeError, ValueError) as exc:
        raise ExportError(f"{label}: cannot read its signature ({exc})") from exc
    names = []
    for parameter in signature.parameters.values():
        if parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
            raise ExportError(f"{label}: takes *{parameter.name}; exported functions need "
                              "named arguments, one per input")
        if parameter.default is not parameter.empty:
            continue           # keyword defaults stay Python constants of the trace
        if parameter.kind == parameter.KEYWORD_ONLY:
            raise ExportError(f"{label}: keyword-only argument '{parameter.name}' has no "
                              "default; inputs are positional")
        names.append(parameter.name)
    return names


def _sample(shapes: list[tuple[int, ...]], dtypes: list[str]) -> tuple:
    """Sample inputs to trace with: normal floats, zero integers (valid indices for any size:
    the trace does not depend on their values), False for bool."""
    import torch

    generator = torch.Generator().manual_seed(0)
    sample = []
    for shape, dtype in zip(shapes, dtypes):
        extents = [d if d > 0 else EXAMPLE_EXTENT for d in shape]
        torch_dtype = getattr(torch, dtype)
        if torch_dtype.is_floating_point:
            sample.append(torch.randn(extents, generator=generator).to(torch_dtype))
        else:
            sample.append(torch.zeros(extents, dtype=torch_dtype))
    return tuple(sample)


def _wrap(function, count: int):
    """An nn.Module whose forward takes `count` positional inputs and calls `function`: named
    parameters, not *args, so that torch.export's dynamic_shapes has one entry per input."""
    import torch

    names = ", ".join(f"input{i}" for i in range(count))
    namespace: dict = {}
    exec(f"def forward(self, {names}):\n    return self.wrapped({names})\n", namespace)

    class Function(torch.nn.Module):
        forward = namespace["forward"]

        def __init__(self):
            super().__init__()
            self.wrapped = function

    return Function()


def _user_line(exc: BaseException, path: Path) -> str:
    """' (line N)' of the innermost frame in the user's file, if there is one."""
    line = None
    traceback = exc.__traceback__
    while traceback is not None:
        if Path(traceback.tb_frame.f_code.co_filename).resolve() == path.resolve():
            line = traceback.tb_lineno
        traceback = traceback.tb_next
    if line is None and isinstance(exc, SyntaxError) and exc.lineno:
        line = exc.lineno
    return f" (line {line})" if line else ""


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
