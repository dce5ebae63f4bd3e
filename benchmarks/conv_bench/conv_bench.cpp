// ResNet18's convolutions through lapis::detail's GPU tiles, one variant at a time: error
// against the portable kernel run in float64 (max |out - ref| / max |ref|, NaN-poisoned output
// first), and the median time of one launch. See CMakeLists.txt.
#include <Kokkos_Core.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <string>
#include <vector>

#include "variants.hpp"

namespace {

struct Layer {
  const char* name;
  int count;  // how many ResNet18 has
  int channels_in, size_in, channels_out, kernel, stride, pad;
  bool relu, residual;
};

const Layer layers[] = {
    {"conv1 7x7/2", 1, 3, 224, 64, 7, 2, 3, true, false},
    {"layer1 3x3", 4, 64, 56, 64, 3, 1, 1, true, true},
    {"layer2.0.conv1", 1, 64, 56, 128, 3, 2, 1, true, false},
    {"layer2 3x3", 3, 128, 28, 128, 3, 1, 1, true, true},
    {"layer2 down", 1, 64, 56, 128, 1, 2, 0, false, false},
    {"layer3.0.conv1", 1, 128, 28, 256, 3, 2, 1, true, false},
    {"layer3 3x3", 3, 256, 14, 256, 3, 1, 1, true, true},
    {"layer3 down", 1, 128, 28, 256, 1, 2, 0, false, false},
    {"layer4.0.conv1", 1, 256, 14, 512, 3, 2, 1, true, false},
    {"layer4 3x3", 3, 512, 7, 512, 3, 1, 1, true, true},
    {"layer4 down", 1, 256, 14, 512, 1, 2, 0, false, false},
    {"fc", 1, 512, 1, 1000, 1, 1, 0, false, false},
};

template <class T>
void fill(const T& view, uint32_t seed, double scale) {
  using V = typename T::value_type;
  auto flat = Kokkos::View<V*, Memory, Kokkos::MemoryUnmanaged>(view.data(), view.size());
  Kokkos::parallel_for(
      "fill", Kokkos::RangePolicy<Space>(0, view.size()), KOKKOS_LAMBDA(const int64_t i) {
        uint32_t h = uint32_t(i) * 2654435761u ^ seed * 2246822519u;
        h ^= h >> 15;
        h *= 2246822519u;
        h ^= h >> 13;
        h *= 3266489917u;
        h ^= h >> 16;
        flat(i) = V(scale * (double(h) / 4294967296.0 * 2.0 - 1.0));
      });
}

template <class Dst, class Src>
void convert(const Dst& dst, const Src& src) {
  using V = typename Dst::value_type;
  Kokkos::parallel_for(
      "convert", Kokkos::RangePolicy<Space>(0, dst.size()),
      KOKKOS_LAMBDA(const int64_t i) { dst.data()[i] = V(src.data()[i]); });
}

using Runner = void (*)(const View4<float>&, const View5<float>&, const View5<float>&,
                        const View4<float>&, const lapis::ConvGeometry&,
                        const Kokkos::View<float*, Memory>&, const View4<const float>&, bool);
const char* variant_names[] = {"fma",   "tf32",       "tf32_64x32", "tf32_64x32_1",
                               "async", "async_k8s4", "split_k8s3", "split_k8s2"};
Runner runners[] = {run_variant<0>, run_variant<1>, run_variant<2>, run_variant<3>,
                    run_variant<4>, run_variant<5>, run_variant<6>, run_variant<7>};
}  // namespace

int main(int argc, char** argv) {
  Kokkos::ScopeGuard guard(argc, argv);
  const int batch = argc > 1 ? std::atoi(argv[1]) : 64;
  const int launches = argc > 2 ? std::atoi(argv[2]) : 20;
  const int variants = 8;
  // argv[3]: a comma-free mask of the variants to run ("01234567"); argv[4]: one layer's index.
  const std::string mask = argc > 3 ? argv[3] : "01234567";
  const int only_layer = argc > 4 ? std::atoi(argv[4]) : -1;
  std::vector<double> totals(variants, 0.0);
  std::printf("batch %d\n%-16s %5s %8s", batch, "layer", "count", "GFLOP");
  for (int v = 0; v < variants; ++v)
    if (mask.find(char('0' + v)) != std::string::npos)
      std::printf(" %12s_ms %6s_TF %10s_err", variant_names[v], "", "");
  std::printf("\n");
  int index = -1;
  for (const Layer& l : layers) {
    if (++index != only_layer && only_layer >= 0) continue;
    const int size_out = (l.size_in + 2 * l.pad - l.kernel) / l.stride + 1;
    const int blocks = (l.channels_out + 7) / 8;
    View4<float> in("in", batch, l.channels_in, l.size_in, l.size_in);
    View5<float> w("w", blocks, l.channels_in, l.kernel, l.kernel, 8);
    Kokkos::View<float*, Memory> bias("bias", l.channels_out);
    View4<float> residual_storage("residual", l.residual ? batch : 0, l.channels_out, size_out,
                                  size_out);
    View4<const float> residual = residual_storage;
    if (!l.residual) residual = View4<const float>();
    View4<float> out("out", batch, l.channels_out, size_out, size_out);
    fill(in, 1, 1.0);
    fill(w, 2, 1.0 / std::sqrt(double(l.channels_in * l.kernel * l.kernel)));
    View5<float> split;
    if (l.channels_in % 8 == 0 && l.kernel > 1) {  // as the exporter makes them
      split = View5<float>("split", (blocks + 1) / 2, l.kernel, l.kernel, l.channels_in / 8, 256);
      lapis::split_tf32_weight<Space>(Space(), "split", w, split);
    }
    fill(bias, 3, 0.1);
    if (l.residual) fill(residual_storage, 4, 1.0);
    // float64 reference through the portable kernel
    View4<double> in_d("in_d", batch, l.channels_in, l.size_in, l.size_in);
    View5<double> w_d("w_d", blocks, l.channels_in, l.kernel, l.kernel, 8);
    Kokkos::View<double*, Memory> bias_d("bias_d", l.channels_out);
    View4<double> residual_d("residual_d", l.residual ? batch : 0, l.channels_out, size_out,
                             size_out);
    View4<double> ref("ref", batch, l.channels_out, size_out, size_out);
    convert(in_d, in);
    convert(w_d, w);
    convert(bias_d, bias);
    if (l.residual) convert(residual_d, residual_storage);
    const lapis::ConvGeometry g{l.stride, l.stride, 1, 1, l.pad, l.pad};
    lapis::detail::conv2d_nchw_portable<Space>(
        Space(), "reference", in_d, w_d, ref, g, lapis::ConvInit::bias, bias_d,
        l.residual ? View4<const double>(residual_d) : View4<const double>(), l.relu);
    auto ref_h = Kokkos::create_mirror_view_and_copy(Kokkos::HostSpace(), ref);
    double ref_max = 0;
    for (size_t i = 0; i < ref_h.size(); ++i) ref_max = std::max(ref_max, std::abs(ref_h.data()[i]));
    const double flop = 2.0 * batch * l.channels_out * size_out * size_out * l.channels_in *
                        l.kernel * l.kernel;
    std::printf("%-16s %5d %8.2f", l.name, l.count, flop * 1e-9);
    for (int v = 0; v < variants; ++v) {
      if (mask.find(char('0' + v)) == std::string::npos) continue;
      Kokkos::deep_copy(out, std::numeric_limits<float>::quiet_NaN());
      runners[v](in, w, split, out, g, bias, residual, l.relu);
      Kokkos::fence();
      auto out_h = Kokkos::create_mirror_view_and_copy(Kokkos::HostSpace(), out);
      double err = 0;
      for (size_t i = 0; i < out_h.size(); ++i) {
        const double d = std::abs(double(out_h.data()[i]) - ref_h.data()[i]);
        if (!(d <= err)) err = std::isnan(d) ? INFINITY : d;
      }
      err /= ref_max;
      std::vector<double> times;
      for (int i = 0; i < launches + 3; ++i) {
        Kokkos::fence();
        Kokkos::Timer timer;
        runners[v](in, w, split, out, g, bias, residual, l.relu);
        Kokkos::fence();
        if (i >= 3) times.push_back(timer.seconds() * 1e3);
      }
      std::sort(times.begin(), times.end());
      const double ms = times[times.size() / 2];
      totals[v] += ms * l.count;
      std::printf(" %15.4f %9.1f %14.1e", ms, flop / ms * 1e-9, err);
    }
    std::printf("\n");
    std::fflush(stdout);
  }
  std::printf("%-16s %5s %8s", "ResNet18 total", "", "");
  for (int v = 0; v < variants; ++v)
    if (mask.find(char('0' + v)) != std::string::npos)
      std::printf(" %15.4f %9s %14s", totals[v], "", "");
  std::printf("\n");
  return 0;
}
