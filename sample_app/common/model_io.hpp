// Helpers the sample hosts share: Views of a model's exported extents (any rank 1 to 6) and
// raw float32 files.
#pragma once

#include <Kokkos_Core.hpp>

#include <cstdint>
#include <fstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace sample {

// A View of the given rank and extents (a model's NAME::input0_extents, ...), its dynamic
// extents (-1) of size `batch`.
template <class View, size_t Rank>
View make_view(const std::string& label, const int64_t (&e)[Rank], int64_t batch = -1) {
  constexpr int rank = View::rank;
  static_assert(rank == int(Rank) && rank >= 1 && rank <= 6, "Views of rank 1 to 6");
  auto n = [&](int r) { return size_t(e[r] < 0 ? batch : e[r]); };
  if constexpr (rank == 1) return View(label, n(0));
  else if constexpr (rank == 2) return View(label, n(0), n(1));
  else if constexpr (rank == 3) return View(label, n(0), n(1), n(2));
  else if constexpr (rank == 4) return View(label, n(0), n(1), n(2), n(3));
  else if constexpr (rank == 5) return View(label, n(0), n(1), n(2), n(3), n(4));
  else return View(label, n(0), n(1), n(2), n(3), n(4), n(5));
}

template <size_t Rank>
size_t element_count(const int64_t (&extents)[Rank]) {
  size_t count = 1;
  for (int64_t e : extents) count *= size_t(e);
  return count;
}

inline std::vector<float> read_floats(const std::string& path, size_t count) {
  std::ifstream file(path, std::ios::binary | std::ios::ate);
  if (!file) throw std::runtime_error("cannot open input file " + path);
  const size_t bytes = size_t(file.tellg());
  if (bytes != count * sizeof(float))
    throw std::runtime_error(path + " has " + std::to_string(bytes) + " bytes; the model input " +
                             "needs " + std::to_string(count * sizeof(float)));
  std::vector<float> data(count);
  file.seekg(0);
  file.read(reinterpret_cast<char*>(data.data()), std::streamsize(bytes));
  return data;
}

inline void write_floats(const std::string& path, const float* data, size_t count) {
  std::ofstream file(path, std::ios::binary);
  file.write(reinterpret_cast<const char*>(data), std::streamsize(count * sizeof(float)));
  if (!file) throw std::runtime_error("cannot write output file " + path);
}

// Copies host values into a View of any memory space (LayoutRight, contiguous), and back.
template <class View>
void copy_in(const View& view, const float* values) {
  auto mirror = Kokkos::create_mirror_view(view);
  std::copy(values, values + mirror.size(), mirror.data());
  Kokkos::deep_copy(view, mirror);
}

template <class View>
std::vector<float> copy_out(const View& view) {
  auto mirror = Kokkos::create_mirror_view_and_copy(Kokkos::HostSpace(), view);
  return std::vector<float>(mirror.data(), mirror.data() + mirror.size());
}

}  // namespace sample
