"""Command line: every user error is one line (+ hint) on stderr, naming what is wrong; the
summary and exit codes of a run (later stages replaced by stand-ins here)."""
from __future__ import annotations

import subprocess
import sys
import types
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from torch import nn

import cli
import exporter
from exporter.errors import ExportError
from exporter.handoff import EmittedSource, Weight

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("cli")
    torch.manual_seed(0)
    model, example = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2)).eval(), \
        torch.randn(1, 4)
    paths = {"traced": root / "mlp.pt", "exported": root / "mlp.pt2",
             "module_pickle": root / "pickled.pt", "state_dict": root / "state.pt"}
    torch.jit.save(torch.jit.trace(model, example), paths["traced"])
    torch.export.save(torch.export.export(model, (example,)), paths["exported"])
    torch.save(model, paths["module_pickle"])
    torch.save(model.state_dict(), paths["state_dict"])
    return paths


def invoke(*args) -> "click.testing.Result":
    return CliRunner().invoke(cli.command, [str(arg) for arg in args])


def assert_user_error(result, *names: str) -> None:
    """Non-zero exit, one error line (+ an optional hint line) naming `names`, no traceback."""
    assert result.exit_code not in (0, None), result.output
    lines = result.stderr.strip().splitlines()
    assert 1 <= len(lines) <= 2, result.stderr
    assert lines[0].startswith("lapis-export: error: "), result.stderr
    assert len(lines) == 1 or lines[1].startswith("  hint: "), result.stderr
    for name in names:
        assert name in lines[0], result.stderr
    assert "Traceback" not in result.output
    assert result.stdout == ""


def test_missing_file(tmp_path):
    missing = tmp_path / "missing.pt"
    assert_user_error(invoke(missing, "--out", tmp_path / "pkg"), str(missing), "no such file")


def test_directory(tmp_path):
    assert_user_error(invoke(tmp_path, "--out", tmp_path / "pkg"), str(tmp_path), "directory")


@pytest.mark.parametrize("content,message", [(b"", "empty"),
                                             (bytes(range(256)) * 8, "not a recognised")])
def test_empty_and_random_files(tmp_path, content, message):
    path = tmp_path / "model.pt"
    path.write_bytes(content)
    assert_user_error(invoke(path, "--out", tmp_path / "pkg"), str(path), message)


def test_truncated_zip(models, tmp_path):
    path = tmp_path / "truncated.pt"
    path.write_bytes(models["traced"].read_bytes()[:1500])
    result = invoke(path, "--out", tmp_path / "pkg", "--input-shape", "1x4")
    assert_user_error(result, str(path), "truncated zip")


@pytest.mark.parametrize("kind,what", [("module_pickle", "pickled model"),
                                       ("state_dict", "pickled state_dict")])
def test_pickles_are_refused(models, tmp_path, kind, what):
    result = invoke(models[kind], "--out", tmp_path / "pkg")
    assert_user_error(result, str(models[kind]), what, "arbitrary code")
    assert "torch.export.save" in result.stderr


def test_unknown_extension_and_content(tmp_path):
    path = tmp_path / "model.h5"
    path.write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(100))
    assert_user_error(invoke(path, "--out", tmp_path / "pkg"), str(path), "not a recognised")


def test_invalid_onnx_model(tmp_path):
    path = tmp_path / "model.onnx"
    path.write_bytes(b"\x08\x09\x12\x07pytorch:\x00")   # an empty graph, no opset
    assert_user_error(invoke(path, "--out", tmp_path / "pkg"), str(path),
                      "not a valid ONNX model")


def test_torchscript_needs_input_shape(models, tmp_path):
    result = invoke(models["traced"], "--out", tmp_path / "pkg")
    assert_user_error(result, str(models["traced"]), "--input-shape")


@pytest.mark.parametrize("text", ["1x3xfoo", "", "0x3"])
def test_malformed_input_shape(models, tmp_path, text):
    result = invoke(models["traced"], "--out", tmp_path / "pkg", "--input-shape", text)
    assert_user_error(result, "--input-shape", f"'{text}'")


def test_dynamic_dimension_a_pt2_fixed(models, tmp_path):
    result = invoke(models["exported"], "--out", tmp_path / "pkg", "--input-shape", "Nx4")
    assert_user_error(result, "--input-shape ?x4", "makes a dimension dynamic", "fixed (1x4)")


def test_unknown_dtype(models, tmp_path):
    result = invoke(models["exported"], "--out", tmp_path / "pkg", "--dtype", "float16")
    assert_user_error(result, "--dtype", "float16")


def test_wrong_number_of_input_shapes(models, tmp_path):
    for model in (models["traced"], models["exported"]):
        result = invoke(model, "--out", tmp_path / "pkg", "--input-shape", "1x4",
                        "--input-shape", "1x4")
        assert_user_error(result, str(model), "takes 1 input", "2 --input-shape")


def test_input_shape_disagreeing_with_a_pt2(models, tmp_path):
    result = invoke(models["exported"], "--out", tmp_path / "pkg", "--input-shape", "3x4")
    assert_user_error(result, "--input-shape 3x4", "recorded shape 1x4")


@pytest.mark.parametrize("name", ["class", "std", "1abc", "Kokkos", "__x", "my-model", "test"])
def test_bad_name(models, tmp_path, name):
    result = invoke(models["exported"], "--out", tmp_path / "pkg", "--name", name)
    assert_user_error(result, "--name", f"'{name}'")


def test_unknown_backend(models, tmp_path):
    result = invoke(models["exported"], "--out", tmp_path / "pkg", "--backend", "metal")
    assert_user_error(result, "--backend", "metal")
    assert result.exit_code == 2   # Click's usage-error code


def test_missing_out(models):
    assert_user_error(invoke(models["exported"]), "--out")


def test_existing_non_empty_out_needs_force(models, tmp_path):
    out = tmp_path / "pkg"
    out.mkdir()
    (out / "keep.txt").write_text("user data")
    result = invoke(models["exported"], "--out", out)
    assert_user_error(result, str(out), "--force")
    assert (out / "keep.txt").read_text() == "user data"


@pytest.mark.parametrize("stem,name", [("resnet18", "resnet18"), ("my-model.v2", "my_model_v2"),
                                       ("18layers", "m_18layers"), ("class", "m_class"),
                                       ("__init__", "m_init__")])
def test_default_name_is_the_stem_as_an_identifier(stem, name):
    assert cli.default_name(Path(f"/models/{stem}.pt")) == name
    assert cli.check_name(name) == name


# --- a run, with the stages after the frontend replaced by stand-ins -------------------------

@pytest.fixture
def stages(monkeypatch):
    """Stand-ins for importer/lowering/emit/package/verify that record what they were given."""
    calls: dict = {}
    weights = [Weight("fc.weight", "fc_weight", np.zeros((8, 4), np.float32)),
               Weight("fc.bias", "fc_bias", np.zeros(8, np.float32))]

    def write(source, out, options):
        calls["package"] = (source, out, options)
        out.mkdir(parents=True, exist_ok=True)
        return out

    fakes = {
        "importer": types.SimpleNamespace(to_linalg=lambda model: (
            calls.setdefault("model", model), types.SimpleNamespace(weights=weights))[1]),
        "lowering": types.SimpleNamespace(run=lambda imported, backend, precision="fp32": ("lowered", backend)),
        "emit": types.SimpleNamespace(kokkos=lambda lowered, name, backend, precision, row=None:
                                      EmittedSource(
            name=name, backend=backend, header="", source="", weights=weights, inputs=[],
            outputs=[], kernel_count=3)),
        "package": types.SimpleNamespace(write=write,
                                          PackageOptions=lambda **kw: types.SimpleNamespace(**kw)),
        "verify": types.SimpleNamespace(run=lambda pkg, model, example_inputs=None:
                                        calls["verify_result"]),
    }
    for module, fake in fakes.items():
        monkeypatch.setattr(exporter, module, fake, raising=False)
    return calls


def test_a_run_prints_the_package_and_summary(models, tmp_path, stages):
    out = tmp_path / "pkg"
    result = invoke(models["exported"], "--out", out, "--backend", "serial", "--weights", "file")
    assert result.exit_code == 0, result.output
    assert result.stderr == ""   # no progress lines when stderr is not a terminal
    lines = result.stdout.splitlines()
    assert lines[0] == str(out)
    assert "mlp (serial): 3 ops in 3 kernels, 40 parameters in 2 weights (160 bytes)" \
        in result.stdout
    assert f"cmake -S {out} -B build-mlp" in result.stdout
    assert f"add_subdirectory({out})" in result.stdout
    assert "target_link_libraries(app PRIVATE mlp::mlp)" in result.stdout
    source, package_out, options = stages["package"]
    assert (source.name, source.backend, package_out) == ("mlp", "serial", out)
    assert options.weights_mode == "file" and options.force is False
    assert options.source_sha256 == stages["model"].source_sha256


@pytest.mark.parametrize("passed,code,verdict", [(True, 0, "PASS"), (False, 1, "FAIL")])
def test_verify_verdict_sets_the_exit_code(models, tmp_path, stages, passed, code, verdict):
    stages["verify_result"] = types.SimpleNamespace(
        max_abs_error=2e-7, max_abs_reference=1.5, relative_error=1.3e-7, passed=passed,
        tolerance=1e-4)
    result = invoke(models["exported"], "--out", tmp_path / "pkg", "--verify")
    assert result.exit_code == code
    assert f"verify: max abs error 2e-07 (relative 1.3e-07, tolerance 0.0001) — {verdict}" \
        in result.stdout


def test_force_replaces_a_non_empty_out(models, tmp_path, stages):
    out = tmp_path / "pkg"
    out.mkdir()
    (out / "old.txt").write_text("old")
    assert invoke(models["exported"], "--out", out, "--force").exit_code == 0
    assert stages["package"][2].force is True


def test_export_error_from_a_later_stage(models, tmp_path, stages, monkeypatch):
    def unsupported(imported, backend, precision="fp32"):
        raise ExportError("op 'aten.foo' is not supported", hint="see docs")
    monkeypatch.setattr(exporter.lowering, "run", unsupported)
    result = invoke(models["exported"], "--out", tmp_path / "pkg")
    assert_user_error(result, "aten.foo")
    assert result.exit_code == 2
    assert "Traceback" in invoke(models["exported"], "--out", tmp_path / "pkg", "-v").stderr


def test_internal_errors_are_not_disguised(models, tmp_path, stages, monkeypatch):
    def bug(imported, backend, precision="fp32"):
        raise KeyError("oops")
    monkeypatch.setattr(exporter.lowering, "run", bug)
    result = invoke(models["exported"], "--out", tmp_path / "pkg")
    assert result.exit_code == 3
    assert "internal error: KeyError" in result.stderr and "rerun with -v" in result.stderr
    assert "Traceback" not in result.stderr
    verbose = invoke(models["exported"], "--out", tmp_path / "pkg", "-v")
    assert verbose.exit_code == 3 and "Traceback" in verbose.stderr


def test_interrupt(models, tmp_path, stages, monkeypatch):
    def interrupted(imported, backend, precision="fp32"):
        raise KeyboardInterrupt
    monkeypatch.setattr(exporter.lowering, "run", interrupted)
    result = invoke(models["exported"], "--out", tmp_path / "pkg")
    assert result.exit_code == 130 and "interrupted" in result.stderr


def test_module_entry_point_runs_without_torch_for_help():
    result = subprocess.run([sys.executable, "-m", "cli", "--help"], cwd=REPO,
                            capture_output=True, text=True, check=True)
    assert "--input-shape" in result.stdout
    probe = "import cli, sys; cli.command.main(['--help'], standalone_mode=False); " \
            "print('torch' in sys.modules)"
    imported = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True,
                              text=True, check=True)
    assert imported.stdout.strip().endswith("False")


def test_module_entry_point_reports_errors(tmp_path):
    missing = tmp_path / "missing.pt2"
    result = subprocess.run([sys.executable, "-m", "cli", str(missing), "--out",
                             str(tmp_path / "pkg")], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr == f"lapis-export: error: {missing}: no such file\n"


@pytest.mark.parametrize("arguments,message", [
    (("--precision", "tf32"), "--precision tf32: only --backend cuda has TF32 products"),
    (("--precision", "tf32", "--backend", "hip"), "--precision tf32: only --backend cuda"),
    (("--precision", "bf16", "--backend", "hip"),
     "--precision bf16: only the host backends (openmp, serial, threads) and cuda"),
    (("--precision", "bf16", "--backend", "sycl"),
     "--precision bf16: only the host backends (openmp, serial, threads) and cuda"),
    (("--precision", "bf16", "--dtype", "float64"),
     "--precision bf16: applies to float32 models, not --dtype float64"),
    (("--precision", "tf32", "--backend", "cuda", "--dtype", "float64"),
     "--precision tf32: applies to float32 models"),
])
def test_precision_that_the_backend_lacks_is_refused(models, tmp_path, arguments, message):
    result = invoke(models["traced"], "--out", tmp_path / "pkg", "--input-shape", "1x4",
                    *arguments)
    assert_user_error(result, message)
    assert result.exit_code == 2
    assert not (tmp_path / "pkg").exists()


def test_bf16_of_a_float64_model_is_refused(tmp_path):
    """A model that computes in float64 has no bfloat16 products: one line, exit 2."""
    model = nn.Linear(4, 2).double().eval()
    path = tmp_path / "double.pt2"
    torch.export.save(torch.export.export(model, (torch.randn(1, 4, dtype=torch.float64),)),
                      path)
    result = invoke(path, "--out", tmp_path / "pkg", "--precision", "bf16")
    assert_user_error(result, "--precision bf16: applies to float32 models; this one computes "
                              "in float64")
    assert result.exit_code == 2
    assert not (tmp_path / "pkg").exists()
