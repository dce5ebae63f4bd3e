// Reads a packed convolution weight (float32, [blocks][channels_in][kernel_h][kernel_w][8]),
// splits it with lapis::split_tf32_weight on the default host execution space and writes the
// split View ([ceil(blocks / 2)][kernel_h][kernel_w][channels_in / 8][256]) as float32.
#include <Kokkos_Core.hpp>

#include <cstdio>
#include <cstdlib>
#include <fstream>

#include "lapis/conv_tf32.hpp"

int main(int argc, char** argv) {
  if (argc != 7) {
    std::fprintf(stderr, "usage: %s packed.bin blocks channels_in kernel_h kernel_w split.bin\n",
                 argv[0]);
    return 2;
  }
  Kokkos::ScopeGuard guard(argc, argv);
  using Space = Kokkos::DefaultHostExecutionSpace;
  using View5 = Kokkos::View<float*****, Kokkos::LayoutRight, Kokkos::HostSpace>;
  const int blocks = std::atoi(argv[2]), channels_in = std::atoi(argv[3]);
  const int kernel_h = std::atoi(argv[4]), kernel_w = std::atoi(argv[5]);
  View5 packed("packed", blocks, channels_in, kernel_h, kernel_w, 8);
  View5 split("split", (blocks + 1) / 2, kernel_h, kernel_w, channels_in / 8, 256);
  std::ifstream in(argv[1], std::ios::binary);
  in.read(reinterpret_cast<char*>(packed.data()), packed.size() * sizeof(float));
  if (!in) {
    std::fprintf(stderr, "cannot read %zu floats from %s\n", packed.size(), argv[1]);
    return 1;
  }
  lapis::split_tf32_weight<Space>(Space(), "split", packed, split);
  Kokkos::fence();
  std::ofstream out(argv[6], std::ios::binary);
  out.write(reinterpret_cast<const char*>(split.data()), split.size() * sizeof(float));
  return out ? 0 : 1;
}
