// lapis-export convolution vocabulary, shipped into every exported package (src/lapis/): the
// packed weight block, where an output starts from (ConvInit), the geometry of a call
// (ConvGeometry) and the folded ReLU. Every convolution header includes it; any backend.
#pragma once

#include <Kokkos_Core.hpp>

#include <cstdint>

namespace lapis {

// Output channels per packed weight block: the vector lanes of the convolution micro-kernel.
inline constexpr int conv_channel_block = 8;

// Where a convolution's output starts from, and what is applied to it at the end (the ops the
// lowering folded into the call): out = epilogue(init + sum).
enum class ConvInit : int { accumulate, bias, zero };  // start from out, from bias[oc], or from 0

struct ConvGeometry {
  int64_t stride_h, stride_w, dilation_h, dilation_w;
  int64_t pad_h, pad_w;  // zero padding (top, left) read around an unpadded input
};

namespace detail {
template <class T>
KOKKOS_FORCEINLINE_FUNCTION T relu(T v) {
  return !(v <= T(0)) ? v : T(0);  // NaN stays NaN, as in the model
}
}  // namespace detail

}  // namespace lapis
