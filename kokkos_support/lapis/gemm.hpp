// lapis-export dense matrix products, shipped into every exported package (src/lapis/).
// The generated code calls lapis::matmul for linalg.matmul and lapis::batch_matmul for
// linalg.batch_matmul (exporter/lowering/matmul.py): C = A B, or C += A B, for Views of float
// or double of any layout; and, on host backends, lapis::linear_packed for linear layers
// (exporter/lowering/linear.py): y = activation(start + x W^T) with W packed at export.
// Host backends (views with unit column stride): the packed, register-blocked kernel of
// gemm_host.hpp (AVX-512F, AVX2+FMA or baseline x86-64, picked at run time). Other backends
// (and views of other strides): one thread per element of C, the dot product in order over K.
// LAPIS_GEMM_PORTABLE picks the portable version on host backends too (for tests).
// --precision bf16 (float, host backends): matmul / batch_matmul<execution_space,
// Precision::bf16> and linear layers whose packed weight is bfloat16 round both operands to
// bfloat16 and sum in float (gemm_host.hpp); the epilogue stays float.
// No fast-math: sums are reordered (blocks of K), contracted to FMA where the target has it.
// Kokkos 3.4-4.x.
#pragma once

#include <Kokkos_Core.hpp>

#include <array>
#include <cstdint>
#include <tuple>
#include <type_traits>

#if (defined(__GNUC__) || defined(__clang__)) && !defined(__NVCC__) && !defined(__CUDACC__) && \
    !defined(__HIPCC__) && !defined(__INTEL_LLVM_COMPILER) && !defined(SYCL_LANGUAGE_VERSION) && \
    !defined(LAPIS_GEMM_PORTABLE)
#define LAPIS_GEMM_HOST_TILES 1
#if defined(__x86_64__)
#define LAPIS_GEMM_X86 1
#endif
#endif

#include "gemm_host.hpp"

namespace lapis {

// Where C starts from: what it holds (linalg.matmul's own semantics) or zero (a zero fill
// before the product, folded into the call).
enum class MatmulInit : int { accumulate, zero };

namespace gemm_detail {
// A View's data as `const T*` where its elements are T, else nullptr.
template <class T, class View>
const T* data_if(const View& v) {
  if constexpr (std::is_same<typename View::non_const_value_type, T>::value) return v.data();
  else return nullptr;
}

// C[b] = A[b] B[b] (or +=) for `batch` products of `rows` x `depth` by `depth` x `columns`;
// `at(view, b, i, j)` reads element (i, j) of product b, `strides` gives (batch, row, column)
// strides of a View in elements.
template <class ExecutionSpace, class T, class AView, class BView, class CView, class At,
          class Strides>
void batched(const ExecutionSpace& space, const char* label,
             const AView& a, const BView& b, const CView& c,
             const int64_t batch, const int64_t rows, const int64_t columns,
             const int64_t depth, const MatmulInit init, At at, Strides strides,
             const bool bf16) {
  const bool accumulate = init == MatmulInit::accumulate;
  if (batch == 0 || rows == 0 || columns == 0) return;
#if defined(LAPIS_GEMM_HOST_TILES)
  if constexpr (Kokkos::SpaceAccessibility<ExecutionSpace, Kokkos::HostSpace>::accessible &&
                (std::is_same<T, float>::value || std::is_same<T, double>::value)) {
    const auto sa = strides(a), sb = strides(b), sc = strides(c);
    if (sa[2] == 1 && sb[2] == 1 && sc[2] == 1) {
      const gemm_host::Product<T> p{a.data(), sa[1], b.data(), sb[1], false, c.data(), sc[1],
                                    rows, columns, depth,
                                    accumulate ? ConvInit::accumulate : ConvInit::zero,
                                    nullptr, nullptr, 0, false, Activation::none, bf16};
      gemm_host::run(space, label, p, batch, sa[0], sb[0], sc[0], 0);
      return;
    }
  }
#endif
  (void)strides;
  // One thread per element of C, consecutive threads along a row (coalesced B and C).
  using range = Kokkos::RangePolicy<ExecutionSpace, Kokkos::IndexType<int64_t>>;
  const int64_t per_product = rows * columns;
  Kokkos::parallel_for(label, range(space, 0, batch * per_product), KOKKOS_LAMBDA(const int64_t e) {
    const int64_t product = e / per_product, i = e % per_product / columns, j = e % columns;
    T sum = accumulate ? T(at(c, product, i, j)) : T(0);
    (void)bf16, (void)depth, (void)a, (void)b;   // nvcc 13: no first capture in if constexpr
    if constexpr (std::is_same<T, float>::value) {
      if (bf16) {
        for (int64_t k = 0; k < depth; ++k)
          sum += gemm_host::round_bf16(at(a, product, i, k)) *
                 gemm_host::round_bf16(at(b, product, k, j));
        at(c, product, i, j) = sum;
        return;
      }
    }
    for (int64_t k = 0; k < depth; ++k) sum += at(a, product, i, k) * at(b, product, k, j);
    at(c, product, i, j) = sum;
  });
}

struct Strides2 {
  template <class View>
  std::array<int64_t, 3> operator()(const View& v) const {
    return {0, int64_t(v.stride(0)), int64_t(v.stride(1))};
  }
};
struct Strides3 {
  template <class View>
  std::array<int64_t, 3> operator()(const View& v) const {
    return {int64_t(v.stride(0)), int64_t(v.stride(1)), int64_t(v.stride(2))};
  }
};
struct At2 {
  template <class View>
  KOKKOS_INLINE_FUNCTION auto& operator()(const View& v, int64_t, int64_t i, int64_t j) const {
    return v(i, j);
  }
};
struct At3 {
  template <class View>
  KOKKOS_INLINE_FUNCTION auto& operator()(const View& v, int64_t b, int64_t i, int64_t j) const {
    return v(b, i, j);
  }
};
}  // namespace gemm_detail

// C = A B (init zero) or C += A B (init accumulate), for A [M, K], B [K, N], C [M, N];
// Precision::bf16: float operands rounded to bfloat16, float sums.
template <class ExecutionSpace, Precision precision = Precision::fp32, class AView, class BView,
          class CView>
void matmul(const ExecutionSpace& space, const char* label,
            const AView& a, const BView& b, const CView& c,
            const MatmulInit init) {
  using T = typename CView::non_const_value_type;
  gemm_detail::batched<ExecutionSpace, T>(space, label, a, b, c, 1, int64_t(c.extent(0)),
                                          int64_t(c.extent(1)), int64_t(a.extent(1)), init,
                                          gemm_detail::At2{}, gemm_detail::Strides2{},
                                          precision == Precision::bf16);
}

// The same for each of a batch: C[b] = A[b] B[b] (or +=), A [L, M, K], B [L, K, N], C [L, M, N].
template <class ExecutionSpace, Precision precision = Precision::fp32, class AView, class BView,
          class CView>
void batch_matmul(const ExecutionSpace& space, const char* label,
                  const AView& a, const BView& b, const CView& c,
                  const MatmulInit init) {
  using T = typename CView::non_const_value_type;
  gemm_detail::batched<ExecutionSpace, T>(space, label, a, b, c, int64_t(c.extent(0)),
                                          int64_t(c.extent(1)), int64_t(c.extent(2)),
                                          int64_t(a.extent(2)), init, gemm_detail::At3{},
                                          gemm_detail::Strides3{}, precision == Precision::bf16);
}

// Where a linear layer's residual is added: to the sum before its activation (a residual
// connection folded into the layer, then ReLU) or to the activation's result (x + f(x W^T)).
enum class ResidualAt : int { before_activation, after_activation };

// A linear layer on host backends: y[m][n] = activation(start + sum over k of x[m][k] W[n][k])
// (+ residual[m][n], before or after the activation), start = bias[n] (ConvInit::bias), 0
// (zero) or y[m][n] (accumulate). `w` is the layer's weight packed at export
// (tuned_ops.pack_linear_weight): [ceil(N / P)][K][P], P = gemm_host::panel_width<T>, columns
// past N zero; or, --precision bf16, in bfloat16 (pack_linear_weight_bf16: the same extents,
// rows in pairs), x then rounded to bfloat16 too. x, y (and residual) rank 2, or rank 4 with trailing extents 1 (a linear layer
// run as a 1x1 convolution's operands); `residual` may be an empty View.
template <class ExecutionSpace, class Input, class Weight, class Bias, class Residual,
          class Output>
void linear_packed(const ExecutionSpace& space, const char* label, const Input& x,
                   const Weight& w, const Bias& bias, const Residual& residual,
                   const Output& y, const ConvInit init, const Activation activation,
                   const ResidualAt residual_at = ResidualAt::before_activation) {
  using T = typename Output::non_const_value_type;
  using W = typename Weight::non_const_value_type;
  constexpr bool bf16 = std::is_same<W, bfloat16>::value;
  const int64_t rows = y.extent(0), columns = y.extent(1), depth = x.extent(1);
  if (rows == 0 || columns == 0) return;
  const bool with_residual = residual.data() != nullptr;
  const bool after = residual_at == ResidualAt::after_activation;
#if defined(LAPIS_GEMM_HOST_TILES)
  if constexpr (Kokkos::SpaceAccessibility<ExecutionSpace, Kokkos::HostSpace>::accessible &&
                (std::is_same<T, float>::value || std::is_same<T, double>::value)) {
    if (x.stride(1) == 1 && y.stride(1) == 1 && (!with_residual || residual.stride(1) == 1)) {
      const gemm_host::Product<T> p{x.data(), int64_t(x.stride(0)),
                                    gemm_detail::data_if<T>(w), 0, true,
                                    y.data(), int64_t(y.stride(0)), rows, columns, depth,
                                    init, bias.data(), residual.data(),
                                    with_residual ? int64_t(residual.stride(0)) : 0, after,
                                    activation, bf16, gemm_detail::data_if<bfloat16>(w)};
      gemm_host::run(space, label, p, 1, 0, 0, 0, 0);
      return;
    }
  }
#endif
  // One thread per output, the dot product in order over k.
  (void)bf16;
  const T* const in = x.data();
  const W* const weight = w.data();
  const T* const add = residual.data();
  T* const out = y.data();
  const int64_t ldx = x.stride(0), step_x = x.stride(1), ldy = y.stride(0), step_y = y.stride(1);
  const int64_t ldr = with_residual ? residual.stride(0) : 0;
  const int64_t step_r = with_residual ? residual.stride(1) : 0;
  Kokkos::parallel_for(
      label,
      Kokkos::RangePolicy<ExecutionSpace, Kokkos::IndexType<int64_t>>(space, 0, rows * columns),
      KOKKOS_LAMBDA(const int64_t e) {
        const int64_t m = e / columns, n = e % columns;
        T sum = 0;
        // nvcc 13: no first capture in if constexpr (nor of the constexpr locals)
        (void)depth, (void)in, (void)weight, (void)ldx, (void)step_x;
        if constexpr (std::is_same<W, bfloat16>::value) {
          for (int64_t k = 0; k < depth; ++k)
            sum += gemm_host::round_bf16(in[m * ldx + k * step_x]) *
                   gemm_host::packed_bf16_at(weight, depth, k, n);
        } else {
          constexpr int64_t width = gemm_host::panel_width<T>;
          const W* panel = weight + (n / width) * depth * width + n % width;
          for (int64_t k = 0; k < depth; ++k) sum += in[m * ldx + k * step_x] * panel[k * width];
        }
        T& target = out[m * ldy + n * step_y];
        T value = init == ConvInit::bias         ? T(bias(n)) + sum
                  : init == ConvInit::accumulate ? target + sum
                                                 : sum;
        const T r = add ? add[m * ldr + n * step_r] : T(0);
        if (add && !after) value += r;
        value = activate(activation, value);
        if (add && after) value += r;
        target = value;
      });
}

// The same without a residual.
template <class ExecutionSpace, class Input, class Weight, class Bias, class Output>
void linear_packed(const ExecutionSpace& space, const char* label, const Input& x,
                   const Weight& w, const Bias& bias, const Output& y, const ConvInit init,
                   const Activation activation) {
  using T = typename Output::non_const_value_type;
  linear_packed(space, label, x, w, bias,
                Kokkos::View<const T**, Kokkos::LayoutRight, typename Output::memory_space>(),
                y, init, activation);
}


// One layer of lapis::linear_chain: its weight packed as for linear_packed, its bias (an empty
// View: none) and the activation after it.
template <class Weight, class Bias>
struct ChainLayer {
  Weight weight;
  Bias bias;
  Activation activation;
};

template <class Weight, class Bias>
ChainLayer<Weight, Bias> chain_layer(const Weight& w, const Bias& bias,
                                     const Activation activation) {
  return {w, bias, activation};
}

namespace gemm_detail {
// The layers one after another through Views of their own (backends without the host tiles).
template <class ExecutionSpace, class Input, class Output, class First, class... Rest>
void chain_layers(const ExecutionSpace& space, const char* label, const Input& x,
                  const Output& y, const First& first, const Rest&... rest) {
  const ConvInit init = first.bias.data() ? ConvInit::bias : ConvInit::zero;
  if constexpr (sizeof...(Rest) == 0) {
    linear_packed(space, label, x, first.weight, first.bias, y, init, first.activation);
  } else {
    using T = typename Output::non_const_value_type;
    const int64_t columns = std::get<0>(std::tie(rest...)).weight.extent(1);
    Kokkos::View<T**, Kokkos::LayoutRight, typename Output::memory_space> between(
        Kokkos::view_alloc(Kokkos::WithoutInitializing, "lapis::linear_chain"),
        x.extent(0), columns);
    linear_packed(space, label, x, first.weight, first.bias, between, init, first.activation);
    chain_layers(space, label, between, y, rest...);
  }
}
}  // namespace gemm_detail

// Consecutive linear layers, x -> layer 1 -> ... -> y, each y_l = activation_l(bias_l + y_{l-1}
// W_l^T) (from zero without a bias): on host backends one pass of gemm_host::chain (each block
// of rows through every layer while its activations are in cache, one parallel_for); else
// linear_packed a layer at a time. x and y as for linear_packed; layer l's N is the next
// layer's K (its packed weight's extent 1), the last one's y's extent 1.
template <class ExecutionSpace, class Input, class Output, class... Layers>
void linear_chain(const ExecutionSpace& space, const char* label, const Input& x,
                  const Output& y, const Layers&... layers) {
  using T = typename Output::non_const_value_type;
  constexpr size_t count = sizeof...(Layers);
  const int64_t rows = y.extent(0);
  if (rows == 0) return;
#if defined(LAPIS_GEMM_HOST_TILES)
  if constexpr (Kokkos::SpaceAccessibility<ExecutionSpace, Kokkos::HostSpace>::accessible &&
                (std::is_same<T, float>::value || std::is_same<T, double>::value)) {
    if (x.stride(1) == 1 && y.stride(1) == 1) {
      const std::array<int64_t, count + 1> depths{int64_t(layers.weight.extent(1))...,
                                                  int64_t(y.extent(1))};
      std::array<gemm_host::ChainLayer<T>, count> host{
          gemm_host::ChainLayer<T>{gemm_detail::data_if<T>(layers.weight), layers.bias.data(),
                                   0, layers.activation,
                                   gemm_detail::data_if<bfloat16>(layers.weight)}...};
      for (size_t l = 0; l < count; ++l) host[l].columns = depths[l + 1];
      gemm_host::chain(space, label, x.data(), int64_t(x.stride(0)), rows, depths[0], host,
                       y.data(), int64_t(y.stride(0)));
      return;
    }
  }
#endif
  gemm_detail::chain_layers(space, label, x, y, layers...);
}

}  // namespace lapis
