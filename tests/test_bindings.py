"""The C header and Fortran module rendered from a model's TensorSpecs (exporter/package/bindings.py):
their text, and that C and Fortran compilers accept them."""
from __future__ import annotations

import shutil
import subprocess

import pytest

from exporter.package import bindings
from exporter.handoff import TensorSpec

INPUTS = [TensorSpec("x", "input0", "float32", (2, 3, 5)),
          TensorSpec("steps", "input1", "int64", ())]
OUTPUTS = [TensorSpec("y", "output0", "float64", (2, 7)),
           TensorSpec("mask", "output1", "bool", (4,))]


def test_c_header_declares_the_api_and_shapes():
    header = bindings.c_header("net", INPUTS, OUTPUTS, "net.pt2")
    assert ("int net_forward_host(const float* input0, const int64_t* input1, double* output0, "
            "uint8_t* output1);") in header
    assert "static const int64_t net_input0_extents[3] = {2, 3, 5};" in header
    assert "#define net_input0_size ((int64_t)30)" in header
    assert "#define net_input1_rank 0" in header and "net_input1_extents" not in header
    assert "#define net_output1_size ((int64_t)4)" in header


def test_fortran_module_reverses_the_extents():
    module = bindings.fortran_module("net", INPUTS, OUTPUTS, "net.pt2")
    assert "integer, parameter, public :: net_input0_shape(3) = [5, 3, 2]" in module
    assert "real(c_float), intent(in) :: input0(5, 3, 2)" in module
    assert "integer(c_int64_t), intent(in) :: input1\n" in module
    assert "real(c_double), intent(out) :: output0(7, 2)" in module
    assert "integer(c_int8_t), intent(out) :: output1(4)" in module
    assert 'bind(C, name="net_forward_host")' in module


@pytest.mark.parametrize("name", ["_net", "n" * 60])
def test_no_binding_where_it_cannot_be_spelled(name):
    inputs = [TensorSpec("x", "input0", "float32", (2, 3))]
    assert bindings.fortran_module(name, inputs, OUTPUTS, "net.pt2") is None


def test_fortran_module_takes_the_models_order_in_net_forward():
    module = bindings.fortran_module("net", INPUTS, OUTPUTS, "net.pt2")
    forward = module[module.index("function net_forward("):module.index("end function net_forward\n")]
    assert 'bind(C, name="net_forward_host_colmajor")' in forward
    assert "real(c_float), intent(in) :: input0(2, 3, 5)" in forward
    assert "real(c_double), intent(out) :: output0(2, 7)" in forward


# A dynamic batch shared by the input and the output.
DYNAMIC_INPUTS = [TensorSpec("x", "input0", "float32", (-1, 3), ("s0", None))]
DYNAMIC_OUTPUTS = [TensorSpec("y", "output0", "float32", (-1, 7), ("s0", None))]


def test_dynamic_bindings_take_the_sizes_first():
    header = bindings.c_header("net", DYNAMIC_INPUTS, DYNAMIC_OUTPUTS, "net.pt2")
    assert "int net_forward_host(int64_t input0_extent0, const float* input0, float* output0);" \
        in header
    assert "static const int64_t net_input0_extents[2] = {-1, 3};" in header
    assert "net_input0_size" not in header
    module = bindings.fortran_module("net", DYNAMIC_INPUTS, DYNAMIC_OUTPUTS, "net.pt2")
    assert "integer(c_int64_t), value :: input0_extent0" in module
    assert "real(c_float), intent(in) :: input0(input0_extent0, 3)" in module   # net_forward
    assert "real(c_float), intent(out) :: output0(input0_extent0, 7)" in module
    assert "real(c_float), intent(in) :: input0(3, input0_extent0)" in module   # forward_host
    assert "real(c_float), intent(out) :: output0(7, input0_extent0)" in module


def compile_check(compiler: str, flags: list[str], path) -> None:
    if shutil.which(compiler) is None:
        pytest.fail(f"{compiler} not found: install it (bash scripts/test.sh does)",
                    pytrace=False)
    result = subprocess.run([compiler, *flags, str(path)], capture_output=True, text=True,
                            cwd=path.parent)
    assert result.returncode == 0, result.stderr


def test_c_compiler_accepts_the_header(tmp_path):
    (tmp_path / "net.h").write_text(bindings.c_header("net", INPUTS, OUTPUTS, "net.pt2"))
    (tmp_path / "use.c").write_text('#include "net.h"\n#include "net.h"\n'
                                    "int main(void) { return (int)net_input0_size - 30; }\n")
    compile_check("cc", ["-std=c99", "-Wall", "-Wextra", "-Werror", "-fsyntax-only"],
                  tmp_path / "use.c")


def test_fortran_compiler_accepts_the_module(tmp_path):
    path = tmp_path / "net_mod.f90"
    path.write_text(bindings.fortran_module("net", INPUTS, OUTPUTS, "net.pt2"))
    compile_check("gfortran", ["-std=f2018", "-Wall", "-Wextra", "-Werror", "-fsyntax-only"],
                  path)


def test_compilers_accept_the_dynamic_bindings(tmp_path):
    (tmp_path / "net.h").write_text(bindings.c_header("net", DYNAMIC_INPUTS, DYNAMIC_OUTPUTS,
                                                      "net.pt2"))
    (tmp_path / "use.c").write_text('#include "net.h"\n'
                                    "int main(void) { return (int)net_input0_extents[1] - 3; }\n")
    compile_check("cc", ["-std=c99", "-Wall", "-Wextra", "-Werror", "-fsyntax-only"],
                  tmp_path / "use.c")
    path = tmp_path / "net_mod.f90"
    path.write_text(bindings.fortran_module("net", DYNAMIC_INPUTS, DYNAMIC_OUTPUTS, "net.pt2"))
    compile_check("gfortran", ["-std=f2018", "-Wall", "-Wextra", "-Werror", "-fsyntax-only"],
                  path)
