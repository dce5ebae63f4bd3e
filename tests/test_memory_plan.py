"""Intermediate buffers planned by liveness (exporter/emit/memory_plan.py): which buffers share
a block of storage, and which keep their own. The numbers of every exported model that shares
buffers are checked against PyTorch by the integration tests; these pin the rules down on IR
small enough to read."""
from __future__ import annotations

from exporter.emit import memory_plan

# A chain a -> b -> c -> d of element-wise kernels on [8, 16] float32 buffers, then the last
# one copied out: a and c can share, b and d can share, c (16 x 8 floats) fits a's block.
CHAIN = """
func.func @forward(%x: memref<8x16xf32>, %out: memref<8x16xf32>) {
  %c0 = arith.constant 0 : index
  %c1 = arith.constant 1 : index
  %c8 = arith.constant 8 : index
  %c16 = arith.constant 16 : index
  %a = memref.alloc() : memref<8x16xf32> loc("a")
  scf.parallel (%i, %j) = (%c0, %c0) to (%c8, %c16) step (%c1, %c1) {
    %v = memref.load %x[%i, %j] : memref<8x16xf32>
    memref.store %v, %a[%i, %j] : memref<8x16xf32>
    scf.reduce
  }
  %b = memref.alloc() : memref<8x16xf32> loc("b")
  scf.parallel (%i, %j) = (%c0, %c0) to (%c8, %c16) step (%c1, %c1) {
    %v = memref.load %a[%i, %j] : memref<8x16xf32>
    memref.store %v, %b[%i, %j] : memref<8x16xf32>
    scf.reduce
  }
  %c = memref.alloc() : memref<16x8xf32> loc("c")
  %cflat = memref.collapse_shape %c [[0, 1]] : memref<16x8xf32> into memref<128xf32>
  %bflat = memref.collapse_shape %b [[0, 1]] : memref<8x16xf32> into memref<128xf32>
  memref.copy %bflat, %cflat : memref<128xf32> to memref<128xf32>
  %d = memref.alloc() : memref<8x16xf32> loc("d")
  %dflat = memref.collapse_shape %d [[0, 1]] : memref<8x16xf32> into memref<128xf32>
  memref.copy %cflat, %dflat : memref<128xf32> to memref<128xf32>
  memref.copy %d, %out : memref<8x16xf32> to memref<8x16xf32>
  return
}
"""

# A buffer a loop carries from step to step (the loop yields it) keeps its own storage; so
# does one made inside the loop.
CARRIED = """
func.func @forward(%init: memref<2xf32>, %out: memref<2xf32>) {
  %c0 = arith.constant 0 : index
  %c1 = arith.constant 1 : index
  %c3 = arith.constant 3 : index
  %first = memref.alloc() : memref<2xf32> loc("first")
  memref.copy %init, %first : memref<2xf32> to memref<2xf32>
  %last = scf.for %t = %c0 to %c3 step %c1 iter_args(%state = %first) -> (memref<2xf32>) {
    %next = memref.alloc() : memref<2xf32> loc("next")
    memref.copy %state, %next : memref<2xf32> to memref<2xf32>
    scf.yield %next : memref<2xf32>
  }
  %after = memref.alloc() : memref<2xf32> loc("after")
  memref.copy %last, %after : memref<2xf32> to memref<2xf32>
  memref.copy %after, %out : memref<2xf32> to memref<2xf32>
  return
}
"""

# Zero-bordered buffers (initialize() zeroes them; forward() writes only their interior) take
# turns only with buffers of the same type whose interior is the same: p and q share, r (the
# same type, another interior) does not.
BORDERS = """
func.func @forward(%x: memref<1x2x3x3xf32>, %y: memref<1x2x1x1xf32>, %out: memref<1x2x5x5xf32>) {
  %p = memref.alloc() {lapis.zeroed} : memref<1x2x5x5xf32> loc("p")
  %pin = memref.subview %p[0, 0, 1, 1] [1, 2, 3, 3] [1, 1, 1, 1] : memref<1x2x5x5xf32> to memref<1x2x3x3xf32, strided<[50, 25, 5, 1], offset: 6>>
  memref.copy %x, %pin : memref<1x2x3x3xf32> to memref<1x2x3x3xf32, strided<[50, 25, 5, 1], offset: 6>>
  memref.copy %p, %out : memref<1x2x5x5xf32> to memref<1x2x5x5xf32>
  %q = memref.alloc() {lapis.zeroed} : memref<1x2x5x5xf32> loc("q")
  %qin = memref.subview %q[0, 0, 1, 1] [1, 2, 3, 3] [1, 1, 1, 1] : memref<1x2x5x5xf32> to memref<1x2x3x3xf32, strided<[50, 25, 5, 1], offset: 6>>
  memref.copy %x, %qin : memref<1x2x3x3xf32> to memref<1x2x3x3xf32, strided<[50, 25, 5, 1], offset: 6>>
  memref.copy %q, %out : memref<1x2x5x5xf32> to memref<1x2x5x5xf32>
  %r = memref.alloc() {lapis.zeroed} : memref<1x2x5x5xf32> loc("r")
  %rin = memref.subview %r[0, 0, 2, 2] [1, 2, 1, 1] [1, 1, 1, 1] : memref<1x2x5x5xf32> to memref<1x2x1x1xf32, strided<[50, 25, 5, 1], offset: 12>>
  memref.copy %y, %rin : memref<1x2x1x1xf32> to memref<1x2x1x1xf32, strided<[50, 25, 5, 1], offset: 12>>
  memref.copy %r, %out : memref<1x2x5x5xf32> to memref<1x2x5x5xf32>
  return
}
"""

# Buffers with a dynamic batch: blocks grown in forward(), shared the same way.
DYNAMIC = """
func.func @forward(%x: memref<?x4xf32>, %out: memref<?x4xf32>) {
  %c0 = arith.constant 0 : index
  %n = memref.dim %x, %c0 : memref<?x4xf32>
  %a = memref.alloc(%n) : memref<?x4xf32> loc("a")
  memref.copy %x, %a : memref<?x4xf32> to memref<?x4xf32>
  %b = memref.alloc(%n) : memref<?x4xf32> loc("b")
  memref.copy %a, %b : memref<?x4xf32> to memref<?x4xf32>
  %c = memref.alloc(%n) : memref<?x4xf32> loc("c")
  memref.copy %b, %c : memref<?x4xf32> to memref<?x4xf32>
  memref.copy %c, %out : memref<?x4xf32> to memref<?x4xf32>
  return
}
"""


def _plan(text: str):
    from torch_mlir import ir
    context = ir.Context()
    context.allow_unregistered_dialects = True
    module = ir.Module.parse(text, context)
    function = module.body.operations[0]
    plan = memory_plan.plan(function.regions[0].blocks[0])
    groups = sorted(sorted(_name(v) for v in block.buffers) for block in plan.blocks)
    return plan, groups


def _name(value) -> str:
    return str(value.owner.location).split('"')[1]


def test_a_chain_takes_two_buffers_of_storage():
    """Each buffer of the chain is live with its neighbours only: a and c (and b and d) can
    take the same bytes; one block holds all four at two offsets."""
    plan, groups = _plan(CHAIN)
    assert groups == [["a", "b", "c", "d"]]
    offsets = {_name(v): plan.offset_of[v] for v in plan.block_of}
    assert offsets["a"] == offsets["c"] != offsets["b"] == offsets["d"]
    assert abs(offsets["a"] - offsets["b"]) >= 512
    assert plan.unshared_bytes == 4 * 512
    assert plan.planned_bytes == 512 + max(offsets.values())
    assert plan.planned_bytes <= 2 * 512 + memory_plan.ALIGNMENT
    assert plan.summary()["shared_blocks"] == 1


# Sizes that differ: a large buffer live with a small one, then two medium ones live together
# after both; the medium pair fits in the bytes the large one held.
SIZES = """
func.func @forward(%x: memref<1024xf32>, %y: memref<64xf32>, %out: memref<512xf32>) {
  %big = memref.alloc() : memref<1024xf32> loc("big")
  memref.copy %x, %big : memref<1024xf32> to memref<1024xf32>
  %small = memref.alloc() : memref<64xf32> loc("small")
  memref.copy %y, %small : memref<64xf32> to memref<64xf32>
  %first = memref.subview %big[0] [512] [1] : memref<1024xf32> to memref<512xf32, strided<[1]>>
  memref.copy %first, %out : memref<512xf32, strided<[1]>> to memref<512xf32>
  %m1 = memref.alloc() : memref<448xf32> loc("m1")
  %m2 = memref.alloc() : memref<448xf32> loc("m2")
  %part = memref.subview %out[0] [448] [1] : memref<512xf32> to memref<448xf32, strided<[1]>>
  memref.copy %part, %m1 : memref<448xf32, strided<[1]>> to memref<448xf32>
  memref.copy %m1, %m2 : memref<448xf32> to memref<448xf32>
  %back = memref.subview %out[64] [448] [1] : memref<512xf32> to memref<448xf32, strided<[1], offset: 64>>
  memref.copy %m2, %back : memref<448xf32> to memref<448xf32, strided<[1], offset: 64>>
  %head = memref.subview %out[0] [64] [1] : memref<512xf32> to memref<64xf32, strided<[1]>>
  memref.copy %small, %head : memref<64xf32> to memref<64xf32, strided<[1]>>
  return
}
"""


def test_buffers_of_other_sizes_pack_into_the_bytes_of_dead_ones():
    plan, _ = _plan(SIZES)
    offsets = {_name(v): plan.offset_of[v] for v in plan.block_of}
    spans = {name: (offsets[name], offsets[name] + size) for name, size in
             (("big", 4096), ("small", 256), ("m1", 1792), ("m2", 1792))}
    # small is live with everything; big, then m1 and m2 together: none overlaps a buffer
    # live with it, and m1 and m2 reuse big's bytes.
    def apart(a, b):
        return spans[a][1] <= spans[b][0] or spans[b][1] <= spans[a][0]
    assert apart("big", "small") and apart("m1", "small") and apart("m2", "small")
    assert apart("m1", "m2")
    assert plan.planned_bytes == 4096 + 256
    assert all(offset % memory_plan.ALIGNMENT == 0 for offset in offsets.values())


def test_carried_buffers_keep_their_own():
    plan, groups = _plan(CARRIED)
    # `first` is the loop's initial value and `next` lives inside the loop: neither is planned;
    # `after` is, alone in its block.
    assert groups == [["after"]]
    assert plan.unshared_bytes == 2 * 8 and plan.planned_bytes == 2 * 8


def test_zero_borders_share_only_the_same_interior():
    plan, groups = _plan(BORDERS)
    assert groups == [["p", "q"], ["r"]]
    assert all(block.kind for block in plan.blocks)


# Padded inputs of other channel counts with the same rows, columns and interior: the border
# of every channel plane lies at the same bytes, so the smaller takes the larger's block.
CHANNELS = """
func.func @forward(%x: memref<1x4x3x3xf32>, %y: memref<1x2x3x3xf32>, %o4: memref<1x4x5x5xf32>, %o2: memref<1x2x5x5xf32>) {
  %wide = memref.alloc() {lapis.zeroed} : memref<1x4x5x5xf32> loc("wide")
  %win = memref.subview %wide[0, 0, 1, 1] [1, 4, 3, 3] [1, 1, 1, 1] : memref<1x4x5x5xf32> to memref<1x4x3x3xf32, strided<[100, 25, 5, 1], offset: 6>>
  memref.copy %x, %win : memref<1x4x3x3xf32> to memref<1x4x3x3xf32, strided<[100, 25, 5, 1], offset: 6>>
  memref.copy %wide, %o4 : memref<1x4x5x5xf32> to memref<1x4x5x5xf32>
  %narrow = memref.alloc() {lapis.zeroed} : memref<1x2x5x5xf32> loc("narrow")
  %nin = memref.subview %narrow[0, 0, 1, 1] [1, 2, 3, 3] [1, 1, 1, 1] : memref<1x2x5x5xf32> to memref<1x2x3x3xf32, strided<[50, 25, 5, 1], offset: 6>>
  memref.copy %y, %nin : memref<1x2x3x3xf32> to memref<1x2x3x3xf32, strided<[50, 25, 5, 1], offset: 6>>
  memref.copy %narrow, %o2 : memref<1x2x5x5xf32> to memref<1x2x5x5xf32>
  return
}
"""


def test_fewer_channels_take_a_wider_padded_block():
    plan, groups = _plan(CHANNELS)
    assert groups == [["narrow", "wide"]]
    assert plan.planned_bytes == 4 * 25 * 4


def test_dynamic_buffers_share_grown_blocks():
    plan, groups = _plan(DYNAMIC)
    assert groups == [["a", "c"], ["b"]]
    assert all(block.dynamic for block in plan.blocks)
    assert plan.summary()["dynamic_buffers"] == 3
