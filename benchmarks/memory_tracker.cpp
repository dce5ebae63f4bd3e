// A Kokkos Tools library that keeps the bytes Kokkos holds: printed at Kokkos::finalize() as
// the peak over the run (weights, buffers, the app's own input and output Views).
// Build: g++ -O2 -shared -fPIC memory_tracker.cpp -o libmt.so
// Use:   KOKKOS_TOOLS_LIBS=$PWD/libmt.so ./sample_app ...   (Kokkos 3.4: KOKKOS_PROFILE_LIBRARY)
#include <cstdint>
#include <cstdio>
#include <map>
#include <string>

namespace {
struct SpaceHandle {
  char name[64];
};
uint64_t live = 0, peak = 0;
std::map<const void*, uint64_t> sizes;
}  // namespace

extern "C" {
void kokkosp_init_library(int, uint64_t, uint32_t, void*) {}
void kokkosp_allocate_data(SpaceHandle, const char*, const void* ptr, uint64_t size) {
  sizes[ptr] = size;
  live += size;
  if (live > peak) peak = live;
}
void kokkosp_deallocate_data(SpaceHandle, const char*, const void* ptr, uint64_t) {
  auto found = sizes.find(ptr);
  if (found == sizes.end()) return;
  live -= found->second;
  sizes.erase(found);
}
void kokkosp_finalize_library() {
  std::printf("kokkos_peak_bytes=%llu\n", static_cast<unsigned long long>(peak));
}
}
