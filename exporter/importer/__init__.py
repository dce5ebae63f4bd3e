"""Import stage: the frontend's program becomes linalg-on-tensors MLIR through torch-mlir.

Second stage of the pipeline (frontend -> importer -> lowering -> emit -> package -> verify).
PyTorch programs go through torch-mlir's FX importer here, after the rewrites that need weight
values (graph_passes.py); ONNX models through its ONNX importer (onnx_graph.py, after
onnx_rewrites.py); the CSR custom ops become calls (custom_ops.py), and an op torch-mlir cannot
lower is one error naming it (exporter/diagnostics.py).

Weights are not baked into the IR: every parameter, buffer and lifted constant stays a function
argument (in signature order, before the user inputs), and its tensor is kept here by name for
the weight blob. Op locations are named after the source module path, e.g.
`layer1.0.conv1/convolution`.
"""
from __future__ import annotations


import numpy as np
import torch
from torch.export.graph_signature import InputKind

from .. import diagnostics
from ..errors import ExportError
from ..handoff import ImportedModel, LoadedModel, TensorSpec, Weight
from ..names import c_identifier
from . import complex_ops, custom_ops, dense_passes, graph_passes

_TORCH_DTYPES = {torch.float32: "float32", torch.float64: "float64", torch.int64: "int64",
                 torch.int32: "int32", torch.bool: "bool"}


def to_linalg(model: LoadedModel, tuned_kernels: bool = True) -> ImportedModel:
    """Import `model.program` and lower it to the linalg-on-tensors backend contract.
    tuned_kernels=False (the evaluator's one-row program, whose code runs inside a host's own
    kernels) leaves scatter-adds, attention and LayerNorm to the decompositions: their tuned
    kernels are whole launches."""
    if model.kind == "onnx":
        from . import onnx_graph
        return onnx_graph.to_linalg(model)
    from torch_mlir import ir
    from torch_mlir.dialects import torch as torch_d
    from torch_mlir.extras.fx_decomp_util import get_decomposition_table
    from torch_mlir.extras.fx_importer import FxImporter

    dense_passes.dense_linalg_as_calls(model.program)
    dense_passes.recurrences_as_loops(model.program)
    graph_passes.fold_batch_norm(model.program)
    graph_passes.linear_as_conv(model.program)
    if tuned_kernels:
        dense_passes.scatter_adds_as_calls(model.program)
        dense_passes.attention_as_calls(model.program)
        dense_passes.layer_norms_as_calls(model.program)
    graph_passes.index_add_as_scatter_add(model.program)
    try:
        program = model.program.run_decompositions(
            {**get_decomposition_table(), **graph_passes.extra_decompositions()})
    except Exception as exc:  # torch raises many types for unsupported graphs
        raise ExportError(f"{model.path}: torch.export decomposition failed: "
                          f"{_first_line(exc)}") from exc
    complex_ops.to_real_pairs(program, model.path, tuned_kernels)   # complex as real pairs, FFTs

    weights = _collect_weights(program, model.path)
    outputs = _output_specs(program, model.inputs, model.output_names)

    context = ir.Context()
    torch_d.register_dialect(context)
    importer = FxImporter(context=context)
    importer._cc.__class__ = _named_locations(type(importer._cc), _weight_owners(program))
    try:
        importer.import_stateless_graph(program.graph, func_name="forward")
    except Exception as exc:
        raise ExportError(f"{model.path}: torch-mlir could not import the graph: "
                          f"{_first_line(exc)}") from exc
    module = importer.module
    calls = custom_ops.rewrite_custom_ops(module)   # tuned kernels: calls of declarations
    to_linalg = ("builtin.module(torch-backend-to-linalg-on-tensors-backend-pipeline"
                 "{allow-non-finites=true})")
    with context:
        to_linalg = custom_ops.linalg_pipeline(to_linalg) if calls else to_linalg
    for description, pipeline in (
            ("torch dialect", "builtin.module(func.func(torch-match-quantized-custom-ops), "
                              "torchdynamo-export-to-torch-backend-pipeline)"),
            ("linalg-on-tensors", to_linalg)):
        diagnostics.run_pipeline(module, pipeline, model.path, f"lowering to {description}")
    if calls:
        custom_ops.check_contract(module, model.path)
    return ImportedModel(module=module, weights=weights, inputs=model.inputs, outputs=outputs,
                         source=model)


def _collect_weights(program, path=None) -> list[Weight]:
    """Parameters, buffers and lifted constants in placeholder order, with their tensors."""
    weights: list[Weight] = []
    used_cnames: set[str] = set()
    for spec in program.graph_signature.input_specs:
        if spec.kind == InputKind.USER_INPUT:
            continue
        if spec.kind in (InputKind.PARAMETER, InputKind.BUFFER):
            tensor = program.state_dict[spec.target] if spec.target in program.state_dict \
                else program.constants[spec.target]
        elif spec.kind == InputKind.CONSTANT_TENSOR:
            tensor = program.constants[spec.target]
        elif spec.kind == InputKind.TOKEN:
            raise ExportError(f"{path}: {_effectful_op(program)} has side "
                              "effects (torch.export threads an effect token through it), "
                              "which cannot be lowered",
                              hint="compute it outside the exported module")
        else:
            raise ExportError(f"unsupported graph input kind {spec.kind.name} "
                              f"for '{spec.arg.name}'")
        tensor = tensor.detach()
        if tensor.dtype not in _TORCH_DTYPES:
            raise ExportError(f"weight '{spec.target}' has dtype {tensor.dtype}, "
                              "which is not supported", hint="float32, float64, int64, int32, "
                              "bool are supported")
        cname = c_identifier(spec.target, prefix="w")
        while cname in used_cnames:
            cname += "_"
        used_cnames.add(cname)
        # np.require keeps a 0-d tensor 0-d (np.ascontiguousarray would give it shape [1]).
        array = np.require(tensor.contiguous().cpu().numpy(), requirements="C")
        weights.append(Weight(name=spec.target, cname=cname, array=array))
    return weights


def _effectful_op(program) -> str:
    """'op aten._linalg_check_errors at 'inv'': the first op torch.export marked effectful."""
    for node in program.graph.nodes:
        if "with_effects" in str(node.target) and len(node.args) > 1:
            name = str(getattr(node.args[1], "_name", node.args[1])).replace("::", ".")
            where = _node_label(node).rpartition("/")[0]
            return f"op {name} at '{where}'" if where else f"op {name}"
    return "an op"


def _output_specs(program, inputs: list[TensorSpec],
                  names: list[str] | None = None) -> list[TensorSpec]:
    input_symbols = {symbol for spec in inputs for symbol in spec.symbols if symbol}
    output_node = next(n for n in program.graph.nodes if n.op == "output")
    specs = []
    for index, value in enumerate(output_node.args[0]):
        fake = value.meta.get("val") if isinstance(value, torch.fx.Node) else None
        if not isinstance(fake, torch.Tensor):
            raise ExportError(f"model output {index} is not a tensor",
                              hint="return tensors (or a tuple of tensors) from forward()")
        if fake.dtype not in _TORCH_DTYPES:
            raise ExportError(f"model output {index} has dtype {fake.dtype}, "
                              "which is not supported")
        shape = tuple(int(d) if isinstance(d, int) else -1 for d in fake.shape)
        symbols = tuple(None if isinstance(d, int) else str(d.node.expr) for d in fake.shape)
        for dim, symbol in enumerate(symbols):
            if symbol is not None and symbol not in input_symbols:
                raise ExportError(f"model output {index} has dimension {dim} of size {symbol}, "
                                  "which is not the size of an input dimension",
                                  hint="dynamic output sizes must equal a dynamic input size "
                                  "(e.g. the batch)")
        specs.append(TensorSpec(name=names[index] if names else value.name,
                                cname=f"output{index}",
                                dtype=_TORCH_DTYPES[fake.dtype], shape=shape,
                                symbols=symbols if -1 in shape else ()))
    return specs


def _named_locations(context_cache_class, owners: dict[str, str]):
    """A ContextCache subclass whose op locations are `module.path/op` names, which become
    kernel and buffer names in the generated C++ (torch-mlir's default is file:line)."""
    from torch_mlir import ir

    class NamedLocations(context_cache_class):
        __slots__ = ()

        def get_node_location(self, node):
            return ir.Location.name(_node_label(node, owners), context=self._c)
    return NamedLocations


def _weight_owners(program) -> dict[str, str]:
    """Placeholder name -> the module path of the parameter or buffer it is
    (`layer1.0.conv1.weight` -> `layer1.0.conv1`); root-level tensors have none."""
    return {spec.arg.name: spec.target.rpartition(".")[0]
            for spec in program.graph_signature.input_specs
            if spec.kind in (InputKind.PARAMETER, InputKind.BUFFER) and "." in spec.target}


def _node_label(node, owners: dict[str, str] | None = None) -> str:
    """`module.path/op` for an FX node: the name kernels and buffers inherit. Programs
    converted from TorchScript record no module paths; there an op that reads a module's
    weights (directly or through a view of them) takes that module's path."""
    stack = node.meta.get("nn_module_stack") or {}
    path = ""
    if stack:
        path = list(stack.values())[-1][0]
    if not path and owners:
        path = _weight_owner(node, owners) or ""
    target = getattr(node.target, "__name__", str(node.target))
    op = target.split(".")[0]
    return f"{path}/{op}" if path else op


def _weight_owner(node, owners: dict[str, str]) -> str | None:
    """The module path of the first weight `node` reads, directly or through ops that compute
    from weights alone (the view or transpose of a weight matrix)."""
    for arg in node.all_input_nodes:
        found = _weights_only(arg, owners)
        if found:
            return found
    return None


def _weights_only(node, owners: dict[str, str], depth: int = 0) -> str | None:
    """The owner of the first weight behind `node` if it is a weight or computed from weights
    alone (a few ops deep), else None."""
    if node.op == "placeholder":
        return owners.get(node.name)
    if node.op != "call_function" or depth >= 3 or not node.all_input_nodes:
        return None
    found = [_weights_only(arg, owners, depth + 1) for arg in node.all_input_nodes]
    return found[0] if all(found) else None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]
