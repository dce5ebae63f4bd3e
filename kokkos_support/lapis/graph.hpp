// lapis-export: forward() recorded once as a CUDA graph and replayed, shipped into every
// exported package (src/lapis/). One graph launch instead of one launch per kernel; on other
// backends a ForwardGraph just calls forward.
#pragma once

#include <Kokkos_Core.hpp>

#include <stdexcept>
#include <string>
#include <vector>

namespace lapis {

class ForwardGraph {
 public:
  ForwardGraph() = default;
  ForwardGraph(const ForwardGraph&) = delete;
  ForwardGraph& operator=(const ForwardGraph&) = delete;
  ~ForwardGraph() { reset(); }

  // Runs `forward` on `space`. The first call with a set of data pointers runs it directly
  // (Kokkos sets up each kernel at its first launch, which a graph cannot hold); the second
  // records it as a graph, which this and later calls with the same pointers launch. New
  // pointers start over (a graph holds the addresses it was recorded with).
  template <class ExecutionSpace, class Forward>
  void run(const ExecutionSpace& space, std::vector<const void*> pointers, Forward&& forward) {
#if defined(KOKKOS_ENABLE_CUDA)
    if constexpr (std::is_same<ExecutionSpace, Kokkos::Cuda>::value) {
      const cudaStream_t stream = space.cuda_stream();
      if (pointers != pointers_) {
        reset();
        forward();
        pointers_ = std::move(pointers);
        return;
      }
      if (!executable_) {
        check(cudaStreamBeginCapture(stream, cudaStreamCaptureModeRelaxed),
              "cudaStreamBeginCapture");
        try {
          forward();
        } catch (...) {
          cudaGraph_t abandoned = nullptr;
          cudaStreamEndCapture(stream, &abandoned);
          if (abandoned) cudaGraphDestroy(abandoned);
          throw;
        }
        cudaGraph_t graph = nullptr;
        check(cudaStreamEndCapture(stream, &graph), "cudaStreamEndCapture");
        const cudaError_t made = cudaGraphInstantiate(&executable_, graph, 0);
        cudaGraphDestroy(graph);
        check(made, "cudaGraphInstantiate");
      }
      check(cudaGraphLaunch(executable_, stream), "cudaGraphLaunch");
      return;
    }
#endif
    (void)space;
    (void)pointers;
    forward();
  }

  void reset() {
#if defined(KOKKOS_ENABLE_CUDA)
    if (executable_) cudaGraphExecDestroy(executable_);
    executable_ = nullptr;
#endif
    pointers_.clear();
  }

 private:
#if defined(KOKKOS_ENABLE_CUDA)
  static void check(cudaError_t code, const char* call) {
    if (code != cudaSuccess)
      throw std::runtime_error(std::string(call) + " failed: " + cudaGetErrorString(code));
  }
  cudaGraphExec_t executable_ = nullptr;
#endif
  std::vector<const void*> pointers_;
};

}  // namespace lapis
