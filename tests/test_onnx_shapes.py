"""Shape arithmetic folded where ONNX shape inference stops (frontend/onnx_shapes.py), as in
the reshape targets torch.onnx's TorchScript exporter computes for attention, and the ONNX
node named when an op has no lowering."""
from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator

from exporter import frontend
from exporter.frontend import onnx_shapes
from exporter.importer.onnx_graph import unsupported_op_summary


def constant(name, values):
    return helper.make_node("Constant", [], [name], name=name,
                            value=numpy_helper.from_array(np.array(values, dtype=np.int64), name))


def attention_split_model() -> onnx.ModelProto:
    """x [10, 2, 192] -> reshape to Shape(x)[:2] ++ [3, 64] ++ Shape(x)[Mod(2, 3) + 1:], with
    the slice bounds computed by Mod (which data propagation does not evaluate) -> unsqueeze ->
    rank-5 transpose, as nn.MultiheadAttention's in-projection split exports."""
    nodes = [
        constant("two", [2]), constant("three", [3]), constant("one", [1]),
        constant("zero", [0]), constant("big", [2 ** 62]), constant("heads", [3, 64]),
        helper.make_node("Mod", ["two", "three"], ["mod"]),
        helper.make_node("Shape", ["x"], ["shape"]),
        helper.make_node("Slice", ["shape", "zero", "mod"], ["head"]),
        helper.make_node("Add", ["mod", "one"], ["after"]),
        helper.make_node("Slice", ["shape", "after", "big"], ["tail"]),
        helper.make_node("Concat", ["head", "heads", "tail"], ["target"], axis=0),
        helper.make_node("Reshape", ["x", "target"], ["split"], name="/attn/Reshape_2"),
        helper.make_node("Unsqueeze", ["split", "zero"], ["u"]),
        helper.make_node("Transpose", ["u"], ["y"], perm=[3, 1, 2, 0, 4],
                         name="/attn/Transpose_1"),
    ]
    graph = helper.make_graph(nodes, "split",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [10, 2, 192])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT,
                                                            list("abcde"))])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_shape_inference_alone_leaves_the_transpose_rankless():
    inferred = onnx.shape_inference.infer_shapes(attention_split_model(), data_prop=True)
    assert onnx_shapes.has_unknown_shapes(inferred)


def test_folded_chain_gives_every_shape_and_the_same_numbers(tmp_path):
    path = tmp_path / "split.onnx"
    onnx.save(attention_split_model(), str(path))
    loaded = frontend.load(path)
    assert not onnx_shapes.has_unknown_shapes(loaded.program)
    assert loaded.outputs[0].shape == (3, 10, 2, 1, 64)
    kinds = [node.op_type for node in loaded.program.graph.node]
    assert "Mod" not in kinds and "Shape" not in kinds and "Reshape" in kinds
    x = np.random.default_rng(0).standard_normal((10, 2, 192)).astype(np.float32)
    ours, = ReferenceEvaluator(loaded.program).run(None, {"x": x})
    theirs, = ReferenceEvaluator(attention_split_model()).run(None, {"x": x})
    np.testing.assert_array_equal(ours, theirs)


def test_float_computations_are_not_folded():
    """Only small integer tensors (shapes) become constants, never data."""
    nodes = [helper.make_node("Constant", [], ["c"], value=numpy_helper.from_array(
                 np.ones(3, dtype=np.float32), "c")),
             helper.make_node("Add", ["c", "c"], ["d"]),
             helper.make_node("Add", ["x", "d"], ["y"])]
    graph = helper.make_graph(nodes, "f",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    assert onnx_shapes.fold_shape_computations(model) == 0


def test_an_op_without_lowering_names_its_node():
    report = ("failed to legalize operation 'torch.operator' that was explicitly marked "
              "illegal: %132 = \"torch.operator\"(%131) <{name = \"onnx.Transpose\"}> "
              "{torch.onnx.perm = [3 : si64]} : (!torch.vtensor<[],f32>) -> "
              "!torch.vtensor<[],f32> [at loc(\"/enc/layers.0/self_attn/Transpose_1\")]\n")
    assert unsupported_op_summary(report) == \
        "ONNX op 'Transpose' (node '/enc/layers.0/self_attn/Transpose_1') has no lowering"
    assert unsupported_op_summary(report.replace(
        ' [at loc("/enc/layers.0/self_attn/Transpose_1")]', "")) == \
        "ONNX op 'Transpose' has no lowering"
