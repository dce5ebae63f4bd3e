"""Emit stage entry point: lowered MLIR -> the package's header and source text.

Walks the single `forward` function, then renders templates/cpp/*.in with what the walk found
(weights and buffers for the State struct, the kernels for forward()'s body, the C API).
"""
from __future__ import annotations

import re

import numpy as np

from .. import __version__, templates, tuned_ops
from ..errors import ExportError
from ..handoff import (C_API_TYPES, CUDA_BF16, CXX_TYPES, PRECISIONS, EmittedSource,
                       ImportedModel, TensorSpec, Weight, dynamic_extents)
from . import cxx_types, memory_plan
from .emitter import KokkosEmitter, MemrefHandle, StateView
from .handlers import emit_host_block
from . import matmul_handlers  # noqa: F401  (registers the dense matrix product handler)
from . import sparse_handlers  # noqa: F401  (registers the CSR product handlers)
from . import dense_handlers  # noqa: F401  (registers the dense solve and recurrence handlers)
from . import evaluator

BACKEND_SPACES = {
    "serial": ("Kokkos::Serial", "Kokkos::HostSpace"),
    "openmp": ("Kokkos::OpenMP", "Kokkos::HostSpace"),
    "threads": ("Kokkos::Threads", "Kokkos::HostSpace"),
    "cuda": ("Kokkos::Cuda", "Kokkos::CudaSpace"),
    "hip": ("Kokkos::HIP", "Kokkos::HIPSpace"),
    "sycl": ("Kokkos::Experimental::SYCL", "Kokkos::Experimental::SYCLDeviceUSMSpace"),
}


def kokkos(lowered: ImportedModel, name: str, backend: str, precision: str = "fp32",
           row: ImportedModel | None = None) -> EmittedSource:
    """Generate Kokkos C++ for `lowered` (output of lowering.run) as package `name`, its
    float32 products in `precision` (PRECISIONS: tf32 on CUDA; bf16 on host backends, and on
    CUDA as CUDA_BF16 says). With `row`
    (the same model at one row, lowered without tuned kernels), the header also gets the
    evaluator that a host's own kernels call per point (evaluator.py)."""
    if backend not in BACKEND_SPACES:
        raise ExportError(f"unknown backend '{backend}'",
                          hint="choose one of " + ", ".join(BACKEND_SPACES))
    module = lowered.module
    function = _forward_function(module)
    emitter = KokkosEmitter(name, flat_ranges=backend not in tuned_ops.HOST_BACKENDS)
    emitter.split_conv_weights = backend == "cuda"
    emitter.backend, emitter.precision = backend, precision
    # The template's own code: extent checks and the C API's Kokkos, the weight blob reader.
    emitter.include("lapis/support.hpp")
    emitter.include("lapis/weight_blob.hpp")
    emitter.taken.update({"state", "blob", "fresh", "range", "mdrange", "buffer", "unmanaged",
                          "strided", "State", "initialize", "finalize", "forward", "exec", name})
    arguments = list(function.regions[0].blocks[0].arguments)
    expected = len(lowered.weights) + len(lowered.inputs) + len(lowered.outputs)
    if len(arguments) != expected:
        raise ExportError(f"internal: forward has {len(arguments)} arguments, expected "
                          f"{expected} (weights, inputs, outputs)")
    blob: list[Weight] = []
    weight_args = arguments[:len(lowered.weights)]
    for argument, weight in zip(weight_args, lowered.weights):
        if not list(argument.uses):
            continue   # e.g. batch norm's num_batches_tracked
        _add_weight(emitter, blob, weight, argument)
    _add_module_constants(emitter, blob, module)
    io_args = arguments[len(lowered.weights):]
    for argument, spec in zip(io_args, [*lowered.inputs, *lowered.outputs]):
        emitter.taken.update({spec.cname, f"{spec.cname}_given", f"{spec.cname}_staged"})
        is_input = spec in lowered.inputs
        emitter.memrefs[argument] = MemrefHandle(spec.cname, spec.cname, const=is_input)

    plan = emitter.memory_plan = memory_plan.plan(function.regions[0].blocks[0])
    for block in plan.blocks:
        emitter.taken.add(block.cname)
        emitter.state_views.append(StateView(
            cname=block.cname, element="unsigned char",
            shape=(-1,) if block.dynamic else (block.nbytes,), comment="",
            planned_in_forward=block.dynamic, zeroed=bool(block.kind), is_storage=True))
    emit_host_block(emitter, function.regions[0].blocks[0])
    _describe_storage(emitter)
    forward_body = "\n".join(emitter.lines)
    graph = not emitter.reads_back   # see _forward_graph_call
    if graph:
        emitter.include("lapis/graph.hpp")

    fields = _header_fields(name, backend, lowered)
    fields.update(_evaluator_fields(emitter, blob, row, name))
    text = CUDA_BF16 if precision == "bf16" and backend == "cuda" else PRECISIONS[precision]
    fields["PRECISION"] = f"{precision}, {text}" + (
        " (3xTF32 on the tensor cores: each operand split into two tf32 parts)"
        if precision == "fp32" and backend == "cuda" else "")
    header = _render("model.hpp.in", fields)
    # The C API's device copies of the caller's host buffers: made once, in initialize(), or
    # by the C API when a dynamic size changes.
    staging = [] if backend in tuned_ops.HOST_BACKENDS else [
        StateView(cname=f"c_api_{spec.cname}", element=CXX_TYPES[spec.dtype],
                  shape=tuple(spec.shape), comment=f"C API copy of {spec.cname}",
                  planned_in_forward=any(d < 0 for d in spec.shape))
        for spec in [*lowered.inputs, *lowered.outputs]]
    source = _render("model.cpp.in", {
        **fields,
        "KERNEL_COUNT": str(emitter.kernel_count),
        "WEIGHT_COUNT": str(len(blob)),
        "SUPPORT_INCLUDES": "\n".join(f'#include "{header}"'
                                       for header in sorted(emitter.support_headers)),
        "STATE_MEMBERS": _state_members(emitter.state_views + staging, graph)
        + _staged_members(lowered) + (_c_colmajor_members(lowered) if staging else ""),
        "INITIALIZE_BODY": _initialize_body(name, emitter.state_views + staging),
        "REPLACE_WEIGHTS_BODY": _replace_weights_body(name, emitter.state_views),
        "EXTENT_CHECKS": _extent_checks(name, lowered),
        "FORWARD_GIVEN_PARAMS": _given_params(lowered),
        "FORWARD_ROW_MAJOR": _row_major_views(name, lowered),
        "FORWARD_WRITE_BACK": _write_back(name, lowered),
        "FORWARD_HANDLES": _forward_handles(emitter.state_views),
        "FORWARD_BODY": forward_body,
        "FORWARD_GRAPH_CALL": _forward_graph_call(fields, emitter.reads_back),
        "C_NULL_CHECKS": _c_null_checks(name, lowered),
        "C_FORWARD_BODY": _c_forward_body(name, lowered, bool(staging)),
        "C_COLMAJOR_NULL_CHECKS": _c_null_checks(name, lowered, "forward_host_colmajor"),
        "C_FORWARD_COLMAJOR_BODY": _c_forward_body(name, lowered, bool(staging), colmajor=True),
    })
    return EmittedSource(name=name, backend=backend, header=header, source=source,
                         weights=blob, inputs=lowered.inputs, outputs=lowered.outputs,
                         op_counts=emitter.op_counts, kernel_count=emitter.kernel_count,
                         precision=precision, evaluator=row is not None,
                         memory=plan.summary())


def _describe_storage(emitter: KokkosEmitter) -> None:
    """Each block of storage's comment: the buffers that take turns in it."""
    for block in (v for v in emitter.state_views if v.is_storage):
        users = [v.cname for v in emitter.state_views if v.storage == block.cname]
        if block.planned_in_forward:
            block.comment = "storage grown to the largest of the buffers with dynamic " \
                            "extents that take turns in it"
        elif block.zeroed:
            block.comment = (f"{block.shape[0]} bytes, taken in turn by " + ", ".join(users)
                             if len(users) > 1 else f"{block.shape[0]} bytes, for "
                             + "".join(users)) + ", zero border"
        else:
            block.comment = (f"{block.shape[0]} bytes: the {len(users)} buffers below "
                             "that name it, each at its offset, planned by liveness")


def _evaluator_fields(emitter: KokkosEmitter, blob: list[Weight], row: ImportedModel | None,
                      name: str) -> dict[str, str]:
    """The evaluator's text for the templates ('' without one). Its weights are the State's
    Views where forward() holds the same tensor the same way (not packed for a tuned kernel),
    else Views of their own in the blob (`evaluator/` before the name)."""
    if row is None:
        return {"EVALUATOR": "", "EVALUATOR_INCLUDE": "", "EVALUATOR_DEFINITION": ""}
    function = _forward_function(row.module)
    arguments = list(function.regions[0].blocks[0].arguments)
    row_emitter = evaluator.RowEmitter(name)
    row_blob: list[Weight] = []
    for argument, weight in zip(arguments[:len(row.weights)], row.weights):
        if list(argument.uses):
            _add_weight(row_emitter, row_blob, weight, argument)
    _add_module_constants(row_emitter, row_blob, row.module)
    weights = []
    for view in row_emitter.state_views:
        own = row_blob[view.weight_index]
        state = _same_weight(emitter, blob, own)
        if state is None:
            state = emitter.unique(f"evaluator_{view.cname}")
            emitter.state_views.append(StateView(
                cname=state, element=view.element, shape=view.shape,
                comment=f"the evaluator's {view.comment}", weight_index=len(blob),
                weight_name=f"evaluator/{own.name}"))
            blob.append(Weight(name=f"evaluator/{own.name}", cname=state, array=own.array))
        weights.append(evaluator.RowWeight(member=view.cname, element=view.element,
                                           shape=view.shape, comment=view.comment, state=state))
    fields = evaluator.emit(row_emitter, row, function, weights)
    fields["EVALUATOR_INCLUDE"] = ('#include "lapis/scalar.hpp"  // the evaluator\'s scalar '
                                   "helpers (device code)\n")
    return fields


def _same_weight(emitter: KokkosEmitter, blob: list[Weight], weight: Weight) -> str | None:
    """The State View holding `weight`'s tensor as it is, if forward() has one."""
    for index, other in enumerate(blob):
        if other.name == weight.name and other.array.dtype == weight.array.dtype and \
                other.array.shape == weight.array.shape and \
                np.array_equal(other.array, weight.array):
            return next(v.cname for v in emitter.state_views if v.weight_index == index)
    return None


def _forward_function(module):
    functions = [op.operation for op in module.body.operations
                 if op.operation.name == "func.func"]
    if len(functions) != 1:
        raise ExportError(f"internal: expected one function after lowering, found "
                          f"{len(functions)}")
    return functions[0]


def _add_weight(emitter: KokkosEmitter, blob: list[Weight], weight: Weight, argument) -> None:
    from torch_mlir import ir
    memref_type = ir.MemRefType(argument.type)
    cname = emitter.unique(weight.cname)
    array = weight.array
    comment = f'"{weight.name}" {list(memref_type.shape)}'
    layout = tuned_ops.packed_layout(argument)
    packed_conv = layout == tuned_ops.CONV2D
    if packed_conv:
        array = tuned_ops.pack_conv_weight(
            array, tuned_ops.conv_channel_block(emitter.backend, array.dtype))
        comment += f", packed for lapis::conv2d_nchw as {list(array.shape)}"
    element = cxx_types.scalar(memref_type.element_type)
    if layout == tuned_ops.LINEAR and emitter.precision == "bf16" and element == "float":
        array = tuned_ops.pack_linear_weight_bf16(array)
        element = "lapis::bfloat16"
        comment += (f", in bfloat16 packed for lapis::linear_packed as {list(array.shape)} "
                    "(rows in pairs)")
    elif layout == tuned_ops.LINEAR:
        array = tuned_ops.pack_linear_weight(array)
        comment += f", packed for lapis::linear_packed as {list(array.shape)}"
    elif emitter.backend == "cuda" and emitter.precision == "bf16" and element == "float" and \
            tuned_ops.read_as_bf16(argument):
        array = tuned_ops.bfloat16_bits(array)
        element = "lapis::bfloat16"
        comment += ", in bfloat16 (rounded to nearest even) for lapis::linear"
    elif emitter.backend == "cuda" and emitter.precision == "tf32" and element == "float" and \
            tuned_ops.read_as_tf32(argument):
        array = tuned_ops.round_to_tf32(array)
        comment += ", rounded to tf32 (lapis::linear reads it as it is)"
        emitter.tf32_weights.add(cname)
    emitter.state_views.append(StateView(
        cname=cname, element=element,
        shape=tuple(array.shape), comment=comment,
        weight_index=len(blob), weight_name=weight.name))
    emitter.memrefs[argument] = MemrefHandle(cname, cname, const=True)
    blob.append(Weight(name=weight.name, cname=cname, array=array))
    if packed_conv and emitter.split_conv_weights:
        _add_split_weight(emitter, cname, array)


def _add_split_weight(emitter: KokkosEmitter, packed: str, array: np.ndarray) -> None:
    """The tensor-core tiles' copy of a packed convolution weight (CUDA, conv_tf32.hpp's
    ConvTilesSplit): 16 x 8 mma fragments of big and small tf32 parts, made in initialize().
    None for 1x1 filters (linear layers too), where the split tiles' steps of 8 channels were
    slower than the packed weights' tiles on an H200, nor for a channel count the tiles cannot
    step through 8 at a time."""
    blocks, channels_in, kernel_h, kernel_w, _ = array.shape
    if array.dtype != np.float32 or channels_in % 8 or kernel_h * kernel_w == 1:
        return
    split = emitter.unique(f"{packed}_tf32")
    emitter.include("lapis/conv.hpp")   # split_tf32_weight, called in initialize()
    emitter.state_views.append(StateView(
        cname=split, element="float",
        shape=((blocks + 1) // 2, kernel_h, kernel_w, channels_in // 8, 256),
        comment=f"{packed} split into tf32 mma fragments (lapis::split_tf32_weight)",
        split_of=packed))
    emitter.split_weights[packed] = split


def _add_module_constants(emitter: KokkosEmitter, blob: list[Weight], module) -> None:
    """memref.global constants (from tensor constants in the model) travel in the blob too."""
    from torch_mlir import ir
    resources = None
    for op in module.body.operations:
        op = op.operation
        if op.name != "memref.global":
            continue
        symbol = ir.StringAttr(op.attributes["sym_name"]).value
        memref_type = ir.MemRefType(ir.TypeAttr(op.attributes["type"]).value)
        dtype = cxx_types.numpy_dtype(memref_type.element_type)
        shape = tuple(memref_type.shape)
        initial = op.attributes["initial_value"] if "initial_value" in op.attributes else None
        if initial is not None and _is_resource(initial):
            # torch-mlir keeps some constants (e.g. as_strided's gather indices) as resource
            # blobs, which the Python bindings cannot read: they are taken from the module's
            # printed resource section.
            if resources is None:
                resources = _resource_blobs(module)
            data = resources.get(_resource_name(initial))
            if data is None or len(data) != int(np.prod(shape)) * np.dtype(dtype).itemsize:
                raise ExportError(f"global @{symbol}: its resource blob is missing or does not "
                                  f"hold {list(shape)} {dtype} values")
            array = np.frombuffer(data, dtype=dtype).reshape(shape)
            _add_constant(emitter, blob, symbol, memref_type, shape, array)
            continue
        if not isinstance(initial, ir.DenseElementsAttr):
            raise ExportError(f"global @{symbol} has no dense initial value the emitter can read")
        attr = ir.DenseElementsAttr(initial)
        if attr.is_splat:
            splat = attr.get_splat_value()
            value = ir.FloatAttr(splat).value if isinstance(splat, ir.FloatAttr) \
                else ir.IntegerAttr(splat).value
            array = np.full(shape, value, dtype=dtype)
        else:
            array = np.asarray(attr).astype(dtype).reshape(shape)
        _add_constant(emitter, blob, symbol, memref_type, shape, array)


def _add_constant(emitter: KokkosEmitter, blob: list[Weight], symbol: str, memref_type,
                  shape: tuple[int, ...], array: np.ndarray) -> None:
    cname = emitter.unique(symbol)
    view = StateView(cname=cname, element=cxx_types.scalar(memref_type.element_type),
                     shape=shape, comment=f"constant {symbol} {list(shape)}",
                     weight_index=len(blob), weight_name=symbol)
    emitter.state_views.append(view)
    emitter.globals[symbol] = view
    blob.append(Weight(name=symbol, cname=cname, array=np.require(array, requirements="C")))


def _is_resource(attr) -> bool:
    from torch_mlir import ir
    try:
        ir.DenseResourceElementsAttr(attr)
    except ValueError:
        return False
    return True


def _resource_name(attr) -> str:
    """'torch_tensor_1_4_torch.int64' from dense_resource<torch_tensor_1_4_torch.int64>."""
    match = re.match(r'dense_resource<"?([^">]+)"?>', str(attr))
    return match.group(1) if match else ""


def _resource_blobs(module) -> dict[str, bytes]:
    """The module's builtin resource blobs by name: "0x" + a 4-byte alignment + the data."""
    text = module.operation.get_asm(large_elements_limit=None)
    if "{-#" not in text:
        return {}
    section = text.rpartition("{-#")[2]
    return {name: bytes.fromhex(hex_data)[4:] for name, hex_data in
            re.findall(r'"?([^\s":{}]+)"?\s*:\s*"0x([0-9A-Fa-f]*)"', section)}


def _view_type(spec: TensorSpec, const: bool, space: str = "memory_space",
               traits: str = "", layout: str = "Kokkos::LayoutRight") -> str:
    element = ("const " if const else "") + CXX_TYPES[spec.dtype]
    extra = f", {traits}" if traits else ""
    return f"Kokkos::View<{element}{'*' * len(spec.shape)}, {layout}, {space}{extra}>"


def _header_fields(name: str, backend: str, lowered: ImportedModel) -> dict[str, str]:
    execution_space, memory_space = BACKEND_SPACES[backend]
    io_doc, view_types, params, c_params = [], [], [], []
    names = [spec.cname for spec in [*lowered.inputs, *lowered.outputs]]
    for kind, specs in (("input", lowered.inputs), ("output", lowered.outputs)):
        for spec in specs:
            const = kind == "input"
            io_doc.append(f"//   {spec.cname} ({kind} '{spec.name}'): {spec.dtype} "
                          f"{list(spec.shape)}")
            rank = len(spec.shape)
            extents = ", ".join(str(d) for d in spec.shape) or "1"
            if spec.dynamic:
                io_doc[-1] += "  (-1: any size, given at run time)"
            if rank == 0:
                io_doc[-1] += "  (a scalar: a rank-0 View; the C API takes a pointer to it)"
            view_types.append(f"using {spec.cname}_view = {_view_type(spec, const)};\n"
                              f"using {spec.cname}_arg = "
                              f"{_view_type(spec, const, layout='Kokkos::LayoutStride')};\n"
                              f"inline constexpr int {spec.cname}_rank = {rank};\n"
                              f"inline constexpr int64_t {spec.cname}_extents[{max(rank, 1)}] = "
                              f"{{{extents}}};" + ("  // rank 0: no extents, a placeholder"
                                               if rank == 0 else ""))
            params.append(f"{spec.cname}_arg {spec.cname}")
            c_type = C_API_TYPES[spec.dtype]
            c_params.append(f"{'const ' if const else ''}{c_type}* {spec.cname}")
    c_params[:0] = [f"int64_t {extent.cname}" for extent in dynamic_extents(lowered.inputs)]
    source = lowered.source.path.name if lowered.source else "a model"
    return {"NAME": name, "VERSION": __version__, "SOURCE": source,
            "IO_DOC": "\n".join(io_doc), "SPACES": _spaces(execution_space, memory_space),
            "NUM_INPUTS": str(len(lowered.inputs)),
            "NUM_OUTPUTS": str(len(lowered.outputs)), "VIEW_TYPES": "\n".join(view_types),
            "FORWARD_PARAMS": ", ".join(params), "C_FORWARD_PARAMS": ", ".join(c_params),
            "FORWARD_ARGS": ", ".join(names),
            "FORWARD_POINTERS": ", ".join(f"{n}.data()" for n in names)}


def _spaces(execution_space: str, memory_space: str) -> str:
    spaces = f"using execution_space = {execution_space};\nusing memory_space = {memory_space};"
    if execution_space != "Kokkos::HIP":
        return spaces
    # Kokkos 3 has the HIP backend in Kokkos::Experimental (4.0 moved it out).
    return ("#if KOKKOS_VERSION >= 40000\n" + spaces + "\n#else\n"
            + spaces.replace("Kokkos::HIP", "Kokkos::Experimental::HIP") + "\n#endif")


def _state_members(views: list[StateView], graph: bool) -> str:
    members = [f"  buffer<{v.element}{'*' * len(v.shape)}> {v.cname};  // {v.comment}"
               + (", allocated by forward()" if v.planned_in_forward else "") for v in views]
    if graph:
        members.append("  lapis::ForwardGraph graph;  // forward_graph()'s recording")
    return "\n".join(members)


def _initialize_body(name: str, views: list[StateView]) -> str:
    lines = []
    for view in views:
        if view.planned_in_forward:
            continue
        extents = "".join(f", {e}" for e in view.shape)
        if view.storage:
            lines.append(f"    fresh->{view.cname} = buffer<{view.element}{'*' * len(view.shape)}>("
                         f"reinterpret_cast<{view.element}*>(fresh->{view.storage}.data()"
                         + (f" + {view.storage_offset}" if view.storage_offset else "")
                         + f"){extents});")
            continue
        initializing = "" if view.zeroed else ", Kokkos::WithoutInitializing"
        lines.append(f"    fresh->{view.cname} = buffer<{view.element}{'*' * len(view.shape)}>("
                     f'Kokkos::view_alloc("{name}::{view.cname}"{initializing}){extents});')
        if view.weight_index is not None:
            lines.append(f'    lapis::load_weight(blob, {view.weight_index}, "{view.weight_name}", '
                         f"fresh->{view.cname});")
        if view.split_of:
            lines.append(f"    lapis::split_tf32_weight<execution_space>(execution_space(), "
                         f'"{name}::{view.cname}", fresh->{view.split_of}, fresh->{view.cname});')
    return "\n".join(lines)


def _replace_weights_body(name: str, views: list[StateView]) -> str:
    """load_weights(): every tensor checked before any is replaced, then the copies made from
    the packed weights (tf32 splits) made again."""
    weights = [v for v in views if v.weight_index is not None]
    lines = [f'    lapis::check_weight(blob, {v.weight_index}, "{v.weight_name}", state->{v.cname});'
             for v in weights]
    lines += [f'    lapis::load_weight(blob, {v.weight_index}, "{v.weight_name}", state->{v.cname});'
              for v in weights]
    lines += [f"    lapis::split_tf32_weight<execution_space>(execution_space(), "
              f'"{name}::{v.cname}", state->{v.split_of}, state->{v.cname});'
              for v in views if v.split_of]
    return "\n".join(lines)


def _forward_graph_call(fields: dict[str, str], reads_back: bool) -> str:
    """forward() recorded as a graph, unless it reads values back mid-way (sizes computed
    from tensor data): a graph would replay the sizes of its recording, and a capture
    cannot wait for the device."""
    call = f"forward(exec, {fields['FORWARD_ARGS']});"
    if reads_back:
        return (f"  // forward() reads sizes computed from tensor data back on the host: no graph.\n"
                f"  {call}")
    return (f"  state->graph.run(exec, {{{fields['FORWARD_POINTERS']}}}, "
            f"[&] {{ {call} }});")


def _forward_handles(views: list[StateView]) -> str:
    # Dynamic buffers get theirs where planned; blocks of storage are reached through theirs.
    views = [v for v in views if not v.planned_in_forward and not v.is_storage]
    if not views:
        return ""
    lines = ["  // Local handles, so that kernels capture the Views by value."]
    lines += [f"  const auto {v.cname} = state->{v.cname};" for v in views]
    return "\n".join(lines) + "\n"


def _given_params(lowered: ImportedModel) -> str:
    return ", ".join(f"{s.cname}_arg {s.cname}_given" for s in [*lowered.inputs, *lowered.outputs])


def _staged_members(lowered: ImportedModel) -> str:
    """Row-major copies of the caller's Views that are not row-major (lapis::row_major_input),
    allocated by forward() at the first such call."""
    return "".join(f"\n  buffer<{CXX_TYPES[s.dtype]}{'*' * len(s.shape)}> {s.cname}_staged;  "
                   f"// {s.cname} when the caller's View is not row-major, allocated by forward()"
                   for s in [*lowered.inputs, *lowered.outputs])


def _row_major_views(name: str, lowered: ImportedModel) -> str:
    lines = ["  // The kernels read and write row-major Views: the caller's own where its strides are",
             "  // row-major, else a copy in a planned buffer (see the header)."]
    for spec in lowered.inputs:
        lines.append(f"  const auto {spec.cname} = lapis::row_major_input(exec, "
                     f'"{name}::{spec.cname}_staged", {spec.cname}_given, state->{spec.cname}_staged);')
    for spec in lowered.outputs:
        lines.append(f"  const auto {spec.cname} = lapis::row_major_output(exec, "
                     f'"{name}::{spec.cname}_staged", {spec.cname}_given, state->{spec.cname}_staged);')
    return "\n".join(lines)


def _write_back(name: str, lowered: ImportedModel) -> str:
    return "\n".join(f'  lapis::write_back_output(exec, "{name}::{s.cname}_write_back", {s.cname}, '
                     f"{s.cname}_given);" for s in lowered.outputs)


def _extent_checks(name: str, lowered: ImportedModel) -> str:
    """Static extents against the header's tables; each dynamic one against the first input
    extent of the same size (dimensions sharing a size must agree)."""
    lines = [f'  lapis::check_extents("{name}::forward: {s.cname} ({s.name})", '
             f"{s.cname}_given, {s.cname}_extents);" for s in [*lowered.inputs, *lowered.outputs]]
    first: dict[str, tuple[str, int]] = {}
    for spec in [*lowered.inputs, *lowered.outputs]:
        for dim, symbol in enumerate(spec.symbols):
            if symbol is None:
                continue
            if symbol not in first:
                first[symbol] = (spec.cname, dim)
                continue
            other, other_dim = first[symbol]
            lines.append(f'  lapis::check_same_extent("{name}::forward: {spec.cname} '
                         f'({spec.name})", {spec.cname}_given, {dim}, "{other}", '
                         f"{other}_given.extent({other_dim}));")
    return "\n".join(lines)


def _c_null_checks(name: str, lowered: ImportedModel, function: str = "forward_host") -> str:
    return "\n".join(f"  if (!{s.cname}) return fail(2, \"{name}_{function}: {s.cname} "
                     f"is a null pointer\");" for s in [*lowered.inputs, *lowered.outputs])


def _c_colmajor_members(lowered: ImportedModel) -> str:
    """Device copies of the column-major C API's buffers (device backends), allocated at its
    first call and when a size changes."""
    return "".join(f"\n  Kokkos::View<{CXX_TYPES[s.dtype]}{'*' * len(s.shape)}, Kokkos::LayoutLeft, "
                   f"memory_space> c_api_left_{s.cname};  // C API (column-major) copy of {s.cname}"
                   for s in [*lowered.inputs, *lowered.outputs])


def _c_forward_body(name: str, lowered: ImportedModel, staged: bool,
                    colmajor: bool = False) -> str:
    """Wrap the caller's host buffers in unmanaged Views (LayoutLeft for the column-major
    entry). Host backends run forward on them directly; the others copy them to and from the
    State's device buffers around forward_graph (the same buffers every call, so the graph is
    recorded once)."""
    function = f"{name}_forward_host" + ("_colmajor" if colmajor else "")
    layout = "Kokkos::LayoutLeft" if colmajor else "Kokkos::LayoutRight"
    lines = []
    sizes = {}   # size name -> the C API argument giving it
    for extent in dynamic_extents(lowered.inputs):
        lines.append(f"    if ({extent.cname} < 0) return fail(2, \"{function}: "
                     f"{extent.cname} is negative\");")
        sizes.setdefault(extent.symbol, extent.cname)
    for spec in lowered.outputs:
        for dim, extent in enumerate(spec.shape):
            if extent < 0 and (not spec.symbols or spec.symbols[dim] not in sizes):
                raise ExportError(f"output {spec.cname} ('{spec.name}') has dynamic dimension "
                                  f"{dim} whose size is not that of an input dimension",
                                  hint="dynamic output sizes must equal a dynamic input size")
    for spec, is_input in [*((s, True) for s in lowered.inputs),
                           *((s, False) for s in lowered.outputs)]:
        extents = "".join(f", {d}" if d >= 0 else
                          f", {spec.cname}_extent{dim}" if is_input else
                          f", {sizes[spec.symbols[dim]]}" for dim, d in enumerate(spec.shape))
        element = ("const " if is_input else "") + CXX_TYPES[spec.dtype]
        pointer = spec.cname if C_API_TYPES[spec.dtype] == CXX_TYPES[spec.dtype] else \
            f"reinterpret_cast<{element}*>({spec.cname})"
        host_type = _view_type(spec, is_input, "Kokkos::HostSpace",
                               "Kokkos::MemoryTraits<Kokkos::Unmanaged>", layout)
        lines.append(f"    const {host_type} {spec.cname}_host({pointer}{extents});")
        if staged and colmajor:
            lines.append(f"    lapis::plan_buffer({name}::execution_space(), "
                         f'"{name}::c_api_left_{spec.cname}", {spec.cname}_host, '
                         f"{name}::state->c_api_left_{spec.cname});")
        elif staged and any(d < 0 for d in spec.shape):
            copy = f"{name}::state->c_api_{spec.cname}"
            changed = " || ".join(f"{copy}.extent({dim}) != {spec.cname}_host.extent({dim})"
                                  for dim, d in enumerate(spec.shape) if d < 0)
            sizes_now = ", ".join(f"{spec.cname}_host.extent({dim})"
                                  for dim in range(len(spec.shape)))
            lines.append(f"    if ({changed})")
            lines.append(f"      {copy} = decltype({copy})(Kokkos::view_alloc("
                         f"\"{name}::c_api_{spec.cname}\", Kokkos::WithoutInitializing), "
                         f"{sizes_now});")
        copy = "c_api_left_" if colmajor else "c_api_"
        if staged and is_input:
            lines.append(f"    Kokkos::deep_copy({name}::execution_space(), "
                         f"{name}::state->{copy}{spec.cname}, {spec.cname}_host);")
    specs = [*lowered.inputs, *lowered.outputs]
    if staged:
        arguments = ", ".join(f"{name}::state->{copy}{s.cname}" for s in specs)
        lines.append(f"    {name}::forward_graph({arguments});")
        for spec in lowered.outputs:
            lines.append(f"    Kokkos::deep_copy({name}::execution_space(), {spec.cname}_host, "
                         f"{name}::state->{copy}{spec.cname});")
    else:
        arguments = ", ".join(f"{s.cname}_host" for s in specs)
        lines.append(f"    {name}::forward({arguments});")
    return "\n".join(lines)


def _render(template: str, fields: dict[str, str]) -> str:
    return templates.render(f"cpp/{template}", fields)
