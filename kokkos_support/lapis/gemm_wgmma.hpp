// lapis-export Hopper tensor-core tiles for linear layers (y = activation(x W^T + bias), W as
// the model stores it, [out][in]): wgmma, the warpgroup matrix instruction of sm_90a, reading
// both operands straight from shared memory. Part of gemm_tf32.hpp, which includes it after
// GemmTiles (GemmProblem, Float2, copy16, the fallback tiles).
//
// Why: mma.sync (GemmTiles) makes every warp load its fragments from shared memory into
// registers, a load instruction per two to four multiply-adds of a tile, and split or round
// each one; wgmma's operands never pass through registers, and one instruction covers
// 64 x 128 x 8. A package built for Hopper (-D<name>_WGMMA, on by default) compiles this file
// twice (sm_90 and sm_90a, see the package's CMakeLists.txt, which then defines LAPIS_WGMMA);
// whichever of the two the driver loads runs the same launch: sm_90a the wgmma tiles, sm_90
// the GemmTiles of the same 128-row blocks. Linear layers take them, tf32 and fp32 (gemm_tiled;
// benchmarks/results_gpu.md, the last two sections).
//
// A block is two warpgroups (256 threads), 128 rows x BN columns of the output, each
// warpgroup 64 rows. k advances 32 at a time (a 128-byte row of each operand). cp.async copies
// each k step into a ring `Stages` deep, in the layout wgmma reads with its 128-byte swizzle:
// rows of 128 bytes, the 16-byte chunk c of row r at chunk c ^ (r % 8), groups of 8 rows 1024
// bytes apart. Once its copies have landed, each thread converts them into one of `Buffers`
// buffers at the same place: rounded to tf32 (tf32), or split into big (rounded) and small
// (the rest) parts (fp32: three products, small x big + big x small + big x big, as GemmTiles'
// mma3). The ring slot takes the next copy at once, so Stages - 1 steps' copies are in flight
// (at 1 block a multiprocessor, the latency of global memory needs them), and Buffers - 2
// product groups run on while the next step is converted. tf32 tiles with no buffers skip the
// conversion: the tensor cores read the ring, each float truncated to tf32.
//
// bf16 (--precision bf16): A and B in bfloat16 (GemmProblem::a16 / b16: the weight stored so
// at export, the input by the layer before or by lapis::to_bfloat16), always read from the
// ring as they are (Buffers 0). A 128-byte row is then 64 k, a 32-byte step of the descriptor
// one m64n128k16 bf16 product: the same layout, swizzle and descriptors as tf32, at twice the
// products a byte.
#pragma once

namespace lapis {
namespace detail {

namespace wgmma {

// The shared-memory matrix descriptor of a K-major operand at `smem` (its first row, at the
// k wanted): 128-byte swizzle, groups of 8 rows 1024 bytes apart (the leading offset is
// unused for swizzled K-major operands; 1 by convention).
KOKKOS_FORCEINLINE_FUNCTION uint64_t descriptor(const void* smem) {
#if defined(__CUDA_ARCH__)
  const uint32_t address = static_cast<uint32_t>(__cvta_generic_to_shared(smem));
#else
  const uint32_t address = uint32_t(reinterpret_cast<uintptr_t>(smem));
#endif
  return uint64_t((address & 0x3ffffu) >> 4) | (uint64_t(1) << 16) |
         (uint64_t(1024 >> 4) << 32) | (uint64_t(1) << 62);
}

#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
KOKKOS_FORCEINLINE_FUNCTION void fence() {
  asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory");
}
KOKKOS_FORCEINLINE_FUNCTION void commit() {
  asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");
}
template <int Pending>
KOKKOS_FORCEINLINE_FUNCTION void wait() {
  asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(Pending) : "memory");
}
// Orders this thread's ordinary shared-memory writes before the tensor cores' reads.
KOKKOS_FORCEINLINE_FUNCTION void proxy_fence() {
  asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
}

// Barriers in shared memory that the tensor memory accelerator's copies signal: `expect` arms
// one for a phase of `bytes` (the thread's arrival, the bytes still to land), `landed` spins
// until the phase of that parity is complete.
KOKKOS_FORCEINLINE_FUNCTION uint32_t shared_address(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}
KOKKOS_FORCEINLINE_FUNCTION void barrier_init(uint64_t* bar) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], 1;\n" ::"r"(shared_address(bar)) : "memory");
}
KOKKOS_FORCEINLINE_FUNCTION void barrier_init_fence() {
  asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
}
KOKKOS_FORCEINLINE_FUNCTION void expect(uint64_t* bar, const uint32_t bytes) {
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(
                   shared_address(bar)),
               "r"(bytes)
               : "memory");
}
KOKKOS_FORCEINLINE_FUNCTION void landed(uint64_t* bar, const int parity) {
  uint32_t done = 0;
  while (!done)
    asm volatile(
        "{\n"
        ".reg .pred p;\n"
        "mbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\n"
        "selp.u32 %0, 1, 0, p;\n"
        "}\n"
        : "=r"(done)
        : "r"(shared_address(bar)), "r"(parity)
        : "memory");
}
// The box of `map` at (k, row) into shared memory at `into`, signalling `bar`.
KOKKOS_FORCEINLINE_FUNCTION void copy_box(void* into, const CUtensorMap* map, uint64_t* bar,
                                          const int k, const int row) {
  asm volatile(
      "cp.async.bulk.tensor.2d.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1, "
      "{%3, %4}], [%2];\n" ::"r"(shared_address(into)),
      "l"(reinterpret_cast<uint64_t>(map)), "r"(shared_address(bar)), "r"(k), "r"(row)
      : "memory");
}

// The operands of a m64n128 product: its 64 accumulators (%0 .. %63), the descriptors of A and
// B (%64, %65) and whether to accumulate (%66).
#define LAPIS_WGMMA_D64_REGISTERS                     \
  "{%0, %1, %2, %3, %4, %5, %6, %7, "                 \
  "%8, %9, %10, %11, %12, %13, %14, %15, "            \
  "%16, %17, %18, %19, %20, %21, %22, %23, "          \
  "%24, %25, %26, %27, %28, %29, %30, %31, "          \
  "%32, %33, %34, %35, %36, %37, %38, %39, "          \
  "%40, %41, %42, %43, %44, %45, %46, %47, "          \
  "%48, %49, %50, %51, %52, %53, %54, %55, "          \
  "%56, %57, %58, %59, %60, %61, %62, %63}, "
#define LAPIS_WGMMA_D64_OPERANDS                                                            \
  "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]),      \
      "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]),            \
      "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]),         \
      "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]),         \
      "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]),         \
      "+f"(d[31]), "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]),         \
      "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]), "+f"(d[41]), "+f"(d[42]),         \
      "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), "+f"(d[48]),         \
      "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]),         \
      "+f"(d[55]), "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]),         \
      "+f"(d[61]), "+f"(d[62]), "+f"(d[63])                                                 \
      : "l"(a), "l"(b), "r"(accumulate)

// d = A B^T + (accumulate ? d : 0) for 64 rows of A and 128 of B, 8 k (tf32 operands,
// float32 accumulators).
KOKKOS_FORCEINLINE_FUNCTION void mma_64x128x8(float (&d)[64], const uint64_t a,
                                              const uint64_t b, const int accumulate) {
  asm volatile(
      "{\n"
      ".reg .pred p;\n"
      "setp.ne.b32 p, %66, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n128k8.f32.tf32.tf32 "
      LAPIS_WGMMA_D64_REGISTERS
      "%64, %65, p, 1, 1;\n"
      "}\n"
      : LAPIS_WGMMA_D64_OPERANDS);
}

// The same for 16 k of bfloat16 operands.
KOKKOS_FORCEINLINE_FUNCTION void mma_64x128x16_bf16(float (&d)[64], const uint64_t a,
                                                    const uint64_t b, const int accumulate) {
  asm volatile(
      "{\n"
      ".reg .pred p;\n"
      "setp.ne.b32 p, %66, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 "
      LAPIS_WGMMA_D64_REGISTERS
      "%64, %65, p, 1, 1, 0, 0;\n"
      "}\n"
      : LAPIS_WGMMA_D64_OPERANDS);
}
#endif

#if defined(KOKKOS_ENABLE_CUDA) && defined(__CUDACC__)
// A and B as the tensor memory accelerator reads them (boxes of 32 k x the tile's rows).
#if CUDA_VERSION >= 12000
struct TensorMaps {
  CUtensorMap a, b;
};

// The description of `rows` rows of k elements (float32, or bfloat16 with `bf16`), `ld`
// apart, read in boxes of one 128-byte row of k (32 or 64) x `box_rows` rows with wgmma's
// 128-byte swizzle, or false where the copy engine cannot read them (rows not 16 bytes
// aligned, or no driver entry point).
inline bool describe(CUtensorMap* map, const void* data, const bool bf16, const int64_t rows,
                     const int64_t k, const int64_t ld, const int box_rows) {
  using Encode = CUresult (*)(CUtensorMap*, CUtensorMapDataType, cuuint32_t, void*,
                              const cuuint64_t*, const cuuint64_t*, const cuuint32_t*,
                              const cuuint32_t*, CUtensorMapInterleave, CUtensorMapSwizzle,
                              CUtensorMapL2promotion, CUtensorMapFloatOOBfill);
  static const Encode encode = [] {
    void* f = nullptr;
    cudaDriverEntryPointQueryResult found{};
#if CUDART_VERSION >= 12050
    const cudaError_t got = cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &f, 12000,
                                                             cudaEnableDefault, &found);
#else
    const cudaError_t got =
        cudaGetDriverEntryPoint("cuTensorMapEncodeTiled", &f, cudaEnableDefault, &found);
#endif
    return got == cudaSuccess && found == cudaDriverEntryPointSuccess
               ? reinterpret_cast<Encode>(f)
               : Encode(nullptr);
  }();
  const int64_t bytes = bf16 ? 2 : 4;
  if (!encode || reinterpret_cast<uintptr_t>(data) % 16 != 0 || ld * bytes % 16 != 0)
    return false;
  const cuuint64_t extent[2] = {cuuint64_t(k), cuuint64_t(rows)};
  const cuuint64_t stride[1] = {cuuint64_t(ld * bytes)};
  const cuuint32_t box[2] = {cuuint32_t(128 / bytes), cuuint32_t(box_rows)},
                   element_step[2] = {1, 1};
  return encode(map, bf16 ? CU_TENSOR_MAP_DATA_TYPE_BFLOAT16 : CU_TENSOR_MAP_DATA_TYPE_FLOAT32,
                2, const_cast<void*>(data), extent, stride,
                box, element_step, CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_128B,
                CU_TENSOR_MAP_L2_PROMOTION_L2_256B,
                CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE) == CUDA_SUCCESS;
}
#else
struct TensorMaps {};  // no tensor memory accelerator before CUDA 12
#endif
#endif

}  // namespace wgmma

template <int BN, int Stages, int Buffers, Precision P, bool Tma = false>
struct WgmmaTiles {
  static constexpr bool bf16 = P == Precision::bf16;
  using E = std::conditional_t<bf16, bfloat16, float>;  // the operands' elements
  static constexpr int per_chunk = 16 / int(sizeof(E));  // elements a 16-byte chunk
  static constexpr int BM = 128, BK = 8 * per_chunk, threads = 256, columns = BN;
  static constexpr int NC = BN / 128;  // 128-column products a warpgroup issues per k8
  static constexpr int parts = P == Precision::fp32 ? 2 : 1;  // big (and small)
  static constexpr int a_bytes = BM * 128, b_bytes = BN * 128, part_bytes = a_bytes + b_bytes;
  // Stages copies of k steps (`part_bytes` each) land in a ring; once landed, each is
  // converted into one of Buffers buffers (parts x part_bytes) that the tensor cores read, so
  // its ring slot takes the next copy at once: Stages - 1 steps' copies stay in flight.
  // Buffers - 2 product groups stay in flight while the next step is converted.
  // Buffers 0 (tf32 only): no conversion, the tensor cores read the ring itself and take the
  // top 19 bits of each float (tf32 by truncation: the wide MLP 2.6e-3 from float64 against
  // 8.5e-4 rounded, benchmarks/results_gpu.md), so a slot takes its next copy once its
  // products are done: Stages - 2 steps' copies in flight, one product group.
  static constexpr bool direct = Buffers == 0;
  static constexpr int in_flight = direct ? 1 : Buffers - 2, ahead = direct ? Stages - 2 : Stages - 1;
  // fp32 with one 128-column product a warpgroup: each k step's products are summed by the
  // tensor cores from zero (into `part`) and added to the sums in float once done, instead of
  // the tensor cores carrying each sum from step to step (the wide MLP 1.1e-5 from float64 so;
  // GemmTiles' FreshSums). The products are waited for every step at fp32 (in_flight 0), so
  // this costs no overlap; at 128 x 256 the second set of accumulators would not fit.
  static constexpr bool fresh = P == Precision::fp32 && NC == 1;
  static_assert(!fresh || in_flight == 0, "fresh sums: a step's products done the next step");
  static constexpr int rotation = direct ? 1 : Buffers;  // step % rotation: the step's buffer
  static constexpr int buffer_bytes = parts * part_bytes;
  static constexpr int LDC = BN + 8;  // staged outputs' rows: a half warp's pairs in 32 banks
  static constexpr size_t staging = size_t(Stages) * part_bytes + size_t(Buffers) * buffer_bytes,
                          staged_outputs = size_t(BM) * LDC * sizeof(float);
  // Tma: a barrier a ring slot, after everything else.
  static constexpr size_t barriers_at = staging > staged_outputs ? staging : staged_outputs;
  static constexpr size_t scratch =
      barriers_at + (Tma ? Stages * sizeof(uint64_t) : 0) + 1024;  // + alignment
  static constexpr int copies = (BM + BN) * 8, per_thread = copies / threads;
  static_assert(BN % 128 == 0 && copies % threads == 0 &&
                    (direct ? Stages >= 3 && P != Precision::fp32
                            : Stages >= 2 && (Buffers == 2 || Buffers == 3) && !bf16),
                "wgmma tile shape");
  // The same blocks on mma.sync, for a device that runs the sm_90 build (bf16: a loop a
  // thread, gemm_wgmma_kernel).
  using Fallback = GemmTiles<128, BN, 64, 32 * NC, 16, 2, 1, true,
                             bf16 ? Precision::tf32 : P>;
  static_assert(Fallback::threads == threads && Fallback::scratch <= scratch, "fallback");
  KOKKOS_FORCEINLINE_FUNCTION static const E* operand_a(const GemmProblem& p) {
    if constexpr (bf16) return p.a16; else return p.a;
  }
  KOKKOS_FORCEINLINE_FUNCTION static const E* operand_b(const GemmProblem& p) {
    if constexpr (bf16) return p.b16; else return p.b;
  }

  // A thread's state: its accumulators, and the sources of its copies (worked out once a
  // tile, not once a k step: the address arithmetic of every copy, redone each step, was most
  // of the instructions of a step, and with two warps a scheduler nothing hid its latency).
  // Copy i of thread `rank` is row rank / 8 + 32 i of the stacked operands (A's BM rows, then
  // B's BN), chunk rank % 8 (k per_chunk (rank % 8) .. of the step), staged at copy_to(rank) +
  // i * 4096 bytes:
  // 32 rows further is 4096 bytes further, with the same swizzle.
  struct Acc {
    float v[NC][64];
    float part[fresh ? NC : 1][64];  // fresh: the latest k step's products
    const E* from[per_thread];  // the row at k per_chunk (rank % 8), or null past the edge
  };
  struct Tile {
    int m0, n0;
  };

  static int teams(const GemmProblem& p) {
    return ((p.m + BM - 1) / BM) * ((p.n + BN - 1) / BN);
  }
  KOKKOS_INLINE_FUNCTION static Tile tile(const GemmProblem& p, const int league_rank) {
    const int tiles_n = (p.n + BN - 1) / BN;
    return Tile{league_rank / tiles_n * BM, league_rank % tiles_n * BN};
  }

  // The byte of chunk `chunk` (16 bytes of k) of staged row `row` (wgmma's 128-byte swizzle).
  KOKKOS_FORCEINLINE_FUNCTION static int at(const int row, const int chunk) {
    return row * 128 + ((chunk ^ (row & 7)) << 4);
  }
  // The staging area's start, 1024-byte aligned in the shared window (the swizzle's period).
  KOKKOS_FORCEINLINE_FUNCTION static unsigned char* aligned(float* raw) {
#if defined(__CUDA_ARCH__)
    const uint32_t address = static_cast<uint32_t>(__cvta_generic_to_shared(raw));
#else
    const uint32_t address = uint32_t(reinterpret_cast<uintptr_t>(raw));
#endif
    return reinterpret_cast<unsigned char*>(raw) + ((1024 - address % 1024) % 1024);
  }

  // Where thread `rank`'s first copy lands in a stage (bytes), and its copies' sources.
  KOKKOS_FORCEINLINE_FUNCTION static int copy_to(const int rank) { return at(rank / 8, rank % 8); }
  KOKKOS_INLINE_FUNCTION static void sources(const GemmProblem& p, const Tile& t, const int rank,
                                             Acc& acc) {
    LAPIS_UNROLL
    for (int i = 0; i < per_thread; ++i) {
      const int row = rank / 8 + 32 * i, k = per_chunk * (rank % 8);
      if (row < BM)
        acc.from[i] =
            t.m0 + row < p.m ? operand_a(p) + int64_t(t.m0 + row) * p.lda + k : nullptr;
      else
        acc.from[i] =
            t.n0 + row - BM < p.n ? operand_b(p) + int64_t(t.n0 + row - BM) * p.ldb + k : nullptr;
    }
  }
  static_assert(threads == 256 && BM % 32 == 0, "copy i of a thread is 32 rows after copy i - 1");

  // Where ring slot `stage` and buffer `buffer` start.
  KOKKOS_FORCEINLINE_FUNCTION static unsigned char* slot(unsigned char* base, const int stage) {
    return base + size_t(Buffers) * buffer_bytes + stage * part_bytes;
  }
  KOKKOS_FORCEINLINE_FUNCTION static unsigned char* buffer(unsigned char* base, const int b) {
    return base + b * buffer_bytes;
  }
  // Tma: the barrier ring slot `stage`'s copies signal.
  KOKKOS_FORCEINLINE_FUNCTION static uint64_t* ring_barrier(unsigned char* base, const int stage) {
    return reinterpret_cast<uint64_t*>(base + barriers_at) + stage;
  }

  KOKKOS_INLINE_FUNCTION static void load(const GemmProblem& p, unsigned char* base,
                                          const int rank, const Acc& acc, const int k0,
                                          const int stage) {
    unsigned char* const s = slot(base, stage) + copy_to(rank);
    // k is a multiple of per_chunk: whole chunks
    const bool k_valid = k0 + per_chunk * (rank % 8) < p.k;
    LAPIS_UNROLL
    for (int i = 0; i < per_thread; ++i) {
      const bool valid = k_valid && acc.from[i] != nullptr;
      const E* const from = valid ? acc.from[i] + k0 : operand_a(p);
      unsigned char* const into = s + i * 4096;
#if defined(__CUDA_ARCH__)
      tf32::copy16(reinterpret_cast<float*>(into), reinterpret_cast<const float*>(from), valid);
#else
      if (valid)
        std::memcpy(into, from, 16);
      else
        std::memset(into, 0, 16);
#endif
    }
  }

  // The thread's own copies in ring slot `stage`, once landed, into buffer `b` at the same
  // place: rounded to tf32, and (fp32) the rest part_bytes further on.
  KOKKOS_INLINE_FUNCTION static void convert(unsigned char* base, const int rank,
                                             const int stage, const int b) {
    const unsigned char* const from = slot(base, stage) + copy_to(rank);
    unsigned char* const into = buffer(base, b) + copy_to(rank);
    LAPIS_UNROLL
    for (int i = 0; i < per_thread; ++i) {
      Float4 v = *reinterpret_cast<const Float4*>(from + i * 4096), rest;
      LAPIS_UNROLL
      for (int j = 0; j < 4; ++j) {
        const float rounded = bit_cast<float>((bit_cast<uint32_t>(v.v[j]) + 0x1000u) & 0xffffe000u);
        rest.v[j] = v.v[j] - rounded;
        v.v[j] = rounded;
      }
      *reinterpret_cast<Float4*>(into + i * 4096) = v;
      if (P == Precision::fp32)
        *reinterpret_cast<Float4*>(into + i * 4096 + part_bytes) = rest;
    }
  }

  // Warpgroup rank / 128's products of the staged step at `s` (a buffer, or a ring slot when
  // direct) into its accumulators: rows 64 wg .. of A against BN rows of B, four steps of 32
  // bytes (k8 tf32, k16 bf16).
  // The first step's first product starts the sums (the accumulators are never zeroed: an
  // ordinary instruction defining them made ptxas serialise the products, warning C7515).
  KOKKOS_INLINE_FUNCTION static void compute(const unsigned char* s, const int rank,
                                             const bool first, Acc& acc) {
    const int wg = rank / 128;
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
    wgmma::fence();
    LAPIS_UNROLL
    for (int kk = 0; kk < 4; ++kk) {
      const uint64_t a = wgmma::descriptor(s + wg * 64 * 128 + kk * 32);
      LAPIS_UNROLL
      for (int nc = 0; nc < NC; ++nc) {
        const uint64_t b = wgmma::descriptor(s + a_bytes + nc * 128 * 128 + kk * 32);
        const int accumulate = fresh ? kk > 0 : !first || kk > 0;
        if (P == Precision::fp32) {
          constexpr uint64_t small = uint64_t(part_bytes >> 4);
          float(&d)[64] = fresh ? acc.part[fresh ? nc : 0] : acc.v[nc];
          wgmma::mma_64x128x8(d, a + small, b, accumulate);
          wgmma::mma_64x128x8(d, a, b + small, 1);
          wgmma::mma_64x128x8(d, a, b, 1);
        } else if (bf16) {
          wgmma::mma_64x128x16_bf16(acc.v[nc], a, b, accumulate);
        } else {
          wgmma::mma_64x128x8(acc.v[nc], a, b, accumulate);
        }
      }
    }
    wgmma::commit();
#elif defined(__CUDA_ARCH__)
    (void)s, (void)wg, (void)acc;  // never launched: the sm_90 build runs Fallback
#else
    // The instruction emulated: accumulator (nc, 4 j + i) of lane l in warp w of the
    // warpgroup is row 16 w + l / 4 + 8 (i / 2), column 128 nc + 8 j + 2 (l % 4) + i % 2;
    // the tensor cores read the top 19 bits of each float operand, bfloat16 ones as they are.
    const int w = rank % 128 / 32, lane = rank % 32;
    const auto value = [&](const int part, const int operand_at, const int row, const int k) {
      const unsigned char* const e = s + part * part_bytes + operand_at +
                                     at(row, k / per_chunk) + int(sizeof(E)) * (k % per_chunk);
      if constexpr (bf16) {
        bfloat16 x;
        std::memcpy(&x, e, sizeof(x));
        return to_float(x);
      } else {
        const float x = *reinterpret_cast<const float*>(e);
        return bit_cast<float>(bit_cast<uint32_t>(x) & 0xffffe000u);
      }
    };
    for (int nc = 0; nc < NC; ++nc)
      for (int i = 0; i < 64; ++i)
        if (fresh)
          acc.part[fresh ? nc : 0][i] = 0.0f;
        else if (first)
          acc.v[nc][i] = 0.0f;
    for (int nc = 0; nc < NC; ++nc)
      for (int j = 0; j < 16; ++j)
        for (int i = 0; i < 4; ++i) {
          const int row = 64 * wg + 16 * w + lane / 4 + 8 * (i / 2);
          const int column = 128 * nc + 8 * j + 2 * (lane % 4) + i % 2;
          for (int k = 0; k < BK; ++k) {
            const float a_big = value(0, 0, row, k), b_big = value(0, a_bytes, column, k);
            float sum = a_big * b_big;
            if (P == Precision::fp32)
              sum += value(1, 0, row, k) * b_big + a_big * value(1, a_bytes, column, k);
            (fresh ? acc.part[fresh ? nc : 0] : acc.v[nc])[4 * j + i] += sum;
          }
        }
#endif
  }

  // Fresh sums: the latest k step's products (done) into the sums, which they start at `first`.
  KOKKOS_INLINE_FUNCTION static void fold(Acc& acc, const bool first) {
    LAPIS_UNROLL
    for (int i = 0; i < 64; ++i)
      acc.v[0][i] = first ? acc.part[0][i] : acc.v[0][i] + acc.part[0][i];
  }

  // The epilogue, first half: the thread's sums into the tile's rows in shared memory, so
  // that the second half (write_staged) writes whole 16-byte pieces of C's rows.
  KOKKOS_INLINE_FUNCTION static void stage_outputs(unsigned char* base, const int rank,
                                                   const Acc& acc) {
    float* const staged = reinterpret_cast<float*>(base);
    const int wg = rank / 128, w = rank % 128 / 32, lane = rank % 32;
    const int row = 64 * wg + 16 * w + lane / 4;
    LAPIS_UNROLL
    for (int nc = 0; nc < NC; ++nc)
      LAPIS_UNROLL
      for (int j = 0; j < 16; ++j)
        LAPIS_UNROLL
        for (int half = 0; half < 2; ++half)
          *reinterpret_cast<Float2*>(staged + (row + 8 * half) * LDC + 128 * nc + 8 * j +
                                     2 * (lane % 4)) =
              Float2{{acc.v[nc][4 * j + 2 * half], acc.v[nc][4 * j + 2 * half + 1]}};
  }

  // One block's tile; `team` as GemmTiles::pipeline's, plus proxy_fence (the thread's
  // converted values before the tensor cores read them) and mma_wait<N> (at most N of the
  // thread's warpgroup's product groups still running).
  template <class Team>
  KOKKOS_INLINE_FUNCTION static void pipeline(const GemmProblem& p, const Tile& t, float* raw,
                                              Team& team) {
    unsigned char* const base = aligned(raw);
    const int steps = (p.k + BK - 1) / BK;
    // Step s's operands into ring slot s % Stages: one thread's two boxes (Tma), or every
    // thread's share of cp.async copies.
    const auto copy = [&](const int s) {
      if constexpr (Tma)
        team.copy_boxes(p, t, base, s * BK, s % Stages);
      else
        team.each([&](int rank, Acc& acc) { load(p, base, rank, acc, s * BK, s % Stages); });
    };
    if constexpr (Tma)
      team.start_barriers(base);
    else
      team.each([&](int rank, Acc& acc) { sources(p, t, rank, acc); });
    LAPIS_UNROLL
    for (int s = 0; s < ahead; ++s) {
      if (s < steps) copy(s);
      if constexpr (!Tma) team.commit();
    }
    for (int step = 0; step < steps; ++step) {
      // Step `step`'s copies have landed: the slot's barrier has completed its phase for
      // this use of the slot (Tma), or this thread's own copies (the conversion reads only
      // those; the barrier below covers the others').
      if constexpr (Tma)
        team.boxes_landed(base, step % Stages, step / Stages % 2);
      else
        team.template wait<ahead - 1>();
      if (!direct)
        team.each([&](int rank, Acc&) { convert(base, rank, step % Stages, step % rotation); });
      team.proxy_fence();
      // The products of step - in_flight - 1 are done, so buffer (step + 1) % Buffers (direct:
      // ring slot (step - 2) % Stages) is free once everyone is past the barrier.
      team.template mma_wait<in_flight>();
      if (fresh && step > 0) team.each([&](int, Acc& acc) { fold(acc, step == 1); });
      team.barrier();
      const int next = step + ahead;  // into the slot converted at step - 1 (direct: read at step - 2)
      if (next < steps) copy(next);
      if constexpr (!Tma) team.commit();
      team.each([&](int rank, Acc& acc) {
        compute(direct ? slot(base, step % Stages) : buffer(base, step % rotation), rank,
                step == 0, acc);
      });
    }
    team.template mma_wait<0>();
    if (fresh) team.each([&](int, Acc& acc) { fold(acc, steps == 1); });
    team.barrier();  // every warpgroup's products are done with the staged operands
    team.each([&](int rank, Acc& acc) { stage_outputs(base, rank, acc); });
    team.barrier();
    team.each([&](int rank, Acc&) {
      write_staged<BM, BN, LDC, threads>(p, p.c, t.m0, t.n0, reinterpret_cast<float*>(base),
                                         rank);
    });
  }

#if defined(KOKKOS_ENABLE_CUDA) && defined(__CUDACC__)
  // The calling CUDA thread as pipeline's team.
  struct OneThread {
    int rank;
    Acc acc;
    const wgmma::TensorMaps* maps;  // Tma: A's and B's
    template <class F>
    __device__ void each(const F& f) {
      f(rank, acc);
    }
    __device__ void start_barriers(unsigned char* base) const {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
      if (rank == 0) {
        for (int s = 0; s < Stages; ++s) wgmma::barrier_init(ring_barrier(base, s));
        wgmma::barrier_init_fence();
      }
      __syncthreads();
#endif
    }
    __device__ void copy_boxes(const GemmProblem&, const Tile& t, unsigned char* base,
                               const int k0, const int stage) const {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
      if (rank == 0) {
        uint64_t* const bar = ring_barrier(base, stage);
        wgmma::expect(bar, part_bytes);  // whole boxes: what is past the edges lands as zeros
        wgmma::copy_box(slot(base, stage), &maps->a, bar, k0, t.m0);
        wgmma::copy_box(slot(base, stage) + a_bytes, &maps->b, bar, k0, t.n0);
      }
#endif
    }
    __device__ void boxes_landed(unsigned char* base, const int stage, const int parity) const {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
      wgmma::landed(ring_barrier(base, stage), parity);
#endif
    }
    __device__ void barrier() const { __syncthreads(); }
    __device__ void commit() const { tf32::commit(); }
    template <int Pending>
    __device__ void wait() const {
      tf32::wait<Pending>();
    }
    __device__ void proxy_fence() const {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
      wgmma::proxy_fence();
#endif
    }
    template <int Pending>
    __device__ void mma_wait() {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
      wgmma::wait<Pending>();
#endif
    }
  };

  static void run_cuda(const Kokkos::Cuda& space, const char* label, const GemmProblem& p);
#endif
};

// The tiles gemm_tiled (gemm_tf32.hpp) takes for linear layers on Hopper, copied by the tensor
// memory accelerator.
template <Precision P>
using HopperTiles =
    WgmmaTiles<128, P == Precision::fp32 ? 3 : 4, P == Precision::fp32 ? 2 : 3, P, true>;
// tf32 layers whose operands hold tf32 values already (GemmProblem::operands_tf32: a chain of
// linear layers, each storing its output rounded for the next): no rounding pass, the tensor
// cores read the ring as it is, six k steps deep (192 KiB). gemm_bench on an H200, 512 -> 512
// SiLU at 65,536 rows: 0.212 ms against 0.300 for HopperTiles<tf32>.
using DirectHopperTiles = WgmmaTiles<128, 6, 0, Precision::tf32, true>;
// --precision bf16: the same ring of bfloat16 operands (64 k a step), 6 deep (LAPIS_BF16_RING
// sets the depth).
#if defined(LAPIS_BF16_RING)
using Bf16HopperTiles = WgmmaTiles<128, LAPIS_BF16_RING, 0, Precision::bf16, true>;
#else
using Bf16HopperTiles = WgmmaTiles<128, 6, 0, Precision::bf16, true>;
#endif

#if defined(KOKKOS_ENABLE_CUDA) && defined(__CUDACC__)
template <class Tiles>
__global__ void __launch_bounds__(Tiles::threads, 1)
    gemm_wgmma_kernel(const GemmProblem p, const __grid_constant__ wgmma::TensorMaps maps) {
  extern __shared__ __align__(1024) float gemm_wgmma_shared[];
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  typename Tiles::OneThread me;  // the accumulators uninitialised: the first product sets them
  me.rank = int(threadIdx.x);
  me.maps = &maps;
  Tiles::pipeline(p, Tiles::tile(p, int(blockIdx.x)), gemm_wgmma_shared, me);
#else
  if constexpr (Tiles::bf16) {
    // bfloat16 operands without sm_90a: the tile's outputs a thread at a time.
    const auto t = Tiles::tile(p, int(blockIdx.x));
    for (int i = int(threadIdx.x); i < Tiles::BM * Tiles::columns; i += Tiles::threads)
      if (t.m0 + i / Tiles::columns < p.m && t.n0 + i % Tiles::columns < p.n)
        bf16_output(p, t.m0 + i / Tiles::columns, t.n0 + i % Tiles::columns);
  } else {
    using Fallback = typename Tiles::Fallback;
    const typename Fallback::CudaBlock block{};
    typename Fallback::template OneThread<typename Fallback::CudaBlock> me{
        block, int(threadIdx.x), {}};
    Fallback::pipeline(p, Fallback::tile(p, int(blockIdx.x)), gemm_wgmma_shared, me);
  }
#endif
}

// Launched by CUDA itself (more shared memory than a Kokkos team gets), shown in Kokkos Tools
// under `label` as GemmTiles::run_cuda.
template <int BN, int Stages, int Buffers, Precision P, bool Tma>
void WgmmaTiles<BN, Stages, Buffers, P, Tma>::run_cuda(const Kokkos::Cuda& space,
                                                       const char* label, const GemmProblem& p) {
  using Self = WgmmaTiles<BN, Stages, Buffers, P, Tma>;
  wgmma::TensorMaps maps{};
  if constexpr (Tma) {
    // One product whose rows the copy engine can read (else the same tiles with cp.async).
#if CUDA_VERSION >= 12000
    const bool described =
        p.batches == 1 && wgmma::describe(&maps.a, operand_a(p), bf16, p.m, p.k, p.lda, BM) &&
        wgmma::describe(&maps.b, operand_b(p), bf16, p.n, p.k, p.ldb, BN);
#else
    const bool described = false;
#endif
    if (!described) return WgmmaTiles<BN, Stages, Buffers, P>::run_cuda(space, label, p);
  }
  static const cudaError_t configured =
      cudaFuncSetAttribute(gemm_wgmma_kernel<Self>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                           int(scratch));
  if (configured != cudaSuccess)
    Kokkos::abort("lapis::linear: the wgmma tiles' shared memory is more than this GPU has");
  uint64_t kernel_id = 0;
  const bool profiled = Kokkos::Tools::profileLibraryLoaded();
  if (profiled) Kokkos::Tools::beginParallelFor(label, 0, &kernel_id);
  gemm_wgmma_kernel<Self><<<teams(p), threads, scratch, space.cuda_stream()>>>(p, maps);
  const cudaError_t launched = cudaGetLastError();
  if (launched != cudaSuccess) Kokkos::abort(cudaGetErrorString(launched));
  if (profiled) {
    space.fence();
    Kokkos::Tools::endParallelFor(kernel_id);
  }
}
#endif

}  // namespace detail
}  // namespace lapis
