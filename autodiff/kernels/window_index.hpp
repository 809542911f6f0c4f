// Internal: a max pooling's stored selection k* (the window position of each output element's
// maximum, int32, one per element) moved to and from SIMD batches of T, for the loops that select
// with it (ops/max_pool2d.hpp, kernels/conv_pool.cpp). Exact: k* is a small integer there.
#pragma once

#include <cstddef>
#include <cstdint>

#include <xsimd/xsimd.hpp>

namespace amari::kernels {

/// W = batch<T>::size stored k* values as a batch of T.
template <class T>
xsimd::batch<T> load_window_index(const std::int32_t* at) {
  using B = xsimd::batch<T>;
  if constexpr (sizeof(T) == 4) {
    return xsimd::batch_cast<T>(xsimd::batch<std::int32_t>::load_unaligned(at));
  } else {
    alignas(64) T lanes[B::size];
    for (std::size_t l = 0; l < B::size; ++l) lanes[l] = static_cast<T>(at[l]);
    return B::load_aligned(lanes);
  }
}

/// A batch of T holding k* values, stored as W int32 values.
template <class T>
void store_window_index(const xsimd::batch<T>& k, std::int32_t* at) {
  if constexpr (sizeof(T) == 4) {
    xsimd::batch_cast<std::int32_t>(k).store_unaligned(at);
  } else {
    alignas(64) T lanes[xsimd::batch<T>::size];
    k.store_aligned(lanes);
    for (std::size_t l = 0; l < xsimd::batch<T>::size; ++l) at[l] = static_cast<std::int32_t>(lanes[l]);
  }
}

}  // namespace amari::kernels
