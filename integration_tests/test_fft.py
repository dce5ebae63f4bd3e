"""FFTs and complex tensors end to end: Fourier neural operators and one small model per family
of spectral ops (spectral_cases.py), each through the formats its exporter writes, exported
in this process, built in one batched CMake build (benchmarks/conformance/batch_build.py) and
compared with PyTorch: max abs error <= tolerance * max(1, max|reference|), 1e-4 for float32
models, 1e-10 for float64 ones (the ONNX reference is onnx.reference, which computes DFT in
float64 as well).

torch.onnx.export writes no FNO: dynamo=True has no ONNX function for complex einsum /
constant_pad_nd / select, dynamo=False none for aten::fft_rfft2. Its DFT rows are the cases it
does write (transforms of real tensors). The FNOs' TorchScript rows are torch.jit.trace files,
whose size arithmetic (`x.size(-1) // 2 + 1`) the frontend folds back into sizes.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from . import fno, spectral_cases

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks" / "conformance"))

# (model, format): every row is one package of the batched build.
CASES = [
    ("fno2d", "pt2"), ("fno1d", "pt2"), ("fno1d_f64", "pt2"),
    ("fno2d", "torchscript"), ("fno1d_f64", "torchscript"),
    ("rfft_norms", "pt2"), ("irfft_norms", "pt2"), ("fft_ifft", "pt2"),
    ("complex_fft2", "pt2"), ("rfft2_irfft2", "pt2"), ("rfftn_irfftn", "pt2"),
    ("complex_elementwise", "pt2"), ("complex_matmul", "pt2"),
    ("rfft2_irfft2_f64", "pt2"), ("complex_elementwise_f64", "pt2"),
    ("rfft_norms", "onnx"), ("dft_onnx", "onnx"), ("dft_onnx_long", "onnx"),
    ("fft_kernel", "pt2"), ("fft_kernel_f64", "pt2"),
]
# Cases whose full transforms take the FFT kernel (lapis/fft.hpp), and how many calls of it
# their packages make; the prime length 61 stays a DFT product.
KERNEL_CASES = {"fft_kernel": 28, "fft_kernel_f64": 28}


def build_model(name: str):
    """(module, example input) of a case, with fixed seeds."""
    if name.startswith("fno"):
        dtype = torch.float64 if name.endswith("f64") else torch.float32
        net, shape = fno.fno2d() if name == "fno2d" else fno.fno1d(dtype=dtype)
    else:
        net, shape, dtype = spectral_cases.build(name)
    example = torch.randn(*shape, dtype=dtype, generator=torch.Generator().manual_seed(1))
    return net, example


def key(name: str, fmt: str) -> str:
    return f"fft_{name}_{fmt}"


def export_case(name: str, fmt: str, work: Path) -> dict:
    """Save the model file, its input and reference output, and export the package; returns the
    record onnx_run.build_and_run reads (category None: exported) with the export seconds."""
    from exporter import emit, frontend, importer, lowering, package

    started = time.monotonic()
    case_dir, package_dir = work / "cases" / key(name, fmt), work / "packages" / key(name, fmt)
    case_dir.mkdir(parents=True, exist_ok=True)
    net, example = build_model(name)
    with torch.no_grad():
        reference = net(example)
    shapes = None
    if fmt == "pt2":
        model = case_dir / "model.pt2"
        torch.export.save(torch.export.export(net, (example,)), str(model))
    elif fmt == "torchscript":
        model, shapes = case_dir / "model.pt", [tuple(example.shape)]
        torch.jit.trace(net, (example,)).save(str(model))
    else:
        model = case_dir / "model.onnx"
        torch.onnx.export(net, (example,), str(model), dynamo=True, verbose=False)
    np.savez(case_dir / "data.npz", in_0=example.numpy(), out_0=reference.numpy())
    tolerance = 1e-10 if example.dtype == torch.float64 else 1e-4
    scale = max(1.0, float(reference.abs().max()))
    (case_dir / "case.json").write_text(json.dumps({
        "name": name, "path": fmt, "inputs": 1, "outputs": 1, "rtol": 0.0,
        "atol": tolerance * scale}))
    record = {"name": name, "path": fmt, "key": key(name, fmt), "category": None,
              "stage": "", "reason": ""}
    try:
        loaded = frontend.load(model, shapes)
        lowered = lowering.run(importer.to_linalg(loaded), "openmp")
        source = emit.kokkos(lowered, key(name, fmt), "openmp")
        package.write(source, package_dir, package.PackageOptions(force=True))
        text = (package_dir / "src" / f"{key(name, fmt)}.cpp").read_text()
        record["fft_calls"] = text.count("(lapis/fft.hpp)")
        record["dense_61"] = "dft_rc_61x61" in text
    except Exception as exc:  # noqa: BLE001  (reported by the case's test)
        record.update(category="export", reason=f"{type(exc).__name__}: {exc}"[:300])
    record["export_s"] = time.monotonic() - started
    return record


@pytest.fixture(scope="module")
def results(tmp_path_factory, kokkos_root) -> dict:
    import onnx_run
    work = tmp_path_factory.mktemp("fft")
    records = {}
    for name, fmt in CASES:
        records[key(name, fmt)] = export_case(name, fmt, work)
    timings: dict = {}
    onnx_run.build_and_run(records, work, 2, "-O1", timings, log=lambda text: None)
    records["_timings"] = timings
    return records


@pytest.mark.parametrize("name,fmt", CASES, ids=[f"{n}:{f}" for n, f in CASES])
def test_matches_pytorch(results, name, fmt):
    record = results[key(name, fmt)]
    assert record["category"] == "passed", f"{record['category']}: {record['reason']}"


@pytest.mark.parametrize("name", sorted(KERNEL_CASES))
def test_full_transforms_take_the_kernel(results, name):
    record = results[key(name, "pt2")]
    assert (record.get("fft_calls"), record.get("dense_61")) == (KERNEL_CASES[name], True)


def test_onnx_dfts_take_the_kernel(results):
    """ONNX DFT nodes of length 32 and more reach the same kernel by the same cost rule
    (onnx_rewrites.py): all five of dft_onnx_long but the prime length 61; dft_onnx's short
    ones (16, 16 and 5) stay products."""
    long, short = results[key("dft_onnx_long", "onnx")], results[key("dft_onnx", "onnx")]
    assert (long.get("fft_calls"), short.get("fft_calls")) == (4, 0)


# The kernel over a dynamic number of lines (none, one, a group of 8 and one more), built as
# shipped (host threads take 8 lines each) and with LAPIS_FFT_TEAMS (the GPU path: a team
# per line, on the host threads).
LINES = (0, 1, 9)
PATHS = {"threads": "-O1", "teams": "-O1 -DLAPIS_FFT_TEAMS"}


@pytest.fixture(scope="module")
def lines_results(tmp_path_factory, kokkos_root) -> dict:
    from . import batched
    work = tmp_path_factory.mktemp("fft_lines")
    net, shape, dtype = spectral_cases.build("fft_lines")
    lines = torch.export.Dim("lines", min=0, max=1 << 20)
    program = torch.export.export(net, (torch.randn(*shape, dtype=dtype),),
                                  dynamic_shapes=({0: lines},))
    torch.export.save(program, work / "fft_lines.pt2")
    package = batched.export(work / "fft_lines.pt2", work / "fft_lines", "fft_lines")
    results = {}
    for path, flags in PATHS.items():
        library = batched.build({package.name: package}, work / path, kokkos_root,
                                optimization=flags)[package.name]
        jobs, references = {}, {}
        for count in LINES:
            x = torch.randn(count, shape[1], dtype=dtype,
                            generator=torch.Generator().manual_seed(count))
            with torch.no_grad():   # (torch.fft refuses 0 lines: the shape of 1, emptied)
                references[count] = net(x).numpy() if count else \
                    net(torch.zeros(1, shape[1], dtype=dtype)).numpy()[:0]
            jobs[count] = (library, package, [x.numpy()])
        outputs = batched.run(jobs, work / path)
        results[path] = {count: (outputs[count], references[count]) for count in LINES}
    return package, results


def test_dynamic_lines_are_kernel_calls(lines_results):
    package, _ = lines_results
    source = (package / "src" / f"{package.name}.cpp").read_text()
    assert source.count("(lapis/fft.hpp)") == 4 and "dft_" not in source


@pytest.mark.parametrize("path", list(PATHS))
@pytest.mark.parametrize("count", LINES)
def test_dynamic_lines_match_pytorch(lines_results, path, count):
    from . import batched
    ours, reference = lines_results[1][path][count]
    batched.assert_close(ours[0], reference, 1e-5, f"{count} lines")


def test_report(results, capsys):
    """Not a check: prints each case's export seconds and the batched build's time (-s)."""
    timings = results["_timings"]
    with capsys.disabled():
        print(f"\nbatched build {timings.get('build', 0):.0f} s, run {timings.get('run', 0):.0f} s")
        for name, fmt in CASES:
            record = results[key(name, fmt)]
            print(f"  {name}:{fmt}  export {record['export_s']:.1f} s  {record['category']}")
