"""Frontend: format detection from content, TorchScript/torch.export loading, input specs."""
from __future__ import annotations

import hashlib
import zipfile
from pathlib import Path

import pytest
import torch
from torch import nn

from exporter import frontend
from exporter.frontend import torch_files
from exporter.errors import ExportError

SHAPE = (2, 3, 8, 8)


class SmallCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.bn = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4 * 6 * 6, 5)

    def forward(self, x):
        return self.fc(torch.relu(self.bn(self.conv(x))).flatten(1))


class TwoInputs(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(10, 3)

    def forward(self, tokens, extra):
        return self.embed(tokens) + extra


def small_cnn() -> nn.Module:
    torch.manual_seed(0)
    model = SmallCNN()
    with torch.no_grad():   # non-trivial running statistics, so batch norm matters
        model.bn.running_mean.uniform_(-0.5, 0.5)
        model.bn.running_var.uniform_(0.5, 2.0)
    return model.eval()


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    """The same seeded model saved in every supported and refused form."""
    root = tmp_path_factory.mktemp("frontend")
    model, example = small_cnn(), torch.randn(SHAPE)
    paths = {kind: root / name for kind, name in [
        ("traced", "traced.pt"), ("scripted", "scripted.pt"), ("exported", "exported.pt2"),
        ("module_pickle", "module.pt"), ("state_dict", "weights.pt"),
        ("legacy_pickle", "legacy.pt"), ("two_inputs", "two_inputs.pt2")]}
    torch.jit.save(torch.jit.trace(model, example), paths["traced"])
    torch.jit.save(torch.jit.script(model), paths["scripted"])
    torch.export.save(torch.export.export(model, (example,)), paths["exported"])
    torch.save(model, paths["module_pickle"])
    torch.save(model.state_dict(), paths["state_dict"])
    torch.save(model.state_dict(), paths["legacy_pickle"], _use_new_zipfile_serialization=False)
    two = TwoInputs().eval()
    torch.export.save(torch.export.export(two, (torch.tensor([[1, 2]]), torch.randn(1, 2, 3))),
                      paths["two_inputs"])
    return paths


def assert_matches_eager(loaded, shape=SHAPE):
    x = torch.randn(shape, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = small_cnn()(x)
        actual = loaded.program.module()(x)
    torch.testing.assert_close(actual, expected, atol=1e-6, rtol=0)


@pytest.mark.parametrize("kind", ["traced", "scripted"])
def test_torchscript_becomes_a_static_exported_program(files, kind):
    loaded = frontend.load(files[kind], [SHAPE])
    assert loaded.kind == "torchscript"
    assert isinstance(loaded.program, torch.export.ExportedProgram)
    assert [(s.cname, s.dtype, s.shape) for s in loaded.inputs] == [("input0", "float32", SHAPE)]
    assert loaded.inputs[0].name in loaded.program.graph_signature.user_inputs
    assert_matches_eager(loaded)


def test_torch_export_file_records_its_shapes(files):
    loaded = frontend.load(files["exported"])
    assert loaded.kind == "torch.export"
    assert [(s.name, s.cname, s.dtype, s.shape) for s in loaded.inputs] == \
        [("x", "input0", "float32", SHAPE)]
    assert_matches_eager(loaded)
    assert frontend.load(files["exported"], [SHAPE]).inputs == loaded.inputs


def test_program_is_not_decomposed(files):
    loaded = frontend.load(files["exported"])
    targets = {str(node.target) for node in loaded.program.graph.nodes}
    assert "aten.batch_norm.default" in targets   # the importer runs the decompositions


def test_source_sha256_is_the_file_hash(files):
    loaded = frontend.load(files["exported"])
    assert loaded.source_sha256 == hashlib.sha256(files["exported"].read_bytes()).hexdigest()


def test_several_inputs_and_integer_dtypes(files):
    inputs = frontend.load(files["two_inputs"]).inputs
    assert [(s.name, s.cname, s.dtype, s.shape) for s in inputs] == [
        ("tokens", "input0", "int64", (1, 2)), ("extra", "input1", "float32", (1, 2, 3))]


class IndexAndMask(nn.Module):
    def forward(self, x, index, mask):
        return torch.where(mask, torch.gather(x, 1, index), 0.0)


def test_traced_torchscript_keeps_integer_and_bool_input_dtypes(tmp_path):
    # torch.jit.trace records its example inputs' dtypes; without them an index or a mask
    # would be traced as float32 and the conversion would fail.
    path = tmp_path / "typed.pt"
    example = (torch.randn(3, 5), torch.tensor([[0, 4], [1, 1], [3, 2]]),
               torch.tensor([[True, False], [False, True], [True, True]]))
    torch.jit.save(torch.jit.trace(IndexAndMask(), example), path)
    loaded = frontend.load(path, [(3, 5), (3, 2), (3, 2)])
    assert [(s.dtype, s.shape) for s in loaded.inputs] == [
        ("float32", (3, 5)), ("int64", (3, 2)), ("bool", (3, 2))]
    torch.testing.assert_close(loaded.program.module()(*example), IndexAndMask()(*example))


def test_scripted_torchscript_inputs_stay_float32(files):
    # A scripted module stores no example inputs: its inputs are taken as float32.
    assert torch_files._traced_input_dtypes(files["scripted"], 1) is None
    assert torch_files._traced_input_dtypes(files["traced"], 1) == ["float32"]


def test_unsupported_input_dtype_is_refused(tmp_path):
    path = tmp_path / "half.pt2"
    model = nn.Linear(4, 3).half()
    torch.export.save(torch.export.export(model, (torch.randn(2, 4).half(),)), path)
    with pytest.raises(ExportError, match="float16"):
        frontend.load(path)


def test_dynamic_dims(tmp_path):
    """A .pt2 with torch.export.Dim keeps its dynamic dimensions (named by their size);
    --input-shape can pin them to numbers."""
    path = tmp_path / "dynamic.pt2"
    torch.manual_seed(0)
    model = nn.Linear(4, 3).eval()
    program = torch.export.export(model, (torch.randn(2, 4),),
                                  dynamic_shapes=({0: torch.export.Dim("batch")},))
    torch.export.save(program, path)
    for shapes in (None, [(-1, 4)]):
        [spec] = frontend.load(path, shapes).inputs
        assert spec.shape == (-1, 4) and spec.symbols[1] is None and spec.symbols[0]
    loaded = frontend.load(path, [(5, 4)])   # specialised to the given size
    assert loaded.inputs[0].shape == (5, 4) and loaded.inputs[0].symbols == ()
    x = torch.randn(5, 4)
    torch.testing.assert_close(loaded.program.module()(x), model(x), atol=1e-6, rtol=0)


def test_torchscript_dynamic_dim_from_a_letter(tmp_path):
    path = tmp_path / "traced.pt"
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 3), nn.Tanh()).eval()
    torch.jit.save(torch.jit.trace(model, torch.randn(2, 4)), path)
    loaded = frontend.load(path, [(-1, 4)])
    assert loaded.inputs[0].shape == (-1, 4)
    for batch in (1, 9):
        x = torch.randn(batch, 4)
        torch.testing.assert_close(loaded.program.module()(x), model(x), atol=1e-6, rtol=0)


class HalfSpectrum(nn.Module):
    """Size arithmetic as an FNO writes it: traced, `x.size(-1) // 2 + 1` is arithmetic on
    0-d tensors read back by aten::Int."""

    def forward(self, x):
        keep = torch.zeros(x.shape[0], x.size(-1) // 2 + 1)
        keep[:, :3] = x[:, :3]
        return keep * 2 - 1


@pytest.mark.parametrize("shape", [(2, 10), (-1, 10)])
def test_traced_size_arithmetic_stays_a_size(tmp_path, shape):
    path = tmp_path / "half.pt"
    torch.jit.save(torch.jit.trace(HalfSpectrum(), torch.randn(2, 10)), path)
    loaded = frontend.load(path, [shape])
    scalar_reads = [node for node in loaded.program.graph.nodes
                    if node.target is torch.ops.aten._local_scalar_dense.default]
    assert scalar_reads == []
    for batch in ((2,) if shape[0] > 0 else (1, 5)):
        x = torch.randn(batch, 10)
        torch.testing.assert_close(loaded.program.module()(x), HalfSpectrum()(x))


def test_dtype_float64_converts_weights_and_inputs(tmp_path):
    path = tmp_path / "model.pt2"
    torch.manual_seed(0)
    model = SmallCNN().eval()
    torch.export.save(torch.export.export(model, (torch.randn(SHAPE),)), path)
    loaded = frontend.load(path, dtype="float64")
    assert loaded.inputs[0].dtype == "float64"
    assert all(t.dtype == torch.float64 for t in loaded.program.state_dict.values()
               if t.is_floating_point())
    x = torch.randn(SHAPE, dtype=torch.float64)
    torch.testing.assert_close(loaded.program.module()(x), model.double()(x), atol=1e-12,
                               rtol=0)
    with pytest.raises(ExportError, match="--dtype float16"):
        frontend.load(path, dtype="float16")


def test_input_shape_must_agree_with_a_pt2(files):
    with pytest.raises(ExportError, match="disagrees with the recorded shape 2x3x8x8"):
        frontend.load(files["exported"], [(1, 3, 8, 8)])
    with pytest.raises(ExportError, match="takes 1 input"):
        frontend.load(files["exported"], [SHAPE, SHAPE])


def test_torchscript_needs_one_shape_per_input(files):
    with pytest.raises(ExportError, match="do not record input shapes"):
        frontend.load(files["traced"])
    with pytest.raises(ExportError, match="takes 1 input"):
        frontend.load(files["scripted"], [SHAPE, SHAPE])


@pytest.mark.parametrize("kind,what", [("module_pickle", "pickled model (class "),
                                       ("state_dict", "pickled state_dict"),
                                       ("legacy_pickle", "is a pickle")])
def test_pickles_are_refused_without_loading(files, kind, what, monkeypatch):
    def no_unpickling(*args, **kwargs):
        raise AssertionError("the frontend must not unpickle")
    monkeypatch.setattr(torch, "load", no_unpickling)
    monkeypatch.setattr("pickle.load", no_unpickling)
    monkeypatch.setattr("pickle.loads", no_unpickling)
    with pytest.raises(ExportError, match="arbitrary code") as info:
        frontend.load(files[kind])
    assert what in info.value.message and str(files[kind]) in info.value.message
    assert "torch.export.save" in info.value.hint and "torch.jit.save" in info.value.hint


def test_onnx_is_detected_from_content(tmp_path):
    # A ModelProto: ir_version=9, producer_name="pytorch", an empty graph.
    path = tmp_path / "model.bin"
    path.write_bytes(b"\x08\x09\x12\x07pytorch:\x00")
    with pytest.raises(ExportError, match="not a valid ONNX model"):   # read as ONNX, then checked
        frontend.load(path)


def test_format_comes_from_content_not_extension(files, tmp_path):
    renamed = tmp_path / "model.onnx"
    renamed.write_bytes(files["exported"].read_bytes())
    assert frontend.load(renamed).kind == "torch.export"


@pytest.mark.parametrize("content,message", [
    (None, "no such file"),
    (b"", "the file is empty"),
    (bytes(range(256)) * 4, "not a recognised model file"),
    (b"name,value\n1,2\n", "not a recognised model file"),
])
def test_unreadable_files_are_named(tmp_path, content, message):
    path = tmp_path / "model.pt"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(ExportError, match=message) as info:
        frontend.load(path)
    assert str(path) in info.value.message


def test_directory_is_refused(tmp_path):
    with pytest.raises(ExportError, match="is a directory"):
        frontend.load(tmp_path)


def test_truncated_and_foreign_zips(files, tmp_path):
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(files["traced"].read_bytes()[:2000])
    with pytest.raises(ExportError, match="damaged or truncated zip"):
        frontend.load(truncated, [SHAPE])
    foreign = tmp_path / "foreign.pt"
    with zipfile.ZipFile(foreign, "w") as archive:
        archive.writestr("notes/readme.txt", "hello")
    with pytest.raises(ExportError, match="not a TorchScript or torch.export file"):
        frontend.load(foreign)


def test_torch_errors_become_one_line_export_errors(files, tmp_path):
    # A TorchScript-looking archive whose contents torch cannot read.
    broken = tmp_path / "broken.pt"
    with zipfile.ZipFile(broken, "w") as archive:
        archive.writestr("broken/constants.pkl", b"not a pickle")
        archive.writestr("broken/code/__torch__.py", "garbage")
    with pytest.raises(ExportError, match="could not load the TorchScript archive") as info:
        frontend.load(broken, [SHAPE])
    assert "\n" not in info.value.message


@pytest.mark.parametrize("text,shape", [("1x3x224x224", (1, 3, 224, 224)), ("7", (7,)),
                                        (" 2X4 ", (2, 4)), ("Nx3", (-1, 3))])
def test_parse_input_shape(text, shape):
    assert frontend.parse_input_shape(text) == shape


@pytest.mark.parametrize("text", ["1x3xfoo", "", "0x3", "1xx3", "-1x3", "1x3x", "1,3"])
def test_malformed_input_shapes_name_the_argument(text):
    with pytest.raises(ExportError, match="--input-shape"):
        frontend.parse_input_shape(text)


def test_dtype_conversion_keeps_a_dynamic_range(tmp_path):
    """A Dim with min=8 is traced (and later verified) at sizes inside its range."""
    path = tmp_path / "ranged.pt2"
    torch.manual_seed(0)
    model = nn.Linear(4, 3).eval()
    batch = torch.export.Dim("batch", min=8, max=100)
    torch.export.save(torch.export.export(model, (torch.randn(10, 4),),
                                          dynamic_shapes=({0: batch},)), path)
    loaded = frontend.load(path, dtype="float64")
    [spec] = loaded.inputs
    assert spec.shape == (-1, 4) and spec.dtype == "float64"
    assert frontend.extent_in_range(loaded.program, spec.symbols[0], 3) == 8
    assert frontend.extent_in_range(loaded.program, spec.symbols[0], 500) == 100
    x = torch.randn(9, 4, dtype=torch.float64)
    torch.testing.assert_close(loaded.program.module()(x), model.double()(x), atol=1e-12, rtol=0)
