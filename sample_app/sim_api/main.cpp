// sim_api: two exported models called the way a Kokkos simulation calls them. See
// CMakeLists.txt. Usage:
//   sim_api --mlp-input F --mlp-reference F --cnn-input F --cnn-reference F
//           --mlp-weights F --mlp-weights-reference F --mlp-own-weights F --foreign-weights F
//   sim_api --load-only BLOB        (mlp::load_weights of BLOB: accepted or refused, and why)
//   sim_api --overlap STEPS         (timings: one instance against two)
// Inputs and references are raw float32 files in the models' row-major order. Each check prints
// "ok: <what>" or "FAIL: <what>"; the exit status is the number of failures.
#include <Kokkos_Core.hpp>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <iterator>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "mlp.hpp"
#include "model_io.hpp"
#include "small_cnn.hpp"

#if defined(KOKKOS_ENABLE_CUDA) && KOKKOS_VERSION < 40000
#include <cuda_runtime.h>
#endif

namespace {

using space = mlp::execution_space;
static_assert(std::is_same<space, small_cnn::execution_space>::value, "one backend");
using memory = mlp::memory_space;
template <class T>
using left = Kokkos::View<T, Kokkos::LayoutLeft, memory>;
template <class T>
using right = Kokkos::View<T, Kokkos::LayoutRight, memory>;

int failures = 0;

void report(bool ok, const std::string& what, const std::string& detail = "") {
  std::printf("%s: %s%s%s\n", ok ? "ok" : "FAIL", what.c_str(), detail.empty() ? "" : ": ",
              detail.c_str());
  if (!ok) ++failures;
}

// max |ours - reference| <= 1e-4 * max |reference|; `ours` is any View of rank 2 or 4.
template <class View>
void compare(const std::string& what, const View& ours, const std::vector<float>& reference) {
  auto host = Kokkos::create_mirror_view(ours);
  Kokkos::deep_copy(host, ours);
  std::vector<float> flat;
  if constexpr (View::rank == 2) {
    for (size_t i = 0; i < host.extent(0); ++i)
      for (size_t j = 0; j < host.extent(1); ++j) flat.push_back(host(i, j));
  } else {
    for (size_t i = 0; i < host.size(); ++i) flat.push_back(host.data()[i]);
  }
  double error = 0, scale = 0;
  for (size_t i = 0; i < reference.size() && i < flat.size(); ++i) {
    error = std::fmax(error, std::fabs(double(flat[i]) - reference[i]));
    scale = std::fmax(scale, std::fabs(double(reference[i])));
  }
  const bool ok = flat.size() == reference.size() && error <= 1e-4 * scale;
  report(ok, what, "max abs error " + std::to_string(error));
}

// A LayoutRight View filled from row-major floats.
template <class View>
View filled(const std::string& label, const int64_t (&extents)[View::rank],
            const std::vector<float>& values) {
  View view = sample::make_view<View>(label, extents);
  auto host = Kokkos::create_mirror_view(view);
  for (size_t i = 0; i < values.size(); ++i) host.data()[i] = values[i];
  Kokkos::deep_copy(view, host);
  return view;
}

// Two instances of the execution space: partitions of it (Kokkos 4), two CUDA streams
// (Kokkos 3 on CUDA), or two handles of the default instance (Kokkos 3 on the host, where an
// instance cannot be made apart from it).
std::pair<space, space> two_instances() {
#if KOKKOS_VERSION >= 40000
  auto parts = Kokkos::Experimental::partition_space(space(), 1, 1);
  return {parts[0], parts[1]};
#elif defined(KOKKOS_ENABLE_CUDA)
  if constexpr (std::is_same<space, Kokkos::Cuda>::value) {
    cudaStream_t a, b;
    cudaStreamCreate(&a);   // kept for the run: Kokkos 3 does not own them
    cudaStreamCreate(&b);
    return {space(a), space(b)};
  }
  return {space(), space()};
#else
  return {space(), space()};
#endif
}

std::vector<unsigned char> read_bytes(const std::string& path) {
  std::ifstream file(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(file), std::istreambuf_iterator<char>()};
}

void check(const std::map<std::string, std::string>& args) {
  const auto x =
      sample::read_floats(args.at("--mlp-input"), sample::element_count(mlp::input0_extents));
  const auto y_ref = sample::read_floats(args.at("--mlp-reference"),
                                         sample::element_count(mlp::output0_extents));
  const auto image = sample::read_floats(args.at("--cnn-input"),
                                         sample::element_count(small_cnn::input0_extents));
  const auto image_ref = sample::read_floats(args.at("--cnn-reference"),
                                             sample::element_count(small_cnn::output0_extents));
  const int64_t n = mlp::input0_extents[0], k = mlp::input0_extents[1];
  const int64_t m = mlp::output0_extents[1];
  auto [a, b] = two_instances();

  // 1. On the caller's instance, LayoutRight Views (used in place).
  auto x_right = filled<right<float**>>("x", mlp::input0_extents, x);
  right<float**> y_right("y", n, m);
  mlp::forward(a, x_right, y_right);
  a.fence();
  compare("mlp on an instance, LayoutRight", y_right, y_ref);

  // 2. LayoutLeft input and output (copied through the model's planned buffers).
  left<float**> x_left("x_left", n, k);
  left<float**> y_left("y_left", n, m);
  Kokkos::deep_copy(x_left, x_right);   // same extents, another layout: Kokkos reorders
  for (int call = 0; call < 2; ++call) {   // the second call reuses the planned buffers
    Kokkos::deep_copy(y_left, 0.0f);
    mlp::forward(a, x_left, y_left);
    a.fence();
    compare("mlp, LayoutLeft input and output, call " + std::to_string(call + 1), y_left, y_ref);
  }

  // 3. Strided subviews: the input in columns 5..5+k of a wider state array, the output in
  //    component 1 of a [n, m, 3] field.
  right<float**> state("state", n, k + 8);
  Kokkos::deep_copy(state, -7.0f);
  const auto x_columns = Kokkos::subview(state, Kokkos::ALL, std::make_pair(int64_t(5), 5 + k));
  Kokkos::deep_copy(x_columns, x_right);
  right<float***> field("field", n, m, 3);
  const auto y_component = Kokkos::subview(field, Kokkos::ALL, Kokkos::ALL, 1);
  mlp::forward(a, x_columns, y_component);
  a.fence();
  compare("mlp, input subview(state, ALL, make_pair(5, 5 + k)), output subview(field, ALL, "
          "ALL, 1)", y_component, y_ref);

  // 4. A block of whole rows of a LayoutRight array: row-major, read and written in place.
  right<float**> rows("rows", n + 6, k);
  const auto x_rows = Kokkos::subview(rows, std::make_pair(int64_t(3), 3 + n), Kokkos::ALL);
  Kokkos::deep_copy(x_rows, x_right);
  right<float**> out_rows("out_rows", n + 4, m);
  const auto y_rows = Kokkos::subview(out_rows, std::make_pair(int64_t(2), 2 + n), Kokkos::ALL);
  mlp::forward(a, x_rows, y_rows);
  a.fence();
  compare("mlp, input and output subview(field, make_pair(i0, i1), ALL)", y_rows, y_ref);

  // 5. Two models on two instances, submitted before either is fenced.
  auto image_view = filled<right<float****>>("image", small_cnn::input0_extents, image);
  auto classes = sample::make_view<small_cnn::output0_view>("classes", small_cnn::output0_extents);
  right<float**> y_a("y_a", n, m);
  mlp::forward(a, x_right, y_a);
  small_cnn::forward(b, image_view, classes);
  b.fence();
  a.fence();
  compare("two models on two instances: mlp", y_a, y_ref);
  compare("two models on two instances: small_cnn", classes, image_ref);

  // 6. Weights at run time: another blob of the same architecture, a foreign one refused
  //    (the current weights kept), then the package's own from memory.
  const auto y2_ref = sample::read_floats(args.at("--mlp-weights-reference"), y_ref.size());
  mlp::load_weights(args.at("--mlp-weights"));
  mlp::forward(a, x_right, y_right);
  a.fence();
  compare("load_weights(path): retrained weights", y_right, y2_ref);
  try {
    mlp::load_weights(args.at("--foreign-weights"));
    report(false, "load_weights of another model's blob", "no exception");
  } catch (const std::runtime_error& e) {
    report(true, "load_weights of another model's blob", e.what());
  }
  mlp::forward(a, x_right, y_right);
  a.fence();
  compare("after the refused load_weights the weights are unchanged", y_right, y2_ref);
  const auto own = read_bytes(args.at("--mlp-own-weights"));
  mlp::load_weights(own.data(), own.size());
  mlp::forward(a, x_right, y_right);
  a.fence();
  compare("load_weights(bytes, size): the package's own blob again", y_right, y_ref);

  // 7. The C API with column-major host buffers (what the Fortran module's mlp_forward calls).
  std::vector<float> x_colmajor(x.size()), y_colmajor(y_ref.size());
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < k; ++j) x_colmajor[i + j * n] = x[i * k + j];
  const int code = mlp_forward_host_colmajor(x_colmajor.data(), y_colmajor.data());
  std::vector<float> y_back(y_ref.size());
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < m; ++j) y_back[i * m + j] = y_colmajor[i + j * n];
  Kokkos::View<float**, Kokkos::LayoutRight, Kokkos::HostSpace> y_host(y_back.data(), n, m);
  report(code == 0, "mlp_forward_host_colmajor returns 0", mlp_last_error());
  compare("mlp_forward_host_colmajor", y_host, y_ref);
}

// Both models STEPS times on one instance, then on two instances (each model its own), as
// wall time per step: on a GPU the second overlaps the models' kernels.
void overlap(int steps) {
  auto [a, b] = two_instances();
  auto x = sample::make_view<mlp::input0_view::non_const_type>("x", mlp::input0_extents);
  auto y = sample::make_view<mlp::output0_view>("y", mlp::output0_extents);
  auto image = sample::make_view<small_cnn::input0_view::non_const_type>(
      "image", small_cnn::input0_extents);
  auto classes = sample::make_view<small_cnn::output0_view>("classes", small_cnn::output0_extents);
  const auto time = [&](const space& first, const space& second) {
    for (int warm = 0; warm < 3; ++warm) {
      mlp::forward(first, x, y);
      small_cnn::forward(second, image, classes);
    }
    Kokkos::fence();
    const auto start = std::chrono::steady_clock::now();
    for (int step = 0; step < steps; ++step) {
      mlp::forward(first, x, y);
      small_cnn::forward(second, image, classes);
    }
    first.fence();
    second.fence();
    return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start)
               .count() / steps;
  };
  const double one = time(a, a);
  const double two = time(a, b);
  std::printf("overlap: %d steps of mlp + small_cnn: one instance %.4f ms/step, two instances "
              "%.4f ms/step (%.2fx)\n", steps, one, two, one / two);
}

}  // namespace

int main(int argc, char* argv[]) {
  Kokkos::initialize(argc, argv);
  {
    std::map<std::string, std::string> args;
    for (int i = 1; i + 1 < argc; i += 2) args[argv[i]] = argv[i + 1];
    mlp::initialize();
    small_cnn::initialize();
    try {
      if (args.count("--load-only")) {
        try {
          mlp::load_weights(args["--load-only"]);
          std::printf("load_weights accepted\n");
        } catch (const std::runtime_error& e) {
          std::printf("load_weights refused: %s\n", e.what());
        }
      } else if (args.count("--overlap"))
        overlap(std::stoi(args["--overlap"]));
      else
        check(args);
    } catch (const std::exception& e) {
      report(false, "unexpected exception", e.what());
    }
    small_cnn::finalize();
    mlp::finalize();
  }
  Kokkos::finalize();
  std::printf("sim_api: %d failure(s)\n", failures);
  return failures;
}
