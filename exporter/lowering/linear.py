"""Linear layers on matrix-product kernels instead of the convolution tiles.

The importer runs `linear` as a 1x1 convolution of 1x1 images (importer/graph_passes.py), and
conv.py makes it a `lapis.conv2d_nchw` with its bias (and an in-place ReLU) folded in. Such a
call becomes `lapis.linear`: on CUDA x W^T on the tensor cores (kokkos_support/lapis/
gemm_tf32.hpp, float32, the weight kept as [out][in]); on host backends the packed AVX-512 /
AVX2 kernel of gemm_host.hpp (float32 and float64, the op marked `packed`: the emitter packs
the weight into the kernel's panels, tuned_ops.pack_linear_weight). The elementwise activation
after it (SiLU, GELU, tanh, ReLU, sigmoid) goes into its epilogue when the layer's own output
is read by nothing else, also where the activation reads the layer's rows through a reshape
(a transformer's feed-forward: [B*S, C] read as [B, S, C]). A residual add right after a
layer without an activation (a transformer's `x + linear2(...)`, read the same way) goes into
the epilogue too. On host backends, consecutive such
layers (each one's output read only by the next) become one `lapis.linear_chain`
(chain_linear_layers): gemm.hpp's lapis::linear_chain takes a block of rows through all of
them while its activations are in cache, in one parallel_for; where the last layer's output is
only copied into the function's result, the chain writes the result itself.
"""
from __future__ import annotations

from ..tuned_ops import (BF16_ATTRIBUTE, BF16_ROUND, CONV2D, FEEDS_LINEAR, HOST_BACKENDS,
                         LINEAR, LINEAR_CHAIN, PACKED_ATTRIBUTE, READS_LINEAR)
from .buffers import VIEW_OPS, constant_value, root
from .conv import _dead_after, _next_past_allocs, neighbour

# Body of the elementwise op after a linear layer (block argument x, constants by value), as
# torch-mlir lowers each activation -> the epilogue's name for it.
_BODIES = {
    ("arith.negf", "math.exp", "arith.addf", "arith.divf", "arith.mulf"): "silu",
    ("arith.divf", "math.erf", "arith.addf", "arith.mulf", "arith.mulf"): "gelu",
    ("math.tanh",): "tanh",
    ("arith.cmpf", "arith.select"): "relu",
    ("arith.negf", "math.exp", "arith.addf", "arith.divf"): "sigmoid",
}
_CONSTANTS = {"silu": [1.0, 1.0], "gelu": [1.41421354, 1.0, 0.5], "tanh": [], "relu": [0.0, 0.0],
              "sigmoid": [1.0, 1.0]}


def replace_linear_convs(module, backend: str = "cuda") -> int:
    """Swap every `lapis.conv2d_nchw` that is a linear layer (1x1 filter over 1x1 images,
    stride 1, no padding or residual; float32, or on host backends float64 too) for
    `lapis.linear`; returns how many."""
    host = backend in HOST_BACKENDS
    elements = ("f32", "f64") if host else ("f32",)
    replaced = 0
    for function in module.body.operations:
        if function.operation.name != "func.func" or not len(function.regions[0].blocks):
            continue
        for op in list(function.regions[0].blocks[0].operations):
            op = op.operation
            if op.name == CONV2D and _is_linear(op, elements):
                _replace(op, packed=host)
                replaced += 1
    return replaced


def chain_linear_layers(module) -> int:
    """Runs of two or more packed `lapis.linear` ops, each starting from its bias and writing a
    buffer of its own that only the next one reads, become one `lapis.linear_chain` (the
    buffers between them go); returns how many chains."""
    chains = 0
    for function in module.body.operations:
        if function.operation.name != "func.func" or not len(function.regions[0].blocks):
            continue
        runs, taken = [], 0
        ops = [op.operation for op in function.regions[0].blocks[0].operations]
        for index, op in enumerate(ops):
            if index < taken or not _chainable(op):
                continue
            run = [op]
            while (after := _next_past_allocs(run[-1])) is not None and _chainable(after) and \
                    after.operands[0] == run[-1].operands[-1] and \
                    _only_between(run[-1].operands[-1], run[-1], after):
                run.append(after)
            taken = ops.index(run[-1]) + 1
            if len(run) > 1:
                runs.append(run)
        for run in runs:   # after the walk: erasing ops invalidates the list
            _replace_chain(run)
        chains += len(runs)
    return chains


def mark_linear_readers(module) -> int:
    """CUDA: where only linear layers touch a buffer -- writing it as their output y or reading
    it as their input x (through views or not; a wide MLP's hidden layers, a transformer's
    feed-forward pair, whose buffers bufferization reuses from layer to layer) -- its writers
    get FEEDS_LINEAR and its readers READS_LINEAR; returns how many buffers. Under --precision
    tf32 the writers then store their outputs rounded to tf32 and the readers' tiles read them
    as they are, with no rounding pass of their own (emit/matmul_handlers.py)."""
    from torch_mlir import ir
    marked = 0
    for function in module.body.operations:
        if function.operation.name != "func.func" or not len(function.regions[0].blocks):
            continue
        buffers = []
        for op in function.regions[0].blocks[0].operations:
            op = op.operation
            if op.name == LINEAR and PACKED_ATTRIBUTE not in op.attributes:
                buffer = root(op.operands[-1])
                if buffer not in buffers:
                    buffers.append(buffer)
        for buffer in buffers:
            found = _linear_users(buffer)
            if found is None:
                continue
            for writer in found[0]:
                writer.attributes[FEEDS_LINEAR] = ir.UnitAttr.get()
            for reader in found[1]:
                reader.attributes[READS_LINEAR] = ir.UnitAttr.get()
            marked += 1
    return marked


def bf16_linear_layers(module) -> int:
    """CUDA --precision bf16: every float32 linear layer of 16 output columns or more (the
    tensor-core ones; a regression head stays float32) gets BF16_ATTRIBUTE and reads x in
    bfloat16. A buffer that only such layers touch (mark_linear_readers' chains: a wide MLP's
    hidden layers, a transformer's feed-forward pair, also where a regression head reads it) is
    allocated in bfloat16, views and all, so its writers store bfloat16 and its readers read
    half the bytes; any other input is rounded into a bfloat16 buffer of its own first
    (BF16_ROUND). Returns how many layers."""
    from torch_mlir import ir
    layers = 0
    for function in module.body.operations:
        if function.operation.name != "func.func" or not len(function.regions[0].blocks):
            continue
        ops = [op.operation for op in function.regions[0].blocks[0].operations
               if op.operation.name == LINEAR and PACKED_ATTRIBUTE not in op.operation.attributes
               and _f32(op.operation.operands[-1])
               and ir.MemRefType(op.operation.operands[1].type).shape[0] >= 16]
        for op in ops:
            op.attributes[BF16_ATTRIBUTE] = ir.UnitAttr.get()
        retyped = []
        for op in ops:
            buffer = root(op.operands[-1])
            found = None if buffer in retyped else _linear_users(buffer, heads=True)
            if found and all(BF16_ATTRIBUTE in user.attributes for user in found[0]) and \
                    all(BF16_ATTRIBUTE in user.attributes or _f32(user.operands[-1])
                        for user in found[1]):
                _to_bf16(buffer)
                retyped.append(buffer)
        for op in ops:
            if _f32(op.operands[0]):
                _round_input(op)
        layers += len(ops)
    return layers


def _f32(value) -> bool:
    from torch_mlir import ir
    return isinstance(ir.MemRefType(value.type).element_type, ir.F32Type)


def _to_bf16(value) -> None:
    """`value` and every view of it retyped to bfloat16 elements (same shape and layout)."""
    from torch_mlir import ir
    old = ir.MemRefType(value.type)
    value.set_type(ir.MemRefType.get(old.shape, ir.BF16Type.get(), old.layout, old.memory_space,
                                     loc=ir.Location.unknown()))
    for use in value.uses:
        owner = use.owner.operation if hasattr(use.owner, "operation") else use.owner
        if owner.name in VIEW_OPS and owner.operands[0] == value:
            _to_bf16(owner.results[0])


def _round_input(layer) -> None:
    """A bfloat16 buffer of x's extents before `layer`, BF16_ROUND filling it from x, read by
    the layer instead; freed after it."""
    from torch_mlir import ir

    from ..diagnostics import op_location
    x = layer.operands[0]
    shape = ir.MemRefType(x.type)
    index = ir.IndexType.get()
    label = op_location(layer.location)   # "l0/convolution" -> "l0/input_bf16"
    label = "" if any(c in label for c in "\"(: ") else label
    name = (label.rpartition("/")[0] or label or "linear") + "/input_bf16"
    with ir.InsertionPoint(layer), ir.Location.name(name, childLoc=layer.location):
        sizes = []
        for d, extent in enumerate(shape.shape):
            if shape.is_dynamic_dim(d):
                position = ir.Operation.create(
                    "arith.constant", results=[index],
                    attributes={"value": ir.IntegerAttr.get(index, d)}).result
                sizes.append(ir.Operation.create("memref.dim", results=[index],
                                                 operands=[x, position]).result)
        alloc = ir.Operation.create(
            "memref.alloc", results=[ir.MemRefType.get(shape.shape, ir.BF16Type.get())],
            operands=sizes,
            attributes={"operandSegmentSizes": ir.DenseI32ArrayAttr.get([len(sizes), 0])})
        ir.Operation.create(BF16_ROUND, operands=[x, alloc.result])
    layer.operands[0] = alloc.result
    after = neighbour(layer, 1)
    with ir.InsertionPoint(after) if after is not None else \
            ir.InsertionPoint(layer.block), layer.location:
        ir.Operation.create("memref.dealloc", operands=[alloc.result])


def _linear_users(buffer, heads: bool = False):
    """(writers, readers) of an alloc that nothing but linear layers touches (views and its
    dealloc aside), each of them as its output or as its input x and not otherwise; at least
    one of each. Else None. The readers have 16 output columns or more (the tensor-core
    tiles): a regression head keeps float32 products of what the layer before computed
    (PyTorch's TF32 head does too: the wide MLP 1.2e-3 from float64 with a rounded head's
    input, 8.5e-4 without, PyTorch 8.8e-4); with `heads`, readers of any width."""
    from torch_mlir import ir
    if not (isinstance(buffer, ir.OpResult) and buffer.owner.name == "memref.alloc"):
        return None
    writers, readers = [], []
    for user in _users(buffer):
        if user.name == "memref.dealloc":
            continue
        if user.name != LINEAR or PACKED_ATTRIBUTE in user.attributes:
            return None
        touches = [root(v) == buffer for v in user.operands]
        if touches[-1] and not any(touches[:-1]):
            group = writers
        elif touches[0] and not any(touches[1:]) and \
                (heads or ir.MemRefType(user.operands[1].type).shape[0] >= 16):
            group = readers
        else:
            return None
        if user not in group:
            group.append(user)
    return (writers, readers) if writers and readers else None


def _users(value):
    """The ops that use `value` or a view of it (anywhere, nested regions too)."""
    for use in value.uses:
        owner = use.owner.operation if hasattr(use.owner, "operation") else use.owner
        if owner.name in VIEW_OPS and owner.operands[0] == value:
            yield from _users(owner.results[0])
        else:
            yield owner


def _chainable(op) -> bool:
    from torch_mlir import ir
    return (op.name == LINEAR and PACKED_ATTRIBUTE in op.attributes and len(op.operands) == 4
            and ir.StringAttr(op.attributes["init"]).value == "bias")


def _only_between(buffer, writer, reader) -> bool:
    """`buffer` is an alloc that `writer` fills and `reader` reads, and nothing else touches
    but a dealloc."""
    from torch_mlir import ir
    if not (isinstance(buffer, ir.OpResult) and buffer.owner.name == "memref.alloc"):
        return False
    owners = [use.owner for use in buffer.uses]
    return (sum(o == writer for o in owners) == 1 and sum(o == reader for o in owners) == 1
            and all(o in (writer, reader) or o.name == "memref.dealloc" for o in owners))


def _replace_chain(run) -> None:
    from torch_mlir import ir
    operands = [run[0].operands[0]]
    for layer in run:
        operands += [layer.operands[1], layer.operands[2]]
    output, copied = run[-1].operands[-1], _copied_to_argument(run[-1].operands[-1], run[-1])
    operands.append(copied[0].operands[1] if copied else output)
    activations = ",".join(ir.StringAttr(layer.attributes["activation"]).value for layer in run)
    with ir.InsertionPoint(run[-1]), run[0].location:
        ir.Operation.create(LINEAR_CHAIN, operands=operands, attributes={
            "activations": ir.StringAttr.get(activations)})
    between = [layer.operands[-1].owner for layer in run[:-1]]
    for layer in run:
        layer.erase()
    if copied:   # the chain writes the function's result itself: no copy kernel after it
        copy, collapse = copied
        copy.erase()
        collapse.erase()
        between.append(output.owner)
    for alloc in between:
        for use in list(alloc.result.uses):
            use.owner.erase()   # deallocs
        alloc.erase()


def _copied_to_argument(buffer, writer):
    """(copy, collapse) when `buffer` is an alloc that `writer` fills and that is then only
    collapsed to rank 2 (`[N, C, 1, 1]` -> `[N, C]`) and copied into a function argument (the
    result) of that shape; else None."""
    from torch_mlir import ir
    if not (isinstance(buffer, ir.OpResult) and buffer.owner.name == "memref.alloc"):
        return None
    owners = [use.owner for use in buffer.uses]
    collapse = next((o for o in owners if o.name == "memref.collapse_shape"), None)
    if collapse is None or len(owners) != 2 or sum(o == writer for o in owners) != 1:
        return None
    uses = [use.owner for use in collapse.results[0].uses]
    if len(uses) != 1 or uses[0].name != "memref.copy" or uses[0].operands[0] != \
            collapse.results[0]:
        return None
    copy, target = uses[0], uses[0].operands[1]
    if not isinstance(target, ir.BlockArgument) or str(target.type) != str(
            collapse.results[0].type) or ir.MemRefType(target.type).rank != 2:
        return None
    return copy, collapse


def _is_linear(conv, elements) -> bool:
    from torch_mlir import ir
    import numpy as np
    if "residual" in conv.attributes or list(ir.DenseI64ArrayAttr(
            conv.attributes["padding"])) != [0, 0]:
        return False
    if [int(v) for v in np.asarray(conv.attributes["strides"])] != [1, 1]:
        return False
    source, weight, target = (ir.MemRefType(conv.operands[i].type) for i in (0, 1, -1))
    return (str(target.element_type) in elements and list(weight.shape[2:]) == [1, 1]
            and list(source.shape[2:]) == [1, 1] and list(target.shape[2:]) == [1, 1])


def _replace(conv, packed: bool) -> None:
    from torch_mlir import ir
    operands = list(conv.operands)
    init = ir.StringAttr(conv.attributes["init"]).value
    activation = "relu" if ir.BoolAttr(conv.attributes["relu"]).value else "none"
    at, folded, view = conv, None, None
    if activation == "none":
        after = _next_past_allocs(conv)
        source = operands[-1]
        # The activation may read the layer's rows through a reshape ([B*S, C, 1, 1] as
        # [B, S, C, 1, 1]: a transformer's feed-forward); the layer then writes the
        # activation's buffer through the inverse reshape.
        if _reshapes_into_next(after, source):
            after = _next_past_allocs(after)
        if after is not None and len(after.operands) and _is_expand_of(after.operands[0], source):
            view, source = after.operands[0].owner, after.operands[0]
        found = _activation(after, source)
        # In place, or into a buffer of its own while the layer's own output is read by
        # nothing else (its start is the bias or zero, not what the buffer held) -- and never
        # into a buffer the layer reads (bufferization reuses the input's buffer for the
        # activation's result when the input dies at the layer).
        reads = {root(value) for value in operands[:-1]}
        in_place = found and after.operands[1] == source
        if found and root(after.operands[1]) not in reads and (in_place or (
                init != "accumulate" and _dead_after(after, operands[-1]))):
            activation, at, folded = found, after, after
            if not in_place:
                operands[-1] = after.operands[1] if view is None else \
                    _reshaped_back(view, after.operands[1], after)
                if operands[-1] is None:
                    activation, at, folded = "none", conv, None
                    operands[-1] = conv.operands[-1]
    residual = None
    if activation == "none" and init != "accumulate":
        residual = _residual_after(conv, operands)
        if residual is not None:
            other, result, add, mine = residual
            own = operands[-1]
            operands[-1:] = [other, result]
            at, folded = conv, add
    with ir.InsertionPoint(at), conv.location:
        ir.Operation.create(LINEAR, operands=operands, attributes={
            "init": ir.StringAttr.get(init), "activation": ir.StringAttr.get(activation),
            **({PACKED_ATTRIBUTE: ir.UnitAttr.get()} if packed else {}),
            **({"residual": ir.UnitAttr.get()} if residual is not None else {})})
    conv.erase()
    if folded is not None:
        folded.erase()
        if view is not None and not list(view.results[0].uses):
            view.erase()
    if residual is not None:    # the layer's own buffer (and its view) now unused
        from .transposes import _erase_unused
        _erase_unused(mine if mine != own else own)


def _residual_after(conv, operands):
    """A residual connection after a linear layer: the first op after it
    (past allocs and views) is `linalg.generic` adding the layer's rows (or a row-major reshape
    of them, a transformer's [B*S, C] read as [B, S, C]) to another value of the same shape,
    and nothing reads the layer's own buffer again. The allocs and views in between move
    before the layer; returns (the other value, the sum's buffer, both shaped as the layer's
    output, and the add) or None. The sum's buffer is neither the other value's (the host
    kernel keeps partial sums in its output between blocks of k) nor one the layer reads."""
    from torch_mlir import ir
    from .buffers import VIEW_OPS
    output = operands[-1]
    between, step = [], 1
    while (op := neighbour(conv, step)) is not None and (
            op.name == "memref.alloc" or op.name in VIEW_OPS):
        between.append(op)
        step += 1
    if op is None or op.name != "linalg.generic" or len(op.operands) != 3:
        return None
    first, second, result = op.operands
    rank = ir.MemRefType(result.type).rank
    if any(str(v.type) != str(result.type) or "strided" in str(v.type)
           or "affine_map" in str(v.type) for v in (first, second)):
        return None
    maps = ir.ArrayAttr(op.attributes["indexing_maps"])
    if any(str(ir.AffineMapAttr(m).value) != str(ir.AffineMap.get_identity(rank))
           for m in maps) or any("parallel" not in str(t)
                                 for t in ir.ArrayAttr(op.attributes["iterator_types"])):
        return None
    block = op.regions[0].blocks[0]
    body = [o.operation for o in block.operations]
    if [o.name for o in body] != ["arith.addf", "linalg.yield"] or \
            set(body[0].operands) != set(block.arguments[:2]) or \
            body[1].operands[0] != body[0].results[0]:
        return None
    mine = next((v for v in (first, second) if v == output or _is_expand_of(v, output)), None)
    if mine is None or first == second:
        return None
    other = second if mine == first else first
    reads = {root(v) for v in operands[:-1]}
    if root(result) in reads or root(other) == root(result) or root(other) == root(output) \
            or root(result) == root(output) or not _dead_after(op, output):
        return None
    for moved in between:
        moved.move_before(conv)
    if mine == output:
        return other, result, op, mine
    expand = mine.owner
    other_rows, result_rows = (_reshaped_back(expand, v, conv) for v in (other, result))
    return other_rows, result_rows, op, mine


def _reshapes_into_next(op, buffer) -> bool:
    """`op` is an expand_shape of `buffer` (identity layouts) that the op after it reads (the
    same view may serve later ops too: bufferization reuses buffers, CSE merges their views)."""
    if op is None or op.name != "memref.expand_shape" or op.operands[0] != buffer:
        return False
    after = _next_past_allocs(op)
    return after is not None and op.results[0] in list(after.operands) and \
        "strided" not in str(op.results[0].type) and "strided" not in str(buffer.type)


def _is_expand_of(value, buffer) -> bool:
    from torch_mlir import ir
    return isinstance(value, ir.OpResult) and value.owner.name == "memref.expand_shape" and \
        value.owner.operands[0] == buffer


def _reshaped_back(expand, target, before):
    """`target` (shaped as `expand`'s result) collapsed to the shape `expand` read, by a view
    made just before `before`; None when `target` is not a plain row-major buffer."""
    from torch_mlir import ir
    if str(target.type) != str(expand.results[0].type):
        return None
    with ir.InsertionPoint(before), before.location:
        return ir.Operation.create(
            "memref.collapse_shape", results=[expand.operands[0].type], operands=[target],
            attributes={"reassociation": expand.attributes["reassociation"]}).results[0]


def _activation(op, buffer) -> str | None:
    """The activation `op` applies, if it is `linalg.generic ins(buffer) outs(buffer or
    another of the same shape)`, elementwise (identity maps, parallel loops), with one of _BODIES."""
    from torch_mlir import ir
    if op is None or op.name != "linalg.generic" or len(op.operands) != 2:
        return None
    source, result = op.operands
    if source != buffer or str(source.type) != str(result.type):
        return None
    maps = ir.ArrayAttr(op.attributes["indexing_maps"])
    identity = str(ir.AffineMap.get_identity(ir.MemRefType(buffer.type).rank))
    if any(str(ir.AffineMapAttr(m).value) != identity for m in maps) or any(
            "parallel" not in str(t) for t in ir.ArrayAttr(op.attributes["iterator_types"])):
        return None
    block = op.regions[0].blocks[0]
    body = [o.operation for o in block.operations]
    names = tuple(o.name for o in body[:-1])
    name = _BODIES.get(names)
    if name is None or body[-1].operands[0] != body[-2].results[0]:
        return None
    x = block.arguments[0]
    # Each op reads x or the op before it (or constants): a chain, no other values.
    produced = {x} | {r for o in body[:-1] for r in o.results}
    constants = []
    for o in body[:-1]:
        for value in o.operands:
            if value in produced:
                continue
            number = constant_value(value)
            if number is None:
                return None
            constants.append(number)
    expected = _CONSTANTS[name]
    if len(constants) != len(expected) or any(
            abs(c - e) > 1e-6 * max(1.0, abs(e)) for c, e in zip(constants, expected)):
        return None
    if name == "relu":
        compare, select = body[0], body[1]
        if compare.operands[0] != x or list(select.operands)[1] != x:
            return None
        from .conv import CMPF_UGT
        if ir.IntegerAttr(compare.attributes["predicate"]).value != CMPF_UGT:
            return None
    elif name == "sigmoid":
        if body[0].operands[0] != x:
            return None
    elif body[0].operands[0] != x or x not in list(body[-2].operands):
        return None     # silu and gelu end in x * ...; tanh's one op reads x
    return name
