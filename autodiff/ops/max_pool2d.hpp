// Internal: the max_pool2d and relu_max_pool2d primitives' definition (their rules are explained
// in ops/max_pool2d.cpp), shared with conv2d_relu_max_pool2d (ops/conv2d_relu_max_pool2d.cpp),
// which pools its convolution with them.
#pragma once

#include <algorithm>
#include <array>
#include <cstdint>
#include <limits>
#include <memory>

#include <amari/autodiff/kernels/window_index.hpp>
#include <amari/autodiff/ops/pool2d.hpp>
#include <amari/autodiff/ops/primitive.hpp>

namespace amari::ops {

template <bool FusedRelu>
struct MaxPool2dImpl {
  static constexpr const char* name = FusedRelu ? "relu_max_pool2d" : "max_pool2d";
  static constexpr int arity = 1;
  static constexpr unsigned saves = save::none;
  detail::PoolGeometry g;
  // Window position k* = a kw + b of each output element (-1: derivative 0, FusedRelu only); null
  // for plain evaluation.
  struct Argmax {
    std::unique_ptr<std::int32_t[]> at;
  };
  std::shared_ptr<Argmax> argmax;

  Shape output_shape(const Shape&) const { return g.output(); }

  template <Real T>
  void primal(const Tensor<T>& x, Tensor<T>& y) const {
    std::int32_t* idx = nullptr;
    if (argmax) {
      argmax->at =
          std::make_unique_for_overwrite<std::int32_t[]>(static_cast<std::size_t>(y.size()));
      idx = argmax->at.get();
    }
    const Index c = g.c;
    constexpr T lowest = -std::numeric_limits<T>::infinity();
    if (quad<T>()) {
      primal_quad(x, y, idx);
      return;
    }
    g.for_output_rows([&](Index img, Index i) {
      for (Index j = 0; j < g.ow; ++j) {
        const auto win = g.window(i, j);
        const Index o = ((img * g.oh + i) * g.ow + j) * c;
        T* __restrict yo = y.data() + o;
        std::int32_t* __restrict ko = idx ? idx + o : nullptr;
        // Starting from -inf with k* at the window's first position, one comparison per position
        // gives the first maximum (-inf itself stays at the first position, a NaN wins once):
        // uniform loops over channels, no copy calls for the first position.
        // Fused with relu: starting from 0 with k* = -1 gives relu(m) for the maximum m directly;
        // only a NaN maximum (relu(NaN) = NaN, derivative 0) needs its k* reset below.
        const auto first = FusedRelu ? std::int32_t{-1} : static_cast<std::int32_t>(win.a0 * g.kw + win.b0);
        for (Index ch = 0; ch < c; ++ch) yo[ch] = FusedRelu ? T(0) : lowest;
        if (ko) {
          for (Index ch = 0; ch < c; ++ch) ko[ch] = first;
        }
        for (Index a = win.a0; a < win.a1; ++a)
          for (Index b = win.b0; b < win.b1; ++b) {
            const T* __restrict xp = x.data() + g.x_at(img, win.h0 + a, win.w0 + b);
            const auto k = static_cast<std::int32_t>(a * g.kw + b);
            if (ko) {
              for (Index ch = 0; ch < c; ++ch) {
                const T v = xp[ch], m = yo[ch];
                const bool better = v > m || (v != v && m == m);
                yo[ch] = better ? v : m;
                ko[ch] = better ? k : ko[ch];
              }
            } else {
              for (Index ch = 0; ch < c; ++ch) {
                const T v = xp[ch], m = yo[ch];
                yo[ch] = (v > m || (v != v && m == m)) ? v : m;
              }
            }
          }
        if (FusedRelu && ko) {
          for (Index ch = 0; ch < c; ++ch) ko[ch] = yo[ch] > T(0) ? ko[ch] : -1;
        }
      }
    });
  }
  // ---- 2 x 2 windows that tile the input, channels in whole vectors ----------------------------
  // The pooling of almost every CNN, train_cnn's two among them. The loops of the general case
  // keep y and k* in memory across a window's positions and run two-vector channel loops per
  // position and pixel: on train_cnn's first pool, (128, 28, 28, 32), 1 thread, the primal took
  // ~1.3 ms against ~0.3 ms for one pass that keeps them in registers. These paths visit the four
  // positions in the same order with the same comparisons and selections, so they give the same
  // bits as the general loops (k* 0, 1, 2, 3 at x offsets 0, C, W C, W C + C from the window's
  // first element).
  template <Real T>
  bool quad() const {
    return g.kh == 2 && g.kw == 2 && g.tiles_input() && g.c % static_cast<Index>(xsimd::batch<T>::size) == 0;
  }
  // f(x offset of the window's first element, y offset) for every output pixel, rows in parallel.
  template <class F>
  void for_each_quad(const F& f) const {
    g.for_output_rows([&](Index img, Index i) {
      for (Index j = 0; j < g.ow; ++j) f(g.x_at(img, 2 * i, 2 * j), ((img * g.oh + i) * g.ow + j) * g.c);
    });
  }
  std::array<Index, 4> quad_offsets() const { return {0, g.c, g.w * g.c, g.w * g.c + g.c}; }
  // W stored k* as a batch of T and back (exact: k* is -1..3 here).
  template <Real T>
  static xsimd::batch<T> load_k(const std::int32_t* at) {
    return kernels::load_window_index<T>(at);
  }
  template <Real T>
  static void store_k(const xsimd::batch<T>& k, std::int32_t* at) {
    kernels::store_window_index<T>(k, at);
  }
  template <Real T>
  void primal_quad(const Tensor<T>& x, Tensor<T>& y, std::int32_t* idx) const {
    using B = xsimd::batch<T>;
    constexpr Index W = B::size;
    const auto off = quad_offsets();
    for_each_quad([&](Index in, Index out) {
      for (Index ch = 0; ch < g.c; ch += W) {
        const T* p = x.data() + in + ch;
        // As the general loop: from -inf with k* = 0 (fused: from 0 with k* = -1), the first
        // maximum wins, a NaN wins once.
        B m(FusedRelu ? T(0) : -std::numeric_limits<T>::infinity());
        B k(FusedRelu ? T(-1) : T(0));
#pragma GCC unroll 4
        for (int q = 0; q < 4; ++q) {
          const B v = B::load_unaligned(p + off[static_cast<std::size_t>(q)]);
          // isnan, not v != v: xsimd's != is the ordered comparison, false for a NaN.
          const auto better = (v > m) | (xsimd::isnan(v) & (m == m));
          m = xsimd::select(better, v, m);
          k = xsimd::select(better, B(static_cast<T>(q)), k);
        }
        m.store_unaligned(y.data() + out + ch);
        if (idx) {
          if (FusedRelu) k = xsimd::select(m > B(T(0)), k, B(T(-1)));  // relu's derivative 0
          store_k(k, idx + out + ch);
        }
      }
    });
  }
  // f(x offset, y offset, k* as a batch of T) for every vector of channels of every output pixel.
  template <Real T, class F>
  void for_each_quad_vector(const std::int32_t* idx, const F& f) const {
    constexpr Index W = xsimd::batch<T>::size;
    for_each_quad([&](Index in, Index out) {
      for (Index ch = 0; ch < g.c; ch += W) f(in + ch, out + ch, load_k<T>(idx + out + ch));
    });
  }
  template <Real T>
  void jvp_quad(const std::int32_t* idx, const Tensor<T>& dx, Tensor<T>& dy) const {
    using B = xsimd::batch<T>;
    const auto off = quad_offsets();
    for_each_quad_vector<T>(idx, [&](Index in, Index out, const B& k) {
      B d(T(0));  // k* = -1 (fused) selects nothing: 0
#pragma GCC unroll 4
      for (int q = 0; q < 4; ++q) {
        d = xsimd::select(k == B(static_cast<T>(q)), B::load_unaligned(dx.data() + in + off[static_cast<std::size_t>(q)]), d);
      }
      d.store_unaligned(dy.data() + out);
    });
  }
  template <Real T>
  void vjp_quad(const std::int32_t* idx, const Tensor<T>& ybar, Tensor<T>& xbar, bool overwrite) const {
    using B = xsimd::batch<T>;
    const auto off = quad_offsets();
    for_each_quad_vector<T>(idx, [&](Index in, Index out, const B& k) {
      const B yb = B::load_unaligned(ybar.data() + out);
#pragma GCC unroll 4
      for (int q = 0; q < 4; ++q) {
        T* xp = xbar.data() + in + off[static_cast<std::size_t>(q)];
        const B term = xsimd::select(k == B(static_cast<T>(q)), yb, B(T(0)));
        (overwrite ? term : B::load_unaligned(xp) + term).store_unaligned(xp);
      }
    });
  }

  // f(x, y, k, c) for every output pixel j of row i of image img and every window position k
  // inside x: x and y point at the pixel's c channels in x (at position k) and y. The rules select,
  // channel by channel, where k is the stored k*: contiguous loops over channels the compiler
  // vectorizes, instead of one index computation per element.
  template <class F>
  void for_each_row_window(Index img, Index i, const F& f) const {
    for (Index j = 0; j < g.ow; ++j) {
      const auto win = g.window(i, j);
      const Index o = ((img * g.oh + i) * g.ow + j) * g.c;
      for (Index a = win.a0; a < win.a1; ++a)
        for (Index b = win.b0; b < win.b1; ++b)
          f(g.x_at(img, win.h0 + a, win.w0 + b), o, static_cast<std::int32_t>(a * g.kw + b));
    }
  }
  template <Real T>
  void jvp(const detail::Saved<T, 1>&, const Tensor<T>& dx, Tensor<T>& dy) const {
    const std::int32_t* idx = argmax->at.get();
    const Index c = g.c;
    if (quad<T>()) {
      jvp_quad(idx, dx, dy);
      return;
    }
    g.for_output_rows([&](Index img, Index i) {
      // Fused: an output whose k* = -1 matches no window position and stays 0.
      if (FusedRelu) std::fill_n(dy.data() + (img * g.oh + i) * g.ow * c, g.ow * c, T(0));
      for_each_row_window(img, i, [&](Index in, Index out, std::int32_t k) {
        const T* __restrict d = dx.data() + in;
        const std::int32_t* __restrict at = idx + out;
        T* __restrict o = dy.data() + out;
        for (Index ch = 0; ch < c; ++ch) o[ch] = at[ch] == k ? d[ch] : o[ch];
      });
    });
  }
  template <Real T>
  void vjp(const detail::Saved<T, 1>&, const Tensor<T>& ybar, Tensor<T>& xbar, detail::Overwrite ow) const {
    const std::int32_t* idx = argmax->at.get();
    const Index c = g.c;
    if (quad<T>()) {  // each input element in one window: written once, or added to once
      vjp_quad(idx, ybar, xbar, ow[0]);
      return;
    }
    if (ow[0] && g.tiles_input()) {
      // Each input element is in one window: written once, ybar at k*, 0 elsewhere.
      g.for_output_rows([&](Index img, Index i) {
        for_each_row_window(img, i, [&](Index in, Index out, std::int32_t k) {
          const T* __restrict y = ybar.data() + out;
          const std::int32_t* __restrict at = idx + out;
          T* __restrict x = xbar.data() + in;
          for (Index ch = 0; ch < c; ++ch) x[ch] = at[ch] == k ? y[ch] : T(0);
        });
      });
      return;
    }
    if (ow[0]) xbar.fill(T(0));  // windows overlap or leave elements out: scatter onto zeros
    // Adding 0 where k is not k* leaves every sum as the scatter of ybar to k* makes it, in the
    // same order (windows by output pixel): the same values, up to the sign of a zero sum.
    g.for_scatter_rows([&](Index img, Index i) {
      for_each_row_window(img, i, [&](Index in, Index out, std::int32_t k) {
        const T* __restrict y = ybar.data() + out;
        const std::int32_t* __restrict at = idx + out;
        T* __restrict x = xbar.data() + in;
        for (Index ch = 0; ch < c; ++ch) x[ch] += at[ch] == k ? y[ch] : T(0);
      });
    });
  }
  template <Real T>
  void vjp_tangent(const detail::Saved<T, 1>&, const Tensor<T>&, const Tensor<T>&, const Tensor<T>&,
                   Tensor<T>&) const {}
};

using MaxPool2d = MaxPool2dImpl<false>;
using ReluMaxPool2d = MaxPool2dImpl<true>;

}  // namespace amari::ops
