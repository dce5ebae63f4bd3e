// The wide MLP's layers (integration_tests/models.py wide_mlp at batch 65536) through
// gemm_tf32.hpp, one tile variant at a time: max |out - ref| / max |ref| against float64 on
// sampled rows (NaN-poisoned output first), and the median time of a launch (launches back to
// back, as in a CUDA graph, 5 a sample). See CMakeLists.txt.
#include <Kokkos_Core.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include "variants.hpp"

namespace {

using lapis::Activation;
using lapis::ConvInit;
using lapis::Precision;
using lapis::detail::GemmProblem;
using Matrix = Kokkos::View<float**, Kokkos::LayoutRight, Kokkos::CudaSpace>;
using Vector = Kokkos::View<float*, Kokkos::CudaSpace>;

constexpr int sampled_rows = 256;

Matrix random_matrix(const char* name, int rows, int columns, float scale, unsigned seed) {
  Matrix m(std::string(name), rows, columns);
  auto host = Kokkos::create_mirror_view(m);
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> uniform(-scale, scale);
  for (int i = 0; i < rows; ++i)
    for (int j = 0; j < columns; ++j) host(i, j) = uniform(rng);
  Kokkos::deep_copy(m, host);
  return m;
}

double silu(double v) { return v / (1.0 + std::exp(-v)); }

// max |y - ref| / max |ref| over the sampled rows, ref = activation(x W^T + b) in float64; NaN
// (an unwritten output) gives infinity.
double sampled_error(const Matrix& x, const Matrix& w, const Vector& b, const Matrix& y,
                     Activation activation) {
  auto hx = Kokkos::create_mirror_view_and_copy(Kokkos::HostSpace(), x);
  auto hw = Kokkos::create_mirror_view_and_copy(Kokkos::HostSpace(), w);
  auto hb = Kokkos::create_mirror_view_and_copy(Kokkos::HostSpace(), b);
  auto hy = Kokkos::create_mirror_view_and_copy(Kokkos::HostSpace(), y);
  const int rows = int(x.extent(0)), depth = int(x.extent(1)), columns = int(w.extent(0));
  double worst = 0, largest = 0;
  for (int s = 0; s < sampled_rows; ++s) {
    const int m = int((int64_t(s) * 7919 + 13) % rows);
    for (int n = 0; n < columns; ++n) {
      double sum = hb(n);
      for (int k = 0; k < depth; ++k) sum += double(hx(m, k)) * double(hw(n, k));
      if (activation == Activation::silu) sum = silu(sum);
      if (activation == Activation::gelu) sum = 0.5 * sum * (1.0 + std::erf(sum / std::sqrt(2.0)));
      const double got = hy(m, n);
      if (std::isnan(got)) return INFINITY;
      worst = std::max(worst, std::fabs(got - sum));
      largest = std::max(largest, std::fabs(sum));
    }
  }
  return worst / largest;
}

template <class F>
double median_ms(F&& launch, int samples) {
  std::vector<double> times;
  launch();
  Kokkos::fence();
  for (int s = 0; s < samples; ++s) {
    const auto start = std::chrono::steady_clock::now();
    for (int r = 0; r < 5; ++r) launch();
    Kokkos::fence();
    times.push_back(
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start)
            .count() / 5);
  }
  std::sort(times.begin(), times.end());
  return times[times.size() / 2];
}

// GEMM_BENCH_VARIANTS=0,2,11 times those variants only (default: all).
bool chosen(const int v) {
  const char* const list = std::getenv("GEMM_BENCH_VARIANTS");
  if (!list) return true;
  const std::string wanted = std::string(",") + list + ",";
  return wanted.find("," + std::to_string(v) + ",") != std::string::npos;
}

void poison(const Matrix& y) { Kokkos::deep_copy(y, std::nanf("")); }

void layer_table(const char* layer, const Matrix& x, const Matrix& w, const Vector& b,
                 const Matrix& y, Activation activation, int samples) {
  const Kokkos::Cuda space;
  const double gflop = 2.0 * x.extent(0) * x.extent(1) * w.extent(0) * 1e-9;
  const GemmProblem p{x.data(), w.data(), y.data(), b.data(), int64_t(x.stride(0)),
                      int64_t(w.stride(0)), int64_t(y.stride(0)), 0, 0, 0,
                      int(x.extent(0)), int(w.extent(0)), int(x.extent(1)), 1,
                      ConvInit::bias, activation};
  for (int v = 0; gemm_bench::variant_name(v); ++v) {
    if (!chosen(v) || !*gemm_bench::variant_name(v)) continue;
    double ms[2], error[2];
    for (int precision = 0; precision < 2; ++precision) {
      const auto launch = [&] {
        if (precision == 0)
          gemm_bench::run_variant<Precision::fp32>(v, space, p);
        else
          gemm_bench::run_variant<Precision::tf32>(v, space, p);
      };
      poison(y);
      launch();
      Kokkos::fence();
      error[precision] = sampled_error(x, w, b, y, activation);
      ms[precision] = median_ms(launch, samples);
    }
    std::printf("| %s | %s | %.3f | %.1f | %.1e | %.3f | %.1f | %.1e |\n", layer,
                gemm_bench::variant_name(v), ms[0], gflop / ms[0], error[0], ms[1],
                gflop / ms[1], error[1]);
    std::fflush(stdout);
  }
}

using Matrix16 = Kokkos::View<lapis::bfloat16**, Kokkos::LayoutRight, Kokkos::CudaSpace>;

Matrix16 to_bf16(const Matrix& m) {
  Matrix16 h(std::string(m.label()) + "_bf16", m.extent(0), m.extent(1));
  lapis::round_to_bfloat16(Kokkos::Cuda(), "to_bf16", m, h);
  return h;
}

// GEMM_BENCH_BF16=0,2 times those bfloat16 variants only (default: all).
bool chosen_bf16(const int v) {
  const char* const list = std::getenv("GEMM_BENCH_BF16");
  if (!list) return true;
  const std::string wanted = std::string(",") + list + ",";
  return wanted.find("," + std::to_string(v) + ",") != std::string::npos;
}

// The bfloat16 tiles on x and W rounded to bfloat16, C in bfloat16 (a hidden layer of a chain)
// and in float; error against float64 on the float operands.
void bf16_table(const char* layer, const Matrix& x, const Matrix& w, const Vector& b,
                const Matrix& y, Activation activation, int samples) {
  const Kokkos::Cuda space;
  const double gflop = 2.0 * x.extent(0) * x.extent(1) * w.extent(0) * 1e-9;
  const Matrix16 x16 = to_bf16(x), w16 = to_bf16(w);
  const Matrix16 y16("y16", y.extent(0), y.extent(1));
  GemmProblem p{nullptr, nullptr, y.data(), b.data(), int64_t(x.stride(0)),
                int64_t(w.stride(0)), int64_t(y.stride(0)), 0, 0, 0,
                int(x.extent(0)), int(w.extent(0)), int(x.extent(1)), 1,
                ConvInit::bias, activation};
  p.a16 = x16.data();
  p.b16 = w16.data();
  for (int v = 0; gemm_bench::bf16_variant_name(v); ++v) {
    if (!chosen_bf16(v) || !*gemm_bench::bf16_variant_name(v)) continue;
    double ms[2], error[2];
    for (int half = 0; half < 2; ++half) {
      GemmProblem q = p;
      if (half) {
        q.c = nullptr;
        q.c16 = y16.data();
      }
      const auto launch = [&] { gemm_bench::run_bf16_variant(v, space, q); };
      if (half)  // NaN; y keeps the float run's output, the next layer's input
        Kokkos::deep_copy(y16, lapis::bfloat16{0x7fc0});
      else
        poison(y);
      launch();
      Kokkos::fence();
      if (half) {
        const Matrix widened("widened", y.extent(0), y.extent(1));
        Kokkos::parallel_for(
            "widen", Kokkos::RangePolicy<Kokkos::Cuda>(0, int64_t(y.extent(0)) * y.extent(1)),
            KOKKOS_LAMBDA(const int64_t i) {
              widened.data()[i] = lapis::to_float(y16.data()[i]);
            });
        error[half] = sampled_error(x, w, b, widened, activation);
      } else {
        error[half] = sampled_error(x, w, b, y, activation);
      }
      ms[half] = median_ms(launch, samples);
    }
    std::printf("| %s | %s | %.3f | %.1f | %.1e | %.3f | %.1f | %.1e |\n", layer,
                gemm_bench::bf16_variant_name(v), ms[0], gflop / ms[0], error[0], ms[1],
                gflop / ms[1], error[1]);
    std::fflush(stdout);
  }
}

// The transformer encoder's linear layers (d 256, feed-forward 1024; batch 32 x 512 tokens)
// through `table` (layer_table or bf16_table): the QKV projection, linear1 with GELU, linear2.
template <class Table>
void transformer_tables(const Table& table, const int samples) {
  const int tokens = 16384;
  const Matrix t0 = random_matrix("t0", tokens, 256, 1.0f, 6);
  const Matrix t1 = random_matrix("t1", tokens, 1024, 1.0f, 7);
  const Matrix wqkv = random_matrix("wqkv", 768, 256, 0.0625f, 8);
  const Matrix wf1 = random_matrix("wf1", 1024, 256, 0.0625f, 9);
  const Matrix wf2 = random_matrix("wf2", 256, 1024, 0.03125f, 10);
  const Matrix bt = random_matrix("bt", 1, 1024, 0.1f, 11);
  const Vector bias_t(bt.data(), 1024);
  const Matrix o768("o768", tokens, 768), o1024("o1024", tokens, 1024), o256("o256", tokens, 256);
  table("16384 x 256 -> 768 (in projection)", t0, wqkv, bias_t, o768, Activation::none, samples);
  table("16384 x 256 -> 1024 GELU (linear1)", t0, wf1, bias_t, o1024, Activation::gelu, samples);
  table("16384 x 1024 -> 256 (linear2)", t1, wf2, bias_t, o256, Activation::none, samples);
}

// The head as it ran before linear_rows: one thread an output, the dot product in order.
void head_one_thread(const Matrix& x, const Matrix& w, const Vector& b, const Matrix& y) {
  const int64_t rows = x.extent(0), depth = x.extent(1), columns = w.extent(0);
  Kokkos::parallel_for(
      "head_one_thread", Kokkos::RangePolicy<Kokkos::Cuda>(0, rows * columns),
      KOKKOS_LAMBDA(const int64_t i) {
        const int64_t m = i / columns, n = i % columns;
        float sum = b(n);
        for (int64_t k = 0; k < depth; ++k) sum += x(m, k) * w(n, k);
        y(m, n) = sum;
      });
}

}  // namespace

int main(int argc, char** argv) {
  Kokkos::ScopeGuard guard(argc, argv);
  const int rows = argc > 1 ? std::atoi(argv[1]) : 65536;
  const int samples = argc > 2 ? std::atoi(argv[2]) : 20;
  const Matrix x0 = random_matrix("x0", rows, 16, 1.0f, 1);
  const Matrix w0 = random_matrix("w0", 512, 16, 0.25f, 2);
  const Matrix w1 = random_matrix("w1", 512, 512, 0.044f, 3);
  const Matrix w2 = random_matrix("w2", 1, 512, 0.044f, 4);
  const Matrix b0m = random_matrix("b0", 1, 512, 0.1f, 5);
  const Vector b0(b0m.data(), 512), b2(std::string("b2"), 1);
  const Matrix h1("h1", rows, 512), h2("h2", rows, 512), out("out", rows, 1);
  std::printf("rows %d; ms a launch (median of %d samples of 5 back to back); error "
              "against float64 on %d rows\n\n",
              rows, samples, sampled_rows);
  std::printf("| layer | tiles | fp32 ms | fp32 TFLOP/s | fp32 error | tf32 ms | tf32 TFLOP/s | "
              "tf32 error |\n|---|---|---|---|---|---|---|---|\n");
  layer_table("16 -> 512 SiLU", x0, w0, b0, h1, Activation::silu, samples);
  layer_table("16 -> 512 none", x0, w0, b0, h1, Activation::none, samples);
  layer_table("512 -> 512 SiLU", h1, w1, b0, h2, Activation::silu, samples);
  layer_table("512 -> 512 none", h1, w1, b0, h2, Activation::none, samples);
  transformer_tables(layer_table, samples);

  std::printf("\nbfloat16 operands (rounded from the same matrices)\n\n| layer | tiles | C float: ms "
              "| TFLOP/s | error | C bfloat16: ms | TFLOP/s | error |\n"
              "|---|---|---|---|---|---|---|---|\n");
  bf16_table("16 -> 512 SiLU", x0, w0, b0, h1, Activation::silu, samples);
  bf16_table("512 -> 512 SiLU", h1, w1, b0, h2, Activation::silu, samples);
  bf16_table("512 -> 512 none", h1, w1, b0, h2, Activation::none, samples);
  transformer_tables(bf16_table, samples);

  const Kokkos::Cuda space;
  const double gflop = 2.0 * rows * 512 * 1e-9;
  poison(out);
  head_one_thread(h2, w2, b2, out);
  const double e_old = sampled_error(h2, w2, b2, out, Activation::none);
  const double ms_old = median_ms([&] { head_one_thread(h2, w2, b2, out); }, samples);
  poison(out);
  const auto rows_launch = [&] {
    lapis::detail::linear_rows(space, "head_rows", h2, w2, b2, out, ConvInit::bias,
                               Activation::none);
  };
  rows_launch();
  Kokkos::fence();
  const double e_new = sampled_error(h2, w2, b2, out, Activation::none);
  const double ms_new = median_ms(rows_launch, samples);
  std::printf("\n| head 512 -> 1 | ms | GFLOP/s | GB/s reading x | error |\n|---|---|---|---|---|\n");
  std::printf("| one thread an output | %.4f | %.0f | %.0f | %.1e |\n", ms_old, gflop / ms_old * 1e3,
              rows * 512 * 4e-6 / ms_old, e_old);
  std::printf("| linear_rows (a warp a row) | %.4f | %.0f | %.0f | %.1e |\n", ms_new,
              gflop / ms_new * 1e3, rows * 512 * 4e-6 / ms_new, e_new);
  return 0;
}
