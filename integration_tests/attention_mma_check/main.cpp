// Runs lapis::attention* with LAPIS_ATTENTION_MMA on Kokkos::Serial: MmaAttention's staging,
// fragment indexing, masks and rounding, every thread of a team in turn, the mma emulated from
// the lanes' fragment elements (attention.hpp). DIR holds q.bin [B][H][L][D], k.bin [B][H][S][D],
// v.bin [B][H][S][DV] and, for the masks bool and float, mask.bin [B][1][1][S] (uint8) or
// [1][1][L][S] (float); the result goes to DIR/out.bin [B][H][L][DV]. Heads (D, DV): (8, 8),
// (16, 24), (32, 32) and (64, 64).
#include <Kokkos_Core.hpp>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>
#include <vector>

#include "lapis/attention.hpp"

namespace {

template <class T>
std::vector<T> read(const std::string& path, size_t count) {
  std::vector<T> data(count);
  std::ifstream in(path, std::ios::binary);
  in.read(reinterpret_cast<char*>(data.data()), count * sizeof(T));
  if (!in) {
    std::fprintf(stderr, "cannot read %zu values from %s\n", count, path.c_str());
    std::exit(1);
  }
  return data;
}

template <class T>
using Heads = Kokkos::View<T****, Kokkos::LayoutRight, Kokkos::HostSpace,
                           Kokkos::MemoryTraits<Kokkos::Unmanaged>>;

template <int D, int DV, lapis::Precision P>
void run(const std::string& mask, int b, int h, int l, int s, const std::string& dir) {
  std::vector<float> q = read<float>(dir + "/q.bin", size_t(b) * h * l * D);
  std::vector<float> k = read<float>(dir + "/k.bin", size_t(b) * h * s * D);
  std::vector<float> v = read<float>(dir + "/v.bin", size_t(b) * h * s * DV);
  std::vector<float> out(size_t(b) * h * l * DV, std::nanf(""));
  const Heads<const float> qv(q.data(), b, h, l, D), kv(k.data(), b, h, s, D),
      vv(v.data(), b, h, s, DV);
  const Heads<float> ov(out.data(), b, h, l, DV);
  const Kokkos::Serial space;
  if (mask == "none") {
    lapis::attention<D, DV, Kokkos::Serial, P>(space, "attention", qv, kv, vv, ov);
  } else if (mask == "causal") {
    lapis::attention_causal<D, DV, Kokkos::Serial, P>(space, "attention", qv, kv, vv, ov);
  } else if (mask == "bool") {
    std::vector<uint8_t> keep = read<uint8_t>(dir + "/mask.bin", size_t(b) * s);
    const Heads<const bool> m(reinterpret_cast<const bool*>(keep.data()), b, 1, 1, s);
    lapis::attention_masked<D, DV, Kokkos::Serial, P>(space, "attention", qv, kv, vv, m, ov);
  } else {
    std::vector<float> add = read<float>(dir + "/mask.bin", size_t(l) * s);
    const Heads<const float> m(add.data(), 1, 1, l, s);
    lapis::attention_masked<D, DV, Kokkos::Serial, P>(space, "attention", qv, kv, vv, m, ov);
  }
  space.fence();
  std::ofstream file(dir + "/out.bin", std::ios::binary);
  file.write(reinterpret_cast<const char*>(out.data()), out.size() * sizeof(float));
}

template <lapis::Precision P>
void dispatch(int d, int dv, const std::string& mask, int b, int h, int l, int s,
              const std::string& dir) {
  if (d == 8 && dv == 8)
    run<8, 8, P>(mask, b, h, l, s, dir);
  else if (d == 16 && dv == 24)
    run<16, 24, P>(mask, b, h, l, s, dir);
  else if (d == 32 && dv == 32)
    run<32, 32, P>(mask, b, h, l, s, dir);
  else if (d == 64 && dv == 64)
    run<64, 64, P>(mask, b, h, l, s, dir);
  else
    std::exit(2);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 10) {
    std::fprintf(stderr, "usage: %s fp32|tf32 none|causal|bool|float D DV B H L S DIR\n",
                 argv[0]);
    return 2;
  }
  Kokkos::ScopeGuard guard(argc, argv);
  const std::string precision = argv[1], mask = argv[2], dir = argv[9];
  const int d = std::atoi(argv[3]), dv = std::atoi(argv[4]), b = std::atoi(argv[5]),
            h = std::atoi(argv[6]), l = std::atoi(argv[7]), s = std::atoi(argv[8]);
  if (precision == "fp32")
    dispatch<lapis::Precision::fp32>(d, dv, mask, b, h, l, s, dir);
  else
    dispatch<lapis::Precision::tf32>(d, dv, mask, b, h, l, s, dir);
  return 0;
}
