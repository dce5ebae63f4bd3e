// lapis-export tensor-core matrix products, shipped into every exported package (src/lapis/).
// CUDA packages call these instead of gemm.hpp's loops (exporter/emit/matmul_handlers.py):
// lapis::linear for linear layers, y = activation(x W^T + bias) with W as the model stores it
// ([out][in]); lapis::matmul_tensor_core / batch_matmul_tensor_core for linalg.matmul and
// linalg.batch_matmul (C = A B or C += A B). float32 Views on Kokkos::Cuda whose rows are
// contiguous and 16-byte aligned run GemmTiles (mma.sync m16n8k8 tf32, cp.async staging);
// everything else runs one thread per output (linear) or lapis::matmul (gemm.hpp), which is
// also what host backends run. The tiles build on any backend, so that the host check
// (integration_tests/gemm_tf32_check) runs their staging, fragment indexing, rounding and
// epilogue sequentially, thread by thread, with the mma emulated.
#pragma once

#include <Kokkos_Core.hpp>

#include <cstdint>
#include <type_traits>

#include "conv_common.hpp"
#include "conv_tf32.hpp"
#include "gemm.hpp"
#include "support.hpp"

namespace lapis {

// --precision tf32, linear layers of a chain (exporter/lowering/linear.py marks them): `inputs`,
// x and W hold tf32 values already (x stored so by the layer before, W rounded at export), so
// the tiles read them as they are, with no rounding pass; `output`, only linear layers read y,
// so it is stored rounded to tf32 (round_tf32: what their tiles would make of it).
enum class Tf32Rounded { none, inputs, output, inputs_and_output };

namespace detail {

// One product C (+)= A B^T (WeightRows: B is [n][k], a linear layer's weight) or C (+)= A B
// (B is [k][n]) of row-major float32 operands, `batches` of them `batch_*` apart.
struct GemmProblem {
  const float* a;
  const float* b;
  float* c;
  const float* bias;  // read with ConvInit::bias
  int64_t lda, ldb, ldc, batch_a, batch_b, batch_c;
  int m, n, k, batches;
  ConvInit init;
  Activation activation;
  const float* residual = nullptr;  // added before the activation, rows ldr apart (or none)
  int64_t ldr = 0;
  bool operands_tf32 = false;  // Tf32Rounded::inputs: A and B hold tf32 values
  bool round_output = false;   // Tf32Rounded::output: C stored rounded to tf32
  // --precision bf16 (WgmmaTiles<..., Precision::bf16>): A and B in bfloat16, read from these
  // instead of a and b; C in bfloat16 (c16, rounded to nearest even) where only linear layers
  // read it, else c.
  const bfloat16* a16 = nullptr;
  const bfloat16* b16 = nullptr;
  bfloat16* c16 = nullptr;
};

// An output as an epilogue stores it.
KOKKOS_FORCEINLINE_FUNCTION float stored(const bool round_output, const float v) {
  return round_output ? round_tf32(v) : v;
}

// Four floats as one 16-byte load or store.
struct alignas(16) Float4 {
  float v[4];
};
// Four bfloat16 as one 8-byte store.
struct alignas(8) Bf16x4 {
  bfloat16 v[4];
};
// Two floats as one 8-byte load or store.
struct alignas(8) Float2 {
  float v[2];
};

// The second half of an epilogue that stages a BM x BN tile's sums in shared memory (rows
// LDC floats apart): 16-byte pieces of the staged rows, plus the start value (bias, zero or
// C's own), the residual, then the activation, to the tile at (m0, n0) of C = `c`. A thread
// keeps the same four columns, rows Threads / (BN / 4) apart, in a loop that is not unrolled:
// unrolled for every activation, it was most of a wgmma kernel's 20,000 instructions, run
// once a tile and so never in the instruction cache. With p.c16 (one product, no batches) the
// outputs go there in bfloat16, four as one 8-byte store.
template <int BM, int BN, int LDC, int Threads>
KOKKOS_INLINE_FUNCTION void write_staged(const GemmProblem& p, float* const c, const int m0,
                                         const int n0, const float* staged, const int rank) {
  static_assert(BN % 4 == 0 && Threads % (BN / 4) == 0, "a thread's columns");
  constexpr int rows_apart = Threads / (BN / 4);
  bfloat16* const c16 = p.c16;
  const bool whole =
      p.ldc % 4 == 0 && p.n % 4 == 0 &&
      (c16 ? reinterpret_cast<uintptr_t>(c16) % 8 : reinterpret_cast<uintptr_t>(c) % 16) == 0;
  const int column = rank % (BN / 4) * 4, n = n0 + column;
  if (n >= p.n) return;
  const int count = whole ? 4 : (p.n - n < 4 ? p.n - n : 4);
  Float4 bias{{0.0f, 0.0f, 0.0f, 0.0f}};
  LAPIS_UNROLL
  for (int i = 0; i < 4; ++i)
    if (p.init == ConvInit::bias && i < count) bias.v[i] = p.bias[n + i];
  with_activation(p.activation, [&](const auto f) {
    LAPIS_NO_UNROLL
    for (int row = rank / (BN / 4); row < BM && m0 + row < p.m; row += rows_apart) {
      const int64_t m = m0 + row;
      float* const out = c16 ? nullptr : c + m * p.ldc + n;
      bfloat16* const out16 = c16 ? c16 + m * p.ldc + n : nullptr;
      const float* const add = p.residual ? p.residual + m * p.ldr + n : nullptr;
      Float4 v = *reinterpret_cast<const Float4*>(staged + row * LDC + column);
      LAPIS_UNROLL
      for (int i = 0; i < 4; ++i) {
        v.v[i] += bias.v[i];
        if (p.init == ConvInit::accumulate && i < count)
          v.v[i] += c16 ? to_float(out16[i]) : out[i];
        if (p.residual && i < count) v.v[i] += add[i];
        v.v[i] = stored(p.round_output, activate(f.value, v.v[i]));
      }
      if (c16) {
        Bf16x4 h;
        LAPIS_UNROLL
        for (int i = 0; i < 4; ++i) h.v[i] = to_bfloat16(v.v[i]);
        if (whole)
          *reinterpret_cast<Bf16x4*>(out16) = h;
        else
          LAPIS_UNROLL
          for (int i = 0; i < 4; ++i)
            if (i < count) out16[i] = h.v[i];
      } else if (whole) {
        *reinterpret_cast<Float4*>(out) = v;
      } else {
        LAPIS_UNROLL
        for (int i = 0; i < 4; ++i)
          if (i < count) out[i] = v.v[i];
      }
    }
  });
}

// One output of a product of bfloat16 operands (GemmProblem::a16, b16, B as [n][k]; one
// product, no batches): the float sum in order over k, then the epilogue write_staged applies.
// What the sm_90 build of the bf16 wgmma kernel runs (no wgmma there).
KOKKOS_INLINE_FUNCTION void bf16_output(const GemmProblem& p, const int m, const int n) {
  float sum = 0.0f;
  for (int k = 0; k < p.k; ++k)
    sum += to_float(p.a16[int64_t(m) * p.lda + k]) * to_float(p.b16[int64_t(n) * p.ldb + k]);
  const int64_t at = int64_t(m) * p.ldc + n;
  if (p.init == ConvInit::bias) sum += p.bias[n];
  if (p.init == ConvInit::accumulate) sum += p.c16 ? to_float(p.c16[at]) : p.c[at];
  if (p.residual) sum += p.residual[int64_t(m) * p.ldr + n];
  const float v = activate(p.activation, sum);
  if (p.c16)
    p.c16[at] = to_bfloat16(v);
  else
    p.c[at] = v;
}

// The kernel of GemmTiles::run_cuda: one block a team, the staging in dynamic shared memory.
#if defined(KOKKOS_ENABLE_CUDA) && defined(__CUDACC__)
template <class Tiles>
__global__ void __launch_bounds__(Tiles::threads, Tiles::min_teams)
    gemm_tiles_kernel(const GemmProblem p) {
  extern __shared__ __align__(16) float gemm_tiles_shared[];
  const typename Tiles::CudaBlock block{};
  typename Tiles::template OneThread<typename Tiles::CudaBlock> me{block, int(threadIdx.x), {}};
  Tiles::pipeline(p, Tiles::tile(p, int(blockIdx.x)), gemm_tiles_shared, me);
}
#endif

// Host emulation of a tensor-core multiply-add of two float32 values: what the mma computes
// from the parts the device code makes (CUTLASS's fast split: big rounded to tf32, half an ulp
// added then truncated; small = x - big, of which the mma reads the top 19 bits).
template <Precision P>
inline float emulated_product(const float a, const float b) {
  const float a_big = bit_cast<float>((bit_cast<uint32_t>(a) + 0x1000u) & 0xffffe000u);
  const float b_big = bit_cast<float>((bit_cast<uint32_t>(b) + 0x1000u) & 0xffffe000u);
  if (P != Precision::fp32) return a_big * b_big;
  const float a_small = bit_cast<float>(bit_cast<uint32_t>(a - a_big) & 0xffffe000u);
  const float b_small = bit_cast<float>(bit_cast<uint32_t>(b - b_big) & 0xffffe000u);
  return a_small * b_big + a_big * b_small + a_big * b_big;
}

// Tiles of BM x BN outputs, one team each, warps of WM x WN (a grid of 16 x 8 mma tiles), k in
// steps of BK staged `Stages` deep by cp.async (16-byte copies, zero fill past the edges).
// Staged A is [BM][BK + 4] and B [BN][BK + 4] (or [BK][BN + 8]): the 32 lanes' fragment reads
// (8 rows x 4 k, or 4 k x 8 columns) land in 32 banks. P = fp32 makes three tf32 products of
// the operands' (big, small) parts (the small * small term left out), tf32 one of the bigs.
// StagedStore: the epilogue passes the outputs through shared memory (after the last k step),
// so that each thread writes whole 16-byte pieces of rows instead of the mma accumulators'
// pairs of columns 8 rows apart.
// Paired (linear layers, B = [n][k]; BK 16 or 32): a lane reads its rows' four consecutive k,
// 4 tk .. 4 tk + 3 of each 16, as one 16-byte load, and two mma steps take them: step h puts
// k 4 tk + 2 h in the fragment's k slot tk and 4 tk + 2 h + 1 in slot tk + 4. A and B use the
// same order, so the two steps sum the 16 products once each; a warp reads a fragment with a
// quarter of the loads. Rows are unpadded (a quarter warp's 8 loads, two rows of 64 bytes,
// land in 32 banks); at BK 32 odd rows swap their halves so that the two rows still do.
// FreshSums (fp32, unpaired): each k step's products are summed by the tensor cores from zero
// and added to the accumulators by an ordinary (round-to-nearest) addition, instead of the
// tensor cores carrying the whole sum from step to step.
template <int BM, int BN, int WM, int WN, int BK, int Stages, int MinTeams, bool WeightRows,
          Precision P, bool StagedStore = false, bool Paired = false, bool FreshSums = false>
struct GemmTiles {
  static constexpr int warps_m = BM / WM, warps_n = BN / WN;
  static constexpr int threads = 32 * warps_m * warps_n, min_teams = MinTeams;
  static constexpr int MT = WM / 16, NT = WN / 8;
  static constexpr int LDA = Paired ? BK : BK + 4, LDB = Paired ? BK : WeightRows ? BK + 4 : BN + 8;
  static constexpr int a_floats = BM * LDA, b_floats = WeightRows ? BN * LDB : BK * LDB;
  static constexpr int stage_floats = a_floats + b_floats;
  static constexpr int LDC = BN + 8;  // staged outputs: a half warp's pairs in 32 banks
  static constexpr size_t staging = size_t(Stages) * stage_floats * sizeof(float);
  static constexpr size_t staged_outputs = StagedStore ? size_t(BM) * LDC * sizeof(float) : 0;
  static constexpr size_t scratch = staging > staged_outputs ? staging : staged_outputs;
  static constexpr int a_copies = BM * BK / 4, b_copies = BN * BK / 4;  // 16 bytes each
  static_assert(BM % WM == 0 && BN % WN == 0 && WM % 16 == 0 && WN % 8 == 0 && BK % 8 == 0,
                "tile shape");
  static_assert(P != Precision::bf16, "bf16 products have tiles of their own");
  static_assert(!Paired || (WeightRows && (BK == 16 || BK == 32)), "paired fragments");

  // Where staged (row, k) of an operand with rows `ld` apart sits.
  KOKKOS_FORCEINLINE_FUNCTION static int at(const int row, const int k, const int ld) {
    if (!Paired || BK == 16) return row * ld + k;
    return row * ld + (((k / 4) ^ (4 * (row & 1))) * 4 | (k % 4));
  }

  static constexpr int a_per_thread = (a_copies + threads - 1) / threads,
                       b_per_thread = (b_copies + threads - 1) / threads;
  static_assert(a_per_thread + b_per_thread <= 32, "a thread's copies in one mask");
  // A thread's state: its accumulators, and where its copies come from (worked out once a
  // tile: redone every k step, the address arithmetic was a fifth of the instructions of a
  // step of the 64 x 64 tf32 tiles, 199 -> 157).
  struct Acc {
    float v[MT][NT][4];
    // The sources at k 0 of the thread's first copy of A and of B (the others are a_rows /
    // b_rows rows further each, see load), and whether copy r's row (A, B[n][k]) or column
    // (B[k][n]) is inside the operand (bit r).
    const float* a_from;
    const float* b_from;
    uint32_t inside;
  };
  // A team's outputs: rows m0.., columns n0.. of one batch entry.
  struct Tile {
    int m0, n0;
    const float* a;
    const float* b;
    float* c;
  };

  static int teams(const GemmProblem& p) {
    return ((p.m + BM - 1) / BM) * ((p.n + BN - 1) / BN) * p.batches;
  }

  // Consecutive teams share their rows of A (the column tiles vary fastest): A is read from
  // memory about once, the weights stay in L2.
  KOKKOS_INLINE_FUNCTION static Tile tile(const GemmProblem& p, const int league_rank) {
    const int tiles_n = (p.n + BN - 1) / BN, per_batch = ((p.m + BM - 1) / BM) * tiles_n;
    const int batch = league_rank / per_batch, t = league_rank % per_batch;
    Tile x;
    x.m0 = t / tiles_n * BM;
    x.n0 = t % tiles_n * BN;
    x.a = p.a + batch * p.batch_a;
    x.b = p.b + batch * p.batch_b;
    x.c = p.c + batch * p.batch_c;
    return x;
  }

  KOKKOS_FORCEINLINE_FUNCTION static void copy16(float* shared, const float* global,
                                                 const bool valid) {
#if defined(__CUDA_ARCH__)
    tf32::copy16(shared, global, valid);
#else
    for (int i = 0; i < 4; ++i) shared[i] = valid ? global[i] : 0.0f;
#endif
  }

  // Thread `rank`'s copy r of A (r < a_per_thread) or of B: its row and column in the staged
  // operand (B[k][n]: k and column), or false past the operand's count.
  KOKKOS_FORCEINLINE_FUNCTION static bool copy_of(const int rank, const int r, int& row,
                                                  int& col) {
    const bool of_a = r < a_per_thread;
    const int c = rank + (of_a ? r : r - a_per_thread) * threads;
    const int count = of_a ? a_copies : b_copies;
    if (count % threads != 0 && c >= count) return false;
    const int per_row = of_a || WeightRows ? BK / 4 : BN / 4;
    row = c / per_row;
    col = c % per_row * 4;
    return true;
  }

  // Where copy r (row, col of copy_of) lands in a stage.
  KOKKOS_FORCEINLINE_FUNCTION static int copy_to(const int r, const int row, const int col) {
    if (r < a_per_thread) return at(row, col, LDA);
    return a_floats + (WeightRows ? at(row, col, LDB) : row * LDB + col);
  }

  // Copy r + 1 of an operand is `rows` rows after copy r (whole rows of copies a round).
  static constexpr int a_rows = threads / (BK / 4),
                       b_rows = threads / (WeightRows ? BK / 4 : BN / 4);
  static_assert(threads % (BK / 4) == 0 && (WeightRows || threads % (BN / 4) == 0) &&
                    (!Paired || BK == 16 || (a_rows % 2 == 0 && b_rows % 2 == 0)),
                "a thread's copies keep their column (and swizzle) from round to round");

  // Thread `rank`'s copies' sources, once a tile.
  KOKKOS_INLINE_FUNCTION static void sources(const GemmProblem& p, const Tile& t, const int rank,
                                             Acc& acc) {
    acc.inside = 0;
    acc.a_from = acc.b_from = p.a;
    LAPIS_UNROLL
    for (int r = 0; r < a_per_thread + b_per_thread; ++r) {
      int row = 0, col = 0;
      if (!copy_of(rank, r, row, col)) continue;
      bool inside;
      if (r < a_per_thread) {
        inside = t.m0 + row < p.m;
        if (r == 0) acc.a_from = t.a + int64_t(t.m0 + row) * p.lda + col;
      } else if (WeightRows) {  // B[n][k]: BN rows of BK
        inside = t.n0 + row < p.n;
        if (r == a_per_thread) acc.b_from = t.b + int64_t(t.n0 + row) * p.ldb + col;
      } else {  // B[k][n]: BK rows of BN
        inside = t.n0 + col < p.n;
        if (r == a_per_thread) acc.b_from = t.b + int64_t(row) * p.ldb + t.n0 + col;
      }
      acc.inside |= uint32_t(inside) << r;
    }
  }

  // Thread `rank`'s copies of k step k0 into stage `stage`. Rows are whole 16-byte chunks
  // (k a multiple of 4: the caller checks), so a chunk is all in or all out.
  KOKKOS_INLINE_FUNCTION static void load(const GemmProblem& p, float* smem, const int rank,
                                          const Acc& acc, const int k0, const int stage) {
    float* const staged = smem + stage * stage_floats;
    LAPIS_UNROLL
    for (int r = 0; r < a_per_thread + b_per_thread; ++r) {
      int row = 0, col = 0;
      if (!copy_of(rank, r, row, col)) continue;
      const bool of_a = r < a_per_thread, k_major = of_a || WeightRows;  // k along the row
      const bool valid = (acc.inside >> r & 1u) && k0 + (k_major ? col : row) < p.k;
      const int round = of_a ? r : r - a_per_thread;
      const float* const from =
          valid ? (of_a ? acc.a_from + int64_t(round * a_rows) * p.lda
                        : acc.b_from + int64_t(round * b_rows) * p.ldb) +
                      (k_major ? int64_t(k0) : int64_t(k0) * p.ldb)
                : p.a;
      copy16(staged + copy_to(r, row, col), from, valid);
    }
  }

  // Staged B at (k, column n) of the tile.
  KOKKOS_FORCEINLINE_FUNCTION static float b_at(const float* b, const int k, const int n) {
    return WeightRows ? b[n * LDB + k] : b[k * LDB + n];
  }

  // Stage `stage` into thread `rank`'s accumulators. Fragments of m16n8k8 (gr = lane / 4,
  // tk = lane % 4): A registers (gr, tk), (gr + 8, tk), (gr, tk + 4), (gr + 8, tk + 4); B
  // (k tk, column gr), (tk + 4, gr); accumulator i at row gr + 8 * (i / 2), column
  // 2 * tk + i % 2.
  KOKKOS_INLINE_FUNCTION static void compute(const float* smem, const int stage, const int rank,
                                             Acc& acc) {
    if (Paired) return compute_paired(smem, stage, rank, acc);
    const float* const a = smem + stage * stage_floats;
    const float* const b = a + a_floats;
    const int lane = rank % 32, warp = rank / 32;
    const int wm0 = warp % warps_m * WM, wn0 = warp / warps_m * WN;
    const int gr = lane / 4, tk = lane % 4;
    constexpr bool fresh = FreshSums && P == Precision::fp32;
    float part[fresh ? MT : 1][fresh ? NT : 1][4];  // fresh: this step's sums
    LAPIS_UNROLL
    for (int kk = 0; kk < BK; kk += 8) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
      uint32_t b_big[NT][2], b_small[NT][2];
      LAPIS_UNROLL
      for (int nt = 0; nt < NT; ++nt)
        LAPIS_UNROLL
        for (int h = 0; h < 2; ++h)
          tf32::split_fast(b_at(b, kk + tk + 4 * h, wn0 + nt * 8 + gr), b_big[nt][h],
                           b_small[nt][h]);
      LAPIS_UNROLL
      for (int mt = 0; mt < MT; ++mt) {
        uint32_t a_big[4], a_small[4];
        LAPIS_UNROLL
        for (int r = 0; r < 4; ++r)
          tf32::split_fast(a[(wm0 + mt * 16 + gr + 8 * (r % 2)) * LDA + kk + tk + 4 * (r / 2)],
                           a_big[r], a_small[r]);
        LAPIS_UNROLL
        for (int nt = 0; nt < NT; ++nt) {
          if constexpr (fresh) {
            if (kk == 0)
              tf32::mma3_fresh(part[mt][nt], a_big, a_small, b_big[nt], b_small[nt]);
            else
              tf32::mma3(part[mt][nt], a_big, a_small, b_big[nt], b_small[nt]);
          } else if (P == Precision::fp32) {
            tf32::mma3(acc.v[mt][nt], a_big, a_small, b_big[nt], b_small[nt]);
          } else {
            tf32::mma(acc.v[mt][nt], a_big, b_big[nt]);
          }
        }
      }
#elif defined(__CUDA_ARCH__)
      (void)a, (void)b, (void)wm0, (void)wn0, (void)gr, (void)tk, (void)acc;  // no tensor cores
#else
      for (int mt = 0; mt < MT; ++mt)
        for (int nt = 0; nt < NT; ++nt)
          for (int i = 0; i < 4; ++i)
            for (int k = 0; k < 8; ++k)
              acc.v[mt][nt][i] += emulated_product<P>(
                  a[(wm0 + mt * 16 + gr + 8 * (i / 2)) * LDA + kk + k],
                  b_at(b, kk + k, wn0 + nt * 8 + 2 * tk + i % 2));
#endif
    }
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    if constexpr (fresh)
      LAPIS_UNROLL
      for (int mt = 0; mt < MT; ++mt)
        LAPIS_UNROLL
        for (int nt = 0; nt < NT; ++nt)
          LAPIS_UNROLL
          for (int i = 0; i < 4; ++i) acc.v[mt][nt][i] += part[mt][nt][i];
#endif
    (void)part;
  }

  // Paired's compute: per 16 k, one 16-byte load a row of A (rows gr, gr + 8 of each 16) and
  // of B (column gr of each 8), two mma steps.
  KOKKOS_INLINE_FUNCTION static void compute_paired(const float* smem, const int stage,
                                                    const int rank, Acc& acc) {
    const float* const a = smem + stage * stage_floats;
    const float* const b = a + a_floats;
    const int lane = rank % 32, warp = rank / 32;
    const int wm0 = warp % warps_m * WM, wn0 = warp / warps_m * WN;
    const int gr = lane / 4, tk = lane % 4;
    LAPIS_UNROLL
    for (int kk = 0; kk < BK; kk += 16) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
      uint32_t b_big[NT][4], b_small[NT][4];
      LAPIS_UNROLL
      for (int nt = 0; nt < NT; ++nt) {
        const Float4 v =
            *reinterpret_cast<const Float4*>(b + at(wn0 + nt * 8 + gr, kk + 4 * tk, LDB));
        LAPIS_UNROLL
        for (int j = 0; j < 4; ++j) tf32::split_fast(v.v[j], b_big[nt][j], b_small[nt][j]);
      }
      LAPIS_UNROLL
      for (int mt = 0; mt < MT; ++mt) {
        const int row = wm0 + mt * 16 + gr;
        const Float4 lo = *reinterpret_cast<const Float4*>(a + at(row, kk + 4 * tk, LDA));
        const Float4 hi = *reinterpret_cast<const Float4*>(a + at(row + 8, kk + 4 * tk, LDA));
        LAPIS_UNROLL
        for (int h = 0; h < 2; ++h) {
          uint32_t a_big[4], a_small[4];
          tf32::split_fast(lo.v[2 * h], a_big[0], a_small[0]);
          tf32::split_fast(hi.v[2 * h], a_big[1], a_small[1]);
          tf32::split_fast(lo.v[2 * h + 1], a_big[2], a_small[2]);
          tf32::split_fast(hi.v[2 * h + 1], a_big[3], a_small[3]);
          LAPIS_UNROLL
          for (int nt = 0; nt < NT; ++nt) {
            const uint32_t bb[2] = {b_big[nt][2 * h], b_big[nt][2 * h + 1]};
            if (P == Precision::fp32) {
              const uint32_t bs[2] = {b_small[nt][2 * h], b_small[nt][2 * h + 1]};
              tf32::mma3(acc.v[mt][nt], a_big, a_small, bb, bs);
            } else {
              tf32::mma(acc.v[mt][nt], a_big, bb);
            }
          }
        }
      }
#elif defined(__CUDA_ARCH__)
      (void)a, (void)b, (void)wm0, (void)wn0, (void)gr, (void)tk, (void)acc;  // no tensor cores
#else
      // Accumulator i of lane (gr, tk) is row gr + 8 (i / 2), column 2 tk + i % 2 of its mma
      // tile; the lanes holding that row and column give slot s the k of their tk = s % 4.
      for (int mt = 0; mt < MT; ++mt)
        for (int nt = 0; nt < NT; ++nt)
          for (int i = 0; i < 4; ++i)
            for (int h = 0; h < 2; ++h)
              for (int slot = 0; slot < 8; ++slot) {
                const int k = kk + 4 * (slot % 4) + 2 * h + slot / 4;
                acc.v[mt][nt][i] += emulated_product<P>(
                    a[at(wm0 + mt * 16 + gr + 8 * (i / 2), k, LDA)],
                    b[at(wn0 + nt * 8 + 2 * tk + i % 2, k, LDB)]);
              }
#endif
    }
  }

  // The epilogue: start value (bias, zero or what C holds), then the activation.
  KOKKOS_INLINE_FUNCTION static void store(const GemmProblem& p, const Tile& t, const int rank,
                                           const Acc& acc) {
    const int lane = rank % 32, warp = rank / 32;
    const int wm0 = warp % warps_m * WM, wn0 = warp / warps_m * WN;
    const bool pairs = p.ldc % 2 == 0 && reinterpret_cast<uintptr_t>(t.c) % 8 == 0;
    with_activation(p.activation, [&](const auto f) {
      LAPIS_UNROLL
      for (int mt = 0; mt < MT; ++mt)
        LAPIS_UNROLL
        for (int half = 0; half < 2; ++half) {
          const int row = t.m0 + wm0 + mt * 16 + lane / 4 + 8 * half;
          if (row >= p.m) continue;
          float* const out = t.c + row * p.ldc;
          LAPIS_UNROLL
          for (int nt = 0; nt < NT; ++nt) {
            // The pair of columns as one 8-byte store where it can be.
            const int first = t.n0 + wn0 + nt * 8 + 2 * (lane % 4);
            if (pairs && first + 1 < p.n) {
              Float2 v{{acc.v[mt][nt][2 * half], acc.v[mt][nt][2 * half + 1]}};
              const Float2 start =
                  p.init == ConvInit::bias ? Float2{{p.bias[first], p.bias[first + 1]}}
                  : p.init == ConvInit::accumulate
                      ? *reinterpret_cast<const Float2*>(out + first)
                      : Float2{{0.0f, 0.0f}};
              const float* const add = p.residual ? p.residual + row * p.ldr + first : nullptr;
              for (int c = 0; c < 2; ++c)
                v.v[c] = stored(p.round_output,
                                activate(f.value, v.v[c] + start.v[c] + (add ? add[c] : 0.0f)));
              *reinterpret_cast<Float2*>(out + first) = v;
              continue;
            }
            LAPIS_UNROLL
            for (int c = 0; c < 2; ++c) {
              const int column = t.n0 + wn0 + nt * 8 + 2 * (lane % 4) + c;
              if (column >= p.n) continue;
              const float start = p.init == ConvInit::bias         ? p.bias[column]
                                  : p.init == ConvInit::accumulate ? out[column]
                                                                   : 0.0f;
              const float add = p.residual ? p.residual[row * p.ldr + column] : 0.0f;
              out[column] = stored(p.round_output,
                                   activate(f.value, acc.v[mt][nt][2 * half + c] + start + add));
            }
          }
        }
    });
  }

  // StagedStore, first half: the thread's sums into the tile's rows in shared memory.
  KOKKOS_INLINE_FUNCTION static void stage_outputs(float* smem, const int rank, const Acc& acc) {
    const int lane = rank % 32, warp = rank / 32;
    const int wm0 = warp % warps_m * WM, wn0 = warp / warps_m * WN;
    LAPIS_UNROLL
    for (int nt = 0; nt < NT; ++nt)
      LAPIS_UNROLL
      for (int c = 0; c < 2; ++c) {
        const int column = wn0 + nt * 8 + 2 * (lane % 4) + c;
        LAPIS_UNROLL
        for (int mt = 0; mt < MT; ++mt)
          LAPIS_UNROLL
          for (int half = 0; half < 2; ++half)
            smem[(wm0 + mt * 16 + lane / 4 + 8 * half) * LDC + column] =
                acc.v[mt][nt][2 * half + c];
      }
  }

  // One team's tile, written once for both callers: `team.each(f)` runs f(rank, acc) for the
  // calling thread on the device, for every thread in turn in the host check; barrier, commit
  // and wait are the team's and cp.async's (nothing on the host, where copies are done when
  // issued).
  template <class Team>
  KOKKOS_INLINE_FUNCTION static void pipeline(const GemmProblem& p, const Tile& t, float* smem,
                                              Team& team) {
    team.each([&](int, Acc& acc) {
      LAPIS_UNROLL
      for (int mt = 0; mt < MT; ++mt)
        LAPIS_UNROLL
        for (int nt = 0; nt < NT; ++nt)
          LAPIS_UNROLL
          for (int i = 0; i < 4; ++i) acc.v[mt][nt][i] = 0.0f;
    });
    const int steps = (p.k + BK - 1) / BK;
    team.each([&](int rank, Acc& acc) { sources(p, t, rank, acc); });
    LAPIS_UNROLL
    for (int s = 0; s < Stages - 1; ++s) {
      team.each([&](int rank, Acc& acc) {
        if (s < steps) load(p, smem, rank, acc, s * BK, s);
      });
      team.commit();
    }
    for (int step = 0; step < steps; ++step) {
      team.template wait<Stages - 2>();  // this thread's copies of `step` have landed
      team.barrier();                    // everyone's; and everyone is done with step - 1
      const int ahead = step + Stages - 1;
      team.each([&](int rank, Acc& acc) {
        if (ahead < steps) load(p, smem, rank, acc, ahead * BK, ahead % Stages);
      });
      team.commit();
      team.each([&](int rank, Acc& acc) { compute(smem, step % Stages, rank, acc); });
    }
    team.template wait<0>();
    if (StagedStore) {
      team.barrier();  // the last step's reads of the staged operands are done
      team.each([&](int rank, Acc& acc) { stage_outputs(smem, rank, acc); });
      team.barrier();
      team.each([&](int rank, Acc&) {
        write_staged<BM, BN, LDC, threads>(p, t.c, t.m0, t.n0, smem, rank);
      });
    } else {
      team.each([&](int rank, Acc& acc) { store(p, t, rank, acc); });
    }
  }

  // The device's `team`: the calling thread and its accumulators.
  template <class Member>
  struct OneThread {
    const Member& member;
    int rank;
    Acc acc;
    template <class F>
    KOKKOS_FORCEINLINE_FUNCTION void each(const F& f) {
      f(rank, acc);
    }
    KOKKOS_FORCEINLINE_FUNCTION void barrier() const { member.team_barrier(); }
    KOKKOS_FORCEINLINE_FUNCTION void commit() const {
#if defined(__CUDA_ARCH__)
      tf32::commit();
#endif
    }
    template <int Pending>
    KOKKOS_FORCEINLINE_FUNCTION void wait() const {
#if defined(__CUDA_ARCH__)
      tf32::wait<Pending>();
#endif
    }
  };

  // A CUDA thread block as the team of OneThread.
  struct CudaBlock {
    KOKKOS_FORCEINLINE_FUNCTION void team_barrier() const {
#if defined(__CUDA_ARCH__)
      __syncthreads();
#endif
    }
  };

#if defined(KOKKOS_ENABLE_CUDA) && defined(__CUDACC__)
  // The same tiles launched by CUDA itself, one block a team: Kokkos gives a team at most the
  // 48 KiB of shared memory that a block gets by default (scratch_size_max, Kokkos 4.6 too),
  // this takes up to the multiprocessor's 227 KiB (deeper k staging). The launch shows in
  // Kokkos Tools under `label`, and is captured with the stream like Kokkos' own.
  static void run_cuda(const Kokkos::Cuda& space, const char* label, const GemmProblem& p) {
    static const cudaError_t configured = cudaFuncSetAttribute(
        gemm_tiles_kernel<GemmTiles>, cudaFuncAttributeMaxDynamicSharedMemorySize, int(scratch));
    if (configured != cudaSuccess)
      Kokkos::abort("lapis::linear: the tiles' shared memory is more than this GPU has");
    uint64_t kernel_id = 0;
    const bool profiled = Kokkos::Tools::profileLibraryLoaded();
    if (profiled) Kokkos::Tools::beginParallelFor(label, 0, &kernel_id);
    gemm_tiles_kernel<GemmTiles><<<teams(p), threads, scratch, space.cuda_stream()>>>(p);
    const cudaError_t launched = cudaGetLastError();
    if (launched != cudaSuccess) Kokkos::abort(cudaGetErrorString(launched));
    if (profiled) {
      space.fence();  // the tool times the launch to its end, as Kokkos' fenced launches
      Kokkos::Tools::endParallelFor(kernel_id);
    }
  }
#endif

  template <class ExecutionSpace>
  static void run(const ExecutionSpace& space, const char* label, const GemmProblem& p) {
    using policy = Kokkos::TeamPolicy<ExecutionSpace, Kokkos::LaunchBounds<threads, MinTeams>>;
    using member = typename policy::member_type;
    const size_t bytes = scratch;  // a local: the kernel cannot bind the static member
    Kokkos::parallel_for(
        label, policy(space, teams(p), threads).set_scratch_size(0, Kokkos::PerTeam(bytes)),
        KOKKOS_LAMBDA(const member& team) {
          float* const smem =
              static_cast<float*>(team.team_scratch(0).get_shmem_aligned(bytes, 16));
          OneThread<member> me{team, team.team_rank(), {}};
          pipeline(p, tile(p, team.league_rank()), smem, me);
        });
  }
};

}  // namespace detail
}  // namespace lapis

#include "gemm_wgmma.hpp"

namespace lapis {
namespace detail {

#if defined(KOKKOS_ENABLE_CUDA)
// Tiles whose staging needs more than a Kokkos team's 48 KiB run through run_cuda.
template <class Tiles>
void launch_tiles(const Kokkos::Cuda& space, const char* label, const GemmProblem& p) {
#if defined(__CUDACC__)
  if constexpr (Tiles::scratch > 48 * 1024)
    Tiles::run_cuda(space, label, p);
  else
#else
  static_assert(Tiles::scratch <= 48 * 1024, "a CUDA compiler launches the deep tiles");
#endif
    Tiles::template run<Kokkos::Cuda>(space, label, p);
}

// The large tile where it makes at least two waves of an H200's 132 multiprocessors, by
// precision (gemm_bench on the H200, the wide MLP's 512 x 512 layers with SiLU at batch 65536,
// benchmarks/results_gpu.md): fp32 (three tf32 products), 128 x 64 (4 warps of 64 x 32) with k
// steps of 16 three deep (46 KiB, four teams a multiprocessor), 0.654 ms against 0.688 for
// 128 x 128; tf32, 128 x 128 (8 warps of 64 x 32), k steps of 16 two deep (40 KiB, two teams),
// 0.489 ms against 0.504 (fp32 no longer takes its large tile by default: see
// small_tile_depth). Else, and for products of at most 16 terms (the first layer of an MLP:
// all epilogue, 0.155 ms against 0.216 for 16 -> 512), 64 x 64 tiles (4 warps of 32 x 32).
// LAPIS_GEMM_TILES picks another large tile for every precision: 1, the tf32 one; 2, 128 x 128
// with k steps of 8 three deep (37 KiB); 3, the fp32 one; the deep tiles of run_cuda (none
// faster on the H200): 4, 128 x 128 with k steps of 32 three deep (108 KiB, two blocks a
// multiprocessor); 5, k steps of 16 four deep (80 KiB); 6, k steps of 32 four deep (144 KiB,
// one block); 7, k steps of 16 three deep (60 KiB); 8, 9 and 10: 4, 5 and 1 with the staged
// store (1: 68 KiB); 11, the default tiles with paired fragment reads for linear layers (the
// 64 x 64 ones too); 12, paired 128 x 128 tiles with k steps of 32 three deep.
#if defined(LAPIS_GEMM_TILES)
template <bool WeightRows, Precision P>
using LargeTiles =
#if LAPIS_GEMM_TILES == 2
    GemmTiles<128, 128, 64, 32, 8, 3, 2, WeightRows, P>;
#elif LAPIS_GEMM_TILES == 3
    GemmTiles<128, 64, 64, 32, 16, 3, 4, WeightRows, P>;
#elif LAPIS_GEMM_TILES == 4
    GemmTiles<128, 128, 64, 32, 32, 3, 2, WeightRows, P>;
#elif LAPIS_GEMM_TILES == 5
    GemmTiles<128, 128, 64, 32, 16, 4, 2, WeightRows, P>;
#elif LAPIS_GEMM_TILES == 6
    GemmTiles<128, 128, 64, 32, 32, 4, 1, WeightRows, P>;
#elif LAPIS_GEMM_TILES == 7
    GemmTiles<128, 128, 64, 32, 16, 3, 2, WeightRows, P>;
#elif LAPIS_GEMM_TILES == 8
    GemmTiles<128, 128, 64, 32, 32, 3, 2, WeightRows, P, true>;
#elif LAPIS_GEMM_TILES == 9
    GemmTiles<128, 128, 64, 32, 16, 4, 2, WeightRows, P, true>;
#elif LAPIS_GEMM_TILES == 10
    GemmTiles<128, 128, 64, 32, 16, 2, 2, WeightRows, P, true>;
#elif LAPIS_GEMM_TILES == 11
    std::conditional_t<P == Precision::fp32,
                       GemmTiles<128, 64, 64, 32, 16, 3, 4, WeightRows, P, false, WeightRows>,
                       GemmTiles<128, 128, 64, 32, 16, 2, 2, WeightRows, P, false, WeightRows>>;
#elif LAPIS_GEMM_TILES == 12
    GemmTiles<128, 128, 64, 32, 32, 3, 2, WeightRows, P, false, WeightRows>;
#else
    GemmTiles<128, 128, 64, 32, 16, 2, 2, WeightRows, P>;
#endif
#else
template <bool WeightRows, Precision P>
using LargeTiles = std::conditional_t<P == Precision::fp32,
                                      GemmTiles<128, 64, 64, 32, 16, 3, 4, WeightRows, P>,
                                      GemmTiles<128, 128, 64, 32, 16, 2, 2, WeightRows, P>>;
#endif
#if defined(LAPIS_GEMM_TILES) && LAPIS_GEMM_TILES >= 11
template <bool WeightRows, Precision P>
using SmallTiles = GemmTiles<64, 64, 32, 32, 16, 2, 4, WeightRows, P, false, WeightRows>;
#else
// fp32: each k step's sums from zero, added in float (FreshSums; gemm_bench on an H100, 512 ->
// 512 with SiLU at 65,536 rows: 3.9e-7 from float64 instead of 4.6e-6, 0.702 ms instead of
// 0.647).
template <bool WeightRows, Precision P>
using SmallTiles = GemmTiles<64, 64, 32, 32, 16, 2, 4, WeightRows, P, false, false,
                             P == Precision::fp32>;
#endif

// The large tiles pay where there are teams enough for two a multiprocessor (264 on the H200's
// 132) and K is past small_tile_depth. Since the epilogue is compiled per activation
// (with_activation) they are ahead at every tf32 depth measured, 256 to 1024 (gemm_bench on the
// H200: 512 -> 512 SiLU 0.392 ms against 0.498 for 64 x 64; 256 -> 768 0.082 against 0.100;
// 1024 -> 256 0.088 against 0.125); before, the 64 x 64 ones were faster up to K 512. Below
// K 256 only K 16 was measured (the small ones ahead), so tf32 takes them up to K 128.
// LAPIS_GEMM_SMALL_K sets that depth.
// fp32 takes the small tiles at every depth: with FreshSums they are as fast as the large
// ones were at K 512-1024 (gemm_bench on an H100: 512 -> 512 SiLU 0.702 ms against 0.819 for
// the 128 x 64 tiles; 1024 -> 256 0.178 against 0.170-0.182 for the large ones) and ten times
// as accurate.
#if defined(LAPIS_GEMM_SMALL_K)
template <Precision P>
inline constexpr int small_tile_depth = LAPIS_GEMM_SMALL_K;
#else
template <Precision P>
inline constexpr int small_tile_depth = P == Precision::fp32 ? 1 << 30 : 128;
#endif

template <bool WeightRows, Precision P, class ExecutionSpace>
void gemm_tiled(const ExecutionSpace& space, const char* label, const GemmProblem& p) {
  // Linear layers on Hopper (LAPIS_WGMMA: the package builds sm_90a code too): the wgmma
  // tiles wherever K is more than one k step of the small tiles. fp32 too, each k step's
  // products summed fresh (WgmmaTiles::fresh; on an H100 the wide MLP 1.66 ms, 1.0e-6 from
  // float64, and the transformer encoder 3.29 ms, 7.8e-7; the mma.sync fresh sums took 2.32
  // and 4.01 ms on an H200); LAPIS_NO_WGMMA_FP32 keeps fp32 on the mma.sync tiles.
#if defined(LAPIS_WGMMA) && defined(__CUDACC__)
#if defined(LAPIS_NO_WGMMA_FP32)
  constexpr bool wgmma_takes = P == Precision::tf32;
#else
  constexpr bool wgmma_takes = true;
#endif
  if constexpr (WeightRows && wgmma_takes) {
    if (p.batches == 1 && p.k > 16) {
#if !defined(LAPIS_TF32_ROUND_IN_TILES)
      if constexpr (P == Precision::tf32)
        if (p.operands_tf32) return DirectHopperTiles::run_cuda(space, label, p);
#endif
      HopperTiles<P>::run_cuda(space, label, p);
      return;
    }
  }
#endif
  using Large = LargeTiles<WeightRows, P>;
  if (p.k > small_tile_depth<P> && Large::teams(p) >= 2 * 264)
    launch_tiles<Large>(space, label, p);
  else
    launch_tiles<SmallTiles<WeightRows, P>>(space, label, p);
}
#endif

// float32 on CUDA: the products the tiles take.
template <class ExecutionSpace, class T>
inline constexpr bool gemm_tiles_apply =
#if defined(KOKKOS_ENABLE_CUDA)
    std::is_same<ExecutionSpace, Kokkos::Cuda>::value && std::is_same<T, float>::value;
#else
    false;
#endif

// Whether their operands suit the tiles: contiguous rows whose starts are 16 bytes apart and
// aligned (whole 16-byte copies), the row lengths multiples of 4.
inline bool gemm_rows_fit(const void* a, int64_t lda, int64_t inner_a, const void* b,
                          int64_t ldb, int64_t inner_b, int64_t length_a, int64_t length_b) {
  const auto aligned = [](const void* q) { return reinterpret_cast<uintptr_t>(q) % 16 == 0; };
  return inner_a == 1 && inner_b == 1 && length_a % 4 == 0 && length_b % 4 == 0 &&
         lda % 4 == 0 && ldb % 4 == 0 && aligned(a) && aligned(b);
}

// A linear layer of few output columns (a regression head, 512 -> 1): a row is one Kokkos
// thread whose vector lanes (32 on CUDA, a warp) split its dot products over k, 16-byte loads
// where the rows allow, so a warp reads a row as whole 128-byte lines; 8 rows a team. One
// thread an output read each row a column at a time, 2 KiB apart across the warp (0.158 ms for
// the wide MLP's 65536 x 512 head on an H200, where reading x once takes about 0.03 ms).
// An element as the type sums are made in (bfloat16 as float), and a float stored as an
// element (bfloat16 rounded to nearest even).
KOKKOS_FORCEINLINE_FUNCTION float widen(const float v) { return v; }
KOKKOS_FORCEINLINE_FUNCTION double widen(const double v) { return v; }
KOKKOS_FORCEINLINE_FUNCTION float widen(const bfloat16 v) { return to_float(v); }
template <class T>
KOKKOS_FORCEINLINE_FUNCTION T from_float(const float v) {
  if constexpr (std::is_same<T, bfloat16>::value)
    return to_bfloat16(v);
  else
    return T(v);
}
// Four consecutive elements from `p` (16-byte aligned floats, 8-byte aligned bfloat16).
KOKKOS_FORCEINLINE_FUNCTION Float4 load4(const float* p) {
  return *reinterpret_cast<const Float4*>(p);
}
KOKKOS_FORCEINLINE_FUNCTION Float4 load4(const bfloat16* p) {
  const Bf16x4 h = *reinterpret_cast<const Bf16x4*>(p);
  return Float4{{to_float(h.v[0]), to_float(h.v[1]), to_float(h.v[2]), to_float(h.v[3])}};
}

// x may be in bfloat16 (--precision bf16: the output of a layer on bfloat16 operands); the
// products are then of its values and W's in float.
template <class ExecutionSpace, class Input, class Weight, class Bias, class Output>
void linear_rows(const ExecutionSpace& space, const char* label, const Input& x,
                 const Weight& w, const Bias& bias, const Output& y, const ConvInit init,
                 const Activation activation, const bool round_output = false) {
  using T = typename Output::non_const_value_type;
  using policy = Kokkos::TeamPolicy<ExecutionSpace>;
  using member = typename policy::member_type;
  constexpr int rows_per_team = 8;
  const int lanes =
      Kokkos::SpaceAccessibility<Kokkos::HostSpace, typename ExecutionSpace::memory_space>::
              accessible
          ? 1
          : 32;
  using X = typename Input::non_const_value_type;
  const int64_t rows = x.extent(0), depth = x.extent(1), columns = w.extent(0);
  const X* const in = x.data();
  const T* const weight = w.data();
  T* const out = y.data();
  const int64_t ldx = x.stride(0), ldw = w.stride(0), ldy = y.stride(0);
  const int64_t step_x = x.stride(1), step_w = w.stride(1), step_y = y.stride(1);
  const bool vectors = std::is_same<T, float>::value && step_x == 1 && step_w == 1 &&
                       gemm_rows_fit(in, ldx, step_x, weight, ldw, step_w, depth, depth);
  const int64_t chunks = vectors ? depth / 4 : depth;
  // On the host a team is one thread that takes the team's rows in turn.
  const policy launch(space, int((rows + rows_per_team - 1) / rows_per_team),
                      lanes == 1 ? 1 : rows_per_team, lanes);
  Kokkos::parallel_for(label, launch, KOKKOS_LAMBDA(const member& team) {
    Kokkos::parallel_for(Kokkos::TeamThreadRange(team, rows_per_team), [&](const int r) {
      const int64_t m = int64_t(team.league_rank()) * rows_per_team + r;
      if (m >= rows) return;
      for (int64_t n = 0; n < columns; ++n) {
        T sum = T(0);
        Kokkos::parallel_reduce(
            Kokkos::ThreadVectorRange(team, chunks),
            [&](const int64_t c, T& partial) {
              if (vectors) {
                const Float4 a = load4(in + m * ldx + 4 * c);
                const Float4 b = load4(weight + n * ldw + 4 * c);
                partial += (a.v[0] * b.v[0] + a.v[1] * b.v[1]) +
                           (a.v[2] * b.v[2] + a.v[3] * b.v[3]);
              } else {
                partial += T(widen(in[m * ldx + c * step_x])) * weight[n * ldw + c * step_w];
              }
            },
            sum);
        Kokkos::single(Kokkos::PerThread(team), [&]() {
          T& target = out[m * ldy + n * step_y];
          T v = sum + (init == ConvInit::bias         ? T(bias(n))
                       : init == ConvInit::accumulate ? target
                                                      : T(0));
          v = activation == Activation::none ? v : T(activate(activation, float(v)));
          target = round_output ? T(round_tf32(float(v))) : v;
        });
      }
    });
  });
}

// lapis::linear with Precision::bf16 (--precision bf16 on CUDA): x and W in bfloat16, y in
// bfloat16 (only linear layers read it) or float; a regression head (fewer than 16 columns)
// reads x in bfloat16 with W in float. On Hopper (LAPIS_WGMMA) Bf16HopperTiles, a head on CUDA
// linear_rows; else one thread an output, the float sum of the products in order over k (also
// what a package retargeted to a host backend runs).
template <class ExecutionSpace, class Input, class Weight, class Bias, class Residual,
          class Output>
void linear_bf16(const ExecutionSpace& space, const char* label, const Input& x,
                 const Weight& w, const Bias& bias, const Residual& residual, const Output& y,
                 const ConvInit init, const Activation activation) {
  using X = typename Input::non_const_value_type;
  using W = typename Weight::non_const_value_type;
  using Y = typename Output::non_const_value_type;
  static_assert(std::is_same<typename Residual::non_const_value_type, float>::value &&
                    std::is_same<typename Bias::non_const_value_type, float>::value,
                "bias and residual in float");
  const int64_t rows = x.extent(0), depth = x.extent(1), columns = w.extent(0);
  if (rows == 0 || columns == 0) return;
  const float* const add = residual.data();
  const int64_t ldr = add ? residual.stride(0) : 0, step_r = add ? residual.stride(1) : 0;
#if defined(KOKKOS_ENABLE_CUDA) && defined(LAPIS_WGMMA) && defined(__CUDACC__)
  if constexpr (std::is_same<ExecutionSpace, Kokkos::Cuda>::value &&
                std::is_same<X, bfloat16>::value && std::is_same<W, bfloat16>::value) {
    const auto aligned = [](const void* q) { return reinterpret_cast<uintptr_t>(q) % 16 == 0; };
    if (columns >= 16 && depth % 8 == 0 && x.stride(1) == 1 && w.stride(1) == 1 &&
        y.stride(1) == 1 && (!add || step_r == 1) && x.stride(0) % 8 == 0 &&
        w.stride(0) % 8 == 0 && aligned(x.data()) && aligned(w.data())) {
      constexpr bool half = std::is_same<Y, bfloat16>::value;
      GemmProblem p{nullptr, nullptr, nullptr, bias.data(), int64_t(x.stride(0)),
                    int64_t(w.stride(0)), int64_t(y.stride(0)), 0, 0, 0, int(rows),
                    int(columns), int(depth), 1, init, activation, add, ldr};
      p.a16 = x.data();
      p.b16 = w.data();
      if constexpr (half)
        p.c16 = y.data();
      else
        p.c = y.data();
      Bf16HopperTiles::run_cuda(space, label, p);
      return;
    }
  }
#endif
#if defined(KOKKOS_ENABLE_CUDA)
  if constexpr (std::is_same<ExecutionSpace, Kokkos::Cuda>::value &&
                std::is_same<W, float>::value && std::is_same<Y, float>::value) {
    if (columns < 16 && !add) {
      linear_rows(space, label, x, w, bias, y, init, activation);
      return;
    }
  }
#endif
  const X* const in = x.data();
  const W* const weight = w.data();
  Y* const out = y.data();
  const int64_t ldx = x.stride(0), ldw = w.stride(0), ldy = y.stride(0);
  const int64_t step_x = x.stride(1), step_w = w.stride(1), step_y = y.stride(1);
  Kokkos::parallel_for(
      label,
      Kokkos::RangePolicy<ExecutionSpace, Kokkos::IndexType<int64_t>>(space, 0, rows * columns),
      KOKKOS_LAMBDA(const int64_t i) {
        const int64_t m = i / columns, n = i % columns;
        float sum = 0.0f;
        for (int64_t k = 0; k < depth; ++k)
          sum += widen(in[m * ldx + k * step_x]) * widen(weight[n * ldw + k * step_w]);
        Y& target = out[m * ldy + n * step_y];
        if (init == ConvInit::bias) sum += bias(n);
        if (init == ConvInit::accumulate) sum += widen(target);
        if (add) sum += add[m * ldr + n * step_r];
        target = from_float<Y>(activation == Activation::none ? sum : activate(activation, sum));
      });
}

}  // namespace detail

// x (float, rank 2 to 4) into y of the same extents in bfloat16, rounded to nearest even
// (--precision bf16 on CUDA: the input of a linear layer that the layer before did not store
// in bfloat16 itself).
template <class ExecutionSpace, class Input, class Output>
void round_to_bfloat16(const ExecutionSpace& space, const char* label, const Input& x,
                       const Output& y) {
  static_assert(Input::rank == Output::rank && Input::rank >= 1 && Input::rank <= 4, "rank");
  int64_t e[4] = {1, 1, 1, 1};
  for (int r = 0; r < int(Input::rank); ++r) e[r] = int64_t(x.extent(r));
  const int64_t count = e[0] * e[1] * e[2] * e[3];
  const auto row_major = [&](const auto& v) {  // dense, the last index fastest
    int64_t step = 1;
    for (int r = int(Input::rank) - 1; r >= 0; --r) {
      if (e[r] > 1 && int64_t(v.stride(r)) != step) return false;
      step *= e[r];
    }
    return true;
  };
  if (row_major(x) && row_major(y)) {
    // One flat loop, no index arithmetic (its 64-bit divisions took most of the time on a
    // GPU: 43 us for the wide MLP's 65,536 x 16 input on an H100).
    using X = typename Input::value_type;
    X* const from = x.data();
    auto* const to = y.data();
    Kokkos::parallel_for(
        label, Kokkos::RangePolicy<ExecutionSpace, Kokkos::IndexType<int64_t>>(space, 0, count),
        KOKKOS_LAMBDA(const int64_t i) { to[i] = lapis::to_bfloat16(from[i]); });
    return;
  }
  Kokkos::parallel_for(
      label, Kokkos::RangePolicy<ExecutionSpace, Kokkos::IndexType<int64_t>>(space, 0, count),
      KOKKOS_LAMBDA(const int64_t i) {
        const int64_t i3 = i % e[3], i2 = i / e[3] % e[2], i1 = i / (e[3] * e[2]) % e[1],
                      i0 = i / (e[3] * e[2] * e[1]);
        (void)x, (void)y;  // nvcc: no first capture inside if constexpr
        if constexpr (Input::rank == 1)
          y(i0) = lapis::to_bfloat16(x(i0));
        else if constexpr (Input::rank == 2)
          y(i0, i1) = lapis::to_bfloat16(x(i0, i1));
        else if constexpr (Input::rank == 3)
          y(i0, i1, i2) = lapis::to_bfloat16(x(i0, i1, i2));
        else
          y(i0, i1, i2, i3) = lapis::to_bfloat16(x(i0, i1, i2, i3));
      });
}

// y[m][n] = activation(start + sum over k of x[m][k] w[n][k]), start = bias[n] (ConvInit::bias),
// 0 (zero) or y[m][n] (accumulate); x, w and y rank 2, or rank 4 with trailing extents 1 (a
// linear layer run as a 1x1 convolution's operands). On the tiles with P's products; fewer than
// 16 output columns (a regression head) on CUDA: linear_rows, float32 products; other backends
// and element types: one thread per output, the dot product in order over k, in the element
// type.
// With `residual` (same extents as y, or an empty View: none) added before the activation (a
// residual connection folded into the layer). `rounded`: see Tf32Rounded (P tf32 only).
namespace detail {
template <class ExecutionSpace, Precision P, class Input, class Weight, class Bias,
          class Residual, class Output>
void linear_float(const ExecutionSpace& space, const char* label, const Input& x,
                  const Weight& w, const Bias& bias, const Residual& residual, const Output& y,
                  const ConvInit init, const Activation activation, const Tf32Rounded rounded);
}  // namespace detail

template <class ExecutionSpace, Precision P = Precision::fp32, class Input, class Weight,
          class Bias, class Residual, class Output>
void linear(const ExecutionSpace& space, const char* label, const Input& x, const Weight& w,
            const Bias& bias, const Residual& residual, const Output& y, const ConvInit init,
            const Activation activation, const Tf32Rounded rounded = Tf32Rounded::none) {
  if constexpr (P == Precision::bf16)
    detail::linear_bf16(space, label, x, w, bias, residual, y, init, activation);
  else
    detail::linear_float<ExecutionSpace, P>(space, label, x, w, bias, residual, y, init,
                                            activation, rounded);
}

// lapis::linear in float32 (fp32, tf32) and in the element type of other Views.
template <class ExecutionSpace, Precision P, class Input, class Weight, class Bias,
          class Residual, class Output>
void detail::linear_float(const ExecutionSpace& space, const char* label, const Input& x,
                          const Weight& w, const Bias& bias, const Residual& residual,
                          const Output& y, const ConvInit init, const Activation activation,
                          const Tf32Rounded rounded) {
  using T = typename Output::non_const_value_type;
  const int64_t rows = x.extent(0), depth = x.extent(1), columns = w.extent(0);
  if (rows == 0 || columns == 0) return;
  const bool tf32 = P == Precision::tf32 && std::is_same<T, float>::value;
  const bool round_output = tf32 && (rounded == Tf32Rounded::output ||
                                     rounded == Tf32Rounded::inputs_and_output);
  const T* const add = residual.data();
  const int64_t ldr = add ? residual.stride(0) : 0, step_r = add ? residual.stride(1) : 0;
#if defined(KOKKOS_ENABLE_CUDA)
  if constexpr (detail::gemm_tiles_apply<ExecutionSpace, T>) {
    const bool operands_tf32 = tf32 && (rounded == Tf32Rounded::inputs ||
                                        rounded == Tf32Rounded::inputs_and_output);
    if (columns >= 16 && y.stride(1) == 1 && (!add || step_r == 1) &&
        detail::gemm_rows_fit(x.data(), x.stride(0), x.stride(1), w.data(), w.stride(0),
                              w.stride(1), depth, depth)) {
      const detail::GemmProblem p{x.data(), w.data(), y.data(), bias.data(),
                                  int64_t(x.stride(0)), int64_t(w.stride(0)),
                                  int64_t(y.stride(0)), 0, 0, 0, int(rows), int(columns),
                                  int(depth), 1, init, activation, add, ldr,
                                  operands_tf32, round_output};
      detail::gemm_tiled<true, P, ExecutionSpace>(space, label, p);
      return;
    }
    if (columns < 16 && !add) {
      detail::linear_rows(space, label, x, w, bias, y, init, activation, round_output);
      return;
    }
  }
#endif
  const T* const in = x.data();
  const T* const weight = w.data();
  T* const out = y.data();
  const int64_t ldx = x.stride(0), ldw = w.stride(0), ldy = y.stride(0);
  const int64_t step_x = x.stride(1), step_w = w.stride(1), step_y = y.stride(1);
  Kokkos::parallel_for(
      label,
      Kokkos::RangePolicy<ExecutionSpace, Kokkos::IndexType<int64_t>>(space, 0, rows * columns),
      KOKKOS_LAMBDA(const int64_t i) {
        const int64_t m = i / columns, n = i % columns;
        T sum = init == ConvInit::bias ? T(bias(n)) : T(0);
        for (int64_t k = 0; k < depth; ++k)
          sum += in[m * ldx + k * step_x] * weight[n * ldw + k * step_w];
        T& target = out[m * ldy + n * step_y];
        if (init == ConvInit::accumulate) sum += target;
        if (add) sum += add[m * ldr + n * step_r];
        sum = activation == Activation::none ? sum : T(activate(activation, float(sum)));
        target = round_output ? T(round_tf32(float(sum))) : sum;
      });
}

// The same without a residual.
template <class ExecutionSpace, Precision P = Precision::fp32, class Input, class Weight,
          class Bias, class Output>
void linear(const ExecutionSpace& space, const char* label, const Input& x, const Weight& w,
            const Bias& bias, const Output& y, const ConvInit init,
            const Activation activation, const Tf32Rounded rounded = Tf32Rounded::none) {
  using T = std::conditional_t<P == Precision::bf16, float, typename Output::non_const_value_type>;
  linear<ExecutionSpace, P>(
      space, label, x, w, bias,
      Kokkos::View<const T**, Kokkos::LayoutRight, typename Output::memory_space>(), y, init,
      activation, rounded);
}

// linalg.matmul / linalg.batch_matmul on CUDA: C (+)= A B on the tiles where they apply, else
// lapis::matmul / batch_matmul (gemm.hpp).
template <class ExecutionSpace, Precision P = Precision::fp32, class A, class B, class C>
void matmul_tensor_core(const ExecutionSpace& space, const char* label, const A& a, const B& b,
                        const C& c, const MatmulInit init) {
  using T = typename C::non_const_value_type;
#if defined(KOKKOS_ENABLE_CUDA)
  if constexpr (detail::gemm_tiles_apply<ExecutionSpace, T>) {
    const int64_t depth = a.extent(1), columns = b.extent(1);
    if (columns >= 16 && a.extent(0) > 0 && c.stride(1) == 1 &&
        detail::gemm_rows_fit(a.data(), a.stride(0), a.stride(1), b.data(), b.stride(0),
                              b.stride(1), depth, columns)) {
      const detail::GemmProblem p{a.data(), b.data(), c.data(), nullptr,
                                  int64_t(a.stride(0)), int64_t(b.stride(0)),
                                  int64_t(c.stride(0)), 0, 0, 0, int(a.extent(0)),
                                  int(columns), int(depth), 1,
                                  init == MatmulInit::zero ? ConvInit::zero
                                                           : ConvInit::accumulate,
                                  Activation::none};
      detail::gemm_tiled<false, P, ExecutionSpace>(space, label, p);
      return;
    }
  }
#endif
  matmul<ExecutionSpace>(space, label, a, b, c, init);
}

template <class ExecutionSpace, Precision P = Precision::fp32, class A, class B, class C>
void batch_matmul_tensor_core(const ExecutionSpace& space, const char* label, const A& a,
                              const B& b, const C& c, const MatmulInit init) {
  using T = typename C::non_const_value_type;
#if defined(KOKKOS_ENABLE_CUDA)
  if constexpr (detail::gemm_tiles_apply<ExecutionSpace, T>) {
    const int64_t depth = a.extent(2), columns = b.extent(2);
    if (columns >= 16 && a.extent(0) > 0 && a.extent(1) > 0 && c.stride(2) == 1 &&
        a.stride(0) % 4 == 0 && b.stride(0) % 4 == 0 &&
        detail::gemm_rows_fit(a.data(), a.stride(1), a.stride(2), b.data(), b.stride(1),
                              b.stride(2), depth, columns)) {
      const detail::GemmProblem p{a.data(), b.data(), c.data(), nullptr,
                                  int64_t(a.stride(1)), int64_t(b.stride(1)),
                                  int64_t(c.stride(1)), int64_t(a.stride(0)),
                                  int64_t(b.stride(0)), int64_t(c.stride(0)),
                                  int(a.extent(1)), int(columns), int(depth), int(a.extent(0)),
                                  init == MatmulInit::zero ? ConvInit::zero
                                                           : ConvInit::accumulate,
                                  Activation::none};
      detail::gemm_tiled<false, P, ExecutionSpace>(space, label, p);
      return;
    }
  }
#endif
  batch_matmul<ExecutionSpace>(space, label, a, b, c, init);
}

}  // namespace lapis
