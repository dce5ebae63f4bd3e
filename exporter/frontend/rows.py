"""The model at one row, for the evaluator (lapis-export --evaluator): a model whose rows are
independent (row i of every output depends on row i of the inputs alone: MLPs, per-atom and
per-cell networks) is re-exported with a batch of one, which the emitter writes as a function
a host's own kernels call per point (emit/evaluator.py).

Independence is checked by running the model: on a batch of EXAMPLE_EXTENT rows, each row's
inputs are changed in turn and every other row of every output must stay as it was.
"""
from __future__ import annotations

import dataclasses

from ..errors import ExportError
from ..handoff import LoadedModel
from .torch_program import (EXAMPLE_EXTENT, export_program, extent_in_range, input_specs,
                            quiet_torch, torch_errors)

_HINT = "export without --evaluator: forward() does not need independent rows"


def one_row(model: LoadedModel) -> LoadedModel:
    """`model` re-exported with every input's first dimension 1, after checking that its rows
    are independent; ExportError (one line) where they are not or it has no rows."""
    import torch

    if model.kind == "onnx":
        raise ExportError(f"{model.path}: --evaluator takes PyTorch models and Python functions "
                          "(ONNX models not yet)", hint=_HINT)
    for spec in model.inputs:
        if not spec.shape:
            raise ExportError(f"--evaluator: input {spec.cname} ('{spec.name}') is a scalar; "
                              "the evaluator needs rows (a first dimension) in every input",
                              hint=_HINT)
        if -1 in spec.shape[1:]:
            raise ExportError(f"--evaluator: input {spec.cname} ('{spec.name}') has a dynamic "
                              "dimension after the first; a row's size must be fixed",
                              hint="give the row's sizes with --input-shape Nx16")
    batches = {_batch_symbol(spec) for spec in model.inputs}
    if len(batches) != 1:
        raise ExportError("--evaluator: the inputs' first dimensions differ; the evaluator "
                          "needs one row of every input per point", hint=_HINT)
    rows = extent_in_range(model.program, model.inputs[0].symbols[0]) \
        if model.inputs[0].shape[0] < 0 else model.inputs[0].shape[0]
    rows = max(rows, EXAMPLE_EXTENT) if model.inputs[0].shape[0] < 0 else rows
    module = _any_batch(model.program)
    with torch_errors(model.path, "--evaluator: running the model to check its rows failed"), \
            quiet_torch(), torch.no_grad():
        _check_rows(module, model, rows)
    shapes = [(1, *spec.shape[1:]) for spec in model.inputs]
    with torch_errors(model.path, "--evaluator: could not export the model at one row"), \
            quiet_torch():
        program = export_program(module, _inputs(model, shapes, 0), shapes)
    specs = [dataclasses.replace(spec, name=old.name)
             for spec, old in zip(input_specs(model.path, program), model.inputs)]
    return dataclasses.replace(model, program=program, inputs=specs)


def _any_batch(program):
    """The program as a module that takes other batch sizes: a program traced at a fixed
    batch checks its input shapes before running, which the rows' check and the export at one
    row must pass by (a shape baked into its ops still fails, with torch's message)."""
    module = program.module(check_guards=False)
    for key, hook in list(module._forward_pre_hooks.items()):
        if getattr(hook, "__name__", "") == "_check_input_constraints_pre_hook":
            del module._forward_pre_hooks[key]
    return module


def _batch_symbol(spec) -> object:
    return spec.symbols[0] if spec.shape[0] < 0 else spec.shape[0]


def _inputs(model: LoadedModel, shapes, seed: int) -> tuple:
    import torch

    generator = torch.Generator().manual_seed(seed)
    tensors = []
    for spec, shape in zip(model.inputs, shapes):
        dtype = getattr(torch, spec.dtype)
        if dtype.is_floating_point:
            tensors.append(torch.randn(shape, generator=generator, dtype=dtype))
        elif dtype == torch.bool:
            tensors.append(torch.randint(0, 2, shape, generator=generator).bool())
        else:
            tensors.append(torch.randint(0, 4, shape, generator=generator, dtype=dtype))
    return tuple(tensors)


def _check_rows(module, model: LoadedModel, rows: int) -> None:
    """Changing the inputs' row r changes no output row but r, for each r."""
    import torch

    shapes = [(rows, *spec.shape[1:]) for spec in model.inputs]
    base = _inputs(model, shapes, 0)
    fresh = _inputs(model, shapes, 1)
    before = _outputs(module(*base))
    for index, output in enumerate(before):
        if output.dim() == 0 or output.shape[0] != rows:
            raise ExportError(f"--evaluator: output {index} has shape {list(output.shape)}, "
                              f"not one row per input row ({rows} rows in); the evaluator "
                              "needs row-independent models", hint=_HINT)
    for row in range(rows):
        changed = [tensor.clone() for tensor in base]
        for tensor, other in zip(changed, fresh):
            tensor[row] = other[row]
        after = _outputs(module(*changed))
        for index, (old, new) in enumerate(zip(before, after)):
            others = [r for r in range(rows) if r != row]
            if not torch.allclose(old[others].double(), new[others].double(), rtol=1e-5,
                                  atol=1e-6, equal_nan=True):
                moved = next(r for r in others if not torch.allclose(
                    old[r].double(), new[r].double(), rtol=1e-5, atol=1e-6, equal_nan=True))
                raise ExportError(f"--evaluator: the model's rows are not independent (output "
                                  f"{index} row {moved} changes when only input row {row} "
                                  "does: a sum, a batch statistic or a product across rows)",
                                  hint=_HINT)


def _outputs(result) -> list:
    import torch

    if isinstance(result, torch.Tensor):
        return [result]
    return [value for value in result if isinstance(value, torch.Tensor)]
