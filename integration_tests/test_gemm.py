"""Dense matrix products and linear layers on host backends (kokkos_support/lapis/gemm.hpp,
gemm_host.hpp).

The packed kernel itself (gemm_host_check): lapis::linear_packed on weights packed by
tuned_ops.pack_linear_weight and lapis::matmul on the same operands, odd sizes, every
activation, start and residual placement, float and double, each instruction set this machine
has forced in turn (LAPIS_GEMM_ISA) and the portable loops, against NumPy in float64 (max
error <= 1e-5 * max |numpy| in float32, 1e-12 in float64). Then end to end: an MLP through
`--verify`, and the exported `A @ B` below.

Dense matrix products end to end (lapis::matmul, kokkos_support/lapis/gemm.hpp): the
exported `A @ B` of examples/science_kernels.py, built and run through its C API, against NumPy
in float64: max |ours - numpy| <= 1e-5 * max |numpy| in float32, 1e-12 in float64. Odd sizes
exercise every edge of the register tiles; K > 256 the blocking over K; 3-d operands the batched
product (linalg.batch_matmul). One package per dtype, with dynamic extents, serves every size
(the batched one has static extents); the host tiles (AVX2 or baseline, as the machine has)
and the portable Kokkos version (LAPIS_GEMM_PORTABLE) run the same cases."""
from __future__ import annotations

import sys

import numpy as np
import pytest
import scipy.special
import torch

from exporter import tuned_ops

from .conftest import REPO, run
from .functions import build, export, relative_error, run_cases

# lapis::Activation and lapis::ConvInit, in their order.
ACTIVATIONS = ("none", "relu", "silu", "gelu", "tanh", "sigmoid")
INITS = ("accumulate", "bias", "zero")
# (M, N, K): every edge of the micro-tiles (12 and 6 rows, strips of 32 / 16 / 8 columns),
# K over one block (256), one-row and one-column products; N <= 4 the dot products of narrow
# heads (K = 1, K not a multiple of their 4 vectors, K over a block); N < 16 on the tiles.
KERNEL_SIZES = [(1, 1, 1), (7, 33, 13), (33, 7, 1), (13, 100, 257), (97, 65, 33),
                (1, 513, 70), (200, 1, 513), (50, 4, 1), (101, 2, 600), (19, 3, 67),
                (9, 15, 40), (130, 5, 31)]


def activate(name: str, v: np.ndarray) -> np.ndarray:
    return {"none": lambda: v, "relu": lambda: np.maximum(v, 0.0),
            "silu": lambda: v / (1.0 + np.exp(-v)), "sigmoid": lambda: 1.0 / (1.0 + np.exp(-v)),
            "gelu": lambda: 0.5 * v * (1.0 + scipy.special.erf(v / np.sqrt(2.0))),
            "tanh": lambda: np.tanh(v)}[name]()


def kernel_cases(directory) -> dict[str, tuple]:
    """Writes the inputs of every case into `directory` (gemm_host_check's cases.txt and
    arrays); returns name -> (dtype, x, W, bias, y0, residual, activation, init, residual at)."""
    rng = np.random.default_rng(7)
    cases, lines = {}, []
    for dtype in ("float32", "float64"):
        for index, (m, n, k) in enumerate(KERNEL_SIZES):
            for a, activation in enumerate(ACTIVATIONS):
                init = INITS[(index + a) % 3]
                residual = (index + a) % 3 if activation != "none" else 0
                name = f"{dtype}_{m}x{n}x{k}_{activation}"
                arrays = [rng.standard_normal(shape).astype(dtype) for shape in
                          ((m, k), (n, k), (n,), (m, n), (m, n))]
                x, w, bias, y0, res = arrays
                for suffix, array in (("x", x), ("w", tuned_ops.pack_linear_weight(w)),
                                      ("bt", np.ascontiguousarray(w.T)), ("bias", bias),
                                      ("y0", y0), ("res", res)):
                    array.tofile(directory / f"{name}.{suffix}")
                lines.append(f"{name} {dtype} {m} {n} {k} {a} {INITS.index(init)} {residual}")
                cases[name] = (dtype, *arrays, activation, init, residual)
    (directory / "cases.txt").write_text("\n".join(lines) + "\n")
    return cases


def expected(x, w, bias, y0, res, activation, init, residual) -> np.ndarray:
    x, w, bias, y0, res = (a.astype(np.float64) for a in (x, w, bias, y0, res))
    v = x @ w.T + {"accumulate": y0, "bias": bias, "zero": 0.0}[init]
    if residual == 1:
        v = v + res
    v = activate(activation, v)
    return v + res if residual == 2 else v


def available_isas() -> list[str]:
    flags = open("/proc/cpuinfo").read() if sys.platform == "linux" else ""
    found = ["baseline"]
    if " avx2" in flags and " fma" in flags:
        found.append("avx2")
    if " avx512f" in flags:
        found.append("avx512")
    if " avx512f" in flags and " avx512_bf16" in flags:
        found.append("avx512_bf16")
    if " avx512f" in flags and " amx_bf16" in flags and " amx_tile" in flags:
        found.append("amx_bf16")
    return found


def bf16_kernel_cases(directory) -> dict[str, tuple]:
    """kernel_cases for --precision bf16: float32 operands, the weight packed in bfloat16
    (pack_linear_weight_bf16); the expected values from the operands rounded to bfloat16."""
    rng = np.random.default_rng(11)
    cases, lines = {}, []
    for index, (m, n, k) in enumerate(KERNEL_SIZES + [(40, 70, 600), (25, 64, 511)]):
        for a, activation in enumerate(("none", "silu", "gelu")):
            init = INITS[(index + a) % 3]
            residual = (index + a) % 3 if activation != "none" else 0
            name = f"bf16_{m}x{n}x{k}_{activation}"
            x, w, bias, y0, res = (rng.standard_normal(shape).astype("float32") for shape in
                                   ((m, k), (n, k), (n,), (m, n), (m, n)))
            for suffix, array in (("x", x), ("w", tuned_ops.pack_linear_weight_bf16(w)),
                                  ("bt", np.ascontiguousarray(w.T)), ("bias", bias),
                                  ("y0", y0), ("res", res)):
                array.tofile(directory / f"{name}.{suffix}")
            lines.append(f"{name} bfloat16 {m} {n} {k} {a + (a > 0)} {INITS.index(init)} "
                         f"{residual}")
            cases[name] = (round_bf16(x), round_bf16(w), bias, y0, res, activation, init,
                           residual)
    (directory / "cases.txt").write_text("\n".join(lines) + "\n")
    return cases


def round_bf16(array: np.ndarray) -> np.ndarray:
    """float32 rounded to the nearest bfloat16 (ties to even), as float32."""
    bits = tuned_ops.bfloat16_bits(array).astype(np.uint32) << 16
    return bits.view(np.float32)


@pytest.fixture(scope="module")
def gemm_host_check(tmp_path_factory, kokkos_root):
    """The check program built twice: the host kernels and the portable loops."""
    programs = {}
    for version, flags in (("host", ""), ("portable", "-DLAPIS_GEMM_PORTABLE")):
        build_dir = tmp_path_factory.mktemp(f"gemm_host_check_{version}")
        run(["cmake", "-S", REPO / "integration_tests" / "gemm_host_check", "-B", build_dir,
             "-DCMAKE_BUILD_TYPE=Release", f"-DKokkos_ROOT={kokkos_root}",
             f"-DCMAKE_CXX_FLAGS={flags}"])
        run(["cmake", "--build", build_dir, "-j", "2"])
        programs[version] = build_dir / "gemm_host_check"
    return programs


@pytest.mark.parametrize("version", [isa for isa in available_isas()
                                     if isa not in ("avx512_bf16", "amx_bf16")] + ["portable"])
def test_packed_kernel_matches_numpy(tmp_path, gemm_host_check, version):
    cases = kernel_cases(tmp_path)
    program = gemm_host_check["portable" if version == "portable" else "host"]
    env = {"OMP_NUM_THREADS": "2", "OMP_PROC_BIND": "false",
           **({} if version == "portable" else {"LAPIS_GEMM_ISA": version})}
    run([program, tmp_path], env=env)
    for name, (dtype, x, w, bias, y0, res, activation, init, residual) in cases.items():
        shape = (x.shape[0], w.shape[0])
        linear = np.fromfile(tmp_path / f"{name}.linear", dtype=dtype).reshape(shape)
        product = np.fromfile(tmp_path / f"{name}.matmul", dtype=dtype).reshape(shape)
        tolerance = TOLERANCE[dtype]
        error = relative_error(linear, expected(x, w, bias, y0, res, activation, init,
                                                residual))
        assert error <= tolerance, f"{version} linear {name} {init} residual {residual}: {error:.3g}"
        error = relative_error(product, x.astype(np.float64) @ w.T.astype(np.float64))
        assert error <= tolerance, f"{version} matmul {name}: {error:.3g}"


@pytest.mark.parametrize("version", [*available_isas(), "portable"])
def test_bf16_kernel_matches_numpy_on_rounded_operands(tmp_path, gemm_host_check, version):
    """--precision bf16 kernels (weight in bfloat16, the input rounded as it is packed, float
    sums): AMX tiles where the CPU has AMX-BF16 (the default there), vdpbf16ps where it has
    AVX512_BF16 (LAPIS_GEMM_ISA=avx512_bf16), the float FMA kernel on widened operands
    (AVX-512F, AVX2, baseline) and the portable loops, against NumPy in float64 on the operands rounded to bfloat16: only the order of the sums differs, so max error <= 1e-5 * max |numpy|, every edge of the
    tiles and of the pairs along K (odd K, K over a block)."""
    cases = bf16_kernel_cases(tmp_path)
    program = gemm_host_check["portable" if version == "portable" else "host"]
    env = {"OMP_NUM_THREADS": "2", "OMP_PROC_BIND": "false",
           **({} if version == "portable" else {"LAPIS_GEMM_ISA": version})}
    run([program, tmp_path], env=env)
    for name, (x, w, bias, y0, res, activation, init, residual) in cases.items():
        shape = (x.shape[0], w.shape[0])
        linear = np.fromfile(tmp_path / f"{name}.linear", dtype="float32").reshape(shape)
        product = np.fromfile(tmp_path / f"{name}.matmul", dtype="float32").reshape(shape)
        error = relative_error(linear, expected(x, w, bias, y0, res, activation, init,
                                                residual))
        assert error <= 1e-5, f"{version} bf16 linear {name}: {error:.3g}"
        error = relative_error(product, x.astype(np.float64) @ w.T.astype(np.float64))
        assert error <= 1e-5, f"{version} bf16 matmul {name}: {error:.3g}"


def test_isa_choice_can_be_forced(gemm_host_check, tmp_path):
    """LAPIS_GEMM_ISA lowers the instruction set (what the test above relies on)."""
    program = gemm_host_check["host"]
    for isa in available_isas()[:2]:
        out = run([program, "--time", "8", "8", "8", "1"], env={"LAPIS_GEMM_ISA": isa,
                                                                 "OMP_PROC_BIND": "false"})
        assert f"isa={available_isas().index(isa)}" in out.stdout, out.stdout

# (batch, M, K, N); batch None: a plain 2-d product (linalg.matmul), else linalg.batch_matmul.
SIZES = {"float32": [(None, 1, 1, 1), (None, 7, 13, 5), (None, 65, 129, 33),
                     (None, 512, 512, 512)],
         "float64": [(None, 7, 13, 5), (None, 65, 129, 33), (None, 300, 270, 257)],
         "batched": [(3, 65, 300, 33)]}   # static extents: dynamic ones need a dynamic reshape
TOLERANCE = {"float32": 1e-5, "float64": 1e-12}


def cases(kind: str) -> dict[str, list[np.ndarray]]:
    rng = np.random.default_rng(0)
    dtype = "float32" if kind == "batched" else kind
    found = {}
    for batch, m, k, n in SIZES[kind]:
        lead = () if batch is None else (batch,)
        found["x".join(map(str, (*lead, m, k, n)))] = [
            rng.standard_normal((*lead, m, k)).astype(dtype),
            rng.standard_normal((*lead, k, n)).astype(dtype)]
    return found


@pytest.fixture(scope="module", params=["float32", "float64", "batched"])
def package(request, tmp_path_factory):
    kind = request.param
    dtype = "float32" if kind == "batched" else kind
    root = tmp_path_factory.mktemp(f"gemm_{kind}")
    shapes = ("3x65x300", "3x300x33") if kind == "batched" else ("MxK", "KxN")
    package, _ = export(root, "gemm", *(f"{shape}:{dtype}" for shape in shapes))
    return root, package, kind


def check(results: dict, inputs: dict, dtype: str) -> None:
    for case, (a, b) in inputs.items():
        (result,) = results[case]
        reference = a.astype(np.float64) @ b.astype(np.float64)
        assert result.shape == reference.shape and result.dtype == np.dtype(dtype), case
        error = relative_error(result, reference)
        assert error <= TOLERANCE[dtype], f"gemm {dtype} {case}: relative error {error:.3g}"


@pytest.mark.parametrize("version", ["host", "portable"])
def test_gemm_matches_numpy(package, version):
    root, package, kind = package
    library = build(root, package, "-DLAPIS_GEMM_PORTABLE" if version == "portable" else "")
    inputs = cases(kind)
    check(run_cases(root, package, library, inputs), inputs,
          "float32" if kind == "batched" else kind)


def mlp(activations, dtype) -> torch.nn.Module:
    names = {"silu": torch.nn.SiLU, "gelu": torch.nn.GELU, "tanh": torch.nn.Tanh,
             "relu": torch.nn.ReLU, "sigmoid": torch.nn.Sigmoid}
    torch.manual_seed(0)
    layers = [torch.nn.Linear(16, 96), names[activations[0]]()]
    for name in activations[1:]:
        layers += [torch.nn.Linear(96, 96), names[name]()]
    layers.append(torch.nn.Linear(96, 1))
    return torch.nn.Sequential(*layers).to(dtype).eval()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_mlp_linear_layers_verify(tmp_path, dtype):
    """The Linear + activation layers are one lapis::linear_chain call, a layer each on its
    packed weight (the activation folded in, no 1x1 convolution left, the 96 -> 1 head as dot
    products), and --verify agrees with PyTorch (float32 1e-5, float64 1e-12 relative)."""
    model = mlp(["silu", "gelu", "tanh", "relu", "sigmoid"], dtype)
    example = torch.randn(37, 16, dtype=dtype)
    path = tmp_path / "mlp.pt2"
    torch.export.save(torch.export.export(model, (example,)), path)
    package = tmp_path / "mlp"
    result = run([sys.executable, "-m", "cli", path, "--out", package, "--verify"], cwd=REPO)
    assert "PASS" in result.stdout, result.stdout
    source = (package / "src" / "mlp.cpp").read_text()
    assert source.count("lapis::linear_chain<execution_space>(") == 1, source
    assert source.count("lapis::chain_layer(") == 6, source
    assert "lapis::linear_packed<" not in source and "conv2d_nchw" not in source
    for name in ("silu", "gelu", "tanh", "relu", "sigmoid", "none"):
        assert f"lapis::Activation::{name})" in source


@pytest.mark.parametrize("rows,version", [(1, "host"), (7, "host"), (300, "host"),
                                          (300, "portable")])
def test_mlp_chain_row_blocks(tmp_path, rows, version):
    """The chain at batches that split into row blocks unevenly (1, 7 and 300 rows; float32,
    SiLU and GELU layers, the narrow head), and the portable layer-at-a-time version, against
    PyTorch: max error <= 1e-5 * max |PyTorch|."""
    model = mlp(["silu", "gelu"], torch.float32)
    x = np.random.default_rng(rows).standard_normal((rows, 16)).astype("float32")
    path = tmp_path / "mlp.pt2"
    torch.export.save(torch.export.export(model, (torch.from_numpy(x),)), path)
    package = tmp_path / "mlp"
    run([sys.executable, "-m", "cli", path, "--out", package], cwd=REPO)
    assert "lapis::linear_chain<execution_space>(" in (package / "src" / "mlp.cpp").read_text()
    library = build(tmp_path, package, "-DLAPIS_GEMM_PORTABLE" if version == "portable" else "")
    (result,) = run_cases(tmp_path, package, library, {"x": [x]})["x"]
    with torch.no_grad():
        reference = model(torch.from_numpy(x)).numpy()
    error = relative_error(result, reference)
    assert error <= TOLERANCE["float32"], f"{version} {rows} rows: {error:.3g}"


def test_static_extents_and_verify(tmp_path):
    # Static extents (the Views' extents known at compile time) and --verify's own comparison.
    package, stdout = export(tmp_path, "gemm", "65x129", "129x33", options=("--verify",))
    assert "PASS" in stdout, stdout
    inputs = {"65x129x33": cases("float32")["65x129x33"]}   # the same as the dynamic one's
    check(run_cases(tmp_path, package, build(tmp_path, package), inputs), inputs, "float32")


SLICED = '''
def sliced(A, B):
    return A[1:, 2:] @ B[:, 3:]
'''


def test_strided_operands_and_verify(tmp_path):
    # Slices are Views with row strides of their own: the host tiles read them in place.
    source = tmp_path / "sliced.py"
    source.write_text(SLICED)
    package = tmp_path / "sliced"
    result = run([sys.executable, "-m", "cli", f"{source}:sliced", "--input-shape", "40x70",
                  "--input-shape", "68x41", "--out", package, "--verify"], cwd=REPO)
    assert "PASS" in result.stdout, result.stdout
    assert "lapis::matmul<execution_space>(" in (package / "src" / "sliced.cpp").read_text()
