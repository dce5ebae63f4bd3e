// Peak float32 FMA throughput of one core, the yardstick for the GEMM micro-kernel's GFLOP/s.
// Build: cc -O2 benchmarks/fma_peak.c -o fma_peak   (no -march: the kernels carry targets)
// Prints the clock (a chain of dependent integer adds, one a cycle) and, for AVX2 and
// AVX-512F, the measured FMA rate: 12 independent accumulators (more than latency 4 x 2
// ports), so throughput, not latency, bounds it. Peak = clock x FMAs a cycle x lanes x 2.
// With AVX512_BF16, the same for vdpbf16ps: 16 lanes, each two bfloat16 products added, so
// 32 multiply-adds (64 flops) an instruction. With AMX-BF16 (and Linux granting the tile
// data), tdpbf16ps on four independent 16 x 16 float accumulators: 16 x 16 x 32 multiply-adds
// (16,384 flops) an instruction.
// Each figure is the best of 10 short runs: on a machine shared with other work, some run
// gets the core to itself.
#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec + 1e-9 * t.tv_nsec;
}

// Cycles/s: one dependent add a cycle, unrolled so the loop's own work hides under it.
static double clock_hz(void) {
  const long n = 100000000;
  uint64_t x = 1;
  double start = now();
  for (long i = 0; i < n; i += 8)
    __asm__ volatile("add %0, %0\n add %0, %0\n add %0, %0\n add %0, %0\n"
                     "add %0, %0\n add %0, %0\n add %0, %0\n add %0, %0\n" : "+r"(x));
  return n / (now() - start);
}

#define FMA12(V)                                                                         \
  __asm__ volatile(                                                                      \
      "vfmadd231ps %" #V "12, %" #V "13, %" #V "0\n vfmadd231ps %" #V "12, %" #V "13, %" #V "1\n" \
      "vfmadd231ps %" #V "12, %" #V "13, %" #V "2\n vfmadd231ps %" #V "12, %" #V "13, %" #V "3\n" \
      "vfmadd231ps %" #V "12, %" #V "13, %" #V "4\n vfmadd231ps %" #V "12, %" #V "13, %" #V "5\n" \
      "vfmadd231ps %" #V "12, %" #V "13, %" #V "6\n vfmadd231ps %" #V "12, %" #V "13, %" #V "7\n" \
      "vfmadd231ps %" #V "12, %" #V "13, %" #V "8\n vfmadd231ps %" #V "12, %" #V "13, %" #V "9\n" \
      "vfmadd231ps %" #V "12, %" #V "13, %" #V "10\n vfmadd231ps %" #V "12, %" #V "13, %" #V "11\n" \
      ::: "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7", "xmm8", "xmm9",  \
      "xmm10", "xmm11")

__attribute__((target("avx2,fma"))) static double fmas_avx2(long n) {
  double start = now();
  for (long i = 0; i < n; ++i) FMA12(%ymm);
  double s = now() - start;
  __asm__ volatile("vzeroupper");
  return 12.0 * n / s;
}

__attribute__((target("avx512f"))) static double fmas_avx512(long n) {
  double start = now();
  for (long i = 0; i < n; ++i) FMA12(%zmm);
  double s = now() - start;
  __asm__ volatile("vzeroupper");
  return 12.0 * n / s;
}

#define DP12                                                                             \
  __asm__ volatile(                                                                      \
      "vdpbf16ps %%zmm12, %%zmm13, %%zmm0\n vdpbf16ps %%zmm12, %%zmm13, %%zmm1\n"              \
      "vdpbf16ps %%zmm12, %%zmm13, %%zmm2\n vdpbf16ps %%zmm12, %%zmm13, %%zmm3\n"              \
      "vdpbf16ps %%zmm12, %%zmm13, %%zmm4\n vdpbf16ps %%zmm12, %%zmm13, %%zmm5\n"              \
      "vdpbf16ps %%zmm12, %%zmm13, %%zmm6\n vdpbf16ps %%zmm12, %%zmm13, %%zmm7\n"              \
      "vdpbf16ps %%zmm12, %%zmm13, %%zmm8\n vdpbf16ps %%zmm12, %%zmm13, %%zmm9\n"              \
      "vdpbf16ps %%zmm12, %%zmm13, %%zmm10\n vdpbf16ps %%zmm12, %%zmm13, %%zmm11\n"            \
      ::: "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7", "xmm8", "xmm9",  \
      "xmm10", "xmm11")

__attribute__((target("avx512f,avx512bf16"))) static double dps_avx512_bf16(long n) {
  double start = now();
  for (long i = 0; i < n; ++i) DP12;
  double s = now() - start;
  __asm__ volatile("vzeroupper");
  return 12.0 * n / s;
}

// All eight tiles 16 rows x 64 bytes; C in tmm0-3, A in tmm4-5, B in tmm6-7 (zeros).
struct __attribute__((aligned(64))) tile_config {
  uint8_t palette, start_row, reserved[14];
  uint16_t bytes_per_row[16];
  uint8_t rows[16];
};

__attribute__((target("amx-tile,amx-bf16"))) static double tdps_amx(long n) {
  struct tile_config config;
  memset(&config, 0, sizeof(config));
  config.palette = 1;
  for (int t = 0; t < 8; ++t) {
    config.bytes_per_row[t] = 64;
    config.rows[t] = 16;
  }
  __asm__ volatile("ldtilecfg %0" : : "m"(config) : "memory");
  __asm__ volatile("tilezero %%tmm4\n tilezero %%tmm5\n tilezero %%tmm6\n tilezero %%tmm7" ::);
  double start = now();
  for (long i = 0; i < n; ++i)
    __asm__ volatile("tdpbf16ps %%tmm6, %%tmm4, %%tmm0\n tdpbf16ps %%tmm7, %%tmm4, %%tmm1\n"
                     "tdpbf16ps %%tmm6, %%tmm5, %%tmm2\n tdpbf16ps %%tmm7, %%tmm5, %%tmm3" ::);
  double s = now() - start;
  __asm__ volatile("tilerelease" ::);
  return 4.0 * n / s;
}

static int amx_usable(void) {
  unsigned eax, ebx, ecx, edx;
  __asm__("cpuid" : "=a"(eax), "=b"(ebx), "=c"(ecx), "=d"(edx) : "a"(7), "c"(0));
  if (!(edx & (1u << 24)) || !(edx & (1u << 22))) return 0;
  return syscall(SYS_arch_prctl, 0x1023, 18) == 0;   // ARCH_REQ_XCOMP_PERM, XTILEDATA
}

int main(void) {
  const long n = 10000000;
  double hz = 0;
  for (int r = 0; r < 10; ++r) { double h = clock_hz(); if (h > hz) hz = h; }
  printf("clock %.3f GHz (dependent adds)\n", hz * 1e-9);
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
    double best = 0;
    for (int r = 0; r < 10; ++r) { double f = fmas_avx2(n); if (f > best) best = f; }
    printf("avx2:   %.2f FMA/cycle, %.1f GFLOP/s fp32 a core (8 lanes x 2)\n", best / hz,
           best * 8 * 2 * 1e-9);
  }
  if (__builtin_cpu_supports("avx512f")) {
    double best = 0;
    for (int r = 0; r < 10; ++r) { double f = fmas_avx512(n); if (f > best) best = f; }
    printf("avx512: %.2f FMA/cycle, %.1f GFLOP/s fp32 a core (16 lanes x 2); "
           "peak at 2 FMA ports: %.1f\n", best / hz, best * 16 * 2 * 1e-9, hz * 2 * 16 * 2 * 1e-9);
  }
  if (__builtin_cpu_supports("avx512bf16")) {
    double best = 0;
    for (int r = 0; r < 10; ++r) { double f = dps_avx512_bf16(n); if (f > best) best = f; }
    printf("avx512_bf16: %.2f vdpbf16ps/cycle, %.1f GFLOP/s bf16 a core (16 lanes x 2 "
           "products x 2)\n", best / hz, best * 16 * 2 * 2 * 1e-9);
  }
  if (amx_usable()) {
    double best = 0;
    for (int r = 0; r < 10; ++r) { double f = tdps_amx(n / 10); if (f > best) best = f; }
    printf("amx_bf16: %.3f tdpbf16ps/cycle (%.1f cycles each), %.1f GFLOP/s bf16 a core "
           "(16 x 16 x 32 products x 2)\n", best / hz, hz / best, best * 16 * 16 * 32 * 2 * 1e-9);
  }
  return 0;
}
