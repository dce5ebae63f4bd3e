"""Complex tensors as pairs of reals, on the torch.export program before torch-mlir's import.

The emitter and the weight blob carry no complex types, so every complex value here becomes a
real tensor with a trailing dimension of 2 (real, imaginary: torch.view_as_real's layout):
complex parameters are stored that way, shape ops take one more dimension, complex products
are spelled out in real arithmetic, and FFTs become products with cosine/sine (DFT) matrices
built at export and carried in the weight blob. Where only some coefficients of a transform
are used (a Fourier neural operator keeps the lowest modes) only those are computed, and an
inverse transform reads only the coefficients that can be non-zero. A transform that stays
(nearly) full, of a length with the factors 2, 3 and 5 only, is instead one call of the
O(n log n) FFT kernel of exporter/fft.py where its cost rule (`prefers_fft`) says so.
"""
from __future__ import annotations

import bisect
import math
import operator

import numpy as np
import torch
from torch.export.graph_signature import InputKind, InputSpec, TensorArgument

from .. import fft as _fft_kernel
from ..errors import ExportError

aten = torch.ops.aten
_REAL_OF = {torch.complex64: torch.float32, torch.complex128: torch.float64}
_COMPLEX_OF = {torch.float32: torch.complex64, torch.float64: torch.complex128}
_META_KEYS = ("stack_trace", "nn_module_stack", "source_fn_stack", "torch_fn")


def to_real_pairs(program, path=None, fft_kernel: bool = True) -> int:
    """Rewrite the complex dataflow and FFTs of `program` (decomposed) in place; returns the
    number of nodes rewritten. fft_kernel=False keeps every transform a DFT product."""
    if not any(_touches_complex(node) for node in program.graph.nodes):
        return 0
    return _Rewriter(program, path, fft_kernel).run()


def _touches_complex(node) -> bool:
    return node.target in _FFTS or _is_complex(node.meta.get("val"))


def _is_complex(value) -> bool:
    if isinstance(value, (list, tuple)):
        return any(_is_complex(v) for v in value)
    return isinstance(value, torch.Tensor) and value.is_complex()


# --- DFT matrices ------------------------------------------------------------------------------

def dft_matrix(n: int, inputs, outputs, real_in: bool, real_out: bool, sign: int,
               scale: float = 1.0) -> np.ndarray:
    """The real matrix M with y = x @ M for a length-`n` DFT along the last axis, sign -1
    forward and +1 inverse, x holding the entries `inputs` of the signal and y the entries
    `outputs` of the result. Complex operands are interleaved (re, im) pairs along that axis;
    a real output (`real_out`) is the inverse of a one-sided (Hermitian) spectrum."""
    t = np.asarray(inputs, dtype=np.int64)
    k = np.asarray(outputs, dtype=np.int64)
    if real_out:   # y[t] = sum_k c_k Re(X_k e^{+i 2 pi k t / n}), X_k for k <= n/2 only
        angle = 2 * np.pi * (np.outer(t, k) % n) / n          # t: coefficients, k: samples
        weight = np.where((t == 0) | (2 * t == n), 1.0, 2.0)[:, None]
        matrix = np.empty((2 * len(t), len(k)))
        matrix[0::2] = weight * np.cos(angle)
        matrix[1::2] = -weight * np.sin(angle)
        matrix[1::2][(t == 0) | (2 * t == n)] = 0.0   # imaginary parts of DC and Nyquist unused
        return matrix * scale
    angle = sign * 2 * np.pi * (np.outer(t, k) % n) / n
    cos, sin = np.cos(angle), np.sin(angle)
    if real_in:
        matrix = np.empty((len(t), 2 * len(k)))
        matrix[:, 0::2], matrix[:, 1::2] = cos, sin
    else:          # (a + ib)(cos + i sin) = (a cos - b sin) + i (a sin + b cos)
        matrix = np.empty((2 * len(t), 2 * len(k)))
        matrix[0::2, 0::2], matrix[0::2, 1::2] = cos, sin
        matrix[1::2, 0::2], matrix[1::2, 1::2] = -sin, cos
    return matrix * scale


def norm_scale(norm, n: int, forward: bool) -> float:
    """The factor torch.fft applies for `norm` ("backward", "ortho", "forward"; None is
    "backward"), or for the int codes of aten._fft_* (0 none, 1 1/sqrt(n), 2 1/n)."""
    if isinstance(norm, int):
        return {0: 1.0, 1: 1 / math.sqrt(n), 2: 1.0 / n}[norm]
    norm = norm or "backward"
    if norm == "ortho":
        return 1 / math.sqrt(n)
    if norm not in ("backward", "forward"):
        raise ExportError(f"unknown FFT norm '{norm}'",
                          hint='torch.fft takes "backward", "ortho" or "forward"')
    return 1.0 / n if (norm == "forward") == forward else 1.0


# --- FFT ops as lists of one-dimensional transforms -------------------------------------------

def _fft_plan(node, shape) -> list[tuple]:
    """[(axis, n, kind, sign, scale)] in the order to apply them; kind is "r2c" (real in),
    "c2c" or "c2r" (Hermitian in, real out); shape is the input's (logical) shape."""
    a = _bound(node)
    rank = len(shape)
    name = node.target._schema.name.split("::")[1]
    if name.startswith("_fft_"):
        axes = [d % rank for d in a["dim"]]
        norm = a["normalization"]
        if name == "_fft_c2c":
            forward = a["forward"]
            return [(d, shape[d], "c2c", -1 if forward else 1,
                     norm_scale(norm, shape[d], True)) for d in axes]
        if name == "_fft_r2c":
            if not a["onesided"]:
                return [(d, shape[d], "r2c", -1, norm_scale(norm, shape[d], True)) for d in axes]
            return ([(axes[-1], shape[axes[-1]], "r2c1", -1,
                      norm_scale(norm, shape[axes[-1]], True))] +
                    [(d, shape[d], "c2c", -1, norm_scale(norm, shape[d], True))
                     for d in axes[:-1]])
        last = a["last_dim_size"]
        return ([(d, shape[d], "c2c", 1, norm_scale(norm, shape[d], True)) for d in axes[:-1]] +
                [(axes[-1], last, "c2r", 1, norm_scale(norm, last, True))])
    base = name[len("fft_"):]
    inverse = base.startswith("i")
    kind = base.lstrip("i")[:-1] if base[-1] in "2n" else base.lstrip("i")
    multi = base[-1] in "2n"
    sizes = a.get("s") if multi else ([a["n"]] if a.get("n") is not None else None)
    if multi:
        dims = a.get("dim")
        if dims is None:
            dims = list(range(rank - len(sizes), rank)) if sizes is not None else \
                (list(range(rank - 2, rank)) if base[-1] == "2" else list(range(rank)))
    else:
        dims = [a["dim"]]
    axes = [d % rank for d in dims]
    if sizes is None:
        sizes = [None] * len(axes)
    norm = a.get("norm")
    sign = 1 if inverse else -1
    if kind == "fft":
        return [(d, s or shape[d], "c2c", sign, norm_scale(norm, s or shape[d], not inverse))
                for d, s in zip(axes, sizes)]
    if kind == "rfft" and not inverse:
        plan = [(axes[-1], sizes[-1] or shape[axes[-1]], "r2c1", -1,
                 norm_scale(norm, sizes[-1] or shape[axes[-1]], True))]
        return plan + [(d, s or shape[d], "c2c", -1, norm_scale(norm, s or shape[d], True))
                       for d, s in zip(axes[:-1], sizes[:-1])]
    if kind == "rfft":                   # irfft, irfft2, irfftn
        last = sizes[-1] or 2 * (shape[axes[-1]] - 1)
        return ([(d, s or shape[d], "c2c", 1, norm_scale(norm, s or shape[d], False))
                 for d, s in zip(axes[:-1], sizes[:-1])] +
                [(axes[-1], last, "c2r", 1, norm_scale(norm, last, False))])
    raise ExportError(f"op aten.{name} is not supported", hint="fft, ifft, rfft, irfft and "
                      "their 2-D and n-D forms are")


_FFTS = {getattr(aten, name).default for name in (
    "fft_fft", "fft_ifft", "fft_rfft", "fft_irfft", "fft_fft2", "fft_ifft2", "fft_rfft2",
    "fft_irfft2", "fft_fftn", "fft_ifftn", "fft_rfftn", "fft_irfftn", "_fft_r2c", "_fft_c2r",
    "_fft_c2c")}


def _bound(node) -> dict:
    """The node's arguments by schema name, defaults filled in."""
    values = {}
    for index, argument in enumerate(node.target._schema.arguments):
        if index < len(node.args) and not argument.kwarg_only:
            values[argument.name] = node.args[index]
        elif argument.name in node.kwargs:
            values[argument.name] = node.kwargs[argument.name]
        else:
            values[argument.name] = argument.default_value \
                if argument.has_default_value() else None
    return values


# --- which coefficients are used, which can be non-zero ---------------------------------------

def _used_indices(node, shape, axes) -> dict[int, list[int]]:
    """For the axes of `node`'s result that only slices (step 1, constant bounds) read, the
    indices any of them keeps; other axes are absent (all used)."""
    leaves: list[dict] = []
    unknown: set[int] = set()

    def walk(current, box):
        for user in current.users:
            if user.target == aten.slice.Tensor and user.args[0] is current:
                a = _bound(user)
                size = current.meta["val"].shape[a["dim"] % len(shape)]
                dim = a["dim"] % len(shape)
                if a["step"] != 1 or not isinstance(size, int) or not all(
                        isinstance(v, (int, type(None))) for v in (a["start"], a["end"])):
                    unknown.add(dim)
                    leaves.append(box)
                    continue
                start, end, _ = slice(a["start"], a["end"]).indices(size)
                low = box.get(dim, (0, shape[dim]))[0]
                walk(user, {**box, dim: (low + start, low + max(start, end))})
            else:
                leaves.append(box)
    walk(node, {})
    used = {}
    for axis in axes:
        if axis in unknown or not isinstance(shape[axis], int):
            continue
        indices = set()
        for box in leaves:
            indices.update(range(*box.get(axis, (0, shape[axis]))))
        if len(indices) < shape[axis]:
            used[axis] = sorted(indices)
    return used


def _nonzero_indices(node, depth: int = 0):
    """Per axis, the sorted indices where `node` can be non-zero (None: all), or "zero" for a
    tensor known to be all zeros; a box over-approximating its support."""
    value = node.meta.get("val") if hasattr(node, "meta") else None
    if not isinstance(value, torch.Tensor) or depth > 40:
        return None
    rank = value.dim()
    full = [None] * rank
    target = getattr(node, "target", None)
    if target in (aten.full_like.default, aten.full.default, aten.zeros.default,
                  aten.zeros_like.default, aten.new_zeros.default):
        fill = _bound(node).get("fill_value", 0)
        return "zero" if fill == 0 else full
    if target in (aten.clone.default, aten.alias.default):
        return _nonzero_indices(node.args[0], depth + 1)
    if target == aten.copy.default:
        a = _bound(node)
        source = a["src"]
        if source.meta["val"].shape == value.shape:
            return _nonzero_indices(source, depth + 1)
        return full
    if target == aten.slice.Tensor:
        a = _bound(node)
        inner = _nonzero_indices(a["self"], depth + 1)
        if inner is None or inner == "zero":
            return inner
        dim = a["dim"] % rank
        size = a["self"].meta["val"].shape[dim]
        if a["step"] != 1 or not isinstance(size, int) or inner[dim] is None:
            return [*inner[:dim], None, *inner[dim + 1:]] if inner[dim] is not None else inner
        start, end, _ = slice(a["start"], a["end"]).indices(size)
        kept = [i - start for i in inner[dim] if start <= i < end]
        return "zero" if not kept else [*inner[:dim], kept, *inner[dim + 1:]]
    if target == aten.slice_scatter.default:
        a = _bound(node)
        dim = a["dim"] % rank
        size = value.shape[dim]
        base = _nonzero_indices(a["self"], depth + 1)
        source = _nonzero_indices(a["src"], depth + 1)
        if a["step"] != 1 or not isinstance(size, int) or base is None:
            return None if base is None else full
        start, end, _ = slice(a["start"], a["end"]).indices(size)
        if source == "zero":
            region = "zero"
        else:
            source = source or full
            region = [list(range(start, end)) if d == dim and source[d] is None else
                      [start + i for i in source[d]] if d == dim else source[d]
                      for d in range(rank)]
        return _union(base, region, rank)
    return None


def _union(first, second, rank):
    if first == "zero":
        return second
    if second == "zero":
        return first
    return [None if a is None or b is None else sorted(set(a) | set(b))
            for a, b in zip(first, second)]


# --- the rewrite -------------------------------------------------------------------------------

class _Rewriter:
    """Walks the graph once in order; every complex value's node is replaced by the node of its
    real pair tensor (listed in self.pairs)."""

    def __init__(self, program, path, fft_kernel=True):
        self.program, self.path, self.fft_kernel = program, path, fft_kernel
        self.graph = program.graph
        self.pairs: set = set()
        self.compact: dict = {}        # node -> {axis: indices of the full result it holds}
        self.constants: dict = {}      # key -> placeholder of a constant made here
        self.converted: list = []      # complex weight placeholders, now real pairs
        self.current = None
        values = [n.meta["val"] for n in self.graph.nodes
                  if isinstance(n.meta.get("val"), torch.Tensor)]
        from torch._guards import detect_fake_mode
        self.fake_mode = detect_fake_mode(values)
        self.weights = {}
        for spec in program.graph_signature.input_specs:
            if spec.kind in (InputKind.PARAMETER, InputKind.BUFFER, InputKind.CONSTANT_TENSOR):
                self.weights[spec.arg.name] = spec
        self.folded: dict = {}

    def run(self) -> int:
        used, nonzero = {}, {}
        for node in self.graph.nodes:    # analyses on the graph as torch.export wrote it
            if node.target in _FFTS:
                shape = tuple(node.args[0].meta["val"].shape)
                plan = _fft_plan(node, shape)
                out_shape = tuple(node.meta["val"].shape)
                used[node] = _used_indices(node, out_shape, [p[0] for p in plan])
                support = _nonzero_indices(node.args[0])
                nonzero[node] = support
        self.input_shapes = {node: tuple(node.args[0].meta["val"].shape)
                             for node in self.graph.nodes if node.target == aten.slice.Tensor}
        rewritten = 0
        for node in list(self.graph.nodes):
            self.current = node
            if node.op == "placeholder":
                if _is_complex(node.meta.get("val")):
                    self._complex_placeholder(node)
                continue
            if node.op == "output":
                self._check_outputs(node)
                continue
            if node.op != "call_function":
                continue
            reads_pair = any(isinstance(a, torch.fx.Node) and a in self.pairs
                             for a in node.all_input_nodes)
            if not (node.target in _FFTS or reads_pair or _is_complex(node.meta.get("val"))
                    or node.target == aten._neg_view.default):
                continue
            if node.target in _FFTS:
                result = self._fft(node, used[node], nonzero[node])
            else:
                handler = _HANDLERS.get(node.target)
                if handler is None:
                    raise ExportError(
                        f"{self._where(node)}op {_op_name(node)} on complex tensors is not "
                        "supported", hint="torch.view_as_real() gives a real tensor the "
                        "exporter carries; complex products, FFTs and shape ops are supported")
                result = handler(self, node)
            rewritten += 1
            if result is not node:
                node.replace_all_uses_with(result)
                self.graph.erase_node(node)
        self.graph.eliminate_dead_code()
        self._drop_unused_weights()
        self.program.graph_module.recompile()
        return rewritten

    # -- building nodes
    def op(self, target, *args, **kwargs):
        """A new node before the one being rewritten, with its fake value and source meta."""
        with self.graph.inserting_before(self.current):
            node = self.graph.call_function(target, tuple(args), kwargs)
        fake = torch.utils._pytree.tree_map(
            lambda v: v.meta["val"] if isinstance(v, torch.fx.Node) else v, (args, kwargs))
        with self.fake_mode:
            node.meta["val"] = target(*fake[0], **fake[1])
        for key in _META_KEYS:
            if key in self.current.meta:
                node.meta[key] = self.current.meta[key]
        return node

    def pair(self, node):
        self.pairs.add(node)
        return node

    def constant(self, key, name: str, tensor: torch.Tensor):
        """A placeholder for a constant tensor made at export (a DFT matrix, a folded weight),
        shared by every use of the same key; lives in the weight blob."""
        if key in self.constants:
            return self.constants[key]
        target = name
        while target in self.program.constants or target in self.program.state_dict:
            target += "_"
        specs = self.program.graph_signature.input_specs
        position = next((i for i, s in enumerate(specs) if s.kind == InputKind.USER_INPUT),
                        len(specs))
        first_user = next((n for n in self.graph.nodes if n.op == "placeholder" and
                           n.name == specs[position].arg.name), None) \
            if position < len(specs) else None
        placeholder_name = "c_" + "".join(c if c.isalnum() else "_" for c in target)
        if first_user is None:
            last = [n for n in self.graph.nodes if n.op == "placeholder"][-1]
            with self.graph.inserting_after(last):
                node = self.graph.placeholder(placeholder_name)
        else:
            with self.graph.inserting_before(first_user):
                node = self.graph.placeholder(placeholder_name)
        tensor = tensor.contiguous()
        with self.fake_mode:
            node.meta["val"] = torch.empty_strided(tensor.shape, tensor.stride(),
                                                   dtype=tensor.dtype)
        self.program.constants[target] = tensor
        specs.insert(position, InputSpec(kind=InputKind.CONSTANT_TENSOR,
                                         arg=TensorArgument(name=node.name), target=target))
        self.weights[node.name] = specs[position]
        self.constants[key] = node
        return node

    def sizes(self, node, dims):
        """The sizes of `node`'s dimensions `dims`: ints, or sym_size nodes for dynamic ones."""
        shape = node.meta["val"].shape
        return [int(shape[d]) if isinstance(shape[d], int) else
                self.op(aten.sym_size.int, node, d) for d in dims]

    def parts(self, node):
        return (self.op(aten.select.int, node, -1, 0), self.op(aten.select.int, node, -1, 1))

    def pack(self, real, imag):
        shapes = (real.meta["val"].shape, imag.meta["val"].shape)
        if shapes[0] != shapes[1]:           # torch.complex broadcasts its parts
            common = list(torch.broadcast_shapes(*shapes))
            real, imag = (self.op(aten.expand.default, t, common) for t in (real, imag))
        return self.pair(self.op(aten.cat.default, [self.op(aten.unsqueeze.default, real, -1),
                                                    self.op(aten.unsqueeze.default, imag, -1)],
                                 -1))

    def promote(self, value, dtype):
        """`value` (a pair, a real tensor or a number) as a pair of element type `dtype`."""
        if isinstance(value, torch.fx.Node) and value in self.pairs:
            return value
        if isinstance(value, torch.fx.Node):
            if value.meta["val"].dtype != dtype:
                value = self.op(aten._to_copy.default, value, dtype=dtype)
            return self.pack(value, self.op(aten.zeros_like.default, value))
        number = complex(value)
        return self.pair(self.constant(("scalar", number, dtype), "complex_scalar",
                                       torch.tensor([number.real, number.imag], dtype=dtype)))

    def real_dtype(self, node):
        """The element type of `node`'s pairs (of its real value for a real node)."""
        dtype = node.meta["val"].dtype
        return _REAL_OF.get(dtype, dtype)

    def rank(self, node) -> int:
        value = node.meta["val"]
        return value.dim() - 1 if node in self.pairs else value.dim()

    def weight_value(self, node):
        """The tensor `node` computes when it depends on weights only, else None."""
        if node in self.folded:
            return self.folded[node]
        value = None
        if node.op == "placeholder" and node.name in self.weights:
            spec = self.weights[node.name]
            value = self.program.state_dict[spec.target] if spec.target in \
                self.program.state_dict else self.program.constants[spec.target]
            value = value.detach()
        elif node.op == "call_function" and node.target != aten.sym_size.int:
            for arg in node.all_input_nodes:
                if self.weight_value(arg) is None:
                    self.folded[node] = None
                    return None
            args, kwargs = torch.utils._pytree.tree_map(
                lambda v: self.weight_value(v) if isinstance(v, torch.fx.Node) else v,
                (node.args, node.kwargs))
            target = aten.reshape.default if node.target in (
                aten.view.default, aten._unsafe_view.default) else node.target
            value = target(*args, **kwargs)
        self.folded[node] = value
        return value

    def _where(self, node) -> str:
        where = f"{self.path}: " if self.path else ""
        stack = node.meta.get("nn_module_stack") or {}
        module = list(stack.values())[-1][0] if stack else ""
        return where + (f"at '{module}': " if module else "")

    # -- graph inputs and outputs
    def _complex_placeholder(self, node):
        spec = self.weights.get(node.name)
        if spec is None:
            raise ExportError(f"{self._where(node)}input '{node.name}' is complex "
                              f"({node.meta['val'].dtype}), which is not supported",
                              hint="pass torch.view_as_real(x) and call torch.view_as_complex "
                              "in the model")
        table = self.program.state_dict if spec.target in self.program.state_dict \
            else self.program.constants
        tensor = table[spec.target]
        real = torch.view_as_real(tensor.detach().resolve_conj()).contiguous()
        table[spec.target] = torch.nn.Parameter(real, requires_grad=False) \
            if isinstance(tensor, torch.nn.Parameter) else real
        with self.fake_mode:
            node.meta["val"] = torch.view_as_real(node.meta["val"]).clone()
        node.meta.pop("tensor_meta", None)    # torch-mlir's importer would read its dtype
        self.folded.pop(node, None)
        self.converted.append(node)
        self.pair(node)

    def _check_outputs(self, node):
        for index, value in enumerate(torch.utils._pytree.tree_leaves(node.args[0])):
            if isinstance(value, torch.fx.Node) and value in self.pairs:
                where = f"{self.path}: " if self.path else ""
                raise ExportError(f"{where}model output "
                                  f"{index} is complex, which is not supported",
                                  hint="return torch.view_as_real(output) (real and "
                                  "imaginary parts in a trailing dimension of 2)")

    def _drop_unused_weights(self):
        """Complex weights whose every use was folded into a constant leave the blob."""
        specs = self.program.graph_signature.input_specs
        for node in self.converted + list(self.constants.values()):
            if node.users or node.graph is not self.graph:
                continue
            spec = self.weights[node.name]
            specs.remove(spec)
            table = self.program.state_dict if spec.target in self.program.state_dict \
                else self.program.constants
            del table[spec.target]
            self.graph.erase_node(node)

    # -- FFTs
    def _fft(self, node, used, nonzero):
        source = node.args[0]
        shape = list(source.meta["val"].shape[:self.rank(source)])
        plan = _fft_plan(node, tuple(source.meta["val"].shape[:self.rank(source)]))
        x = source
        dtype = _REAL_OF.get(node.meta["val"].dtype, node.meta["val"].dtype)
        if x not in self.pairs and x.meta["val"].dtype != dtype:
            x = self.op(aten._to_copy.default, x, dtype=dtype)
        nonzero = nonzero if isinstance(nonzero, list) else None
        if nonzero == "zero":
            nonzero = None
        compact = {}
        for axis, n, kind, sign, scale in plan:
            length = shape[axis]
            if not isinstance(length, int) or not isinstance(n, int):
                raise ExportError(f"{self._where(node)}op {_op_name(node)} along a dynamic "
                                  "dimension is not supported", hint="FFT lengths must be "
                                  "static")
            limit = min(length, n // 2 + 1 if kind == "c2r" else n)
            inputs = [i for i in (nonzero[axis] if nonzero and nonzero[axis] is not None
                                  else range(length)) if i < limit]
            out_length = n // 2 + 1 if kind == "r2c1" else n
            outputs = used.get(axis, range(out_length))
            shape[axis] = out_length
            if self.fft_kernel and kind != "r2c" and _fft_kernel.prefers_fft(
                    n, len(inputs), len(outputs), x not in self.pairs, kind == "c2r"):
                # every output, from the entries up to the last that can be non-zero
                given = list(range(inputs[-1] + 1 if inputs else 1))
                x = self._gather(x, axis, given, length)
                x = self._fft_call(x, axis, n, kind, sign, scale, dtype)
                continue
            x = self._gather(x, axis, inputs, length)
            x = self._transform(x, axis, n, inputs, list(outputs), kind, sign, scale, dtype)
            if axis in used:
                compact[axis] = (0, list(outputs))
        if compact:
            self.compact[x] = compact
        return x

    def _gather(self, x, axis, inputs, length):
        """The entries `inputs` of `x` along `axis` (ranges of them, concatenated)."""
        if list(inputs) == list(range(length)):
            return x
        runs, start = [], None
        for index, value in enumerate(inputs):
            if start is None:
                start = value
            if index + 1 == len(inputs) or inputs[index + 1] != value + 1:
                runs.append((start, value + 1))
                start = None
        pieces = [self.op(aten.slice.Tensor, x, axis, a, b) for a, b in runs]
        if len(pieces) == 1:
            result = pieces[0]
        else:
            result = self.op(aten.cat.default, pieces, axis)
        return self.pair(result) if x in self.pairs else result

    def _fft_call(self, x, axis, n, kind, sign, scale, dtype):
        """One transform along `axis` as a call of the FFT kernel (exporter/fft.py) over the
        lines [-1, entries(, 2)] of the axis moved last; the kernel zero-pads a short input."""
        lapis = torch.ops.lapis
        op = lapis.rfft if kind == "r2c1" else lapis.irfft if kind == "c2r" else \
            lapis.fft if sign < 0 else lapis.ifft
        if kind != "r2c1" and x not in self.pairs:
            x = self.promote(x, dtype)
        real_in = x not in self.pairs
        rank = self.rank(x)
        perm = [d for d in range(rank) if d != axis] + [axis]
        moved = perm != list(range(rank))
        if moved:
            x = self.op(aten.permute.default, x, perm + ([] if real_in else [rank]))
        lead = self.sizes(x, range(rank - 1))
        given = _int(x.meta["val"].shape[rank - 1])
        flat = self.op(aten.reshape.default, x, [-1, given] + ([] if real_in else [2]))
        table = self.constant(("twiddles", n, dtype), f"fft_twiddles_{n}",
                              _fft_kernel.twiddles(n, dtype))
        factor = self.constant(("fft_scale", scale, dtype), "fft_scale",
                               torch.tensor([scale], dtype=dtype))
        y = self.op(op.default, flat, table, factor)
        real_out = kind == "c2r"
        y = self.op(aten.reshape.default, y,
                    lead + [_int(y.meta["val"].shape[1])] + ([] if real_out else [2]))
        if moved:
            back = [perm.index(d) for d in range(rank)]
            y = self.op(aten.permute.default, y, back + ([] if real_out else [rank]))
            y = self.op(aten.clone.default, y, memory_format=torch.contiguous_format)
        return y if real_out else self.pair(y)

    def _transform(self, x, axis, n, inputs, outputs, kind, sign, scale, dtype):
        """One DFT along `axis` as a product with a constant matrix over the last axis."""
        real_in = x not in self.pairs
        real_out = kind == "c2r"
        rank = self.rank(x)
        perm = [d for d in range(rank) if d != axis] + [axis]
        moved = perm != list(range(rank))
        if moved:
            x = self.op(aten.permute.default, x, perm + ([] if real_in else [rank]))
        lead = self.sizes(x, range(rank - 1))
        flat = self.op(aten.reshape.default, x, [-1, len(inputs) * (1 if real_in else 2)])
        matrix = dft_matrix(n, inputs, outputs, real_in, real_out, sign, scale)
        label = "dft_{}{}_{}x{}".format("r" if real_in else "c", "r" if real_out else "c", n,
                                        len(outputs))
        key = ("dft", n, tuple(inputs), tuple(outputs), real_in, real_out, sign, scale, dtype)
        weight = self.constant(key, label, torch.from_numpy(matrix).to(dtype))
        y = self.op(aten.mm.default, flat, weight)
        y = self.op(aten.reshape.default, y,
                    lead + [len(outputs)] + ([] if real_out else [2]))
        if moved:
            back = [perm.index(d) for d in range(rank)]
            y = self.op(aten.permute.default, y, back + ([] if real_out else [rank]))
            y = self.op(aten.clone.default, y, memory_format=torch.contiguous_format)
        return y if real_out else self.pair(y)


def _op_name(node) -> str:
    return "aten." + node.target._schema.name.split("::")[1] \
        if hasattr(node.target, "_schema") else str(node.target)


# --- handlers: one per op, each returns the node that replaces it ------------------------------

_HANDLERS: dict = {}


def _handles(*targets):
    def register(function):
        for target in targets:
            _HANDLERS[target] = function
        return function
    return register


def _positional(node) -> tuple[list, dict]:
    schema = node.target._schema
    values = _bound(node)
    args = [values[a.name] for a in schema.arguments if not a.kwarg_only]
    while args and args[-1] is None:
        args.pop()
    kwargs = {a.name: node.kwargs[a.name] for a in schema.arguments
              if a.kwarg_only and a.name in node.kwargs}
    return args, kwargs


def _same_op(r: _Rewriter, node, adjust=None):
    """The op itself on the pair, its dimension arguments adjusted by `adjust(args, rank)`."""
    args, kwargs = _positional(node)
    rank = r.rank(args[0]) if isinstance(args[0], torch.fx.Node) else None
    if adjust is not None:
        args = adjust(args, rank)
    if "dtype" in kwargs and kwargs["dtype"] in _REAL_OF:
        kwargs["dtype"] = _REAL_OF[kwargs["dtype"]]
    result = r.op(node.target, *args, **kwargs)
    return r.pair(result) if _is_complex(node.meta["val"]) else result


def _dim_at(position, extra=0):
    def adjust(args, rank):
        args = list(args)
        if len(args) > position and isinstance(args[position], int):
            args[position] = args[position] % (rank + extra)
        return args
    return adjust


def _dims_at(position):
    def adjust(args, rank):
        args = list(args)
        if len(args) > position and args[position] is not None:
            args[position] = [d % rank for d in args[position]]
        return args
    return adjust


@_handles(aten.clone.default, aten.alias.default, aten.lift_fresh_copy.default,
          aten.detach.default, aten.neg.default, aten.resolve_conj.default,
          aten.resolve_neg.default)
def _elementwise_linear(r, node):
    return _same_op(r, node)


@_handles(aten._neg_view.default)
def _neg_view(r, node):
    result = r.op(aten.neg.default, node.args[0])
    return r.pair(result) if node.args[0] in r.pairs else result


@_handles(aten.view.default, aten._unsafe_view.default, aten.reshape.default,
          aten.expand.default)
def _view(r, node):
    if node.target == aten.expand.default:
        return _same_op(r, node, lambda args, rank: [args[0], list(args[1]) + [2], *args[2:]])
    # a reshape: the pairs of a transform's result need not have the strides torch's had
    return r.pair(r.op(aten.reshape.default, node.args[0], list(node.args[1]) + [2]))


@_handles(aten.permute.default)
def _permute(r, node):
    return _same_op(r, node, lambda args, rank: [args[0], [d % rank for d in args[1]] + [rank]])


@_handles(aten.slice.Tensor)
def _slice(r, node):
    source = node.args[0]
    if source not in r.compact:
        return _same_op(r, node, _dim_at(1))
    a = _bound(node)
    rank = r.rank(source)
    dim = a["dim"] % rank
    compact = r.compact[source]
    if dim not in compact:
        result = _same_op(r, node, _dim_at(1))
        r.compact[result] = compact
        return result
    offset, held = compact[dim]
    start, end, _ = slice(a["start"], a["end"]).indices(r.input_shapes[node][dim])
    first = bisect.bisect_left(held, offset + start)
    last = bisect.bisect_left(held, offset + max(start, end))
    result = r.pair(r.op(aten.slice.Tensor, source, dim, first, last))
    rest = {d: v for d, v in compact.items() if d != dim}
    if last - first != max(start, end) - start:   # still holds only some of those indices
        rest[dim] = (offset + start, held[first:last])
    if rest:
        r.compact[result] = rest
    return result


@_handles(aten.select.int, aten.transpose.int, aten.squeeze.dim, aten.index_select.default,
          aten.narrow.default, aten.split.Tensor, aten.split_with_sizes.default,
          aten.unbind.int)
def _one_dim(r, node):
    if node.target == aten.transpose.int:
        return _same_op(r, node, lambda args, rank: [args[0], args[1] % rank, args[2] % rank])
    position = 2 if node.target in (aten.split.Tensor, aten.split_with_sizes.default) else 1
    return _same_op(r, node, _dim_at(position))


@_handles(aten.squeeze.dims, aten.flip.default, aten.sum.dim_IntList, aten.mean.dim)
def _many_dims(r, node):
    return _same_op(r, node, _dims_at(1))


@_handles(aten.roll.default)
def _roll(r, node):
    return _same_op(r, node, _dims_at(2))


@_handles(aten.unsqueeze.default)
def _unsqueeze(r, node):
    return _same_op(r, node, _dim_at(1, extra=1))


@_handles(aten.cat.default, aten.stack.default)
def _cat(r, node):
    tensors = node.args[0]
    like = next(t for t in tensors if t in r.pairs)
    tensors = [r.promote(t, r.real_dtype(like)) for t in tensors]
    rank = r.rank(like) + (1 if node.target == aten.stack.default else 0)
    dim = (node.args[1] if len(node.args) > 1 else node.kwargs.get("dim", 0)) % rank
    return r.pair(r.op(node.target, tensors, dim))


@_handles(aten.slice_scatter.default, aten.select_scatter.default)
def _scatter(r, node):
    args, _ = _positional(node)
    like = next(t for t in args[:2] if t in r.pairs)
    dtype = r.real_dtype(like)
    args[0], args[1] = r.promote(args[0], dtype), r.promote(args[1], dtype)
    args[2] = args[2] % r.rank(args[0])
    return r.pair(r.op(node.target, *args))


@_handles(aten.copy.default)
def _copy(r, node):
    destination, source = node.args[0], node.args[1]
    if destination not in r.pairs:    # complex into real: the real part
        return r.op(aten.copy.default, destination, r.parts(source)[0])
    source = r.promote(source, r.real_dtype(destination))
    return r.pair(r.op(aten.copy.default, destination, source))


@_handles(aten.constant_pad_nd.default)
def _pad(r, node):
    args, _ = _positional(node)
    if len(args) > 2 and args[2] not in (0, 0.0):
        raise ExportError(f"{r._where(node)}op aten.constant_pad_nd of a complex tensor with "
                          "a non-zero value is not supported")
    return r.pair(r.op(aten.constant_pad_nd.default, args[0], [0, 0] + list(args[1])))


@_handles(aten.repeat.default)
def _repeat(r, node):
    return _same_op(r, node, lambda args, rank: [args[0], list(args[1]) + [1]])


@_handles(aten.empty_strided.default, aten.empty.memory_format, aten.zeros.default,
          aten.full.default, aten.ones.default)
def _factory(r, node):
    a = _bound(node)
    dtype = _REAL_OF[node.meta["val"].dtype]
    size = list(a["size"])
    fill = {aten.zeros.default: 0, aten.ones.default: 1}.get(
        node.target, a.get("fill_value", 0))
    options = {"dtype": dtype, "device": node.meta["val"].device}
    if node.target in (aten.empty_strided.default, aten.empty.memory_format):
        return r.pair(r.op(aten.empty.memory_format, size + [2], **options))
    fill = complex(fill)
    if fill.imag == 0 and fill.real == 0:
        return r.pair(r.op(aten.zeros.default, size + [2], **options))
    return r.pack(r.op(aten.full.default, size, fill.real, **options),
                  r.op(aten.full.default, size, fill.imag, **options))


@_handles(aten.full_like.default, aten.zeros_like.default, aten.ones_like.default,
          aten.empty_like.default)
def _factory_like(r, node):
    source = node.args[0]
    fill = {aten.zeros_like.default: 0, aten.ones_like.default: 1,
            aten.empty_like.default: 0}.get(node.target, _bound(node).get("fill_value", 0))
    fill = complex(fill)
    if not _is_complex(node.meta["val"]):
        real = r.parts(source)[0] if source in r.pairs else source
        return r.op(aten.full_like.default, real, fill.real)
    dtype = _REAL_OF[node.meta["val"].dtype]
    if source not in r.pairs:
        source = r.pack(source, source)
    if fill == 0:
        return r.pair(r.op(aten.full_like.default, source, 0, dtype=dtype))
    real = r.op(aten.select.int, source, -1, 0)
    return r.pack(r.op(aten.full_like.default, real, fill.real, dtype=dtype),
                  r.op(aten.full_like.default, real, fill.imag, dtype=dtype))


@_handles(aten._to_copy.default, torch.ops.prims.convert_element_type.default)
def _to_copy(r, node):
    source = node.args[0]
    target = node.meta["val"].dtype
    if not _is_complex(node.meta["val"]):
        return r.op(aten._to_copy.default, r.parts(source)[0], dtype=target)
    real = _REAL_OF[target]
    if source in r.pairs:
        return r.pair(r.op(aten._to_copy.default, source, dtype=real))
    source = r.op(aten._to_copy.default, source, dtype=real)
    return r.pack(source, r.op(aten.zeros_like.default, source))


@_handles(aten.add.Tensor, aten.sub.Tensor)
def _add(r, node):
    a = _bound(node)
    alpha = a.get("alpha", 1)
    if isinstance(alpha, complex):
        raise ExportError(f"{r._where(node)}op {_op_name(node)} with a complex alpha is not "
                          "supported")
    dtype = _REAL_OF[node.meta["val"].dtype]
    operands = [r.promote(v, dtype) for v in (a["self"], a["other"])]
    kwargs = {} if alpha == 1 else {"alpha": alpha}
    return r.pair(r.op(node.target, *operands, **kwargs))


@_handles(aten.mul.Tensor, aten.div.Tensor)
def _mul(r, node):
    a = _bound(node)
    first, second = a["self"], a["other"]
    pairs = [isinstance(v, torch.fx.Node) and v in r.pairs for v in (first, second)]
    divide = node.target == aten.div.Tensor
    if a.get("rounding_mode") is not None:
        raise ExportError(f"{r._where(node)}op aten.div with rounding on complex tensors is "
                          "not supported")
    dtype = _REAL_OF[node.meta["val"].dtype]
    if not pairs[0] and divide:                  # real / complex
        first = r.promote(first, dtype)
        pairs[0] = True
    if pairs[0] != pairs[1]:                     # one complex side, one real tensor or number
        pair, other = (first, second) if pairs[0] else (second, first)
        if not isinstance(other, torch.fx.Node) and complex(other).imag == 0:
            return r.pair(r.op(node.target, pair, complex(other).real))
        if isinstance(other, torch.fx.Node):
            return r.pair(r.op(node.target, pair, r.op(aten.unsqueeze.default, other, -1)))
        other = r.promote(other, dtype)
        first, second = (pair, other) if pairs[0] else (other, pair)
    ar, ai = r.parts(first)
    br, bi = r.parts(second)
    mul, add, sub = aten.mul.Tensor, aten.add.Tensor, aten.sub.Tensor
    if not divide:
        return r.pack(r.op(sub, r.op(mul, ar, br), r.op(mul, ai, bi)),
                      r.op(add, r.op(mul, ar, bi), r.op(mul, ai, br)))
    norm = r.op(add, r.op(mul, br, br), r.op(mul, bi, bi))
    real = r.op(add, r.op(mul, ar, br), r.op(mul, ai, bi))
    imag = r.op(sub, r.op(mul, ai, br), r.op(mul, ar, bi))
    return r.pack(r.op(aten.div.Tensor, real, norm), r.op(aten.div.Tensor, imag, norm))


@_handles(aten._conj.default, aten.conj_physical.default, aten.conj.default)
def _conj(r, node):
    real, imag = r.parts(node.args[0])
    return r.pack(real, r.op(aten.neg.default, imag))


@_handles(aten.abs.default)
def _abs(r, node):
    real, imag = r.parts(node.args[0])
    mul = aten.mul.Tensor
    return r.op(aten.sqrt.default, r.op(aten.add.Tensor, r.op(mul, real, real),
                                        r.op(mul, imag, imag)))


@_handles(aten.angle.default)
def _angle(r, node):
    real, imag = r.parts(node.args[0])
    return r.op(aten.atan2.default, imag, real)


@_handles(aten.real.default)
def _real(r, node):
    return r.parts(node.args[0])[0]


@_handles(aten.imag.default)
def _imag(r, node):
    return r.parts(node.args[0])[1]


@_handles(aten.view_as_real.default)
def _view_as_real(r, node):
    return r.op(aten.alias.default, node.args[0])    # the pair itself, now a real tensor


@_handles(aten.view_as_complex.default)
def _view_as_complex(r, node):
    return r.pair(r.op(aten.alias.default, node.args[0]))


@_handles(aten.complex.default)
def _complex(r, node):
    return r.pack(node.args[0], node.args[1])


@_handles(aten.polar.default)
def _polar(r, node):
    magnitude, angle = node.args[0], node.args[1]
    mul = aten.mul.Tensor
    return r.pack(r.op(mul, magnitude, r.op(aten.cos.default, angle)),
                  r.op(mul, magnitude, r.op(aten.sin.default, angle)))


@_handles(aten.exp.default)
def _exp(r, node):
    real, imag = r.parts(node.args[0])
    scale = r.op(aten.exp.default, real)
    mul = aten.mul.Tensor
    return r.pack(r.op(mul, scale, r.op(aten.cos.default, imag)),
                  r.op(mul, scale, r.op(aten.sin.default, imag)))


@_handles(aten.where.self)
def _where(r, node):
    condition, first, second = node.args[:3]
    dtype = _REAL_OF[node.meta["val"].dtype]
    return r.pair(r.op(aten.where.self, r.op(aten.unsqueeze.default, condition, -1),
                       r.promote(first, dtype), r.promote(second, dtype)))


@_handles(operator.getitem)
def _getitem(r, node):
    result = r.op(operator.getitem, *node.args)
    return r.pair(result) if _is_complex(node.meta["val"]) else result


@_handles(aten.mm.default, aten.bmm.default)
def _matmul(r, node):
    """C = A B with complex operands as one real product of planes: [Ar | Ai] times the block
    [[Br, Bi], [-Bi, Br]] gives [Cr | Ci]; the block is folded at export when B is computed
    from weights alone. Planes are concatenated, not reshaped from the pairs, so that no
    reshape sits next to the product (MLIR would fold it into the product's loops)."""
    first, second = node.args[0], node.args[1]
    dtype = _REAL_OF[node.meta["val"].dtype]
    cat, sl = aten.cat.default, aten.slice.Tensor
    if first not in r.pairs:            # real A: A [Br | Bi]
        first = r.op(aten._to_copy.default, first, dtype=dtype) \
            if first.meta["val"].dtype != dtype else first
        product = r.op(node.target, first, r.op(cat, list(r.parts(second)), -1))
        columns = _int(second.meta["val"].shape[-2])
        return r.pack(r.op(sl, product, -1, 0, columns),
                      r.op(sl, product, -1, columns, 2 * columns))
    if second not in r.pairs:           # real B: [Ar; Ai] B
        second = r.op(aten._to_copy.default, second, dtype=dtype) \
            if second.meta["val"].dtype != dtype else second
        product = r.op(node.target, r.op(cat, list(r.parts(first)), -2), second)
        rows = _int(first.meta["val"].shape[-3])
        return r.pack(r.op(sl, product, -2, 0, rows), r.op(sl, product, -2, rows, 2 * rows))
    planes = r.op(cat, list(r.parts(first)), -1)
    value = r.weight_value(second)
    if value is not None:
        owner = _weight_name(r, second) or "complex"
        matrix = r.constant(("block", second.name), f"{owner}.real_block", _real_block(value))
    else:
        real, imag = r.parts(second)
        matrix = r.op(cat, [r.op(cat, [real, imag], -1),
                            r.op(cat, [r.op(aten.neg.default, imag), real], -1)], -2)
    product = r.op(node.target, planes, matrix)
    columns = _int(second.meta["val"].shape[-2])
    return r.pack(r.op(sl, product, -1, 0, columns), r.op(sl, product, -1, columns, 2 * columns))


def _int(value):
    if not isinstance(value, int):
        raise ExportError("complex matrix products need a static number of columns")
    return value


def _real_block(pairs: torch.Tensor) -> torch.Tensor:
    """[..., K, M, 2] pairs -> the real [..., 2K, 2M] block [[Br, Bi], [-Bi, Br]]."""
    real, imag = pairs[..., 0], pairs[..., 1]
    return torch.cat([torch.cat([real, imag], -1), torch.cat([-imag, real], -1)],
                     -2).contiguous()


def _weight_name(r, node, depth=0):
    if node.op == "placeholder":
        spec = r.weights.get(node.name)
        return spec.target if spec else None
    for arg in node.all_input_nodes:
        found = _weight_name(r, arg, depth + 1) if depth < 20 else None
        if found:
            return found
    return None
