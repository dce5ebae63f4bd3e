"""Graph rewrites on the torch.export program, before its decompositions: ops that become one
call of a tuned kernel instead of what the decompositions make of them.

- dense linear algebra (`linalg.solve`, `inv`, `det`, `cholesky`) -> the batched custom ops of
  exporter/linalg.py. Left to the decompositions, their error checks thread an effect token
  through the program; the kernels have no such check (singular matrices give inf/nan).
- recurrent layers (`aten.lstm`, `aten.gru`) -> one input projection per layer (a matrix
  product over all steps) and the recurrence as one custom op of exporter/recurrent.py,
  a loop over the steps in C++; the decompositions unroll every step into its own kernels.
- row scatter-adds (`index_add` along dimension 0, `scatter_add` / `scatter_reduce(sum)` of
  an index expanded over the rows, `index_put(accumulate=True)` of one index) -> the custom op
  of exporter/scatter.py; torch-mlir makes a sequential loop over coordinate tensors of them.
- `scaled_dot_product_attention` -> the fused attention ops of exporter/attention.py; the
  decomposition writes the whole score matrix and runs the softmax in five passes over it.
- `layer_norm` with weight and bias -> the one-kernel LayerNorm of exporter/layer_norm.py.
"""
from __future__ import annotations

import operator

import torch

from ..errors import ExportError
from .. import linalg as _linalg  # noqa: F401  (registers torch.ops.lapis.dense_*)
from .. import recurrent as _recurrent  # noqa: F401  (registers torch.ops.lapis.*_recurrence)
from .. import scatter as _scatter  # noqa: F401  (registers torch.ops.lapis.index_add)
from .. import attention as _attention  # also registers torch.ops.lapis.attention*
from .. import layer_norm as _layer_norm  # noqa: F401  (registers torch.ops.lapis.layer_norm)

aten = torch.ops.aten


def dense_linalg_as_calls(program) -> int:
    """Replace the torch.linalg ops on small matrices by lapis::dense_* calls; returns how many."""
    lapis = torch.ops.lapis
    rewrites = {
        aten.linalg_solve.default: lambda g, n: _solve(g, n, lapis.dense_solve.default),
        aten.linalg_inv.default: lambda g, n: _per_matrix(g, n, lapis.dense_inv.default),
        aten.inverse.default: lambda g, n: _per_matrix(g, n, lapis.dense_inv.default),
        aten.linalg_det.default: lambda g, n: _per_matrix(g, n, lapis.dense_det.default),
        aten.det.default: lambda g, n: _per_matrix(g, n, lapis.dense_det.default),
        aten.linalg_cholesky.default: _cholesky,
        aten.cholesky.default: _cholesky,
    }
    return _rewrite(program, rewrites)


def recurrences_as_loops(program) -> int:
    """Replace `aten.lstm.input` / `aten.gru.input` by per-layer projections and recurrence
    calls; returns how many layers' worth of nodes were replaced."""
    return _rewrite(program, {aten.lstm.input: _recurrent_layers,
                              aten.gru.input: _recurrent_layers})


def scatter_adds_as_calls(program) -> int:
    """Replace the row scatter-adds by lapis::index_add calls; returns how many. Any other
    scatter (along another dimension, of an index that differs along the row, of int32
    indices) is left to torch-mlir."""
    rewrites = {aten.index_add.default: _index_add,
                aten.scatter_add.default: _scatter_add,
                aten.scatter_reduce.two: _scatter_add,
                aten.index_put.default: _index_put}
    # A scatter that does not qualify stays as it is: its rewrite returns None.
    return _rewrite(program, rewrites)


def attention_as_calls(program) -> int:
    """Replace `scaled_dot_product_attention` by the fused attention calls where they apply;
    returns how many."""
    return _rewrite(program, {aten.scaled_dot_product_attention.default: _attention_call})


def _attention_call(graph, node):
    names = ("query", "key", "value", "attn_mask", "dropout_p", "is_causal")
    arguments = {**dict(zip(names, node.args)), **node.kwargs}
    q, k, v = arguments["query"], arguments["key"], arguments["value"]
    mask = arguments.get("attn_mask")
    causal = arguments.get("is_causal", False)
    scale = arguments.get("scale")
    if arguments.get("dropout_p", 0.0) != 0.0 or arguments.get("enable_gqa", False):
        return None
    if not all(isinstance(t, torch.fx.Node) and "val" in t.meta for t in (q, k, v)):
        return None
    qv, kv, vv = (t.meta["val"] for t in (q, k, v))
    rank = qv.dim()
    if (rank not in (3, 4) or kv.dim() != rank or vv.dim() != rank
            or len({qv.dtype, kv.dtype, vv.dtype}) != 1
            or qv.dtype not in (torch.float32, torch.float64)
            or tuple(qv.shape[:-2]) != tuple(kv.shape[:-2])
            or tuple(kv.shape[:-1]) != tuple(vv.shape[:-1]) or kv.shape[-1] != qv.shape[-1]
            or not all(isinstance(d, int) and d <= _attention.MAX_HEAD_DIM
                       for d in (qv.shape[-1], vv.shape[-1]))):
        return None
    if mask is not None:
        mv = mask.meta.get("val") if isinstance(mask, torch.fx.Node) else None
        if mv is None or causal or (mv.dtype != torch.bool and mv.dtype != qv.dtype) \
                or mv.shape[-1] != kv.shape[-2]:
            return None
        # The mask as [B|1, H|1, L|1, S]: every size 1 or the scores' own (never broadcast
        # in memory); for [B, L, D] inputs the heads' dimension is inserted.
        if mv.dim() > rank:
            return None
        # origin[d]: the mask's dimension that dimension d of the view is, None for a 1.
        origin = [None] * (rank - mv.dim()) + list(range(mv.dim()))
        scores = [*qv.shape[:-1], kv.shape[-2]]
        if rank == 3:
            origin, scores = [origin[0], None, *origin[1:]], [scores[0], 1, *scores[1:]]
        if any(o is not None and not (mv.shape[o] == 1 or mv.shape[o] == s)
               for o, s in zip(origin, scores)):
            return None
    b = _Builder(graph, node)
    if rank == 3:
        q, k, v = (b(aten.unsqueeze.default, t, 1) for t in (q, k, v))
    factor = scale if scale is not None else 1.0 / float(qv.shape[-1]) ** 0.5
    q = b(aten.mul.Tensor, q, factor)
    lapis = torch.ops.lapis
    if mask is not None:
        shape = [1 if o is None else mv.shape[o] if isinstance(mv.shape[o], int)
                 else b(aten.sym_size.int, mask, o) for o in origin]
        mask = b(aten.reshape.default, mask, shape)
        out = b(lapis.attention_masked.default, q, k, v, mask)
    else:
        out = b((lapis.attention_causal if causal else lapis.attention).default, q, k, v)
    return b(aten.squeeze.dim, out, 1) if rank == 3 else out


def layer_norms_as_calls(program) -> int:
    """Replace `layer_norm(x, shape, weight, bias, eps)` (weight and bias given) by
    lapis::layer_norm over x viewed as [rows, features]; returns how many."""
    return _rewrite(program, {aten.layer_norm.default: _layer_norm_call})


def _layer_norm_call(graph, node):
    names = ("input", "normalized_shape", "weight", "bias", "eps")
    arguments = {**dict(zip(names, node.args)), **node.kwargs}
    x, shape = arguments["input"], list(arguments["normalized_shape"])
    weight, bias = arguments.get("weight"), arguments.get("bias")
    eps = arguments.get("eps", 1e-5)
    if not all(isinstance(t, torch.fx.Node) and "val" in t.meta for t in (x, weight, bias)):
        return None
    xv = x.meta["val"]
    features = 1
    for size in shape:
        features *= size
    if (xv.dtype not in (torch.float32, torch.float64) or not shape
            or not all(isinstance(d, int) for d in shape) or xv.dim() <= len(shape)
            or list(xv.shape[-len(shape):]) != shape
            or weight.meta["val"].dtype != xv.dtype or bias.meta["val"].dtype != xv.dtype):
        return None
    b = _Builder(graph, node)
    sizes = [d if isinstance(d, int) else b(aten.sym_size.int, x, i)
             for i, d in enumerate(xv.shape)]
    rows = b(aten.reshape.default, x, [-1, features])
    out = b(torch.ops.lapis.layer_norm.default, rows, b(aten.reshape.default, weight, [features]),
            b(aten.reshape.default, bias, [features]), b(aten.new_full.default, x, [1], eps))
    return b(aten.view.default, out, sizes)


def _rows_call(graph, node, self_node, index, source, alpha=1):
    """lapis::index_add(self, index, source * alpha) where index is a 1-D int64 tensor as long
    as source and source's row shape is self's; None otherwise."""
    values = [n.meta.get("val") if isinstance(n, torch.fx.Node) else None
              for n in (self_node, index, source)]
    if any(v is None for v in values):
        return None
    self_value, index_value, source_value = values
    if (index_value.dim() != 1 or index_value.dtype != torch.int64 or self_value.dim() == 0
            or source_value.dim() != self_value.dim()
            or source_value.dtype != self_value.dtype
            or tuple(source_value.shape[1:]) != tuple(self_value.shape[1:])):
        return None
    b = _Builder(graph, node)
    if alpha != 1:
        source = b(aten.mul.Scalar, source, alpha)
    return b(torch.ops.lapis.index_add.default, self_node, index, source)


def _index_add(graph, node):
    self_node, dim, index, source = node.args[:4]
    alpha = node.args[4] if len(node.args) > 4 else node.kwargs.get("alpha", 1)
    if dim % max(self_node.meta["val"].dim(), 1) != 0:
        return None
    return _rows_call(graph, node, self_node, index, source, alpha)


def _scatter_add(graph, node):
    """scatter_add(self, 0, index, src) and scatter_reduce(self, 0, index, src, "sum"), where
    index is one 1-D index viewed as a column and expanded over src's rows."""
    self_node, dim, index, source = node.args[:4]
    if node.target == aten.scatter_reduce.two:
        reduce = node.args[4]
        include_self = node.args[5] if len(node.args) > 5 else \
            node.kwargs.get("include_self", True)
        if reduce != "sum" or not include_self:
            return None
    if dim % max(self_node.meta["val"].dim(), 1) != 0 or not isinstance(source, torch.fx.Node):
        return None
    rows = _expanded_rows(index, source)
    return None if rows is None else _rows_call(graph, node, self_node, rows, source)


def _expanded_rows(index, source):
    """The 1-D index that `index` spreads over source's rows ([E] -> [E, 1, ...] ->
    expand to source's shape), or None."""
    if source.meta["val"].dim() == 1:
        return index
    if not (isinstance(index, torch.fx.Node)
            and index.target in (aten.expand.default, aten.expand_as.default)
            and tuple(index.meta["val"].shape) == tuple(source.meta["val"].shape)):
        return None
    column = index.args[0]
    while isinstance(column, torch.fx.Node) and column.target in (
            aten.unsqueeze.default, aten.view.default, aten.reshape.default):
        base = column.args[0]
        if not isinstance(base, torch.fx.Node):
            return None
        if base.meta["val"].dim() == 1:
            shape = column.meta["val"].shape
            return base if all(s == 1 for s in shape[1:]) else None
        column = base
    return None


def _index_put(graph, node):
    """index_put(self, [index], values, accumulate=True) with one 1-D int64 index."""
    self_node, indices, values = node.args[:3]
    accumulate = node.args[3] if len(node.args) > 3 else node.kwargs.get("accumulate", False)
    if not accumulate or len(indices) != 1 or indices[0] is None:
        return None
    return _rows_call(graph, node, self_node, indices[0], values)


def _rewrite(program, rewrites) -> int:
    graph = program.graph
    done = 0
    for node in list(graph.nodes):
        rewrite = rewrites.get(node.target) if node.op == "call_function" else None
        if rewrite is None:
            continue
        with graph.inserting_before(node):
            replacement = rewrite(graph, node)
        if replacement is None:        # not a case the rewrite takes
            continue
        if isinstance(replacement, (list, tuple)):    # several results: the getitem users
            for user in list(node.users):
                if user.target is not operator.getitem:
                    raise ExportError(f"internal: unexpected use of {node.target} by {user}")
                user.replace_all_uses_with(replacement[user.args[1]])
                graph.erase_node(user)
        else:
            node.replace_all_uses_with(replacement)
        graph.erase_node(node)
        done += 1
    if done:
        graph.eliminate_dead_code()
        program.graph_module.recompile()
    return done


class _Builder:
    """Inserts aten calls before the node being replaced, each with the meta the FX importer
    reads (its fake value, computed by running the op on the inputs' fake values) and the
    replaced node's source location."""

    def __init__(self, graph, node):
        self.graph, self.node = graph, node

    def __call__(self, op, *args):
        fake_args = [a.meta["val"] if isinstance(a, torch.fx.Node) else
                     [x.meta["val"] if isinstance(x, torch.fx.Node) else x for x in a]
                     if isinstance(a, (list, tuple)) else a for a in args]
        new = self.graph.call_function(op, tuple(args))
        new.meta["val"] = op(*fake_args)
        for key in ("stack_trace", "nn_module_stack", "source_fn_stack"):
            if key in self.node.meta:
                new.meta[key] = self.node.meta[key]
        return new

    def item(self, node, index):
        value = self.graph.call_function(operator.getitem, (node, index))
        value.meta["val"] = node.meta["val"][index]
        for key in ("stack_trace", "nn_module_stack"):
            if key in self.node.meta:
                value.meta[key] = self.node.meta[key]
        return value


def _shape(node) -> tuple:
    return tuple(node.meta["val"].shape)


def _as_batch(b: _Builder, node, dims: int):
    """A [..., r, c] node as [batch, r, c] (`dims` = 2), or [..., r] as [batch, r] (1); and how
    to undo it on a result whose trailing shape is `tail`."""
    shape = _shape(node)
    batch = shape[:len(shape) - dims]
    if len(batch) == 1:
        return node, lambda result, tail: result
    if not batch:
        return b(aten.unsqueeze.default, node, 0), \
            lambda result, tail: b(aten.squeeze.dim, result, 0)
    if any(not isinstance(d, int) for d in batch[1:]):
        raise ExportError(f"{node.target}: only the first of several batch dimensions may be "
                          f"dynamic (got {list(shape)})")
    flat = b(aten.reshape.default, node, [-1, *shape[len(batch):]])
    sizes = [_size(b, node, 0) if not isinstance(batch[0], int) else batch[0], *batch[1:]]
    return flat, lambda result, tail: b(aten.reshape.default, result, [*sizes, *tail])


def _size(b: _Builder, node, dim: int):
    return b(aten.sym_size.int, node, dim)


def _per_matrix(graph, node, op):
    b = _Builder(graph, node)
    A = node.args[0]
    flat, restore = _as_batch(b, A, 2)
    result = b(op, flat)
    return restore(result, _shape(result)[1:])


def _cholesky(graph, node):
    b = _Builder(graph, node)
    A = node.args[0]
    upper = node.kwargs.get("upper", node.args[1] if len(node.args) > 1 else False)
    flat, restore = _as_batch(b, A, 2)
    result = b(torch.ops.lapis.dense_cholesky.default, flat)
    if upper:
        result = b(aten.transpose.int, result, 1, 2)
    return restore(result, _shape(result)[1:])


def _solve(graph, node, op):
    b = _Builder(graph, node)
    A, B = node.args[:2]
    left = node.kwargs.get("left", node.args[2] if len(node.args) > 2 else True)
    a_shape, b_shape = _shape(A), _shape(B)
    # torch.linalg.solve's rule: B is a batch of vectors when it has one dimension fewer
    # than A and A's shape without its last dimension.
    vector = B.meta["val"].dim() == 1 or (len(b_shape) == len(a_shape) - 1
                                          and b_shape == a_shape[:-1])
    if vector:
        B = b(aten.unsqueeze.default, B, -1 if left else -2)
    if not left:                  # X A = B  <=>  A^T X^T = B^T
        A, B = b(aten.transpose.int, A, -2, -1), b(aten.transpose.int, B, -2, -1)
    a_shape, b_shape = _shape(A), _shape(B)
    batch = a_shape[:-2] if a_shape[:-2] == b_shape[:-2] else \
        tuple(torch.broadcast_shapes(a_shape[:-2], b_shape[:-2]))
    if a_shape[:-2] != batch:
        A = b(aten.expand.default, A, [*batch, *a_shape[-2:]])
    if b_shape[:-2] != batch:
        B = b(aten.expand.default, B, [*batch, *b_shape[-2:]])
    A, restore = _as_batch(b, A, 2)
    B, _ = _as_batch(b, B, 2)
    X = restore(b(op, A, B), b_shape[-2:])
    if not left:
        X = b(aten.transpose.int, X, -2, -1)
    if vector:
        X = b(aten.squeeze.dim, X, -1 if left else -2)
    return X


def _recurrent_layers(graph, node):
    """aten.lstm.input(x, [h0, c0], params, has_biases, layers, dropout, train, bidirectional,
    batch_first), or aten.gru.input(x, h0, params, ...): per layer and direction the input
    projection x W_ih^T + b_ih over all steps, then the recurrence (which adds b_hh);
    returns (output, h_n[, c_n])."""
    lstm = node.target == aten.lstm.input
    x, hx, params, has_biases, layers, _dropout, train, bidirectional, batch_first = node.args
    what = "nn.LSTM" if lstm else "nn.GRU"
    if train:
        raise ExportError(f"{what} in training mode (dropout between layers) cannot be exported",
                          hint="call model.eval() before exporting")
    per_layer = 4 if has_biases else 2
    directions = 2 if bidirectional else 1
    if len(params) != per_layer * layers * directions:
        raise ExportError(f"{what} with projections (proj_size) is not supported")
    b = _Builder(graph, node)
    h0 = hx[0] if lstm else hx
    c0 = hx[1] if lstm else None
    unbatched = x.meta["val"].dim() == 2
    if unbatched:                  # [T, I] and states [layers * directions, H]
        x = b(aten.unsqueeze.default, x, 0)
        h0 = b(aten.unsqueeze.default, h0, 1)
        c0 = b(aten.unsqueeze.default, c0, 1) if lstm else None
    elif not batch_first:          # the kernels take [batch, steps, features]
        x = b(aten.transpose.int, x, 0, 1)
    op = torch.ops.lapis.lstm_recurrence.default if lstm else \
        torch.ops.lapis.gru_recurrence.default
    h_n, c_n = [], []
    for layer in range(layers):
        outputs = []
        for direction in range(directions):
            index = layer * directions + direction
            w_ih, w_hh, *biases = params[index * per_layer:(index + 1) * per_layer]
            if biases:
                b_ih, b_hh = biases
            else:
                b_ih = None
                b_hh = b(aten.new_zeros.default, w_hh, [_shape(w_hh)[0]])
            projected = b(aten.linear.default, x, w_ih, b_ih)
            if direction:
                projected = b(aten.flip.default, projected, [1])
            states = [b(aten.select.int, h0, 0, index)]
            if lstm:
                states.append(b(aten.select.int, c0, 0, index))
            result = b(op, projected, w_hh, b_hh, *states)
            out = b.item(result, 0)
            if direction:
                out = b(aten.flip.default, out, [1])
            outputs.append(out)
            h_n.append(b.item(result, 1))
            if lstm:
                c_n.append(b.item(result, 2))
        x = outputs[0] if directions == 1 else b(aten.cat.default, outputs, 2)
    output = x
    if unbatched:
        output = b(aten.squeeze.dim, output, 0)
    elif not batch_first:
        output = b(aten.transpose.int, output, 0, 1)
    states = [b(aten.stack.default, h_n, 0)] + ([b(aten.stack.default, c_n, 0)] if lstm else [])
    if unbatched:
        states = [b(aten.squeeze.dim, s, 1) for s in states]
    return [output, *states]
