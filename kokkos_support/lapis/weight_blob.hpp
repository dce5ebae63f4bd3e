// lapis-export weight blob reader (format: weights/FORMAT.md), shipped into every package.
// Host code only: it reads the blob from memory (linked into the library) or from a file and
// fills weight Views through a host mirror, in whatever memory space the Views live.
#pragma once

#include <Kokkos_Core.hpp>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace lapis {

class WeightBlob {
 public:
  struct Entry {
    uint64_t offset, nbytes;
    uint32_t dtype, rank;
    uint64_t dims[6];
    char name[56];
  };

  static WeightBlob from_memory(const unsigned char* data, size_t size) {
    WeightBlob blob;
    blob.data_ = data;
    blob.size_ = size;
    blob.check("the weights linked into the library");
    return blob;
  }

  static WeightBlob from_file(const std::string& path) {
    WeightBlob blob;
    std::ifstream file(path, std::ios::binary | std::ios::ate);
    if (!file) throw std::runtime_error("cannot open weight file '" + path + "'");
    const std::streamsize size = file.tellg();
    file.seekg(0);
    blob.owned_.resize(size_t(size));
    if (!file.read(reinterpret_cast<char*>(blob.owned_.data()), size))
      throw std::runtime_error("cannot read weight file '" + path + "'");
    blob.data_ = blob.owned_.data();
    blob.size_ = blob.owned_.size();
    blob.check("weight file '" + path + "'");
    return blob;
  }

  uint32_t count() const { return count_; }

  Entry entry(uint32_t index) const {
    if (index >= count_)
      throw std::runtime_error("weight blob has " + std::to_string(count_) +
                               " tensors, asked for index " + std::to_string(index));
    Entry e;
    std::memcpy(&e, data_ + 16 + size_t(index) * 128, sizeof(Entry));
    if (e.offset + e.nbytes > size_)
      throw std::runtime_error("weight blob entry " + std::to_string(index) + " is truncated");
    return e;
  }

  const unsigned char* bytes(const Entry& e) const { return data_ + e.offset; }

 private:
  void check(const std::string& what) {
    static_assert(sizeof(Entry) == 128, "weight blob index entries are 128 bytes");
    if (size_ < 16 || std::memcmp(data_, "LAPISWB1", 8) != 0)
      throw std::runtime_error(what + " is not a lapis weight blob");
    std::memcpy(&count_, data_ + 8, 4);
    if (16 + size_t(count_) * 128 > size_)
      throw std::runtime_error(what + " is truncated");
  }

  const unsigned char* data_ = nullptr;
  size_t size_ = 0;
  uint32_t count_ = 0;
  std::vector<unsigned char> owned_;
};

// The weight file to read: the environment variable `variable` if set, else `fallback`.
inline std::string weights_path(const char* variable, const char* fallback) {
  const char* value = std::getenv(variable);
  return (value && *value) ? std::string(value) : std::string(fallback);
}

// Fills `view` (allocated, LayoutRight, any memory space) with tensor `index` of the blob,
// after checking its name, element size and element count.
template <class View>
void load_weight(const WeightBlob& blob, uint32_t index, const char* name, const View& view) {
  using value_type = typename View::non_const_value_type;
  const WeightBlob::Entry e = blob.entry(index);
  const std::string stored(e.name, strnlen(e.name, sizeof(e.name)));
  if (stored != std::string(name).substr(0, 55))
    throw std::runtime_error("weight blob entry " + std::to_string(index) + " is '" + stored +
                             "', expected '" + name + "'");
  if (e.nbytes != uint64_t(view.span()) * sizeof(value_type))
    throw std::runtime_error("weight '" + stored + "' has " + std::to_string(e.nbytes) +
                             " bytes in the blob, the View needs " +
                             std::to_string(view.span() * sizeof(value_type)));
  auto host = Kokkos::create_mirror_view(view);
  std::memcpy(host.data(), blob.bytes(e), e.nbytes);
  Kokkos::deep_copy(view, host);
}

}  // namespace lapis
