"""One small handler per lowered op (registered into emitter.HANDLERS), plus the host-level
walk of forward() that turns top-level loops into kernels.

Host context: the body of forward() (Views, kernel launches). Device context: inside a
kernel lambda (scalars, loads/stores, serial loops).
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass

from ..errors import ExportError
from ..tuned_ops import ZEROED_ATTRIBUTE
from . import cxx_types, scalar_ops
from .emitter import KokkosEmitter, MemrefHandle, StateView, handles, location_label

# Ops that only make sense on device data; at the top level they run in a one-thread kernel.
_DEVICE_ONLY = {"memref.load", "memref.store", "scf.for", "scf.if", "cf.assert", "scf.while",
                "memref.atomic_rmw"}
_VIEW_LIKE = ("memref.subview", "memref.expand_shape", "memref.collapse_shape", "memref.cast",
              "memref.reinterpret_cast", "memref.reshape")   # reshape: static result type

# Ops that forward() runs (or launches) itself, sizes and offsets read on the host.
_HOST_CAPABLE = {"memref.alloc", "memref.alloca", "scf.parallel", "memref.copy", *_VIEW_LIKE}

# ---- host-level walk ------------------------------------------------------------------------
def emit_host_block(em: KokkosEmitter, block) -> None:
    """Emit a host block: consecutive device-only ops are grouped into one serial kernel."""
    group: list = []
    group_results: set = set()
    for op_view in block.operations:
        op = op_view.operation
        depends_on_group = any(operand in group_results for operand in op.operands)
        host_loop = op.name == "scf.for" and (_contains(op, "scf.parallel") or
                                              _carries_buffers(op))
        host_if = op.name == "scf.if" and (_contains(op, "scf.parallel") or
                                           _carries_buffers(op))
        # A shape guard on sizes forward() knows (dynamic extents) is checked on the host.
        host_assert = op.name == "cf.assert" and not depends_on_group
        # Buffers, views and loops stay in forward() even when their sizes come from the
        # group: those reach it through rank-0 Views (_emit_serial_kernel).
        on_host = host_loop or host_if or op.name in _HOST_CAPABLE
        if (op.name in _DEVICE_ONLY and not host_loop and not host_if and not host_assert) or \
                (depends_on_group and not on_host):
            group.append(op)
            group_results.update(op.results)
            continue
        if group:
            _emit_serial_kernel(em, group)
            group, group_results = [], set()
        if host_loop:
            _emit_host_loop(em, op)
        elif host_if:
            _emit_host_if(em, op)
        else:
            em.emit_op(op)
    if group:
        _emit_serial_kernel(em, group)


def _escaping_results(ops: list) -> list:
    """Results of a serial kernel's ops that ops outside it use (a later kernel's body reads a
    scalar the one-thread kernel computed, e.g. a scalar input loaded once)."""
    inside = set(ops)
    for op in ops:
        inside.update(_nested_ops(op))
    return [result for op in ops for result in op.results
            if any(use.owner.operation not in inside for use in result.uses)]


def _nested_ops(op):
    for region in op.regions:
        for block in region.blocks:
            for inner in block.operations:
                yield inner.operation
                yield from _nested_ops(inner.operation)


def _carries_buffers(op) -> bool:
    from torch_mlir import ir
    return any(isinstance(result.type, ir.MemRefType) for result in op.results)


def _contains(op, name: str) -> bool:
    return any(inner.name == name for inner in _nested_ops(op))


def _emit_serial_kernel(em: KokkosEmitter, ops: list) -> None:
    label = em.kernel_label(ops[0], "serial")
    em.line(f"// {location_label(ops[0]) or ops[0].name}: sequential code, one thread")
    em.line(f'Kokkos::parallel_for("{label}", range(exec, 0, 1), KOKKOS_LAMBDA(const int64_t) {{')
    _enter_kernel(em)
    escaping = _escaping_results(ops)
    with em.indented():
        for op in ops:
            em.emit_op(op)
        # Kernel locals end with the kernel: what later code reads goes through a rank-0 View.
        carried = []
        for result in escaping:
            element = cxx_types.scalar(result.type)
            name = em.unique(f"{location_label(ops[0]) or 'serial'}_scalar")
            em.state_views.append(StateView(cname=name, element=element, shape=(),
                                            comment=f"a scalar {label} computes for later "
                                                    f"kernels"))
            em.line(f"{name}() = {em.expr(result)};")
            carried.append((result, name))
    _leave_kernel(em)
    em.line("});")
    for result, name in carried:
        em.bind(result, f"{name}()")
        em.device_scalars[result] = name


def _emit_host_loop(em: KokkosEmitter, op) -> None:
    from torch_mlir import ir
    operands = list(op.operands)
    lower, upper, step = (em.expr(v) for v in operands[:3])
    body = op.regions[0].blocks[0]
    # Buffers carried from one step to the next (a recurrent state): one State buffer each,
    # which the step's yield refills (the step reads it while writing a buffer of its own).
    # Scalars carried on are variables of forward() (kernels capture their current value).
    carried = [_carried_buffer(em, op, initial) if isinstance(initial.type, ir.MemRefType)
               else _carried_scalar(em, initial) for initial in operands[3:]]
    for argument, result, target in zip(list(body.arguments)[1:], op.results, carried):
        if isinstance(target, MemrefHandle):
            em.memrefs[argument] = em.memrefs[result] = target
        else:
            em.bind(argument, target)
            em.bind(result, target)
    iv = em.unique("step")
    em.bind(body.arguments[0], iv)
    em.line(f"for (int64_t {iv} = {lower}; {iv} < {upper}; {iv} += {step}) {{")
    outer_copies = dict(em.host_copies)   # host copies made in the body end with it
    em.yield_targets.append(carried)
    with em.indented():
        emit_host_block(em, body)
    em.yield_targets.pop()
    em.host_copies = outer_copies
    em.line("}")


@dataclass
class ViewVariable:
    """A View variable of forward() that a host-level branch points at one of its buffers."""
    cname: str
    data_type: str
    shape: tuple[int, ...]    # -1: the yielded View's extent
    strided: bool             # a LayoutStride View (strides from the yielded View)


def _emit_host_if(em: KokkosEmitter, op) -> None:
    """A branch of forward() (its condition read on the host) choosing buffers or launching
    kernels: its buffer results are View variables each branch points at its own."""
    from torch_mlir import ir
    targets = []
    for result in op.results:
        if not isinstance(result.type, ir.MemRefType):
            targets.append(_declare_carried(em, [result], [None])[0])
            continue
        memref_type = ir.MemRefType(result.type)
        element = cxx_types.scalar(memref_type.element_type)
        variable = ViewVariable(em.unique("chosen"), element + "*" * memref_type.rank,
                                tuple(-1 if memref_type.is_dynamic_dim(d) else e
                                      for d, e in enumerate(memref_type.shape)),
                                strided=not _identity_layout(memref_type))
        kind = "strided" if variable.strided else "unmanaged"
        em.line(f"{kind}<{variable.data_type}> {variable.cname};")
        em.memrefs[result] = MemrefHandle(variable.cname, variable.cname, const=False)
        targets.append(variable)
    em.line(f"if ({em.expr(op.operands[0])}) {{")
    outer_copies = dict(em.host_copies)
    em.yield_targets.append(targets)
    for index, region in enumerate(op.regions):
        if not region.blocks or (index == 1 and not len(list(region.blocks[0].operations))):
            continue
        if index == 1:
            em.line("} else {")
            em.host_copies = dict(outer_copies)
        with em.indented():
            emit_host_block(em, region.blocks[0])
    em.yield_targets.pop()
    em.host_copies = outer_copies
    em.line("}")


def _carried_scalar(em: KokkosEmitter, initial) -> str:
    name = em.unique("carried")
    em.line(f"{cxx_types.scalar(initial.type)} {name} = {em.expr(initial)};")
    return name


def _carried_buffer(em: KokkosEmitter, op, initial) -> MemrefHandle:
    from torch_mlir import ir
    memref_type = ir.MemRefType(initial.type)
    if not memref_type.has_static_shape:
        raise ExportError(f"a top-level loop carrying values is not supported "
                          f"(from {location_label(op) or op.location})")
    label = location_label(op) or "loop"
    name = em.unique(f"{label}_carried")
    em.state_views.append(StateView(
        cname=name, element=cxx_types.scalar(memref_type.element_type),
        shape=tuple(memref_type.shape), comment=f"{label}: the buffer each step carries on"))
    handle = MemrefHandle(name, name, const=False)
    _emit_copy(em, op, em.memref(initial), handle, memref_type)
    return handle


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
    if not em.in_kernel:
        em.line(f'if (!{em.expr(op.operands[0])}) throw std::invalid_argument('
                f'"{em.model_name}::forward: {message}");')
        return
    em.line(f'if (!{em.expr(op.operands[0])}) Kokkos::abort("{em.model_name}: {message}");')


# ---- memory ----------------------------------------------------------------------------------
def _extents(em: KokkosEmitter, memref_type, sizes) -> list[str]:
    """C++ extents of a memref type: literals for static dimensions, the next of the `sizes`
    (SSA index values, in order) for each dynamic one."""
    sizes = iter(sizes)
    return [em.expr(next(sizes)) if memref_type.is_dynamic_dim(dim) else str(extent)
            for dim, extent in enumerate(memref_type.shape)]


def _mixed_sizes(op, attribute: str, operands) -> list:
    """The SSA operands standing for the dynamic entries of a static_sizes-like attribute."""
    from torch_mlir import ir
    static = list(ir.DenseI64ArrayAttr(op.attributes[attribute]))
    dynamic = iter(operands)
    return [next(dynamic) for value in static if ir.ShapedType.is_dynamic_size(value)]


@handles("memref.alloc", "memref.alloca")
def _alloc(em: KokkosEmitter, op) -> None:
    """Static buffers: State members allocated once in initialize(). Buffers with dynamic
    extents: State members (re)allocated here, in forward(), when their extents change."""
    from torch_mlir import ir
    memref_type = ir.MemRefType(op.results[0].type)
    if em.in_kernel:
        _local_buffer(em, op, memref_type)
        return
    extents = _extents(em, memref_type, op.operands)
    label = _buffer_label(op)
    name = em.unique(label or "buffer")
    element = cxx_types.scalar(memref_type.element_type)
    dynamic = not memref_type.has_static_shape
    shape = tuple(-1 if memref_type.is_dynamic_dim(d) else e
                  for d, e in enumerate(memref_type.shape))
    shown = ", ".join("?" if e < 0 else str(e) for e in shape)
    zeroed = ZEROED_ATTRIBUTE in op.attributes
    block = em.memory_plan.block_of.get(op.results[0]) if em.memory_plan else None
    offset = em.memory_plan.offset_of.get(op.results[0], 0) if em.memory_plan else 0
    data_type = element + "*" * len(shape)
    em.memrefs[op.results[0]] = MemrefHandle(name, name, const=False)
    if block is not None and block.dynamic:
        # In a block of storage that grows to the largest buffer asked of it: no State member.
        constant = math.prod(e for e in shape if e >= 0)
        size = " * ".join([f"sizeof({element})", *([str(constant)] if constant != 1 else []),
                           *(f"size_t({e})" for e, d in zip(extents, shape) if d < 0)])
        em.line(f"// {label or 'buffer'} [{', '.join(extents)}]: in {block.cname}")
        em.line(f'lapis::grow_storage(exec, "{em.model_name}::{block.cname}", '
                f"state->{block.cname}, {size});")
        em.line(f"const unmanaged<{data_type}> {name}(reinterpret_cast<{element}*>("
                f"state->{block.cname}.data()), {', '.join(extents)});")
        return
    em.state_views.append(StateView(cname=name, element=element, shape=shape, zeroed=zeroed,
                                    comment=f"{label or 'buffer'} [{shown}]"
                                    + (", zero border" if zeroed else "")
                                    + (f", in {block.cname}" if block else "")
                                    + (f" at byte {offset}" if offset else ""),
                                    planned_in_forward=dynamic,
                                    storage=block.cname if block else "",
                                    storage_offset=offset))
    if not dynamic:
        return
    changed = " || ".join(f"state->{name}.extent({d}) != size_t({e})"
                          for d, e in enumerate(extents) if shape[d] < 0)
    em.line(f"// {label or 'buffer'} [{', '.join(extents)}]: re-planned when its extents change")
    em.line(f"if ({changed}) {{")
    em.line(f"  state->{name} = buffer<{data_type}>();   // release before allocating anew")
    em.line(f'  state->{name} = buffer<{data_type}>(Kokkos::view_alloc(exec, '
            f'"{em.model_name}::{name}", Kokkos::WithoutInitializing), {", ".join(extents)});')
    em.line("}")
    em.line(f"const auto {name} = state->{name};")


_VIEW_OPS = ("memref.subview", "memref.expand_shape", "memref.collapse_shape", "memref.cast",
             "memref.reinterpret_cast")


def _buffer_label(alloc) -> str:
    """A buffer's source name: its alloc's, unless the first op to write it comes from another
    part of the model (bufferization gives an alloc the location of whichever tensor op it was
    made for, often not the op whose result the buffer holds)."""
    own = location_label(alloc)
    if not own:
        return ""
    writer = _first_writer_label(alloc)
    own_path = own.rpartition("/")[0]
    if not writer or writer.startswith(own + "/") or \
            (own_path and own_path == writer.rpartition("/")[0]):
        return own
    return writer


def _first_writer_label(alloc) -> str:
    """The source name of the first op that writes the buffer `alloc` makes, directly or
    through a view of it ('' if none has one)."""
    writers = []
    pending = [alloc.results[0]]
    while pending:
        value = pending.pop()
        for use in value.uses:
            user = use.owner.operation if hasattr(use.owner, "operation") else use.owner
            if user.name in _VIEW_OPS and use.operand_number == 0:
                pending.extend(user.results)
            elif _writes_operand(user, use.operand_number):
                writers.append(user)
    top = []
    for writer in writers:          # the writer's enclosing op in alloc's block
        while writer.parent is not None and writer.block != alloc.block:
            writer = writer.parent
        if writer.block == alloc.block:
            top.append(writer)
    if not top:
        return ""
    first = top[0]
    for writer in top[1:]:
        if writer.is_before_in_block(first):
            first = writer
    return location_label(first)


def _writes_operand(op, index: int) -> bool:
    """Operand `index` of `op` is memory the op writes."""
    if op.name == "memref.store":
        return index == 1
    if op.name == "memref.copy":
        return index == 1
    if op.name.startswith(("lapis.", "linalg.")):
        return index == len(op.operands) - 1
    return False


# Elements a kernel may hold in an array of its own (registers or the thread's stack).
LOCAL_BUFFER_LIMIT = 64


def _local_buffer(em: KokkosEmitter, op, memref_type) -> None:
    """A small buffer allocated inside a kernel (a one-element temporary in a sequential
    loop): an array local to the work item, seen through an unmanaged View."""
    count = math.prod(memref_type.shape) if memref_type.has_static_shape else None
    if count is None or count > LOCAL_BUFFER_LIMIT:
        raise ExportError(f"allocation inside a kernel is not supported "
                          f"(from {location_label(op) or op.location})",
                          hint=f"only static buffers of up to {LOCAL_BUFFER_LIMIT} elements")
    element = cxx_types.scalar(memref_type.element_type)
    name = em.fresh_local("local")
    extents = "".join(f", {e}" for e in memref_type.shape)
    em.line(f"{element} {name}_data[{max(count, 1)}];")
    em.line(f"const unmanaged<{element}{'*' * memref_type.rank}> {name}({name}_data{extents});")
    em.memrefs[op.results[0]] = MemrefHandle(name, name, const=False)


@handles("memref.dim")
def _dim(em: KokkosEmitter, op) -> None:
    source, index = op.operands
    view = em.memref(source)
    expression = f"int64_t({view.cname}.extent({em.expr(index)}))"
    if em.in_kernel:
        em.declare(op.results[0], expression)
        return
    name = em.unique(f"{view.cname}_extent{em.expr(index)}")
    em.line(f"const int64_t {name} = {expression};")
    em.bind(op.results[0], name)


@handles("memref.get_global")
def _get_global(em: KokkosEmitter, op) -> None:
    from torch_mlir import ir
    symbol = ir.FlatSymbolRefAttr(op.attributes["name"]).value
    view = em.globals.get(symbol)
    if view is None:
        raise ExportError(f"memref.get_global of unknown symbol @{symbol}")
    em.memrefs[op.results[0]] = MemrefHandle(view.cname, view.cname, const=True)


def _view_extents(em: KokkosEmitter, op, memref_type, source) -> list[str]:
    """The result extents of a view-like op, as C++ (dynamic ones from its size operands or,
    for collapse_shape and cast, from the source View)."""
    from torch_mlir import ir
    if memref_type.has_static_shape:
        return [str(e) for e in memref_type.shape]
    operands = list(op.operands)[1:]
    if op.name == "memref.subview":
        segments = list(ir.DenseI32ArrayAttr(op.attributes["operandSegmentSizes"]))
        sizes = operands[segments[1]:segments[1] + segments[2]]
        return _extents(em, memref_type, _mixed_sizes(op, "static_sizes", sizes))
    if op.name == "memref.reinterpret_cast":
        segments = list(ir.DenseI32ArrayAttr(op.attributes["operandSegmentSizes"]))
        sizes = operands[segments[1]:segments[1] + segments[2]]
        return _extents(em, memref_type, _mixed_sizes(op, "static_sizes", sizes))
    if op.name == "memref.expand_shape":
        return _extents(em, memref_type, _mixed_sizes(op, "static_output_shape", operands))
    if op.name == "memref.collapse_shape":
        groups = [[int(ir.IntegerAttr(i).value) for i in group]
                  for group in ir.ArrayAttr(op.attributes["reassociation"])]
        return [str(e) if not memref_type.is_dynamic_dim(d) else
                " * ".join(f"int64_t({source.cname}.extent({i}))" for i in group)
                for d, (e, group) in enumerate(zip(memref_type.shape, groups))]
    if op.name == "memref.cast":
        return [str(e) if not memref_type.is_dynamic_dim(d) else
                f"int64_t({source.cname}.extent({d}))" for d, e in enumerate(memref_type.shape)]
    if op.name == "memref.reshape" and not em.in_kernel:
        # The extents are the values of the shape buffer (Reshape to a shape computed from
        # tensor data), which forward() reads back from memory_space.
        shape = em.memref(op.operands[1])
        mirror = em.unique(f"{shape.cname}_on_host")
        em.reads_back = True
        em.line(f"const auto {mirror} = Kokkos::create_mirror_view(Kokkos::HostSpace(), "
                f"{shape.cname});")
        em.line(f"Kokkos::deep_copy(exec, {mirror}, {shape.cname});")
        em.line("exec.fence();   // the shape is read on the host next")
        return [str(e) if not memref_type.is_dynamic_dim(d) else f"int64_t({mirror}({d}))"
                for d, e in enumerate(memref_type.shape)]
    raise ExportError(f"dynamic extents of {op.name} are not supported "
                      f"(from {location_label(op) or op.location})")


def _view_like(em: KokkosEmitter, op) -> None:
    """Subviews and reshapes: an unmanaged View over the root's memory, from the result type."""
    from torch_mlir import ir
    source = em.memref(op.operands[0])
    memref_type = ir.MemRefType(op.results[0].type)
    shape = list(memref_type.shape)
    extents = _view_extents(em, op, memref_type, source)
    strides, offset = memref_type.get_strides_and_offset()
    pointer = f"{source.root}.data()" + (f" + {offset}" if offset else "")
    identity = _identity_layout(memref_type)   # row-major whatever its extents
    if not identity and any(memref_type.is_dynamic_stride_or_offset(v)
                            for v in [*strides, offset]):
        pointer, strides = _dynamic_layout(em, op, source, memref_type)
    element = cxx_types.scalar(memref_type.element_type)
    element = f"const {element}" if source.const else element
    data_type = element + "*" * len(shape)
    name = em.unique(f"{source.root}_view") if not em.in_kernel else em.fresh_local("view")
    if identity or all(isinstance(stride, int) for stride in strides) and \
            _is_row_major(memref_type, strides):
        sizes = "".join(f", {extent}" for extent in extents)
        em.line(f"const unmanaged<{data_type}> {name}({pointer}{sizes});")
    else:
        layout = ", ".join(f"{extent}, {stride}" for extent, stride in zip(extents, strides))
        em.line(f"const strided<{data_type}> {name}({pointer}, Kokkos::LayoutStride({layout}));")
    em.memrefs[op.results[0]] = MemrefHandle(name, source.root, source.const)


for _name in _VIEW_LIKE:
    handles(_name)(_view_like)


def _identity_layout(memref_type) -> bool:
    from torch_mlir import ir
    layout = memref_type.layout
    return isinstance(layout, ir.AffineMapAttr) and \
        ir.AffineMapAttr(layout).value == ir.AffineMap.get_identity(memref_type.rank,
                                                                  memref_type.context)


def _dynamic_layout(em: KokkosEmitter, op, source: MemrefHandle, memref_type):
    """Pointer and strides of a subview whose offset or strides are known only at run time
    (offsets computed from tensor data, views of such views): from the source View's own
    data pointer and strides, as C++ expressions."""
    from torch_mlir import ir
    source_rank = ir.MemRefType(op.operands[0].type).rank
    refused = ExportError(f"views with dynamic strides are not supported yet "
                          f"(from {location_label(op) or op.location})")
    if op.name in ("memref.collapse_shape", "memref.expand_shape", "memref.cast"):
        # Same first element as the source View: its data() already holds the offset.
        strides, _ = memref_type.get_strides_and_offset()
        dynamic = [memref_type.is_dynamic_stride_or_offset(s) for s in strides]
        if any(dynamic) and op.name == "memref.expand_shape":
            # Each source dimension splits into a group: the last keeps its stride, the
            # others step over the extents after them (run-time extents where dynamic).
            groups = [[int(ir.IntegerAttr(i).value) for i in group]
                      for group in ir.ArrayAttr(op.attributes["reassociation"])]
            extents = _view_extents(em, op, memref_type, source)
            strides = [""] * memref_type.rank
            for source_dim, group in enumerate(groups):
                running = f"int64_t({source.cname}.stride({source_dim}))"
                for dim in reversed(group):
                    strides[dim] = running
                    running = f"{running} * {extents[dim]}"
            return f"{source.cname}.data()", strides
        if any(dynamic) and op.name == "memref.collapse_shape":
            # A group is contiguous but for unit dimensions: it steps as its innermost
            # dimension that is not of size 1 (a row of edge_index[2, E] whose E is dynamic).
            groups = [[int(ir.IntegerAttr(i).value) for i in group]
                      for group in ir.ArrayAttr(op.attributes["reassociation"])]
            source_type = ir.MemRefType(op.operands[0].type)
            result = []
            for dim, group in enumerate(groups):
                if not dynamic[dim]:
                    result.append(strides[dim])
                    continue
                inner = [d for d in group if source_type.shape[d] != 1] or group
                result.append(f"int64_t({source.cname}.stride({inner[-1]}))")
            return f"{source.cname}.data()", result
        if any(dynamic) and op.name != "memref.cast":
            raise refused
        return f"{source.cname}.data()", [f"int64_t({source.cname}.stride({dim}))"
                                          if is_dynamic else stride for dim, (stride, is_dynamic)
                                          in enumerate(zip(strides, dynamic))]
    if op.name != "memref.subview":
        raise refused
    # A rank-reducing subview drops unit dimensions: unambiguous when it drops all of them.
    sizes = list(ir.DenseI64ArrayAttr(op.attributes["static_sizes"]))
    kept = list(range(source_rank))
    if source_rank != memref_type.rank:
        kept = [dim for dim, size in enumerate(sizes) if size != 1]
        if len(kept) != memref_type.rank:
            raise refused
    segments = list(ir.DenseI32ArrayAttr(op.attributes["operandSegmentSizes"]))
    operands = list(op.operands)[1:]
    offsets = _mixed_values(em, op, "static_offsets", operands[:segments[1]])
    steps = _mixed_values(em, op, "static_strides", operands[segments[1] + segments[2]:])
    source_strides = [f"int64_t({source.cname}.stride({dim}))" for dim in range(source_rank)]
    terms = [f"{offset} * {stride}" for offset, stride in zip(offsets, source_strides)
             if offset != "0"]
    pointer = f"{source.cname}.data()" + "".join(f" + {term}" for term in terms)
    strides = [source_strides[dim] if steps[dim] == "1" else
               f"{steps[dim]} * {source_strides[dim]}" for dim in kept]
    return pointer, strides


def _mixed_values(em: KokkosEmitter, op, attribute: str, operands) -> list[str]:
    """A static_offsets-like attribute as C++: literals, and the operands' expressions for
    its dynamic entries."""
    from torch_mlir import ir
    dynamic = iter(operands)
    return [em.expr(next(dynamic)) if ir.ShapedType.is_dynamic_size(value) else str(value)
            for value in ir.DenseI64ArrayAttr(op.attributes[attribute])]


def _is_row_major(memref_type, strides) -> bool:
    """Unit last stride and each stride the product of the extents after it (a dynamic extent
    there makes a static stride not provably row-major)."""
    running = 1
    for dim in reversed(range(len(strides))):
        if running is None or strides[dim] != running:
            return False
        running = None if memref_type.is_dynamic_dim(dim) else running * memref_type.shape[dim]
    return True


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
    _emit_copy(em, op, source, target, ir.MemRefType(op.operands[0].type))


def _emit_copy(em: KokkosEmitter, op, source: MemrefHandle, target: MemrefHandle,
               memref_type) -> None:
    shape = [str(e) if not memref_type.is_dynamic_dim(d) else
             f"int64_t({source.cname}.extent({d}))" for d, e in enumerate(memref_type.shape)]

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
    extents = [int(upper) - int(lower) if lower.isdigit() and upper.isdigit() else None
               for lower, upper in bounds]
    # Flat on GPUs, and for more dimensions than an MDRangePolicy takes (Tile of a 4-d tensor).
    flat = (em.flat_ranges or len(bounds) > 6) and len(bounds) > 1 and None not in extents
    if len(bounds) <= 1:
        lower, upper = bounds[0] if bounds else ("0", "1")
        policy = f"range(exec, {lower}, {upper})"
    elif flat:
        policy = f"range(exec, 0, {math.prod(extents)})"
    elif len(bounds) <= 6:
        lowers = ", ".join(b[0] for b in bounds)
        uppers = ", ".join(b[1] for b in bounds)
        policy = f"mdrange<{len(bounds)}>(exec, {{{lowers}}}, {{{uppers}}})"
    else:
        raise ExportError(f"a parallel loop of {len(bounds)} dimensions is not supported "
                          f"(at most 6; from {source})")
    em.line(f"// {source}")
    header = len(em.lines)
    em.line(f'Kokkos::parallel_for("{label}", {policy}, KOKKOS_LAMBDA(@PARAMS@) {{')
    with em.indented():
        body(ivs)
        text = "\n".join(em.lines[header + 1:])
        used = [bool(re.search(rf"\b{iv}\b", text)) for iv in ivs]
        if flat:       # the indices from the flat one, innermost fastest
            unflatten = []
            for k, (iv, (lower, _)) in enumerate(zip(ivs, bounds)):
                if not used[k]:
                    continue
                stride = math.prod(extents[k + 1:])
                index = "flat" if stride == 1 else f"flat / {stride}"
                if extents[k] == 1:
                    index = "0"
                elif k > 0:
                    index = f"{index} % {extents[k]}" if stride == 1 else f"({index}) % {extents[k]}"
                unflatten.append("  " * em.depth + f"const int64_t {iv} = "
                                 + (index if lower == "0" else f"{lower} + {index}") + ";")
            em.lines[header + 1:header + 1] = unflatten
    _leave_kernel(em)
    em.line("});")
    # Name only the indices the body reads, so the code compiles cleanly with -Wunused.
    if flat:
        params = "const int64_t flat"
    else:
        params = ", ".join(f"const int64_t {iv}" if is_used else f"const int64_t /*{iv}*/"
                           for iv, is_used in zip(ivs, used))
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
    static = all(b.isdigit() for b in [*lowers, *uppers])
    if rank > 6 and not static:   # beyond an MDRangePolicy's six: inner loops in the kernel
        def nested_body(ivs):
            def inner(inner_ivs):
                body(ivs + inner_ivs)
            _serial_loops(em, lowers[6:], uppers[6:], inner)
        _launch(em, op, "parallel", list(zip(lowers[:6], uppers[:6])), nested_body)
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
    from torch_mlir import ir
    if any(isinstance(result.type, ir.MemRefType) for result in op.results):
        raise ExportError(f"a branch choosing between buffers (scf.if with memref results) is "
                          f"not supported (from {location_label(op) or op.location})")
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
    if not em.in_kernel and targets:   # a host loop's carried buffers and scalars
        from torch_mlir import ir
        values = [em.expr(value) if isinstance(target, str) else None
                  for target, value in zip(targets, op.operands)]
        if sum(isinstance(target, str) for target in targets) > 1:   # may permute: read first
            for index, text in enumerate(values):
                if text is not None:
                    values[index] = em.unique("next")
                    em.line(f"const auto {values[index]} = {text};")
        for target, value, text in zip(targets, op.operands, values):
            if isinstance(target, str):
                if target != text:
                    em.line(f"{target} = {text};")
                continue
            source = em.memref(value)
            if isinstance(target, ViewVariable):
                pointer = f"{source.cname}.data()"
                if source.const:   # read only, as bufferization keeps inputs
                    pointer = f"const_cast<{target.data_type.rstrip('*')}*>({pointer})"
                extents = [str(e) if e >= 0 else f"int64_t({source.cname}.extent({d}))"
                           for d, e in enumerate(target.shape)]
                if target.strided:
                    layout = ", ".join(f"{e}, int64_t({source.cname}.stride({d}))"
                                       for d, e in enumerate(extents))
                    em.line(f"{target.cname} = strided<{target.data_type}>({pointer}, "
                            f"Kokkos::LayoutStride({layout}));")
                else:
                    em.line(f"{target.cname} = unmanaged<{target.data_type}>({pointer}"
                            + "".join(f", {e}" for e in extents) + ");")
                continue
            if source.cname == target.cname:
                continue
            if source.root == target.root:
                raise ExportError(f"a loop step yielding a part of the buffer it carries is "
                                  f"not supported (from {location_label(op) or op.location})")
            _emit_copy(em, op, source, target, ir.MemRefType(value.type))
        return
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


# ---- tuned kernels (lowering/conv.py) ----------------------------------------------------------
@handles("lapis.conv2d_nchw")
def _conv2d(em: KokkosEmitter, op) -> None:
    """The tuned convolution, with what the lowering folded into it (lowering/conv.py)."""
    import numpy as np
    from torch_mlir import ir
    source, weight, *bias, target = (em.memref(v) for v in op.operands)
    residual = "residual" in op.attributes and ir.BoolAttr(op.attributes["residual"]).value
    if residual:
        *bias, residual = bias
    stride_h, stride_w = (int(v) for v in np.asarray(op.attributes["strides"]))
    dilation_h, dilation_w = (int(v) for v in np.asarray(op.attributes["dilations"]))
    pad_h, pad_w = ir.DenseI64ArrayAttr(op.attributes["padding"])
    init = ir.StringAttr(op.attributes["init"]).value
    relu = ir.BoolAttr(op.attributes["relu"]).value
    element = cxx_types.scalar(ir.MemRefType(op.operands[-1].type).element_type)
    bias_view = bias[0].cname if bias else f"lapis::no_bias<{element}, memory_space>()"
    folded = ", ".join(part for part, present in (
        ("bias", init == "bias"), ("padding", pad_h or pad_w), ("residual add", residual),
        ("relu", relu)) if present)
    em.include("lapis/conv.hpp")
    em.kernel_count += 1
    em.line(f"// {location_label(op) or op.name}: tuned convolution"
            + (f" ({folded} folded in)" if folded else ""))
    split = em.split_weights.get(weight.cname)
    em.line(f'{em.tuned_kernel("conv2d_nchw")}(exec, "{em.kernel_label(op, "conv2d")}", '
            f"{source.cname}, {weight.cname}, " + (f"{split}, " if split else "")
            + f"{target.cname},")
    em.line(f"    lapis::ConvGeometry{{{stride_h}, {stride_w}, {dilation_h}, {dilation_w}, "
            f"{pad_h}, {pad_w}}}, lapis::ConvInit::{init}, {bias_view}, "
            + (f"{residual.cname}, " if residual else "")
            + f"{'true' if relu else 'false'});")


@handles("lapis.max_pool2d_nchw")
def _max_pool2d(em: KokkosEmitter, op) -> None:
    """Max pooling reading around its unpadded input (lowering/conv.py)."""
    import numpy as np
    from torch_mlir import ir
    source, target = (em.memref(v) for v in op.operands)
    kernel_h, kernel_w = ir.DenseI64ArrayAttr(op.attributes["kernel"])
    stride_h, stride_w = (int(v) for v in np.asarray(op.attributes["strides"]))
    dilation_h, dilation_w = (int(v) for v in np.asarray(op.attributes["dilations"]))
    pad_h, pad_w = ir.DenseI64ArrayAttr(op.attributes["padding"])
    lowest = ir.StringAttr(op.attributes["init"]).value == "lowest"
    em.include("lapis/pooling.hpp")
    em.kernel_count += 1
    em.line(f"// {location_label(op) or op.name}: max pooling (-inf padding read around the "
            "input)")
    em.line(f'lapis::max_pool2d_nchw<execution_space>(exec, "{em.kernel_label(op, "max_pool")}", '
            f"{source.cname}, {target.cname},")
    em.line(f"    lapis::PoolGeometry{{{kernel_h}, {kernel_w}, {stride_h}, {stride_w}, "
            f"{dilation_h}, {dilation_w}, {pad_h}, {pad_w}}}, {'true' if lowest else 'false'});")
