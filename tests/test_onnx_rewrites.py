"""ONNX rewrites ahead of torch-mlir (exporter/onnx_rewrites.py): each rewritten graph gives
onnx.reference.ReferenceEvaluator's numbers for the original node (rtol 1e-5, atol 1e-6 in
float32), and the node it replaces is gone."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator

from exporter import importer
from exporter.frontend import onnx_model
from exporter.importer import onnx_rewrites

RTOL, ATOL = 1e-5, 1e-6
TYPES = {np.float32: TensorProto.FLOAT, np.float64: TensorProto.DOUBLE,
         np.int64: TensorProto.INT64, np.int32: TensorProto.INT32}


def model(node, inputs: dict, outputs: dict, opset=22, initializers=()):
    """A one-node model; inputs/outputs: name -> (numpy dtype, shape)."""
    graph = helper.make_graph(
        [node], "rewrite",
        [helper.make_tensor_value_info(n, TYPES[t], s) for n, (t, s) in inputs.items()],
        [helper.make_tensor_value_info(n, TYPES[t], s) for n, (t, s) in outputs.items()],
        initializer=list(initializers))
    built = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    onnx.checker.check_model(built)
    return onnx.shape_inference.infer_shapes(built, strict_mode=True)


def check(original, feeds: dict, replaced: str) -> onnx.ModelProto:
    rewritten = onnx.ModelProto()
    rewritten.CopyFrom(original)
    assert onnx_rewrites.rewrite(rewritten)
    rewritten = onnx.shape_inference.infer_shapes(rewritten, strict_mode=True)
    assert replaced not in {node.op_type for node in rewritten.graph.node}
    expected = ReferenceEvaluator(original).run(None, feeds)
    ours = ReferenceEvaluator(rewritten).run(None, feeds)
    for mine, theirs in zip(ours, expected, strict=True):
        assert mine.shape == theirs.shape and mine.dtype == theirs.dtype
        np.testing.assert_allclose(mine, theirs, rtol=RTOL, atol=ATOL)
    return rewritten


def test_gelu_tanh_is_spelled_out_with_the_exact_constant():
    x = np.random.default_rng(0).uniform(-4, 4, (3, 4, 5)).astype(np.float32)
    original = model(helper.make_node("Gelu", ["x"], ["y"], approximate="tanh"),
                     {"x": (np.float32, x.shape)}, {"y": (np.float32, x.shape)})
    check(original, {"x": x}, "Gelu")
    exact = model(helper.make_node("Gelu", ["x"], ["y"]), {"x": (np.float32, x.shape)},
                  {"y": (np.float32, x.shape)})
    assert not onnx_rewrites.rewrite(exact)     # the erf form torch-mlir lowers correctly


def test_space_to_depth_crd_orders_channels_by_column_then_row():
    x = np.arange(2 * 3 * 4 * 6, dtype=np.float32).reshape(2, 3, 4, 6)
    original = model(helper.make_node("SpaceToDepth", ["x"], ["y"], blocksize=2, mode="CRD"),
                     {"x": (np.float32, x.shape)}, {"y": (np.float32, (2, 12, 2, 3))},
                     opset=onnx.defs.get_schema("SpaceToDepth").since_version)
    check(original, {"x": x}, "SpaceToDepth")


@pytest.mark.parametrize("p", [1, 2])
def test_lp_normalization_of_a_zero_vector_is_zero(p):
    x = np.random.default_rng(1).standard_normal((2, 2, 3)).astype(np.float32)
    x[:, 1, 2] = 0.0      # a zero vector along axis 0
    if p == 1:
        x = np.abs(x)     # the reference sums x, not |x|, for p = 1
    original = model(helper.make_node("LpNormalization", ["x"], ["y"], axis=0, p=p),
                     {"x": (np.float32, x.shape)}, {"y": (np.float32, x.shape)})
    check(original, {"x": x}, "LpNormalization")


def test_sequence_length_of_a_split_counts_zero_length_parts():
    graph = helper.make_graph(
        [helper.make_node("SplitToSequence", ["x", "split"], ["parts"]),
         helper.make_node("SequenceLength", ["parts"], ["n"])], "split",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [0]),
         helper.make_tensor_value_info("split", TensorProto.INT64, [3])],
        [helper.make_tensor_value_info("n", TensorProto.INT64, [])])
    original = onnx.shape_inference.infer_shapes(
        helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))
    check(original, {"x": np.zeros(0, np.float32), "split": np.zeros(3, np.int64)},
          "SequenceLength")


@pytest.mark.parametrize("reduction,ignore,log_prob", [
    ("mean", None, False), ("mean", 0, True), ("sum", 2, False), ("none", None, True)])
def test_weighted_softmax_cross_entropy(reduction, ignore, log_prob):
    rng = np.random.default_rng(2)
    scores = rng.standard_normal((3, 5, 2)).astype(np.float32)
    labels = rng.integers(0, 5, (3, 2)).astype(np.int64)
    labels[0, 0] = 0
    weight = rng.uniform(0.1, 1.0, 5).astype(np.float32)
    attributes = {"reduction": reduction} | ({"ignore_index": ignore} if ignore is not None
                                             else {})
    outputs = {"loss": (np.float32, (3, 2) if reduction == "none" else ())}
    if log_prob:
        outputs["log_prob"] = (np.float32, scores.shape)
    original = model(helper.make_node("SoftmaxCrossEntropyLoss", ["x", "y", "w"],
                                      list(outputs), **attributes),
                     {"x": (np.float32, scores.shape), "y": (np.int64, labels.shape),
                      "w": (np.float32, weight.shape)}, outputs, opset=13)
    check(original, {"x": scores, "y": labels, "w": weight}, "SoftmaxCrossEntropyLoss")


@pytest.mark.parametrize("shape", [(1, 1), (2, 2), (3, 3), (4, 2, 2), (2, 3, 3)])
def test_small_determinants_need_no_pivoting(shape):
    x = np.random.default_rng(3).standard_normal(shape).astype(np.float32)
    if len(shape) == 2 and shape[0] > 1:
        x[0, 0] = 0.0       # needs a row exchange in an LU factorisation
    original = model(helper.make_node("Det", ["x"], ["y"]), {"x": (np.float32, shape)},
                     {"y": (np.float32, shape[:-2])})
    check(original, {"x": x}, "Det")


def test_a_larger_determinant_is_left_to_torch_mlir():
    original = model(helper.make_node("Det", ["x"], ["y"]), {"x": (np.float32, (4, 4))},
                     {"y": (np.float32, ())})
    assert not onnx_rewrites.rewrite(original)


def test_zero_dimensional_constants_import_as_scalars(tmp_path):
    """A 0-d initializer used to reach torch-mlir as a 1-element tensor, refused there."""
    half = numpy_helper.from_array(np.asarray(0.5, np.float32), "half")
    original = model(helper.make_node("Mul", ["x", "half"], ["y"]),
                     {"x": (np.float32, (3,))}, {"y": (np.float32, (3,))},
                     initializers=[half])
    loaded = onnx_model.prepare(original, tmp_path / "half.onnx")
    assert "tensor<3xf32>" in str(importer.to_linalg(loaded).module)


@pytest.mark.parametrize("mode", ["nearest", "linear"])
@pytest.mark.parametrize("padding", ["zeros", "border"])
@pytest.mark.parametrize("align", [0, 1])
def test_grid_sample_2d(mode, padding, align):
    rng = np.random.default_rng(4)
    x = rng.standard_normal((2, 3, 4, 5)).astype(np.float32)
    grid = rng.uniform(-1.3, 1.3, (2, 3, 6, 2)).astype(np.float32)
    # (x, y) at ties of the nearest pixel (x 0.5, 2.5 when align_corners=1; y 0.5, 2.5 when 0)
    grid[0, 0, :3] = [[-0.75, -0.5], [0.25, 0.5], [-1.0, 1.0]]
    original = model(helper.make_node("GridSample", ["x", "grid"], ["y"], mode=mode,
                                      padding_mode=padding, align_corners=align),
                     {"x": (np.float32, x.shape), "grid": (np.float32, grid.shape)},
                     {"y": (np.float32, (2, 3, 3, 6))})
    check(original, {"x": x, "grid": grid}, "GridSample")


@pytest.mark.parametrize("mode", ["linear", "cubic"])
@pytest.mark.parametrize("scales,out", [((0.7, 0.5), (3, 2)), ((0.5, 0.7), (2, 3)),
                                        ((1.7, 2.0), (8, 10)), ((0.25, 1.0), (1, 5))])
def test_resize_align_corners_by_scales_uses_the_real_resized_length(mode, scales, out):
    rng = np.random.default_rng(5)
    x = rng.standard_normal((2, 3, 5, 5)).astype(np.float32)
    scale_values = np.array([1.0, 1.0, *scales], np.float32)
    original = model(helper.make_node("Resize", ["x", "", "scales"], ["y"], mode=mode,
                                      coordinate_transformation_mode="align_corners"),
                     {"x": (np.float32, x.shape), "scales": (np.float32, (4,))},
                     {"y": (np.float32, (2, 3, *out))}, opset=19)
    check(original, {"x": x, "scales": scale_values}, "Resize")


def lstm_model(steps: int, batch: int, outputs=("Y", "Y_h", "Y_c")):
    hidden, size = 3, 4
    inputs = {"X": (np.float32, (steps, batch, size)), "W": (np.float32, (1, 4 * hidden, size)),
              "R": (np.float32, (1, 4 * hidden, hidden)), "B": (np.float32, (1, 8 * hidden)),
              "sequence_lens": (np.int32, (batch,)), "initial_h": (np.float32, (1, batch, hidden)),
              "initial_c": (np.float32, (1, batch, hidden)), "P": (np.float32, (1, 3 * hidden))}
    shapes = {"Y": (steps, 1, batch, hidden), "Y_h": (1, batch, hidden),
              "Y_c": (1, batch, hidden)}
    return model(helper.make_node("LSTM", list(inputs), list(outputs), hidden_size=hidden),
                 inputs, {name: (np.float32, shapes[name]) for name in outputs})


def lstm_feeds(steps: int, batch: int, lengths) -> dict:
    rng = np.random.default_rng(6)
    shapes = {"X": (steps, batch, 4), "W": (1, 12, 4), "R": (1, 12, 3), "B": (1, 24),
              "initial_h": (1, batch, 3), "initial_c": (1, batch, 3), "P": (1, 9)}
    feeds = {name: rng.standard_normal(shape).astype(np.float32)
             for name, shape in shapes.items()}
    return feeds | {"sequence_lens": np.array(lengths, np.int32)}


def test_lstm_peepholes_over_every_step():
    check(lstm_model(3, 2), lstm_feeds(3, 2, [3, 3]), "LSTM")


def test_lstm_peepholes_keep_each_entrys_state_after_its_sequence_length():
    """The reference ignores sequence_lens: each entry is checked against a run of its own
    steps alone."""
    feeds = lstm_feeds(3, 2, [3, 1])
    rewritten = onnx.ModelProto()
    rewritten.CopyFrom(lstm_model(3, 2))
    assert onnx_rewrites.rewrite(rewritten)
    y, y_h, y_c = ReferenceEvaluator(rewritten).run(None, feeds)
    for entry, length in enumerate(feeds["sequence_lens"]):
        alone = {name: value[:length, entry:entry + 1] if name == "X" else
                 value[:, entry:entry + 1] if name.startswith("initial") else value
                 for name, value in feeds.items()}
        alone["sequence_lens"] = np.array([length], np.int32)
        want_y, want_h, want_c = ReferenceEvaluator(lstm_model(int(length), 1)).run(None, alone)
        np.testing.assert_allclose(y[:length, :, entry:entry + 1], want_y, rtol=RTOL, atol=ATOL)
        assert not y[length:, :, entry].any()
        np.testing.assert_allclose(y_h[:, entry:entry + 1], want_h, rtol=RTOL, atol=ATOL)
        np.testing.assert_allclose(y_c[:, entry:entry + 1], want_c, rtol=RTOL, atol=ATOL)


def test_non_max_suppression_threshold_keeps_the_selection_as_its_first_rows():
    """Boxes below score_threshold are no longer refused but come after every selected box:
    the rewritten graph's first rows are the reference's selection (the lowering keeps as many
    rows as the static output has)."""
    rng = np.random.default_rng(7)
    corners = rng.uniform(0, 4, (1, 12, 2)).astype(np.float32)
    boxes = np.concatenate([corners, corners + rng.uniform(0.5, 2, (1, 12, 2))], axis=2)
    feeds = {"boxes": boxes.astype(np.float32),
             "scores": rng.uniform(0, 1, (1, 1, 12)).astype(np.float32),
             "max_boxes": np.array([12], np.int64), "iou": np.array([0.3], np.float32),
             "threshold": np.array([0.5], np.float32)}
    graph = helper.make_graph(
        [helper.make_node("NonMaxSuppression", list(feeds), ["selected"])], "nms",
        [helper.make_tensor_value_info("boxes", TensorProto.FLOAT, [1, 12, 4]),
         helper.make_tensor_value_info("scores", TensorProto.FLOAT, [1, 1, 12]),
         helper.make_tensor_value_info("max_boxes", TensorProto.INT64, [1]),
         helper.make_tensor_value_info("iou", TensorProto.FLOAT, [1]),
         helper.make_tensor_value_info("threshold", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("selected", TensorProto.INT64, [None, 3])])
    original = onnx.shape_inference.infer_shapes(
        helper.make_model(graph, opset_imports=[helper.make_opsetid("", 11)]))
    rewritten = onnx.ModelProto()
    rewritten.CopyFrom(original)
    assert onnx_rewrites.rewrite(rewritten)
    expected, = ReferenceEvaluator(original).run(None, feeds)
    ours, = ReferenceEvaluator(rewritten).run(None, feeds)
    assert 0 < len(expected) < len(ours)      # the threshold dropped some boxes
    np.testing.assert_array_equal(ours[:len(expected)], expected)


@pytest.mark.parametrize("onesided", [1, 0])
def test_stft_of_a_real_signal_with_a_window(onesided):
    rng = np.random.default_rng(8)
    bins = 9 if onesided else 16
    feeds = {"signal": rng.standard_normal((2, 128, 1)).astype(np.float32),
             "step": np.array(8, np.int64),
             "window": np.hanning(16).astype(np.float32)}
    original = model(helper.make_node("STFT", ["signal", "step", "window"], ["y"],
                                      onesided=onesided),
                     {"signal": (np.float32, (2, 128, 1)), "step": (np.int64, ()),
                      "window": (np.float32, (16,))},
                     {"y": (np.float32, (2, 15, bins, 2))}, opset=17)
    check(original, feeds, "STFT")
