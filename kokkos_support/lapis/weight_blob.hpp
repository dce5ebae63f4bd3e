// lapis-export weight blob reader (format: weights/FORMAT.md), shipped into every package's
// src/lapis/. The generated initialize() opens the blob (linked into the library, or a file) and
// fills each weight View through a host mirror, whatever memory space the View lives in.
// Host code only; Kokkos 3.4 and 4.x alike.
#pragma once

#include <Kokkos_Core.hpp>

#include <cerrno>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

#include "support.hpp"   // lapis::bfloat16

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "lapis weight blobs are little-endian; this reader does not byte-swap"
#endif

namespace lapis {

class WeightBlob {
 public:
  // One index entry, exactly as stored (all fields little-endian, no padding).
  struct Entry {
    uint64_t offset;   // of the tensor's data, from the start of the blob
    uint64_t nbytes;
    uint32_t dtype;    // element type code, see element_bytes()
    uint32_t rank;
    uint64_t dims[6];
    char name[56];     // NUL-padded, at most 55 bytes
  };
  static_assert(sizeof(Entry) == 128, "weight blob index entries are 128 bytes");

  // A blob already in memory (linked into the library); `data` must outlive the WeightBlob.
  static WeightBlob from_memory(const unsigned char* data, size_t size,
                                const std::string& what = "the weight blob linked into the library") {
    WeightBlob blob;
    blob.external_ = data;
    blob.size_ = size;
    blob.check_header(what);
    return blob;
  }

  // A blob read from a file; the WeightBlob owns the bytes.
  static WeightBlob from_file(const std::string& path) {
    std::ifstream file(path, std::ios::binary | std::ios::ate);
    if (!file)
      throw std::runtime_error("cannot open weight file '" + path + "': " + std::strerror(errno));
    const std::streamoff size = file.tellg();
    if (size < 0) throw std::runtime_error("cannot read weight file '" + path + "'");
    WeightBlob blob;
    blob.owned_.resize(size_t(size));
    file.seekg(0);
    if (!file.read(reinterpret_cast<char*>(blob.owned_.data()), std::streamsize(size)))
      throw std::runtime_error("cannot read weight file '" + path + "'");
    blob.size_ = blob.owned_.size();
    blob.check_header("weight file '" + path + "'");
    return blob;
  }

  uint32_t count() const { return count_; }

  // Bytes per element of a dtype code (0 f32, 1 f64, 2 i64, 3 i32, 4 bool/u8, 5 i8, 6 f16,
  // 7 bf16).
  static size_t element_bytes(uint32_t dtype) {
    static const size_t bytes[] = {4, 8, 8, 4, 1, 1, 2, 2};
    return dtype < sizeof(bytes) / sizeof(bytes[0]) ? bytes[dtype] : 0;
  }

  // Index entry `index`, checked against the blob's size.
  Entry entry(uint32_t index) const {
    if (index >= count_)
      throw std::runtime_error("the weight blob holds " + std::to_string(count_) +
                               " tensors; asked for tensor " + std::to_string(index));
    Entry e;
    std::memcpy(&e, data() + 16 + size_t(index) * sizeof(Entry), sizeof(Entry));
    if (element_bytes(e.dtype) == 0 || e.rank > 6 || e.offset > size_ ||
        e.nbytes > size_ - e.offset)
      throw std::runtime_error("weight blob entry " + std::to_string(index) + " ('" +
                               name_of(e) + "') is corrupt or truncated");
    return e;
  }

  static std::string name_of(const Entry& e) {
    const void* nul = std::memchr(e.name, 0, sizeof(e.name));
    return std::string(e.name, nul ? static_cast<const char*>(nul) - e.name : sizeof(e.name));
  }

  const unsigned char* bytes(const Entry& e) const { return data() + e.offset; }

 private:
  // Owned bytes are found through data() rather than a stored pointer, so that copies and moves
  // of a WeightBlob never point into another object's vector.
  const unsigned char* data() const { return owned_.empty() ? external_ : owned_.data(); }

  void check_header(const std::string& what) {
    if (size_ < 16 || std::memcmp(data(), "LAPISWB1", 8) != 0)
      throw std::runtime_error(what + " is not a lapis weight blob");
    std::memcpy(&count_, data() + 8, 4);
    if (size_t(count_) * sizeof(Entry) > size_ - 16)
      throw std::runtime_error(what + " is truncated");
  }

  const unsigned char* external_ = nullptr;
  std::vector<unsigned char> owned_;
  size_t size_ = 0;
  uint32_t count_ = 0;
};

// The weight file to read: the environment variable `variable` when set, else `fallback` (the
// path compiled in when the package was built).
inline std::string weights_path(const char* variable, const char* fallback) {
  const char* value = std::getenv(variable);
  if (value && *value) return value;
  if (!std::ifstream(fallback, std::ios::binary))
    throw std::runtime_error(std::string("weight file '") + fallback + "' not found; set " +
                             variable + " to the path of the model's .weights file");
  return fallback;
}

// "[64, 32]"
template <class View>
std::string extents_of(const View& view) {
  std::string text = "[";
  for (int r = 0; r < int(View::rank); ++r)
    text += (r ? ", " : "") + std::to_string(view.extent(r));
  return text + "]";
}

// The blob's element type code (weights/FORMAT.md) of a View's element type; -1 for a type
// the format has no code for (checked by size only).
template <class T>
constexpr int dtype_code() {
  using U = std::remove_cv_t<T>;
  return std::is_same<U, float>::value                                  ? 0
         : std::is_same<U, double>::value                               ? 1
         : std::is_same<U, int64_t>::value                              ? 2
         : std::is_same<U, int32_t>::value                              ? 3
         : std::is_same<U, bool>::value || std::is_same<U, uint8_t>::value ? 4
         : std::is_same<U, int8_t>::value                               ? 5
         : std::is_same<U, bfloat16>::value                             ? 7
                                                                        : -1;
}

inline const char* dtype_name(uint32_t code) {
  static const char* names[] = {"float32", "float64", "int64", "int32", "bool/uint8", "int8",
                                "float16", "bfloat16"};
  return code < sizeof(names) / sizeof(names[0]) ? names[code] : "unknown";
}

// Checks that tensor `index` of `blob` is the one `view` (any rank, LayoutRight, any memory
// space) holds: its name, element type and element count, and with `exact_shape` its rank and
// extents too; throws naming the difference.
template <class View>
WeightBlob::Entry check_weight(const WeightBlob& blob, uint32_t index, const char* name,
                               const View& view, const bool exact_shape = true) {
  using value_type = typename View::value_type;
  const WeightBlob::Entry e = blob.entry(index);
  const std::string stored = WeightBlob::name_of(e);
  const std::string expected = std::string(name).substr(0, sizeof(e.name) - 1);
  if (stored != expected)
    throw std::runtime_error("weight blob tensor " + std::to_string(index) + " is '" + stored +
                             "', but the code expects '" + expected +
                             "': the blob does not belong to this library");
  const size_t element = WeightBlob::element_bytes(e.dtype);
  constexpr int code = dtype_code<value_type>();
  if ((code >= 0 && e.dtype != uint32_t(code)) || element != sizeof(value_type))
    throw std::runtime_error("weight '" + stored + "' is " + dtype_name(e.dtype) +
                             " in the blob, but the code expects " +
                             (code >= 0 ? dtype_name(uint32_t(code))
                                        : (std::to_string(sizeof(value_type)) + "-byte")) +
                             " elements");
  bool same_shape = !exact_shape || e.rank == uint32_t(View::rank);
  for (uint32_t r = 0; exact_shape && same_shape && r < e.rank; ++r)
    same_shape = e.dims[r] == uint64_t(view.extent(r));
  if (!same_shape) {
    std::string shape = "[";
    for (uint32_t r = 0; r < e.rank && r < 6; ++r)
      shape += (r ? ", " : "") + std::to_string(e.dims[r]);
    throw std::runtime_error("weight '" + stored + "' has shape " + shape + "] in the blob, " +
                             "but the code expects " + extents_of(view));
  }
  if (e.nbytes / element != uint64_t(view.size()))
    throw std::runtime_error("weight '" + stored + "' has " + std::to_string(e.nbytes / element) +
                             " elements in the blob, the View '" + view.label() + "' has " +
                             std::to_string(view.size()));
  return e;
}

// Fills `view` (allocated by the caller: any rank, LayoutRight, any memory space) with tensor
// `index` of `blob`, after check_weight() of all but its shape (a View may hold a tensor of
// the same size reshaped).
template <class View>
void load_weight(const WeightBlob& blob, uint32_t index, const char* name, const View& view) {
  static_assert(!std::is_const<typename View::value_type>::value,
                "load_weight needs a writable View");
  const WeightBlob::Entry e = check_weight(blob, index, name, view, false);
  if (!view.span_is_contiguous())
    throw std::runtime_error("load_weight: View '" + view.label() + "' is not contiguous");
  auto host = Kokkos::create_mirror_view(view);   // `view` itself when it is in HostSpace
  if (e.nbytes) std::memcpy(host.data(), blob.bytes(e), size_t(e.nbytes));
  Kokkos::deep_copy(view, host);
}

}  // namespace lapis
