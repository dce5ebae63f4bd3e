"""The package stage, its CMake project, sample_app and verify, proven on a hand-written package.

"scale2" (output0 = input0 * w + b; input0, w: [2, 3], b: [3]) is written here by hand following
the emitter's contract for include/NAME.hpp and src/NAME.cpp, so that these tests do not depend
on the emitter. Builds are shared through session fixtures.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from exporter import package, verify
from exporter.errors import ExportError, InternalError
from exporter.handoff import EmittedSource, LoadedModel, TensorSpec, Weight
from weights import blob

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "2", "OMP_PROC_BIND": "false"}

W = np.array([[1.5, -2.0, 0.25], [3.0, 0.5, -1.0]], dtype=np.float32)
B = np.array([0.125, -4.0, 10.0], dtype=np.float32)
X = np.array([[1.0, 2.0, 3.0], [-1.0, 0.5, 8.0]], dtype=np.float32)

HEADER = """\
// scale2: hand-written test fixture following the emitter's contract.
#pragma once
#include <Kokkos_Core.hpp>
#include <cstdint>
namespace scale2 {
using execution_space = @EXECUTION_SPACE@;
using memory_space = Kokkos::HostSpace;
inline constexpr int num_inputs = 1;
inline constexpr int num_outputs = 1;
using input0_view = Kokkos::View<const float**, Kokkos::LayoutRight, memory_space>;
inline constexpr int input0_rank = 2;
inline constexpr int64_t input0_extents[2] = {2, 3};
using output0_view = Kokkos::View<float**, Kokkos::LayoutRight, memory_space>;
inline constexpr int output0_rank = 2;
inline constexpr int64_t output0_extents[2] = {2, 3};
void initialize();
void finalize();
void forward(input0_view input0, output0_view output0);
void forward_graph(input0_view input0, output0_view output0);
}  // namespace scale2
extern "C" {
int scale2_initialize(void);
int scale2_finalize(void);
int scale2_forward_host(const float* input0, float* output0);
const char* scale2_last_error(void);
}
"""

SOURCE = """\
#include "scale2.hpp"
#include <memory>
#include <stdexcept>
#include <string>
#include "lapis/support.hpp"
#include "lapis/weight_blob.hpp"
#if defined(LAPIS_WEIGHTS_EMBEDDED)
extern "C" const unsigned char scale2_weight_blob[];
extern "C" const unsigned char scale2_weight_blob_end[];
#endif
namespace scale2 {
namespace {
struct State {
  Kokkos::View<float**, Kokkos::LayoutRight, memory_space> w{"scale2::w", 2, 3};
  Kokkos::View<float*, Kokkos::LayoutRight, memory_space> b{"scale2::b", 3};
};
State* state = nullptr;
}  // namespace
void initialize() {
  if (state) return;
  auto fresh = std::make_unique<State>();
  lapis::WeightBlob blob =
#if defined(LAPIS_WEIGHTS_EMBEDDED)
      lapis::WeightBlob::from_memory(scale2_weight_blob, scale2_weight_blob_end - scale2_weight_blob);
#else
      lapis::WeightBlob::from_file(lapis::weights_path("scale2_WEIGHTS", LAPIS_WEIGHTS_FILE));
#endif
  lapis::load_weight(blob, 0, "w", fresh->w);
  lapis::load_weight(blob, 1, "b", fresh->b);
  state = fresh.release();
}
void finalize() {
  delete state;
  state = nullptr;
}
void forward(input0_view input0, output0_view output0) {
  const auto w = state->w;
  const auto b = state->b;
  Kokkos::parallel_for("scale2::affine",
      Kokkos::MDRangePolicy<execution_space, Kokkos::Rank<2>>({0, 0}, {2, 3}),
      KOKKOS_LAMBDA(const int64_t i, const int64_t j) {
        output0(i, j) = input0(i, j) * w(i, j) + b(j);
      });
}
void forward_graph(input0_view input0, output0_view output0) { forward(input0, output0); }
}  // namespace scale2
namespace {
thread_local std::string last_error;
bool started_kokkos = false;
}  // namespace
extern "C" {
int scale2_initialize(void) {
  try {
    if (!Kokkos::is_initialized()) {
      Kokkos::initialize();
      started_kokkos = true;
    }
    scale2::initialize();
    return 0;
  } catch (const std::exception& e) {
    last_error = e.what();
    return 3;
  }
}
int scale2_finalize(void) {
  scale2::finalize();
  if (started_kokkos) Kokkos::finalize();
  started_kokkos = false;
  return 0;
}
int scale2_forward_host(const float* input0, float* output0) {
  if (!scale2::state) {
    last_error = "scale2_forward_host called before scale2_initialize";
    return 1;
  }
  using unmanaged = Kokkos::MemoryTraits<Kokkos::Unmanaged>;
  scale2::forward(Kokkos::View<const float**, Kokkos::LayoutRight, Kokkos::HostSpace, unmanaged>(
                      input0, 2, 3),
                  Kokkos::View<float**, Kokkos::LayoutRight, Kokkos::HostSpace, unmanaged>(
                      output0, 2, 3));
  Kokkos::fence();
  return 0;
}
const char* scale2_last_error(void) { return last_error.c_str(); }
}
"""

CONSUMER_CMAKE = """\
cmake_minimum_required(VERSION 3.16)
project(consumer LANGUAGES CXX)
find_package(scale2 REQUIRED)
add_executable(consumer main.cpp)
target_link_libraries(consumer PRIVATE scale2::scale2)
"""

CONSUMER_MAIN = """\
#include <scale2.hpp>
#include <cstdio>
int main(int argc, char** argv) {
  Kokkos::initialize(argc, argv);
  {
    scale2::initialize();
    scale2::input0_view::non_const_type x("x", 2, 3);
    scale2::output0_view y("y", 2, 3);
    Kokkos::parallel_for(Kokkos::RangePolicy<scale2::execution_space>(0, 6),
                         KOKKOS_LAMBDA(int k) { x.data()[k] = 0.5f * k - 1.0f; });
    scale2::forward(x, y);
    Kokkos::fence();
    for (int k = 0; k < 6; ++k) std::printf("%.6f\\n", y.data()[k]);
    scale2::finalize();
  }
  Kokkos::finalize();
}
"""


def scale2_source(backend: str = "openmp", source: str = SOURCE,
                  weights: tuple[np.ndarray, np.ndarray] = (W, B)) -> EmittedSource:
    space = {"openmp": "Kokkos::OpenMP", "serial": "Kokkos::Serial"}.get(backend, "void")
    spec = TensorSpec("x", "input0", "float32", (2, 3))
    return EmittedSource(
        name="scale2", backend=backend, header=HEADER.replace("@EXECUTION_SPACE@", space),
        source=source, weights=[Weight("w", "w", weights[0]), Weight("b", "b", weights[1])],
        inputs=[spec], outputs=[TensorSpec("out", "output0", "float32", (2, 3))],
        kernel_count=1)


def options(**kwargs) -> package.PackageOptions:
    return package.PackageOptions(source_path=Path("/models/scale2.pt2"),
                                  source_sha256="ab" * 32, **kwargs)


def run(command, **kwargs) -> subprocess.CompletedProcess:
    result = subprocess.run([str(c) for c in command], capture_output=True, text=True,
                            env=kwargs.pop("env", ENV), **kwargs)
    assert result.returncode == 0, (f"{' '.join(map(str, command))}:\n"
                                    f"{result.stdout[-4000:]}\n{result.stderr[-4000:]}")
    return result


def cmake_build(source_dir: Path, build_dir: Path, *definitions: str) -> None:
    run(["cmake", "-S", source_dir, "-B", build_dir, *definitions])
    run(["cmake", "--build", build_dir, "--parallel", "2"])


# ---- writing the package ----------------------------------------------------------------

EXPECTED_FILES = ["CMakeLists.txt", "README.md", "cmake/scale2Config.cmake.in",
                  "include/scale2.h", "include/scale2.hpp", "include/scale2_mod.f90", "lapis_manifest.json", "src/scale2.cpp",
                  "src/scale2.weights", "src/scale2_weights.S"] + sorted(
    f"src/lapis/{p.name}" for p in (REPO / "kokkos_support" / "lapis").glob("*.hpp"))


def files_of(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def test_layout_and_manifest(tmp_path):
    out = package.write(scale2_source(), tmp_path / "pkg", options())
    assert out == tmp_path / "pkg"
    assert files_of(out) == sorted(EXPECTED_FILES)
    assert (out / "include" / "scale2.hpp").read_text() == scale2_source().header
    assert (out / "src" / "scale2.cpp").read_text() == SOURCE
    assert [(n, a.tolist()) for n, a in blob.read(out / "src" / "scale2.weights")] == \
        [("w", W.tolist()), ("b", B.tolist())]
    manifest = json.loads((out / "lapis_manifest.json").read_text())
    assert manifest == {
        "name": "scale2", "backend": "openmp", "precision": "fp32",
        "inputs": [{"name": "x", "cname": "input0", "dtype": "float32", "shape": [2, 3]}],
        "outputs": [{"name": "out", "cname": "output0", "dtype": "float32", "shape": [2, 3]}],
        "weights": {"count": 2, "bytes": (out / "src" / "scale2.weights").stat().st_size,
                    "mode": "embed", "file": "src/scale2.weights"},
        "source": {"file": "scale2.pt2", "sha256": "ab" * 32},
        "tool": {"name": "lapis-export", "version": package.__version__},
        "kernels": 1, "evaluator": False, "memory": {}}
    cmake = (out / "CMakeLists.txt").read_text()
    assert "project(scale2 LANGUAGES CXX)" in cmake
    assert "add_library(scale2::scale2 ALIAS scale2)" in cmake
    assert "fast-math" not in cmake.replace("Never fast-math", "")
    for path in ("CMakeLists.txt", "README.md", "src/scale2_weights.S"):
        text = (out / path).read_text()
        assert "@NAME@" not in text and "@VERSION@" not in text, path
    assert "@PACKAGE_INIT@" in (out / "cmake" / "scale2Config.cmake.in").read_text()
    assert '.incbin "scale2.weights"' in (out / "src" / "scale2_weights.S").read_text()
    readme = (out / "README.md").read_text()
    assert "| `input0` | input | `x` | float32 | 2 x 3 |" in readme
    assert 'scale2::input0_view::non_const_type input0("input0", 2, 3);' in readme
    assert "int scale2_forward_host(const float* input0, float* output0);" in readme


def test_weights_mode_file(tmp_path):
    out = package.write(scale2_source(), tmp_path / "pkg", options(weights_mode="file"))
    assert "  OFF)" in (out / "CMakeLists.txt").read_text()
    assert json.loads((out / "lapis_manifest.json").read_text())["weights"]["mode"] == "file"


def test_identical_bytes_twice(tmp_path):
    first = package.write(scale2_source(), tmp_path / "a", options())
    second = package.write(scale2_source(), tmp_path / "b", options())
    assert files_of(first) == files_of(second)
    for name in files_of(first):
        assert (first / name).read_bytes() == (second / name).read_bytes(), name


def test_existing_output_needs_force(tmp_path):
    out = tmp_path / "pkg"
    out.mkdir()
    package.write(scale2_source(), out, options())     # an empty directory is fine
    with pytest.raises(ExportError, match="exists and is not empty; pass --force"):
        package.write(scale2_source(), out, options())
    (out / "notes.txt").write_text("mine")
    package.write(scale2_source(), out, options(force=True))
    assert not (out / "notes.txt").exists() and files_of(out) == sorted(EXPECTED_FILES)
    a_file = tmp_path / "file"
    a_file.write_text("x")
    with pytest.raises(ExportError, match="exists and is not a directory"):
        package.write(scale2_source(), a_file, options())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "pkg"]


@pytest.mark.parametrize("existing", [False, True])
def test_failure_leaves_out_untouched(tmp_path, monkeypatch, existing):
    out = tmp_path / "pkg"
    if existing:
        out.mkdir()
        (out / "notes.txt").write_text("mine")

    def interrupted(path, weights):
        Path(path).write_bytes(b"partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(blob, "write", interrupted)
    with pytest.raises(KeyboardInterrupt):
        package.write(scale2_source(), out, options(force=True))
    assert [p.name for p in tmp_path.iterdir()] == (["pkg"] if existing else [])
    if existing:
        assert files_of(out) == ["notes.txt"]


def test_bad_options_are_export_errors(tmp_path):
    with pytest.raises(ExportError, match="unknown weights mode 'inline'"):
        package.write(scale2_source(), tmp_path / "pkg", options(weights_mode="inline"))
    with pytest.raises(ExportError, match="unknown backend 'opencl'"):
        package.write(scale2_source("opencl"), tmp_path / "pkg", options())
    assert list(tmp_path.iterdir()) == []


# ---- building it ----------------------------------------------------------------------

@pytest.fixture(scope="session")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("scale2")


@pytest.fixture(scope="session")
def packages(workdir) -> dict[str, Path]:
    """The scale2 package in both weights modes."""
    return {mode: package.write(scale2_source(), workdir / f"pkg_{mode}",
                                options(weights_mode=mode)) for mode in ("embed", "file")}


@pytest.fixture(scope="session")
def installed(workdir, kokkos_root) -> tuple[Path, Path, Path]:
    """A standalone (static, no build type) build of its own copy of the package, installed;
    returns (package, build dir, install prefix)."""
    pkg = package.write(scale2_source(), workdir / "standalone", options())
    build, prefix = workdir / "standalone_build", workdir / "prefix"
    cmake_build(pkg, build, f"-DKokkos_ROOT={kokkos_root}", "-DCMAKE_EXPORT_COMPILE_COMMANDS=ON")
    run(["cmake", "--install", build, "--prefix", prefix])
    return pkg, build, prefix


def test_standalone_build_is_optimised(installed):
    _, build, _ = installed
    commands = json.loads((build / "compile_commands.json").read_text())
    [cpp] = [c["command"] for c in commands if c["file"].endswith("scale2.cpp")]
    assert "-O3" in cpp.split() and "-fPIC" in cpp.split() and "fast-math" not in cpp
    assert "LAPIS_WEIGHTS_EMBEDDED" in cpp
    assert (build / "libscale2.a").exists()


def test_find_package_after_install(installed, workdir):
    _, _, prefix = installed
    assert (prefix / "include" / "scale2.hpp").exists()
    assert (prefix / "lib" / "cmake" / "scale2" / "scale2Config.cmake").exists()
    consumer = workdir / "consumer"
    consumer.mkdir()
    (consumer / "CMakeLists.txt").write_text(CONSUMER_CMAKE)
    (consumer / "main.cpp").write_text(CONSUMER_MAIN)
    cmake_build(consumer, workdir / "consumer_build", "-DCMAKE_BUILD_TYPE=Release",
                f"-DCMAKE_PREFIX_PATH={prefix}")   # Kokkos: found through scale2's hint
    result = run([workdir / "consumer_build" / "consumer"])
    x = (0.5 * np.arange(6, dtype=np.float32) - 1.0).reshape(2, 3)
    ours = np.array([float(v) for v in result.stdout.split()], dtype=np.float32).reshape(2, 3)
    np.testing.assert_allclose(ours, x * W + B, rtol=1e-6)


def test_editing_the_blob_rebuilds_the_library(installed):
    pkg, build, _ = installed
    new_w = np.full((2, 3), 7.75, dtype=np.float32)
    blob.write(pkg / "src" / "scale2.weights", [Weight("w", "w", new_w), Weight("b", "b", B)])
    run(["cmake", "--build", build])
    assert new_w.tobytes() in (build / "libscale2.a").read_bytes()


@pytest.mark.parametrize("backend, device", [("cuda", "CUDA"), ("threads", "THREADS")])
def test_missing_backend_is_a_plain_configure_error(workdir, kokkos_root, backend, device):
    pkg = package.write(scale2_source(backend), workdir / f"pkg_{backend}", options())
    result = subprocess.run(["cmake", "-S", pkg, "-B", workdir / f"build_{backend}",
                             f"-DKokkos_ROOT={kokkos_root}"], capture_output=True, text=True)
    assert result.returncode != 0
    message = " ".join(result.stderr.split())
    name = package.KOKKOS_BACKENDS[backend][0]
    assert f"scale2 was exported for the {name} backend, but the Kokkos found at" in message
    assert "was built without it (Kokkos_DEVICES=OPENMP;SERIAL)" in message
    assert "Re-export with --backend openmp or --backend serial" in message
    assert f"-DKokkos_ENABLE_{device}=ON" in message


@pytest.mark.parametrize("enabled", ["ON", "OFF"])
def test_backend_check_with_an_in_tree_kokkos(workdir, enabled):
    """A host that builds Kokkos itself has Kokkos_ENABLE_<BACKEND> options, not Kokkos_DEVICES
    (faked here with an interface target; only configured, not built)."""
    host = workdir / f"host_{enabled}"
    host.mkdir()
    (host / "CMakeLists.txt").write_text(f"""
cmake_minimum_required(VERSION 3.16)
project(host LANGUAGES CXX)
add_library(Kokkos::kokkos INTERFACE IMPORTED)
set(Kokkos_ENABLE_OPENMP {enabled} CACHE BOOL "")
add_subdirectory({packages_dir(workdir)} model)
""")
    result = subprocess.run(["cmake", "-S", host, "-B", host / "build"], capture_output=True,
                            text=True)
    if enabled == "ON":
        assert result.returncode == 0, result.stderr
    else:
        assert result.returncode != 0
        assert "(Kokkos_ENABLE_OPENMP is OFF)" in " ".join(result.stderr.split())


def packages_dir(workdir: Path) -> Path:
    pkg = workdir / "pkg_in_tree"
    if not pkg.exists():
        package.write(scale2_source(), pkg, options())
    return pkg


# ---- sample_app -------------------------------------------------------------------------

@pytest.fixture(scope="session")
def sample_app(packages, workdir, kokkos_root) -> Path:
    build = workdir / "app_build"
    cmake_build(REPO / "sample_app", build, "-DCMAKE_BUILD_TYPE=Release",
                f"-DKokkos_ROOT={kokkos_root}", f"-DLAPIS_PACKAGE_DIR={packages['embed']}",
                "-DLAPIS_MODEL=scale2")
    return build / "sample_app"


@pytest.mark.parametrize("api", ["cpp", "c"])
def test_sample_app_matches_numpy(sample_app, workdir, api):
    X.tofile(workdir / "in.bin")
    out = workdir / f"out_{api}.bin"
    result = run([sample_app, "--input", workdir / "in.bin", "--output", out, "--steps", "3",
                  "--warmup", "1", "--api", api])
    np.testing.assert_allclose(np.fromfile(out, "<f4").reshape(2, 3), X * W + B, rtol=1e-6)
    assert "forward: runs=3 median_ms=" in result.stdout and " min_ms=" in result.stdout


def test_sample_app_refuses_an_input_of_the_wrong_size(sample_app, workdir):
    np.zeros(5, np.float32).tofile(workdir / "short.bin")
    result = subprocess.run([sample_app, "--input", workdir / "short.bin", "--output",
                             workdir / "never.bin"], capture_output=True, text=True, env=ENV)
    assert result.returncode != 0
    assert "has 20 bytes; the model input needs 24" in result.stderr
    assert not (workdir / "never.bin").exists()


# ---- verify: shared build + ctypes ------------------------------------------------------

@pytest.fixture(scope="session")
def shared_libraries(packages, workdir) -> dict[str, Path]:
    return {mode: verify.build(pkg, workdir / f"shared_{mode}") for mode, pkg in packages.items()}


@pytest.mark.parametrize("mode", ["embed", "file"])
def test_load_module_forward(packages, shared_libraries, mode):
    assert shared_libraries[mode].name == "libscale2.so"
    with verify.load_module(packages[mode], shared_libraries[mode]) as module:
        [ours] = module.forward(X)
        [again] = module.forward(X.astype(np.float64))     # converted to float32
        with pytest.raises(ValueError, match=r"input input0: shape \[3, 2\]"):
            module.forward(X.T)
    np.testing.assert_allclose(ours, X * W + B, rtol=1e-6)
    np.testing.assert_array_equal(ours, again)


FILE_MODE_SCRIPT = """
import sys
import numpy as np
from exporter import verify
with verify.load_module(sys.argv[1], sys.argv[2]) as module:
    print(module.forward(np.ones((2, 3), np.float32))[0].tolist())
"""


def test_weights_file_from_the_environment(packages, shared_libraries, workdir):
    """In file mode the environment variable NAME_WEIGHTS overrides the compiled-in path (each
    case in a fresh process: Kokkos initializes once per process)."""
    other = workdir / "other.weights"
    blob.write(other, [Weight("w", "w", 2 * W), Weight("b", "b", B - 1)])
    command = [sys.executable, "-c", FILE_MODE_SCRIPT, packages["file"], shared_libraries["file"]]
    result = run(command, env={**ENV, "scale2_WEIGHTS": str(other)}, cwd=REPO)
    np.testing.assert_allclose(json.loads(result.stdout), 2 * W + B - 1, rtol=1e-6)
    failed = subprocess.run(command, capture_output=True, text=True, cwd=REPO,
                            env={**ENV, "scale2_WEIGHTS": str(workdir / "missing.weights")})
    assert failed.returncode != 0
    assert "scale2_initialize returned 3: cannot open weight file" in failed.stderr


def test_verify_run_against_torch(packages, shared_libraries, monkeypatch):
    """run() on the built library (copied for each run: a fresh load, so a fresh Kokkos)."""
    torch = pytest.importorskip("torch")

    class Scale(torch.nn.Module):
        def __init__(self, w, b):
            super().__init__()
            self.w, self.b = torch.nn.Parameter(w), torch.nn.Parameter(b)

        def forward(self, x):
            return x * self.w + self.b

    def loaded(w):
        program = torch.export.export(Scale(torch.from_numpy(w), torch.from_numpy(B)),
                                      (torch.zeros(2, 3),))
        return LoadedModel(Path("scale2.pt2"), "torch.export", program,
                           [TensorSpec("x", "input0", "float32", (2, 3))], "")

    def prebuilt(package_dir, build_dir, shared=True):
        return Path(shutil.copy(shared_libraries["embed"], Path(build_dir) / "libscale2.so"))

    monkeypatch.setattr(verify, "build", prebuilt)
    result = verify.run(packages["embed"], loaded(W))
    assert result.passed and result.max_abs_error <= 1e-5 and result.build_seconds > 0
    assert result.max_abs_reference > 1
    assert result.relative_error == result.max_abs_error / result.max_abs_reference
    wrong = verify.run(packages["embed"], loaded(W + 0.5))
    assert not wrong.passed and wrong.max_abs_error > 0.1


def test_build_errors_carry_the_compiler_output(workdir):
    broken = scale2_source(source=SOURCE.replace("output0(i, j) =", "output0(i, j) = oops +"))
    pkg = package.write(broken, workdir / "pkg_broken", options())
    # The package is ours: code that does not compile is an internal error, in one line with
    # the first compiler error, the whole log in the file the hint names.
    with pytest.raises(InternalError) as error:
        verify.build(pkg, workdir / "build_broken")
    message = error.value.message
    assert message.startswith("the generated C++ for 'scale2' does not compile (first error: ")
    assert re.search(r"\(first error: src/scale2\.cpp:\d+:\d+: error: .oops. was not declared",
                     message) and "\n" not in message
    log = Path(re.search(r"log is in (\S+);", error.value.hint).group(1))
    assert "oops" in log.read_text() and "Building CXX object" in log.read_text()
    log.unlink()
