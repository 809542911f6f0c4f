// Internal: zero-padded copies of channels-last images, the source of the direct convolution
// kernels (kernels/conv.cpp, conv_pool.cpp, conv_pool_selected.cpp), and the way back for an
// adjoint computed on padded images.
#pragma once

#include <algorithm>

#include <amari/autodiff/shape.hpp>

namespace amari::kernels {

/// Copies images [0, count) of src (h, w, c) into dst (hp, wp, c) at row offset `top` and column
/// offset `left`, zero elsewhere; source rows or columns falling outside dst are dropped (padding
/// beyond what any window reaches is never materialized).
template <class T>
void pad_images(const T* src, Index count, Index h, Index w, Index c, Index top, Index left,
                Index hp, Index wp, T* dst) {
  const Index col_lo = std::max<Index>(0, left), col_hi = std::min(wp, left + w);
  for (Index n = 0; n < count; ++n, src += h * w * c) {
    for (Index r = 0; r < hp; ++r, dst += wp * c) {
      const Index sr = r - top;
      if (sr < 0 || sr >= h || col_lo >= col_hi) {
        std::fill(dst, dst + wp * c, T(0));
        continue;
      }
      std::fill(dst, dst + col_lo * c, T(0));
      std::copy(src + (sr * w + col_lo - left) * c, src + (sr * w + col_hi - left) * c,
                dst + col_lo * c);
      std::fill(dst + col_hi * c, dst + wp * c, T(0));
    }
  }
}

/// The adjoint of pad_images: dst (h, w, c) = or += the part of src (hp, wp, c) at row offset
/// `top` and column offset `left`, for images [0, count); source pixels outside src (never
/// reached by a window) contribute 0.
template <class T>
void unpad_images(const T* src, Index count, Index h, Index w, Index c, Index top, Index left,
                  Index hp, Index wp, T* dst, bool accumulate) {
  const Index col_lo = std::max<Index>(0, left), col_hi = std::min(wp, left + w);
  for (Index n = 0; n < count; ++n, src += hp * wp * c) {
    for (Index sr = 0; sr < h; ++sr, dst += w * c) {
      if (!accumulate) std::fill(dst, dst + w * c, T(0));
      const Index r = sr + top;
      if (r < 0 || r >= hp || col_lo >= col_hi) continue;
      const T* s = src + (r * wp + col_lo) * c;
      T* d = dst + (col_lo - left) * c;
      for (Index i = 0; i < (col_hi - col_lo) * c; ++i) d[i] += s[i];
    }
  }
}

}  // namespace amari::kernels
