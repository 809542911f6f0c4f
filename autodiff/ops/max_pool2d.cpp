// max_pool2d: y[n, i, j, c] = max over the window (a, b) of x[n, i sh - ph + a, j sw - pw + b, c],
// x (N, H, W, C) channels-last, padding as -inf (only the part of a window inside x is read).
// Piecewise linear: with k* the first maximal window position (row-major; the first NaN if any),
//   JVP   dy[n, i, j, c]         = dx[n, at k*, c]
//   VJP   xbar[n, at k*, c]     += ybar[n, i, j, c]
//   2nd   nothing (zero second derivative wherever the max is unique)
// relu_max_pool2d(x) = max_pool2d(relu(x)) in one pass: since relu is monotone,
// max_k relu(x_k) = relu(max_k x_k), so y = relu(m) for the window maximum m, and the derivative is
// max_pool2d's where m > 0 and 0 elsewhere (relu's [x > 0] at the maximum; 0 at the kink, as relu).
// Encoded as k* = -1, which no window position matches, so both use the same JVP and VJP loops. The
// values and derivatives are those of relu followed by max_pool2d, bit for bit: a NaN in a window
// gives NaN (relu passes it, the max picks it) with derivative 0 (relu's [y > 0] is false), and a
// window of non-positive values gives +0 with derivative 0. It saves relu's pass over the (larger)
// input and its VJP's pass, and never stores relu's output (nn::Sequential uses it for a ReLU
// followed by a MaxPool2d).
// Residual: k* for every output element (int32, one per element of y), written by the primal when
// the result is a Dual or a Var (the op struct holds it; the tape's copy shares it). Plain
// evaluation skips it. So the primal is one pass over the windows, and the rules one pass over the
// windows selecting k*: no rule reads x again. Channels are contiguous: every inner loop runs over
// c. 2 x 2 windows that tile the input, with whole SIMD vectors of channels, have their own paths
// (primal_quad, jvp_quad, vjp_quad: the same bits, measured 4x faster).
#include <algorithm>
#include <array>
#include <limits>
#include <memory>

#include <amari/autodiff/ops/pool2d.hpp>
#include <amari/autodiff/ops/primitive.hpp>

namespace amari {
namespace ops {

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
  // W stored k* as a batch of T (exact: k* is -1..3 here).
  template <Real T>
  static xsimd::batch<T> load_k(const std::int32_t* at) {
    using B = xsimd::batch<T>;
    if constexpr (sizeof(T) == 4) {
      return xsimd::batch_cast<T>(xsimd::batch<std::int32_t>::load_unaligned(at));
    } else {
      alignas(64) T lanes[B::size];
      for (std::size_t l = 0; l < B::size; ++l) lanes[l] = static_cast<T>(at[l]);
      return B::load_aligned(lanes);
    }
  }
  template <Real T>
  static void store_k(const xsimd::batch<T>& k, std::int32_t* at) {
    if constexpr (sizeof(T) == 4) {
      xsimd::batch_cast<std::int32_t>(k).store_unaligned(at);
    } else {
      alignas(64) T lanes[xsimd::batch<T>::size];
      k.store_aligned(lanes);
      for (std::size_t l = 0; l < xsimd::batch<T>::size; ++l) at[l] = static_cast<std::int32_t>(lanes[l]);
    }
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

}  // namespace ops

namespace {
template <class Op, Value V>
V apply_max_pool(const V& x, const Pool2dOptions& options) {
  detail::require_defined<Op>(x);
  Op op;
  op.g = detail::PoolGeometry::make(Op::name, x.shape(), options);
  if constexpr (!std::is_same_v<V, Tensor<typename V::value_type>>) {
    op.argmax = std::make_shared<typename Op::Argmax>();
  }
  return detail::apply(op, x);
}
}  // namespace

template <Value V>
V max_pool2d(const V& x, const Pool2dOptions& options) {
  return apply_max_pool<ops::MaxPool2d>(x, options);
}
template <Value V>
V relu_max_pool2d(const V& x, const Pool2dOptions& options) {
  return apply_max_pool<ops::ReluMaxPool2d>(x, options);
}
#define AMARI_INSTANTIATE(V)                              \
  template V max_pool2d<V>(const V&, const Pool2dOptions&); \
  template V relu_max_pool2d<V>(const V&, const Pool2dOptions&);
AMARI_FOR_EACH_VALUE_TYPE(AMARI_INSTANTIATE)
#undef AMARI_INSTANTIATE

}  // namespace amari
