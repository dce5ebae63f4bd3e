// lapis-export fused attention, shipped into every exported package (src/lapis/).
// out = softmax(q k^T + mask) v per batch entry and head (exporter/attention.py; q arrives
// already scaled), without the [L, S] score matrix in memory: each query row keeps a running
// maximum, a running sum and its output row, and folds in one block of keys at a time (the
// online softmax of flash attention). On GPUs a team of threads takes a block of query rows,
// one row each, and stages each block of keys and values in team scratch memory; on host
// backends a thread takes up to 64 query rows and copies each block of keys (transposed) and
// values into arrays of its own, for loops the compiler vectorises. A row whose keys
// are all masked gives zeros, as PyTorch's scaled_dot_product_attention does. Kokkos 3.4-4.x.
// Defining LAPIS_ATTENTION_TEAMS runs the GPU path on host backends too (teams of up to two
// threads): the tests check its indexing there.
// On CUDA, float32 heads of 8 to 64 (multiples of 8) run both products on the tensor cores
// instead (MmaAttention: mma.sync m16n8k8 tf32, three products of split operands at fp32, one
// at tf32); the softmax stays float32. LAPIS_ATTENTION_CUDA_CORES keeps them on the CUDA
// cores; LAPIS_ATTENTION_MMA runs MmaAttention on host backends, thread by thread with the
// mma emulated, for the tests.
#pragma once

#include <Kokkos_Core.hpp>

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <vector>

#include "gemm_tf32.hpp"
#include "scalar.hpp"
#include "support.hpp"

#if defined(__CUDACC__) || defined(__HIPCC__)
#define LAPIS_ATTENTION_UNROLL _Pragma("unroll")
#else
#define LAPIS_ATTENTION_UNROLL
#endif

namespace lapis {
namespace attention_detail {

constexpr int kKeyBlock = 32;     // keys folded in per rescaling of the output row (GPUs)
// Host: keys per block (the copies of keys and values a thread folds its query rows over, each
// row rescaled once a block): 128, fewer for wide heads, so that the copies stay in cache.
template <int D, int DV>
constexpr int host_keys() {
  return (D > DV ? D : DV) <= 32 ? 128 : (D > DV ? D : DV) <= 64 ? 64 : 32;
}
constexpr int kQueryRows = 64;    // GPU: query rows per team, one per thread
// Host: query rows per thread, over which each copied block of keys and values is shared (64,
// fewer for wide heads: the rows' state lives on the thread's stack).
template <int D, int DV>
constexpr int host_rows() {
  return (D > DV ? D : DV) >= 128 ? 4096 / (D > DV ? D : DV) : 64;
}
#ifdef LAPIS_ATTENTION_TEAMS
constexpr bool kTeamsOnHost = true;
#else
constexpr bool kTeamsOnHost = false;
#endif

// What the mask does to score s of query i and key j: nothing, a causal (lower-left) mask,
// a boolean keep-mask or an additive float mask of shape [B|1, H|1, L|1, S].
struct NoMask {
  template <class T>
  KOKKOS_INLINE_FUNCTION T operator()(int64_t, int64_t, int64_t, int64_t, T s) const { return s; }
  KOKKOS_INLINE_FUNCTION int64_t keys(int64_t, int64_t keys) const { return keys; }
};

struct CausalMask {
  template <class T>
  KOKKOS_INLINE_FUNCTION T operator()(int64_t, int64_t, int64_t, int64_t, T s) const { return s; }
  KOKKOS_INLINE_FUNCTION int64_t keys(int64_t query, int64_t keys) const {
    return query + 1 < keys ? query + 1 : keys;
  }
};

template <class Mask>
struct ViewMask {
  Mask mask;
  template <class T>
  KOKKOS_INLINE_FUNCTION T operator()(int64_t b, int64_t h, int64_t i, int64_t j, T s) const {
    const auto m = mask(mask.extent(0) == 1 ? 0 : b, mask.extent(1) == 1 ? 0 : h,
                        mask.extent(2) == 1 ? 0 : i, j);
    if constexpr (std::is_same<typename Mask::non_const_value_type, bool>::value) {
      return m ? s : -lapis::infinity<T>();
    } else {
      return s + T(m);
    }
  }
  KOKKOS_INLINE_FUNCTION int64_t keys(int64_t, int64_t keys) const { return keys; }
};

// exp(x) of a softmax's argument (x <= 0, or -inf for a masked key). On host backends and in
// float32, a branch-free Cody-Waite reduction x = n ln2 + r and Cephes' degree-5 polynomial for
// exp(r) (relative error below 2e-7, 0 below -87.3), so that the loop over a block of keys
// vectorises: the scalar expf call was most of the attention's time on CPUs. Elsewhere the
// math library's exp.
template <class T>
KOKKOS_INLINE_FUNCTION T softmax_exp(const T x) {
#if !defined(__CUDA_ARCH__) && !defined(__HIP_DEVICE_COMPILE__)
  if constexpr (std::is_same<T, float>::value) {
    // The range checks compare the bits as integers: floating-point compares keep GCC from
    // vectorising the loop (they may trap), integer selects do not. x in [-87.3, 0] is kept,
    // below (or -inf) gives 0, above 0 (not a softmax argument) is taken as 0.
    uint32_t u;
    std::memcpy(&u, &x, sizeof(u));
    const bool tiny = u > 0xC2AE999Au;                 // x < -87.3f (bits of -87.3f)
    const bool positive = (u & 0x80000000u) == 0;
    const float clamped = positive ? 0.0f : tiny ? -87.3f : x;
    float n;
    const float exp_r = exp_reduced(clamped, n);
    const int32_t bits = (int32_t(n) + 127) << 23;   // 2^n, n in [-126, 0]
    float power;
    std::memcpy(&power, &bits, sizeof(power));
    return tiny ? 0.0f : exp_r * power;
  }
#endif
  return lapis::math::exp(x);
}

// Folds scores 0..count-1 of a block into the running (maximum, sum, output row): the row is
// rescaled once per block, by exp(old maximum - new maximum). The loops run over the whole
// block (count guards them), so that on GPUs the scores stay in registers.
template <int DV, class T, int KB, class AddValue>
KOKKOS_INLINE_FUNCTION void fold(const T (&score)[KB], const int count, T& maximum,
                                 T& sum, T (&row)[DV], const AddValue& add_value) {
  T block_maximum = maximum;
  LAPIS_ATTENTION_UNROLL
  for (int j = 0; j < KB; ++j)
    if (j < count && score[j] > block_maximum) block_maximum = score[j];
  if (block_maximum == -lapis::infinity<T>()) return;   // all masked so far
  const T rescale = lapis::math::exp(maximum - block_maximum);
  sum *= rescale;
  LAPIS_ATTENTION_UNROLL
  for (int d = 0; d < DV; ++d) row[d] *= rescale;
  maximum = block_maximum;
  T weight[KB];
  LAPIS_ATTENTION_UNROLL
  for (int j = 0; j < KB; ++j) weight[j] = softmax_exp(score[j] - maximum);
  LAPIS_ATTENTION_UNROLL
  for (int j = 0; j < KB; ++j) {
    if (j < count) {
      sum += weight[j];
      add_value(row, weight[j], j);      // row += weight * value row j
    }
  }
}

// Host backends. A task is up to host_rows() query rows of one (batch, head): per block of
// keys (host_keys) it copies the keys transposed, [D][KB], and the values, [KB][DV], into
// arrays of its own (the Views' strides are those of the model's layout), then folds the
// block into each row's running maximum, sum and output row. In float32 on GCC and Clang the
// fold is written on explicit vectors (block_row), compiled once per instruction set and
// picked at run time (host_task_for: AVX-512, AVX2 or the baseline's 128-bit vectors) without
// -march flags on the package; double precision and other compilers take fold().
#if (defined(__GNUC__) || defined(__clang__)) && !defined(__NVCC__) && !defined(__CUDACC__) && \
    !defined(__HIPCC__) && !defined(__INTEL_LLVM_COMPILER) && !defined(SYCL_LANGUAGE_VERSION) && \
    !defined(LAPIS_GEMM_PORTABLE)
#define LAPIS_ATTENTION_VECTORS 1
#define LAPIS_ATTENTION_HOST_INLINE inline __attribute__((always_inline))
#if defined(__x86_64__)
#define LAPIS_ATTENTION_X86 1
#endif
// The wide vectors stay inside the target functions (see gemm_host.hpp).
#if defined(__clang__)
#pragma clang diagnostic ignored "-Wpsabi"
#else
#pragma GCC diagnostic ignored "-Wpsabi"
#endif
#else
#define LAPIS_ATTENTION_HOST_INLINE inline
#endif

#if defined(LAPIS_ATTENTION_VECTORS)
template <int Bytes>
struct host_vectors {
  typedef float f __attribute__((vector_size(Bytes)));
  typedef int32_t i __attribute__((vector_size(Bytes)));
  static constexpr int lanes = Bytes / 4;
};

template <class V>
LAPIS_ATTENTION_HOST_INLINE V load_vector(const void* p) {
  V v;
  __builtin_memcpy(&v, p, sizeof(V));
  return v;
}
template <class V>
LAPIS_ATTENTION_HOST_INLINE void store_vector(void* p, const V v) {
  __builtin_memcpy(p, &v, sizeof(V));
}

// softmax_exp on a vector: the same reduction and polynomial, the selects as bit masks.
template <int Bytes>
LAPIS_ATTENTION_HOST_INLINE typename host_vectors<Bytes>::f vector_exp(
    const typename host_vectors<Bytes>::f x) {
  using F = typename host_vectors<Bytes>::f;
  using I = typename host_vectors<Bytes>::i;
  const I tiny = (I)(x < -87.3f);          // and -inf: weight 0
  const F clamped = (F)((tiny & (I)(F{} - 87.3f)) | (~tiny & (I)x));
  F n;
  const F exp_r = exp_reduced(clamped, n);
  const I power = (__builtin_convertvector(n, I) + 127) << 23;
  return (F)(~tiny & (I)(exp_r * (F)power));
}

// The largest and the sum of the lanes of a vector, halving it (to 128 bits, then lanes).
template <int Bytes>
LAPIS_ATTENTION_HOST_INLINE float lanes_max(const typename host_vectors<Bytes>::f x) {
  if constexpr (Bytes > 16) {
    using H = typename host_vectors<Bytes / 2>::f;
    alignas(64) float lanes[Bytes / 4];
    store_vector(lanes, x);
    const H low = load_vector<H>(lanes), high = load_vector<H>(lanes + Bytes / 8);
    return lanes_max<Bytes / 2>(low < high ? high : low);
  } else {
    const float a = x[0] < x[1] ? x[1] : x[0], b = x[2] < x[3] ? x[3] : x[2];
    return a < b ? b : a;
  }
}
template <int Bytes>
LAPIS_ATTENTION_HOST_INLINE float lanes_sum(const typename host_vectors<Bytes>::f x) {
  if constexpr (Bytes > 16) {
    using H = typename host_vectors<Bytes / 2>::f;
    alignas(64) float lanes[Bytes / 4];
    store_vector(lanes, x);
    return lanes_sum<Bytes / 2>(load_vector<H>(lanes) + load_vector<H>(lanes + Bytes / 8));
  } else {
    return (x[0] + x[1]) + (x[2] + x[3]);
  }
}

// Folds scores q.k of one query row over a block of KB keys (those past `mine` get
// weight 0) into (maximum, sum, row): fold() on vectors of Bytes.
template <int Bytes, int D, int DV, int KB, class Mask>
LAPIS_ATTENTION_HOST_INLINE void block_row(const float* query, const float (&keys_t)[D][KB],
                                           const float (&values)[KB][DV], const int mine,
                                           const Mask& mask, const int64_t b, const int64_t h,
                                           const int64_t i, const int64_t j0, float& maximum,
                                           float& sum, float* row) {
  using F = typename host_vectors<Bytes>::f;
  constexpr int W = host_vectors<Bytes>::lanes, NJ = KB / W, NC = DV / W;
  const float lowest = -lapis::infinity<float>();
  // Independent partial sums (over d, and below over keys) so that the chains of dependent
  // multiply-adds are short: at one vector of keys or values they would set the pace.
  constexpr int PS = NJ >= 4 ? 1 : 4 / NJ, PV = NC >= 4 ? 1 : 4 / NC;
  F s[NJ], partial[PS][NJ];
  for (int p = 0; p < PS; ++p)
    for (int n = 0; n < NJ; ++n) partial[p][n] = F{};
  for (int d0 = 0; d0 < D; d0 += PS) {
    for (int p = 0; p < PS && d0 + p < D; ++p) {
      const F qd = F{} + query[d0 + p];
      for (int n = 0; n < NJ; ++n) partial[p][n] += qd * load_vector<F>(&keys_t[d0 + p][n * W]);
    }
  }
  for (int n = 0; n < NJ; ++n) {
    s[n] = partial[0][n];
    for (int p = 1; p < PS; ++p) s[n] += partial[p][n];
  }
  alignas(64) float score[KB];
  constexpr bool masks_scores =
      !std::is_same<Mask, NoMask>::value && !std::is_same<Mask, CausalMask>::value;
  if (mine < KB || masks_scores) {
    for (int n = 0; n < NJ; ++n) store_vector(&score[n * W], s[n]);
    if constexpr (masks_scores)
      for (int j = 0; j < mine; ++j) score[j] = mask(b, h, i, j0 + j, score[j]);
    for (int j = mine; j < KB; ++j) score[j] = lowest;
    for (int n = 0; n < NJ; ++n) s[n] = load_vector<F>(&score[n * W]);
  }
  F top = s[0];
  for (int n = 1; n < NJ; ++n) top = top < s[n] ? s[n] : top;
  const float top_lane = lanes_max<Bytes>(top);
  if (!(maximum < top_lane) && maximum == lowest) return;   // every key so far masked
  // The row is rescaled only when the block raises its maximum.
  const float rescale = maximum < top_lane ? lapis::math::exp(maximum - top_lane) : 1.0f;
  const float block_max = maximum < top_lane ? top_lane : maximum;
  maximum = block_max;
  F total = F{};
  for (int n = 0; n < NJ; ++n) {
    s[n] = vector_exp<Bytes>(s[n] - block_max);
    total += s[n];
    store_vector(&score[n * W], s[n]);
  }
  sum = sum * rescale + lanes_sum<Bytes>(total);
  F accumulated[PV][NC];
  for (int c = 0; c < NC; ++c) {
    accumulated[0][c] = load_vector<F>(row + c * W) * rescale;
    for (int p = 1; p < PV; ++p) accumulated[p][c] = F{};
  }
  for (int j0 = 0; j0 < KB; j0 += PV) {
    for (int p = 0; p < PV; ++p) {
      const F weight = F{} + score[j0 + p];
      for (int c = 0; c < NC; ++c)
        accumulated[p][c] += weight * load_vector<F>(&values[j0 + p][c * W]);
    }
  }
  for (int c = 0; c < NC; ++c) {
    for (int p = 1; p < PV; ++p) accumulated[0][c] += accumulated[p][c];
    store_vector(row + c * W, accumulated[0][c]);
  }
}
#endif

template <int D, int DV, class T, class Q, class K, class V, class Out, class Mask>
struct HostRows {
  Q q;
  K k;
  V v;
  Out out;
  Mask mask;
  int64_t heads, queries, keys, row_blocks;

  // Bytes: the widest vectors of the instruction set the task is compiled for (16, 32, 64).
  template <int Bytes>
  LAPIS_ATTENTION_HOST_INLINE void run(const int64_t task) const {
    constexpr int R = host_rows<D, DV>(), KB = host_keys<D, DV>();
    const T lowest = -lapis::infinity<T>();
    const int64_t block = task % row_blocks, h = (task / row_blocks) % heads,
                  b = task / (row_blocks * heads);
    const int64_t first = block * R;
    const int rows = int(queries - first < R ? queries - first : R);
    alignas(64) T keys_t[D][KB] = {};
    alignas(64) T values[KB][DV] = {};
    alignas(64) T query[R][D];
    alignas(64) T row[R][DV] = {};
    T maximum[R], sum[R];
    for (int r = 0; r < rows; ++r) {
      for (int d = 0; d < D; ++d) query[r][d] = q(b, h, first + r, d);
      maximum[r] = lowest;
      sum[r] = 0;
    }
    const int64_t block_end = mask.keys(first + rows - 1, keys);
    for (int64_t j0 = 0; j0 < block_end; j0 += KB) {
      const int count = int(block_end - j0 < KB ? block_end - j0 : KB);
      for (int j = 0; j < count; ++j) {
        for (int d = 0; d < D; ++d) keys_t[d][j] = k(b, h, j0 + j, d);
        for (int d = 0; d < DV; ++d) values[j][d] = v(b, h, j0 + j, d);
      }
      for (int r = 0; r < rows; ++r) {
        const int64_t i = first + r, end = mask.keys(i, keys);
        const int mine = int(end - j0 < count ? (end - j0 > 0 ? end - j0 : 0) : count);
#if defined(LAPIS_ATTENTION_VECTORS)
        // The widest vectors (at most Bytes) whose lanes divide a value row.
        constexpr int width = DV % (Bytes / 4) == 0 ? Bytes
                              : Bytes >= 32 && DV % (Bytes / 8) == 0 ? Bytes / 2
                              : DV % 4 == 0 ? 16 : 0;
        if constexpr (std::is_same<T, float>::value && width > 0) {
          block_row<width, D, DV>(query[r], keys_t, values, mine, mask, b, h, i, j0,
                                  maximum[r], sum[r], row[r]);
          continue;
        }
#endif
        T score[KB] = {};
        for (int d = 0; d < D; ++d) {
          const T qd = query[r][d];
          for (int j = 0; j < KB; ++j) score[j] += qd * keys_t[d][j];
        }
        for (int j = 0; j < mine; ++j) score[j] = mask(b, h, i, j0 + j, score[j]);
        fold<DV>(score, mine, maximum[r], sum[r], row[r],
                 [&](T (&accumulated)[DV], const T p, const int j) {
                   for (int d = 0; d < DV; ++d) accumulated[d] += p * values[j][d];
                 });
      }
    }
    for (int r = 0; r < rows; ++r)
      for (int d = 0; d < DV; ++d)
        out(b, h, first + r, d) = sum[r] > T(0) ? row[r][d] / sum[r] : T(0);
  }
};

template <class Task>
using host_task_function = void (*)(const Task&, int64_t);

template <class Task>
void host_task_baseline(const Task& task, const int64_t t) {
  task.template run<16>(t);
}
#if defined(LAPIS_ATTENTION_X86)
template <class Task>
__attribute__((target("avx2,fma"))) void host_task_avx2(const Task& task, const int64_t t) {
  task.template run<32>(t);
}
template <class Task>
__attribute__((target("avx512f,fma"))) void host_task_avx512(const Task& task, const int64_t t) {
  task.template run<64>(t);
}
#endif

// The widest instruction set of this CPU, lowered by LAPIS_GEMM_ISA=avx2|baseline as the
// GEMM's is (for tests and comparisons).
template <class Task>
host_task_function<Task> host_task_for() {
#if defined(LAPIS_ATTENTION_X86)
  const char* forced = std::getenv("LAPIS_GEMM_ISA");
  const bool baseline = forced && std::strcmp(forced, "baseline") == 0;
  const bool avx2_only = forced && std::strcmp(forced, "avx2") == 0;
  if (!baseline && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
    if (!avx2_only && __builtin_cpu_supports("avx512f")) return host_task_avx512<Task>;
    return host_task_avx2<Task>;
  }
#endif
  return host_task_baseline<Task>;
}

// The tensor-core path: a team of 4 warps takes 64 query rows of one (batch, head), 16 a warp
// (one m16 tile), and folds in BN keys at a time. Per block the team stages the keys
// [BN][D + 4] and values [BN][DV + 4] in shared memory (the padding puts a fragment's 32 reads
// in 32 banks for D and DV multiples of 32); each warp computes its 16 x BN scores s = q k^T
// as D / 8 k-steps of BN / 8 mma tiles, the query fragments held in registers since the
// start, masks them, takes each row's maximum across the 4 lanes that hold the row, and
// folds p = exp(s - maximum) into its 16 x DV outputs as a second product p v. That product
// reads p straight from the score accumulators: in k-step t, fragment element k of A is key
// 8 t + 2 (k % 4) + k / 4 (accumulator columns 2 tk and 2 tk + 1 of lane tk), and B's rows
// are the values of the same keys, so no lane exchanges scores. Lane (gr = lane / 4,
// tk = lane % 4) holds rows gr and gr + 8 of the warp's 16 and, of each 8-column tile,
// columns 2 tk and 2 tk + 1 (mma.sync m16n8k8's accumulator layout); its running maximum and
// partial sum are those two rows'. Each thread fetches its share of the next block into
// registers before working on the staged one: staged straight from memory, each block waited
// for its loads (benchmarks/attention_bench, heads of 32 at fp32, one team a multiprocessor:
// 0.965 ms on an H200, against 0.288 ms with the fetch ahead on an H100, a slower card). The
// team is written once for both callers (as GemmTiles):
// the device's team is the calling thread, the host check's every thread in turn, the mma
// emulated from the lanes' fragment elements.
// Keys a block and teams a multiprocessor the launch bounds ask for: benchmarks/attention_bench
// on an H100, heads of 32 at fp32, 0.272 ms with 3 teams (168 registers), 0.284 with 2, 0.288
// with 1, 0.310 with 4 (128 registers, spills); blocks of 64 keys 0.73 ms (0.32 with 2 teams).
// Heads of 64 spill at more than one team (0.81 ms at 4, 0.36 at 1).
#if defined(LAPIS_ATTENTION_MMA_KEYS)
constexpr int kMmaKeys = LAPIS_ATTENTION_MMA_KEYS;
#else
constexpr int kMmaKeys = 32;
#endif
template <int D, int DV>
constexpr int mma_teams() {
#if defined(LAPIS_ATTENTION_MMA_TEAMS)
  return LAPIS_ATTENTION_MMA_TEAMS;
#else
  return D <= 32 && DV <= 32 ? 3 : 1;   // heads of 32: 168 registers, no spills
#endif
}

template <int D, int DV, Precision P, int BN = kMmaKeys>
struct MmaAttention {
  static constexpr int warps = 4, threads = 32 * warps, rows = 16 * warps;
  static constexpr int KT = D / 8, NT = BN / 8, VT = DV / 8;
  static constexpr int LDK = D + 4, LDV = DV + 4;
  static constexpr size_t scratch = size_t(BN) * (LDK + LDV) * sizeof(float);
  // Elements of a block of keys and of values that each thread fetches.
  static constexpr int KF = (BN * D + threads - 1) / threads;
  static constexpr int VF = (BN * DV + threads - 1) / threads;
  static_assert(D % 8 == 0 && DV % 8 == 0 && BN % 8 == 0, "whole mma tiles");

  // One lane's registers: its query fragments (k-step t, register r: row gr + 8 (r % 2),
  // column 8 t + tk + 4 (r / 2)), scores (then weights) and outputs as accumulators, and per
  // row (half 0: gr, 1: gr + 8) the running maximum, the block's maximum and the partial sum.
  struct Lane {
    float q[KT][4];
    float s[NT][4];
    float o[VT][4];
    float maximum[2], top[2], sum[2];
    float next_keys[KF], next_values[VF];   // the next block, on its way to shared memory
  };

  // Fragment element h of B for score tile `nt` at k-step `t`: key 8 nt + gr, column
  // 8 t + tk + 4 h.
  KOKKOS_FORCEINLINE_FUNCTION static float key_at(const float* keys, const int nt, const int t,
                                                  const int lane, const int h) {
    return keys[(nt * 8 + lane / 4) * LDK + t * 8 + lane % 4 + 4 * h];
  }
  // Fragment element h of B for output tile `vt` at k-step `t` (keys 8 t..): value row
  // 8 t + 2 tk + h (the key of A's k = tk + 4 h, below), column 8 vt + gr.
  KOKKOS_FORCEINLINE_FUNCTION static float value_at(const float* values, const int vt,
                                                    const int t, const int lane, const int h) {
    return values[(t * 8 + 2 * (lane % 4) + h) * LDV + vt * 8 + lane / 4];
  }
  // Fragment register r of A for the weights of k-step t: accumulator element 0 (row gr, key
  // 2 tk), 2 (gr + 8, 2 tk), 1 (gr, 2 tk + 1), 3 (gr + 8, 2 tk + 1).
  KOKKOS_FORCEINLINE_FUNCTION static float weight_at(const Lane& me, const int t, const int r) {
    return me.s[t][r == 1 ? 2 : r == 2 ? 1 : r];
  }

#if !defined(__CUDA_ARCH__)
  // The host's mma: the warp's fragments gathered by the m16n8k8 layout (A element (row m,
  // k) in lane (m % 8) * 4 + k % 4, register m / 8 + 2 (k / 4); B element (k, column n) in
  // lane n * 4 + k % 4, register k / 4), products rounded as the tensor cores' (P).
  template <class A, class B>
  static void emulated_mma(float (&d)[4], const int lane, const A& a, const B& b) {
    for (int i = 0; i < 4; ++i) {
      const int m = lane / 4 + 8 * (i / 2), n = 2 * (lane % 4) + i % 2;
      for (int k = 0; k < 8; ++k)
        d[i] += detail::emulated_product<P>(a((m % 8) * 4 + k % 4, m / 8 + 2 * (k / 4)),
                                    b(n * 4 + k % 4, k / 4));
    }
  }
#endif

  // Scores of the staged block into me.s, masked (keys past the row's last, rows past the
  // last query: -inf), and each row's largest into me.top.
  template <class Mask>
  KOKKOS_INLINE_FUNCTION static void scores(const float* keys, const int rank, Lane& me,
                                            const Lane* warp_lanes, const Mask& mask,
                                            const int64_t b, const int64_t h, const int64_t first,
                                            const int64_t queries, const int64_t key_count,
                                            const int64_t j0) {
    const int lane = rank % 32, warp = rank / 32;
    LAPIS_UNROLL
    for (int nt = 0; nt < NT; ++nt)
      LAPIS_UNROLL
      for (int i = 0; i < 4; ++i) me.s[nt][i] = 0.0f;
    LAPIS_UNROLL
    for (int t = 0; t < KT; ++t) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
      (void)warp_lanes;
      uint32_t a_big[4], a_small[4];
      LAPIS_UNROLL
      for (int r = 0; r < 4; ++r) detail::tf32::split_fast(me.q[t][r], a_big[r], a_small[r]);
      LAPIS_UNROLL
      for (int nt = 0; nt < NT; ++nt) {
        uint32_t b_big[2], b_small[2];
        LAPIS_UNROLL
        for (int x = 0; x < 2; ++x)
          detail::tf32::split_fast(key_at(keys, nt, t, lane, x), b_big[x], b_small[x]);
        if (P == Precision::fp32)
          detail::tf32::mma3(me.s[nt], a_big, a_small, b_big, b_small);
        else
          detail::tf32::mma(me.s[nt], a_big, b_big);
      }
#elif defined(__CUDA_ARCH__)
      (void)keys, (void)warp_lanes;   // no tensor cores: not launched
#else
      for (int nt = 0; nt < NT; ++nt)
        emulated_mma(me.s[nt], lane,
                     [&](int owner, int r) { return warp_lanes[owner].q[t][r]; },
                     [&](int owner, int x) { return key_at(keys, nt, t, owner, x); });
#endif
    }
    const float lowest = -lapis::infinity<float>();
    LAPIS_UNROLL
    for (int half = 0; half < 2; ++half) {
      const int64_t i = first + warp * 16 + lane / 4 + 8 * half;
      const int64_t end = i < queries ? mask.keys(i, key_count) : 0;
      float top = lowest;
      LAPIS_UNROLL
      for (int nt = 0; nt < NT; ++nt)
        LAPIS_UNROLL
        for (int c = 0; c < 2; ++c) {
          const int64_t j = j0 + nt * 8 + 2 * (lane % 4) + c;
          float& s = me.s[nt][2 * half + c];
          s = j < end ? mask(b, h, i, j, s) : lowest;
          top = s > top ? s : top;
        }
      me.top[half] = top;
    }
  }

  // With me.top each row's maximum over its 4 lanes: the new running maximum, the row
  // rescaled, the scores turned into weights exp(s - maximum) (0 for masked keys; a row with
  // every key so far masked keeps maximum -inf, weights 0), their sum added.
  KOKKOS_INLINE_FUNCTION static void weights(Lane& me) {
    const float lowest = -lapis::infinity<float>();
    LAPIS_UNROLL
    for (int half = 0; half < 2; ++half) {
      const float maximum = me.maximum[half] > me.top[half] ? me.maximum[half] : me.top[half];
      const float base = maximum == lowest ? 0.0f : maximum;
      const float rescale = lapis::math::exp(me.maximum[half] - base);
      me.maximum[half] = maximum;
      float sum = me.sum[half] * rescale;
      LAPIS_UNROLL
      for (int vt = 0; vt < VT; ++vt)
        LAPIS_UNROLL
        for (int c = 0; c < 2; ++c) me.o[vt][2 * half + c] *= rescale;
      LAPIS_UNROLL
      for (int nt = 0; nt < NT; ++nt)
        LAPIS_UNROLL
        for (int c = 0; c < 2; ++c) {
          float& s = me.s[nt][2 * half + c];
          s = lapis::math::exp(s - base);
          sum += s;
        }
      me.sum[half] = sum;
    }
  }

  // me.o += weights x the staged values.
  KOKKOS_INLINE_FUNCTION static void accumulate(const float* values, const int rank, Lane& me,
                                                const Lane* warp_lanes) {
    const int lane = rank % 32;
    LAPIS_UNROLL
    for (int t = 0; t < NT; ++t) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
      (void)warp_lanes;
      uint32_t a_big[4], a_small[4];
      LAPIS_UNROLL
      for (int r = 0; r < 4; ++r)
        detail::tf32::split_fast(weight_at(me, t, r), a_big[r], a_small[r]);
      LAPIS_UNROLL
      for (int vt = 0; vt < VT; ++vt) {
        uint32_t b_big[2], b_small[2];
        LAPIS_UNROLL
        for (int x = 0; x < 2; ++x)
          detail::tf32::split_fast(value_at(values, vt, t, lane, x), b_big[x], b_small[x]);
        if (P == Precision::fp32)
          detail::tf32::mma3(me.o[vt], a_big, a_small, b_big, b_small);
        else
          detail::tf32::mma(me.o[vt], a_big, b_big);
      }
#elif defined(__CUDA_ARCH__)
      (void)values, (void)lane, (void)me, (void)warp_lanes;
#else
      for (int vt = 0; vt < VT; ++vt)
        emulated_mma(me.o[vt], lane,
                     [&](int owner, int r) { return weight_at(warp_lanes[owner], t, r); },
                     [&](int owner, int x) { return value_at(values, vt, t, owner, x); });
#endif
    }
  }

  // One team's 64 query rows from `first` of (b, h).
  template <class Team, class Q, class K, class V, class Out, class Mask>
  KOKKOS_INLINE_FUNCTION static void rows_of(Team& team, float* smem, const Q& q, const K& k,
                                             const V& v, const Out& out, const Mask& mask,
                                             const int64_t b, const int64_t h,
                                             const int64_t first, const int64_t queries,
                                             const int64_t key_count) {
    float* const keys = smem;
    float* const values = smem + BN * LDK;
    team.each([&](const int rank, Lane& me, const Lane*) {
      const int lane = rank % 32, warp = rank / 32;
      LAPIS_UNROLL
      for (int t = 0; t < KT; ++t)
        LAPIS_UNROLL
        for (int r = 0; r < 4; ++r) {
          const int64_t i = first + warp * 16 + lane / 4 + 8 * (r % 2);
          me.q[t][r] = i < queries ? float(q(b, h, i, t * 8 + lane % 4 + 4 * (r / 2))) : 0.0f;
        }
      LAPIS_UNROLL
      for (int vt = 0; vt < VT; ++vt)
        LAPIS_UNROLL
        for (int c = 0; c < 4; ++c) me.o[vt][c] = 0.0f;
      for (int half = 0; half < 2; ++half) {
        me.maximum[half] = -lapis::infinity<float>();
        me.sum[half] = 0.0f;
      }
    });
    // The team runs to the last key any of its rows needs (causal: its last row's). Each
    // thread fetches its elements of the next block of keys and values into registers
    // before it works on the staged block, so that their loads overlap the products.
    const int64_t last_row = first + rows < queries ? first + rows - 1 : queries - 1;
    const int64_t team_end = mask.keys(last_row, key_count);
    const auto fetch = [&](const int rank, Lane& me, const int64_t j0) {
      const int count = int(team_end - j0 < BN ? team_end - j0 : BN);
      LAPIS_UNROLL
      for (int r = 0; r < KF; ++r) {
        const int e = rank + r * threads;
        me.next_keys[r] = e < count * D ? float(k(b, h, j0 + e / D, e % D)) : 0.0f;
      }
      LAPIS_UNROLL
      for (int r = 0; r < VF; ++r) {
        const int e = rank + r * threads;
        me.next_values[r] = e < count * DV ? float(v(b, h, j0 + e / DV, e % DV)) : 0.0f;
      }
    };
    if (team_end > 0) team.each([&](const int rank, Lane& me, const Lane*) { fetch(rank, me, 0); });
    for (int64_t j0 = 0; j0 < team_end; j0 += BN) {
      team.barrier();   // the last block's reads are done
      team.each([&](const int rank, Lane& me, const Lane*) {
        LAPIS_UNROLL
        for (int r = 0; r < KF; ++r) {
          const int e = rank + r * threads;
          if (BN * D % threads == 0 || e < BN * D) keys[e / D * LDK + e % D] = me.next_keys[r];
        }
        LAPIS_UNROLL
        for (int r = 0; r < VF; ++r) {
          const int e = rank + r * threads;
          if (BN * DV % threads == 0 || e < BN * DV)
            values[e / DV * LDV + e % DV] = me.next_values[r];
        }
      });
      team.barrier();
      if (j0 + BN < team_end)
        team.each([&](const int rank, Lane& me, const Lane*) { fetch(rank, me, j0 + BN); });
      team.each([&](const int rank, Lane& me, const Lane* warp_lanes) {
        scores(keys, rank, me, warp_lanes, mask, b, h, first, queries, key_count, j0);
      });
      team.quad_max();
      team.each([&](const int, Lane& me, const Lane*) { weights(me); });
      team.each([&](const int rank, Lane& me, const Lane* warp_lanes) {
        accumulate(values, rank, me, warp_lanes);
      });
    }
    team.quad_sum();
    team.each([&](const int rank, Lane& me, const Lane*) {
      const int lane = rank % 32, warp = rank / 32;
      LAPIS_UNROLL
      for (int half = 0; half < 2; ++half) {
        const int64_t i = first + warp * 16 + lane / 4 + 8 * half;
        if (i >= queries) continue;
        const float sum = me.sum[half];
        LAPIS_UNROLL
        for (int vt = 0; vt < VT; ++vt)
          LAPIS_UNROLL
          for (int c = 0; c < 2; ++c)
            out(b, h, i, vt * 8 + 2 * (lane % 4) + c) =
                sum > 0.0f ? me.o[vt][2 * half + c] / sum : 0.0f;
      }
    });
  }

  // The device's team: the calling thread, its registers, the quad's shuffles.
  template <class Member>
  struct OneThread {
    const Member& member;
    int rank;
    Lane me;
    template <class F>
    KOKKOS_FORCEINLINE_FUNCTION void each(const F& f) {
      f(rank, me, static_cast<const Lane*>(nullptr));
    }
    KOKKOS_FORCEINLINE_FUNCTION void barrier() const { member.team_barrier(); }
    KOKKOS_FORCEINLINE_FUNCTION void quad_max() {
#if defined(__CUDA_ARCH__)
      for (int half = 0; half < 2; ++half)
        for (int x = 1; x < 4; x *= 2)
          me.top[half] = fmaxf(me.top[half], __shfl_xor_sync(0xffffffffu, me.top[half], x));
#endif
    }
    KOKKOS_FORCEINLINE_FUNCTION void quad_sum() {
#if defined(__CUDA_ARCH__)
      for (int half = 0; half < 2; ++half)
        for (int x = 1; x < 4; x *= 2)
          me.sum[half] += __shfl_xor_sync(0xffffffffu, me.sum[half], x);
#endif
    }
  };

  // The host check's team: every thread in turn, between the barriers.
  struct EveryThread {
    std::vector<Lane> lanes = std::vector<Lane>(threads);
    template <class F>
    void each(const F& f) {
      for (int rank = 0; rank < threads; ++rank)
        f(rank, lanes[rank], lanes.data() + rank / 32 * 32);
    }
    void barrier() const {}
    template <class Combine>
    void across_quads(float (Lane::*field)[2], const Combine& combine) {
      for (int quad = 0; quad < threads; quad += 4)
        for (int half = 0; half < 2; ++half) {
          // The shuffles' order: partners 1 apart, then 2.
          float pair[4];
          for (int x = 0; x < 4; ++x)
            pair[x] = combine((lanes[quad + x].*field)[half], (lanes[quad + (x ^ 1)].*field)[half]);
          for (int x = 0; x < 4; ++x)
            (lanes[quad + x].*field)[half] = combine(pair[x], pair[x ^ 2]);
        }
    }
    void quad_max() {
      across_quads(&Lane::top, [](float a, float c) { return a > c ? a : c; });
    }
    void quad_sum() {
      across_quads(&Lane::sum, [](float a, float c) { return a + c; });
    }
  };

  template <class ExecutionSpace, class Q, class K, class V, class Out, class Mask>
  static void run(const ExecutionSpace& space, const char* label, const Q& q, const K& k,
                  const V& v, const Out& out, const Mask mask) {
    const int64_t batch = int64_t(q.extent(0)), heads = int64_t(q.extent(1)),
                  queries = int64_t(q.extent(2)), key_count = int64_t(k.extent(2));
    const int64_t row_blocks = (queries + rows - 1) / rows;
    const int64_t teams = batch * heads * row_blocks;
    constexpr bool host =
        Kokkos::SpaceAccessibility<ExecutionSpace, Kokkos::HostSpace>::accessible;
    if constexpr (host) {
      Kokkos::parallel_for(
          label, Kokkos::RangePolicy<ExecutionSpace, Kokkos::IndexType<int64_t>>(space, 0, teams),
          [=](const int64_t t) {
            std::vector<float> smem(scratch / sizeof(float), std::nanf(""));
            EveryThread team;
            rows_of(team, smem.data(), q, k, v, out, mask, t / (row_blocks * heads),
                    t / row_blocks % heads, t % row_blocks * rows, queries, key_count);
          });
    } else {
      using bounds = Kokkos::LaunchBounds<threads, mma_teams<D, DV>()>;
      using policy = Kokkos::TeamPolicy<ExecutionSpace, bounds>;
      using member = typename policy::member_type;
      const size_t bytes = scratch;   // a local: the kernel cannot bind the static member
      Kokkos::parallel_for(
          label, policy(space, int(teams), threads).set_scratch_size(0, Kokkos::PerTeam(bytes)),
          KOKKOS_LAMBDA(const member& team) {
            float* const smem =
                static_cast<float*>(team.team_scratch(0).get_shmem_aligned(bytes, 16));
            const int64_t t = team.league_rank();
            OneThread<member> me{team, team.team_rank(), {}};
            rows_of(me, smem, q, k, v, out, mask, t / (row_blocks * heads),
                    t / row_blocks % heads, t % row_blocks * rows, queries, key_count);
          });
    }
  }
};

// Whether MmaAttention takes these heads: float32 on CUDA (unless LAPIS_ATTENTION_CUDA_CORES,
// or a Kokkos built for GPUs older than sm_80, which have no tf32 mma) or, with
// LAPIS_ATTENTION_MMA, on host backends; D and DV multiples of 8, at most 64 (the query
// fragments and output accumulators stay in registers).
#if defined(KOKKOS_ARCH_KEPLER) || defined(KOKKOS_ARCH_MAXWELL) || defined(KOKKOS_ARCH_PASCAL) || \
    defined(KOKKOS_ARCH_VOLTA) || defined(KOKKOS_ARCH_TURING75)
#define LAPIS_ATTENTION_NO_TF32_MMA
#endif
template <class ExecutionSpace, class T, int D, int DV>
constexpr bool mma_applies() {
  if (!std::is_same<T, float>::value || D % 8 != 0 || DV % 8 != 0 || D > 64 || DV > 64)
    return false;
#if defined(LAPIS_ATTENTION_MMA)
  if (Kokkos::SpaceAccessibility<ExecutionSpace, Kokkos::HostSpace>::accessible) return true;
#endif
#if defined(KOKKOS_ENABLE_CUDA) && !defined(LAPIS_ATTENTION_CUDA_CORES) && \
    !defined(LAPIS_ATTENTION_NO_TF32_MMA)
  return std::is_same<ExecutionSpace, Kokkos::Cuda>::value;
#else
  return false;
#endif
}

template <int D, int DV, Precision P, class ExecutionSpace, class Q, class K, class V, class Out,
          class Mask>
void run(const ExecutionSpace& space, const char* label, const Q& q, const K& k, const V& v,
         const Out& out, const Mask mask) {
  using T = typename Out::non_const_value_type;
  const int64_t batch = int64_t(q.extent(0)), heads = int64_t(q.extent(1)),
                queries = int64_t(q.extent(2)), keys = int64_t(k.extent(2));
  const T lowest = -lapis::infinity<T>();
  if (batch * heads * queries == 0) return;
  constexpr bool host = Kokkos::SpaceAccessibility<ExecutionSpace, Kokkos::HostSpace>::accessible;
  if constexpr (mma_applies<ExecutionSpace, T, D, DV>()) {
    MmaAttention<D, DV, P>::run(space, label, q, k, v, out, mask);
  } else if constexpr (host && !kTeamsOnHost) {
    // A thread takes host_rows() query rows of one head: HostRows, below.
    using range = Kokkos::RangePolicy<ExecutionSpace, Kokkos::IndexType<int64_t>>;
    using Task = HostRows<D, DV, T, Q, K, V, Out, Mask>;
    const int64_t row_blocks = (queries + host_rows<D, DV>() - 1) / host_rows<D, DV>();
    const Task task{q, k, v, out, mask, heads, queries, keys, row_blocks};
    const host_task_function<Task> run_task = host_task_for<Task>();
    Kokkos::parallel_for(label, range(space, 0, batch * heads * row_blocks),
                         [=](const int64_t t) { run_task(task, t); });
  } else {
    using team_policy = Kokkos::TeamPolicy<ExecutionSpace>;
    using member = typename team_policy::member_type;
    using scratch = Kokkos::View<T**, Kokkos::LayoutRight,
                                 typename ExecutionSpace::scratch_memory_space,
                                 Kokkos::MemoryTraits<Kokkos::Unmanaged>>;
    const int64_t rows = host ? (space.concurrency() > 1 ? 2 : 1) : kQueryRows;   // per team
    const int64_t row_blocks = (queries + rows - 1) / rows;
    const size_t bytes = scratch::shmem_size(kKeyBlock, D) + scratch::shmem_size(kKeyBlock, DV);
    const auto policy = team_policy(space, int(batch * heads * row_blocks), int(rows))
                            .set_scratch_size(0, Kokkos::PerTeam(bytes));
    Kokkos::parallel_for(label, policy, KOKKOS_LAMBDA(const member& team) {
      const int64_t block = team.league_rank() % row_blocks;
      const int64_t h = (team.league_rank() / row_blocks) % heads;
      const int64_t b = team.league_rank() / (row_blocks * heads);
      const int64_t i = block * rows + team.team_rank();
      const bool active = i < queries;
      scratch key_block(team.team_scratch(0), kKeyBlock, D);
      scratch value_block(team.team_scratch(0), kKeyBlock, DV);
      T query[D], row[DV] = {}, score[kKeyBlock];
      LAPIS_ATTENTION_UNROLL
      for (int d = 0; d < D; ++d) query[d] = active ? q(b, h, i, d) : T(0);
      T maximum = lowest, sum = 0;
      // The team runs to the last key any of its rows needs (causal: its last row's).
      const int64_t last_row = (block + 1) * rows < queries ? (block + 1) * rows - 1 : queries - 1;
      const int64_t team_end = mask.keys(last_row, keys);
      const int64_t end = active ? mask.keys(i, keys) : 0;
      for (int64_t j0 = 0; j0 < team_end; j0 += kKeyBlock) {
        const int count = int(team_end - j0 < kKeyBlock ? team_end - j0 : kKeyBlock);
        for (int e = team.team_rank(); e < count * D; e += team.team_size())
          key_block(e / D, e % D) = k(b, h, j0 + e / D, e % D);
        for (int e = team.team_rank(); e < count * DV; e += team.team_size())
          value_block(e / DV, e % DV) = v(b, h, j0 + e / DV, e % DV);
        team.team_barrier();
        const int mine = int(end - j0 < count ? (end - j0 > 0 ? end - j0 : 0) : count);
        LAPIS_ATTENTION_UNROLL
        for (int j = 0; j < kKeyBlock; ++j) {
          T s = 0;
          if (j < mine) {
            LAPIS_ATTENTION_UNROLL
            for (int d = 0; d < D; ++d) s += query[d] * key_block(j, d);
            s = mask(b, h, i, j0 + j, s);
          }
          score[j] = s;
        }
        fold<DV>(score, mine, maximum, sum, row, [&](T (&r)[DV], const T p, const int j) {
          LAPIS_ATTENTION_UNROLL
          for (int d = 0; d < DV; ++d) r[d] += p * value_block(j, d);
        });
        team.team_barrier();
      }
      if (active)
        for (int d = 0; d < DV; ++d) out(b, h, i, d) = sum > T(0) ? row[d] / sum : T(0);
    });
  }
}

}  // namespace attention_detail

// q [B, H, L, D] (scaled), k [B, H, S, D], v [B, H, S, DV] -> out [B, H, L, DV].
template <int D, int DV, class ExecutionSpace, Precision P = Precision::fp32, class Q, class K,
          class V, class Out>
void attention(const ExecutionSpace& space, const char* label, const Q& q, const K& k,
               const V& v, const Out& out) {
  attention_detail::run<D, DV, P>(space, label, q, k, v, out, attention_detail::NoMask{});
}

// The same with key j of query i kept only when j <= i (is_causal=True).
template <int D, int DV, class ExecutionSpace, Precision P = Precision::fp32, class Q, class K,
          class V, class Out>
void attention_causal(const ExecutionSpace& space, const char* label, const Q& q, const K& k,
                      const V& v, const Out& out) {
  attention_detail::run<D, DV, P>(space, label, q, k, v, out, attention_detail::CausalMask{});
}

// The same with mask [B|1, H|1, L|1, S]: boolean (true keeps the key) or added to the scores.
template <int D, int DV, class ExecutionSpace, Precision P = Precision::fp32, class Q, class K,
          class V, class Mask, class Out>
void attention_masked(const ExecutionSpace& space, const char* label, const Q& q, const K& k,
                      const V& v, const Mask& mask, const Out& out) {
  attention_detail::run<D, DV, P>(space, label, q, k, v, out,
                               attention_detail::ViewMask<Mask>{mask});
}

}  // namespace lapis
