// Runs lapis::linear_packed and lapis::matmul (kokkos_support/lapis/gemm.hpp) on the cases of
// DIR/cases.txt, one a line: `NAME DTYPE M N K ACTIVATION INIT RESIDUAL`, ACTIVATION and INIT
// as the numbers of lapis::Activation and lapis::ConvInit, RESIDUAL 0 none, 1 before the
// activation, 2 after it. Each case reads DIR/NAME.x ([M][K]), .w (the weight packed as
// tuned_ops.pack_linear_weight packs it), .bt ([K][N], the weight transposed, for matmul),
// .bias ([N]), .y0 ([M][N], the start for INIT accumulate) and .res ([M][N]), and writes
// DIR/NAME.linear and DIR/NAME.matmul (C = x W^T from zero); raw little-endian arrays.
// DTYPE bfloat16: float operands and results, .w packed in bfloat16 bits as
// tuned_ops.pack_linear_weight_bf16 packs it, matmul<Precision::bf16>.
// Timing: `gemm_host_check --time M N K REPEATS` prints the median ms of a float matmul;
// `--time-linear M N K REPEATS` that of a float linear layer (weight packed, bias, SiLU);
// `--time-bf16` and `--time-linear-bf16` the same on bfloat16 operands.
#include <Kokkos_Core.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

#include "lapis/conv.hpp"
#include "lapis/gemm.hpp"

namespace {

template <class T>
using Matrix = Kokkos::View<T**, Kokkos::LayoutRight, Kokkos::HostSpace>;

template <class T>
std::vector<T> read(const std::string& path, size_t count) {
  std::vector<T> data(count);
  std::ifstream in(path, std::ios::binary);
  in.read(reinterpret_cast<char*>(data.data()), std::streamsize(count * sizeof(T)));
  if (!in) throw std::runtime_error("cannot read " + std::to_string(count) + " values from " + path);
  return data;
}

template <class T>
void write(const std::string& path, const T* data, size_t count) {
  std::ofstream out(path, std::ios::binary);
  out.write(reinterpret_cast<const char*>(data), std::streamsize(count * sizeof(T)));
}

template <class T>
Matrix<T> matrix(const std::string& label, const std::vector<T>& data, int64_t rows,
                 int64_t columns) {
  Matrix<T> m(label, rows, columns);
  std::copy(data.begin(), data.end(), m.data());
  return m;
}

template <class T>
void run_case(const std::string& base, int64_t m, int64_t n, int64_t k, int activation,
              int init, int residual) {
  constexpr int64_t P = lapis::gemm_host::panel_width<T>;
  const int64_t panels = (n + P - 1) / P;
  Kokkos::DefaultHostExecutionSpace space;
  const auto x = matrix<T>("x", read<T>(base + ".x", m * k), m, k);
  Kokkos::View<T***, Kokkos::LayoutRight, Kokkos::HostSpace> w("w", panels, k, P);
  const auto packed = read<T>(base + ".w", panels * k * P);
  std::copy(packed.begin(), packed.end(), w.data());
  const auto bt = matrix<T>("bt", read<T>(base + ".bt", k * n), k, n);
  Kokkos::View<T*, Kokkos::HostSpace> bias("bias", n);
  const auto b = read<T>(base + ".bias", n);
  std::copy(b.begin(), b.end(), bias.data());
  const auto y = matrix<T>("y", read<T>(base + ".y0", m * n), m, n);
  const auto res = matrix<T>("res", read<T>(base + ".res", m * n), m, n);
  const auto c = matrix<T>("c", std::vector<T>(m * n, T(-7)), m, n);
  const auto at = residual == 2 ? lapis::ResidualAt::after_activation
                                : lapis::ResidualAt::before_activation;
  if (residual)
    lapis::linear_packed(space, "check::linear", x, w, bias, res, y, lapis::ConvInit(init),
                         lapis::Activation(activation), at);
  else
    lapis::linear_packed(space, "check::linear", x, w, bias, y, lapis::ConvInit(init),
                         lapis::Activation(activation));
  lapis::matmul(space, "check::matmul", x, bt, c, lapis::MatmulInit::zero);
  space.fence();
  write(base + ".linear", y.data(), m * n);
  write(base + ".matmul", c.data(), m * n);
}

// --precision bf16: the float case with the weight in bfloat16 and the product's operands
// rounded to bfloat16.
void run_case_bf16(const std::string& base, int64_t m, int64_t n, int64_t k, int activation,
                   int init, int residual) {
  constexpr int64_t P = lapis::gemm_host::panel_width<float>;
  const int64_t panels = (n + P - 1) / P;
  Kokkos::DefaultHostExecutionSpace space;
  const auto x = matrix<float>("x", read<float>(base + ".x", m * k), m, k);
  Kokkos::View<lapis::bfloat16***, Kokkos::LayoutRight, Kokkos::HostSpace> w("w", panels, k, P);
  const auto packed = read<lapis::bfloat16>(base + ".w", panels * k * P);
  std::copy(packed.begin(), packed.end(), w.data());
  const auto bt = matrix<float>("bt", read<float>(base + ".bt", k * n), k, n);
  Kokkos::View<float*, Kokkos::HostSpace> bias("bias", n);
  const auto b = read<float>(base + ".bias", n);
  std::copy(b.begin(), b.end(), bias.data());
  const auto y = matrix<float>("y", read<float>(base + ".y0", m * n), m, n);
  const auto res = matrix<float>("res", read<float>(base + ".res", m * n), m, n);
  const auto c = matrix<float>("c", std::vector<float>(m * n, -7.0f), m, n);
  const auto at = residual == 2 ? lapis::ResidualAt::after_activation
                                : lapis::ResidualAt::before_activation;
  if (residual)
    lapis::linear_packed(space, "check::linear", x, w, bias, res, y, lapis::ConvInit(init),
                         lapis::Activation(activation), at);
  else
    lapis::linear_packed(space, "check::linear", x, w, bias, y, lapis::ConvInit(init),
                         lapis::Activation(activation));
  lapis::matmul<Kokkos::DefaultHostExecutionSpace, lapis::Precision::bf16>(
      space, "check::matmul", x, bt, c, lapis::MatmulInit::zero);
  space.fence();
  write(base + ".linear", y.data(), m * n);
  write(base + ".matmul", c.data(), m * n);
}

struct Timing {
  double median_ms, min_ms;
};

Timing summary(std::vector<double> times) {
  std::sort(times.begin(), times.end());
  return {times[times.size() / 2], times.front()};
}

Timing time_matmul(int64_t m, int64_t n, int64_t k, int repeats, bool bf16) {
  Matrix<float> a("a", m, k), b("b", k, n), c("c", m, n);
  Kokkos::deep_copy(a, 1.0f);
  Kokkos::deep_copy(b, 0.5f);
  Kokkos::DefaultHostExecutionSpace space;
  std::vector<double> times;
  for (int r = 0; r < repeats + 2; ++r) {
    const auto start = std::chrono::steady_clock::now();
    if (bf16)
      lapis::matmul<Kokkos::DefaultHostExecutionSpace, lapis::Precision::bf16>(
          space, "check::matmul", a, b, c, lapis::MatmulInit::zero);
    else
      lapis::matmul(space, "check::matmul", a, b, c, lapis::MatmulInit::zero);
    space.fence();
    const std::chrono::duration<double, std::milli> took = std::chrono::steady_clock::now() - start;
    if (r >= 2) times.push_back(took.count());
  }
  return summary(times);
}

// A linear layer y = silu(bias + x W^T), W packed (its panels hold ones: the values do not
// matter for time), x [M][K], y [M][N].
template <class W>
Timing time_linear(int64_t m, int64_t n, int64_t k, int repeats) {
  constexpr int64_t P = lapis::gemm_host::panel_width<float>;
  Matrix<float> x("x", m, k), y("y", m, n);
  Kokkos::View<W***, Kokkos::LayoutRight, Kokkos::HostSpace> w("w", (n + P - 1) / P, k, P);
  Kokkos::View<float*, Kokkos::HostSpace> bias("bias", n);
  Kokkos::deep_copy(x, 0.01f);
  if constexpr (std::is_same<W, float>::value) Kokkos::deep_copy(w, 0.5f);
  else Kokkos::deep_copy(w, lapis::to_bfloat16(0.5f));
  Kokkos::DefaultHostExecutionSpace space;
  std::vector<double> times;
  for (int r = 0; r < repeats + 2; ++r) {
    const auto start = std::chrono::steady_clock::now();
    lapis::linear_packed(space, "check::linear", x, w, bias, y, lapis::ConvInit::bias,
                         lapis::Activation::silu);
    space.fence();
    const std::chrono::duration<double, std::milli> took = std::chrono::steady_clock::now() - start;
    if (r >= 2) times.push_back(took.count());
  }
  return summary(times);
}

}  // namespace

// The instruction set the host kernel runs: 0 baseline, 1 AVX2, 2 AVX-512F, 3 AVX-512F with
// AVX512_BF16 (-1: portable).
int isa() {
#if defined(LAPIS_GEMM_HOST_TILES)
  return int(lapis::gemm_host::isa());
#else
  return -1;
#endif
}

int main(int argc, char** argv) {
  Kokkos::initialize(argc, argv);
  int status = 0;
  try {
    const std::vector<std::string> args(argv + 1, argv + argc);
    if (args.size() == 5 && args[0].rfind("--time", 0) == 0) {
      const int64_t m = std::stoll(args[1]), n = std::stoll(args[2]), k = std::stoll(args[3]);
      const int repeats = std::stoi(args[4]);
      const Timing t = args[0] == "--time"          ? time_matmul(m, n, k, repeats, false)
                       : args[0] == "--time-bf16"   ? time_matmul(m, n, k, repeats, true)
                       : args[0] == "--time-linear" ? time_linear<float>(m, n, k, repeats)
                                                    : time_linear<lapis::bfloat16>(m, n, k,
                                                                                   repeats);
      std::printf("median_ms=%.4f min_ms=%.4f gflops=%.2f best_gflops=%.2f isa=%d\n",
                  t.median_ms, t.min_ms, 2.0 * m * n * k / t.median_ms * 1e-6,
                  2.0 * m * n * k / t.min_ms * 1e-6, isa());
    } else if (args.size() == 1) {
      std::ifstream cases(args[0] + "/cases.txt");
      std::string line;
      while (std::getline(cases, line)) {
        std::istringstream fields(line);
        std::string name, dtype;
        int64_t m, n, k;
        int activation, init, residual;
        fields >> name >> dtype >> m >> n >> k >> activation >> init >> residual;
        const std::string base = args[0] + "/" + name;
        if (dtype == "float32")
          run_case<float>(base, m, n, k, activation, init, residual);
        else if (dtype == "bfloat16")
          run_case_bf16(base, m, n, k, activation, init, residual);
        else
          run_case<double>(base, m, n, k, activation, init, residual);
      }
    } else {
      throw std::runtime_error("usage: gemm_host_check DIR | --time[-linear] M N K REPEATS");
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "gemm_host_check: %s\n", e.what());
    status = 1;
  }
  Kokkos::finalize();
  return status;
}
