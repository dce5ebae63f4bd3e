"""The CUDA backend without a GPU: what CI can check of a `--backend cuda` package.

1. The emission: CUDA spaces, every kernel a KOKKOS_LAMBDA with nothing host-only in it,
   flat launch ranges, folded padding, the C API's device copies made once.
2. The numbers: the same generated source, with its execution and memory spaces pointed at the
   host's Kokkos (the one textual change), built and run through sample_app (forward and
   forward_graph, C++ and C API) against PyTorch. That runs everything in the package but
   the GPU-only kernel paths of kernels.hpp (tiled convolutions), which are checked on the GPU
   by benchmarks/gpu.py and benchmarks/conv_bench.
3. A residual add + ReLU after a convolution goes into the convolution's call (emission and
   numbers, as above, on a model of two ResNet basic blocks).
"""
from __future__ import annotations

import re
import shutil

import numpy as np
import pytest

from .compare import relative_error
from .conftest import run

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
    assert forward.count("lapis::conv2d_nchw<") == 7


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
