// A minimal Kokkos Tools profiler: time per kernel label, printed at Kokkos::finalize()
// (sorted, with each kernel's share). Build: g++ -O2 -shared -fPIC kernel_timer.cpp -o libkt.so
// Use:   KOKKOS_TOOLS_LIBS=$PWD/libkt.so ./sample_app ...   (Kokkos 3.4: KOKKOS_PROFILE_LIBRARY)
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <map>
#include <string>
#include <vector>

namespace {
struct Entry {
  double seconds = 0;
  long calls = 0;
};
std::map<std::string, Entry> totals;
std::vector<std::pair<std::string, std::chrono::steady_clock::time_point>> running;

void begin(const char* name, uint64_t* id) {
  *id = running.size();
  running.emplace_back(name, std::chrono::steady_clock::now());
}
void end(uint64_t id) {
  auto& [name, start] = running[id];
  Entry& entry = totals[name];
  entry.seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  entry.calls += 1;
  if (id + 1 == running.size()) running.pop_back();
}
}  // namespace

extern "C" {
void kokkosp_init_library(int, uint64_t, uint32_t, void*) {}
void kokkosp_begin_parallel_for(const char* name, uint32_t, uint64_t* id) { begin(name, id); }
void kokkosp_end_parallel_for(uint64_t id) { end(id); }
void kokkosp_begin_parallel_reduce(const char* name, uint32_t, uint64_t* id) { begin(name, id); }
void kokkosp_end_parallel_reduce(uint64_t id) { end(id); }
void kokkosp_finalize_library() {
  std::vector<std::pair<std::string, Entry>> rows(totals.begin(), totals.end());
  std::sort(rows.begin(), rows.end(),
            [](const auto& a, const auto& b) { return a.second.seconds > b.second.seconds; });
  double all = 0;
  for (const auto& row : rows) all += row.second.seconds;
  std::printf("%-60s %8s %12s %7s\n", "kernel", "calls", "total ms", "share");
  for (const auto& [name, entry] : rows)
    std::printf("%-60s %8ld %12.3f %6.1f%%\n", name.c_str(), entry.calls, entry.seconds * 1e3,
                100.0 * entry.seconds / all);
  std::printf("%-60s %8s %12.3f\n", "all kernels", "", all * 1e3);
}
}
