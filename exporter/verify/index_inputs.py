"""Which dimension an integer model input indexes, so that --verify draws indices valid for it
(a random index in [0, 10) would crash the reference on a dimension of size 3).

The torch program (or ONNX graph) is followed from each integer input through ops that carry
index values unchanged (select, slice, view, expand, ...) to the ops that index with them:
index_select, x[idx], gather, scatter, index_add, embedding, ONNX Gather/Scatter. The bound is
the smallest extent indexed, as an expression of the program's sizes where it is dynamic (a
graph's node count), evaluated for the sizes of each trial.
"""
from __future__ import annotations

# Ops through which an integer tensor keeps its values (its elements move, not change).
_CARRIERS = {"select", "slice", "view", "reshape", "_unsafe_view", "flatten", "unsqueeze",
             "squeeze", "expand", "t", "transpose", "permute", "clone", "contiguous", "alias",
             "unbind", "getitem", "split", "chunk", "narrow", "repeat", "cat", "stack",
             "flip", "roll", "_to_copy", "to", "detach", "lift_fresh_copy", "reshape_as",
             "view_as", "expand_as", "movedim", "unflatten", "index_select"}
# op name -> (position of the indexed tensor, position of the dim argument or None for dim 0,
# positions where the index tensor may be). index.Tensor and index_put take a list.
_INDEXING = {"index_select": (0, 1, (2,)), "gather": (0, 1, (2,)),
             "scatter": (0, 1, (2,)), "scatter_add": (0, 1, (2,)),
             "scatter_reduce": (0, 1, (2,)), "index_add": (0, 1, (2,)),
             "index_copy": (0, 1, (2,)), "index_fill": (0, 1, (2,)),
             "index_reduce": (0, 1, (2,)), "take_along_dim": (0, 2, (1,)),
             "embedding": (0, None, (1,))}
_ONNX_INDEXING = {"Gather": (0, 1), "GatherElements": (0, 1), "ScatterElements": (0, 1)}


def index_bounds(model) -> dict[int, list]:
    """User input position -> the extents it indexes (ints, or sympy expressions of the
    program's dynamic sizes), for integer inputs used as indices."""
    if model.kind == "onnx":
        return _onnx_bounds(model.program, model.inputs)
    return _torch_bounds(model.program)


def bound_for(bounds: list, sizes: dict[str, int]) -> int | None:
    """The smallest of `bounds` for the trial's dynamic `sizes` (symbol name -> extent)."""
    values = []
    for bound in bounds:
        if isinstance(bound, int):
            values.append(bound)
            continue
        if isinstance(bound, str):     # an ONNX dim_param
            if bound in sizes:
                values.append(sizes[bound])
            continue
        try:
            values.append(int(bound.subs({symbol: sizes[str(symbol)]
                                          for symbol in bound.free_symbols})))
        except (KeyError, TypeError, ValueError):
            continue
    return min(values) if values else None


def _name(node) -> str:
    """"index_select" for aten.index_select.default, "getitem" for operator.getitem."""
    return getattr(node.target, "__name__", str(node.target)).split(".")[0]


def _extent(value, dim: int):
    """Extent `dim` of a node's tensor value: an int, or the SymInt's sympy expression."""
    import torch
    fake = value.meta.get("val") if hasattr(value, "meta") else None
    if not isinstance(fake, torch.Tensor) or fake.dim() == 0:
        return None
    size = fake.shape[dim % fake.dim()]
    return int(size) if isinstance(size, int) else size.node.expr


def _torch_bounds(program) -> dict[int, list]:
    import torch

    user_inputs = list(program.graph_signature.user_inputs)
    placeholders = {node.name: node for node in program.graph.nodes if node.op == "placeholder"}
    bounds: dict[int, list] = {}
    for position, name in enumerate(user_inputs):
        start = placeholders.get(name)
        fake = start.meta.get("val") if start is not None else None
        if not isinstance(fake, torch.Tensor) or fake.is_floating_point() or \
                fake.dtype == torch.bool:
            continue
        found, seen, frontier = [], set(), [start]
        while frontier:
            node = frontier.pop()
            for user in node.users:
                if user in seen:
                    continue
                seen.add(user)
                found += _indexed_extents(user, node)
                if _name(user) in _CARRIERS and _carries(user, node):
                    frontier.append(user)
        if found:
            bounds[position] = found
    return bounds


def _carries(user, node) -> bool:
    """index_select carries values only through its index argument (a gather of indices);
    the other carriers through their first tensor argument (or a list of them)."""
    args = list(user.args)
    if _name(user) == "index_select":
        return len(args) > 2 and args[2] is node and args[0] is not node
    first = args[0] if args else None
    return first is node or (isinstance(first, (list, tuple)) and node in first)


def _indexed_extents(user, node) -> list:
    """The extents `user` indexes with `node`'s values."""
    name, args = _name(user), list(user.args)
    if name in _INDEXING:
        source, dim_at, index_at = _INDEXING[name]
        if not any(position < len(args) and args[position] is node for position in index_at):
            return []
        dim = args[dim_at] if dim_at is not None and dim_at < len(args) else 0
        extent = _extent(args[source], dim if isinstance(dim, int) else 0)
        return [] if extent is None else [extent]
    if name in ("index", "index_put") and len(args) > 1 and isinstance(args[1], (list, tuple)):
        return [extent for dim, entry in enumerate(args[1]) if entry is node
                for extent in [_extent(args[0], dim)] if extent is not None]
    return []


def _onnx_bounds(model, inputs) -> dict[int, list]:
    """ONNX: Gather/GatherElements/ScatterElements on their data input's static extents,
    followed through Reshape/Squeeze/Unsqueeze/Slice/Cast/Flatten/Transpose/Concat."""
    carriers = {"Reshape", "Squeeze", "Unsqueeze", "Slice", "Cast", "Flatten", "Transpose",
                "Identity", "Expand", "Concat", "Split", "Gather"}
    graph = model.graph
    shapes = {value.name: [d.dim_value if d.HasField("dim_value") else d.dim_param or None
                           for d in value.type.tensor_type.shape.dim]
              for value in [*graph.input, *graph.value_info, *graph.output]}
    shapes.update({tensor.name: list(tensor.dims) for tensor in graph.initializer})
    consumers: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    bounds: dict[int, list] = {}
    for position, spec in enumerate(inputs):
        if spec.dtype not in ("int64", "int32"):
            continue
        found, seen, frontier = [], set(), [spec.name]
        while frontier:
            value = frontier.pop()
            for node in consumers.get(value, []):
                if id(node) in seen:
                    continue
                seen.add(id(node))
                if node.op_type in _ONNX_INDEXING and list(node.input).index(value) == \
                        _ONNX_INDEXING[node.op_type][1]:
                    axis = next((a.i for a in node.attribute if a.name == "axis"), 0)
                    data = shapes.get(node.input[0]) or []
                    if data and data[axis % len(data)] is not None:
                        found.append(data[axis % len(data)])
                if node.op_type in carriers and (node.op_type != "Gather" or
                                                 list(node.input).index(value) == 0):
                    frontier += list(node.output)
        if found:
            bounds[position] = found
    return bounds
