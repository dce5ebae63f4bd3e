// Tensor-core yardstick for the CUDA tiles' TFLOP/s (benchmarks/results_gpu.md): the rate of
// mma.sync.m16n8k8 tf32 (the instruction gemm_tf32.hpp and conv_tf32.hpp issue) and of
// mma.sync.m16n8k16 bf16, each warp running independent accumulator chains on registers, no
// memory traffic. Build: nvcc -O3 -arch=sm_90 benchmarks/mma_peak.cu -o mma_peak
#include <cstdio>
#include <cstdint>
#include <cuda_runtime.h>

constexpr int chains = 8, iterations = 4096;

// Bf16: mma.sync.m16n8k16 on bfloat16 pairs; else m16n8k8 on tf32. The operands' bits are
// arbitrary finite values; only the rate matters.
template <bool Bf16>
__global__ void mma_loop(float* out, int seed) {
  float acc[chains][4] = {};
  uint32_t a[4], b[2];
  for (int i = 0; i < 4; ++i) a[i] = (Bf16 ? 0x3f803f80u : 0x3f800000u) + seed + threadIdx.x + i;
  for (int i = 0; i < 2; ++i) b[i] = (Bf16 ? 0x3f003f00u : 0x3f000000u) + seed + i;
  for (int it = 0; it < iterations; ++it) {
#pragma unroll
    for (int c = 0; c < chains; ++c) {
      if constexpr (Bf16)
        asm volatile(
            "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
            "{%8,%9}, {%0,%1,%2,%3};\n"
            : "+f"(acc[c][0]), "+f"(acc[c][1]), "+f"(acc[c][2]), "+f"(acc[c][3])
            : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
      else
        asm volatile(
            "mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
            "{%8,%9}, {%0,%1,%2,%3};\n"
            : "+f"(acc[c][0]), "+f"(acc[c][1]), "+f"(acc[c][2]), "+f"(acc[c][3])
            : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
    }
  }
  float s = 0;
  for (int c = 0; c < chains; ++c) s += acc[c][0] + acc[c][1] + acc[c][2] + acc[c][3];
  if (s == 1.2345f) out[threadIdx.x] = s;
}

template <class Kernel>
double tflops(Kernel kernel, int k, int blocks, int threads, float* out) {
  cudaEvent_t start, stop;
  cudaEventCreate(&start);
  cudaEventCreate(&stop);
  kernel<<<blocks, threads>>>(out, 1);
  cudaEventRecord(start);
  for (int r = 0; r < 5; ++r) kernel<<<blocks, threads>>>(out, r);
  cudaEventRecord(stop);
  cudaEventSynchronize(stop);
  float ms = 0;
  cudaEventElapsedTime(&ms, start, stop);
  const double flops = 5.0 * blocks * (threads / 32) * double(iterations) * chains * 16 * 8 * k * 2;
  return flops / (ms * 1e-3) * 1e-12;
}

int main() {
  cudaDeviceProp prop;
  cudaGetDeviceProperties(&prop, 0);
  float* out;
  cudaMalloc(&out, 1024 * sizeof(float));
  const int sms = prop.multiProcessorCount;
  std::printf("%s, %d SMs\n", prop.name, sms);
  for (int warps : {4, 8, 16}) {
    std::printf("%2d warps an SM: mma.sync tf32 m16n8k8 %.0f TFLOP/s, bf16 m16n8k16 %.0f TFLOP/s\n",
                warps, tflops(mma_loop<false>, 8, sms, 32 * warps, out),
                tflops(mma_loop<true>, 16, sms, 32 * warps, out));
  }
  cudaFree(out);
  return 0;
}
