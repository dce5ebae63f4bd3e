// sample_app: a Kokkos "simulation" driving an exported model, for any model with one float32
// input and one float32 output. Each step runs the model on the current input state.
//
//   sample_app --input in.bin --output out.bin [--steps N] [--warmup W] [--api cpp|c]
//              [--batch B] [--graph]
//
// Files are raw little-endian float32, row-major, sized by the model's exported shapes; for a
// model with dynamic dimensions (-1 in its extents), --batch gives the size they all take.
// Prints the forward time per step (median and minimum, fenced) on stdout.
#include <Kokkos_Core.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include LAPIS_MODEL_HEADER
#include "common/model_io.hpp"

namespace model = LAPIS_MODEL;

#define LAPIS_STRINGIFY2(x) #x
#define LAPIS_STRINGIFY(x) LAPIS_STRINGIFY2(x)
#define LAPIS_C_NAME2(model, suffix) model##suffix
#define LAPIS_C_NAME(model, suffix) LAPIS_C_NAME2(model, suffix)

namespace {

using sample::make_view;
using sample::read_floats;
using sample::write_floats;

static_assert(model::num_inputs == 1 && model::num_outputs == 1,
              "sample_app drives models with one input and one output");
static_assert(std::is_same_v<model::input0_view::non_const_value_type, float> &&
                  std::is_same_v<model::output0_view::non_const_value_type, float>,
              "sample_app drives float32 models");

// How many dimensions of the model's input are dynamic (-1 in its exported extents): the C API
// takes that many sizes before the buffers.
template <size_t Rank>
constexpr int count_dynamic(const int64_t (&extents)[Rank]) {
  int count = 0;
  for (size_t r = 0; r < Rank; ++r) count += extents[r] < 0 ? 1 : 0;
  return count;
}
constexpr int dynamic_inputs = count_dynamic(model::input0_extents);
constexpr bool dynamic_model = dynamic_inputs > 0;

struct Options {
  std::string input, output, api = "cpp";
  int steps = 1, warmup = 0, batch = -1;
  bool graph = false;  // forward_graph(): one CUDA graph launch per step on the CUDA backend
};

int parse_count(const std::string& option, const std::string& text) {
  size_t end = 0;
  int value = -1;
  try {
    value = std::stoi(text, &end);
  } catch (const std::exception&) {
  }
  if (end != text.size() || value < 0)
    throw std::runtime_error(option + " needs a non-negative whole number, got '" + text + "'");
  return value;
}

Options parse(int argc, char** argv) {
  Options options;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) throw std::runtime_error(arg + " needs a value");
      return argv[++i];
    };
    if (arg == "--input") options.input = value();
    else if (arg == "--output") options.output = value();
    else if (arg == "--steps") options.steps = parse_count(arg, value());
    else if (arg == "--warmup") options.warmup = parse_count(arg, value());
    else if (arg == "--api") options.api = value();
    else if (arg == "--graph") options.graph = true;
    else if (arg == "--batch") options.batch = parse_count(arg, value());
    else if (arg.rfind("--kokkos", 0) == 0) continue;   // Kokkos' own options
    else throw std::runtime_error("unknown argument " + arg);
  }
  if (options.input.empty() || options.output.empty())
    throw std::runtime_error("usage: sample_app --input in.bin --output out.bin [--steps N] "
                             "[--warmup W] [--api cpp|c] [--batch B] [--graph]");
  if (options.api != "cpp" && options.api != "c")
    throw std::runtime_error("--api must be cpp or c");
  if (options.steps < 1) throw std::runtime_error("--steps must be at least 1");
  if (dynamic_model && options.batch < 1)
    throw std::runtime_error("the model has dynamic dimensions: give their size with --batch");
  if (!dynamic_model && options.batch >= 0)
    throw std::runtime_error("--batch: the model's shapes are fixed at export");
  return options;
}

size_t element_count(const int64_t* extents, int rank, int64_t batch) {
  size_t count = 1;
  for (int r = 0; r < rank; ++r) count *= size_t(extents[r] < 0 ? batch : extents[r]);
  return count;
}

template <class Step>
std::vector<double> timed_steps(int steps, int warmup, Step step) {
  std::vector<double> times;
  for (int i = 0; i < warmup + steps; ++i) {
    const auto start = std::chrono::steady_clock::now();
    step();
    Kokkos::fence();
    const double ms =
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start)
            .count();
    if (i >= warmup) times.push_back(ms);
  }
  return times;
}

void report(std::vector<double> times) {
  std::sort(times.begin(), times.end());
  const size_t n = times.size();
  const double median = n % 2 ? times[n / 2] : 0.5 * (times[n / 2 - 1] + times[n / 2]);
  std::printf("forward: runs=%zu median_ms=%.4f min_ms=%.4f\n", n, median, times.front());
}

// The C++ API: Views in the model's memory space, destination passing.
void run_cpp(const Options& options, const std::vector<float>& input, std::vector<float>& output) {
  model::initialize();
  {
    auto x = make_view<model::input0_view::non_const_type>("x", model::input0_extents,
                                                            options.batch);
    auto y = make_view<model::output0_view>("y", model::output0_extents, options.batch);
    auto x_host = Kokkos::create_mirror_view(x);
    std::memcpy(x_host.data(), input.data(), input.size() * sizeof(float));
    Kokkos::deep_copy(x, x_host);
    if (options.graph)
      report(timed_steps(options.steps, options.warmup, [&] { model::forward_graph(x, y); }));
    else
      report(timed_steps(options.steps, options.warmup, [&] { model::forward(x, y); }));
    auto y_host = Kokkos::create_mirror_view_and_copy(Kokkos::HostSpace(), y);
    std::memcpy(output.data(), y_host.data(), output.size() * sizeof(float));
  }
  model::finalize();
}

// The C API's forward: the size of each dynamic dimension first, then the buffers.
template <size_t... Dynamic>
int forward_host(int64_t batch, const float* input, float* output,
                 std::index_sequence<Dynamic...>) {
  return LAPIS_C_NAME(LAPIS_MODEL, _forward_host)(((void)Dynamic, batch)..., input, output);
}

// The C API: host buffers in and out.
void run_c(const Options& options, const std::vector<float>& input, std::vector<float>& output) {
  auto check = [](int code) {
    if (code != 0) throw std::runtime_error(LAPIS_C_NAME(LAPIS_MODEL, _last_error)());
  };
  check(LAPIS_C_NAME(LAPIS_MODEL, _initialize)());
  report(timed_steps(options.steps, options.warmup, [&] {
    check(forward_host(options.batch, input.data(), output.data(),
                       std::make_index_sequence<dynamic_inputs>{}));
  }));
  check(LAPIS_C_NAME(LAPIS_MODEL, _finalize)());
}

}  // namespace

int main(int argc, char** argv) {
  Kokkos::initialize(argc, argv);
  int status = 0;
  try {
    const Options options = parse(argc, argv);
    const std::vector<float> input = read_floats(
        options.input,
        element_count(model::input0_extents, model::input0_rank, options.batch));
    std::vector<float> output(
        element_count(model::output0_extents, model::output0_rank, options.batch));
    if (options.api == "cpp") run_cpp(options, input, output);
    else run_c(options, input, output);
    write_floats(options.output, output.data(), output.size());
    std::printf("model %s: wrote %s\n", LAPIS_STRINGIFY(LAPIS_MODEL), options.output.c_str());
  } catch (const std::exception& e) {
    std::fprintf(stderr, "sample_app: %s\n", e.what());
    status = 1;
  }
  Kokkos::finalize();
  return status;
}
