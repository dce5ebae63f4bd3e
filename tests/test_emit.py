"""Golden tests of the Kokkos emitter: a few lines of lowered IR in, forward()'s C++ out.

Set LAPIS_UPDATE_GOLDENS=1 to rewrite the .cpp files after reviewing the diff.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from exporter import emit
from exporter.errors import ExportError
from exporter.handoff import ImportedModel, LoadedModel, TensorSpec

GOLDEN = Path(__file__).parent / "golden"


def emit_ir(text: str, inputs, outputs, backend: str = "openmp"):
    from torch_mlir import ir
    context = ir.Context()
    context.allow_unregistered_dialects = True
    module = ir.Module.parse(text, context)
    source = LoadedModel(path=Path("golden.mlir"), kind="mlir", program=None, inputs=inputs,
                         source_sha256="")
    imported = ImportedModel(module=module, weights=[], inputs=inputs, outputs=outputs,
                             source=source)
    return emit.kokkos(imported, "golden", backend)


def forward_body(source: str) -> str:
    start = source.index("void forward(")
    end = source.index("}  // namespace golden")
    return source[start:end].rstrip() + "\n"


def spec(cname, shape, symbols=()):
    return TensorSpec(name=cname, cname=cname, dtype="float32", shape=shape, symbols=symbols)


CASES = {
    "elementwise": ([spec("input0", (4, 8))], [spec("output0", (4, 8))]),
    "reduction": ([spec("input0", (3, 5))], [spec("output0", (3,))]),
    "pad_copy": ([spec("input0", (1, 2, 3, 3))], [spec("output0", (1, 2, 5, 5))]),
    "accumulator": ([spec("input0", (3, 5))], [spec("output0", (3,))]),
    "dynamic_batch": ([spec("input0", (-1, 4), ("s0", None))],
                      [spec("output0", (-1, 2, 4), ("s0", None, None))]),
    "reshape": ([spec("input0", (15,))], [spec("output0", (3, 5))]),
    "dynamic_offset": ([spec("input0", (6,)), spec("input1", ())], [spec("output0", (2,))]),
    "loop_carried": ([spec("input0", (2,)), spec("input1", (3, 2))], [spec("output0", (2,))]),
    "scalar_carry": ([spec("input0", (4,)), spec("input1", ())],
                     [spec("output0", (4,)), spec("output1", (4,))]),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_golden(case):
    inputs, outputs = CASES[case]
    emitted = emit_ir((GOLDEN / f"{case}.mlir").read_text(), inputs, outputs)
    body = forward_body(emitted.source)
    golden = GOLDEN / f"{case}.cpp"
    if os.environ.get("LAPIS_UPDATE_GOLDENS"):
        golden.write_text(body)
    assert body == golden.read_text()


def test_emission_is_deterministic():
    inputs, outputs = CASES["pad_copy"]
    text = (GOLDEN / "pad_copy.mlir").read_text()
    assert emit_ir(text, inputs, outputs).source == emit_ir(text, inputs, outputs).source


def support_includes(source: str) -> list[str]:
    """The kokkos_support/ headers a generated source includes, in order."""
    return re.findall(r'^#include "(lapis/[\w.]+)"$', source, re.MULTILINE)


def test_source_includes_only_the_support_headers_it_uses():
    """The template's own (support.hpp, weight_blob.hpp), graph.hpp for forward_graph()'s
    recording, and no kernel's header for code of loops alone; sorted."""
    inputs, outputs = CASES["elementwise"]
    emitted = emit_ir((GOLDEN / "elementwise.mlir").read_text(), inputs, outputs)
    assert support_includes(emitted.source) == [
        "lapis/graph.hpp", "lapis/support.hpp", "lapis/weight_blob.hpp"]


def test_kernel_calls_include_their_headers():
    text = """func.func @forward(%x: memref<1x8x6x6xf32>, %w: memref<1x8x3x3x8xf32>,
                             %y: memref<1x8x4x4xf32>, %z: memref<1x8x2x2xf32>) {
      "lapis.conv2d_nchw"(%x, %w, %y) {strides = dense<1> : tensor<2xi64>,
          dilations = dense<1> : tensor<2xi64>, padding = array<i64: 0, 0>, init = "zero",
          relu = true} : (memref<1x8x6x6xf32>, memref<1x8x3x3x8xf32>, memref<1x8x4x4xf32>) -> ()
      "lapis.max_pool2d_nchw"(%y, %z) {kernel = array<i64: 2, 2>,
          strides = dense<2> : tensor<2xi64>, dilations = dense<1> : tensor<2xi64>,
          padding = array<i64: 0, 0>, init = "lowest"} : (memref<1x8x4x4xf32>,
          memref<1x8x2x2xf32>) -> ()
      return
    }"""
    emitted = emit_ir(text, [spec("input0", (1, 8, 6, 6)), spec("input1", (1, 8, 3, 3, 8))],
                      [spec("output0", (1, 8, 4, 4)), spec("output1", (1, 8, 2, 2))])
    assert "lapis::conv2d_nchw<" in emitted.source and "lapis::max_pool2d_nchw<" in emitted.source
    assert support_includes(emitted.source) == [
        "lapis/conv.hpp", "lapis/graph.hpp", "lapis/pooling.hpp", "lapis/support.hpp",
        "lapis/weight_blob.hpp"]


def test_no_graph_where_forward_reads_back():
    """forward_graph() calls forward() directly when forward() reads sizes back from the
    device: no recording in the State, no graph.hpp."""
    inputs, outputs = CASES["dynamic_offset"]
    emitted = emit_ir((GOLDEN / "dynamic_offset.mlir").read_text(), inputs, outputs)
    assert "ForwardGraph" not in emitted.source
    assert support_includes(emitted.source) == ["lapis/support.hpp", "lapis/weight_blob.hpp"]


def test_resource_blob_constants_travel_in_the_weight_blob():
    # torch-mlir keeps some constants (as_strided's gather indices, from group norm) as
    # dense_resource blobs; their values are read from the module's resource section.
    import numpy as np
    text = """memref.global "private" constant @__constant_3xi64 : memref<3xi64> =
        dense_resource<torch_tensor_3_torch.int64> {alignment = 64 : i64}
    func.func @forward(%out: memref<3xi64>) {
      %g = memref.get_global @__constant_3xi64 : memref<3xi64>
      memref.copy %g, %out : memref<3xi64> to memref<3xi64>
      return
    }
    {-#
      dialect_resources: {
        builtin: {
          torch_tensor_3_torch.int64: "0x08000000050000000000000000000000000000000300000000000000"
        }
      }
    #-}"""
    output = TensorSpec(name="output0", cname="output0", dtype="int64", shape=(3,))
    emitted = emit_ir(text, [], [output])
    [constant] = emitted.weights
    assert constant.name == "__constant_3xi64"
    assert constant.array.dtype == np.int64 and constant.array.tolist() == [5, 0, 3]


def test_unknown_op_is_named():
    text = """func.func @forward(%x: memref<4xf32>, %out: memref<4xf32>) {
      "mystery.op"(%x) : (memref<4xf32>) -> () loc("block/mystery")
      return
    }"""
    with pytest.raises(ExportError, match=r"no handler for op 'mystery.op' \(from block/mystery\)"):
        emit_ir(text, [spec("input0", (4,))], [spec("output0", (4,))])


def test_unknown_backend():
    inputs, outputs = CASES["elementwise"]
    with pytest.raises(ExportError, match="unknown backend 'fpga'"):
        emit_ir((GOLDEN / "elementwise.mlir").read_text(), inputs, outputs, backend="fpga")


@pytest.mark.parametrize("backend,space", [("serial", "Kokkos::Serial"),
                                           ("openmp", "Kokkos::OpenMP"),
                                           ("cuda", "Kokkos::Cuda")])
def test_backend_selects_spaces(backend, space):
    inputs, outputs = CASES["elementwise"]
    emitted = emit_ir((GOLDEN / "elementwise.mlir").read_text(), inputs, outputs, backend)
    assert f"using execution_space = {space};" in emitted.header
    assert "KOKKOS_LAMBDA" in emitted.source


def test_dynamic_buffers_are_planned_in_forward():
    """initialize() allocates no buffer of dynamic extents; the State holds them for forward(),
    and the C API takes the batch size before the buffers."""
    inputs, outputs = CASES["dynamic_batch"]
    emitted = emit_ir((GOLDEN / "dynamic_batch.mlir").read_text(), inputs, outputs)
    initialize = emitted.source[emitted.source.index("void initialize()"):
                                emitted.source.index("void finalize()")]
    # pad and sum take turns in blocks of storage that forward() grows to the batch.
    assert "buffer<unsigned char*> dynamic_storage_0;" in emitted.source
    assert "const unmanaged<float**> pad(reinterpret_cast<float*>(" \
        "state->dynamic_storage_0.data()), input0_extent0, 8);" in emitted.source
    assert "storage" not in initialize and "pad" not in initialize and "sum" not in initialize
    assert "int golden_forward_host(int64_t input0_extent0, const float* input0, " \
           "float* output0);" in emitted.header
    assert "inline constexpr int64_t input0_extents[2] = {-1, 4};" in emitted.header
    assert "output0_host(output0, input0_extent0, 2, 4);" in emitted.source


def test_shape_guard_on_dynamic_sizes_is_checked_on_the_host():
    """torch-mlir's broadcast guards compare dynamic extents: forward() throws, no kernel."""
    text = """func.func @forward(%x: memref<?xf32>, %y: memref<?xf32>, %out: memref<?xf32>) {
      %c0 = arith.constant 0 : index
      %n = memref.dim %x, %c0 : memref<?xf32>
      %m = memref.dim %y, %c0 : memref<?xf32>
      %same = arith.cmpi eq, %n, %m : index
      cf.assert %same, "mismatched size for broadcast"
      memref.copy %x, %out : memref<?xf32> to memref<?xf32>
      return
    }"""
    inputs = [spec("input0", (-1,), ("s0",)), spec("input1", (-1,), ("s0",))]
    emitted = emit_ir(text, inputs, [spec("output0", (-1,), ("s0",))])
    body = forward_body(emitted.source)
    assert 'if (!same_size) throw std::invalid_argument("golden::forward: mismatched size ' \
           'for broadcast");' in body
    assert "Kokkos::abort" not in body and "range(exec, 0, 1)" not in body
    assert 'check_same_extent("golden::forward: input1 (input1)", input1_given, 0, "input0"' in body


def test_scalar_from_a_kernel_read_on_the_host_is_copied_out():
    """A size computed in a one-thread kernel and needed by forward() itself (a loop bound)
    is copied from its rank-0 View to the host, not read from the kernel's local."""
    text = """func.func @forward(%x: memref<4xf32>, %s: memref<i64>, %out: memref<4xf32>) {
      %c0 = arith.constant 0 : index
      %c1 = arith.constant 1 : index
      %n = memref.load %s[] : memref<i64>
      %view = memref.subview %x[0] [4] [1] : memref<4xf32> to memref<4xf32, strided<[1]>>
      %end = arith.index_cast %n : i64 to index
      scf.parallel (%i) = (%c0) to (%end) step (%c1) {
        %v = memref.load %view[%i] : memref<4xf32, strided<[1]>>
        memref.store %v, %out[%i] : memref<4xf32>
        scf.reduce
      }
      return
    }"""
    body = forward_body(emit_ir(text, [spec("input0", (4,)), spec("input1", ())],
                                [spec("output0", (4,))]).source)
    assert "serial_scalar() = v0;" in body
    assert "int64_t serial_scalar_on_host;\n  Kokkos::deep_copy(exec, serial_scalar_on_host, " \
        "serial_scalar);\n  exec.fence();   // read on the host next\n" \
        "  const int64_t size = static_cast<int64_t>(serial_scalar_on_host);" in body, body
    assert "range(exec, 0, size)" in body


def test_ceildiv_and_floordiv_name_their_type():
    """An index divided by a literal: the helper's type is spelled out, as an int literal
    would not deduce to int64_t."""
    text = """func.func @forward(%x: memref<4xf32>, %out: memref<4xf32>) {
      %c0 = arith.constant 0 : index
      %c1 = arith.constant 1 : index
      %c2 = arith.constant 2 : index
      %c4 = arith.constant 4 : index
      scf.parallel (%i) = (%c0) to (%c4) step (%c1) {
        %up = arith.ceildivsi %i, %c2 : index
        %down = arith.floordivsi %i, %c2 : index
        %v = memref.load %x[%up] : memref<4xf32>
        memref.store %v, %out[%down] : memref<4xf32>
        scf.reduce
      }
      return
    }"""
    body = forward_body(emit_ir(text, [spec("input0", (4,))], [spec("output0", (4,))]).source)
    assert "lapis::ceildivsi<int64_t>(i0, 2)" in body
    assert "lapis::floordivsi<int64_t>(i0, 2)" in body


def test_fpowi_raises_to_an_integer_power():
    text = """func.func @forward(%x: memref<4xf32>, %out: memref<4xf32>) {
      %c0 = arith.constant 0 : index
      %c1 = arith.constant 1 : index
      %c4 = arith.constant 4 : index
      %three = arith.constant 3 : i32
      scf.parallel (%i) = (%c0) to (%c4) step (%c1) {
        %v = memref.load %x[%i] : memref<4xf32>
        %p = math.fpowi %v, %three : f32, i32
        memref.store %p, %out[%i] : memref<4xf32>
        scf.reduce
      } loc("lppool")
      return
    }"""
    body = forward_body(emit_ir(text, [spec("input0", (4,))], [spec("output0", (4,))]).source)
    assert "const float v2 = lapis::math::pow(v1, static_cast<float>(3));" in body, body


def test_shifts_go_through_helpers_defined_for_any_count():
    """C++ leaves a shift by a negative count or by the bit width or more undefined; ONNX and
    PyTorch give 0 (or the sign): the helpers in support.hpp do."""
    text = """func.func @forward(%x: memref<4xi32>, %out: memref<4xi32>) {
      %c0 = arith.constant 0 : index
      %c1 = arith.constant 1 : index
      %c4 = arith.constant 4 : index
      scf.parallel (%i) = (%c0) to (%c4) step (%c1) {
        %v = memref.load %x[%i] : memref<4xi32>
        %l = arith.shli %v, %v : i32
        %r = arith.shrsi %l, %v : i32
        %u = arith.shrui %r, %v : i32
        memref.store %u, %out[%i] : memref<4xi32>
        scf.reduce
      }
      return
    }"""
    body = forward_body(emit_ir(text, [spec("input0", (4,))], [spec("output0", (4,))]).source)
    assert "lapis::shli<int32_t>(v1, v1)" in body
    assert "lapis::shrsi<int32_t>(v2, v1)" in body
    assert "lapis::shrui<int32_t>(v3, v1)" in body


def test_buffers_and_loops_sized_by_tensor_data_stay_in_forward():
    """A buffer and a loop sized by a value loaded from tensor data (ReverseSequence's lengths)
    are planned and launched by forward(), not pulled into the one-thread kernel that loads
    the value; a cast to an identity layout with a dynamic extent is a plain row-major View."""
    text = """func.func @forward(%x: memref<4xf32>, %s: memref<i64>, %out: memref<4xf32>) {
      %c0 = arith.constant 0 : index
      %c1 = arith.constant 1 : index
      %n = memref.load %s[] : memref<i64>
      %end = arith.index_cast %n : i64 to index
      %buffer = memref.alloc(%end) : memref<1x?xf32>
      %flat = memref.cast %buffer : memref<1x?xf32> to memref<?x?xf32>
      scf.parallel (%i) = (%c0) to (%end) step (%c1) {
        %v = memref.load %x[%i] : memref<4xf32>
        memref.store %v, %flat[%c0, %i] : memref<?x?xf32>
        memref.store %v, %out[%i] : memref<4xf32>
        scf.reduce
      } loc("lengths/copy")
      return
    }"""
    body = forward_body(emit_ir(text, [spec("input0", (4,)), spec("input1", ())],
                                [spec("output0", (4,))]).source)
    kernel = body[body.index("range(exec, 0, 1)"):body.index("});")]
    assert "serial_scalar() = v1;" in kernel and "buffer" not in kernel, kernel
    assert "Kokkos::deep_copy(exec, serial_scalar_on_host, serial_scalar);\n" \
        "  exec.fence();   // read on the host next" in body
    assert 'lapis::grow_storage(exec, "golden::dynamic_storage_0", ' \
        "state->dynamic_storage_0, sizeof(float) * size_t(serial_scalar_on_host));" in body, body
    assert "const unmanaged<float**> buffer_1(reinterpret_cast<float*>(state->" \
        "dynamic_storage_0.data()), 1, serial_scalar_on_host);" in body, body
    assert "const unmanaged<float**> buffer_1_view(buffer_1.data(), " \
        "int64_t(buffer_1.extent(0)), int64_t(buffer_1.extent(1)));" in body, body
    assert 'Kokkos::parallel_for("golden::lengths_copy", range(exec, 0, serial_scalar_on_host)' in body


def test_reshape_to_a_shape_computed_from_tensor_data():
    """memref.reshape with a dynamic result (ONNX Reshape/ReduceSum with axes as an input):
    the extents are read back from the shape buffer a kernel filled."""
    text = """func.func @forward(%x: memref<6xf32>, %s: memref<2xi64>, %out: memref<6xf32>) {
      %shape = memref.alloc() : memref<2xi64> loc("target_shape")
      memref.copy %s, %shape : memref<2xi64> to memref<2xi64>
      %r = memref.reshape %x(%shape) : (memref<6xf32>, memref<2xi64>) -> memref<?x?xf32>
      %flat = memref.collapse_shape %r [[0, 1]] : memref<?x?xf32> into memref<?xf32>
      memref.copy %flat, %out : memref<?xf32> to memref<6xf32>
      return
    }"""
    body = forward_body(emit_ir(text, [spec("input0", (6,)), spec("input1", (2,))],
                                [spec("output0", (6,))]).source)
    assert "const auto target_shape_on_host = Kokkos::create_mirror_view(Kokkos::HostSpace(), " \
        "target_shape);\n  Kokkos::deep_copy(exec, target_shape_on_host, target_shape);\n" \
        "  exec.fence();" in body, body
    assert "const unmanaged<const float**> input0_view(input0.data(), " \
        "int64_t(target_shape_on_host(0)), int64_t(target_shape_on_host(1)));" in body, body


def test_a_loop_carrying_a_scalar_buffer_runs_in_forward():
    """A Scan over scalars: no parallel loop inside, but the carried buffer makes it a loop
    of forward()'s, its steps one-thread kernels."""
    text = """func.func @forward(%init: memref<f32>, %x: memref<3xf32>, %out: memref<f32>) {
      %c0 = arith.constant 0 : index
      %c1 = arith.constant 1 : index
      %c3 = arith.constant 3 : index
      %last = scf.for %t = %c0 to %c3 step %c1 iter_args(%state = %init) -> (memref<f32>) {
        %next = memref.alloc() : memref<f32>
        %a = memref.load %state[] : memref<f32>
        %b = memref.load %x[%t] : memref<3xf32>
        %s = arith.addf %a, %b : f32
        memref.store %s, %next[] : memref<f32>
        scf.yield %next : memref<f32>
      }
      memref.copy %last, %out : memref<f32> to memref<f32>
      return
    }"""
    body = forward_body(emit_ir(text, [spec("input0", ()), spec("input1", (3,))],
                                [spec("output0", ())]).source)
    assert "for (int64_t step = 0; step < 3; step += 1) {" in body, body
    assert "const float v1 = input1(step);" in body, body
    assert "loop_carried() = buffer_1();" in body, body


def test_a_loop_of_forward_carries_scalars_as_variables():
    """A top-level loop carrying an index next to a buffer: the index is a variable of
    forward(), updated by the yield after both values are read."""
    text = """func.func @forward(%init: memref<f32>, %x: memref<3xf32>, %out: memref<f32>) {
      %c0 = arith.constant 0 : index
      %c1 = arith.constant 1 : index
      %c3 = arith.constant 3 : index
      %last:3 = scf.for %t = %c0 to %c3 step %c1 iter_args(%state = %init, %k = %c0, %j = %c1)
          -> (memref<f32>, index, index) {
        %next = memref.alloc() : memref<f32>
        %a = memref.load %state[] : memref<f32>
        %b = memref.load %x[%k] : memref<3xf32>
        %s = arith.addf %a, %b : f32
        memref.store %s, %next[] : memref<f32>
        scf.yield %next, %j, %k : memref<f32>, index, index
      }
      memref.copy %last#0, %out : memref<f32> to memref<f32>
      return
    }"""
    body = forward_body(emit_ir(text, [spec("input0", ()), spec("input1", (3,))],
                                [spec("output0", ())]).source)
    assert "int64_t carried = 0;\n  int64_t carried_1 = 1;" in body, body
    assert "const float v1 = input1(carried);" in body, body
    assert "const auto next = carried_1;\n    const auto next_1 = carried;\n" in body, body
    assert "    carried = next;\n    carried_1 = next_1;\n  }" in body, body


def test_a_loop_nest_of_more_than_six_dimensions_is_one_flat_range():
    shape = "2x1x2x1x2x1x2x1"
    ivs = ", ".join(f"%i{d}" for d in range(8))
    text = f"""func.func @forward(%x: memref<{shape}xf32>, %out: memref<{shape}xf32>) {{
      %c0 = arith.constant 0 : index
      %c1 = arith.constant 1 : index
      %c2 = arith.constant 2 : index
      scf.parallel ({ivs}) = ({", ".join(["%c0"] * 8)}) to (%c2, %c1, %c2, %c1, %c2, %c1, %c2, %c1)
          step ({", ".join(["%c1"] * 8)}) {{
        %v = memref.load %x[{ivs}] : memref<{shape}xf32>
        memref.store %v, %out[{ivs}] : memref<{shape}xf32>
        scf.reduce
      }} loc("tile")
      return
    }}"""
    shape_tuple = (2, 1, 2, 1, 2, 1, 2, 1)
    body = forward_body(emit_ir(text, [spec("input0", shape_tuple)],
                                [spec("output0", shape_tuple)]).source)
    assert 'Kokkos::parallel_for("golden::tile", range(exec, 0, 16), ' \
        "KOKKOS_LAMBDA(const int64_t flat) {" in body, body
    assert "const int64_t i6 = flat % 2;" in body, body


def test_a_dynamic_loop_nest_of_more_than_six_dimensions_loops_inside_the_kernel():
    shape = "?x1x2x1x2x1x2x1"
    ivs = ", ".join(f"%i{d}" for d in range(8))
    text = f"""func.func @forward(%x: memref<{shape}xf32>, %out: memref<{shape}xf32>) {{
      %c0 = arith.constant 0 : index
      %c1 = arith.constant 1 : index
      %c2 = arith.constant 2 : index
      %n = memref.dim %x, %c0 : memref<{shape}xf32>
      scf.parallel ({ivs}) = ({", ".join(["%c0"] * 8)}) to (%n, %c1, %c2, %c1, %c2, %c1, %c2, %c1)
          step ({", ".join(["%c1"] * 8)}) {{
        %v = memref.load %x[{ivs}] : memref<{shape}xf32>
        memref.store %v, %out[{ivs}] : memref<{shape}xf32>
        scf.reduce
      }} loc("tile")
      return
    }}"""
    dims = (-1, 1, 2, 1, 2, 1, 2, 1)
    symbols = ("s0",) + (None,) * 7
    body = forward_body(emit_ir(text, [spec("input0", dims, symbols)],
                                [spec("output0", dims, symbols)]).source)
    assert 'Kokkos::parallel_for("golden::tile", mdrange<6>(exec, {0, 0, 0, 0, 0, 0}, ' \
        "{input0_extent0, 1, 2, 1, 2, 1}), " in body, body
    assert "for (int64_t i6 = 0; i6 < 2; ++i6) {" in body, body


def test_a_branch_between_buffers_points_a_view_variable():
    """A data-dependent choice between buffers (NonMaxSuppression): forward() reads the
    condition back and points a View variable at the chosen buffer."""
    text = """func.func @forward(%x: memref<4xf32>, %s: memref<i1>, %out: memref<4xf32>) {
      %c = memref.load %s[] : memref<i1>
      %b = scf.if %c -> (memref<4xf32>) {
        scf.yield %x : memref<4xf32>
      } else {
        %mine = memref.alloc() : memref<4xf32> loc("nms/zeros")
        scf.yield %mine : memref<4xf32>
      } loc("nms/pick")
      memref.copy %b, %out : memref<4xf32> to memref<4xf32>
      return
    }"""
    body = forward_body(emit_ir(text, [spec("input0", (4,)), spec("input1", ())],
                                [spec("output0", (4,))]).source)
    assert "unmanaged<float*> chosen;\n  bool serial_scalar_on_host;\n" \
        "  Kokkos::deep_copy(exec, serial_scalar_on_host, serial_scalar);\n" \
        "  exec.fence();   // read on the host next\n" \
        "  if (serial_scalar_on_host) {\n" \
        "    chosen = unmanaged<float*>(const_cast<float*>(input0.data()), 4);\n" \
        "  } else {\n    chosen = unmanaged<float*>(nms_zeros.data(), 4);\n  }" in body, body
    assert "output0(i0) = chosen(i0);" in body, body


def test_a_small_buffer_allocated_inside_a_kernel_is_a_local_array():
    text = """func.func @forward(%x: memref<4xf32>, %out: memref<4xf32>) {
      %c0 = arith.constant 0 : index
      %c1 = arith.constant 1 : index
      %c4 = arith.constant 4 : index
      scf.for %i = %c0 to %c4 step %c1 {
        %v = memref.load %x[%i] : memref<4xf32>
        %tmp = memref.alloc() : memref<1xf32>
        memref.store %v, %tmp[%c0] : memref<1xf32>
        %w = memref.load %tmp[%c0] : memref<1xf32>
        memref.store %w, %out[%i] : memref<4xf32>
      }
      return
    }"""
    body = forward_body(emit_ir(text, [spec("input0", (4,))], [spec("output0", (4,))]).source)
    assert "float local2_data[1];\n      const unmanaged<float*> local2(local2_data, 1);" in body, \
        body
    assert "local2(0) = v1;" in body, body


def test_expand_shape_of_a_view_with_run_time_strides():
    text = """func.func @forward(%x: memref<6xf32>, %out: memref<3x1xf32>) {
      %c0 = arith.constant 0 : index
      %c1 = arith.constant 1 : index
      %c3 = arith.constant 3 : index
      %v = memref.subview %x[0] [3] [2] : memref<6xf32> to memref<3xf32, strided<[2]>>
      %any = memref.cast %v : memref<3xf32, strided<[2]>> to memref<3xf32, strided<[?], offset: ?>>
      %e = memref.expand_shape %any [[0, 1]] output_shape [3, 1] : memref<3xf32, strided<[?], offset: ?>> into memref<3x1xf32, strided<[?, ?], offset: ?>>
      scf.parallel (%i) = (%c0) to (%c3) step (%c1) {
        %a = memref.load %e[%i, %c0] : memref<3x1xf32, strided<[?, ?], offset: ?>>
        memref.store %a, %out[%i, %c0] : memref<3x1xf32>
        scf.reduce
      }
      return
    }"""
    body = forward_body(emit_ir(text, [spec("input0", (6,))], [spec("output0", (3, 1))]).source)
    assert "const strided<const float**> input0_view_2(input0_view_1.data(), Kokkos::LayoutStride(" \
        "3, int64_t(input0_view_1.stride(0)) * 1, 1, int64_t(input0_view_1.stride(0))));" in body, \
        body


def test_a_row_of_an_index_matrix_with_a_dynamic_length():
    """edge_index[1] of an edge_index [2, E] whose E is dynamic: a subview with a run-time
    offset and stride, collapsed to 1-d and expanded to [E, 1] again (index_add's index)."""
    text = """func.func @forward(%x: memref<2x?xi64>, %out: memref<?x1xi64>) {
      %c0 = arith.constant 0 : index
      %c1 = arith.constant 1 : index
      %e = memref.dim %x, %c1 : memref<2x?xi64>
      %row = memref.subview %x[1, 0] [1, %e] [1, 1] : memref<2x?xi64> to memref<1x?xi64, strided<[?, 1], offset: ?>>
      %flat = memref.collapse_shape %row [[0, 1]] : memref<1x?xi64, strided<[?, 1], offset: ?>> into memref<?xi64, strided<[?], offset: ?>>
      %column = memref.expand_shape %flat [[0, 1]] output_shape [%e, 1] : memref<?xi64, strided<[?], offset: ?>> into memref<?x1xi64, strided<[?, ?], offset: ?>>
      scf.parallel (%i) = (%c0) to (%e) step (%c1) {
        %a = memref.load %column[%i, %c0] : memref<?x1xi64, strided<[?, ?], offset: ?>>
        memref.store %a, %out[%i, %c0] : memref<?x1xi64>
        scf.reduce
      }
      return
    }"""
    edges = TensorSpec(name="edge_index", cname="input0", dtype="int64", shape=(2, -1),
                       symbols=(None, "s1"))
    column = TensorSpec(name="out", cname="output0", dtype="int64", shape=(-1, 1),
                        symbols=("s1", None))
    body = forward_body(emit_ir(text, [edges], [column]).source)
    assert "input0.data() + 1 * int64_t(input0.stride(0))" in body, body
    # The row steps as its last dimension (unit in the source), not over the rows.
    assert "Kokkos::LayoutStride(int64_t(input0_view.extent(0)) * int64_t(input0_view.extent(1)), " \
        "int64_t(input0_view.stride(1)))" in body, body
    assert "Kokkos::LayoutStride(input0_extent1, int64_t(input0_view_1.stride(0)) * 1, 1, " \
        "int64_t(input0_view_1.stride(0)))" in body, body
