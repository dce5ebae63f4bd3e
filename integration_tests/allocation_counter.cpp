// A Kokkos Tools library that counts the allocations Kokkos makes, for tests that check when
// a package allocates. Load it as the tools library (KOKKOS_PROFILE_LIBRARY with Kokkos 3.4,
// KOKKOS_TOOLS_LIBS with 4.x) and read the count through ctypes: allocation_count().
#include <cstdint>

namespace {
struct SpaceHandle {
  char name[64];
};
uint64_t allocations = 0;
}  // namespace

extern "C" {
void kokkosp_init_library(int, uint64_t, uint32_t, void*) {}
void kokkosp_finalize_library() {}
void kokkosp_allocate_data(SpaceHandle, const char*, const void*, uint64_t) { ++allocations; }
uint64_t allocation_count() { return allocations; }
}
