// lapis::erf (scalar.hpp) in float32 against erf in double: within 2 ulp of the correctly
// rounded value at every 61st float of [-12, 12], at every float within 4096 ulp of the
// switch between its two polynomials (|a| = 0.927734375), and at the special values; called
// in a loop over an array, as a GELU kernel calls it (the loop the compiler vectorises).
// Prints "N failures".
#include <Kokkos_Core.hpp>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <vector>

#include "lapis/scalar.hpp"

namespace {

float from_bits(uint32_t bits) {
  float x;
  std::memcpy(&x, &bits, sizeof(x));
  return x;
}

__attribute__((noinline)) void erf_all(const std::vector<float>& in, std::vector<float>& out) {
  const float* x = in.data();
  float* y = out.data();
  for (size_t i = 0; i < in.size(); ++i) y[i] = lapis::erf(x[i]);
}

}  // namespace

int main() {
  std::vector<float> points;
  for (uint32_t bits = 0; bits <= 0x41400000u; bits += 61) {   // 0 .. 12
    points.push_back(from_bits(bits));
    points.push_back(-from_bits(bits));
  }
  for (int32_t d = -4096; d <= 4096; ++d) {
    points.push_back(from_bits(uint32_t(0x3F6D8000 + d)));
    points.push_back(-from_bits(uint32_t(0x3F6D8000 + d)));
  }
  std::vector<float> values(points.size());
  erf_all(points, values);
  int failures = 0;
  double worst = 0;
  for (size_t i = 0; i < points.size(); ++i) {
    const double reference = std::erf(double(points[i]));
    const float rounded = float(reference);
    const double ulp = std::fabs(double(std::nextafter(rounded, 2.0f)) - double(rounded));
    const double error = std::fabs(double(values[i]) - reference) / (ulp > 0 ? ulp : 1e-45);
    if (error > worst) worst = error;
    if (error > 2.0) {
      if (++failures <= 10)
        std::printf("erf(%.9g) = %.9g, want %.9g (%.2f ulp)\n", points[i], values[i], reference,
                    error);
    }
  }
  const float specials[][2] = {{INFINITY, 1.0f}, {-INFINITY, -1.0f}, {0.0f, 0.0f},
                               {100.0f, 1.0f},   {-100.0f, -1.0f}};
  for (const auto& special : specials) {
    const float value = lapis::erf(special[0]);
    if (value != special[1] || std::signbit(value) != std::signbit(special[1])) {
      ++failures;
      std::printf("erf(%g) = %g, want %g\n", special[0], value, special[1]);
    }
  }
  if (!std::isnan(lapis::erf(NAN))) {
    ++failures;
    std::printf("erf(nan) is not nan\n");
  }
  if (!std::signbit(lapis::erf(-0.0f))) {
    ++failures;
    std::printf("erf(-0) lost its sign\n");
  }
  std::printf("%zu points, worst %.3f ulp\n%d failures\n", points.size(), worst, failures);
  return failures ? 1 : 0;
}
