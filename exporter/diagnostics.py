"""Unsupported-op diagnostics: MLIR pass pipelines run with their diagnostics collected, so
that an op the pipeline cannot lower is one ExportError naming it, where it came from (the
`module.path/op` location the importer gives every op) and how many others fail the same way.

Shared by the importer (torch-mlir's pipelines) and lowering (our passes); MLIR's diagnostics
never go to stderr, so a failure is one line, never a dump.
"""
from __future__ import annotations

import re
from pathlib import Path

from .errors import ExportError

# torch-mlir's own torch -> linalg conversions, without the final type conversion and contract
# check that stop at the first op left over: what is still in the torch dialect afterwards has
# no lowering.
_TORCH_TO_LINALG = ("builtin.module(func.func(convert-torch-to-tmtensor, convert-torch-to-linalg, "
                    "convert-torch-to-scf, convert-torch-to-arith, convert-torch-to-tensor))")
# Dialects torch-mlir may leave that the emitter has no handlers for.
_FOREIGN_DIALECTS = ("tm_tensor.",)
HINT = ("rewrite that part of the model with supported ops, or keep it outside the exported "
         "module")


def run_pipeline(module, pipeline: str, path: Path, doing: str) -> None:
    """Run an MLIR pass pipeline on `module`; a failure becomes one ExportError naming the op
    (and the other ops that would fail the same way) instead of MLIR's diagnostics on stderr."""
    from torch_mlir.passmanager import PassManager

    context = module.context
    diagnostics: list[tuple[str, str]] = []   # the errors' (location, message)

    def collect(diagnostic) -> bool:
        if "ERROR" in str(diagnostic.severity):
            diagnostics.append((op_location(diagnostic.location), diagnostic.message))
        return True   # handled: nothing goes to stderr (warnings and remarks neither)

    handler = context.attach_diagnostic_handler(collect)
    try:
        with context:
            # Passes may report an error without failing; have it reach the handler.
            context.emit_error_diagnostics = True
            PassManager.parse(pipeline).run(module.operation)
    except Exception as exc:
        raise _pipeline_error(module, path, doing, diagnostics, exc) from exc
    finally:
        handler.detach()


def has_foreign_ops(module) -> bool:
    return any(_is_foreign(op) for op in walk(module.operation))


def check_foreign_ops(module, path: Path) -> None:
    """Ops of a dialect the emitter does not handle left after lowering (torch-mlir's sort,
    scan, scatter, top-k are tm_tensor ops, which lowering turns into loops)."""
    found = [(op.name, op_location(op.location)) for op in walk(module.operation)
             if _is_foreign(op)]
    if found:
        raise ExportError(unsupported_message(path, found,
                                              "lapis-export cannot lower it to Kokkos yet"),
                          hint=HINT)


def _pipeline_error(module, path: Path, doing: str, diagnostics, exc) -> ExportError:
    failed = [(match.group(1), where) for where, message in diagnostics
              if (match := re.search(r"failed to legalize operation '([\w.]+)'", message))]
    if failed and failed[0][0] == "torch.operator":
        # An op the FX importer found no torch-mlir op for: every such op fails the same way.
        found = [(_operator_name(op), op_location(op.location))
                 for op in walk(module.operation) if op.name == "torch.operator"]
        return ExportError(unsupported_message(path, found or failed,
                                               "torch-mlir has no op for it"), hint=HINT)
    if failed and failed[0][0].startswith("torch."):
        # The conversion stopped at its first failure: find the others on a copy.
        found = _left_in_torch_dialect(module) or failed
        return ExportError(unsupported_message(path, found,
                                               "torch-mlir has no lowering for it to linalg"),
                           hint=HINT)
    if diagnostics:
        where, message = diagnostics[0]
        more = f" (and {len(diagnostics) - 1} more errors)" if len(diagnostics) > 1 else ""
        at = f" at '{where}'" if where else ""
        return ExportError(f"{path}: {doing} failed{at}: {message.splitlines()[0]}{more}",
                           hint=HINT)
    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return ExportError(f"{path}: {doing} failed: {first}")


def _left_in_torch_dialect(module) -> list[tuple[str, str]]:
    from torch_mlir import ir
    from torch_mlir.passmanager import PassManager

    context = module.context
    handler = context.attach_diagnostic_handler(lambda diagnostic: True)
    try:
        with context:
            copy = ir.Module.parse(module.operation.get_asm(enable_debug_info=True))
            PassManager.parse(_TORCH_TO_LINALG).run(copy.operation)
    except Exception:
        return []
    finally:
        handler.detach()
    keep = ("torch.constant.", "torch.prim.ListConstruct", "torch.vtensor.literal",
            "torch_c.", "torch.derefine")
    return [(_operator_name(op) if op.name == "torch.operator" else op.name,
             op_location(op.location)) for op in walk(copy.operation)
            if op.name.startswith("torch.") and not op.name.startswith(keep)]


def _is_foreign(op) -> bool:
    # A region's terminator is part of its op, not another one.
    return op.name.startswith(_FOREIGN_DIALECTS) and not op.name.endswith(".yield")


def unsupported_message(path: Path, found: list[tuple[str, str]], why: str) -> str:
    """'op aten.i0 at 'fc/i0' ...; 2 other unsupported ops: aten.erfinv at 'erfinv', ...'."""
    def describe(name: str, where: str) -> str:
        name = name.removeprefix("torch.")
        return f"{name} at '{where}'" if where else name
    first, others = found[0], found[1:]
    text = f"{path}: op {describe(*first)} cannot be lowered: {why}"
    if others:
        shown = ", ".join(describe(*op) for op in others[:3])
        text += (f"; {len(others)} other unsupported op{'s' if len(others) > 1 else ''}: "
                 f"{shown}{', ...' if len(others) > 3 else ''}")
    return text


def _operator_name(op) -> str:
    from torch_mlir import ir

    return ir.StringAttr(op.attributes["name"]).value


def op_location(location) -> str:
    """The name the importer gave an op ('layer1.0.conv1/convolution'), else MLIR's text."""
    text = str(location)
    match = re.search(r'loc\("([^"]*)"', text)
    if match:
        return match.group(1)
    return "" if text in ("loc(unknown)", "") else text.removeprefix("loc(").removesuffix(")")


def walk(operation):
    for region in operation.regions:
        for block in region.blocks:
            for op in block.operations:
                op = op.operation
                yield op
                yield from walk(op)
