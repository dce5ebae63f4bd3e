"""One small handler per lowered op (registered into emitter.HANDLERS), plus the host-level
walk of forward() that turns top-level loops into kernels.

Host context: the body of forward() (Views, kernel launches). Device context: inside a
kernel lambda (scalars, loads/stores, serial loops).
"""
from __future__ import annotations

import re

from ..errors import ExportError
from . import cxx_types, scalar_ops
from .emitter import KokkosEmitter, MemrefHandle, StateView, handles, location_label

# Ops that only make sense on device data; at the top level they run in a one-thread kernel.
_DEVICE_ONLY = {"memref.load", "memref.store", "scf.for", "scf.if", "cf.assert", "scf.while",
                "memref.atomic_rmw"}
_VIEW_LIKE = ("memref.subview", "memref.expand_shape", "memref.collapse_shape", "memref.cast",
              "memref.reinterpret_cast", "memref.reshape")   # reshape: static result type


# ---- host-level walk ------------------------------------------------------------------------
def emit_host_block(em: KokkosEmitter, block) -> None:
    """Emit a host block: consecutive device-only ops are grouped into one serial kernel."""
    group: list = []
    group_results: set = set()
    for op_view in block.operations:
        op = op_view.operation
        depends_on_group = any(operand in group_results for operand in op.operands)
        host_loop = op.name == "scf.for" and _contains(op, "scf.parallel")
        if (op.name in _DEVICE_ONLY and not host_loop) or depends_on_group:
            group.append(op)
            group_results.update(op.results)
            continue
        if group:
            _emit_serial_kernel(em, group)
            group, group_results = [], set()
        if host_loop:
            _emit_host_loop(em, op)
        else:
            em.emit_op(op)
    if group:
        _emit_serial_kernel(em, group)


def _nested_ops(op):
    for region in op.regions:
        for block in region.blocks:
            for inner in block.operations:
                yield inner.operation
                yield from _nested_ops(inner.operation)


def _contains(op, name: str) -> bool:
    return any(inner.name == name for inner in _nested_ops(op))


def _emit_serial_kernel(em: KokkosEmitter, ops: list) -> None:
    label = em.kernel_label(ops[0], "serial")
    em.line(f"// {location_label(ops[0]) or ops[0].name}: sequential code, one thread")
    em.line(f'Kokkos::parallel_for("{label}", range(0, 1), KOKKOS_LAMBDA(const int64_t) {{')
    _enter_kernel(em)
    with em.indented():
        for op in ops:
            em.emit_op(op)
    _leave_kernel(em)
    em.line("});")


def _emit_host_loop(em: KokkosEmitter, op) -> None:
    lower, upper, step = (em.expr(v) for v in list(op.operands)[:3])
    if len(op.operands) > 3:
        raise ExportError(f"a top-level loop carrying values is not supported "
                          f"(from {location_label(op) or op.location})")
    body = op.regions[0].blocks[0]
    iv = em.unique("step")
    em.bind(body.arguments[0], iv)
    em.line(f"for (int64_t {iv} = {lower}; {iv} < {upper}; {iv} += {step}) {{")
    with em.indented():
        emit_host_block(em, body)
    em.line("}")


def _enter_kernel(em: KokkosEmitter) -> None:
    em.kernel_count += 1
    em.in_kernel = True
    em.local_counter = 0


def _leave_kernel(em: KokkosEmitter) -> None:
    em.in_kernel = False


# ---- ops with nothing to emit ---------------------------------------------------------------
@handles("arith.constant", "memref.dealloc", "func.return", "scf.reduce")
def _no_code(em: KokkosEmitter, op) -> None:
    """Constants are inlined as literals where used; buffers live until finalize()."""


# ---- scalar arithmetic ----------------------------------------------------------------------
def _format_fields(op) -> dict:
    result_type = cxx_types.scalar(op.results[0].type)
    operand_type = cxx_types.scalar(op.operands[0].type) if len(op.operands) else result_type
    return {"T": result_type, "U": cxx_types.unsigned(result_type)
            if result_type not in ("float", "double") else result_type,
            "S": operand_type, "SU": cxx_types.unsigned(operand_type)
            if operand_type not in ("float", "double") else operand_type}


def _arith(em: KokkosEmitter, op) -> None:
    template = scalar_ops.BINARY_AND_UNARY[op.name]
    fields = _format_fields(op)
    operands = [em.expr(v) for v in op.operands]
    em.declare(op.results[0], template.format(*operands, **fields))


for _name in scalar_ops.BINARY_AND_UNARY:
    handles(_name)(_arith)


@handles("arith.extsi")
def _extsi(em: KokkosEmitter, op) -> None:
    fields = _format_fields(op)
    source = em.expr(op.operands[0])
    text = f"({source} ? {fields['T']}(-1) : {fields['T']}(0))" if fields["S"] == "bool" \
        else f"static_cast<{fields['T']}>({source})"
    em.declare(op.results[0], text)


@handles("arith.cmpf", "arith.cmpi")
def _compare(em: KokkosEmitter, op) -> None:
    from torch_mlir import ir
    predicate = ir.IntegerAttr(op.attributes["predicate"]).value
    table = scalar_ops.CMPF if op.name == "arith.cmpf" else scalar_ops.CMPI
    operands = [em.expr(v) for v in op.operands]
    em.declare(op.results[0], table[predicate].format(*operands, **_format_fields(op)))


@handles("cf.assert")
def _assert(em: KokkosEmitter, op) -> None:
    from torch_mlir import ir
    message = ir.StringAttr(op.attributes["msg"]).value.replace("\\", "\\\\").replace('"', '\\"')
    em.line(f'if (!{em.expr(op.operands[0])}) Kokkos::abort("{em.model_name}: {message}");')


# ---- memory ---------------------------------------------------------------------------------
def _static_shape(memref_type, op) -> tuple[int, ...]:
    if not memref_type.has_static_shape:
        raise ExportError(f"dynamic shapes are not supported yet "
                          f"(buffer {memref_type} from {location_label(op) or op.location})")
    return tuple(memref_type.shape)


@handles("memref.alloc", "memref.alloca")
def _alloc(em: KokkosEmitter, op) -> None:
    from torch_mlir import ir
    if em.in_kernel:
        raise ExportError(f"allocation inside a kernel is not supported "
                          f"(from {location_label(op) or op.location})")
    memref_type = ir.MemRefType(op.results[0].type)
    shape = _static_shape(memref_type, op)
    label = location_label(op)
    name = em.unique(label or "buffer")
    element = cxx_types.scalar(memref_type.element_type)
    em.state_views.append(StateView(cname=name, element=element, shape=shape,
                                    comment=f"{label or 'buffer'} {list(shape)}"))
    em.memrefs[op.results[0]] = MemrefHandle(name, name, const=False)


@handles("memref.get_global")
def _get_global(em: KokkosEmitter, op) -> None:
    from torch_mlir import ir
    symbol = ir.FlatSymbolRefAttr(op.attributes["name"]).value
    view = em.globals.get(symbol)
    if view is None:
        raise ExportError(f"memref.get_global of unknown symbol @{symbol}")
    em.memrefs[op.results[0]] = MemrefHandle(view.cname, view.cname, const=True)


def _view_like(em: KokkosEmitter, op) -> None:
    """Subviews and reshapes: an unmanaged View over the root's memory, from the result type."""
    from torch_mlir import ir
    source = em.memref(op.operands[0])
    memref_type = ir.MemRefType(op.results[0].type)
    shape = _static_shape(memref_type, op)
    strides, offset = memref_type.get_strides_and_offset()
    if any(memref_type.is_dynamic_stride_or_offset(v) for v in [*strides, offset]):
        raise ExportError(f"views with dynamic strides are not supported yet "
                          f"(from {location_label(op) or op.location})")
    element = cxx_types.scalar(memref_type.element_type)
    element = f"const {element}" if source.const else element
    data_type = element + "*" * len(shape)
    pointer = f"{source.root}.data()" + (f" + {offset}" if offset else "")
    name = em.unique(f"{source.root}_view") if not em.in_kernel else em.fresh_local("view")
    if list(strides) == _row_major_strides(shape):
        extents = "".join(f", {extent}" for extent in shape)
        em.line(f"const unmanaged<{data_type}> {name}({pointer}{extents});")
    else:
        layout = ", ".join(f"{extent}, {stride}" for extent, stride in zip(shape, strides))
        em.line(f"const strided<{data_type}> {name}({pointer}, Kokkos::LayoutStride({layout}));")
    em.memrefs[op.results[0]] = MemrefHandle(name, source.root, source.const)


for _name in _VIEW_LIKE:
    handles(_name)(_view_like)


def _row_major_strides(shape) -> list[int]:
    strides, running = [], 1
    for extent in reversed(shape):
        strides.append(running)
        running *= extent
    return list(reversed(strides))


def _indices(em: KokkosEmitter, values) -> str:
    return ", ".join(em.expr(v) for v in values)


@handles("memref.load")
def _load(em: KokkosEmitter, op) -> None:
    promoted = em.promoted.get((op.operands[0], tuple(list(op.operands)[1:])))
    if promoted:
        em.bind(op.results[0], promoted)
        return
    view = em.memref(op.operands[0])
    em.declare(op.results[0], f"{view.cname}({_indices(em, list(op.operands)[1:])})")


@handles("memref.store")
def _store(em: KokkosEmitter, op) -> None:
    value, target, *indices = op.operands
    promoted = em.promoted.get((target, tuple(indices)))
    if promoted:
        em.line(f"{promoted} = {em.expr(value)};")
        return
    em.line(f"{em.memref(target).cname}({_indices(em, indices)}) = {em.expr(value)};")


@handles("memref.copy")
def _copy(em: KokkosEmitter, op) -> None:
    from torch_mlir import ir
    source, target = (em.memref(v) for v in op.operands)
    shape = _static_shape(ir.MemRefType(op.operands[0].type), op)

    def body(ivs):
        index = ", ".join(ivs[:len(shape)])
        em.line(f"{target.cname}({index}) = {source.cname}({index});")
    if em.in_kernel:
        _serial_loops(em, ["0"] * len(shape), [str(e) for e in shape], body)
    else:
        _launch(em, op, "copy", [("0", str(e)) for e in shape], body)


# ---- loops ----------------------------------------------------------------------------------
def _launch(em: KokkosEmitter, op, fallback: str, bounds: list[tuple[str, str]], body) -> None:
    """A parallel_for over `bounds` (unit steps); `body(ivs)` emits the lambda's statements."""
    label = em.kernel_label(op, fallback)
    source = location_label(op) or op.name
    _enter_kernel(em)
    ivs = [em.fresh_local("i") for _ in bounds] or ["i0"]
    if len(bounds) <= 1:
        lower, upper = bounds[0] if bounds else ("0", "1")
        policy = f"range({lower}, {upper})"
    elif len(bounds) <= 6:
        lowers = ", ".join(b[0] for b in bounds)
        uppers = ", ".join(b[1] for b in bounds)
        policy = f"mdrange<{len(bounds)}>({{{lowers}}}, {{{uppers}}})"
    else:
        raise ExportError(f"a parallel loop of {len(bounds)} dimensions is not supported "
                          f"(at most 6; from {source})")
    em.line(f"// {source}")
    header = len(em.lines)
    em.line(f'Kokkos::parallel_for("{label}", {policy}, KOKKOS_LAMBDA(@PARAMS@) {{')
    with em.indented():
        body(ivs)
    _leave_kernel(em)
    em.line("});")
    # Name only the indices the body reads, so the code compiles cleanly with -Wunused.
    text = "\n".join(em.lines[header + 1:])
    params = ", ".join(f"const int64_t {iv}" if re.search(rf"\b{iv}\b", text)
                       else f"const int64_t /*{iv}*/" for iv in ivs)
    em.lines[header] = em.lines[header].replace("@PARAMS@", params)


def _serial_loops(em: KokkosEmitter, lowers, uppers, body, steps=None) -> None:
    ivs = [em.fresh_local("i") for _ in lowers]
    steps = steps or ["1"] * len(lowers)
    for iv, lower, upper, step in zip(ivs, lowers, uppers, steps):
        increment = f"++{iv}" if step == "1" else f"{iv} += {step}"
        em.line(f"for (int64_t {iv} = {lower}; {iv} < {upper}; {increment}) {{")
        em.depth += 1
    body(ivs)
    for _ in ivs:
        em.depth -= 1
        em.line("}")


@handles("scf.parallel")
def _parallel(em: KokkosEmitter, op) -> None:
    block = op.regions[0].blocks[0]
    rank = len(block.arguments)
    operands = list(op.operands)
    lowers = [em.expr(v) for v in operands[:rank]]
    uppers = [em.expr(v) for v in operands[rank:2 * rank]]
    steps = [em.expr(v) for v in operands[2 * rank:3 * rank]]
    if len(op.results):
        raise ExportError(f"parallel loops with reductions are not supported yet "
                          f"(from {location_label(op) or op.location})")

    def body(ivs):
        for argument, iv in zip(block.arguments, ivs):
            em.bind(argument, iv)
        em.emit_block(block)

    if em.in_kernel:   # nested parallelism runs sequentially inside its kernel
        _serial_loops(em, lowers, uppers, body, steps)
        return
    if any(step != "1" for step in steps):
        trip = [f"({u} - {l} + {s} - 1) / {s}" for l, u, s in zip(lowers, uppers, steps)]

        def strided_body(ivs):
            for argument, iv, lower, step in zip(block.arguments, ivs, lowers, steps):
                em.bind(argument, em.declare_index(f"{lower} + {iv} * {step}"))
            em.emit_block(block)
        _launch(em, op, "parallel", [("0", t) for t in trip], strided_body)
        return
    _launch(em, op, "parallel", list(zip(lowers, uppers)), body)


def _declare_carried(em: KokkosEmitter, results, initial_values) -> list[str]:
    names = []
    for result, initial in zip(results, initial_values):
        name = em.fresh_local("v")
        init = f" = {em.expr(initial)}" if initial is not None else ""
        em.line(f"{cxx_types.scalar(result.type)} {name}{init};")
        em.bind(result, name)
        names.append(name)
    return names


def _accumulators(em: KokkosEmitter, loop) -> list[tuple]:
    """Memory cells a loop nest reads and writes at one loop-invariant index, and whose buffer
    it touches nowhere else: these live in a register for the whole nest (scalar replacement).
    Linalg reductions lower to exactly this: `out[i] = out[i] + x[i, k]` over k."""
    from torch_mlir import ir
    defined, cells, stored = set(loop.regions[0].blocks[0].arguments), {}, set()
    for inner in _nested_ops(loop):
        defined.update(inner.results)
        for region in inner.regions:
            for block in region.blocks:
                defined.update(block.arguments)
    for inner in _nested_ops(loop):
        memrefs = [v for v in inner.operands if isinstance(v.type, ir.MemRefType)]
        if not memrefs:
            continue
        if inner.name not in ("memref.load", "memref.store") or memrefs[0] not in em.memrefs:
            return []   # views made or buffers passed inside the nest: stay conservative
        operands = list(inner.operands)
        target, indices = (operands[0], operands[1:]) if inner.name == "memref.load" \
            else (operands[1], operands[2:])
        root = em.memrefs[target].root
        cells.setdefault(root, set()).add((target, tuple(indices)))
        if inner.name == "memref.store":
            stored.add(root)
    return [next(iter(keys)) for root, keys in cells.items()
            if len(keys) == 1 and root in stored
            and not any(v in defined for v in next(iter(keys))[1])]


@handles("scf.for")
def _for(em: KokkosEmitter, op) -> None:
    from torch_mlir import ir
    promoted = [key for key in _accumulators(em, op) if key not in em.promoted]
    for target, indices in promoted:
        name = em.fresh_local("acc")
        element = cxx_types.scalar(ir.MemRefType(target.type).element_type)
        em.line(f"{element} {name} = {em.memref(target).cname}({_indices(em, indices)});")
        em.promoted[(target, indices)] = name
    _emit_for(em, op)
    for target, indices in promoted:
        em.line(f"{em.memref(target).cname}({_indices(em, indices)}) = "
                f"{em.promoted.pop((target, indices))};")


def _emit_for(em: KokkosEmitter, op) -> None:
    operands = list(op.operands)
    lower, upper, step = (em.expr(v) for v in operands[:3])
    block = op.regions[0].blocks[0]
    carried = _declare_carried(em, op.results, operands[3:])
    iv = em.fresh_local("i")
    em.bind(block.arguments[0], iv)
    for argument, name in zip(list(block.arguments)[1:], carried):
        em.bind(argument, name)
    increment = f"++{iv}" if step == "1" else f"{iv} += {step}"
    em.line(f"for (int64_t {iv} = {lower}; {iv} < {upper}; {increment}) {{")
    em.yield_targets.append(carried)
    with em.indented():
        em.emit_block(block)
    em.yield_targets.pop()
    em.line("}")


@handles("scf.if")
def _if(em: KokkosEmitter, op) -> None:
    results = _declare_carried(em, op.results, [None] * len(op.results))
    em.line(f"if ({em.expr(op.operands[0])}) {{")
    em.yield_targets.append(results)
    for index, region in enumerate(op.regions):
        if not region.blocks or (index == 1 and not len(list(region.blocks[0].operations))):
            continue
        if index == 1:
            em.line("} else {")
        with em.indented():
            em.emit_block(region.blocks[0])
    em.yield_targets.pop()
    em.line("}")


@handles("scf.yield")
def _yield(em: KokkosEmitter, op) -> None:
    targets = em.yield_targets[-1] if em.yield_targets else []
    values = [em.expr(v) for v in op.operands]
    if len(values) > 1:   # read all before writing any: yields may permute carried values
        temporaries = []
        for target, value in zip(targets, values):
            temporary = em.fresh_local("t")
            em.line(f"const auto {temporary} = {value};")
            temporaries.append(temporary)
        values = temporaries
    for target, value in zip(targets, values):
        if target != value:
            em.line(f"{target} = {value};")


# ---- tuned kernels (exporter/kernels.py) ----------------------------------------------------
@handles("lapis.conv2d_nchw")
def _conv2d(em: KokkosEmitter, op) -> None:
    import numpy as np
    source, weight, target = (em.memref(v).cname for v in op.operands)
    stride_h, stride_w = (int(v) for v in np.asarray(op.attributes["strides"]))
    dilation_h, dilation_w = (int(v) for v in np.asarray(op.attributes["dilations"]))
    em.kernel_count += 1
    em.line(f"// {location_label(op) or op.name}: tuned convolution")
    em.line(f'lapis::conv2d_nchw<execution_space>("{em.kernel_label(op, "conv2d")}", {source}, '
            f"{weight}, {target}, {stride_h}, {stride_w}, {dilation_h}, {dilation_w});")
