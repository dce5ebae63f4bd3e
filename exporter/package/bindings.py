"""Language bindings of the C API, written by the package stage beside the C++ header: a C
header (include/NAME.h) and a Fortran interface module (include/NAME_mod.f90), rendered from
templates/cpp/model.h.in and templates/fortran/model_mod.f90.in with the model's TensorSpecs.
"""
from __future__ import annotations

import re

from .. import __version__, templates
from ..handoff import C_API_TYPES, TensorSpec, dynamic_extents

# dtype -> (Fortran type, iso_c_binding kind it needs). bool travels as uint8_t (C_API_TYPES);
# Fortran has no unsigned integers, so it is integer(c_int8_t) holding 0 or 1.
FORTRAN_TYPES = {"float32": ("real(c_float)", "c_float"),
                 "float64": ("real(c_double)", "c_double"),
                 "int64": ("integer(c_int64_t)", "c_int64_t"),
                 "int32": ("integer(c_int32_t)", "c_int32_t"),
                 "bool": ("integer(c_int8_t)", "c_int8_t")}
FORTRAN_NAME_LIMIT = 63   # characters in a Fortran 2003 name


def c_header(name: str, inputs: list[TensorSpec], outputs: list[TensorSpec],
             source: str) -> str:
    """include/NAME.h: the C API's prototypes and the argument shapes as constants (-1 for a
    dynamic extent, which the leading int64_t size arguments give)."""
    return templates.render("cpp/model.h.in", {
        "NAME": name, "VERSION": __version__, "SOURCE": source,
        "C_SHAPES": "\n".join(_c_shape(name, spec, role) for spec, role in _arguments(
            inputs, outputs)),
        "C_FORWARD_PARAMS": ", ".join(
            [f"int64_t {extent.cname}" for extent in dynamic_extents(inputs)]
            + [f"{'const ' if role == 'input' else ''}{C_API_TYPES[spec.dtype]}* {spec.cname}"
               for spec, role in _arguments(inputs, outputs)]),
    })


def fortran_module(name: str, inputs: list[TensorSpec], outputs: list[TensorSpec],
                   source: str) -> str | None:
    """include/NAME_mod.f90, or None when NAME cannot be spelled in Fortran (a leading
    underscore, or too long for the names the module declares). A dynamic extent is an
    integer(c_int64_t) argument before the arrays, as in the C API."""
    arguments = _arguments(inputs, outputs)
    longest = max([len("_error_message")] + [len(f"_{s.cname}_shape") for s, _ in arguments])
    if not re.fullmatch(r"[A-Za-z]\w*", name) or len(name) + longest > FORTRAN_NAME_LIMIT:
        return None
    extents = dynamic_extents(inputs)
    sizes = _size_arguments(inputs, outputs)
    kinds = sorted({"c_int"} | {FORTRAN_TYPES[s.dtype][1] for s, _ in arguments}
                   | ({"c_int64_t"} if extents else set()))
    names = [e.cname for e in extents] + [s.cname for s, _ in arguments]
    size_dummies = [f"      integer(c_int64_t), value :: {e.cname}" for e in extents]
    return templates.render("fortran/model_mod.f90.in", {
        "NAME": name, "VERSION": __version__, "SOURCE": source,
        "FORTRAN_SHAPES": "\n".join(_fortran_shape(name, spec, role)
                                    for spec, role in arguments),
        "FORTRAN_ARGS": _fortran_list(names),
        "FORTRAN_IMPORTS": ", ".join(kinds),
        "FORTRAN_DUMMIES": "\n".join(size_dummies + [
            _fortran_dummy(spec, role, sizes[spec.cname], reverse=True)
            for spec, role in arguments]),
        "FORTRAN_COLMAJOR_DUMMIES": "\n".join(size_dummies + [
            _fortran_dummy(spec, role, sizes[spec.cname], reverse=False)
            for spec, role in arguments]),
    })


def _size_arguments(inputs: list[TensorSpec], outputs: list[TensorSpec]) -> dict:
    """Per argument, per dimension: the extent as Fortran text (a literal, or the size
    argument that gives it: an output's dynamic dimension takes its input's)."""
    by_symbol: dict[str, str] = {}
    for extent in dynamic_extents(inputs):
        by_symbol.setdefault(extent.symbol, extent.cname)
    sizes = {}
    for spec, role in _arguments(inputs, outputs):
        sizes[spec.cname] = [
            str(d) if d >= 0 else
            f"{spec.cname}_extent{dim}" if role == "input" else
            by_symbol.get(spec.symbols[dim] if spec.symbols else "", "*")
            for dim, d in enumerate(spec.shape)]
    return sizes


def _arguments(inputs: list[TensorSpec], outputs: list[TensorSpec]):
    return [(s, "input") for s in inputs] + [(s, "output") for s in outputs]


def _fortran_list(names: list[str]) -> str:
    """Argument names, continued over lines well within free form's 132 characters."""
    lines, line = [], []
    for name in names:
        if line and len(", ".join(line + [name])) > 60:
            lines.append(", ".join(line))
            line = []
        line.append(name)
    return ", &\n        ".join(lines + [", ".join(line)])


def _describe(spec: TensorSpec, role: str) -> str:
    name = spec.name.replace("*/", "* /").replace("\n", " ")
    return f"{spec.cname} ({role} '{name}'): {spec.dtype} {list(spec.shape)}"


def _c_shape(name: str, spec: TensorSpec, role: str) -> str:
    size = 1
    for extent in spec.shape:
        size *= extent
    lines = [f"/* {_describe(spec, role)}"
             + ("; -1: a dynamic extent, given at run time" if spec.dynamic else "") + " */",
             f"#define {name}_{spec.cname}_rank {len(spec.shape)}"]
    if not spec.dynamic:
        lines.append(f"#define {name}_{spec.cname}_size ((int64_t){size})")
    if spec.shape:
        lines.append(f"static const int64_t {name}_{spec.cname}_extents[{len(spec.shape)}] = "
                     f"{{{', '.join(map(str, spec.shape))}}};")
    return "\n".join(lines)


def _fortran_shape(name: str, spec: TensorSpec, role: str) -> str:
    lines = [f"  ! {_describe(spec, role)}"]
    if spec.shape:
        lines.append(f"  integer, parameter, public :: {name}_{spec.cname}_shape"
                     f"({len(spec.shape)}) = [{', '.join(map(str, reversed(spec.shape)))}]"
                     + ("  ! -1: dynamic" if spec.dynamic else ""))
    return "\n".join(lines)


def _fortran_dummy(spec: TensorSpec, role: str, sizes: list[str], reverse: bool) -> str:
    """The array argument: the model's shape reversed (NAME_forward_host: row-major memory),
    or as it is (NAME_forward: column-major memory, x(i, j) is the model's [i-1][j-1])."""
    kind = FORTRAN_TYPES[spec.dtype][0]
    intent = "in" if role == "input" else "out"
    order = list(reversed(sizes)) if reverse else sizes
    extents = f"({', '.join(order)})" if spec.shape else ""
    return f"      {kind}, intent({intent}) :: {spec.cname}{extents}"
