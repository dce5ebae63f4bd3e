"""What the tuned-kernel rewrites ask of bufferized IR: which buffer a view reads, what an op
writes, which constant a fill holds, whether anything touches a buffer between two ops.
Shared by the convolution (conv.py) and matrix-product (matmul.py) rewrites.
"""
from __future__ import annotations

VIEW_OPS = ("memref.subview", "memref.expand_shape", "memref.collapse_shape", "memref.cast",
            "memref.reinterpret_cast")



def root(value):
    """The buffer (alloc result or argument) a view of views reads."""
    from torch_mlir import ir
    while isinstance(value, ir.OpResult) and value.owner.name in VIEW_OPS:
        value = value.owner.operands[0]
    return value



def untouched_between(first, last, buffer) -> bool:
    """No op strictly between `first` and `last` writes `buffer` (ops we cannot tell of: no)."""
    ops = [o.operation for o in first.block.operations]
    start = next(i for i, o in enumerate(ops) if o == first)
    end = next(i for i, o in enumerate(ops) if o == last)
    for op in ops[start + 1:end]:
        if op.name == "memref.alloc" or op.name in VIEW_OPS:
            continue
        if not op.name.startswith("linalg.") or root(op.operands[-1]) == buffer:
            return False
    return True



def neighbour(op, step: int):
    ops = [o.operation for o in op.block.operations]
    index = next(i for i, o in enumerate(ops) if o == op) + step
    return ops[index] if 0 <= index < len(ops) else None



def writes_only(op, buffer) -> bool:
    """`op` is a linalg op whose only output is `buffer` and that reads nothing of it."""
    if not op.name.startswith("linalg.") or len(op.operands) == 0 or op.operands[-1] != buffer:
        return False
    return all(v != buffer for v in list(op.operands)[:-1])



def fill_value(op) -> float | None:
    """The constant a `linalg.fill` / yield-only `linalg.map` writes, if it is one."""
    if op.name == "linalg.fill":
        value = op.operands[0]
    elif op.name == "linalg.map" and len(op.operands) == 1:
        body = list(op.regions[0].blocks[0].operations)
        if len(body) != 1 or len(body[0].operands) != 1:
            return None
        value = body[0].operands[0]
    else:
        return None
    return constant_value(value)



def constant_value(value) -> float | None:
    from torch_mlir import ir
    owner = value.owner
    if not isinstance(owner, ir.Operation) and hasattr(owner, "operation"):
        owner = owner.operation
    if not isinstance(owner, ir.Operation) or owner.name != "arith.constant":
        return None
    try:
        return ir.FloatAttr(owner.attributes["value"]).value
    except ValueError:                         # an integer or a dense constant
        return None


def overwrites(op, operand: int) -> bool:
    """The linalg op `op` writes every element of its output `operand` without reading it."""
    if op.name in ("linalg.transpose", "linalg.fill", "linalg.broadcast", "linalg.copy"):
        return True
    if op.name not in ("linalg.generic", "linalg.map") or not len(op.regions):
        return False
    if op.name == "linalg.generic" and any("reduction" in str(t) for t in
                                           op.attributes["iterator_types"]):
        return False
    block = op.regions[0].blocks[0]
    arguments = list(block.arguments)
    if op.name == "linalg.map":
        return True                          # its body has no output argument
    argument = arguments[operand] if operand < len(arguments) else None
    return argument is not None and not list(argument.uses)


def linalg_inputs(op) -> int:
    """How many of a linalg op's operands are its inputs (-1: the op does not say)."""
    from torch_mlir import ir
    if "operandSegmentSizes" not in op.attributes:
        return -1
    return list(ir.DenseI32ArrayAttr(op.attributes["operandSegmentSizes"]))[0]
