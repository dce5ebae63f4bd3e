// two_models: two exported models in one program, each called on its own input, for models
// with one float32 input and one float32 output.
//
//   two_models --api cpp|c --input-a a.bin --output-a ya.bin --input-b b.bin --output-b yb.bin
//
// --api cpp: the host initializes Kokkos; both models run on its Views (NAME::forward).
// --api c:   the host leaves Kokkos to the models' C API. A and B are initialized (the first
//            starts Kokkos), A is finalized while B still runs a second step, and B's finalize,
//            the last, stops Kokkos.
// Files are raw float32 in each model's row-major order.
#include <Kokkos_Core.hpp>

#include <cstdio>
#include <stdexcept>
#include <string>
#include <vector>

#include "model_io.hpp"
#include LAPIS_MODEL_A_HEADER
#include LAPIS_MODEL_B_HEADER

#define LAPIS_CAT2(a, b) a##b
#define LAPIS_CAT(a, b) LAPIS_CAT2(a, b)
#define LAPIS_STRINGIFY2(x) #x
#define LAPIS_STRINGIFY(x) LAPIS_STRINGIFY2(x)

namespace {

// One model's API behind one type, so that the code below is written once for both.
#define LAPIS_DEFINE_MODEL(Type, ns)                                                           \
  struct Type {                                                                                \
    static constexpr const char* name = LAPIS_STRINGIFY(ns);                                   \
    static_assert(ns::num_inputs == 1 && ns::num_outputs == 1, "one input, one output");    \
    static size_t input_count() { return sample::element_count(ns::input0_extents); }        \
    static size_t output_count() { return sample::element_count(ns::output0_extents); }      \
    static std::vector<float> forward_views(const std::vector<float>& input) {                \
      auto x = sample::make_view<ns::input0_view::non_const_type>("x", ns::input0_extents);  \
      auto y = sample::make_view<ns::output0_view>("y", ns::output0_extents);                \
      sample::copy_in(x, input.data());                                                       \
      ns::forward(x, y);                                                                      \
      return sample::copy_out(y);                                                             \
    }                                                                                         \
    static void initialize() { ns::initialize(); }                                            \
    static void finalize() { ns::finalize(); }                                                \
    static int c_initialize() { return LAPIS_CAT(ns, _initialize)(); }                        \
    static int c_finalize() { return LAPIS_CAT(ns, _finalize)(); }                            \
    static int c_forward(const float* x, float* y) {                                          \
      return LAPIS_CAT(ns, _forward_host)(x, y);                                              \
    }                                                                                         \
    static const char* c_error() { return LAPIS_CAT(ns, _last_error)(); }                     \
  }
LAPIS_DEFINE_MODEL(ModelA, LAPIS_MODEL_A);
LAPIS_DEFINE_MODEL(ModelB, LAPIS_MODEL_B);

struct Options {
  std::string api, input_a, output_a, input_b, output_b;
};

Options parse(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg.rfind("--kokkos", 0) == 0) continue;   // Kokkos' own options
    if (i + 1 >= argc) throw std::runtime_error(arg + " needs a value");
    std::string* field = arg == "--api" ? &o.api : arg == "--input-a" ? &o.input_a
                       : arg == "--output-a" ? &o.output_a : arg == "--input-b" ? &o.input_b
                       : arg == "--output-b" ? &o.output_b : nullptr;
    if (!field) throw std::runtime_error("unknown argument " + arg);
    *field = argv[++i];
  }
  if ((o.api != "cpp" && o.api != "c") || o.input_a.empty() || o.output_a.empty() ||
      o.input_b.empty() || o.output_b.empty())
    throw std::runtime_error("usage: two_models --api cpp|c --input-a a.bin --output-a ya.bin "
                             "--input-b b.bin --output-b yb.bin");
  return o;
}

template <class Model>
void check(int code, const char* what) {
  if (code != 0)
    throw std::runtime_error(std::string(Model::name) + "_" + what + ": " + Model::c_error());
}

// The C API with the models' own Kokkos handling, finalized in the order they were started.
void run_c(const std::vector<float>& xa, std::vector<float>& ya, const std::vector<float>& xb,
           std::vector<float>& yb) {
  check<ModelA>(ModelA::c_initialize(), "initialize");
  check<ModelB>(ModelB::c_initialize(), "initialize");
  check<ModelA>(ModelA::c_forward(xa.data(), ya.data()), "forward_host");
  check<ModelB>(ModelB::c_forward(xb.data(), yb.data()), "forward_host");
  check<ModelA>(ModelA::c_finalize(), "finalize");
  // A is gone; B, and the Kokkos it runs on, must still be there.
  if (!Kokkos::is_initialized()) throw std::runtime_error("Kokkos stopped with B still in use");
  std::fill(yb.begin(), yb.end(), 0.0f);
  check<ModelB>(ModelB::c_forward(xb.data(), yb.data()), "forward_host");
  check<ModelB>(ModelB::c_finalize(), "finalize");
  std::printf("after the last finalize, Kokkos is %s\n",
              Kokkos::is_initialized() ? "still initialized" : "finalized");
}

}  // namespace

int main(int argc, char** argv) {
  try {
    const Options options = parse(argc, argv);
    const auto xa = sample::read_floats(options.input_a, ModelA::input_count());
    const auto xb = sample::read_floats(options.input_b, ModelB::input_count());
    std::vector<float> ya(ModelA::output_count()), yb(ModelB::output_count());
    if (options.api == "cpp") {
      Kokkos::initialize(argc, argv);
      ModelA::initialize();
      ModelB::initialize();
      ya = ModelA::forward_views(xa);
      yb = ModelB::forward_views(xb);
      ModelA::finalize();
      ModelB::finalize();
      Kokkos::finalize();
    } else {
      run_c(xa, ya, xb, yb);
    }
    sample::write_floats(options.output_a, ya.data(), ya.size());
    sample::write_floats(options.output_b, yb.data(), yb.size());
    std::printf("models %s and %s ran through the %s API\n", ModelA::name, ModelB::name,
                options.api.c_str());
  } catch (const std::exception& e) {
    std::fprintf(stderr, "two_models: %s\n", e.what());
    return 1;
  }
  return 0;
}
