"""Intermediate buffers planned by liveness: buffers whose lifetimes do not overlap share memory.

Every `memref.alloc` of forward()'s own block is a buffer of the State (emitter.StateView).
Forward() runs its kernels in order on one execution space instance, so a buffer is live from
its alloc to the last top-level op that touches it, directly, through a view, or from a kernel
nested inside the op; two buffers whose live ranges do not meet can hold the same bytes.
Buffers with static extents go into one block of storage (`storage`), each at a byte offset:
the largest first, each at the lowest offset where it meets no buffer live at the same time
(greedy by size, as inference runtimes plan their arenas).

A buffer whose border initialize() zeroes (a convolution's padded input) takes turns, whole,
in a block of its kind (`zeroed_storage_N`) only with buffers whose border lies where its
own does (the same rows, columns and interior; as many or fewer images and channels): the
border stays zero for all of them. Buffers with
dynamic extents take turns, whole, in blocks that forward() grows to the largest size asked of
them (`dynamic_storage_N`, lapis::grow_storage). Kept out of the plan, each with memory of its
own as before: buffers allocated inside loops, and buffers that escape what the IR shows
plainly (a loop's carried value, a returned buffer, an op with a buffer result that is not a
view).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from ..diagnostics import walk
from ..lowering.buffers import VIEW_OPS, root
from ..tuned_ops import ZEROED_ATTRIBUTE
from .cxx_types import scalar, scalar_bytes

_TERMINATORS = ("scf.yield", "scf.condition", "func.return", "scf.reduce.return")
# Byte offsets of buffers in the shared block: whole cache lines, and what GPU vector loads
# and TMA descriptors ask of an address (Kokkos aligns the block itself at least as much).
ALIGNMENT = 256


@dataclass
class Block:
    """One block of storage: a State member that the buffers planned into it view."""
    cname: str
    dynamic: bool
    nbytes: int = 0                             # static blocks: the largest buffer's bytes
    buffers: list = field(default_factory=list)  # their alloc results, in order
    free_after: int = -1                        # index of the last op of its latest buffer
    kind: str = ""          # zero-bordered buffers: their type and the interior written


@dataclass
class Plan:
    blocks: list[Block]
    block_of: dict                              # alloc result -> its Block
    offset_of: dict                             # alloc result -> its byte offset in it
    unshared_bytes: int                         # the static buffers' bytes, each its own
    planned_bytes: int                          # the same after planning
    live_peak_bytes: int = 0                    # the most of them live at one op

    def summary(self) -> dict:
        return {"intermediate_bytes": self.planned_bytes,
                "intermediate_bytes_unshared": self.unshared_bytes,
                "intermediate_bytes_live_at_once": self.live_peak_bytes,
                "shared_blocks": sum(1 for b in self.blocks if not b.dynamic),
                "dynamic_blocks": sum(1 for b in self.blocks if b.dynamic),
                "dynamic_buffers": sum(len(b.buffers) for b in self.blocks if b.dynamic)}


def buffer_bytes(memref_type) -> int:
    """Bytes of a static buffer of `memref_type`."""
    count = 1
    for extent in memref_type.shape:
        count *= extent
    return count * scalar_bytes(scalar(memref_type.element_type))


def _is_buffer(value) -> bool:
    return str(value.type).startswith("memref<")


def live_ranges(ops: list, candidates: set) -> dict:
    """{alloc result: (first, last)}: the indices in `ops` (a block's top-level ops) of each
    candidate's alloc and of the last op that touches it, for the candidates whose uses the IR
    shows plainly; the others are left out."""
    ranges: dict = {}
    escaped: set = set()
    for index, op in enumerate(ops):
        for result in op.results:
            if result in candidates:
                ranges[result] = (index, index)
        for inner in (op, *walk(op)):
            passes_on = inner.name in _TERMINATORS or (
                inner.name not in VIEW_OPS and inner.name not in ("memref.alloc", "memref.alloca")
                and any(_is_buffer(r) for r in inner.results))
            for operand in inner.operands:
                if not _is_buffer(operand):
                    continue
                base = root(operand)
                if base not in candidates:
                    continue
                ranges[base] = (ranges[base][0], index)
                if passes_on:
                    escaped.add(base)
    return {value: span for value, span in ranges.items() if value not in escaped}


def plan(block) -> Plan:
    """The blocks of storage for the buffers that forward()'s own `block` allocates."""
    from torch_mlir import ir
    ops = [o.operation for o in block.operations]
    static, dynamic = set(), set()
    kinds: dict = {}      # alloc result -> what a block must hold to take it (zeroed: its border)
    unshared = 0
    for op in ops:
        if op.name not in ("memref.alloc", "memref.alloca"):
            continue
        memref_type = ir.MemRefType(op.results[0].type)
        if memref_type.has_static_shape:
            unshared += buffer_bytes(memref_type)
            kind = _zero_border(op) if ZEROED_ATTRIBUTE in op.attributes else ""
            if kind is not None:
                static.add(op.results[0])
                kinds[op.results[0]] = kind
        elif ZEROED_ATTRIBUTE not in op.attributes:
            dynamic.add(op.results[0])
            kinds[op.results[0]] = ""
    ranges = live_ranges(ops, static | dynamic)
    blocks: list[Block] = []
    block_of: dict = {}
    offset_of: dict = {}
    # Plain static buffers: one block, each buffer at an offset (greedy by size).
    arena = [v for v in ranges if v in static and not kinds[v]]
    if arena:
        storage = Block(cname="storage", dynamic=False)
        blocks.append(storage)
        offsets = _offsets_by_size({v: (*ranges[v], buffer_bytes(ir.MemRefType(v.type)))
                                    for v in arena})
        for value in sorted(arena, key=lambda v: (ranges[v][0], offsets[v])):
            storage.buffers.append(value)
            block_of[value], offset_of[value] = storage, offsets[value]
            storage.nbytes = max(storage.nbytes,
                                 offsets[value] + buffer_bytes(ir.MemRefType(value.type)))
    # Zero-bordered buffers of one kind, and buffers with dynamic extents: blocks they take
    # in turn, whole, the first that is free (for the static ones, the best fit).
    for value in sorted((v for v in ranges if v not in block_of), key=lambda v: ranges[v][0]):
        first, last = ranges[value]
        is_dynamic = value in dynamic
        free = [b for b in blocks if b.free_after < first and b.dynamic == is_dynamic
                and b.kind == kinds[value]]
        chosen = None
        if free and not is_dynamic:          # the best fit, else the largest (grown)
            size = buffer_bytes(ir.MemRefType(value.type))
            fitting = [b for b in free if b.nbytes >= size]
            chosen = min(fitting, key=lambda b: b.nbytes) if fitting else \
                max(free, key=lambda b: b.nbytes)
        elif free:
            chosen = free[0]
        if chosen is None:
            prefix = "dynamic_storage" if is_dynamic else "zeroed_storage"
            chosen = Block(cname=f"{prefix}_{sum(b.cname.startswith(prefix) for b in blocks)}",
                           dynamic=is_dynamic, kind=kinds[value])
            blocks.append(chosen)
        if not is_dynamic:
            chosen.nbytes = max(chosen.nbytes, buffer_bytes(ir.MemRefType(value.type)))
        chosen.buffers.append(value)
        chosen.free_after = last
        block_of[value], offset_of[value] = chosen, 0
    in_blocks = sum(buffer_bytes(ir.MemRefType(v.type)) for v in block_of if v in static)
    planned = unshared - in_blocks + sum(b.nbytes for b in blocks if not b.dynamic)
    # The bound no plan can beat: the most bytes of planned static buffers live at one op.
    spans = [(*ranges[v], buffer_bytes(ir.MemRefType(v.type))) for v in block_of if v in static]
    live_peak = max((sum(size for first, last, size in spans if first <= i <= last)
                     for i in range(len(ops))), default=0)
    return Plan(blocks=blocks, block_of=block_of, offset_of=offset_of,
                unshared_bytes=unshared, planned_bytes=planned,
                live_peak_bytes=live_peak + unshared - in_blocks)


def _offsets_by_size(buffers: dict) -> dict:
    """{buffer: offset} in one block for {buffer: (first, last, bytes)}: the largest placed
    first, each at the lowest ALIGNMENT-aligned offset where it meets no placed buffer that
    is live at the same time."""
    placed = []                                  # (offset, bytes, first, last)
    offsets = {}
    for value, (first, last, size) in sorted(buffers.items(),
                                             key=lambda item: (-item[1][2], item[1][0])):
        offset = 0
        for other, other_size, other_first, other_last in sorted(placed):
            if other_last < first or last < other_first:
                continue                         # never live together
            if offset + size <= other:
                break                            # fits in the gap below `other`
            offset = max(offset, _aligned(other + other_size))
        placed.append((offset, size, first, last))
        offsets[value] = offset
    return offsets


def _aligned(offset: int) -> int:
    return (offset + ALIGNMENT - 1) // ALIGNMENT * ALIGNMENT


def _zero_border(alloc) -> str | None:
    """What a buffer whose border initialize() zeroes shares with those that may take turns
    in its block (None: a block of its own). An NCHW buffer written through subviews that
    cover every image and channel: its element type, rows and columns and the window of them
    written -- a buffer of fewer images or channels lies in the first bytes of a larger one of
    the same kind with its border where that one's is. Otherwise its type and the views of it
    exactly, when all of those are static."""
    from torch_mlir import ir
    memref_type = ir.MemRefType(alloc.results[0].type)
    views, windows = [], set()
    for use in alloc.results[0].uses:
        user = use.owner.operation if hasattr(use.owner, "operation") else use.owner
        if user.name not in VIEW_OPS:
            continue
        if len(user.operands) > 1:        # dynamic offsets or sizes
            return None
        attributes = user.attributes
        views.append(" ".join(f"{name}={attributes[name]}" for name in sorted(
            str(getattr(a, "name", a)) for a in attributes)))
        if user.name == "memref.subview" and memref_type.rank == 4:
            offsets, sizes, strides = (list(ir.DenseI64ArrayAttr(attributes[name])) for name in
                                       ("static_offsets", "static_sizes", "static_strides"))
            if offsets[:2] == [0, 0] and sizes[:2] == memref_type.shape[:2] and \
                    strides == [1, 1, 1, 1]:
                windows.add(f"{offsets[2:]}{sizes[2:]}")
                continue
        windows.add(None)
    if windows and None not in windows:
        return f"{memref_type.element_type} {memref_type.shape[2:]} " + \
            "|".join(sorted(windows))
    return str(memref_type) + "|" + "|".join(sorted(set(views)))


