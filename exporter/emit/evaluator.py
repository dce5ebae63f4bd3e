"""The evaluator (lapis-export --evaluator): the model at one row (frontend/rows.py, lowered
without tuned kernels) written as one thread's sequential code in `NAME::Evaluator`, which a
host's own kernels call per point (templates/cpp/evaluator.hpp.in).

kokkos.py runs it after forward()'s walk and gives it the weights (the State's Views where
forward() holds the same tensor). The handlers are forward()'s, in a kernel's context
throughout: parallel loops run sequentially and buffers are arrays local to the thread.
"""
from __future__ import annotations

import dataclasses
import math

from ..errors import ExportError
from ..handoff import CXX_TYPES, ImportedModel, TensorSpec
from .. import templates
from . import cxx_types
from .emitter import KokkosEmitter, MemrefHandle, location_label
from .handlers import _buffer_label

# Elements of one row's intermediate values a thread keeps in local arrays (its registers or
# stack: on a GPU, beyond a few thousand they spill far and make every point slow).
ROW_BUFFER_LIMIT = 4096

# Names of the Evaluator's scope that no weight or buffer may take.
_RESERVED = {"w", "weights", "evaluate", "stage", "Staged", "Weights", "unmanaged", "strided",
             "scratch", "to_scratch", "team_shmem_size", "team", "level", "count", "p",
             "Evaluator", "evaluator", "Kokkos", "lapis"}

_HINT = "export without --evaluator: forward() runs any model"


@dataclasses.dataclass
class RowWeight:
    """A weight the evaluator reads: its member `member`, filled from the State's `state`."""
    member: str
    element: str
    shape: tuple[int, ...]
    comment: str
    state: str


class RowEmitter(KokkosEmitter):
    """forward()'s emitter for the model at one row: one thread's sequential code."""

    def __init__(self, model_name: str):
        super().__init__(model_name)
        self.in_kernel = True
        self.depth = 2
        self.taken.update(_RESERVED)
        self.row_elements = 0    # elements of the local arrays

    def emit_op(self, op) -> None:
        if op.name in ("memref.alloc", "memref.alloca"):
            self.op_counts[op.name] += 1
            _row_buffer(self, op)
            return
        if op.name.startswith("lapis."):
            raise ExportError(f"--evaluator: {op.name.removeprefix('lapis.')} (from "
                              f"{location_label(op) or op.location}) has no form inside a "
                              "kernel yet", hint=_HINT)
        super().emit_op(op)


def _row_buffer(em: RowEmitter, op) -> None:
    """An intermediate value of the row: an array local to the thread, with its extents in
    the View's type (the compiler then folds every index)."""
    from torch_mlir import ir
    memref_type = ir.MemRefType(op.results[0].type)
    label = _buffer_label(op) or "buffer"
    if not memref_type.has_static_shape:
        raise ExportError(f"--evaluator: '{label}' has a size known only at run time; one "
                          "row's intermediate values must have fixed sizes", hint=_HINT)
    count = math.prod(memref_type.shape)
    if count > ROW_BUFFER_LIMIT:
        raise ExportError(f"--evaluator: one row's intermediate '{label}' holds {count} "
                          f"elements, more than the {ROW_BUFFER_LIMIT} a thread keeps in a "
                          "local array", hint=_HINT)
    em.row_elements += count
    element = cxx_types.scalar(memref_type.element_type)
    name = em.unique(label)
    em.line(f"{element} {name}_data[{max(count, 1)}];")
    em.line(f"const unmanaged<{element}{_extents(memref_type.shape)}> {name}({name}_data);")
    em.memrefs[op.results[0]] = MemrefHandle(name, name, const=False)


def _extents(shape) -> str:
    return "".join(f"[{extent}]" for extent in shape)


def emit(em: RowEmitter, row: ImportedModel, function, weights: list[RowWeight]
         ) -> dict[str, str]:
    """The fields EVALUATOR (the header's struct) and EVALUATOR_DEFINITION (evaluator() in
    the source) of the model's templates."""
    # Weights are members of `w` in evaluate(); the rows come as pointers.
    for value, handle in list(em.memrefs.items()):
        em.memrefs[value] = MemrefHandle(f"w.{handle.cname}", f"w.{handle.root}", True)
    for symbol, view in list(em.globals.items()):
        em.globals[symbol] = dataclasses.replace(view, cname=f"w.{view.cname}")
    arguments = list(function.regions[0].blocks[0].arguments)[len(row.weights):]
    specs = [*row.inputs, *row.outputs]
    for argument, spec in zip(arguments, specs):
        const = spec in row.inputs
        element = ("const " if const else "") + CXX_TYPES[spec.dtype]
        name = em.unique(f"{spec.cname}_row")
        em.line(f"const unmanaged<{element}{_extents(spec.shape)}> {name}({spec.cname});")
        em.memrefs[argument] = MemrefHandle(name, name, const=const)
    em.emit_block(function.regions[0].blocks[0])

    sizes = {spec.cname: math.prod(spec.shape[1:]) for spec in specs}
    params = ", ".join(f"{'const ' if spec in row.inputs else ''}{CXX_TYPES[spec.dtype]}* "
                       f"{spec.cname}" for spec in specs)
    names = ", ".join(spec.cname for spec in specs)
    examples = ["x", *(f"{s.cname}_row" for s in row.inputs[1:]),
                "y", *(f"{s.cname}_row" for s in row.outputs[1:])]
    fields = {
        "NAME": em.model_name,
        "FIRST_INPUT": row.inputs[0].cname, "FIRST_INPUT_TYPE": CXX_TYPES[row.inputs[0].dtype],
        "FIRST_OUTPUT": row.outputs[0].cname,
        "FIRST_OUTPUT_TYPE": CXX_TYPES[row.outputs[0].dtype],
        "EXAMPLE_ARGS": ", ".join(examples),
        "ROW_SIZES": "\n".join(_row_size(spec, spec in row.inputs, sizes[spec.cname])
                               for spec in specs),
        "ROW_PARAMS": params, "ROW_NAMES": names,
        "TEAM_ROW_ARGS": ", ".join(f"{s.cname} + p * {s.cname}_size" for s in specs),
        "ROW_BUFFER_ELEMENTS": str(em.row_elements),
        "WEIGHT_FIELDS": "\n".join(f"    {_fixed(w)} {w.member};  // {w.comment}"
                                   for w in weights),
        "STAGED_WEIGHTS": "".join(f"        {_fixed(w)}(to_scratch(team, level, {w.member})),\n"
                                  for w in weights),
        "GLOBAL_WEIGHTS": "".join(f"        {_fixed(w)}({w.member}.data()),\n" for w in weights),
        "WEIGHT_MEMBERS": "\n".join(
            f"  Kokkos::View<const {w.element}{'*' * len(w.shape)}, Kokkos::LayoutRight, "
            f"memory_space> {w.member};" for w in weights),
        "SHMEM_SIZE": "\n        + ".join(f"scratch<{w.element}>::shmem_size({math.prod(w.shape)})"
                                          for w in weights) or "0",
        "EVALUATE_BODY": "\n".join(em.lines),
    }
    definition = templates.render("cpp/evaluator.cpp.in", {
        "NAME": em.model_name,
        "FILL_MEMBERS": "\n".join(f"  model.{w.member} = state->{w.state};" for w in weights)})
    return {"EVALUATOR": templates.render("cpp/evaluator.hpp.in", fields).rstrip("\n"),
            "EVALUATOR_DEFINITION": definition.rstrip("\n")}


def _row_size(spec: TensorSpec, is_input: bool, size: int) -> str:
    row = ", ".join(str(d) for d in spec.shape[1:]) or "one element"
    return (f"  static constexpr int {spec.cname}_size = {size};  // "
            f"{'input' if is_input else 'output'} '{spec.name}': {spec.dtype} [{row}] per row")


def _fixed(weight: RowWeight) -> str:
    """The weight's View type in evaluate(): unmanaged, its extents in the type."""
    return f"unmanaged<const {weight.element}{_extents(weight.shape)}>"
