// lapis::attention on the transformer encoder's shape, see CMakeLists.txt: max |out - ref| /
// max |ref| against float64 on sampled heads (NaN-poisoned output first), and the median time
// of a launch (5 launches back to back a sample).
#include <Kokkos_Core.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include "lapis/attention.hpp"

namespace {

constexpr int B = 32, L = 512;
using Heads = Kokkos::View<float****, Kokkos::LayoutRight, Kokkos::CudaSpace>;

template <int D>
Heads random_heads(const char* name, float scale, unsigned seed) {
  Heads x(std::string(name), B, 256 / D, L, D);
  auto host = Kokkos::create_mirror_view(x);
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, scale);
  for (size_t i = 0; i < host.size(); ++i) host.data()[i] = normal(rng);
  Kokkos::deep_copy(x, host);
  return x;
}

template <int D>
double sampled_error(const Heads& q, const Heads& k, const Heads& v, const Heads& out,
                     bool causal) {
  auto hq = Kokkos::create_mirror_view_and_copy(Kokkos::HostSpace(), q);
  auto hk = Kokkos::create_mirror_view_and_copy(Kokkos::HostSpace(), k);
  auto hv = Kokkos::create_mirror_view_and_copy(Kokkos::HostSpace(), v);
  auto ho = Kokkos::create_mirror_view_and_copy(Kokkos::HostSpace(), out);
  double worst = 0, largest = 0;
  std::vector<double> p(L);
  for (int s = 0; s < 6; ++s) {
    const int b = (s * 13 + 5) % B, h = (s * 3 + 1) % (256 / D);
    for (int i = 0; i < L; ++i) {
      const int end = causal ? i + 1 : L;
      double top = -INFINITY, sum = 0;
      for (int j = 0; j < end; ++j) {
        double x = 0;
        for (int d = 0; d < D; ++d) x += double(hq(b, h, i, d)) * double(hk(b, h, j, d));
        p[j] = x;
        top = std::max(top, x);
      }
      for (int j = 0; j < end; ++j) sum += p[j] = std::exp(p[j] - top);
      for (int d = 0; d < D; ++d) {
        double o = 0;
        for (int j = 0; j < end; ++j) o += p[j] * double(hv(b, h, j, d));
        o /= sum;
        const double got = ho(b, h, i, d);
        if (std::isnan(got)) return INFINITY;
        worst = std::max(worst, std::fabs(got - o));
        largest = std::max(largest, std::fabs(o));
      }
    }
  }
  return worst / largest;
}

template <int D, lapis::Precision P>
void measure(const char* name, bool causal, int launches) {
  const Heads q = random_heads<D>("q", 1.0f / std::sqrt(float(D)), 1),
              k = random_heads<D>("k", 1.0f, 2), v = random_heads<D>("v", 1.0f, 3);
  Heads out("out", B, 256 / D, L, D);
  Kokkos::deep_copy(out, std::nanf(""));
  const Kokkos::Cuda space;
  const auto launch = [&] {
    if (causal)
      lapis::attention_causal<D, D, Kokkos::Cuda, P>(space, "attention", q, k, v, out);
    else
      lapis::attention<D, D, Kokkos::Cuda, P>(space, "attention", q, k, v, out);
  };
  launch();
  space.fence();
  const double error = sampled_error<D>(q, k, v, out, causal);
  for (int i = 0; i < 5; ++i) launch();
  space.fence();
  std::vector<double> ms;
  for (int s = 0; s < launches; ++s) {
    const auto start = std::chrono::steady_clock::now();
    for (int i = 0; i < 5; ++i) launch();
    space.fence();
    ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() -
                                                           start).count() / 5);
  }
  std::sort(ms.begin(), ms.end());
  const double median = ms[ms.size() / 2];
  const double flop = 4.0 * B * 256 * double(L) * L * (causal ? 0.5 : 1.0);
  std::printf("D %2d %-5s %-6s %8.4f ms %7.1f TFLOP/s  error %.2e\n", D, name,
              causal ? "causal" : "none", median, flop / median * 1e-9, error);
}

}  // namespace

int main(int argc, char** argv) {
  Kokkos::initialize(argc, argv);
  {
    const int launches = argc > 1 ? std::atoi(argv[1]) : 50;
    measure<32, lapis::Precision::fp32>("fp32", false, launches);
    measure<32, lapis::Precision::tf32>("tf32", false, launches);
    measure<32, lapis::Precision::fp32>("fp32", true, launches);
    measure<64, lapis::Precision::fp32>("fp32", false, launches);
    measure<64, lapis::Precision::tf32>("tf32", false, launches);
  }
  Kokkos::finalize();
}
