// Internal: the window geometry max_pool2d and avg_pool2d share (checks, output size, the valid
// part of each window, and the parallel split of their loops).
#pragma once

#include <algorithm>
#include <string>

#include <amari/autodiff/kernels/blocks.hpp>
#include <amari/autodiff/ops.hpp>

namespace amari::detail {

/// The largest kernel extent per axis a pooling accepts. It keeps the window offset a * kw + b
/// (stored as int32 by max_pool2d's argmax) and every window product far from overflow.
inline constexpr Index kMaxPoolKernel = Index{1} << 15;
/// The largest stride per axis (larger strides give one window per axis anyway).
inline constexpr Index kMaxPoolStride = Index{1} << 31;

/// The windows of a 2-D pooling of x (N, H, W, C): output (N, OH, OW, C). With padding <=
/// kernel / 2, OH <= H and OW <= W, so the output is never larger than the input.
struct PoolGeometry {
  Index n = 0, h = 0, w = 0, c = 0, oh = 0, ow = 0;
  Index kh = 1, kw = 1, sh = 1, sw = 1, ph = 0, pw = 0;

  /// Validates x and the options; errors name `op`, the shape and the options.
  static PoolGeometry make(const char* op, const Shape& x, const Pool2dOptions& o) {
    const auto pair = [](const std::array<Index, 2>& a) {
      return "(" + std::to_string(a[0]) + ", " + std::to_string(a[1]) + ")";
    };
    const std::string opts =
        "kernel " + pair(o.kernel) + ", stride " + pair(o.stride) + ", padding " + pair(o.padding);
    if (x.rank() != 4) {
      throw ShapeError(std::string(op) + ": expects x (N, H, W, C), got shape " + x.str());
    }
    for (int a = 0; a < 2; ++a) {
      const Index k = o.kernel[a], s = o.stride[a], p = o.padding[a];
      if (k < 1 || k > kMaxPoolKernel || s < 0 || s > kMaxPoolStride || p < 0 || p > k / 2) {
        throw ValueError(std::string(op) + ": invalid options " + opts + " for x " + x.str() +
                         " (need 1 <= kernel <= " + std::to_string(kMaxPoolKernel) + ", 0 <= stride <= " +
                         std::to_string(kMaxPoolStride) + " (0 = kernel), 0 <= padding <= kernel / 2)");
      }
    }
    PoolGeometry g;
    g.n = x[0], g.h = x[1], g.w = x[2], g.c = x[3];
    g.kh = o.kernel[0], g.kw = o.kernel[1];
    g.sh = o.stride[0] ? o.stride[0] : g.kh, g.sw = o.stride[1] ? o.stride[1] : g.kw;
    g.ph = o.padding[0], g.pw = o.padding[1];
    if (g.h == 0 || g.w == 0 || g.c == 0) {
      throw ShapeError(std::string(op) + ": x " + x.str() +
                       " has an empty height, width or channel axis (each must be >= 1)");
    }
    if (g.kh > g.h + 2 * g.ph || g.kw > g.w + 2 * g.pw) {
      throw ShapeError(std::string(op) + ": " + opts + " does not fit x " + x.str() +
                       ": the window is larger than the padded input");
    }
    g.oh = (g.h + 2 * g.ph - g.kh) / g.sh + 1;
    g.ow = (g.w + 2 * g.pw - g.kw) / g.sw + 1;
    return g;
  }
  Shape output() const { return Shape{n, oh, ow, c}; }

  /// The part of window (i, j) inside the input: rows h0 + [a0, a1), columns w0 + [b0, b1).
  /// Never empty, since padding <= kernel / 2.
  struct Window {
    Index h0, w0, a0, a1, b0, b1;
  };
  Window window(Index i, Index j) const {
    const Index h0 = i * sh - ph, w0 = j * sw - pw;
    return {h0,
            w0,
            std::max<Index>(0, -h0),
            std::min(kh, h - h0),
            std::max<Index>(0, -w0),
            std::min(kw, w - w0)};
  }
  /// True when the windows tile the input: every input element lies in exactly one window
  /// (stride = kernel, no padding, the sizes divisible), so a VJP can write each element once.
  bool tiles_input() const {
    return sh == kh && sw == kw && ph == 0 && pw == 0 && oh * kh == h && ow * kw == w;
  }
  /// Offset of x[img, r, s, 0].
  Index x_at(Index img, Index r, Index s) const { return ((img * h + r) * w + s) * c; }

  /// Elements touched by one pass over every window, for the parallel threshold only: output
  /// size (<= the input's, < 2^48) times the window size (< 2^30), saturated below 2^62.
  Index work() const {
    const Index out = n * oh * ow * c, window = kh * kw;
    return out > (Index{1} << 62) / window ? Index{1} << 62 : out * window;
  }
  /// f(img, i) for every output row; each writes only its own outputs (primal, JVP).
  template <class F>
  void for_output_rows(const F& f) const {
    kernels::parallel_for(n * oh, work(), [&](Index r) { f(r / oh, r % oh); });
  }
  /// f(img, i) for every output row, for rules that scatter into the input (VJP): rows run in
  /// parallel only when their windows cannot overlap (stride >= kernel), else one image per work
  /// item with its rows in order, so every sum has a fixed order.
  template <class F>
  void for_scatter_rows(const F& f) const {
    const Index work = this->work();
    if (sh >= kh) {
      kernels::parallel_for(n * oh, work, [&](Index r) { f(r / oh, r % oh); });
    } else {
      kernels::parallel_for(n, work, [&](Index img) {
        for (Index i = 0; i < oh; ++i) f(img, i);
      });
    }
  }
};

}  // namespace amari::detail
