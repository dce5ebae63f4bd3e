// lapis-export support header, shipped into every exported package (src/lapis/).
// One place for what differs between Kokkos 3.4 and 4.x (the scalar helpers the generated
// kernels call are in scalar.hpp).
#pragma once

#include <Kokkos_Core.hpp>

#include "scalar.hpp"

#include <cstdint>
#include <cstring>
#include <map>
#include <mutex>
#include <stdexcept>
#include <string>
#include <type_traits>

namespace lapis {

// The products of float32 matrix kernels on CUDA (lapis-export --precision): fp32, float32
// accuracy (3xTF32 on the tensor cores); tf32, one TF32 product with float32 accumulation
// (PyTorch's default for cuDNN convolutions); bf16, bfloat16 operands with float32
// accumulation. Host backends and other element types compute in their own type throughout.
enum class Precision : int { fp32, tf32, bf16 };

// A bfloat16 as stored: the top 16 bits of a float32. Linear-layer weights exported with
// --precision bf16 for host backends (exporter/tuned_ops.py, gemm_host.hpp) hold these.
struct bfloat16 {
  uint16_t bits;
};

KOKKOS_INLINE_FUNCTION float to_float(const bfloat16 v) {
  const uint32_t word = uint32_t(v.bits) << 16;
  float f;
  std::memcpy(&f, &word, sizeof(f));
  return f;
}

// float32 -> bfloat16, rounded to nearest even; NaN stays NaN (quiet).
KOKKOS_INLINE_FUNCTION bfloat16 to_bfloat16(const float f) {
  uint32_t word;
  std::memcpy(&word, &f, sizeof(word));
  if ((word & 0x7fffffffu) > 0x7f800000u) return bfloat16{uint16_t((word >> 16) | 0x40u)};
  return bfloat16{uint16_t((word + 0x7fffu + ((word >> 16) & 1u)) >> 16)};
}

// A View's extents, for messages: "[1, 3, 224, 224]".
template <class View>
std::string extents_string(const View& view) {
  std::string text = "[";
  for (int r = 0; r < int(View::rank); ++r) {
    if (r) text += ", ";
    text += std::to_string(view.extent(r));
  }
  return text + "]";
}

// Checks that a caller's View has the exported extents (-1: any); throws with both when it
// does not.
template <class View>
void check_extents(const char* what, const View& view, const int64_t* expected) {
  bool same = true;
  for (int r = 0; r < int(View::rank); ++r)
    same = same && (expected[r] < 0 || int64_t(view.extent(r)) == expected[r]);
  if (same) return;
  std::string want = "[";
  for (int r = 0; r < int(View::rank); ++r) {
    if (r) want += ", ";
    want += expected[r] < 0 ? std::string("any") : std::to_string(expected[r]);
  }
  want += "]";
  throw std::invalid_argument(std::string(what) + ": expected extents " + want + ", got " +
                              extents_string(view));
}

// Kokkos for the C API: NAME_initialize() starts Kokkos when the host has not, and the last
// NAME_finalize() of the models that found it so stops it; finalizing one model leaves Kokkos
// running for another that is still initialized. The count is an inline variable, one object
// for every package linked into a program. It is kept per copy of Kokkos (keyed by the address
// of that copy's is_initialized): a program has one, but libraries loaded privately with their
// own static Kokkos (dlopen with RTLD_LOCAL, as Python's ctypes does) have one each.
struct CApiKokkos {
  bool started = false;    // Kokkos was initialized by a C API call, not by the host
  bool finalized = false;  // ... and finalized by one since (it cannot start again)
  int users = 0;           // initialized models counting on that
};
inline std::mutex c_api_kokkos_mutex;  // the C APIs of all models in the process
inline std::map<const void*, CApiKokkos> c_api_kokkos;

inline CApiKokkos& c_api_kokkos_of_this_library() {
  return c_api_kokkos[reinterpret_cast<const void*>(&Kokkos::is_initialized)];
}

// Initializes Kokkos if nobody has; returns whether the caller now holds a share of it.
inline bool acquire_c_api_kokkos() {
  const std::lock_guard<std::mutex> lock(c_api_kokkos_mutex);
  CApiKokkos& kokkos = c_api_kokkos_of_this_library();
  if (!Kokkos::is_initialized()) {
    if (kokkos.finalized)
      throw std::runtime_error(
          "Kokkos was already finalized in this process and cannot be initialized again; to "
          "cycle initialize/finalize, keep Kokkos initialized in the host meanwhile");
    Kokkos::initialize();
    kokkos.started = true;
  }
  if (!kokkos.started) return false;
  ++kokkos.users;
  return true;
}

// Gives back a share taken by acquire_c_api_kokkos(); the last one finalizes Kokkos.
inline void release_c_api_kokkos() {
  const std::lock_guard<std::mutex> lock(c_api_kokkos_mutex);
  CApiKokkos& kokkos = c_api_kokkos_of_this_library();
  if (--kokkos.users > 0 || !kokkos.started) return;
  kokkos.started = false;
  kokkos.finalized = true;
  if (Kokkos::is_initialized()) Kokkos::finalize();
}

// Checks that a dynamic extent of a caller's View equals another one of the same size (e.g. the
// batch of the output and of the input); throws naming both when it does not.
template <class View>
void check_same_extent(const char* what, const View& view, int dim, const char* other,
                       size_t expected) {
  if (view.extent(dim) == expected) return;
  throw std::invalid_argument(std::string(what) + ": extent " + std::to_string(dim) + " is " +
                              std::to_string(view.extent(dim)) + ", but must equal the extent " +
                              std::to_string(expected) + " of " + other + " (the same size)");
}

// ---- the caller's Views in forward() ----------------------------------------------------------
// forward() takes any View of the right rank and element type (LayoutRight, LayoutLeft,
// LayoutStride subviews) and runs its kernels on row-major Views: a View whose strides are
// row-major (LayoutRight, a block of rows of one) is used in place; any other is copied into a
// row-major buffer of the model's State, allocated at the first such call and again only when
// the extents change, on the caller's execution space instance.

// The View's elements lie in row-major order with no gaps (unit extents take any stride).
template <class View>
bool is_row_major(const View& view) {
  size_t expected = 1;
  for (int r = int(View::rank) - 1; r >= 0; --r) {
    if (view.extent(r) == 0) return true;
    if (view.extent(r) != 1 && size_t(view.stride(r)) != expected) return false;
    expected *= view.extent(r);
  }
  return true;
}

template <class Given>
using row_major_view =
    Kokkos::View<typename Given::data_type, Kokkos::LayoutRight, typename Given::memory_space,
                 Kokkos::MemoryTraits<Kokkos::Unmanaged>>;

// The extents of `view` as a Layout (LayoutRight, LayoutLeft).
template <class Layout, class View>
Layout layout_like(const View& view) {
  Layout layout;
  for (int r = 0; r < int(View::rank); ++r) layout.dimension[r] = view.extent(r);
  return layout;
}

template <class View>
Kokkos::LayoutRight row_major_layout(const View& view) {
  return layout_like<Kokkos::LayoutRight>(view);
}

namespace detail {
// Extents and element strides of a View of any layout, for copies between it and a row-major
// buffer of the same extents (one work item per element, whatever the rank).
struct StridedShape {
  int rank = 0;
  int64_t count = 1;
  int64_t extent[8] = {};
  int64_t stride[8] = {};
};

template <class View>
StridedShape strided_shape(const View& view) {
  StridedShape shape;
  shape.rank = int(View::rank);
  for (int r = 0; r < shape.rank; ++r) {
    shape.extent[r] = int64_t(view.extent(r));
    shape.stride[r] = int64_t(view.stride(r));
    shape.count *= shape.extent[r];
  }
  return shape;
}

template <class ExecutionSpace, class T>
void copy_strided(const ExecutionSpace& space, const char* label, const StridedShape shape,
                  const T* from, T* to, const bool to_strided) {
  Kokkos::parallel_for(
      label,
      Kokkos::RangePolicy<ExecutionSpace, Kokkos::IndexType<int64_t>>(space, 0, shape.count),
      KOKKOS_LAMBDA(const int64_t flat) {
        int64_t rest = flat, offset = 0;
        for (int r = shape.rank - 1; r >= 0; --r) {
          offset += (rest % shape.extent[r]) * shape.stride[r];
          rest /= shape.extent[r];
        }
        if (to_strided)
          to[offset] = from[flat];
        else
          to[flat] = from[offset];
      });
}

}  // namespace detail

// Allocates `buffer` with the extents of `like` unless it has them already.
template <class ExecutionSpace, class Like, class Buffer>
void plan_buffer(const ExecutionSpace& space, const char* label, const Like& like,
                 Buffer& buffer) {
  bool same = buffer.data() != nullptr || like.size() == 0;
  for (int r = 0; r < int(Like::rank); ++r) same = same && buffer.extent(r) == like.extent(r);
  if (same) return;
  buffer = Buffer();  // release before allocating anew
  buffer = Buffer(Kokkos::view_alloc(space, std::string(label), Kokkos::WithoutInitializing),
                  layout_like<typename Buffer::array_layout>(like));
}

// A block of storage that buffers with dynamic extents share (their lifetimes do not meet):
// grown to `bytes` when smaller. The kernels that used the old block are waited for first.
template <class ExecutionSpace, class Storage>
void grow_storage(const ExecutionSpace& space, const char* label, Storage& storage,
                  size_t bytes) {
  if (storage.extent(0) >= bytes && storage.data() != nullptr) return;
  space.fence();
  storage = Storage();  // release before allocating anew
  storage = Storage(Kokkos::view_alloc(space, std::string(label), Kokkos::WithoutInitializing),
                    bytes > 0 ? bytes : 1);
}

// An input of forward(): `given` itself when row-major, else its copy in `staged`.
template <class ExecutionSpace, class Given, class Staged>
row_major_view<Given> row_major_input(const ExecutionSpace& space, const char* label,
                                      const Given& given, Staged& staged) {
  if (is_row_major(given)) return row_major_view<Given>(given.data(), row_major_layout(given));
  plan_buffer(space, label, given, staged);
  detail::copy_strided(space, label, detail::strided_shape(given), given.data(), staged.data(),
                       false);
  return row_major_view<Given>(staged.data(), row_major_layout(given));
}

// An output of forward(): `given` itself when row-major, else `staged`, which
// write_back_output() copies into `given` after the kernels.
template <class ExecutionSpace, class Given, class Staged>
row_major_view<Given> row_major_output(const ExecutionSpace& space, const char* label,
                                       const Given& given, Staged& staged) {
  if (is_row_major(given)) return row_major_view<Given>(given.data(), row_major_layout(given));
  plan_buffer(space, label, given, staged);
  return row_major_view<Given>(staged.data(), row_major_layout(given));
}

template <class ExecutionSpace, class Used, class Given>
void write_back_output(const ExecutionSpace& space, const char* label, const Used& used,
                       const Given& given) {
  if (used.data() == given.data()) return;
  detail::copy_strided(space, label, detail::strided_shape(given),
                       static_cast<const typename Given::value_type*>(used.data()),
                       given.data(), true);
}

}  // namespace lapis
