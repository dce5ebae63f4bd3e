"""Tuned convolutions and pooling: which linalg ops the lowering hands to the kernels of
kokkos_support/lapis/conv.hpp and pooling.hpp instead of loop nests, with the ops around them
folded in.

A replaced op becomes an op of the `lapis` dialect (unregistered: the passes after it leave it
alone; exporter/tuned_ops.py names them) with the same operands; the emitter turns it into a
call of the C++ kernel and packs its weight as tuned_ops.pack_conv_weight says.
"""
from __future__ import annotations

from ..tuned_ops import CONV2D, HOST_BACKENDS, MAX_POOL, ZEROED_ATTRIBUTE
from .buffers import (VIEW_OPS, constant_value, fill_value, linalg_inputs, neighbour,
                      overwrites, root, untouched_between, writes_only)

CMPF_UGT = 9  # arith::CmpFPredicate::UGT


def replace_linalg_ops(module, weight_count: int, backend: str = "serial") -> int:
    """Swap `linalg.conv_2d_nchw_fchw` on buffers whose filter is a weight argument used only
    there for `lapis.conv2d_nchw`, folding in the ops around it that the kernel does as well:
    the bias broadcast (or zero fill) before it, an in-place ReLU or a residual add (+ ReLU)
    after it and, off the host backends, the zero padding of its input; and a max pool with
    its -inf padding (`lapis.max_pool2d_nchw`). Returns how many convolutions were
    replaced."""
    module.context.allow_unregistered_dialects = True
    replaced = 0
    for function in module.body.operations:
        if function.operation.name != "func.func":
            continue
        block = function.regions[0].blocks[0]
        for op in list(block.operations):
            op = op.operation
            if op.name == "linalg.conv_2d_nchw_fchw" and _is_packable_weight(
                    op.operands[1], weight_count):
                _replace_conv(op, fold_padding=backend not in HOST_BACKENDS)
                replaced += 1
            elif op.name == "linalg.pooling_nchw_max":
                _replace_max_pool(op)
    return replaced


def _replace_max_pool(pool) -> bool:
    """`linalg.pooling_nchw_max` over a -inf padded copy of X -> `lapis.max_pool2d_nchw` that
    reads X and skips the taps outside it (the fill and the copy go), with the -inf fill of
    its output folded in as well when it is the op before (past allocs)."""
    from torch_mlir import ir
    source, window, target = pool.operands
    unpadded = _unpadded_source(source, float("-inf"))
    if not unpadded:
        return False
    unpadded_source, offsets, copy, view, fill, alloc = unpadded
    if root(unpadded_source) == root(target) or not untouched_between(
            copy, pool, root(unpadded_source)):
        return False
    kernel = ir.MemRefType(window.type).shape
    folded = [pool, copy, view, fill, alloc]
    init = "accumulate"
    step = -1
    while (before := neighbour(pool, step)) is not None and before.name == "memref.alloc":
        step -= 1
    if before is not None and writes_only(before, target) and \
            fill_value(before) == float("-inf"):
        init = "lowest"
        folded.insert(1, before)
    with ir.InsertionPoint(pool), pool.location:
        ir.Operation.create(MAX_POOL, operands=[unpadded_source, target], attributes={
            "kernel": ir.DenseI64ArrayAttr.get(list(kernel)),
            "strides": pool.attributes["strides"],
            "dilations": pool.attributes["dilations"],
            "padding": ir.DenseI64ArrayAttr.get(offsets),
            "init": ir.StringAttr.get(init)})
    for op in folded:                          # users before the buffers they use
        op.erase()
    if isinstance(window, ir.OpResult) and not list(window.uses):
        window.owner.erase()
    return True


def _replace_conv(conv, fold_padding: bool) -> None:
    from torch_mlir import ir

    source, weight, target = conv.operands
    folded = []                               # ops the new op does; erased after it is made
    padding = [0, 0]
    if unpadded := _unpadded_source(source):
        unpadded_source, offsets, copy, view, fill, alloc = unpadded
        # The copy into the padded buffer is what keeps the input when the output reuses its
        # buffer. Where the copy stays, the zero fill can still go: the border of a buffer of
        # its own is zero from initialize() on and nothing else writes it.
        if (fold_padding and root(unpadded_source) != root(target)
                and untouched_between(copy, conv, root(unpadded_source))):
            source, padding = unpadded_source, offsets
            folded += [copy, view, fill, alloc]
        else:
            folded.append(fill)
            alloc.attributes[ZEROED_ATTRIBUTE] = ir.UnitAttr.get()
    init, bias = "accumulate", []
    before = neighbour(conv, -1)
    if before is not None and writes_only(before, target):
        if before.name == "linalg.broadcast" and list(before.attributes["dimensions"]) == [0, 2, 3]:
            init, bias = "bias", [before.operands[0]]
            folded.append(before)
        elif fill_value(before) == 0.0:
            init = "zero"
            folded.append(before)
    after = neighbour(conv, +1)
    relu = after is not None and _is_inplace_relu(after, target)
    residual = []
    if relu:
        folded.append(after)
    elif (added := _residual_add(_next_past_allocs(conv), target)):
        after = _next_past_allocs(conv)
        other, result, relu = added
        # The kernel writes relu(conv + other) to `result`; the convolution's own buffer then
        # holds nothing, which is fine when it is its own buffer and nothing reads it again.
        if (result == target or (init != "accumulate" and _dead_after(after, target)
                                 and root(result) != root(source))) \
                and root(other) != root(result) and root(other) != root(target):
            residual, target = [other], result
            folded.append(after)
            between = [neighbour(conv, step) for step in range(1, _steps_to(conv, after))]
            if isinstance(result, ir.OpResult) and result.owner in between:
                result.owner.move_before(conv)   # made between the two: now used earlier
        else:
            relu = False
    with ir.InsertionPoint(conv), conv.location:
        ir.Operation.create(CONV2D, operands=[source, weight, *bias, *residual, target],
                            attributes={
            "strides": conv.attributes["strides"],
            "dilations": conv.attributes["dilations"],
            "padding": ir.DenseI64ArrayAttr.get(padding),
            "init": ir.StringAttr.get(init),
            "relu": ir.BoolAttr.get(relu),
            **({"residual": ir.BoolAttr.get(True)} if residual else {})})
    conv.erase()
    for op in folded:                          # users before the buffers they use
        op.erase()


def _unpadded_source(padded, value: float = 0.0):
    """For a buffer made as `alloc; fill value; copy X into subview [0, 0, ph, pw]` and
    otherwise read only by the consumer: (X, [ph, pw], copy, subview, fill, alloc); else None."""
    from torch_mlir import ir
    alloc = padded.owner
    if not isinstance(alloc, ir.Operation) and hasattr(alloc, "operation"):
        alloc = alloc.operation
    if not isinstance(alloc, ir.Operation) or alloc.name != "memref.alloc":
        return None
    users = [use.owner.operation for use in padded.uses]
    fills = [u for u in users if fill_value(u) == value and u.operands[-1] == padded]
    views = [u for u in users if u.name == "memref.subview"]
    if len(users) != 3 or len(fills) != 1 or len(views) != 1:
        return None
    view = views[0]
    copies = [use.owner.operation for use in view.results[0].uses]
    if (len(view.operands) != 1 or len(copies) != 1 or copies[0].name != "memref.copy"
            or copies[0].operands[1] != view.results[0]):
        return None
    offsets = list(ir.DenseI64ArrayAttr(view.attributes["static_offsets"]))
    strides = list(ir.DenseI64ArrayAttr(view.attributes["static_strides"]))
    if len(offsets) != 4 or offsets[:2] != [0, 0] or any(s != 1 for s in strides):
        return None
    return copies[0].operands[0], offsets[2:], copies[0], view, fills[0], alloc


def _is_inplace_relu(op, buffer) -> bool:
    """linalg.generic ins(buffer) outs(buffer): select(cmpf ugt(x, 0), x, 0)."""
    if op.name != "linalg.generic" or list(op.operands) != [buffer, buffer]:
        return False
    body = [o.operation for o in op.regions[0].blocks[0].operations]
    if [o.name for o in body] != ["arith.cmpf", "arith.select", "linalg.yield"]:
        return False
    compare, select, done = body
    x = op.regions[0].blocks[0].arguments[0]
    zero = compare.operands[1]
    from torch_mlir import ir
    return (ir.IntegerAttr(compare.attributes["predicate"]).value == CMPF_UGT
            and compare.operands[0] == x and constant_value(zero) == 0.0
            and list(select.operands) == [compare.results[0], x, zero]
            and done.operands[0] == select.results[0])


def _next_past_allocs(op):
    """The op after `op`, past any memref.alloc (which touch no data)."""
    step = 1
    while (following := neighbour(op, step)) is not None and following.name == "memref.alloc":
        step += 1
    return following


def _steps_to(first, last) -> int:
    ops = [o.operation for o in first.block.operations]
    return (next(i for i, o in enumerate(ops) if o == last)
            - next(i for i, o in enumerate(ops) if o == first))


def _residual_add(op, buffer):
    """For `linalg.generic ins(buffer, other) outs(result)` (either input order, every map the
    identity, all loops parallel) computing `buffer + other`, optionally then ReLU:
    (other, result, relu); else None."""
    from torch_mlir import ir
    if op is None or op.name != "linalg.generic" or len(op.operands) != 3:
        return None
    first, second, result = op.operands
    if buffer not in (first, second) or first == second:
        return None
    if any(str(t) != str(buffer.type) or "strided" in str(t) or "affine_map" in str(t)
           for t in (first.type, second.type, result.type)):
        return None
    maps = ir.ArrayAttr(op.attributes["indexing_maps"])
    if any(str(ir.AffineMapAttr(m).value) != str(ir.AffineMap.get_identity(4)) for m in maps):
        return None
    if any("parallel" not in str(t) for t in ir.ArrayAttr(op.attributes["iterator_types"])):
        return None
    block = op.regions[0].blocks[0]
    body = [o.operation for o in block.operations]
    a, b = block.arguments[0], block.arguments[1]
    if not body or body[0].name != "arith.addf" or set(body[0].operands) != {a, b} \
            or len(body[0].operands) != 2 or a == b:
        return None
    total = body[0].results[0]
    names = [o.name for o in body]
    if names == ["arith.addf", "linalg.yield"]:
        relu = False
        value = total
    elif names == ["arith.addf", "arith.cmpf", "arith.select", "linalg.yield"]:
        compare, select = body[1], body[2]
        zero = compare.operands[1]
        if not (ir.IntegerAttr(compare.attributes["predicate"]).value == CMPF_UGT
                and compare.operands[0] == total and constant_value(zero) == 0.0
                and list(select.operands) == [compare.results[0], total, zero]):
            return None
        relu, value = True, select.results[0]
    else:
        return None
    if body[-1].operands[0] != value:
        return None
    return (second if first == buffer else first), result, relu


def _dead_after(op, buffer) -> bool:
    """`buffer` is an alloc that no op after `op` reads before overwriting all of it (a tuned
    convolution that starts from its bias or zero; a fill, broadcast or copy into it)."""
    from torch_mlir import ir
    if not (isinstance(buffer, ir.OpResult) and buffer.owner.name == "memref.alloc"):
        return False
    ops = [o.operation for o in op.block.operations]
    start = next(i for i, o in enumerate(ops) if o == op)
    for later in ops[start + 1:]:
        operands = list(later.operands)
        if not any(root(v) == buffer for v in operands):
            continue
        if later.name == "memref.dealloc":
            return True
        if later.name == CONV2D and operands[-1] == buffer and \
                ir.StringAttr(later.attributes["init"]).value != "accumulate" and \
                all(root(v) != buffer for v in operands[:-1]):
            return True
        if later.name in ("linalg.fill", "linalg.broadcast", "memref.copy") and \
                operands[-1] == buffer and all(root(v) != buffer for v in operands[:-1]):
            return True
        return False
    return True


def _is_packable_weight(value, weight_count: int) -> bool:
    from torch_mlir import ir
    return (isinstance(value, ir.BlockArgument) and value.arg_number < weight_count
            and len(list(value.uses)) == 1)


def write_into_padded(module) -> int:
    """Host backends keep a convolution's zero-bordered padded input as a buffer of its own
    (the tiles read no padding around), filled by a copy of what the op before wrote. Where
    that op (a tuned convolution or max pooling, or an elementwise linalg op) writes the whole
    of its own buffer, it writes the padded buffer's interior instead, and the other readers
    of that value read it there: the copy and, once nothing else uses it, the buffer go.
    Returns how many copies went."""
    folded = 0
    for function in module.body.operations:
        if function.operation.name != "func.func" or not len(function.regions[0].blocks):
            continue
        block = function.regions[0].blocks[0]
        for op in [o.operation for o in block.operations]:
            if op.name == "memref.copy" and _fold_padding_copy(op):
                folded += 1
    return folded


def _fold_padding_copy(copy) -> bool:
    from torch_mlir import ir
    value, interior = copy.operands
    padded = root(interior)
    view = interior.owner if isinstance(interior, ir.OpResult) else None
    if view is None or view.name != "memref.subview" or len(view.operands) != 1 or \
            view.operands[0] != padded or not isinstance(padded, ir.OpResult) or \
            padded.owner.name != "memref.alloc" or len(padded.owner.operands) or \
            ZEROED_ATTRIBUTE not in padded.owner.attributes:
        return False
    if not (isinstance(value, ir.OpResult) and value.owner.name == "memref.alloc"
            and not len(value.owner.operands)) or \
            ir.MemRefType(value.type).shape != ir.MemRefType(interior.type).shape:
        return False
    ops = [o.operation for o in copy.block.operations]
    at = ops.index(copy)
    # The padded buffer: read by convolutions after the copy only, written by the copy only.
    for use in padded.uses:
        user = use.owner.operation if hasattr(use.owner, "operation") else use.owner
        if user == view or user.name == "memref.dealloc":
            continue
        if user not in ops or ops.index(user) < at or user.name != CONV2D or \
                list(user.operands).index(padded) == len(user.operands) - 1:
            return False
    if [use.owner for use in interior.uses] != [copy]:
        return False
    # Back from the copy: readers of the value, then the op that wrote all of it.
    readers = []
    writer = None
    for op in reversed(ops[:at]):
        touching = _touching(op, value)
        if not touching:
            continue
        if _writes_whole(op, value):
            writer = op
            break
        if not _reads_only(op, value, touching):
            return False
        readers += [(op, i) for i in touching]
    if writer is None or any(root(v) == padded for v in writer.operands):
        return False
    # On from the copy: readers of the value until something overwrites it.
    for op in ops[at + 1:]:
        touching = _touching(op, value)
        if not touching:
            continue
        if op.name == "memref.dealloc" or _writes_whole(op, value):
            break
        if not _reads_only(op, value, touching):
            return False
        readers += [(op, i) for i in touching]
    first = ops.index(writer)
    for made in (padded.owner, view):          # the padded buffer exists before the write
        if ops.index(made) > first:
            made.move_before(writer)
    writer.operands[len(writer.operands) - 1] = interior
    for op, index in readers:
        op.operands[index] = interior
    copy.erase()
    if all(use.owner.name == "memref.dealloc" for use in value.uses):
        for use in list(value.uses):
            use.owner.erase()
        value.owner.erase()
    return True


def _touching(op, buffer) -> list[int]:
    """Indices of `op`'s operands that are `buffer` or views of it; [-1] when an op nested in
    `op` touches it (what this does not follow)."""
    touching = [i for i, v in enumerate(op.operands)
                if str(v.type).startswith("memref<") and root(v) == buffer]
    for region in op.regions:
        for inner_block in region.blocks:
            for inner in inner_block.operations:
                inner = inner.operation
                if _touching(inner, buffer):
                    return [-1]
    return touching


def _writes_whole(op, buffer) -> bool:
    """`op` writes all of `buffer` (its last operand, the buffer itself) without reading it: a
    tuned convolution or max pooling, or a linalg op with that one output (an activation)."""
    from torch_mlir import ir
    last = len(op.operands) - 1
    if last < 0 or op.operands[last] != buffer or \
            any(root(v) == buffer for v in list(op.operands)[:-1]):
        return False
    if op.name.startswith("linalg."):
        return linalg_inputs(op) == last and overwrites(op, last)
    if op.name not in (CONV2D, MAX_POOL):
        return False
    init = ir.StringAttr(op.attributes["init"]).value
    return init != "accumulate" if op.name == CONV2D else init == "lowest"


def _reads_only(op, buffer, touching: list[int]) -> bool:
    """`op` reads `buffer` itself (not a view of it) at the operands `touching`, as an input
    that a strided View can stand for, and writes nothing of it."""
    if -1 in touching or any(op.operands[i] != buffer for i in touching):
        return False
    last = len(op.operands) - 1
    if op.name in (CONV2D, MAX_POOL):
        return last not in touching
    if op.name == "memref.copy":
        return touching == [0]
    if op.name.startswith("linalg.") and "operandSegmentSizes" in op.attributes:
        return all(i < linalg_inputs(op) for i in touching)
    return False
