// Unit test of lapis/weight_blob.hpp: reads a blob written by weights/blob.py (tests/
// test_weight_blob.py writes it with the tensors listed below) and checks values and errors.
//   test_weight_blob BLOB_FILE
#include <Kokkos_Core.hpp>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <memory>
#include <string>
#include <vector>

#include "lapis/weight_blob.hpp"

namespace {

int checks = 0, failures = 0;

void check(bool ok, const std::string& what) {
  ++checks;
  if (!ok) {
    ++failures;
    std::printf("FAIL: %s\n", what.c_str());
  }
}

template <class F>
void check_throws(F&& f, const std::string& expected, const std::string& what) {
  try {
    f();
    check(false, what + ": no exception");
  } catch (const std::runtime_error& e) {
    check(std::string(e.what()).find(expected) != std::string::npos,
          what + ": message '" + e.what() + "' lacks '" + expected + "'");
  }
}

template <class T>
using view = Kokkos::View<T, Kokkos::LayoutRight, Kokkos::DefaultExecutionSpace::memory_space>;

template <class V>
auto on_host(const V& v) {
  return Kokkos::create_mirror_view_and_copy(Kokkos::HostSpace(), v);
}

const char* long_name =
    "layerlayerlayerlayerlayerlayerlayerlayerlayerlayerlayerlayerlayerlayerlayerlayer";

// The tensors test_weight_blob.py writes, in blob order.
void check_values(const lapis::WeightBlob& blob, const std::string& how) {
  check(blob.count() == 8, how + ": count");
  view<float****> conv("conv", 4, 3, 2, 2);
  lapis::load_weight(blob, 0, "conv.weight", conv);
  auto c = on_host(conv);
  bool ok = true;
  for (int i = 0; i < 48; ++i) ok = ok && c.data()[i] == float(i) * 0.25f - 3.0f;
  check(ok && c(3, 2, 1, 1) == 47 * 0.25f - 3.0f, how + ": conv.weight values");

  view<int64_t*> steps("steps", 5);
  lapis::load_weight(blob, 1, "steps", steps);
  check(on_host(steps)(4) == int64_t(40000000000), how + ": int64 values");

  view<bool*> mask("mask", 3);
  lapis::load_weight(blob, 2, "mask", mask);
  auto m = on_host(mask);
  check(m(0) && !m(1) && m(2), how + ": bool values");

  view<double> scale("scale");
  lapis::load_weight(blob, 3, "scale", scale);
  check(on_host(scale)() == 2.5, how + ": rank-0 float64");

  view<uint16_t*> half("half", 4);   // float16 bit patterns: 0.5, -1, 2, 1024
  lapis::load_weight(blob, 4, "half", half);
  auto h = on_host(half);
  check(h(0) == 0x3800 && h(1) == 0xBC00 && h(2) == 0x4000 && h(3) == 0x6400,
        how + ": float16 bits");

  view<float*> named("named", 2);   // stored under its first 55 bytes
  lapis::load_weight(blob, 5, long_name, named);
  check(on_host(named)(1) == 2.0f, how + ": long name");

  view<int32_t**> ints("ints", 2, 2);
  lapis::load_weight(blob, 6, "ints", ints);
  check(on_host(ints)(1, 1) == -4, how + ": int32 values");

  view<int8_t*> bytes("bytes", 3);
  lapis::load_weight(blob, 7, "bytes", bytes);
  check(on_host(bytes)(0) == -1 && on_host(bytes)(2) == 127, how + ": int8 values");

  view<float**> reshaped("reshaped", 12, 4);   // only the element count has to match
  lapis::load_weight(blob, 0, "conv.weight", reshaped);
  check(on_host(reshaped)(11, 3) == 47 * 0.25f - 3.0f, how + ": another rank, same count");
}

void check_errors(const lapis::WeightBlob& blob, const std::vector<unsigned char>& raw) {
  check_throws([&] { lapis::load_weight(blob, 0, "conv.weight", view<float*>("x", 7)); },
               "has 48 elements in the blob", "element count mismatch");
  check_throws([&] { lapis::load_weight(blob, 0, "conv.weight", view<double*>("x", 48)); },
               "is float32 in the blob, but the code expects float64 elements",
               "element type mismatch");
  check_throws([&] { lapis::load_weight(blob, 0, "conv.weight", view<int32_t*>("x", 48)); },
               "is float32 in the blob, but the code expects int32 elements",
               "element type mismatch of the same size");
  check_throws([&] { lapis::check_weight(blob, 0, "conv.weight", view<float**>("x", 12, 4)); },
               "has shape [4, 3, 2, 2] in the blob, but the code expects [12, 4]",
               "shape mismatch (load_weights)");
  check_throws([&] { lapis::load_weight(blob, 1, "other", view<int64_t*>("x", 5)); },
               "is 'steps', but the code expects 'other'", "name mismatch");
  check_throws([&] { lapis::load_weight(blob, 99, "steps", view<int64_t*>("x", 5)); },
               "holds 8 tensors", "index out of range");
  check_throws([] { lapis::WeightBlob::from_file("/nonexistent/model.weights"); },
               "cannot open weight file '/nonexistent/model.weights'", "missing file");
  const unsigned char junk[32] = {'n', 'o', 't', ' ', 'a', ' ', 'b', 'l', 'o', 'b'};
  check_throws([&] { lapis::WeightBlob::from_memory(junk, sizeof(junk)); },
               "is not a lapis weight blob", "bad magic");
  check_throws([&] { lapis::WeightBlob::from_memory(raw.data(), 100); }, "is truncated",
               "truncated index");
  const std::vector<unsigned char> cut(raw.begin(), raw.begin() + 16 + 8 * 128 + 64);
  check_throws([&] {
    lapis::load_weight(lapis::WeightBlob::from_memory(cut.data(), cut.size()), 0, "conv.weight",
                       view<float****>("x", 4, 3, 2, 2));
  }, "corrupt or truncated", "truncated data");
}

void check_weights_path() {
  check_throws([] { lapis::weights_path("LAPIS_TEST_WEIGHTS_UNSET", "/nonexistent/m.weights"); },
               "set LAPIS_TEST_WEIGHTS_UNSET to the path", "missing fallback names the variable");
  setenv("LAPIS_TEST_WEIGHTS", "/some/where.weights", 1);
  check(lapis::weights_path("LAPIS_TEST_WEIGHTS", "/nonexistent/m.weights") ==
            "/some/where.weights", "environment variable overrides the compiled-in path");
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: test_weight_blob BLOB_FILE\n");
    return 2;
  }
  const std::string path = argv[1];
  Kokkos::initialize(argc, argv);
  try {
    check_values(lapis::WeightBlob::from_file(path), "from_file");

    std::ifstream file(path, std::ios::binary);
    const std::vector<unsigned char> raw((std::istreambuf_iterator<char>(file)),
                                         std::istreambuf_iterator<char>());
    check_values(lapis::WeightBlob::from_memory(raw.data(), raw.size()), "from_memory");

    // A copy of a file-backed blob stays valid after the original is gone.
    auto original = std::make_unique<lapis::WeightBlob>(lapis::WeightBlob::from_file(path));
    const lapis::WeightBlob copy = *original;
    original.reset();
    check_values(copy, "copy");

    check_errors(copy, raw);
    check_weights_path();
  } catch (const std::exception& e) {
    check(false, std::string("unexpected exception: ") + e.what());
  }
  Kokkos::finalize();
  std::printf("weight_blob: %d checks, %d failures\n", checks, failures);
  return failures == 0 ? 0 : 1;
}
