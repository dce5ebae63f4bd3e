"""Transposed copies that only feed readers become strided views of what they copy.

A transformer splits its heads by `linalg.transpose` copies: q, k and v from the [L, B, 3, H,
Dh] rows of the QKV projection into [B, H, L, Dh] buffers, which the attention (and q's
scaling) then read. Where such a copy's buffer is written by nothing else and only read after
it -- by `lapis.attention` operands or the inputs of linalg ops -- and what it copies is not
written until the last of those reads, the readers read the source in place through a
`memref.reinterpret_cast` with the permuted strides (a strided Kokkos View): the copy and its
buffer go. The other way round, the head merge: a transpose of the buffer an attention op
wrote, which nothing else reads, becomes the attention writing a strided view of the
transpose's target. The attention kernels read and write their operands through View
indexing, whatever the strides. A copy read only through such views (the QKV split into q, k
and v, which the head splits then read) folds on a second round: each view becomes the same
window of what the copy copied.
"""
from __future__ import annotations

from .buffers import VIEW_OPS, linalg_inputs, overwrites, root

# The lapis ops there are when this runs (right after tuned_calls) that write their last
# operand and only read the others; any other op in the way stops a fold.
_WRITE_LAST = ("lapis.attention", "lapis.attention_causal", "lapis.attention_masked",
               "lapis.layer_norm")


def fold_transposes(module) -> int:
    """Replace each foldable `linalg.transpose` by a strided view; returns how many. A copy
    whose readers read it through the views an earlier fold made (the QKV split, read by the
    head-split views) folds on the next round."""
    folded, rounds = 0, 0
    while True:
        this_round = 0
        for function in module.body.operations:
            if function.operation.name != "func.func" or not len(function.regions[0].blocks):
                continue
            block = function.regions[0].blocks[0]
            for op in [o.operation for o in block.operations]:
                if op.name == "linalg.transpose" and (_fold(op) or _fold_into_writer(op)):
                    this_round += 1
        folded += this_round
        rounds += 1
        if not this_round or rounds == 4:
            return folded


# Ops that write every element of their last operand, read it not at all, and write it through
# View indexing: they may write a strided view of the transpose's target instead.
_WRITERS = ("lapis.attention", "lapis.attention_causal", "lapis.attention_masked")


def _fold_into_writer(transpose) -> bool:
    """The transpose of a buffer that one attention op wrote and nothing else reads (a
    transformer's head merge): the attention writes a strided view of the transpose's target
    instead, and the buffer and the copy go."""
    from torch_mlir import ir
    source, target = transpose.operands[0], transpose.operands[1]
    if not (isinstance(source, ir.OpResult) and source.owner.name == "memref.alloc"):
        return False
    target_type = ir.MemRefType(target.type)
    strides, offset = target_type.get_strides_and_offset()
    if not target_type.has_static_shape or any(
            target_type.is_dynamic_stride_or_offset(v) for v in [*strides, offset]):
        return False
    users = [u.owner.operation if hasattr(u.owner, "operation") else u.owner
             for u in source.uses]
    writers = [u for u in users if u != transpose and u.name != "memref.dealloc"]
    if len(writers) != 1 or writers[0].name not in _WRITERS or \
            list(writers[0].operands).count(source) != 1 or \
            writers[0].operands[len(writers[0].operands) - 1] != source:
        return False
    writer = writers[0]
    destination = root(target)
    if any(root(v) == destination for v in list(writer.operands)[:-1]):
        return False
    ops = [o.operation for o in transpose.block.operations]
    first, last = ops.index(writer), ops.index(transpose)
    if first > last:
        return False
    # Nothing between the two reads or writes the target's buffer (the write moves earlier).
    for op in ops[first + 1:last]:
        if op.name in ("memref.alloc",) or op.name in VIEW_OPS:
            continue
        if any(root(v) == destination for v in op.operands):
            return False
        if op.name not in _WRITE_LAST and not op.name.startswith("linalg."):
            return False
    if isinstance(destination, ir.OpResult):
        owner = destination.owner
        if owner.name != "memref.alloc" or len(owner.operands):
            return False
        if ops.index(owner) > first:
            owner.move_before(writer)
    elif not isinstance(destination, ir.BlockArgument):
        return False
    permutation = list(ir.DenseI64ArrayAttr(transpose.attributes["permutation"]))
    source_type = ir.MemRefType(source.type)
    view_strides = [0] * len(permutation)
    for k, p in enumerate(permutation):
        view_strides[p] = strides[k]
    with ir.InsertionPoint(writer), writer.location:
        view = _reinterpret(destination, list(source_type.shape), view_strides, offset,
                            source_type.element_type)
    writer.operands[len(writer.operands) - 1] = view
    transpose.erase()
    _erase_unused(source)
    return True


def _fold(transpose) -> bool:
    from torch_mlir import ir
    source, target = transpose.operands[0], transpose.operands[1]
    source_type, target_type = ir.MemRefType(source.type), ir.MemRefType(target.type)
    if not source_type.has_static_shape or not _identity(target_type):
        return False
    strides, offset = source_type.get_strides_and_offset()
    if any(source_type.is_dynamic_stride_or_offset(v) for v in [*strides, offset]):
        return False
    buffer = root(target)
    if not (isinstance(buffer, ir.OpResult) and buffer.owner.name == "memref.alloc"):
        return False
    ops = [o.operation for o in transpose.block.operations]
    start = ops.index(transpose)
    reads = _reads_until_rewritten(ops[start + 1:], buffer, target)
    if not reads:
        return False
    last = max(ops.index(reader) for reader, _ in reads)
    if not _not_written(ops[start + 1:last + 1], root(source)):
        return False
    permutation = list(ir.DenseI64ArrayAttr(transpose.attributes["permutation"]))
    view_strides = [strides[p] for p in permutation]
    # Readers through reinterpret_casts of the copy: the same windows of the source.
    windows = {}
    for reader, index in reads:
        value = reader.operands[index]
        if value != target and value not in windows:
            composed = _compose(value.owner, list(target_type.shape), view_strides, offset)
            if composed is None:
                return False
            windows[value] = composed
    with ir.InsertionPoint(transpose), transpose.location:
        view = _reinterpret(root(source), list(target_type.shape), view_strides, offset,
                            target_type.element_type)
        replaced = {value: _reinterpret(root(source), *composed, target_type.element_type)
                    for value, composed in windows.items()}
    transpose.erase()
    for reader, index in reads:
        value = reader.operands[index]
        reader.operands[index] = replaced[value] if value in replaced else view
    for value in replaced:
        if not any(u.owner.name != "memref.dealloc" for u in value.uses):
            value.owner.erase()
    _erase_unused(target)
    return True


def _reinterpret(base, sizes, strides, offset, element_type):
    """A `memref.reinterpret_cast` of `base` with static sizes, strides and offset."""
    from torch_mlir import ir
    shape = "x".join(str(e) for e in sizes)
    layout = f"strided<[{', '.join(map(str, strides))}], offset: {offset}>"
    view_type = ir.Type.parse(f"memref<{shape}x{element_type}, {layout}>")
    return ir.Operation.create(
        "memref.reinterpret_cast", results=[view_type], operands=[base],
        attributes={"operandSegmentSizes": ir.DenseI32ArrayAttr.get([1, 0, 0, 0]),
                    "static_offsets": ir.DenseI64ArrayAttr.get([offset]),
                    "static_sizes": ir.DenseI64ArrayAttr.get(list(sizes)),
                    "static_strides": ir.DenseI64ArrayAttr.get(list(strides))}).results[0]


def _compose(cast, shape, dim_strides, offset):
    """(sizes, strides, offset) of the window that `cast`, a static reinterpret_cast of a
    row-major buffer of `shape`, reads, when that buffer is instead a view of another with
    `dim_strides` a dimension and `offset`; None where the window is not such a view. Each of
    the cast's dimensions steps along one dimension of `shape` (its stride a multiple of that
    dimension's row-major stride), and the steps and the offset's digits stay inside each
    dimension, so that no index carries into the next one."""
    from torch_mlir import ir
    if cast.name != "memref.reinterpret_cast" or len(cast.operands) != 1:
        return None
    sizes = list(ir.DenseI64ArrayAttr(cast.attributes["static_sizes"]))
    strides = list(ir.DenseI64ArrayAttr(cast.attributes["static_strides"]))
    start = list(ir.DenseI64ArrayAttr(cast.attributes["static_offsets"]))[0]
    if any(v < 0 for v in [*sizes, *strides, start]):     # dynamic (negative sentinels)
        return None
    row_major = [1] * len(shape)
    for d in range(len(shape) - 2, -1, -1):
        row_major[d] = row_major[d + 1] * shape[d + 1]
    digits, rest = [], start
    for d in range(len(shape)):
        digits.append(rest // row_major[d])
        rest %= row_major[d]
    if start >= row_major[0] * shape[0]:
        return None
    reach = list(digits)
    new_strides = []
    for size, stride in zip(sizes, strides):
        if size == 1 or stride == 0:                    # no step at all
            new_strides.append(stride)
            continue
        dims = [d for d in range(len(shape)) if stride % row_major[d] == 0]
        if not dims:
            return None
        d = dims[0]                                     # the outermost that divides it
        step = stride // row_major[d]
        reach[d] += step * (size - 1)
        new_strides.append(step * dim_strides[d])
    if any(r >= e for r, e in zip(reach, shape)):
        return None
    new_offset = offset + sum(digit * s for digit, s in zip(digits, dim_strides))
    return sizes, new_strides, new_offset


def _identity(memref_type) -> bool:
    return "strided" not in str(memref_type) and "affine_map" not in str(memref_type)


def _aliases(buffer) -> set:
    """`buffer` and every view of it."""
    found, pending = {buffer}, [buffer]
    while pending:
        for use in pending.pop().uses:
            user = use.owner.operation if hasattr(use.owner, "operation") else use.owner
            if user.name in VIEW_OPS and use.operand_number == 0:
                found.update(user.results)
                pending.extend(user.results)
    return found


def _reads_until_rewritten(ops, buffer, target):
    """[(op, operand index)]: the reads of `target` among `ops` (those after the transpose that
    fills it) up to the first op that writes `buffer` again (bufferization reuses buffers);
    None when something in that range reads `buffer` through another view or writes part of
    it, or does what this cannot tell."""
    aliases = _aliases(buffer)
    reads = []
    for op in ops:
        touching = [(i, v) for i, v in enumerate(op.operands) if v in aliases]
        if not touching or op.name in VIEW_OPS:
            continue
        if op.name == "memref.dealloc":
            break
        writes = [i for i, _ in touching if not _only_reads(op, i)]
        if writes:
            # A whole new value in the buffer ends the range, if nothing of the old is read.
            if len(writes) == len(touching) and \
                    all(op.operands[i] == target and overwrites(op, i) for i in writes):
                break
            return None
        if any(v != target and not _window(v, target) for _, v in touching):
            return None
        reads += [(op, i) for i, _ in touching]
    return reads


def _window(value, target) -> bool:
    """`value` is a static reinterpret_cast of the copy's buffer `target` itself."""
    from torch_mlir import ir
    return isinstance(value, ir.OpResult) and value.owner.name == "memref.reinterpret_cast" \
        and value.owner.operands[0] == target


def _only_reads(op, operand: int) -> bool:
    """`op` reads operand `operand` and writes nothing through it."""
    if op.name in _WRITE_LAST:
        return operand < len(op.operands) - 1
    if op.name.startswith("linalg."):
        return operand < _inputs(op)
    return False


def _inputs(op) -> int:
    """How many of a linalg op's operands are its inputs (all but the last where not told)."""
    told = linalg_inputs(op)
    return len(op.operands) - 1 if told < 0 else told


def _not_written(ops, buffer) -> bool:
    """No op of `ops` writes `buffer` (or is one whose writes this cannot tell)."""
    for op in ops:
        if op.name in ("memref.alloc", "memref.dealloc") or op.name in VIEW_OPS:
            continue
        if op.name in _WRITE_LAST:
            written = [op.operands[len(op.operands) - 1]]
        elif op.name.startswith("linalg."):
            written = list(op.operands)[_inputs(op):]
        elif op.name in ("arith.constant",):
            continue
        else:
            return False
        if any(root(value) == buffer for value in written):
            return False
    return True


def _erase_unused(value) -> None:
    """Erase the view chain and alloc behind `value` once nothing but deallocs uses it."""
    from torch_mlir import ir
    while isinstance(value, ir.OpResult):
        owner = value.owner
        users = [u.owner for u in value.uses]
        if any(u.name != "memref.dealloc" for u in users):
            return
        for user in users:
            user.erase()
        parent = owner.operands[0] if owner.name in VIEW_OPS else None
        owner.erase()
        if parent is None:
            return
        value = parent
