// host_checks: repeated use and misuse of an exported model (one float32 input, one float32
// output), checked from the host's side.
//
//   host_checks cycles --input in.bin --output out.bin [--threads N]
//                          Kokkos up throughout; C++ and C API cycled three times, the C API's
//                          forward from N host threads at once (default 4), errors checked
//   host_checks restart                                   the C API starts and finalizes Kokkos,
//                                                         then must refuse a second start cleanly
//
// Prints one line per failed check and exits 1 if any failed; writes the first forward's
// output to out.bin for the caller to compare with the reference framework.
#include <Kokkos_Core.hpp>

#include <cstdio>
#include <cstring>
#include <fstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include LAPIS_MODEL_HEADER
#include "../../sample_app/common/model_io.hpp"

namespace model = LAPIS_MODEL;

#define LAPIS_C_NAME2(model, suffix) model##suffix
#define LAPIS_C_NAME(model, suffix) LAPIS_C_NAME2(model, suffix)
#define C_INITIALIZE LAPIS_C_NAME(LAPIS_MODEL, _initialize)
#define C_FINALIZE LAPIS_C_NAME(LAPIS_MODEL, _finalize)
#define C_FORWARD LAPIS_C_NAME(LAPIS_MODEL, _forward_host)
#define C_LAST_ERROR LAPIS_C_NAME(LAPIS_MODEL, _last_error)

namespace {

using sample::make_view;
using sample::read_floats;
using sample::write_floats;
using sample::element_count;

static_assert(model::num_inputs == 1 && model::num_outputs == 1,
              "host_checks drives models with one input and one output");

int failures = 0;

void check(bool ok, const std::string& what) {
  if (ok) return;
  std::printf("FAILED: %s\n", what.c_str());
  ++failures;
}

bool contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

template <size_t Rank>
std::string extents_text(const int64_t (&extents)[Rank]) {
  std::string text = "[";
  for (size_t r = 0; r < Rank; ++r) text += (r ? ", " : "") + std::to_string(extents[r]);
  return text + "]";
}

// One forward through the C++ API on copies of `input`.
std::vector<float> forward_cpp(const std::vector<float>& input) {
  auto x = make_view<model::input0_view::non_const_type>("x", model::input0_extents);
  auto y = make_view<model::output0_view>("y", model::output0_extents);
  auto x_host = Kokkos::create_mirror_view(x);
  std::memcpy(x_host.data(), input.data(), input.size() * sizeof(float));
  Kokkos::deep_copy(x, x_host);
  model::forward(x, y);
  auto y_host = Kokkos::create_mirror_view_and_copy(Kokkos::HostSpace(), y);
  return std::vector<float>(y_host.data(), y_host.data() + y_host.size());
}

void check_cpp_errors(const std::vector<float>& input) {
  try {
    forward_cpp(input);
    check(false, "C++ forward before initialize() throws");
  } catch (const std::runtime_error& e) {
    check(contains(e.what(), "before"), std::string("forward before initialize: ") + e.what());
  }
  model::initialize();
  // An input one element longer in its last dimension: the message names both extents.
  int64_t wrong[model::input0_rank];
  for (int r = 0; r < model::input0_rank; ++r) wrong[r] = model::input0_extents[r];
  wrong[model::input0_rank - 1] += 1;
  auto x = make_view<model::input0_view::non_const_type>("x", wrong);
  auto y = make_view<model::output0_view>("y", model::output0_extents);
  try {
    model::forward(x, y);
    check(false, "C++ forward with wrong extents throws std::invalid_argument");
  } catch (const std::invalid_argument& e) {
    const std::string message = e.what();
    check(contains(message, "expected extents " + extents_text(model::input0_extents)) &&
              contains(message, "got " + extents_text(wrong)),
          "extent message names expected and actual extents: " + message);
  }
  model::finalize();
}

void check_c_errors(const std::vector<float>& input, std::vector<float>& output) {
  check(C_FORWARD(input.data(), output.data()) == 1 &&
            contains(C_LAST_ERROR(), "before"),
        std::string("C forward before initialize returns 1: ") + C_LAST_ERROR());
  check(C_FINALIZE() == 1, "C finalize without initialize returns 1");
  check(C_INITIALIZE() == 0, std::string("C initialize: ") + C_LAST_ERROR());
  check(C_FORWARD(nullptr, output.data()) == 2 && contains(C_LAST_ERROR(), "null"),
        std::string("C forward with a null input returns 2: ") + C_LAST_ERROR());
  check(C_FORWARD(input.data(), nullptr) == 2, "C forward with a null output returns 2");
  check(C_FINALIZE() == 0, std::string("C finalize: ") + C_LAST_ERROR());
  check(C_FORWARD(input.data(), output.data()) == 1,
        "C forward after finalize returns 1");
}

// Forward through the C API from several host threads at once; every result must equal the
// single-threaded one.
void check_c_threads(const std::vector<float>& input, const std::vector<float>& expected,
                     int threads) {
  constexpr int runs = 2;
  std::vector<std::vector<float>> outputs(threads, std::vector<float>(expected.size()));
  std::vector<int> codes(threads, 0);
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t)
    pool.emplace_back([&, t] {
      for (int r = 0; r < runs; ++r) {
        std::fill(outputs[t].begin(), outputs[t].end(), -1.0f);
        codes[t] |= C_FORWARD(input.data(), outputs[t].data());
        if (outputs[t] != expected) codes[t] |= 64;
      }
    });
  for (auto& thread : pool) thread.join();
  for (int t = 0; t < threads; ++t)
    check(codes[t] == 0, "thread " + std::to_string(t) + ": C forward gave the single-thread "
                         "result (code " + std::to_string(codes[t]) + ")");
}

int run_cycles(const std::string& input_path, const std::string& output_path, int threads) {
  const auto input = read_floats(input_path, element_count(model::input0_extents));
  std::vector<float> reference;
  check_cpp_errors(input);
  // The C++ API: initialize/forward/finalize three times, the same result each time.
  for (int cycle = 0; cycle < 3; ++cycle) {
    model::initialize();
    model::initialize();   // a second initialize is a no-op
    auto output = forward_cpp(input);
    model::finalize();
    if (cycle == 0) reference = output;
    check(output == reference, "C++ cycle " + std::to_string(cycle) + " gives cycle 0's output");
  }
  model::finalize();   // a second finalize is a no-op
  write_floats(output_path, reference.data(), reference.size());

  std::vector<float> output(reference.size());
  check_c_errors(input, output);
  // The C API while the host keeps Kokkos up: three cycles, threads in the first.
  for (int cycle = 0; cycle < 3; ++cycle) {
    check(C_INITIALIZE() == 0, std::string("C initialize: ") + C_LAST_ERROR());
    check(C_FORWARD(input.data(), output.data()) == 0 && output == reference,
          "C cycle " + std::to_string(cycle) + " gives the C++ output");
    if (cycle == 0) check_c_threads(input, reference, threads);
    check(C_FINALIZE() == 0, std::string("C finalize: ") + C_LAST_ERROR());
    check(Kokkos::is_initialized(), "C finalize leaves the host's Kokkos initialized");
  }
  return failures ? 1 : 0;
}

// Only the C API, as a C or Fortran program uses it: it starts and finalizes Kokkos itself.
int run_restart() {
  const size_t in = element_count(model::input0_extents);
  std::vector<float> input(in, 0.5f), output(element_count(model::output0_extents));
  check(!Kokkos::is_initialized(), "Kokkos is not initialized before the C API starts it");
  check(C_INITIALIZE() == 0, std::string("C initialize: ") + C_LAST_ERROR());
  check(Kokkos::is_initialized(), "C initialize starts Kokkos");
  check(C_FORWARD(input.data(), output.data()) == 0, "C forward");
  check(C_FINALIZE() == 0, std::string("C finalize: ") + C_LAST_ERROR());
  check(!Kokkos::is_initialized(), "C finalize finalizes the Kokkos it started");
  check(C_INITIALIZE() == 3 && contains(C_LAST_ERROR(), "cannot be initialized again"),
        std::string("C initialize after Kokkos was finalized returns 3: ") + C_LAST_ERROR());
  check(C_FORWARD(input.data(), output.data()) == 1, "C forward after a refused initialize");
  return failures ? 1 : 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    const std::string mode = argc > 1 ? argv[1] : "";
    if (mode == "restart" && argc == 2) return run_restart();
    const bool threads_given = argc == 8 && std::string(argv[6]) == "--threads";
    if (mode == "cycles" && (argc == 6 || threads_given) && std::string(argv[2]) == "--input" &&
        std::string(argv[4]) == "--output") {
      const int threads = threads_given ? std::stoi(argv[7]) : 4;
      Kokkos::initialize();
      const int status = run_cycles(argv[3], argv[5], threads);
      Kokkos::finalize();
      return status;
    }
    std::fprintf(stderr, "usage: host_checks cycles --input in.bin --output out.bin "
                         "[--threads N] | restart\n");
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "host_checks: %s\n", e.what());
    return 1;
  }
}
