"""Python functions as models (exporter/frontend/function.py): the `file.py:function` target,
the --input-shape extension (scalar, :DTYPE) and the one-line errors for what a user gets wrong.
End-to-end runs of exported functions are in integration_tests/test_functions.py."""
from __future__ import annotations

from pathlib import Path

import pytest

from exporter import frontend
from exporter.errors import ExportError
from exporter.frontend.function import split_target
from tests.test_cli_hardening import assert_user_error, invoke

KERNELS = '''
import torch

def axpby(a, x, b, y):
    return a * x + b * y

def scale(x, factor=2.0):
    return factor * x

def spread(*xs):
    return xs[0]

def doubles_in_place(x):
    x.mul_(2)
    return x + 1

def returns_a_float(x):
    return 3.0

NOT_A_FUNCTION = 3

class Solver:
    pass
'''


@pytest.fixture
def kernels(tmp_path) -> Path:
    path = tmp_path / "kernels.py"
    path.write_text(KERNELS)
    return path




def test_input_spec_shapes_dtypes_and_scalars():
    assert frontend.parse_input_spec("1001:int64") == ((1001,), "int64")
    assert frontend.parse_input_spec("scalar") == ((), None)
    assert frontend.parse_input_spec("scalar:float64") == ((), "float64")
    assert frontend.parse_input_spec("Nx3:float32") == ((-1, 3), "float32")
    assert frontend.parse_input_spec("1x3x224x224") == ((1, 3, 224, 224), None)   # as before
    with pytest.raises(ExportError, match="'complex64' is not a dtype"):
        frontend.parse_input_spec("4:complex64")
    with pytest.raises(ExportError, match="not a positive size"):
        frontend.parse_input_spec("scalarx2:int64")


def test_target_is_file_colon_function():
    assert split_target("solvers/cg.py:cg") == (Path("solvers/cg.py"), "cg")
    assert split_target("model.pt2") is None
    with pytest.raises(ExportError, match="needs the function to export after a colon"):
        split_target("kernels.py")


def test_function_loads_with_parameter_names_dtypes_and_scalars(kernels):
    loaded = frontend.load(Path(f"{kernels}:axpby"), [(), (5,), (), (5,)], None,
                           ["float64", None, "float64", None])
    assert loaded.kind == "function" and loaded.reference.__name__ == "axpby"
    assert [(s.name, s.dtype, s.shape) for s in loaded.inputs] == [
        ("a", "float64", ()), ("x", "float32", (5,)), ("b", "float64", ()), ("y", "float32", (5,))]
    converted = frontend.load(Path(f"{kernels}:axpby"), [(), (5,), (), (5,)], "float64")
    assert {spec.dtype for spec in converted.inputs} == {"float64"}


def test_keyword_defaults_are_not_inputs(kernels):
    loaded = frontend.load(Path(f"{kernels}:scale"), [(3,)])
    assert [spec.name for spec in loaded.inputs] == ["x"]


@pytest.mark.parametrize("target, shapes, parts", [
    ("missing.py:f", ["4"], ["missing.py: no such file"]),
    ("{k}:gemv", ["4"], ["no function 'gemv'", "it defines axpby, doubles_in_place, "
                                                "returns_a_float, scale, spread"]),
    ("{k}:doubles_in_place", ["4"], ["updates its input 'x' in place"]),
    ("{k}:returns_a_float", ["4"], ["returns a float as output 0, not a tensor"]),
    ("{k}:NOT_A_FUNCTION", ["4"], ["'NOT_A_FUNCTION' is a int, not a function"]),
    ("{k}:Solver", ["4"], ["'Solver' is a class, not a function"]),
    ("{k}:axpby", ["4", "4"], ["takes 4 argument(s) (a, x, b, y) but 2 --input-shape given"]),
    ("{k}:axpby", [], ["needs --input-shape for each of its 4 argument(s)"]),
    ("{k}:spread", ["4"], ["takes *xs"]),
    ("{k}", ["4"], ["a Python file needs the function to export after a colon"]),
    ("{k}:axpby", ["scalar:int8", "4", "scalar", "4"], ["'int8' is not a dtype"]),
])
def test_mistakes_are_one_line(kernels, tmp_path, target, shapes, parts):
    options = [item for shape in shapes for item in ("--input-shape", shape)]
    result = invoke(target.format(k=kernels), *options, "--out", tmp_path / "pkg")
    assert_user_error(result, *parts)
    assert not (tmp_path / "pkg").exists()


def test_failing_import_names_the_line(tmp_path):
    path = tmp_path / "broken.py"
    path.write_text("import torch\n\nx = 1 / 0\n\ndef f(x):\n    return x\n")
    assert_user_error(invoke(f"{path}:f", "--input-shape", "4", "--out", tmp_path / "pkg"),
                      "importing it failed (line 3): ZeroDivisionError")


def test_a_failing_trace_is_one_line(tmp_path):
    path = tmp_path / "shapes.py"
    path.write_text("def f(A, x):\n    return A @ x\n")
    assert_user_error(invoke(f"{path}:f", "--input-shape", "3x4", "--input-shape", "5",
                             "--out", tmp_path / "pkg"), "torch.export of f failed")


def test_a_dtype_for_a_model_file_is_refused(tmp_path):
    import torch
    path = tmp_path / "m.pt2"
    torch.export.save(torch.export.export(torch.nn.ReLU(), (torch.randn(2),)), path)
    assert_user_error(invoke(path, "--input-shape", "2:float64", "--out", tmp_path / "pkg"),
                      "a dtype in --input-shape is for Python functions")


def test_default_name_is_the_function_name(kernels, tmp_path):
    result = invoke(f"{kernels}:axpby", *["--input-shape", "scalar", "--input-shape", "3"] * 2,
                    "--out", tmp_path / "pkg", "-q")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "pkg" / "include" / "axpby.hpp").exists()
