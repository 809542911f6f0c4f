// avg_pool2d: y[n, i, j, c] = 1/d(i, j) sum over the window of x[n, i sh - ph + a, j sw - pw + b,
// c], x (N, H, W, C) channels-last, padded zeros. d = kh kw with count_include_pad (PyTorch's
// default), else the number of window positions inside x. Linear:
//   JVP   dy                      = the same window means of dx
//   VJP   xbar[n, window(i, j), c] += ybar[n, i, j, c] / d(i, j)
// One pass over the windows per rule (each input element read kh kw / (sh sw) times), inner loops
// over the contiguous channels.
#include <amari/autodiff/ops/pool2d.hpp>
#include <amari/autodiff/ops/primitive.hpp>

namespace amari {
namespace ops {

struct AvgPool2d {
  static constexpr const char* name = "avg_pool2d";
  static constexpr int arity = 1;
  static constexpr unsigned saves = save::none;
  static constexpr bool linear = true;
  detail::PoolGeometry g;
  bool count_include_pad = true;

  Shape output_shape(const Shape&) const { return g.output(); }

  template <Real T>
  T inv_divisor(const detail::PoolGeometry::Window& win) const {
    const Index d = count_include_pad ? g.kh * g.kw : (win.a1 - win.a0) * (win.b1 - win.b0);
    return T(1) / static_cast<T>(d);
  }
  template <Real T>
  void pool(const Tensor<T>& x, Tensor<T>& y) const {
    const Index c = g.c;
    g.for_output_rows([&](Index img, Index i) {
      for (Index j = 0; j < g.ow; ++j) {
        const auto win = g.window(i, j);
        T* yo = y.data() + ((img * g.oh + i) * g.ow + j) * c;
        std::fill(yo, yo + c, T(0));
        for (Index a = win.a0; a < win.a1; ++a)
          for (Index b = win.b0; b < win.b1; ++b) {
            const T* xp = x.data() + g.x_at(img, win.h0 + a, win.w0 + b);
            for (Index ch = 0; ch < c; ++ch) yo[ch] += xp[ch];
          }
        const T inv = inv_divisor<T>(win);
        for (Index ch = 0; ch < c; ++ch) yo[ch] *= inv;
      }
    });
  }
  template <Real T>
  void primal(const Tensor<T>& x, Tensor<T>& y) const {
    pool(x, y);
  }
  template <Real T>
  void jvp(const detail::Saved<T, 1>&, const Tensor<T>& dx, Tensor<T>& dy) const {
    pool(dx, dy);
  }
  template <Real T>
  void vjp(const detail::Saved<T, 1>&, const Tensor<T>& ybar, Tensor<T>& xbar, detail::Overwrite ow) const {
    const Index c = g.c;
    // Windows that tile the input reach each element once: a fresh xbar is written in the same
    // pass. Otherwise a fresh xbar is zeroed first and the windows add to it.
    const bool write = ow[0] && g.tiles_input();
    if (ow[0] && !write) xbar.fill(T(0));
    g.for_scatter_rows([&](Index img, Index i) {
      for (Index j = 0; j < g.ow; ++j) {
        const auto win = g.window(i, j);
        const T* yo = ybar.data() + ((img * g.oh + i) * g.ow + j) * c;
        const T inv = inv_divisor<T>(win);
        for (Index a = win.a0; a < win.a1; ++a)
          for (Index b = win.b0; b < win.b1; ++b) {
            T* xp = xbar.data() + g.x_at(img, win.h0 + a, win.w0 + b);
            if (write) {
              for (Index ch = 0; ch < c; ++ch) xp[ch] = yo[ch] * inv;
            } else {
              for (Index ch = 0; ch < c; ++ch) xp[ch] += yo[ch] * inv;
            }
          }
      }
    });
  }
};

}  // namespace ops

template <Value V>
V avg_pool2d(const V& x, const Pool2dOptions& options) {
  detail::require_defined<ops::AvgPool2d>(x);
  return detail::apply(
      ops::AvgPool2d{.g = detail::PoolGeometry::make(ops::AvgPool2d::name, x.shape(), options),
                     .count_include_pad = options.count_include_pad},
      x);
}
#define AMARI_INSTANTIATE(V) template V avg_pool2d<V>(const V&, const Pool2dOptions&);
AMARI_FOR_EACH_VALUE_TYPE(AMARI_INSTANTIATE)
#undef AMARI_INSTANTIATE

}  // namespace amari
