"""Graph rewrites on the torch.export program, before torch-mlir's import (lowering work that
needs the weights' values, which the MLIR never holds): fold eval-mode batch norm into the
convolution that feeds it, and run linear layers as 1x1 convolutions (the tuned kernel); and
index_add as scatter_add, whose lowering takes an empty index."""
from __future__ import annotations

import torch

_CONVOLUTIONS = {torch.ops.aten.conv2d.default, torch.ops.aten.convolution.default,
                 torch.ops.aten.conv1d.default, torch.ops.aten.conv3d.default}


def fold_batch_norm(program) -> int:
    """Fold `batch_norm(conv(x, w, b))` (inference mode) into `conv(x, w', b')`, in place.

    w' = w * gamma / sqrt(var + eps) per output channel, b' = (b - mean) * that + beta.
    The folded bias reuses batch norm's `beta` placeholder, so the program's signature is
    unchanged; batch norm's other tensors become unused inputs. Returns the number folded.
    """
    graph = program.graph
    params = _placeholder_tensors(program)
    folded = 0
    for node in list(graph.nodes):
        if node.target != torch.ops.aten.batch_norm.default or node.args[5]:
            continue
        conv = node.args[0]
        if not (isinstance(conv, torch.fx.Node) and conv.target in _CONVOLUTIONS
                and len(conv.users) == 1 and not _is_transposed(conv)):
            continue
        weight, bias = conv.args[1], conv.args[2] if len(conv.args) > 2 else None
        gamma, beta, mean, var = node.args[1:5]
        eps = node.args[7]
        names = [weight, bias, gamma, beta, mean, var]
        if any(n is not None and (n.name not in params or len(n.users) != 1) for n in names) \
                or beta is None:
            continue
        w = params[weight.name][1]
        channels = w.shape[0]
        g = params[gamma.name][1] if gamma is not None else torch.ones(channels)
        scale = g / torch.sqrt(params[var.name][1] + eps)
        b = params[bias.name][1] if bias is not None else torch.zeros(channels)
        new_weight = (w * scale.reshape(-1, *([1] * (w.dim() - 1)))).contiguous()
        new_bias = ((b - params[mean.name][1]) * scale + params[beta.name][1]).contiguous()
        _assign(program, params[weight.name][0], new_weight)
        _assign(program, params[beta.name][0], new_bias)
        conv.args = (conv.args[0], weight, beta, *conv.args[3:]) if len(conv.args) > 2 \
            else (conv.args[0], weight, beta)
        bn_users = list(node.users)
        replacement = conv
        if len(bn_users) == 1 and bn_users[0].target is not None and \
                getattr(bn_users[0].target, "__name__", "") == "getitem":
            bn_users[0].replace_all_uses_with(replacement)
            graph.erase_node(bn_users[0])
        node.replace_all_uses_with(replacement)
        graph.erase_node(node)
        folded += 1
    if folded:
        program.graph_module.recompile()
    return folded


def linear_as_conv(program) -> int:
    """Rewrite `linear(x, w, b)` on an `x` of rank 2 or more as `conv2d(x.reshape(M, IC, 1, 1),
    w', b).view(*x.shape[:-1], OC)` (M the product of x's leading sizes: the batch of an MLP,
    batch x sequence in a transformer), with the weight stored as [OC, IC, 1, 1], in place, so
    that it runs in the tuned convolution or matrix-product kernels (no transposed copy of the
    weight per call, the bias folded in). Returns the number done."""
    graph = program.graph
    params = _placeholder_tensors(program)
    aten = torch.ops.aten
    done = 0
    for node in list(graph.nodes):
        if node.target != aten.linear.default:
            continue
        x, weight = node.args[0], node.args[1]
        bias = node.args[2] if len(node.args) > 2 else None
        x_value = x.meta.get("val") if isinstance(x, torch.fx.Node) else None
        if (x_value is None or x_value.dim() < 2 or not isinstance(weight, torch.fx.Node)
                or weight.name not in params or len(weight.users) != 1):
            continue
        target, w = params[weight.name]
        *leading, channels_in = x_value.shape
        channels_out = w.shape[0]
        _assign(program, target, w.reshape(channels_out, channels_in, 1, 1).contiguous())
        weight.meta["val"] = weight.meta["val"].reshape(channels_out, channels_in, 1, 1)
        if "tensor_meta" in weight.meta:
            from torch.fx.passes.shape_prop import _extract_tensor_metadata
            weight.meta["tensor_meta"] = _extract_tensor_metadata(weight.meta["val"])
        with graph.inserting_before(node):
            # Dynamic sizes stay symbolic: their size nodes, not the SymInts (which would be
            # printed into the graph's code as undefined names).
            sizes = []
            for dim, size in enumerate(leading):
                if not isinstance(size, int):
                    size_node = graph.call_function(aten.sym_size.int, (x, dim))
                    size_node.meta["val"] = size
                    size = size_node
                sizes.append(size)
            rows = sizes[0] if len(sizes) == 1 else -1
            image = graph.call_function(aten.reshape.default if len(sizes) > 1 else
                                        aten.view.default, (x, [rows, channels_in, 1, 1]))
            image.meta["val"] = x_value.reshape(-1, channels_in, 1, 1)
            conv = graph.call_function(aten.conv2d.default, (image, weight, bias))
            conv.meta["val"] = image.meta["val"].new_empty(
                (image.meta["val"].shape[0], channels_out, 1, 1))
            flat = graph.call_function(aten.view.default, (conv, [*sizes, channels_out]))
            flat.meta["val"] = node.meta["val"]
        _replace(graph, node, flat, (image, conv))
        done += 1
    if done:
        program.graph_module.recompile()
    return done


def index_add_as_scatter_add(program) -> int:
    """Rewrite `index_add(self, dim, index, source, alpha)` as `scatter_add(self, dim,
    index viewed along dim and expanded to source's shape, source * alpha)`, in place.

    torch-mlir lowers index_add through index_put, which broadcasts a dynamic index length E
    as max(E, 1) and so reads a row past an empty source when E = 0 (a graph with no edges
    on this rank); its scatter_add lowering has no such broadcast. Returns the number done."""
    graph = program.graph
    aten = torch.ops.aten
    done = 0
    for node in list(graph.nodes):
        if node.target != aten.index_add.default:
            continue
        self_node, dim, index, source = node.args[:4]
        alpha = node.args[4] if len(node.args) > 4 else node.kwargs.get("alpha", 1)
        source_value = source.meta.get("val") if isinstance(source, torch.fx.Node) else None
        index_value = index.meta.get("val") if isinstance(index, torch.fx.Node) else None
        if source_value is None or index_value is None or index_value.dim() != 1:
            continue
        rank = source_value.dim()
        dim = dim % rank
        shape = [1] * rank
        with graph.inserting_before(node):
            length = graph.call_function(aten.sym_size.int, (index, 0))
            length.meta["val"] = index_value.shape[0]
            shape[dim] = length
            column = graph.call_function(aten.view.default, (index, shape))
            column.meta["val"] = index_value.view([index_value.shape[0] if d == dim else 1
                                                   for d in range(rank)])
            sizes = []
            for d in range(rank):
                if isinstance(source_value.shape[d], int):
                    sizes.append(source_value.shape[d])
                else:
                    size = graph.call_function(aten.sym_size.int, (source, d))
                    size.meta["val"] = source_value.shape[d]
                    sizes.append(size)
            spread = graph.call_function(aten.expand.default, (column, sizes))
            spread.meta["val"] = column.meta["val"].expand(source_value.shape)
            if alpha != 1:
                source = graph.call_function(aten.mul.Scalar, (source, alpha))
                source.meta["val"] = source_value * alpha
            scatter = graph.call_function(aten.scatter_add.default,
                                          (self_node, dim, spread, source))
            scatter.meta["val"] = node.meta["val"]
        _replace(graph, node, scatter)
        done += 1
    if done:
        program.graph_module.recompile()
    return done


def _replace(graph, node, result, made=()) -> None:
    """`node`'s uses go to `result`, which (with the other nodes `made` for it) keeps its
    source location, the names kernels and buffers inherit; `node` goes."""
    for key in ("stack_trace", "nn_module_stack", "source_fn_stack"):
        if key in node.meta:
            for new in (*made, result):
                new.meta[key] = node.meta[key]
    node.replace_all_uses_with(result)
    graph.erase_node(node)


def _is_transposed(conv) -> bool:
    return conv.target == torch.ops.aten.convolution.default and bool(conv.args[6])


def _placeholder_tensors(program) -> dict[str, tuple[str, torch.Tensor]]:
    """placeholder name -> (state name, tensor) for parameters and buffers."""
    table = {}
    for spec in program.graph_signature.input_specs:
        if spec.target is None:
            continue
        tensor = program.state_dict.get(spec.target)
        if tensor is None and spec.target in program.constants:
            tensor = program.constants[spec.target]
        if isinstance(tensor, torch.Tensor):
            table[spec.arg.name] = (spec.target, tensor.detach())
    return table


def _assign(program, target: str, tensor: torch.Tensor) -> None:
    if target in program.state_dict:
        original = program.state_dict[target]
        value = torch.nn.Parameter(tensor, requires_grad=False) \
            if isinstance(original, torch.nn.Parameter) else tensor
        program.state_dict[target] = value
    else:
        program.constants[target] = tensor


def extra_decompositions() -> dict:
    """Decompositions beyond torch-mlir's table: aten.diagonal_scatter (the identity matrices
    that torch.func.jacrev and hessian build) as a select against a diagonal mask."""
    import torch

    return {torch.ops.aten.diagonal_scatter.default: _diagonal_scatter}


def _diagonal_scatter(input, src, offset: int = 0, dim1: int = 0, dim2: int = 1):
    import torch

    moved = torch.movedim(input, (dim1, dim2), (-2, -1))
    rows, columns = moved.shape[-2], moved.shape[-1]
    row = torch.arange(rows, device=input.device).unsqueeze(-1)
    column = torch.arange(columns, device=input.device).unsqueeze(0)
    on_diagonal = column - row == offset
    # src[..., k] is element (k - min(offset, 0), k + max(offset, 0)): index it by row.
    index = (row + min(offset, 0)).clamp(0, max(src.shape[-1] - 1, 0)).squeeze(-1)
    spread = torch.index_select(src, -1, index).unsqueeze(-1) if src.shape[-1] else \
        torch.zeros_like(moved[..., :, :1])
    result = torch.where(on_diagonal, spread.expand_as(moved), moved)
    return torch.movedim(result, (-2, -1), (dim1, dim2))
