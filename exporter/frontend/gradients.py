"""Derivatives at export: `--grad energy:positions` adds the gradient of an output with respect
to an input to the model's outputs, as ops of the graph (nothing differentiates at run time).

The loaded program runs once more under PyTorch's autograd, traced by make_fx into one ATen
graph of the forward and its backward (the joint graph: what the backward reads of the forward
is the forward's own values, not a recomputation); that graph is exported again and goes on
through import, lowering and emit like any model. `trace_program` is the same tracing for a
Python function that torch.export cannot take because it calls torch.autograd.grad or a
torch.func transform itself.
"""
from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Iterator
from pathlib import Path

from ..errors import ExportError
from ..handoff import LoadedModel
from .torch_program import (FLOAT_DTYPES, export_program, extent_in_range,
                            input_specs, quiet_torch, torch_errors)

# Sizes of dynamic dimensions while tracing: primes, not 4 (EXAMPLE_EXTENT), since a size that
# is a product of static ones (4 = 2 x 2 under vmap of a 2-d Hessian) lets make_fx mistake one
# for the other and fix it.
TRACE_EXTENTS = (7, 11, 13, 17, 19, 23, 29, 31, 37, 41, 43, 47, 53, 59, 61, 67, 71, 73, 79)

GRAD_HINT = ("--grad OUTPUT:INPUT, e.g. --grad energy:positions or --grad 0:x (an output's "
             "index or name, an input's name or index); repeat for more")


@dataclasses.dataclass(frozen=True)
class GradientRequest:
    output: int        # index among the model's outputs
    input: int         # index among its inputs
    name: str          # the gradient output's name: d_energy_d_positions


def add_gradients(model: LoadedModel, requests: list[str]) -> LoadedModel:
    """`model` whose outputs are followed by one gradient per request ("OUTPUT:INPUT"): the
    gradient of that output (summed, when it is not a scalar) with respect to that input."""
    if model.kind == "onnx":
        raise ExportError(f"{model.path}: --grad differentiates PyTorch models (.pt2, "
                          "TorchScript, file.py:function), not ONNX graphs",
                          hint="export the PyTorch model itself")
    import torch

    module = model.program.module()
    sample = _sample(model)
    with torch.no_grad():
        outputs = _flat(module(*sample))
    output_names = _output_names(model, outputs)
    parsed = [_parse(text, model, outputs, output_names) for text in requests]
    joint = _joint(module, parsed)
    label = str(model.path)
    shapes = [spec.shape for spec in model.inputs]
    state = {**dict(module.named_parameters()), **dict(module.named_buffers())}
    program = trace_program(joint, sample, shapes, label, "differentiating", state)
    names = [*output_names, *(request.name for request in parsed)]
    inputs = [dataclasses.replace(spec, name=old.name)
              for spec, old in zip(input_specs(model.path, program), model.inputs)]
    return dataclasses.replace(model, program=program, inputs=inputs, output_names=names,
                               reference=_reference(model.reference or module, parsed))


def trace_program(function: Callable, sample: tuple, shapes: list[tuple[int, ...]],
                  label: str, doing: str, state: dict | None = None,
                  known: dict[str, object] | None = None):
    """torch.export of `function(state, *inputs)` after make_fx has traced it into plain ATen
    ops (autograd and torch.func transforms included). `state` (name -> parameter or buffer)
    become the program's weights under the same names, and so do the tensors the function
    reads from `known` (name -> a module, a dict of tensors or a tensor: the function's
    globals); the dimensions that are -1 in `shapes` stay dynamic."""
    import torch
    from torch.fx.experimental import _config as fx_config
    from torch.fx.experimental.proxy_tensor import make_fx

    state = dict(state or {})
    dynamic = any(extent < 0 for shape in shapes for extent in shape)
    with torch_errors(Path(label), f"{doing} failed"), quiet_torch(), \
            fx_config.patch(use_duck_shape=False), _reverse_mode_jacobians():
        mode = "symbolic" if dynamic else "fake"
        traced = make_fx(function, tracing_mode=mode, record_module_stack=True,
                         _allow_non_fake_inputs=True)(state, *sample)
        # The derivative ops decomposed in a second trace of the plain graph: decomposing
        # inside functorch's transforms fixes dynamic sizes (tanh_backward under vmap).
        traced = make_fx(traced, decomposition_table=_backward_decompositions(),
                         tracing_mode=mode, record_module_stack=True,
                         _allow_non_fake_inputs=True)(state, *sample)
        module = _weights_as_attributes(traced, state, known or {})
    try:
        with quiet_torch():
            return export_program(module, sample, shapes)
    except Exception as exc:  # torch.export raises many types
        if "specialized it to be a constant" in str(exc):
            raise ExportError(f"{label}: {doing} fixes a dynamic dimension to the size it was "
                              "traced at (torch.func.vmap can)",
                              hint="give that input a fixed size in --input-shape, or take the "
                              "derivatives with torch.autograd.grad over the whole batch") \
                from exc
        with torch_errors(Path(label), f"{doing} failed"):
            raise


@contextlib.contextmanager
def _reverse_mode_jacobians() -> Iterator[None]:
    """torch.func.jacfwd (and hessian, which is jacfwd over jacrev) as jacrev while tracing: the
    same Jacobian, but forward-mode AD's zero tensors make make_fx fix a dynamic batch size
    to the sample's."""
    import torch
    import torch._functorch.eager_transforms as transforms

    def jacfwd(func, argnums=0, has_aux=False, *, randomness="error"):
        return transforms.jacrev(func, argnums, has_aux=has_aux)

    saved = transforms.jacfwd, torch.func.jacfwd
    transforms.jacfwd = torch.func.jacfwd = jacfwd
    try:
        yield
    finally:
        transforms.jacfwd, torch.func.jacfwd = saved


def _backward_decompositions() -> dict:
    """ATen's decompositions of the derivative ops (silu_backward, slice_backward, ...) into
    ops torch-mlir lowers; forward ops stay as they are for the importer's own rewrites."""
    import torch
    from torch._decomp import core_aten_decompositions

    table = {op: rule for op, rule in core_aten_decompositions().items()
             if "backward" in str(op)}
    table[torch.ops.aten.avg_pool2d_backward.default] = _avg_pool2d_backward
    table[torch.ops.aten.max_pool2d_with_indices_backward.default] = _max_pool2d_backward
    return table


def _avg_pool2d_backward(grad, input, kernel_size, stride, padding, ceil_mode,
                         count_include_pad, divisor_override=None):
    """Each output's gradient spread evenly over its window: a transposed convolution with a
    constant filter (windows counting their padding, as nn.AvgPool2d does)."""
    import torch

    kernel = list(kernel_size) * (2 // len(kernel_size))
    stride = list(stride or kernel) * (2 // len(stride or kernel))
    padding = list(padding) * (2 // len(padding))
    if (not count_include_pad and any(padding)) or ceil_mode:
        raise ExportError("the derivative of avg_pool2d with ceil_mode=True or "
                          "count_include_pad=False is not supported yet")
    divisor = divisor_override or kernel[0] * kernel[1]
    weight = torch.full((1, 1, *kernel), 1.0 / divisor, dtype=grad.dtype, device=grad.device)
    # Every channel of every sample an image of one channel (torch-mlir lowers no grouped
    # transposed convolution).
    flat = grad.reshape(-1, 1, *grad.shape[-2:])
    extra = [input.shape[-2 + i] + 2 * padding[i] - ((grad.shape[-2 + i] - 1) * stride[i]
                                                     + kernel[i]) for i in range(2)]
    result = torch.nn.functional.conv_transpose2d(flat, weight, stride=stride,
                                                  padding=padding, output_padding=extra)
    return result.reshape(input.shape)


def _max_pool2d_backward(grad, input, kernel_size, stride, padding, dilation, ceil_mode,
                         indices):
    """Each output's gradient added to the input element its maximum came from."""
    import torch

    planes = input.shape[:-2].numel() if input.dim() > 2 else 1
    flat_grad = grad.reshape(planes, -1)
    flat_indices = indices.reshape(planes, -1)
    result = torch.zeros(planes, input.shape[-2] * input.shape[-1], dtype=grad.dtype,
                         device=grad.device).scatter_add(1, flat_indices, flat_grad)
    return result.reshape(input.shape)


def _weights_as_attributes(traced, state: dict, known: dict):
    """The traced graph as a module whose only inputs are the model's: the `state` inputs and
    the tensors make_fx kept as constants become its parameters and buffers, named after
    `state` and `known` where they come from there."""
    import torch

    graph = traced.graph
    root = torch.nn.Module()
    placeholders = [node for node in graph.nodes if node.op == "placeholder"]
    for node, name in zip(placeholders, state):   # make_fx flattens the dict in its order
        _register(root, name, state[name])
        with graph.inserting_before(node):
            attribute = graph.get_attr(name)
        attribute.meta = dict(node.meta)
        node.replace_all_uses_with(attribute)
        graph.erase_node(node)
    names = _tensor_names(known)
    taken = set(state)
    for node in list(graph.nodes):
        if node.op != "get_attr" or node.target in state:
            continue
        tensor = getattr(traced, node.target)
        name = names.get(id(tensor), f"constant{len(taken)}")
        while name in taken and not _is_registered(root, name, tensor):
            name += "_"
        if name not in taken:
            _register(root, name, tensor)
            taken.add(name)
        node.target = name
    graph._codegen = torch.fx.graph.CodeGen()    # plain positional inputs, a tuple out
    output = next(node for node in graph.nodes if node.op == "output")
    output.args = (tuple(output.args[0]),)
    return torch.fx.GraphModule(root, graph)


def _register(root, name: str, tensor) -> None:
    import torch

    owner = root
    *path, leaf = name.split(".")
    for part in path:
        if not hasattr(owner, part):
            owner.add_module(part, torch.nn.Module())
        owner = getattr(owner, part)
    if isinstance(tensor, torch.nn.Parameter):
        owner.register_parameter(leaf, tensor)
    else:
        owner.register_buffer(leaf, tensor)


def _is_registered(root, name: str, tensor) -> bool:
    try:
        return root.get_buffer(name) is tensor
    except AttributeError:
        try:
            return root.get_parameter(name) is tensor
        except AttributeError:
            return False


def _tensor_names(known: dict) -> dict[int, str]:
    """id(tensor) -> a dotted name for it, from the modules, dicts of tensors and tensors in
    `known` (a function's globals: `net.0.weight`, `params.0.bias`)."""
    import torch

    names: dict[int, str] = {}
    for prefix, value in known.items():
        if prefix.startswith("_"):
            continue
        if isinstance(value, torch.nn.Module):
            for name, tensor in [*value.named_parameters(), *value.named_buffers()]:
                names.setdefault(id(tensor), f"{prefix}.{name}")
        elif isinstance(value, dict):
            for key, tensor in value.items():
                if isinstance(tensor, torch.Tensor) and isinstance(key, str):
                    names.setdefault(id(tensor), f"{prefix}.{key}")
        elif isinstance(value, torch.Tensor):
            names.setdefault(id(value), prefix)
    return names


def _joint(module, requests: list[GradientRequest]) -> Callable:
    """The callable make_fx traces: the model's outputs, then each requested gradient."""
    import torch

    def joint(state, *inputs):
        return _differentiate(
            lambda *tensors: torch.func.functional_call(module, state, tensors), inputs,
            requests)

    return joint


def _reference(call: Callable, requests: list[GradientRequest]) -> Callable:
    """What --verify compares with: the model under PyTorch's own autograd, eagerly."""
    def reference(*inputs):
        return tuple(value.detach() for value in _differentiate(call, inputs, requests))

    return reference


def _differentiate(call: Callable, inputs, requests: list[GradientRequest]) -> tuple:
    """call(*inputs)'s tensors, then d(output.sum())/d(input) for each request (zeros where the
    output does not depend on the input)."""
    import torch

    wanted = {request.input for request in requests}
    with torch.enable_grad():
        inputs = [tensor.detach().requires_grad_(True) if index in wanted else tensor
                  for index, tensor in enumerate(inputs)]
        outputs = _flat(call(*inputs))
        gradients = []
        for request in requests:
            source = inputs[request.input]
            found, = torch.autograd.grad(outputs[request.output].sum(), source,
                                         retain_graph=True, allow_unused=True)
            gradients.append(torch.zeros_like(source) if found is None else found)
    return (*(output.detach() for output in outputs), *gradients)


def _parse(text: str, model: LoadedModel, outputs: list, output_names: list[str]) \
        -> GradientRequest:
    import torch

    output_text, colon, input_text = text.partition(":")
    if not colon:   # "--grad positions": the model's one output
        output_text, input_text = ("0" if len(outputs) == 1 else ""), output_text
    if not output_text or not input_text:
        raise ExportError(f"--grad '{text}': expected OUTPUT:INPUT", hint=GRAD_HINT)
    output = _find(output_text, output_names)
    if output is None and len(outputs) == 1 and output_text.isidentifier():
        output = 0          # a model with one output: its name is the user's to choose
        output_names[0] = output_text
    if output is None:
        raise ExportError(f"--grad '{text}': the model has no output '{output_text}' (its "
                          f"outputs: {', '.join(output_names)})", hint=GRAD_HINT)
    inputs = [spec.name for spec in model.inputs]
    index = _find(input_text, inputs)
    if index is None:
        raise ExportError(f"--grad '{text}': the model has no input '{input_text}' (its "
                          f"inputs: {', '.join(inputs)})", hint=GRAD_HINT)
    spec = model.inputs[index]
    if spec.dtype not in FLOAT_DTYPES:
        raise ExportError(f"--grad '{text}': input '{spec.name}' is {spec.dtype}; only "
                          "floating-point inputs have gradients")
    if not torch.is_floating_point(outputs[output]):
        raise ExportError(f"--grad '{text}': output '{output_names[output]}' is "
                          f"{str(outputs[output].dtype).removeprefix('torch.')}; only "
                          "floating-point outputs have gradients")
    return GradientRequest(output=output, input=index,
                           name=f"d_{output_names[output]}_d_{spec.name}")


def _find(text: str, names: list[str]) -> int | None:
    if text in names:
        return names.index(text)
    if text.isdigit() and int(text) < len(names):
        return int(text)
    return None


def _output_names(model: LoadedModel, outputs: list) -> list[str]:
    """The outputs' names as the model gives them (keys of a returned dict, fields of a named
    tuple), else output0, output1, ..."""
    names = [f"output{i}" for i in range(len(outputs))]
    spec = getattr(getattr(model.program, "call_spec", None), "out_spec", None)
    if spec is not None and spec.type is dict and spec.num_leaves == len(outputs):
        keys = [str(key) for key in spec.context]
        if all(key.isidentifier() for key in keys):
            names = keys
    elif spec is not None and spec.type is not None and issubclass(spec.type, tuple) and \
            hasattr(spec.type, "_fields") and len(spec.type._fields) == len(outputs):
        names = list(spec.type._fields)
    return names


def _flat(value) -> list:
    import torch
    import torch.utils._pytree as pytree

    return [leaf for leaf in pytree.tree_leaves(value) if isinstance(leaf, torch.Tensor)]


def _sample(model: LoadedModel) -> tuple:
    """Inputs to trace on: one distinct prime size per dynamic size name (make_fx must not take
    two different sizes for one), none equal to a static extent; zeros for integer inputs (valid
    indices at any size), normal floats."""
    import torch

    static = {extent for spec in model.inputs for extent in spec.shape if extent > 0}
    sizes: dict[str, int] = {}
    primes = (p for p in TRACE_EXTENTS if p not in static)
    for spec in model.inputs:
        for dim, extent in enumerate(spec.shape):
            if extent < 0 and spec.symbols[dim] not in sizes:
                sizes[spec.symbols[dim]] = extent_in_range(model.program, spec.symbols[dim],
                                                           next(primes))
    generator = torch.Generator().manual_seed(0)
    sample = []
    for spec in model.inputs:
        shape = [sizes[spec.symbols[dim]] if extent < 0 else extent
                 for dim, extent in enumerate(spec.shape)]
        dtype = getattr(torch, spec.dtype)
        sample.append(torch.randn(shape, generator=generator).to(dtype)
                      if dtype.is_floating_point else torch.zeros(shape, dtype=dtype))
    return tuple(sample)
