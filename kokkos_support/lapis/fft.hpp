// lapis-export FFT, shipped into every exported package (src/lapis/).
// One-dimensional transforms of length n along the last axis of [lines, ...] (exporter/fft.py),
//   fft   x [lines, m, 2] -> y [lines, k, 2]   forward, complex in and out
//   ifft  x [lines, m, 2] -> y [lines, k, 2]   inverse (the conjugate twiddles)
//   rfft  x [lines, m]    -> y [lines, k, 2]   forward of a real signal
//   irfft x [lines, m, 2] -> y [lines, n]      inverse of a one-sided (Hermitian) spectrum
// Complex values are (re, im) pairs in a trailing dimension of 2, as everywhere in the
// pipeline. An input shorter than the transform is zero-padded (m < n; for irfft the spectrum
// is extended by conjugate symmetry), and only the first k outputs are written: torch.fft's
// `n` and one-sided results. y = scale(0) * DFT(x).
//
// Stockham autosort (no bit reversal): one pass per radix of n, 4, 2, 3 or 5 (exporter/fft.py
// sends only lengths with those factors), between two buffers of the line; with s the product
// of the earlier radices, pass R maps j = b s + k (k < s, j < n/R) as
//   v_r = src[j + r n/R] * w_(s R)^(r k),   v = DFT_R(v),   dst[b s R + k + r s] = v_r.
// twiddles [n - 1, 2], made at export: each pass's w_(s R)^(r k) = exp(-2 pi i r k / (s R)),
// r = 1 .. R-1, k = 0 .. s-1, pass after pass (conjugated for inverse transforms).
// The two buffers of a line (real parts, then imaginary parts): on GPUs, team scratch memory
// (shared memory up to 32 KiB, else level 1), a team takes a line and its threads share each
// pass; on host backends, buffers of the thread's own, which takes kLanes lines and runs each
// butterfly on all of them at once, a loop the compiler vectorises. Defining LAPIS_FFT_TEAMS
// runs the GPU path on host backends too (the tests check it there). Kokkos 3.4-4.x.
#pragma once

#include <Kokkos_Core.hpp>

#include <cstdint>
#include <vector>

namespace lapis {

namespace fft_detail {

enum class Kind { forward, inverse, real_forward, hermitian_inverse };

// The passes of n: radix 4 while it divides, then 2, 3 and 5 (exporter/fft.py radices());
// count 0 if n has another prime factor, which the exporter never sends here.
struct Radices {
  int radix[64];
  int count;
};

inline Radices factor(int64_t n) {
  Radices plan{};
  int64_t rest = n;
  for (const int r : {4, 2, 3, 5}) {
    while (rest % r == 0 && plan.count < 64) {
      plan.radix[plan.count++] = r;
      rest /= r;
    }
  }
  if (rest != 1) plan.count = 0;
  return plan;
}

// DFT_R of v in place; sign -1 forward, +1 inverse.
template <int Sign, class T>
KOKKOS_INLINE_FUNCTION void butterfly2(T* re, T* im) {
  const T r0 = re[0], i0 = im[0];
  re[0] = r0 + re[1];
  im[0] = i0 + im[1];
  re[1] = r0 - re[1];
  im[1] = i0 - im[1];
}

template <int Sign, class T>
KOKKOS_INLINE_FUNCTION void butterfly3(T* re, T* im) {
  const T c = T(-0.5), s = T(Sign) * T(0.86602540378443864676);
  const T tr = re[1] + re[2], ti = im[1] + im[2];
  const T dr = re[1] - re[2], di = im[1] - im[2];
  const T mr = re[0] + c * tr, mi = im[0] + c * ti;
  re[0] += tr;
  im[0] += ti;
  re[1] = mr - s * di;   // m + i s d
  im[1] = mi + s * dr;
  re[2] = mr + s * di;   // m - i s d
  im[2] = mi - s * dr;
}

template <int Sign, class T>
KOKKOS_INLINE_FUNCTION void butterfly4(T* re, T* im) {
  const T ar = re[0] + re[2], ai = im[0] + im[2];
  const T br = re[0] - re[2], bi = im[0] - im[2];
  const T cr = re[1] + re[3], ci = im[1] + im[3];
  const T dr = re[1] - re[3], di = im[1] - im[3];
  // (dr + i di) * (Sign i) = -Sign di + i Sign dr
  const T er = -T(Sign) * di, ei = T(Sign) * dr;
  re[0] = ar + cr;
  im[0] = ai + ci;
  re[1] = br + er;
  im[1] = bi + ei;
  re[2] = ar - cr;
  im[2] = ai - ci;
  re[3] = br - er;
  im[3] = bi - ei;
}

template <int Sign, class T>
KOKKOS_INLINE_FUNCTION void butterfly5(T* re, T* im) {
  const T c1 = T(0.30901699437494742410), c2 = T(-0.80901699437494742410);
  const T s1 = T(Sign) * T(0.95105651629515357212), s2 = T(Sign) * T(0.58778525229247312917);
  const T t1r = re[1] + re[4], t1i = im[1] + im[4], d1r = re[1] - re[4], d1i = im[1] - im[4];
  const T t2r = re[2] + re[3], t2i = im[2] + im[3], d2r = re[2] - re[3], d2i = im[2] - im[3];
  const T ar = re[0] + c1 * t1r + c2 * t2r, ai = im[0] + c1 * t1i + c2 * t2i;
  const T br = re[0] + c2 * t1r + c1 * t2r, bi = im[0] + c2 * t1i + c1 * t2i;
  const T pr = s1 * d1r + s2 * d2r, pi = s1 * d1i + s2 * d2i;   // y1 = a + i p, y4 = a - i p
  const T qr = s2 * d1r - s1 * d2r, qi = s2 * d1i - s1 * d2i;   // y2 = b + i q, y3 = b - i q
  re[0] += t1r + t2r;
  im[0] += t1i + t2i;
  re[1] = ar - pi;
  im[1] = ai + pr;
  re[4] = ar + pi;
  im[4] = ai - pr;
  re[2] = br - qi;
  im[2] = bi + qr;
  re[3] = br + qi;
  im[3] = bi - qr;
}

template <int R, int Sign, class T>
KOKKOS_INLINE_FUNCTION void butterfly(T* re, T* im) {
  if constexpr (R == 2) butterfly2<Sign>(re, im);
  if constexpr (R == 3) butterfly3<Sign>(re, im);
  if constexpr (R == 4) butterfly4<Sign>(re, im);
  if constexpr (R == 5) butterfly5<Sign>(re, im);
}

// One Stockham pass of radix R over n points by a team, one butterfly j = b s + k a thread:
// src and dst hold the real parts in [0, n) and the imaginary parts in [n, 2n);
// twiddles(offset + (r - 1) s + k) = w_(s R)^(r k) are this pass's, contiguous in k.
template <int R, int Sign, class Member, class Buffer, class Twiddles>
KOKKOS_INLINE_FUNCTION void pass(const Member& team, const Buffer& src, const Buffer& dst,
                                 const Twiddles& twiddles, const int n, const int s,
                                 const int offset) {
  using T = typename Buffer::non_const_value_type;
  const int quarter = n / R;
  Kokkos::parallel_for(Kokkos::TeamThreadRange(team, quarter), [&](const int j) {
    const int b = j / s, k = j - b * s, out = b * s * R + k;
    T re[R], im[R];
    re[0] = src(j);
    im[0] = src(n + j);
    for (int r = 1; r < R; ++r) {
      const T xr = src(j + r * quarter), xi = src(n + j + r * quarter);
      const int w = offset + (r - 1) * s + k;
      const T wr = twiddles(w, 0), wi = T(-Sign) * twiddles(w, 1);   // conjugate if inverse
      re[r] = xr * wr - xi * wi;
      im[r] = xr * wi + xi * wr;
    }
    butterfly<R, Sign>(re, im);
    for (int r = 0; r < R; ++r) {
      dst(out + r * s) = re[r];
      dst(n + out + r * s) = im[r];
    }
  });
}

// The same pass by one host thread on kLanes lines at once: entry i of line l at
// [i kLanes + l], and the butterflies above on Lanes, whose every operation is a loop over
// the lines that the compiler vectorises (one twiddle for all of them).
constexpr int kLanes = 8;

template <class T>
struct Lanes {
  T v[kLanes];
  Lanes() = default;
  KOKKOS_INLINE_FUNCTION Lanes(const T scalar) {
    for (int l = 0; l < kLanes; ++l) v[l] = scalar;
  }
  KOKKOS_INLINE_FUNCTION Lanes operator-() const {
    Lanes out;
    for (int l = 0; l < kLanes; ++l) out.v[l] = -v[l];
    return out;
  }
  KOKKOS_INLINE_FUNCTION Lanes& operator+=(const Lanes& other) {
    for (int l = 0; l < kLanes; ++l) v[l] += other.v[l];
    return *this;
  }
};

#define LAPIS_FFT_LANES_OP(op)                                                    \
  template <class T>                                                            \
  KOKKOS_INLINE_FUNCTION Lanes<T> operator op(const Lanes<T>& a, const Lanes<T>& b) { \
    Lanes<T> out;                                                               \
    for (int l = 0; l < kLanes; ++l) out.v[l] = a.v[l] op b.v[l];               \
    return out;                                                                 \
  }
LAPIS_FFT_LANES_OP(+)
LAPIS_FFT_LANES_OP(-)
LAPIS_FFT_LANES_OP(*)
#undef LAPIS_FFT_LANES_OP

template <int R, int Sign, class T, class Twiddles>
KOKKOS_INLINE_FUNCTION void pass_lanes(const T* src_data, T* dst_data, const Twiddles& twiddles,
                                       const int n, const int s, const int offset) {
  using L = Lanes<T>;
  const L* __restrict__ src = reinterpret_cast<const L*>(src_data);
  L* __restrict__ dst = reinterpret_cast<L*>(dst_data);
  const int quarter = n / R, blocks = n / (s * R);
  for (int b = 0; b < blocks; ++b) {
    for (int k = 0; k < s; ++k) {
      const int j = b * s + k, out = b * s * R + k;
      L re[R], im[R];
      re[0] = src[j];
      im[0] = src[n + j];
      for (int r = 1; r < R; ++r) {
        const int w = offset + (r - 1) * s + k;
        const L wr(twiddles(w, 0)), wi(T(-Sign) * twiddles(w, 1));
        const L xr = src[j + r * quarter], xi = src[n + j + r * quarter];
        re[r] = xr * wr - xi * wi;
        im[r] = xr * wi + xi * wr;
      }
      butterfly<R, Sign>(re, im);
      for (int r = 0; r < R; ++r) {
        dst[out + r * s] = re[r];
        dst[n + out + r * s] = im[r];
      }
    }
  }
}

// Two buffers of kLanes lines for the calling host thread, kept between calls (they only
// grow): host backends only.
template <class T>
inline T* lane_buffers(const size_t size) {
  thread_local std::vector<T> buffers;
  if (buffers.size() < size) buffers.resize(size);
  return buffers.data();
}

// Entry i of the signal of `line` (zero past the given entries), as (re, im).
template <Kind K, class X>
KOKKOS_INLINE_FUNCTION void load(const X& x, const int64_t line, const int i, const int n,
                                 const int given, typename X::non_const_value_type& re,
                                 typename X::non_const_value_type& im) {
  re = 0;
  im = 0;
  if constexpr (K == Kind::real_forward) {
    if (i < given) re = x(line, i);
  } else if constexpr (K == Kind::hermitian_inverse) {
    if (i < given) {
      re = x(line, i, 0);
      im = x(line, i, 1);
    } else if (n - i < given) {   // X[n - i] = conj(X[i]) for a real result
      re = x(line, n - i, 0);
      im = -x(line, n - i, 1);
    }
  } else if (i < given) {
    re = x(line, i, 0);
    im = x(line, i, 1);
  }
}

template <Kind K, class Y, class T>
KOKKOS_INLINE_FUNCTION void store(const Y& y, const int64_t line, const int k, const T re,
                                  const T im) {
  if constexpr (K == Kind::hermitian_inverse) {
    y(line, k) = re;
  } else {
    y(line, k, 0) = re;
    y(line, k, 1) = im;
  }
}

template <Kind K, class ExecutionSpace, class X, class Twiddles, class Scale, class Y>
void run(const ExecutionSpace& space, const char* label, const int n, const X& x,
         const Twiddles& twiddles, const Scale& scale, const Y& y) {
  using T = typename Y::non_const_value_type;
  using team_policy = Kokkos::TeamPolicy<ExecutionSpace>;
  using member = typename team_policy::member_type;
  using buffer = Kokkos::View<T*, typename ExecutionSpace::scratch_memory_space,
                              Kokkos::MemoryTraits<Kokkos::Unmanaged>>;
  constexpr int Sign = (K == Kind::forward || K == Kind::real_forward) ? -1 : 1;
  const int64_t lines = int64_t(x.extent(0));
  const int given = int(x.extent(1)), kept = int(y.extent(1));
  if (lines == 0 || n == 0) return;
  const Radices plan = factor(n);
#ifdef LAPIS_FFT_TEAMS
  constexpr bool host = false;
#else
  constexpr bool host = Kokkos::SpaceAccessibility<ExecutionSpace, Kokkos::HostSpace>::accessible;
#endif
  if constexpr (host) {
    // A range over the groups of lines; each thread's buffers are its own (lane_buffers).
    using range = Kokkos::RangePolicy<ExecutionSpace, Kokkos::IndexType<int64_t>>;
    const int64_t groups = (lines + kLanes - 1) / kLanes;
    Kokkos::parallel_for(label, range(space, 0, groups), [=](const int64_t group) {
      T* src = lane_buffers<T>(4 * size_t(n) * kLanes);
      T* dst = src + 2 * size_t(n) * kLanes;
      const int64_t line0 = group * kLanes;
      const int direct = given < n ? given : n;   // entries read as they are
      for (int l = 0; l < kLanes; ++l) {
        const int64_t line = line0 + l < lines ? line0 + l : lines - 1;   // last group: repeat
        for (int i = 0; i < direct; ++i) {
          if constexpr (K == Kind::real_forward) {
            src[i * kLanes + l] = x(line, i);
            src[(n + i) * kLanes + l] = T(0);
          } else {
            src[i * kLanes + l] = x(line, i, 0);
            src[(n + i) * kLanes + l] = x(line, i, 1);
          }
        }
        for (int i = direct; i < n; ++i)
          load<K>(x, line, i, n, given, src[i * kLanes + l], src[(n + i) * kLanes + l]);
      }
      int s = 1, offset = 0;
      for (int p = 0; p < plan.count; ++p) {
        const int r = plan.radix[p];
        if (r == 4) pass_lanes<4, Sign>(src, dst, twiddles, n, s, offset);
        else if (r == 2) pass_lanes<2, Sign>(src, dst, twiddles, n, s, offset);
        else if (r == 3) pass_lanes<3, Sign>(src, dst, twiddles, n, s, offset);
        else pass_lanes<5, Sign>(src, dst, twiddles, n, s, offset);
        offset += (r - 1) * s;
        s *= r;
        T* const swap = src;
        src = dst;
        dst = swap;
      }
      const T factor = scale(0);
      for (int l = 0; l < kLanes && line0 + l < lines; ++l) {
        for (int k = 0; k < kept; ++k) {
          if constexpr (K == Kind::hermitian_inverse) {
            y(line0 + l, k) = factor * src[k * kLanes + l];
          } else {
            y(line0 + l, k, 0) = factor * src[k * kLanes + l];
            y(line0 + l, k, 1) = factor * src[(n + k) * kLanes + l];
          }
        }
      }
    });
  } else {
    const size_t bytes = 2 * buffer::shmem_size(2 * size_t(n));
    const int level = bytes <= 32768 ? 0 : 1;
    int team_size = 32;
    while (team_size < 256 && team_size * 4 < n) team_size *= 2;
    if (Kokkos::SpaceAccessibility<ExecutionSpace, Kokkos::HostSpace>::accessible)
      team_size = space.concurrency() > 1 ? 2 : 1;   // LAPIS_FFT_TEAMS on host threads
    const auto policy = team_policy(space, int(lines), team_size)
                            .set_scratch_size(level, Kokkos::PerTeam(bytes));
    Kokkos::parallel_for(label, policy, KOKKOS_LAMBDA(const member& team) {
      const int64_t line = team.league_rank();
      buffer first(team.team_scratch(level), 2 * n), second(team.team_scratch(level), 2 * n);
      Kokkos::parallel_for(Kokkos::TeamThreadRange(team, n), [&](const int i) {
        load<K>(x, line, i, n, given, first(i), first(n + i));
      });
      team.team_barrier();
      buffer src = first, dst = second;
      int s = 1, offset = 0;
      for (int p = 0; p < plan.count; ++p) {
        const int r = plan.radix[p];
        if (r == 4) pass<4, Sign>(team, src, dst, twiddles, n, s, offset);
        else if (r == 2) pass<2, Sign>(team, src, dst, twiddles, n, s, offset);
        else if (r == 3) pass<3, Sign>(team, src, dst, twiddles, n, s, offset);
        else pass<5, Sign>(team, src, dst, twiddles, n, s, offset);
        team.team_barrier();
        offset += (r - 1) * s;
        s *= r;
        const buffer swap = src;
        src = dst;
        dst = swap;
      }
      const T factor = scale(0);
      Kokkos::parallel_for(Kokkos::TeamThreadRange(team, kept), [&](const int k) {
        store<K>(y, line, k, factor * src(k), factor * src(n + k));
      });
    });
  }
}

}  // namespace fft_detail

template <class ExecutionSpace, class X, class Twiddles, class Scale, class Y>
void fft(const ExecutionSpace& space, const char* label, const int n, const X& x,
         const Twiddles& twiddles, const Scale& scale, const Y& y) {
  fft_detail::run<fft_detail::Kind::forward>(space, label, n, x, twiddles, scale, y);
}

template <class ExecutionSpace, class X, class Twiddles, class Scale, class Y>
void ifft(const ExecutionSpace& space, const char* label, const int n, const X& x,
          const Twiddles& twiddles, const Scale& scale, const Y& y) {
  fft_detail::run<fft_detail::Kind::inverse>(space, label, n, x, twiddles, scale, y);
}

template <class ExecutionSpace, class X, class Twiddles, class Scale, class Y>
void rfft(const ExecutionSpace& space, const char* label, const int n, const X& x,
          const Twiddles& twiddles, const Scale& scale, const Y& y) {
  fft_detail::run<fft_detail::Kind::real_forward>(space, label, n, x, twiddles, scale, y);
}

template <class ExecutionSpace, class X, class Twiddles, class Scale, class Y>
void irfft(const ExecutionSpace& space, const char* label, const int n, const X& x,
           const Twiddles& twiddles, const Scale& scale, const Y& y) {
  fft_detail::run<fft_detail::Kind::hermitian_inverse>(space, label, n, x, twiddles, scale, y);
}

}  // namespace lapis
