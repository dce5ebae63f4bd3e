"""User mistakes beyond tests/test_cli.py (pipes, unreadable files, --out that cannot be written
or would delete the model, names that clash), the closing summary with -q, progress on a
terminal, and Ctrl-C leaving nothing behind. Real runs of a small MLP where it matters."""
from __future__ import annotations

import io
import os
import pty
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from torch import nn

import cli
from exporter.progress import Progress

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("hardening") / "mlp.pt2"
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2)).eval()
    torch.export.save(torch.export.export(model, (torch.randn(1, 4),)), path)
    return path


def invoke(*args):
    return CliRunner().invoke(cli.command, [str(arg) for arg in args])


def assert_user_error(result, *parts: str) -> None:
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert 1 <= len(lines) <= 2 and lines[0].startswith("lapis-export: error: "), result.stderr
    assert len(lines) == 1 or lines[1].startswith("  hint: ")
    for part in parts:
        assert part in lines[0], lines[0]
    assert "Traceback" not in result.output and result.stdout == ""


def test_a_pipe_is_refused_not_waited_on(tmp_path):
    fifo = tmp_path / "model.pt2"
    os.mkfifo(fifo)   # opening it for reading would block until a writer came
    assert_user_error(invoke(fifo, "--out", tmp_path / "pkg"), str(fifo), "not a regular file")


def test_unreadable_file(tmp_path, monkeypatch):
    path = tmp_path / "model.pt2"
    path.write_bytes(b"PK\x03\x04")
    real_open = Path.open

    def denied(self, *args, **kwargs):
        if self == path:
            raise PermissionError(13, "Permission denied", str(self))
        return real_open(self, *args, **kwargs)
    monkeypatch.setattr(Path, "open", denied)   # root reads past chmod 000
    assert_user_error(invoke(path, "--out", tmp_path / "pkg"), str(path), "cannot read",
                      "Permission denied")


def test_out_that_cannot_be_created(exported, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    out = blocker / "pkg"
    assert_user_error(invoke(exported, "--out", out), f"--out {out}", "cannot be created")
    assert blocker.read_text() == "not a directory"


@pytest.mark.parametrize("where", ["model_dir", "cwd"])
def test_force_never_deletes_the_model_or_the_working_directory(exported, tmp_path, where,
                                                                monkeypatch):
    if where == "cwd":
        monkeypatch.chdir(tmp_path)
        (tmp_path / "notes.txt").write_text("mine")
        out, what = tmp_path, "the current directory"
    else:
        out, what = exported.parent, "the model file"
    assert_user_error(invoke(exported, "--out", out, "--force"), f"--out {out}", what)
    assert exported.exists()
    if where == "cwd":
        assert (tmp_path / "notes.txt").read_text() == "mine"


@pytest.mark.parametrize("name", ["size_t", "int64_t", "KOKKOS_FOO", "Kokkos_Core",
                                  "lapis_kmath", "LAPIS_WEIGHTS_FILE", "assert", "errno",
                                  "__init"])
def test_names_that_clash_with_the_generated_code(exported, tmp_path, name):
    assert_user_error(invoke(exported, "--out", tmp_path / "pkg", "--name", name),
                      f"--name '{name}'")


def test_summary_and_quiet(exported, tmp_path):
    out = tmp_path / "pkg"
    result = invoke(exported, "--out", out, "--backend", "serial")
    assert result.exit_code == 0, result.output
    assert result.stderr == ""   # no progress when stderr is not a terminal
    lines = result.stdout.splitlines()
    assert lines[0] == str(out)
    # 3 ops (linear, relu, linear); 4*8+8 + 8*2+2 = 58 parameters in 4 tensors of float32,
    # stored in 1.5 KiB: the linear layers' weights are packed at export into panels of 32
    # output columns (8 -> 32 and 2 -> 32: 4*32*4 + 8*32*4 bytes, with the two biases).
    assert "mlp (serial): 3 ops in " in lines[1]
    assert "58 parameters in 4 weights (1.5 KiB)" in lines[1]
    assert f"cmake -S {out} -B build-mlp -DKokkos_ROOT=" in result.stdout
    assert "target_link_libraries(app PRIVATE mlp::mlp)" in result.stdout
    quiet = invoke(exported, "--out", out, "--force", "-q")
    assert quiet.exit_code == 0 and quiet.stdout == f"{out}\n" and quiet.stderr == ""


def test_progress_lines():
    stream = io.StringIO()
    steps = Progress(True, stream, tick=0.01)
    with steps.step("lowering"):
        time.sleep(0.05)
    with pytest.raises(ValueError):
        with steps.step("emitting C++"):
            raise ValueError
    text = stream.getvalue()
    assert "lapis-export: lowering... done (" in text
    assert "lapis-export: emitting C++... failed (" in text
    assert text.endswith("s)\n")
    silent = io.StringIO()
    with Progress(False, silent).step("lowering"):
        pass
    assert silent.getvalue() == ""


def run_on_a_terminal(arguments: list, interrupt_on: str | None = None):
    """The CLI with stderr on a pseudo-terminal; returns (exit code, stdout, terminal text).
    With `interrupt_on`, sends SIGINT once that text shows on the terminal."""
    primary, secondary = pty.openpty()
    # SIGINT at its default in the child, also when this runs in the background (where the
    # shell ignores SIGINT, and Python then installs no KeyboardInterrupt handler).
    process = subprocess.Popen([sys.executable, "-m", "cli", *map(str, arguments)], cwd=REPO,
                               stdout=subprocess.PIPE, stderr=secondary, text=True,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    os.close(secondary)
    terminal, sent = b"", False
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        ready, _, _ = select.select([primary], [], [], 0.2)
        if ready:
            try:
                chunk = os.read(primary, 4096)
            except OSError:   # the process closed its end
                chunk = b""
            terminal += chunk
            if not chunk and process.poll() is not None:
                break
        elif process.poll() is not None:
            break
        if interrupt_on and not sent and interrupt_on.encode() in terminal:
            process.send_signal(signal.SIGINT)
            sent = True
    stdout = process.communicate(timeout=60)[0]
    os.close(primary)
    return process.returncode, stdout, terminal.decode(errors="replace")


def test_progress_on_a_terminal_and_quiet(exported, tmp_path):
    out = tmp_path / "pkg"
    code, stdout, terminal = run_on_a_terminal([exported, "--out", out, "--backend", "serial"])
    assert code == 0, terminal
    for step in ("loading mlp.pt2", "importing", "lowering", "emitting C++", "writing package"):
        assert f"lapis-export: {step}... done (" in terminal, terminal
    assert stdout.splitlines()[0] == str(out)
    code, stdout, terminal = run_on_a_terminal([exported, "--out", out, "--force", "-q"])
    assert code == 0 and terminal == "" and stdout == f"{out}\n"


def test_ctrl_c_leaves_no_partial_package(exported, tmp_path):
    out = tmp_path / "pkg"
    code, stdout, terminal = run_on_a_terminal([exported, "--out", out],
                                               interrupt_on="lapis-export: importing")
    assert code == 130, terminal
    assert terminal.rstrip().endswith("lapis-export: interrupted"), terminal
    assert "Traceback" not in terminal and stdout == ""
    assert sorted(p.name for p in tmp_path.iterdir()) == []   # no package, no staging folder


def test_out_that_cannot_be_written(exported, tmp_path, monkeypatch):
    def no_write(path, mode, **kwargs):   # root writes past chmod 555
        return not (mode & os.W_OK and Path(path) == tmp_path)
    monkeypatch.setattr(os, "access", no_write)
    out = tmp_path / "pkg"
    assert_user_error(invoke(exported, "--out", out), f"--out {out}", "cannot be written",
                      str(tmp_path))
    assert not out.exists()


def test_unknown_extension_is_named(tmp_path):
    path = tmp_path / "model.h5"
    path.write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(100))
    result = invoke(path, "--out", tmp_path / "pkg")
    assert_user_error(result, str(path), "not a recognised model file", "extension .h5")
    assert "torch.export.save" in result.stderr   # the hint says how to save one
