"""ONNX frontend and import: input/output specs and names, --input-shape on symbolic dims,
refusals with one clear message, initializers kept out of the IR."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from exporter import frontend, importer
from exporter.errors import ExportError


def gemm_model(batch="N", weight_rows=3) -> onnx.ModelProto:
    """y = relu(x @ W^T + b), x: [batch, 4]; W is a weight, the Reshape shape a constant."""
    rng = np.random.default_rng(0)
    weight = numpy_helper.from_array(rng.standard_normal((weight_rows, 4)).astype(np.float32),
                                     "fc.weight")
    bias = numpy_helper.from_array(rng.standard_normal(weight_rows).astype(np.float32),
                                   "fc.bias")
    shape = numpy_helper.from_array(np.array([-1, weight_rows], dtype=np.int64), "shape")
    graph = helper.make_graph(
        [helper.make_node("Gemm", ["image", "fc.weight", "fc.bias"], ["g"], transB=1),
         helper.make_node("Relu", ["g"], ["r"]),
         helper.make_node("Reshape", ["r", "shape"], ["scores"])],
        "gemm", [helper.make_tensor_value_info("image", TensorProto.FLOAT, [batch, 4])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, [batch, "M"])],
        initializer=[weight, bias, shape])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def save(model: onnx.ModelProto, path: Path) -> Path:
    onnx.save(model, str(path))
    return path


def test_specs_take_graph_names_and_input_shape_pins_symbolic_dims(tmp_path):
    path = save(gemm_model(), tmp_path / "gemm.onnx")
    loaded = frontend.load(path, [(2, 4)])
    assert loaded.kind == "onnx"
    assert [(s.name, s.cname, s.dtype, s.shape) for s in loaded.inputs] == \
        [("image", "input0", "float32", (2, 4))]


@pytest.mark.parametrize("shapes", [None, [(-1, 4)]])
def test_symbolic_dims_stay_dynamic(tmp_path, shapes):
    """The model's own symbolic dimension, or a letter of --input-shape on it, stays dynamic
    under the model's name for it; an output dimension the exporter named on its own ("M")
    is inferred from the inputs."""
    path = save(gemm_model(), tmp_path / "gemm.onnx")
    loaded = frontend.load(path, shapes)
    assert [(s.shape, s.symbols) for s in loaded.inputs] == [((-1, 4), ("N", None))]
    assert [(s.shape, s.symbols) for s in loaded.outputs] == [((-1, 3), ("N", None))]


def test_a_letter_names_a_dimension_the_model_left_unknown(tmp_path):
    model = gemm_model()
    model.graph.input[0].type.tensor_type.shape.dim[0].ClearField("dim_param")
    path = save(model, tmp_path / "gemm.onnx")
    with pytest.raises(ExportError, match="input 'image' has no static shape") as info:
        frontend.load(path)
    assert "Nx16" in info.value.hint
    assert frontend.load(path, [(-1, 4)]).inputs[0].symbols == ("image_0", None)


def test_input_shape_must_agree_with_fixed_dims(tmp_path):
    path = save(gemm_model(batch=2), tmp_path / "gemm.onnx")
    assert frontend.load(path).inputs[0].shape == (2, 4)
    with pytest.raises(ExportError, match="disagrees with the model's shape 2x4"):
        frontend.load(path, [(2, 5)])
    with pytest.raises(ExportError, match="takes 1 input"):
        frontend.load(path, [(2, 4), (1,)])


def test_unsupported_element_type_is_refused(tmp_path):
    graph = helper.make_graph(
        [helper.make_node("Abs", ["x"], ["y"])], "half",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT16, [3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT16, [3])])
    path = save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]),
                tmp_path / "half.onnx")
    with pytest.raises(ExportError, match="element type float16, which is not supported"):
        frontend.load(path)


def test_damaged_file_is_named(tmp_path):
    good = gemm_model(batch=2).SerializeToString()
    path = tmp_path / "cut.onnx"
    path.write_bytes(good[:len(good) // 2])
    with pytest.raises(ExportError, match="cut.onnx"):
        frontend.load(path)


def test_weights_become_arguments_and_small_constants_stay(tmp_path):
    path = save(gemm_model(batch=2, weight_rows=6), tmp_path / "gemm.onnx")
    imported = importer.to_linalg(frontend.load(path))
    assert [w.name for w in imported.weights] == ["fc.weight"]     # 24 elements: a weight
    assert imported.weights[0].array.shape == (6, 4)
    text = str(imported.module)
    assert "dense_resource" not in text
    arguments = imported.module.body.operations[0].regions[0].blocks[0].arguments
    assert len(arguments) == 2                                       # fc.weight, then image
    assert [(s.name, s.dtype, s.shape) for s in imported.outputs] == \
        [("scores", "float32", (2, 6))]


def test_old_opsets_are_upgraded_for_the_lowering(tmp_path):
    graph = helper.make_graph(
        [helper.make_node("MaxPool", ["x"], ["y"], kernel_shape=[2, 2], strides=[2, 2])],
        "pool", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 4, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1, 2, 2])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 9)])
    model.ir_version = 4
    loaded = frontend.load(save(model, tmp_path / "pool.onnx"))
    assert loaded.program.opset_import[0].version >= 17
    importer.to_linalg(loaded)     # MaxPool-9 alone has no torch-mlir lowering


def test_an_op_without_lowering_is_named_in_one_line(tmp_path):
    graph = helper.make_graph(
        [helper.make_node("StringNormalizer", ["x"], ["y"])], "strings",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.graph.node[0].op_type = "Hardmax"   # a real op with a fixed axis attribute below
    model.graph.node[0].attribute.append(helper.make_attribute("axis", 5))
    path = tmp_path / "bad.onnx"
    onnx.save(model, str(path))
    with pytest.raises(ExportError) as info:
        importer.to_linalg(frontend.load(path))
    assert "\n" not in info.value.message


def test_a_torch_op_without_lowering_is_named():
    """torch-mlir's report of a torch op left over after torch -> linalg: the op, one line."""
    from exporter.importer.onnx_graph import unsupported_op_summary
    report = ("error: failed to legalize operation 'torch.constant.float'\n"
              "note: see current operation: %0 = torch.constant.float 1.0\n"
              "error: failed to legalize operation 'torch.aten.nll_loss_forward'\n")
    assert unsupported_op_summary(report) == \
        "op 'torch.aten.nll_loss_forward' is not supported (and 1 other unsupported op kinds)"
    assert unsupported_op_summary("x.mlir:3:5: error: something else\n") == "something else"


def test_an_upgrade_that_changes_the_interface_is_not_taken(tmp_path):
    """ONNX's converter turns Scan-8 (batched) into Scan-9 without the batch dimension; the
    model keeps its own opset and shapes rather than become another model."""
    body = helper.make_graph([helper.make_node("Add", ["s", "x"], ["s2"]),
                              helper.make_node("Identity", ["s2"], ["y"])], "body", [
        helper.make_tensor_value_info("s", TensorProto.FLOAT, [2]),
        helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])], [
        helper.make_tensor_value_info("s2", TensorProto.FLOAT, [2]),
        helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])])
    graph = helper.make_graph([helper.make_node("Scan", ["", "init", "xs"], ["last", "ys"],
                                                num_scan_inputs=1, body=body)], "scan", [
        helper.make_tensor_value_info("init", TensorProto.FLOAT, [1, 2]),
        helper.make_tensor_value_info("xs", TensorProto.FLOAT, [1, 3, 2])], [
        helper.make_tensor_value_info("last", TensorProto.FLOAT, [1, 2]),
        helper.make_tensor_value_info("ys", TensorProto.FLOAT, [1, 3, 2])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 8)])
    model.ir_version = 4
    loaded = frontend.load(save(model, tmp_path / "scan8.onnx"))
    assert loaded.program.opset_import[0].version == 8
    assert [spec.shape for spec in loaded.inputs] == [(1, 2), (1, 3, 2)]
