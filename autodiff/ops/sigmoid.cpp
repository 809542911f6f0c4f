// sigmoid: y = 1 / (1 + e^-x), element-wise.
//   JVP   dy        = y (1 - y) dx
//   VJP   xbar     += y (1 - y) ybar
//   2nd   xbar_dot += (1 - 2y) dy ybar     (d/de of y (1 - y) ybar; dy = y (1 - y) dx)
// For x -> -inf, e^-x overflows to +inf and y = 1/inf = 0 exactly: no NaN at extreme logits.
#include <amari/autodiff/ops/primitive.hpp>

namespace amari {
namespace ops {

struct Sigmoid : detail::UnaryElementwise {
  static constexpr const char* name = "sigmoid";
  static constexpr unsigned saves = save::y;

  template <Real T>
  void primal(const Tensor<T>& x, Tensor<T>& y) const {
    detail::elementwise(y, []<class B>(B x) { return B(1) / (B(1) + kernels::exp(-x)); }, x);
  }
  template <Real T>
  void jvp(const detail::Saved<T, 1>& s, const Tensor<T>& dx, Tensor<T>& dy) const {
    detail::elementwise(dy, []<class B>(B y, B dx) { return y * (B(1) - y) * dx; }, s.y, dx);
  }
  template <Real T>
  void vjp(const detail::Saved<T, 1>& s, const Tensor<T>& ybar, Tensor<T>& xbar) const {
    detail::accumulate(xbar, []<class B>(B y, B yb) { return y * (B(1) - y) * yb; }, s.y, ybar);
  }
  template <Real T>
  void vjp_tangent(const detail::Saved<T, 1>& s, const Tensor<T>&, const Tensor<T>& dy,
                   const Tensor<T>& ybar, Tensor<T>& xbar_dot) const {
    detail::accumulate(xbar_dot, []<class B>(B y, B dy, B yb) { return (B(1) - B(2) * y) * dy * yb; },
                       s.y, dy, ybar);
  }
};

}  // namespace ops

template <Value V>
V sigmoid(const V& x) {
  return detail::apply(ops::Sigmoid{}, x);
}
#define AMARI_INSTANTIATE(V) template V sigmoid<V>(const V&);
AMARI_FOR_EACH_VALUE_TYPE(AMARI_INSTANTIATE)
#undef AMARI_INSTANTIATE

}  // namespace amari
