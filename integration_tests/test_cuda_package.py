"""The CUDA backend without a GPU: what CI can check of a `--backend cuda` package.

1. The emission: CUDA spaces, every kernel a KOKKOS_LAMBDA with nothing host-only in it,
   flat launch ranges, folded padding, the C API's device copies made once.
2. The numbers: the same generated source, with its execution and memory spaces pointed at the
   host's Kokkos (the one textual change), built and run through sample_app (forward and
   forward_graph, C++ and C API) against PyTorch. That runs everything in the package but
   the GPU-only kernel paths (the convolution tiles of conv_tiles.hpp and conv_tf32.hpp),
   which are checked on the GPU by benchmarks/gpu.py and benchmarks/conv_bench.
3. A residual add + ReLU after a convolution goes into the convolution's call (emission and
   numbers, as above, on a model of two ResNet basic blocks).
4. The tensor-core tiles' weights: which convolutions get a split copy, made in initialize(),
   and lapis::split_tf32_weight itself, run on the host and compared bit for bit with its
   statement in NumPy (the tiles that read it run on the GPU only: benchmarks/conv_bench).
"""
from __future__ import annotations

import re
import shutil

import numpy as np
import pytest

from exporter import tuned_ops
from exporter.verify import PRECISION_TOLERANCES

from .compare import relative_error
from .conftest import REPO, run

TOLERANCE = 1e-4
HOST_ONLY = re.compile(r"\bstd::|\bthrow\b|\bnew\b|\bmalloc\b|\bprintf\b|\bdeep_copy\b")


def kernel_bodies(source: str) -> list[str]:
    """The text of every KOKKOS_LAMBDA body in `source` (brace-matched)."""
    bodies = []
    for match in re.finditer(r"KOKKOS_LAMBDA\([^)]*\)\s*\{", source):
        depth, start = 1, match.end()
        index = start
        while depth:
            depth += {"{": 1, "}": -1}.get(source[index], 0)
            index += 1
        bodies.append(source[start:index - 1])
    return bodies


@pytest.fixture(scope="module")
def cuda_package(workspace):
    return workspace.package("small_cnn", "cuda")


def test_cuda_emission(cuda_package):
    header = (cuda_package / "include" / "small_cnn.hpp").read_text()
    source = (cuda_package / "src" / "small_cnn.cpp").read_text()
    assert "using execution_space = Kokkos::Cuda;" in header
    assert "using memory_space = Kokkos::CudaSpace;" in header
    assert "void forward_graph(" in header
    forward = source[source.index("void forward("):source.index("void forward_graph(")]
    launches = re.findall(r"Kokkos::parallel_for\([^;]*?(KOKKOS_LAMBDA|\[)", forward)
    assert launches and set(launches) == {"KOKKOS_LAMBDA"}   # no host-only lambdas
    bodies = kernel_bodies(forward)
    assert len(bodies) == len(launches)
    for body in bodies:
        assert not HOST_ONLY.search(body), body
    assert "mdrange<" not in forward                          # flat ranges on GPUs
    # conv1 reads around the unpadded input (stride 2, padding 1), bias and ReLU folded in.
    assert re.search(r"conv2d_nchw<execution_space>\([^;]*input0[^;]*"
                     r"ConvGeometry\{2, 2, 1, 1, 1, 1\}, lapis::ConvInit::bias, \w+, true\)",
                     forward)
    # The C API copies into device buffers made in initialize() and replays a graph.
    assert "fresh->c_api_input0 = buffer<float****>" in source
    assert "small_cnn::forward_graph(small_cnn::state->c_api_input0" in source


@pytest.fixture(scope="module")
def cuda_residual_package(workspace):
    return workspace.package("residual_net", "cuda")


def retarget_to_host(package, out, name="small_cnn"):
    """A copy of the CUDA package whose generated code runs on the host's Kokkos."""
    shutil.copytree(package, out)
    header = out / "include" / f"{name}.hpp"
    text = header.read_text()
    text = text.replace("using execution_space = Kokkos::Cuda;",
                        "using execution_space = Kokkos::DefaultHostExecutionSpace;")
    text = text.replace("using memory_space = Kokkos::CudaSpace;",
                        "using memory_space = Kokkos::HostSpace;")
    header.write_text(text)
    cmake = out / "CMakeLists.txt"   # the backend check: the host Kokkos has no CUDA
    cmake.write_text(re.sub(rf"set\(_{name}_spellings [^)]*\)",
                            f"set(_{name}_spellings SERIAL OPENMP)", cmake.read_text()))
    return out


@pytest.mark.parametrize("api,graph", [("cpp", False), ("cpp", True), ("c", False)])
def test_cuda_source_on_the_host_matches_pytorch(workspace, cuda_package, api, graph):
    package = workspace.root / "pkg_small_cnn_cuda_on_host"
    if not package.exists():
        retarget_to_host(cuda_package, package)
    app = workspace.sample_app(package, "small_cnn")
    _, example, reference = workspace.model_file("small_cnn", "export")
    tag = f"cuda_on_host_{api}_{graph}"
    input_file, output_file = (workspace.root / f"{tag}_{end}.bin" for end in ("in", "out"))
    example.astype(np.float32).tofile(input_file)
    run([app, "--input", input_file, "--output", output_file, "--api", api, "--steps", 3,
         *(["--graph"] if graph else [])])
    ours = np.fromfile(output_file, dtype=np.float32).reshape(reference.shape)
    assert relative_error(ours, reference) <= TOLERANCE


def test_residual_add_folds_into_the_convolution(cuda_residual_package):
    source = (cuda_residual_package / "src" / "residual_net.cpp").read_text()
    forward = source[source.index("void forward("):source.index("void forward_graph(")]
    # block1.conv2 takes block1's input as its residual and applies the ReLU after the add; the
    # add's own kernel is gone. block2's add feeds the average pool and stays where it is.
    call = re.search(r"// block1\.conv2/convolution: tuned convolution \(([^)]*)\)\n"
                     r"\s*lapis::conv2d_nchw<execution_space>\(([^;]*)\);", forward)
    assert call and "residual add" in call.group(1) and "relu" in call.group(1)
    assert re.search(r"ConvInit::bias, \w+, \w+, true$", call.group(2))
    assert "residual_net::block1_relu" not in forward  # no separate add kernel
    # Six convolutions; the linear layer is a lapis::linear call on CUDA.
    assert forward.count("lapis::conv2d_nchw<") == 6 and forward.count("lapis::linear<") == 1


@pytest.mark.parametrize("graph", [False, True])
def test_cuda_residual_source_on_the_host_matches_pytorch(workspace, cuda_residual_package,
                                                          graph):
    package = workspace.root / "pkg_residual_net_cuda_on_host"
    if not package.exists():
        retarget_to_host(cuda_residual_package, package, "residual_net")
    app = workspace.sample_app(package, "residual_net")
    _, example, reference = workspace.model_file("residual_net", "export")
    tag = f"residual_cuda_on_host_{graph}"
    input_file, output_file = (workspace.root / f"{tag}_{end}.bin" for end in ("in", "out"))
    example.astype(np.float32).tofile(input_file)
    run([app, "--input", input_file, "--output", output_file, "--steps", 3,
         *(["--graph"] if graph else [])])
    ours = np.fromfile(output_file, dtype=np.float32).reshape(reference.shape)
    assert relative_error(ours, reference) <= TOLERANCE


def test_split_weights_for_the_tensor_core_tiles(cuda_residual_package):
    """3x3 convolutions with a multiple of 8 input channels get a split copy of their weights,
    made in initialize() and passed next to the packed one; conv1 (3 channels) and the 1x1
    downsample keep only the packed weights (the linear layer reads its own, unpacked)."""
    source = (cuda_residual_package / "src" / "residual_net.cpp").read_text()
    forward = source[source.index("void forward("):source.index("void forward_graph(")]
    calls = re.findall(r"lapis::conv2d_nchw<execution_space>\(exec, \"residual_net::(\w+)\", \w+, "
                       r"(\w+), (\w+),", forward)
    split = {re.sub(r"_\d+$", "", label) for label, weight, after in calls
             if after == f"{weight}_tf32"}
    assert split == {f"block{b}_conv{c}_convolution" for b in (1, 2) for c in (1, 2)}, calls
    for label, weight, after in calls:
        if after == f"{weight}_tf32":
            assert re.search(rf"fresh->{weight}_tf32 = buffer<float\*\*\*\*\*>\(.*\);\n\s*"
                             rf"lapis::split_tf32_weight<execution_space>\(execution_space\(\), "
                             rf"\"residual_net::"
                             rf"{weight}_tf32\", fresh->{weight}, fresh->{weight}_tf32\);",
                             source), weight
            # load_weights() makes the split again from the new packed weights.
            assert (f'lapis::split_tf32_weight<execution_space>(execution_space(), '
                    f'"residual_net::{weight}_tf32", state->{weight}, state->{weight}_tf32);'
                    in source), weight
    assert source.count("lapis::split_tf32_weight<") == 8   # initialize() and load_weights()


def round_tf32(x: np.ndarray) -> np.ndarray:
    """To nearest tf32, ties away from zero (PTX cvt.rna); inf and NaN unchanged."""
    bits = x.view(np.uint32)
    rounded = (bits + np.uint32(0x1000)) & np.uint32(0xFFFFE000)
    return np.where((bits & 0x7F800000) == 0x7F800000, bits, rounded).view(np.float32)


def fragments(values: np.ndarray) -> np.ndarray:
    """[oc][ic][kh][kw] values (oc a multiple of 16) in the mma fragments' order:
    [oc / 16][kh][kw][ic / 8][lane][e], lane = (oc % 8) * 4 + ic % 4, e = oc % 16 / 8 +
    ic % 8 / 4 * 2 (conv_tf32.hpp, split_tf32_weight)."""
    channels_out, channels_in, kernel_h, kernel_w = values.shape
    lane, e = np.arange(32)[:, None], np.arange(4)[None, :]
    row, k = lane // 4 + 8 * (e % 2), lane % 4 + 4 * (e // 2)   # of a 16 x 8 fragment
    out = np.zeros((channels_out // 16, kernel_h, kernel_w, channels_in // 8, 32, 4), np.float32)
    for f in range(channels_out // 16):
        for g in range(channels_in // 8):
            out[f, :, :, g] = values[f * 16 + row, g * 8 + k].transpose(2, 3, 0, 1)
    return out


def split_reference(weight: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """split_tf32_weight's output for the [oc][ic][kh][kw] weight, and x, big, small in the
    fragments' order."""
    channels_out = weight.shape[0]
    padded = np.zeros(((channels_out + 15) // 16 * 16, *weight.shape[1:]), np.float32)
    padded[:channels_out] = weight
    big = round_tf32(padded)
    small = round_tf32((padded - big).astype(np.float32))
    x, big, small = fragments(padded), fragments(big), fragments(small)
    split = np.stack([big, small], axis=-3).reshape(*x.shape[:4], 256)
    return split, x, big, small


def test_split_tf32_weight_matches_its_statement(tmp_path, kokkos_root):
    build = tmp_path / "build"
    run(["cmake", "-S", REPO / "integration_tests" / "split_tf32_check", "-B", build,
         "-DCMAKE_BUILD_TYPE=Release", f"-DKokkos_ROOT={kokkos_root}"])
    run(["cmake", "--build", build, "-j", "2"])
    rng = np.random.default_rng(0)
    weight = rng.standard_normal((20, 16, 3, 3)).astype(np.float32)   # 20: a partial fragment
    # Ties of the rounding (the 13 dropped bits exactly half), a denormal, inf, NaN, zero.
    flat = weight.reshape(-1)
    flat[:4] = (np.array([0x3F801000, 0xBF801000, 0x3F803000, 0x00000FFF], np.uint32)
                .view(np.float32))
    flat[4:8] = [np.inf, -np.inf, np.nan, 0.0]
    packed = tuned_ops.pack_conv_weight(weight)
    packed.tofile(tmp_path / "packed.bin")
    blocks, channels_in, kernel_h, kernel_w, _ = packed.shape
    run([build / "split_tf32_check", tmp_path / "packed.bin", blocks, channels_in, kernel_h,
         kernel_w, tmp_path / "split.bin"])
    ours = np.fromfile(tmp_path / "split.bin", np.float32)
    expected, x, big, small = split_reference(weight)
    assert ours.shape == (expected.size,)
    assert np.array_equal(ours, expected.reshape(-1), equal_nan=True)
    # What the tiles rely on: big is a tf32 value, and big + small is x to 2^-21 of x (normal
    # numbers; a denormal keeps what tf32's 10 bits hold of it).
    finite = np.isfinite(x)
    normal = finite & (np.abs(x) >= np.finfo(np.float32).tiny)
    assert not (big[finite].view(np.uint32) & 0x1FFF).any()
    assert np.all(np.abs(x - big - small)[normal] <= 2.0 ** -21 * np.abs(x[normal]))


# ---- linear layers on the tensor-core matrix tiles (lowering/linear.py, gemm_tf32.hpp) -------
@pytest.fixture(scope="module")
def cuda_mlp_package(workspace):
    return workspace.package("surrogate_mlp", "cuda")


def test_linear_layers_take_their_activations(cuda_mlp_package):
    """On CUDA each linear layer is one lapis::linear call with its bias and the activation
    after it (SiLU, GELU, tanh, ReLU) in the epilogue: no elementwise kernel is left."""
    source = (cuda_mlp_package / "src" / "surrogate_mlp.cpp").read_text()
    forward = source[source.index("void forward("):source.index("void forward_graph(")]
    calls = re.findall(r"lapis::linear<execution_space>\(exec, \"surrogate_mlp::(\w+)\", \w+, (\w+), "
                       r"\w+, \w+, lapis::ConvInit::bias, lapis::Activation::(\w+)\);", forward)
    assert [(weight, activation) for _, weight, activation in calls] == [
        ("layers_0_weight", "silu"), ("layers_1_weight", "gelu"), ("layers_2_weight", "tanh"),
        ("layers_3_weight", "relu"), ("head_weight", "none")], calls
    # Left besides them: the copy of the head's output into the caller's View.
    assert forward.count("parallel_for") == 1 and '"surrogate_mlp::output"' in forward
    assert "conv2d_nchw" not in forward
    # The weights stay [out][in] (no convolution packing, no split copy).
    assert re.search(r"buffer<float\*\*\*\*> layers_0_weight;\s*// \"layers\.0\.weight\" "
                     r"\[72, 16, 1, 1\]\n", source)


@pytest.mark.parametrize("graph", [False, True])
def test_cuda_linear_source_on_the_host_matches_pytorch(workspace, cuda_mlp_package, graph):
    package = workspace.root / "pkg_surrogate_mlp_cuda_on_host"
    if not package.exists():
        retarget_to_host(cuda_mlp_package, package, "surrogate_mlp")
    app = workspace.sample_app(package, "surrogate_mlp")
    _, example, reference = workspace.model_file("surrogate_mlp", "export")
    tag = f"mlp_cuda_on_host_{graph}"
    input_file, output_file = (workspace.root / f"{tag}_{end}.bin" for end in ("in", "out"))
    example.astype(np.float32).tofile(input_file)
    run([app, "--input", input_file, "--output", output_file, "--steps", 3,
         *(["--graph"] if graph else [])])
    ours = np.fromfile(output_file, dtype=np.float32).reshape(reference.shape)
    assert relative_error(ours, reference) <= TOLERANCE


def test_precision_tf32_is_stated_and_reaches_every_kernel(workspace):
    package = workspace.package("residual_net", "cuda", options=("--precision", "tf32"))
    source = (package / "src" / "residual_net.cpp").read_text()
    header = (package / "include" / "residual_net.hpp").read_text()
    assert '"precision": "tf32"' in (package / "lapis_manifest.json").read_text()
    assert "(float32): tf32, TF32 tensor-core products" in header
    calls = re.findall(r"lapis::(conv2d_nchw|linear)<([^>]*)>\(", source)
    assert calls and all(args == "execution_space, lapis::Precision::tf32"
                         for _, args in calls), calls


def error_on_host(workspace, cuda, model: str, precision: str) -> float:
    """The CUDA package `cuda` of `model`, retargeted to the host and run by sample_app on the
    seeded input: its relative error against PyTorch's fp32 output."""
    package = workspace.root / f"pkg_{model}_cuda_{precision}_on_host"
    if not package.exists():
        retarget_to_host(cuda, package, model)
    app = workspace.sample_app(package, model)
    _, example, reference = workspace.model_file(model, "export")
    input_file, output_file = (workspace.root / f"{model}_{precision}_on_host_{end}.bin"
                               for end in ("in", "out"))
    example.astype(np.float32).tofile(input_file)
    run([app, "--input", input_file, "--output", output_file, "--steps", 1])
    ours = np.fromfile(output_file, dtype=np.float32).reshape(reference.shape)
    return relative_error(ours, reference)


def test_tf32_chain_of_linear_layers(workspace):
    """--precision tf32: in a chain of linear layers each hidden output is stored rounded to
    tf32, and the next layer, whose weight was rounded at export, reads its operands as they
    are (on Hopper the wgmma tiles without a rounding pass), but for a regression head.
    Retargeted to the host, where the
    loops round the same outputs, the package is PyTorch's fp32 output within tf32's
    tolerance, and not within fp32's (the rounding happened)."""
    cuda = workspace.package("surrogate_mlp", "cuda", options=("--precision", "tf32"))
    source = (cuda / "src" / "surrogate_mlp.cpp").read_text()
    forward = source[source.index("void forward("):source.index("void forward_graph(")]
    calls = re.findall(r'lapis::linear<execution_space, lapis::Precision::tf32>\(exec, '
                       r'"surrogate_mlp::\w+", (\w+), [^;]*?lapis::Activation::\w+'
                       r'(?:, lapis::Tf32Rounded::(\w+))?\);', forward)
    # The head (one output column, on CUDA cores) reads float32 products of layers.3.
    assert [rounded for _, rounded in calls] == [
        "output", "inputs_and_output", "inputs_and_output", "inputs", ""], calls
    # The weights of the layers that read a rounded input, rounded at export; no others.
    assert source.count("rounded to tf32 (lapis::linear reads it as it is)") == 3
    assert not re.search(r'(layers_0|head)_weight;[^\n]*rounded to tf32', source)
    error = error_on_host(workspace, cuda, "surrogate_mlp", "tf32")
    assert 1e-5 <= error <= PRECISION_TOLERANCES["tf32"]


def test_bf16_linear_layers_on_cuda(workspace):
    """--precision bf16 on CUDA: the linear layers of 16 output columns or more read bfloat16
    operands (weights stored so at export; the model's input rounded into a bfloat16 buffer
    first; the hidden layers' buffers, which only linear layers touch, in bfloat16); the
    regression head reads its input in bfloat16 but keeps a float32 weight and products.
    Retargeted to the host (lapis::linear's loop on the same operands), the package is
    PyTorch's fp32 output within bf16's tolerance, and not within 1e-4 (the rounding
    happened)."""
    cuda = workspace.package("surrogate_mlp", "cuda", options=("--precision", "bf16"))
    source = (cuda / "src" / "surrogate_mlp.cpp").read_text()
    forward = source[source.index("void forward("):source.index("void forward_graph(")]
    calls = re.findall(r'(lapis::linear<execution_space(?:, lapis::Precision::bf16)?>|'
                       r'lapis::round_to_bfloat16)\(exec, "surrogate_mlp::(\w+)"', forward)
    assert [call for call, _ in calls] == [
        "lapis::round_to_bfloat16", *["lapis::linear<execution_space, lapis::Precision::bf16>"] * 5
    ], calls
    assert calls[0][1] == "layers_0_input_bf16", calls
    weights = re.findall(r"buffer<(\S+)> (\w+_weight);", source)
    assert weights == [("lapis::bfloat16****", f"layers_{i}_weight") for i in range(4)] + \
        [("float****", "head_weight")], weights
    header = (cuda / "include" / "surrogate_mlp.hpp").read_text()
    assert "bf16, bfloat16 products of linear layers (their weights, and the activations" in \
        header and "other matrix products and attention in tf32" in header
    # the four hidden outputs, which only linear layers read, in bfloat16
    assert forward.count("// y stored in bfloat16: only linear layers read it") == 4
    assert "linear layer on the CUDA cores, a warp a row, x in bfloat16" in forward
    error = error_on_host(workspace, cuda, "surrogate_mlp", "bf16")
    assert 1e-4 <= error <= PRECISION_TOLERANCES["bf16"]


def test_bf16_transformer_on_cuda(workspace):
    """--precision bf16 on CUDA in a transformer encoder: every linear layer reads bfloat16
    operands -- the feed-forward pair through a bfloat16 buffer, the others' inputs (LayerNorm's
    output, the attention's) rounded into one first -- and the fused attention, which has no
    bfloat16 products, takes tf32 ones. Retargeted to the host, PyTorch's fp32 output within
    bf16's tolerance."""
    cuda = workspace.package("transformer", "cuda", options=("--precision", "bf16"))
    source = (cuda / "src" / "transformer.cpp").read_text()
    forward = source[source.index("void forward("):source.index("void forward_graph(")]
    attention = re.findall(r"lapis::attention<([^>]*)>\(", forward)
    assert attention and all(a.endswith("lapis::Precision::tf32") for a in attention), attention
    layers = len(re.findall(r"lapis::linear<execution_space, lapis::Precision::bf16>\(", forward))
    rounded = len(re.findall(r"lapis::round_to_bfloat16\(", forward))
    # per block: in_proj, out_proj, linear1 read a rounded copy; linear2 linear1's bfloat16 output
    assert layers == 4 * len(attention) and rounded == 3 * len(attention), (layers, rounded)
    assert "lapis::linear<execution_space>(" not in forward
    error = error_on_host(workspace, cuda, "transformer", "bf16")
    assert 1e-4 <= error <= PRECISION_TOLERANCES["bf16"]


def test_bf16_zoo_models_on_cuda(tmp_path, kokkos_root):
    """--precision bf16 on CUDA beyond chains of layers: a graph network and a per-cell solve
    exported with dynamic sizes (the bfloat16 copy of an input takes its extents at run time,
    0 included) and a DeepONet (two inputs, two MLPs), retargeted to the host and run on every
    input set of the zoo: PyTorch's fp32 output within bf16's tolerance."""
    import sys
    from benchmarks.conformance import batch_build

    from . import zoo
    from .test_zoo import Case, run_cases
    names = ("gnn_dynamic", "cell_solve", "deeponet")
    cases, packages = {}, {}
    for name in names:
        entry = zoo.by_name(name)
        model = tmp_path / f"{name}.pt2"
        zoo.save(entry, "pt2", model)
        run([sys.executable, "-m", "cli", model, "--backend", "cuda", "--precision", "bf16",
             "--out", tmp_path / f"cuda_{name}", "-q"], cwd=REPO)
        source = (tmp_path / f"cuda_{name}" / "src" / f"{name}.cpp").read_text()
        assert "lapis::Precision::bf16>(" in source and "lapis::round_to_bfloat16(" in source
        packages[name] = retarget_to_host(tmp_path / f"cuda_{name}", tmp_path / f"pkg_{name}",
                                          name)
        cases[name] = Case(entry, "pt2", name, model_file=model, package=packages[name])
    libraries = batch_build.build(packages, tmp_path / "build", str(kokkos_root), jobs=2)
    for name, result in libraries.items():
        assert result.library is not None, f"{name}: {result.error}"
        run_cases([cases[name]], result.library, tmp_path)
    for name, case in cases.items():
        assert not case.error, f"{name}: {case.error}"
        assert len(case.errors) == len(zoo.by_name(name).runs()) + 1
        assert all(e <= PRECISION_TOLERANCES["bf16"] for e in case.errors.values()), \
            (name, case.errors)
        assert max(case.errors.values()) >= 1e-4, (name, case.errors)   # rounded


def test_precision_tf32_reaches_the_attention(workspace):
    """The fused attention takes the precision after its head sizes (attention.hpp runs its
    tensor-core products in tf32 then); at fp32 the argument is left out."""
    for options, suffix in (((), ""), (("--precision", "tf32"), ", lapis::Precision::tf32")):
        package = workspace.package("transformer", "cuda", options=options)
        source = (package / "src" / "transformer.cpp").read_text()
        calls = re.findall(r"lapis::attention<([^>]*)>\(", source)
        assert calls and all(args == f"16, 16, execution_space{suffix}" for args in calls), calls


ACTIVATION_CODES = {"none": 0, "relu": 1, "silu": 2, "gelu": 3, "tanh": 4}
INIT_CODES = {"accumulate": 0, "bias": 1, "zero": 2}


def round_to_tf32(x: np.ndarray) -> np.ndarray:
    """Half an ulp of tf32 added, then truncated (the tiles' rounding of both operands)."""
    bits = x.astype(np.float32).view(np.uint32)
    return ((bits + np.uint32(0x1000)) & np.uint32(0xFFFFE000)).view(np.float32)


def round_to_bf16(x: np.ndarray) -> np.ndarray:
    """float32 -> the nearest bfloat16 (ties to even), as float32: lapis::to_bfloat16."""
    bits = x.astype(np.float32).view(np.uint32).astype(np.uint64)
    rounded = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16) << 16
    return rounded.astype(np.uint32).view(np.float32)


def truncate_to_tf32(x: np.ndarray) -> np.ndarray:
    """The top 19 bits (what the tensor cores take of a float32 they read as tf32)."""
    return (x.astype(np.float32).view(np.uint32) & np.uint32(0xFFFFE000)).view(np.float32)


def activation_of(name: str, v: np.ndarray) -> np.ndarray:
    import scipy.special
    return {"none": lambda: v, "relu": lambda: np.maximum(v, 0.0),
            "silu": lambda: v / (1.0 + np.exp(-v)),
            "gelu": lambda: 0.5 * v * (1.0 + scipy.special.erf(v / np.sqrt(2.0))),
            "tanh": lambda: np.tanh(v)}[name]()


@pytest.fixture(scope="module")
def gemm_tf32_check(tmp_path_factory, kokkos_root):
    build = tmp_path_factory.mktemp("gemm_tf32_check")
    run(["cmake", "-S", REPO / "integration_tests" / "gemm_tf32_check", "-B", build,
         "-DCMAKE_BUILD_TYPE=Release", f"-DKokkos_ROOT={kokkos_root}"])
    run(["cmake", "--build", build, "-j", "2"])
    return build / "gemm_tf32_check"


@pytest.mark.parametrize("kind,shape,precision,m,n,k,activation,init", [
    ("linear", "small", "fp32", 100, 70, 52, "silu", "bias"),   # partial tiles on every side
    ("linear", "large", "fp32", 130, 140, 36, "gelu", "bias"),
    ("linear", "large", "tf32", 130, 140, 36, "tanh", "bias"),
    ("linear", "small", "tf32", 33, 20, 12, "relu", "zero"),
    ("matmul", "small", "fp32", 67, 36, 40, "none", "accumulate"),
    ("matmul", "large", "tf32", 129, 132, 20, "none", "zero"),
    ("linear", "narrow", "fp32", 260, 70, 100, "silu", "bias"),
    ("matmul", "narrow", "fp32", 129, 68, 52, "none", "accumulate"),
    ("linear", "deep", "fp32", 260, 140, 100, "silu", "bias"),  # k steps of 32, three deep
    ("linear", "deep", "tf32", 130, 136, 72, "none", "accumulate"),
    ("matmul", "deep", "fp32", 131, 132, 44, "none", "zero"),
    ("linear", "staged", "fp32", 200, 132, 40, "silu", "bias"),  # 16-byte output pieces
    ("linear", "staged", "tf32", 130, 70, 36, "gelu", "accumulate"),  # n % 4 != 0: scalar
    ("matmul", "staged", "fp32", 129, 256, 64, "none", "accumulate"),
    ("linear", "paired", "fp32", 130, 140, 52, "silu", "bias"),  # 16-byte fragment reads
    ("linear", "paired", "tf32", 129, 136, 36, "gelu", "accumulate"),
    ("linear", "paired_deep", "fp32", 200, 70, 100, "silu", "bias"),  # k 32, halves swapped
    ("linear", "paired_deep", "tf32", 131, 68, 64, "none", "zero"),
    ("residual", "paired", "fp32", 130, 140, 52, "none", "bias"),  # + C before the activation
    ("residual", "small", "tf32", 70, 36, 20, "relu", "bias"),
    ("residual", "staged", "fp32", 129, 70, 36, "none", "zero"),
    ("linear", "wgmma", "fp32", 200, 140, 100, "silu", "bias"),  # Hopper: swizzled staging
    ("linear", "wgmma", "tf32", 130, 132, 36, "gelu", "accumulate"),
    ("linear", "wgmma_wide", "fp32", 129, 260, 68, "none", "zero"),  # 128 x 256 blocks
    ("residual", "wgmma", "tf32", 131, 70, 40, "tanh", "bias"),  # n % 4 != 0: scalar stores
    ("linear", "wgmma_direct", "tf32", 200, 140, 100, "silu", "bias"),  # the ring, truncated
    ("residual", "wgmma_direct", "tf32", 131, 70, 40, "none", "accumulate"),
    ("linear", "wgmma_tma", "fp32", 200, 140, 100, "silu", "bias"),  # copy-engine boxes
    ("residual", "wgmma_tma", "tf32", 131, 70, 44, "gelu", "accumulate"),
    ("rows", "small", "fp32", 37, 1, 512, "none", "bias"),      # linear_rows, 16-byte loads
    ("rows", "small", "fp32", 20, 3, 30, "silu", "accumulate"),  # its scalar loads
    # --precision tf32 chains of linear layers: operands that hold tf32 values read as they
    # are; outputs stored rounded (every store path)
    ("linear", "wgmma_rounded", "tf32", 200, 140, 100, "silu", "bias"),
    ("residual", "wgmma_rounded", "tf32", 131, 70, 44, "gelu", "accumulate"),
    ("rounded", "wgmma", "tf32", 130, 132, 36, "gelu", "bias"),
    ("rounded", "small", "tf32", 70, 36, 20, "silu", "bias"),
    ("rounded", "staged", "tf32", 130, 70, 36, "relu", "accumulate"),
    ("rows_rounded", "small", "tf32", 37, 1, 512, "tanh", "bias"),
    # --precision bf16: bfloat16 operands on Hopper's ring (64 k a step), and the loop of
    # lapis::linear<..., bf16> elsewhere; outputs in float or, bf16_out, in bfloat16
    ("linear", "wgmma", "bf16", 200, 140, 136, "silu", "bias"),
    ("bf16_out", "wgmma", "bf16", 131, 132, 64, "gelu", "bias"),
    ("residual", "wgmma", "bf16", 131, 70, 40, "none", "accumulate"),  # n % 4 != 0
    ("bf16_out", "plain", "bf16", 37, 20, 24, "tanh", "accumulate"),
    ("residual", "plain", "bf16", 20, 36, 16, "relu", "bias"),
])
def test_gemm_tiles_match_their_statement(tmp_path, gemm_tf32_check, kind, shape, precision, m,
                                          n, k, activation, init):
    """The tensor-core matrix tiles, run thread by thread on the host with the mma emulated
    (their staging, fragment indexing, rounding and epilogue; every output written), and the
    few-column kernel linear_rows on the host's execution space: fp32
    within 1e-6 of float64; tf32 within 1e-5 of the float64 product of the operands rounded to
    tf32 (truncated, for the wgmma tiles that read the staged floats as they are), and so a few
    1e-4 off the unrounded one. Outputs stored rounded to tf32 (kinds `rounded`, `rows_rounded`)
    are tf32 values within 1e-3 of that product (or, linear_rows, the exact one) rounded."""
    rng = np.random.default_rng(m * n + k)
    a = rng.standard_normal((m, k)).astype(np.float32)
    b = rng.standard_normal((k, n) if kind == "matmul" else (n, k)).astype(np.float32)
    bias = rng.standard_normal(n).astype(np.float32)
    c = rng.standard_normal((m, n)).astype(np.float32)
    held = round_to_tf32 if shape == "wgmma_rounded" else (lambda x: x)  # tf32 values held
    for name, array in (("a", held(a)), ("b", held(b)), ("bias", bias), ("c", c)):
        array.tofile(tmp_path / f"{name}.bin")
    run([gemm_tf32_check, kind, shape, precision, m, n, k, ACTIVATION_CODES[activation],
         INIT_CODES[init], tmp_path])
    ours = np.fromfile(tmp_path / "out.bin", np.float32).reshape(m, n)
    assert not np.isnan(ours).any()
    product = b if kind == "matmul" else b.T
    start = {"bias": bias[None, :], "zero": 0.0, "accumulate": c}[init] + \
        (c.astype(np.float64) if kind == "residual" else 0.0)

    def reference(x, y):
        return activation_of(activation, x.astype(np.float64) @ y.astype(np.float64) + start)

    to_tf32 = truncate_to_tf32 if shape == "wgmma_direct" else round_to_tf32
    if precision == "bf16":   # the float64 product of the operands rounded to bfloat16
        exact = reference(a, product)
        rounded = reference(round_to_bf16(a), round_to_bf16(product))
        if kind == "bf16_out":   # stored in bfloat16: at most half an ulp of bfloat16 off
            assert np.array_equal(ours, round_to_bf16(ours))
            assert relative_error(ours, round_to_bf16(rounded)) <= 4e-3
        else:
            assert relative_error(ours, rounded) <= 1e-5
        assert relative_error(ours, exact) >= 1e-3   # the rounding did happen
        return
    exact, rounded = reference(a, product), reference(to_tf32(a), to_tf32(product))
    if kind.endswith("rounded"):   # stored rounded to tf32: tf32 values, at most an ulp off
        assert np.array_equal(ours, round_to_tf32(ours))
        assert relative_error(ours, round_to_tf32(exact if kind == "rows_rounded" else rounded)) \
            <= 1e-3
        assert relative_error(ours, exact) >= 1e-4
        return
    if precision == "fp32":
        assert relative_error(ours, exact) <= 1e-6
    else:
        assert relative_error(ours, rounded) <= 1e-5
        assert relative_error(ours, exact) >= 1e-4   # the rounding did happen
