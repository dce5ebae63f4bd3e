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
#pragma once

#include <Kokkos_Core.hpp>

#include <cstdint>
#include <cstring>
#include <limits>

#include "scalar.hpp"

#if defined(__CUDACC__) || defined(__HIPCC__)
#define LAPIS_ATTENTION_UNROLL _Pragma("unroll")
#else
#define LAPIS_ATTENTION_UNROLL
#endif

namespace lapis {
namespace attention_detail {

constexpr int kKeyBlock = 32;     // keys folded in per rescaling of the output row
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
    // n = round(x / ln2) by the 1.5 * 2^23 trick (no rounding instruction needed).
    const float n = (clamped * 1.44269504f + 12582912.0f) - 12582912.0f;
    const float r = (clamped - n * 0.693359375f) - n * -2.12194440e-4f;
    float polynomial = 1.9875691500e-4f;
    polynomial = polynomial * r + 1.3981999507e-3f;
    polynomial = polynomial * r + 8.3334519073e-3f;
    polynomial = polynomial * r + 4.1665795894e-2f;
    polynomial = polynomial * r + 1.6666665459e-1f;
    polynomial = polynomial * r + 5.0000001201e-1f;
    const float exp_r = polynomial * r * r + r + 1.0f;
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
template <int DV, class T, class AddValue>
KOKKOS_INLINE_FUNCTION void fold(const T (&score)[kKeyBlock], const int count, T& maximum,
                                 T& sum, T (&row)[DV], const AddValue& add_value) {
  T block_maximum = maximum;
  LAPIS_ATTENTION_UNROLL
  for (int j = 0; j < kKeyBlock; ++j)
    if (j < count && score[j] > block_maximum) block_maximum = score[j];
  if (block_maximum == -lapis::infinity<T>()) return;   // all masked so far
  const T rescale = lapis::math::exp(maximum - block_maximum);
  sum *= rescale;
  LAPIS_ATTENTION_UNROLL
  for (int d = 0; d < DV; ++d) row[d] *= rescale;
  maximum = block_maximum;
  T weight[kKeyBlock];
  LAPIS_ATTENTION_UNROLL
  for (int j = 0; j < kKeyBlock; ++j) weight[j] = softmax_exp(score[j] - maximum);
  LAPIS_ATTENTION_UNROLL
  for (int j = 0; j < kKeyBlock; ++j) {
    if (j < count) {
      sum += weight[j];
      add_value(row, weight[j], j);      // row += weight * value row j
    }
  }
}

template <int D, int DV, class ExecutionSpace, class Q, class K, class V, class Out, class Mask>
void run(const ExecutionSpace& space, const char* label, const Q& q, const K& k, const V& v,
         const Out& out, const Mask mask) {
  using T = typename Out::non_const_value_type;
  const int64_t batch = int64_t(q.extent(0)), heads = int64_t(q.extent(1)),
                queries = int64_t(q.extent(2)), keys = int64_t(k.extent(2));
  const T lowest = -lapis::infinity<T>();
  if (batch * heads * queries == 0) return;
  constexpr bool host = Kokkos::SpaceAccessibility<ExecutionSpace, Kokkos::HostSpace>::accessible;
  if constexpr (host && !kTeamsOnHost) {
    // A thread takes kHostRows query rows of one head. Per block of keys it copies the keys
    // transposed, [D][kKeyBlock], and the values, [kKeyBlock][DV], into arrays of its own: a
    // row's scores over the block and the value rows it adds are then contiguous loops that
    // the compiler vectorises (the View's own strides are those of the model's layout).
    using range = Kokkos::RangePolicy<ExecutionSpace, Kokkos::IndexType<int64_t>>;
    constexpr int kHostRows = host_rows<D, DV>();
    const int64_t row_blocks = (queries + kHostRows - 1) / kHostRows;
    Kokkos::parallel_for(label, range(space, 0, batch * heads * row_blocks),
                         KOKKOS_LAMBDA(const int64_t task) {
      const int64_t block = task % row_blocks, h = (task / row_blocks) % heads,
                    b = task / (row_blocks * heads);
      const int64_t first = block * kHostRows;
      const int rows = int(queries - first < kHostRows ? queries - first : kHostRows);
      T keys_t[D * kKeyBlock] = {}, values[kKeyBlock * DV] = {};
      T query[kHostRows][D], row[kHostRows][DV] = {}, maximum[kHostRows], sum[kHostRows];
      for (int r = 0; r < rows; ++r) {
        for (int d = 0; d < D; ++d) query[r][d] = q(b, h, first + r, d);
        maximum[r] = lowest;
        sum[r] = 0;
      }
      const int64_t block_end = mask.keys(first + rows - 1, keys);
      for (int64_t j0 = 0; j0 < block_end; j0 += kKeyBlock) {
        const int count = int(block_end - j0 < kKeyBlock ? block_end - j0 : kKeyBlock);
        for (int j = 0; j < count; ++j) {
          for (int d = 0; d < D; ++d) keys_t[d * kKeyBlock + j] = k(b, h, j0 + j, d);
          for (int d = 0; d < DV; ++d) values[j * DV + d] = v(b, h, j0 + j, d);
        }
        for (int r = 0; r < rows; ++r) {
          const int64_t i = first + r, end = mask.keys(i, keys);
          const int mine = int(end - j0 < count ? (end - j0 > 0 ? end - j0 : 0) : count);
          T score[kKeyBlock] = {};
          for (int d = 0; d < D; ++d) {
            const T qd = query[r][d];
            for (int j = 0; j < kKeyBlock; ++j) score[j] += qd * keys_t[d * kKeyBlock + j];
          }
          for (int j = 0; j < mine; ++j) score[j] = mask(b, h, i, j0 + j, score[j]);
          fold<DV>(score, mine, maximum[r], sum[r], row[r],
                   [&](T (&accumulated)[DV], const T p, const int j) {
                     const T* value_row = values + j * DV;
                     for (int d = 0; d < DV; ++d) accumulated[d] += p * value_row[d];
                   });
        }
      }
      for (int r = 0; r < rows; ++r)
        for (int d = 0; d < DV; ++d)
          out(b, h, first + r, d) = sum[r] > T(0) ? row[r][d] / sum[r] : T(0);
    });
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
template <int D, int DV, class ExecutionSpace, class Q, class K, class V, class Out>
void attention(const ExecutionSpace& space, const char* label, const Q& q, const K& k,
               const V& v, const Out& out) {
  attention_detail::run<D, DV>(space, label, q, k, v, out, attention_detail::NoMask{});
}

// The same with key j of query i kept only when j <= i (is_causal=True).
template <int D, int DV, class ExecutionSpace, class Q, class K, class V, class Out>
void attention_causal(const ExecutionSpace& space, const char* label, const Q& q, const K& k,
                      const V& v, const Out& out) {
  attention_detail::run<D, DV>(space, label, q, k, v, out, attention_detail::CausalMask{});
}

// The same with mask [B|1, H|1, L|1, S]: boolean (true keeps the key) or added to the scores.
template <int D, int DV, class ExecutionSpace, class Q, class K, class V, class Mask, class Out>
void attention_masked(const ExecutionSpace& space, const char* label, const Q& q, const K& k,
                      const V& v, const Mask& mask, const Out& out) {
  attention_detail::run<D, DV>(space, label, q, k, v, out,
                               attention_detail::ViewMask<Mask>{mask});
}

}  // namespace lapis
