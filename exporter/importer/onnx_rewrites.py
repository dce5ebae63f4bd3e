"""ONNX-graph rewrites ahead of torch-mlir's import, for nodes its ONNX -> torch lowering turns
into wrong numbers: each becomes a few ONNX ops it lowers correctly. onnx_graph.to_linalg()
calls rewrite() on the shape-inferred model; one function per fix, each named after what
torch-mlir gets wrong.
"""
from __future__ import annotations

import math

import numpy as np

from .. import fft as _fft_kernel


def rewrite(model) -> bool:
    """Apply every rewrite to `model` (a shape-inferred onnx.ModelProto) in place; True when a
    node was rewritten (the caller then infers the new intermediate shapes)."""
    graph = _Graph(model.graph, model)
    for node in list(model.graph.node):
        for fix in REWRITES:
            replacement = fix(graph, node)
            if replacement is not None:
                graph.replace(node, replacement)
                break
    return graph.changed


class _Graph:
    """A graph with the element types and shapes of its tensors; counts the new names."""

    def __init__(self, graph, model=None):
        self.graph, self.model = graph, model    # the model: for its opset imports
        self.changed = False
        self.types = {}
        for value in [*graph.input, *graph.value_info, *graph.output]:
            tensor_type = value.type.tensor_type
            if value.type.HasField("tensor_type") and tensor_type.HasField("shape"):
                self.types[value.name] = (tensor_type.elem_type, tuple(
                    d.dim_value if d.HasField("dim_value") else -1
                    for d in tensor_type.shape.dim))
        self.counter = 0

    def shape(self, name: str) -> tuple[int, ...] | None:
        shape = self.types.get(name, (None, None))[1]
        return None if shape is None or -1 in shape else shape

    def dtype(self, name: str):
        return self.types.get(name, (None, None))[0]

    def replace(self, node, nodes: list) -> None:
        position = list(self.graph.node).index(node)
        self.graph.node.remove(node)
        for offset, new in enumerate(nodes):
            self.graph.node.insert(position + offset, new)
        self.changed = True


class _Builder:
    """New nodes for one rewritten node: names derive from its first output."""

    def __init__(self, graph: _Graph, node):
        self.graph, self.node, self.nodes = graph, node, []
        self.prefix = f"{node.output[0]}__{node.op_type.lower()}"

    def _name(self) -> str:
        self.graph.counter += 1
        return f"{self.prefix}_{self.graph.counter}"

    def const(self, value, dtype=np.float32, name: str | None = None) -> str:
        """A new initializer holding `value`; its name."""
        from onnx import numpy_helper

        name = name or self._name()
        self.graph.graph.initializer.append(numpy_helper.from_array(
            np.asarray(value, dtype=dtype), name))
        return name

    def op(self, op_type: str, *inputs: str, out: str | None = None, **attributes) -> str:
        from onnx import helper

        name = out or self._name()
        self.nodes.append(helper.make_node(op_type, list(inputs), [name], **attributes))
        return name


def _attributes(node) -> dict:
    from onnx import helper
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else value


# --- the fixes, one per op -------------------------------------------------------------------

def gelu_tanh_constant(graph: _Graph, node):
    """Gelu(approximate='tanh'): torch-mlir's lowering uses 0.797724 for sqrt(2/pi)
    (0.7978846); spelled out as 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))."""
    if node.op_type != "Gelu" or _text(_attributes(node).get("approximate", "none")) != "tanh":
        return None
    b = _Builder(graph, node)
    x = node.input[0]
    dtype = np.float64 if graph.dtype(x) == 11 else np.float32
    cube = b.op("Mul", b.op("Mul", x, x), x)
    inner = b.op("Add", x, b.op("Mul", cube, b.const(0.044715, dtype)))
    tanh = b.op("Tanh", b.op("Mul", inner, b.const(math.sqrt(2 / math.pi), dtype)))
    half_x = b.op("Mul", x, b.const(0.5, dtype))
    b.op("Mul", half_x, b.op("Add", tanh, b.const(1.0, dtype)), out=node.output[0])
    return b.nodes


def space_to_depth_crd(graph: _Graph, node):
    """SpaceToDepth(mode='CRD'): torch-mlir's lowering ignores the mode and orders the output
    channels as DCR does; spelled out as reshape, transpose, reshape."""
    if node.op_type != "SpaceToDepth" or _text(_attributes(node).get("mode", "DCR")) != "CRD":
        return None
    shape = graph.shape(node.input[0])
    if shape is None or len(shape) != 4:
        return None
    block = _attributes(node)["blocksize"]
    n, c, h, w = shape
    b = _Builder(graph, node)
    split = b.op("Reshape", node.input[0],
                 b.const([n, c, h // block, block, w // block, block], np.int64))
    moved = b.op("Transpose", split, perm=[0, 1, 3, 5, 2, 4])
    b.op("Reshape", moved, b.const([n, c * block * block, h // block, w // block], np.int64),
         out=node.output[0])
    return b.nodes


def lp_normalization_of_zero(graph: _Graph, node):
    """LpNormalization: torch-mlir divides a zero vector by its zero norm (NaN); ONNX gives 0.
    Spelled out as x / norm with a zero norm replaced by one."""
    if node.op_type != "LpNormalization":
        return None
    attributes = _attributes(node)
    p, axis = attributes.get("p", 2), attributes.get("axis", -1)
    if p not in (1, 2):
        return None
    x = node.input[0]
    dtype = np.float64 if graph.dtype(x) == 11 else np.float32
    b = _Builder(graph, node)
    axes = b.const([axis], np.int64)
    if p == 1:
        norm = b.op("ReduceSum", b.op("Abs", x), axes, keepdims=1)
    else:
        norm = b.op("Sqrt", b.op("ReduceSum", b.op("Mul", x, x), axes, keepdims=1))
    zero = b.op("Equal", norm, b.const(0.0, dtype))
    safe = b.op("Where", zero, b.const(1.0, dtype), norm)
    b.op("Div", x, safe, out=node.output[0])
    return b.nodes


def sequence_length_of_split(graph: _Graph, node):
    """SequenceLength(SplitToSequence(x, split)) with a 1-D `split` of k sizes is k; torch-mlir
    lowers a 1-D split as one chunk size (length 1 for [0, 0, 0])."""
    if node.op_type != "SequenceLength":
        return None
    producer = next((n for n in graph.graph.node if node.input[0] in n.output), None)
    if producer is None or producer.op_type != "SplitToSequence" or len(producer.input) < 2:
        return None
    split = graph.shape(producer.input[1])
    if split is None or len(split) != 1:
        return None
    _Builder(graph, node).const(split[0], np.int64, name=node.output[0])
    return []


def weighted_softmax_cross_entropy(graph: _Graph, node):
    """SoftmaxCrossEntropyLoss with class weights: torch-mlir sums the picked weights in an
    integer type (a mean of inf); spelled out as LogSoftmax, GatherElements, weights, sums."""
    if node.op_type != "SoftmaxCrossEntropyLoss" or len(node.input) < 3 or not node.input[2]:
        return None
    scores, labels, weight = node.input[:3]
    shape = graph.shape(scores)
    if shape is None:
        return None
    attributes = _attributes(node)
    reduction = _text(attributes.get("reduction", "mean"))
    ignore = attributes.get("ignore_index")
    dtype = np.float64 if graph.dtype(scores) == 11 else np.float32
    b = _Builder(graph, node)
    log_prob = b.op("LogSoftmax", scores, axis=1,
                    out=node.output[1] if len(node.output) > 1 and node.output[1] else None)
    if ignore is not None:
        ignored = b.op("Equal", labels, b.const(ignore, np.int64))
        labels = b.op("Where", ignored, b.const(0, np.int64), labels)
    axis = b.const([1], np.int64)
    picked = b.op("Squeeze", b.op("GatherElements", log_prob, b.op("Unsqueeze", labels, axis),
                                  axis=1), axis)
    weights = b.op("Gather", weight, labels, axis=0)
    if ignore is not None:
        weights = b.op("Where", ignored, b.const(0.0, dtype), weights)
    loss = b.op("Neg", b.op("Mul", picked, weights),
                out=node.output[0] if reduction == "none" else None)
    if reduction != "none":
        total = b.op("ReduceSum", loss, keepdims=0,
                     out=node.output[0] if reduction == "sum" else None)
        if reduction == "mean":
            b.op("Div", total, b.op("ReduceSum", weights, keepdims=0), out=node.output[0])
    return b.nodes


def small_determinant(graph: _Graph, node):
    """Det of 1x1, 2x2 and 3x3 matrices: torch-mlir's lowering has no row pivoting (a run-time
    assert on a matrix that needs it); spelled out as the closed-form cofactor expansion."""
    if node.op_type != "Det":
        return None
    shape = graph.shape(node.input[0])
    if shape is None or len(shape) < 2 or shape[-1] != shape[-2] or shape[-1] > 3:
        return None
    n = shape[-1]
    b = _Builder(graph, node)
    rows = [b.op("Gather", node.input[0], b.const(i, np.int64), axis=-2) for i in range(n)]
    a = [[b.op("Gather", row, b.const(j, np.int64), axis=-1) for j in range(n)] for row in rows]
    out = node.output[0]
    if n == 1:
        b.op("Identity", a[0][0], out=out)
    elif n == 2:
        b.op("Sub", b.op("Mul", a[0][0], a[1][1]), b.op("Mul", a[0][1], a[1][0]), out=out)
    else:
        def minor(j, k):
            return b.op("Sub", b.op("Mul", a[1][j], a[2][k]), b.op("Mul", a[1][k], a[2][j]))
        terms = [b.op("Mul", a[0][0], minor(1, 2)), b.op("Mul", a[0][1], minor(0, 2)),
                 b.op("Mul", a[0][2], minor(0, 1))]
        b.op("Add", b.op("Sub", terms[0], terms[1]), terms[2], out=out)
    return b.nodes


def grid_sample_2d(graph: _Graph, node):
    """GridSample of 4-D inputs, nearest or linear, zeros or border padding: torch-mlir's
    lowering rounds ties of nearest coordinates up (ONNX: half to even) and reads
    outside the input for zeros padding. Spelled out as coordinates, clamped flat indices,
    GatherElements and a mask for the taps outside the input."""
    if node.op_type != "GridSample":
        return None
    attributes = _attributes(node)
    mode = _text(attributes.get("mode", "linear"))
    padding = _text(attributes.get("padding_mode", "zeros"))
    align = attributes.get("align_corners", 0)
    shape, grid_shape = graph.shape(node.input[0]), graph.shape(node.input[1])
    if mode not in ("nearest", "linear", "bilinear") or padding not in ("zeros", "border") \
            or shape is None or grid_shape is None or len(shape) != 4:
        return None
    n, c, h, w = shape
    out_h, out_w = grid_shape[1:3]
    dtype = np.float64 if graph.dtype(node.input[0]) == 11 else np.float32
    b = _Builder(graph, node)
    flat = b.op("Reshape", node.input[0], b.const([n, c, h * w], np.int64))

    def coordinate(axis: int, length: int) -> str:
        normalized = b.op("Gather", node.input[1], b.const(axis, np.int64), axis=-1)
        shifted = b.op("Add", normalized, b.const(1.0, dtype))
        if align:
            return b.op("Mul", shifted, b.const((length - 1) / 2, dtype))
        return b.op("Sub", b.op("Mul", shifted, b.const(length / 2, dtype)),
                    b.const(0.5, dtype))

    def sample(y: str, x: str) -> str:
        """X at the integral float coordinates (y, x) [N, Ho, Wo]: [N, C, Ho, Wo]."""
        clamped = [b.op("Clip", v, b.const(0.0, dtype), b.const(length - 1.0, dtype))
                   for v, length in ((y, h), (x, w))]
        row, column = (b.op("Cast", v, to=7) for v in clamped)
        index = b.op("Add", b.op("Mul", row, b.const(w, np.int64)), column)
        index = b.op("Expand", b.op("Reshape", index, b.const([n, 1, out_h * out_w], np.int64)),
                     b.const([n, c, out_h * out_w], np.int64))
        taps = b.op("Reshape", b.op("GatherElements", flat, index, axis=2),
                    b.const([n, c, out_h, out_w], np.int64))
        if padding == "border":
            return taps
        inside = [b.op("Equal", v, clamp) for v, clamp in zip((y, x), clamped)]
        mask = b.op("Cast", b.op("And", *inside), to=11 if dtype == np.float64 else 1)
        return b.op("Mul", taps, b.op("Unsqueeze", mask, b.const([1], np.int64)))

    y, x = coordinate(1, h), coordinate(0, w)
    if mode == "nearest":
        b.op("Identity", sample(b.op("Round", y), b.op("Round", x)), out=node.output[0])
        return b.nodes
    if padding == "border":
        y, x = (b.op("Clip", v, b.const(0.0, dtype), b.const(length - 1.0, dtype))
                for v, length in ((y, h), (x, w)))
    one = b.const(1.0, dtype)
    corners = []
    for v in (y, x):
        low = b.op("Floor", v)
        high_weight = b.op("Sub", v, low)
        corners.append(((low, b.op("Sub", one, high_weight)),
                        (b.op("Add", low, one), high_weight)))
    terms = []
    for y_tap, y_weight in corners[0]:
        for x_tap, x_weight in corners[1]:
            weight = b.op("Unsqueeze", b.op("Mul", y_weight, x_weight),
                          b.const([1], np.int64))
            terms.append(b.op("Mul", sample(y_tap, x_tap), weight))
    b.op("Sum", *terms, out=node.output[0])
    return b.nodes


def resize_align_corners_by_scales(graph: _Graph, node):
    """Resize (linear or cubic, align_corners) of the last two axes of a 4-D tensor by
    `scales`: ONNX maps output index r to r (L - 1) / (L s - 1), with the real-valued resized
    length L s; torch-mlir divides by its integral output length less one. Spelled out as one
    interpolation matrix per axis, built at run time from the scale (the kernel at each
    tap's distance, taps outside the input folded onto the edge), applied by MatMul."""
    if node.op_type != "Resize":
        return None
    attributes = _attributes(node)
    mode = _text(attributes.get("mode", "nearest"))
    if mode not in ("linear", "cubic") or attributes.get("antialias", 0) \
            or attributes.get("exclude_outside", 0) or "axes" in attributes \
            or _text(attributes.get("coordinate_transformation_mode", "")) != "align_corners":
        return None
    inputs = list(node.input) + [""] * (4 - len(node.input))
    shape, out_shape = graph.shape(inputs[0]), graph.shape(node.output[0])
    if not inputs[2] or inputs[3] or shape is None or out_shape is None or len(shape) != 4 \
            or shape[:2] != out_shape[:2]:
        return None
    dtype = np.float64 if graph.dtype(inputs[0]) == 11 else np.float32
    a = attributes.get("cubic_coeff_a", -0.75)
    b = _Builder(graph, node)
    scales = b.op("Cast", inputs[2], to=11 if dtype == np.float64 else 1)
    batch = list(out_shape[:2])

    def matrix(axis: int) -> str:
        """[out, in] interpolation weights along `axis`, expanded over the batch axes."""
        length, out = shape[axis], out_shape[axis]
        resized = b.op("Mul", b.op("Gather", scales, b.const(axis, np.int64), axis=0),
                       b.const(float(length), dtype))
        single = b.op("Equal", resized, b.const(1.0, dtype))     # ONNX: source 0
        denominator = b.op("Where", single, b.const(1.0, dtype),
                           b.op("Sub", resized, b.const(1.0, dtype)))
        source = b.op("Div", b.const(np.arange(out).reshape(out, 1) * (length - 1), dtype),
                      denominator)
        taps = np.arange(-2, length + 2)
        distance = b.op("Abs", b.op("Sub", b.const(taps.reshape(1, -1), dtype), source))
        if mode == "linear":
            weights = b.op("Relu", b.op("Sub", b.const(1.0, dtype), distance))
        else:
            near = b.op("Add", b.op("Mul", b.op("Mul", b.op(
                "Sub", b.op("Mul", distance, b.const(a + 2, dtype)), b.const(a + 3, dtype)),
                distance), distance), b.const(1.0, dtype))
            far = b.op("Sub", b.op("Mul", b.op("Add", b.op("Mul", b.op(
                "Sub", b.op("Mul", distance, b.const(a, dtype)), b.const(5 * a, dtype)),
                distance), b.const(8 * a, dtype)), distance), b.const(4 * a, dtype))
            weights = b.op("Where", b.op("LessOrEqual", distance, b.const(1.0, dtype)), near,
                           b.op("Where", b.op("Less", distance, b.const(2.0, dtype)), far,
                                b.const(0.0, dtype)))
        fold = np.zeros((len(taps), length))
        fold[np.arange(len(taps)), np.clip(taps, 0, length - 1)] = 1.0     # edge padding
        folded = b.op("MatMul", weights, b.const(fold, dtype))
        if axis == 3:
            folded = b.op("Transpose", folded, perm=[1, 0])
        rows, columns = (out, length) if axis == 2 else (length, out)
        return b.op("Expand", b.op("Reshape", folded, b.const([1, 1, rows, columns], np.int64)),
                    b.const(batch + [rows, columns], np.int64))

    rows = b.op("MatMul", matrix(2), inputs[0])
    b.op("MatMul", rows, matrix(3), out=node.output[0])
    return b.nodes


def lstm_peepholes(graph: _Graph, node):
    """LSTM with peephole weights P: torch-mlir's lowering drops P. Spelled out, forward
    direction with the default activations, as one cell per time step (the sequence length is
    static), sequence_lens holding each batch entry's state after its last step."""
    if node.op_type != "LSTM":
        return None
    inputs = list(node.input) + [""] * (8 - len(node.input))
    attributes = _attributes(node)
    if not inputs[7] or _text(attributes.get("direction", "forward")) != "forward" \
            or attributes.get("layout", 0) or attributes.get("input_forget", 0) \
            or "clip" in attributes or "activations" in attributes:
        return None
    shape = graph.shape(inputs[0])
    if shape is None:
        return None
    steps, batch, _ = shape
    hidden = attributes["hidden_size"]
    dtype = np.float64 if graph.dtype(inputs[0]) == 11 else np.float32
    b = _Builder(graph, node)
    first = b.const([0], np.int64)

    def matrix(name: str) -> str:        # [1, 4H, K] -> [K, 4H]
        return b.op("Transpose", b.op("Squeeze", name, first), perm=[1, 0])

    def part(value: str, index: int, axis: int) -> str:
        return b.op("Gather", value, b.const(np.arange(index * hidden, (index + 1) * hidden),
                                             np.int64), axis=axis)

    def state(name: str) -> str:
        return b.op("Squeeze", name, first) if name else \
            b.const(np.zeros((batch, hidden)), dtype)

    w, r = matrix(inputs[1]), matrix(inputs[2])
    bias = b.op("ReduceSum", b.op("Reshape", inputs[3], b.const([2, 4 * hidden], np.int64)),
                first, keepdims=0) if inputs[3] else b.const(np.zeros(4 * hidden), dtype)
    peephole = b.op("Squeeze", inputs[7], first)
    p_input, p_output, p_forget = (part(peephole, k, 0) for k in range(3))
    h, c = state(inputs[5]), state(inputs[6])
    lengths = b.op("Unsqueeze", inputs[4], b.const([1], np.int64)) if inputs[4] else None
    outputs = []
    for step in range(steps):
        x = b.op("Gather", inputs[0], b.const(step, np.int64), axis=0)
        gates = b.op("Add", b.op("Add", b.op("MatMul", x, w), b.op("MatMul", h, r)), bias)
        i_gate, o_gate, f_gate, c_gate = (part(gates, k, 1) for k in range(4))
        i_gate = b.op("Sigmoid", b.op("Add", i_gate, b.op("Mul", p_input, c)))
        f_gate = b.op("Sigmoid", b.op("Add", f_gate, b.op("Mul", p_forget, c)))
        c_new = b.op("Add", b.op("Mul", f_gate, c), b.op("Mul", i_gate, b.op("Tanh", c_gate)))
        o_gate = b.op("Sigmoid", b.op("Add", o_gate, b.op("Mul", p_output, c_new)))
        h_new = b.op("Mul", o_gate, b.op("Tanh", c_new))
        if lengths is None:
            h, c = h_new, c_new
            outputs.append(h_new)
            continue
        length_type = np.int32 if graph.dtype(inputs[4]) == 6 else np.int64
        running = b.op("Less", b.const(step, length_type), lengths)
        h, c = b.op("Where", running, h_new, h), b.op("Where", running, c_new, c)
        outputs.append(b.op("Where", running, h_new, b.const(0.0, dtype)))
    names = list(node.output) + [""] * (3 - len(node.output))
    if names[0]:
        b.op("Concat", *(b.op("Unsqueeze", y, b.const([0, 1], np.int64)) for y in outputs),
             axis=0, out=names[0])
    for name, value in ((names[1], h), (names[2], c)):
        if name:
            b.op("Unsqueeze", value, first, out=name)
    return b.nodes


def non_max_suppression_score_threshold(graph: _Graph, node):
    """NonMaxSuppression with a score_threshold above the lowest score: torch-mlir's lowering
    asserts at run time that no box scores below it. The threshold becomes
    min(score_threshold, min(scores)). Exact for the single-class case torch-mlir lowers: a box
    below the threshold scores below every box above it, so greedy selection reaches it only
    after all of those, and the lowering keeps the first rows, as many as the output's static
    shape has."""
    if node.op_type != "NonMaxSuppression" or len(node.input) < 5 or not node.input[4]:
        return None
    scores = graph.shape(node.input[1])
    if scores is None or scores[:2] != (1, 1) or graph.shape(node.input[4]) not in ((1,), ()):
        return None
    b = _Builder(graph, node)
    lowest = b.op("Reshape", b.op("ReduceMin", node.input[1], keepdims=0),
                  b.const(list(graph.shape(node.input[4])), np.int64))
    threshold = b.op("Min", node.input[4], lowest)
    b.op("NonMaxSuppression", *node.input[:4], threshold, out=node.output[0],
         **_attributes(node))
    return b.nodes


def stft_real(graph: _Graph, node):
    """STFT of a real signal with a window: torch-mlir lowers it through complex tensors, which
    the Kokkos emitter does not carry. Spelled out as frames gathered at run-time offsets
    (frame_step is an input), the window, and products with cosine and sine matrices."""
    if node.op_type != "STFT" or len(node.input) < 3 or not node.input[2]:
        return None
    signal, window = graph.shape(node.input[0]), graph.shape(node.input[2])
    out = graph.shape(node.output[0])
    if signal is None or window is None or out is None or signal[-1] != 1:
        return None
    batch, length = signal[:2]
    frames, bins = out[1:3]
    size = window[0]
    dtype = np.float64 if graph.dtype(node.input[0]) == 11 else np.float32
    b = _Builder(graph, node)
    samples = b.op("Reshape", node.input[0], b.const([batch, length], np.int64))
    step = b.op("Reshape", b.op("Cast", node.input[1], to=7), b.const([1, 1], np.int64))
    starts = b.op("Mul", b.const(np.arange(frames).reshape(frames, 1), np.int64), step)
    offsets = b.op("Add", starts, b.const(np.arange(size).reshape(1, size), np.int64))
    windowed = b.op("Mul", b.op("Gather", samples, offsets, axis=1), node.input[2])
    angle = 2 * np.pi * np.outer(np.arange(size), np.arange(bins)) / size
    parts = [b.op("Unsqueeze", b.op("MatMul", windowed, b.const(matrix, dtype)),
                  b.const([3], np.int64)) for matrix in (np.cos(angle), -np.sin(angle))]
    b.op("Concat", *parts, axis=3, out=node.output[0])
    return b.nodes


def dft_as_matmul(graph: _Graph, node):
    """DFT: torch-mlir lowers it through complex tensors, which the Kokkos emitter does not
    carry. ONNX already holds complex values as (re, im) pairs in a trailing dimension, so the
    transform is one product with a constant DFT matrix over the signal axis moved last."""
    if node.op_type != "DFT":
        return None
    from .complex_ops import dft_matrix

    shape, out = graph.shape(node.input[0]), graph.shape(node.output[0])
    attributes = _attributes(node)
    axis = attributes.get("axis", 1)
    if len(node.input) > 2 and node.input[2]:
        axis = _constant(graph, node.input[2])
    length = _constant(graph, node.input[1]) if len(node.input) > 1 and node.input[1] else None
    if shape is None or out is None or axis is None or (length is None and len(node.input) > 1
                                                        and node.input[1]):
        return None
    rank = len(shape)
    axis = int(np.asarray(axis).reshape(-1)[0]) % rank
    size = shape[axis]
    n = int(np.asarray(length).reshape(-1)[0]) if length is not None else size
    real_in = shape[-1] == 1
    inverse = bool(attributes.get("inverse", 0))
    outputs = range(n // 2 + 1 if attributes.get("onesided", 0) else n)
    inputs = range(min(size, n))
    dtype = np.float64 if graph.dtype(node.input[0]) == 11 else np.float32
    b = _Builder(graph, node)
    signal = node.input[0]
    if size > n:
        signal = b.op("Slice", signal, b.const([0], np.int64), b.const([n], np.int64),
                      b.const([axis], np.int64))
    perm = [d for d in range(rank - 1) if d != axis] + [axis, rank - 1]
    moved = b.op("Transpose", signal, perm=perm)
    lead = [shape[d] for d in perm[:-2]]
    if graph.model is not None and n >= ONNX_FFT_MIN and _fft_kernel.prefers_fft(
            n, len(inputs), len(outputs), real_in, False):
        return _dft_on_fft_kernel(graph, node, b, moved, lead, perm, len(inputs), n, real_in,
                                  inverse, len(outputs), dtype)
    matrix = dft_matrix(n, inputs, outputs, real_in, False, 1 if inverse else -1,
                        1.0 / n if inverse else 1.0)
    flat = b.op("Reshape", moved, b.const([-1, len(inputs) * shape[-1]], np.int64))
    product = b.op("MatMul", flat, b.const(matrix, dtype))
    spectrum = b.op("Reshape", product, b.const(lead + [len(outputs), 2], np.int64))
    b.op("Transpose", spectrum, perm=[perm.index(d) for d in range(rank)], out=node.output[0])
    return b.nodes


# The FFT kernel's ops as ONNX nodes: importer/onnx_graph.py turns them into the same calls as
# the PyTorch path's lapis::fft custom ops (importer/custom_ops.py).
FFT_DOMAIN = "lapis"
# Shorter DFTs stay products with the DFT matrix, whose rows for the exactly-zero coefficients
# of a real signal (the imaginary parts at 0 and n/2) are exact: ONNX's backend tests hold
# those to 1e-7 absolute, which the kernel's twiddle arithmetic misses at n = 10 (1.5e-5 on
# outputs of 4950, float32-accurate). The saving is small there anyway.
ONNX_FFT_MIN = 32


def _dft_on_fft_kernel(graph: _Graph, node, b: _Builder, moved: str, lead: list[int],
                       perm: list[int], given: int, n: int, real_in: bool, inverse: bool,
                       kept: int, dtype) -> list:
    """A DFT long enough for the O(n log n) kernel (exporter/fft.py's cost rule): the signal,
    moved to [..., given, 1 or 2], as [lines, given(, 2)] through lapis `rfft` (a real signal,
    one-sided) or `fft` / `ifft` (a zero imaginary part appended to a real one), then back."""
    from onnx import TensorProto, helper

    lines = int(np.prod(lead, dtype=np.int64)) if lead else 1
    one_sided = real_in and kept == n // 2 + 1
    if one_sided:
        signal, kind = b.op("Reshape", moved, b.const([lines, given], np.int64)), "rfft"
    else:
        signal = b.op("Reshape", moved, b.const([lines, given, -1], np.int64))
        if real_in:
            signal = b.op("Pad", signal, b.const([0, 0, 0, 0, 0, 1], np.int64))   # im = 0
        kind = "ifft" if inverse else "fft"
    twiddles = b.const(_fft_kernel.twiddles(n, torch_dtype(dtype)).numpy(), dtype)
    scale = b.const([1.0 / n if inverse else 1.0], dtype)
    spectrum = b._name()
    b.nodes.append(helper.make_node(f"lapis_{kind}", [signal, twiddles, scale], [spectrum],
                                    domain=FFT_DOMAIN))
    rows = n // 2 + 1 if one_sided else n
    elem = TensorProto.DOUBLE if dtype == np.float64 else TensorProto.FLOAT
    graph.graph.value_info.append(helper.make_tensor_value_info(spectrum, elem, [lines, rows, 2]))
    if not any(entry.domain == FFT_DOMAIN for entry in graph.model.opset_import):
        graph.model.opset_import.append(helper.make_opsetid(FFT_DOMAIN, 1))
    if rows != kept:
        spectrum = b.op("Slice", spectrum, b.const([0], np.int64), b.const([kept], np.int64),
                        b.const([1], np.int64))
    spectrum = b.op("Reshape", spectrum, b.const(lead + [kept, 2], np.int64))
    b.op("Transpose", spectrum, perm=[perm.index(d) for d in range(len(perm))],
         out=node.output[0])
    return b.nodes


def torch_dtype(dtype):
    import torch
    return torch.float64 if dtype == np.float64 else torch.float32


def _constant(graph: _Graph, name: str):
    """The value of an initializer or Constant node output, else None."""
    from onnx import numpy_helper
    for initializer in graph.graph.initializer:
        if initializer.name == name:
            return numpy_helper.to_array(initializer)
    for node in graph.graph.node:
        if node.op_type == "Constant" and node.output[0] == name:
            return _attributes(node).get("value") is not None and \
                numpy_helper.to_array(_attributes(node)["value"])
    return None


REWRITES = (gelu_tanh_constant, space_to_depth_crd, lp_normalization_of_zero,
            sequence_length_of_split, weighted_softmax_cross_entropy, small_determinant,
            grid_sample_2d, resize_align_corners_by_scales, lstm_peepholes,
            non_max_suppression_score_threshold, stft_real, dft_as_matmul)
