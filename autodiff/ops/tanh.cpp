// tanh: y = tanh(x), element-wise.
//   JVP   dy        = (1 - y^2) dx
//   VJP   xbar     += (1 - y^2) ybar
//   2nd   xbar_dot += -2 y dy ybar        (d/de of (1 - y^2) ybar; dy = (1 - y^2) dx)
// Only y is saved: both rules are functions of the output.
#include <amari/autodiff/ops/primitive.hpp>

namespace amari {
namespace ops {

struct Tanh : detail::UnaryElementwise {
  static constexpr const char* name = "tanh";
  static constexpr unsigned saves = save::y;

  template <Real T>
  void primal(const Tensor<T>& x, Tensor<T>& y) const {
    detail::elementwise(y, []<class B>(B x) { return kernels::tanh(x); }, x);
  }
  template <Real T>
  void jvp(const detail::Saved<T, 1>& s, const Tensor<T>& dx, Tensor<T>& dy) const {
    detail::elementwise(dy, []<class B>(B y, B dx) { return (B(1) - y * y) * dx; }, s.y, dx);
  }
  template <Real T>
  void vjp(const detail::Saved<T, 1>& s, const Tensor<T>& ybar, Tensor<T>& xbar, detail::Overwrite ow) const {
    detail::assign_or_accumulate(ow[0], xbar, []<class B>(B y, B yb) { return (B(1) - y * y) * yb; }, s.y, ybar);
  }
  template <Real T>
  void vjp_tangent(const detail::Saved<T, 1>& s, const Tensor<T>&, const Tensor<T>& dy,
                   const Tensor<T>& ybar, Tensor<T>& xbar_dot) const {
    detail::accumulate(xbar_dot, []<class B>(B y, B dy, B yb) { return B(-2) * y * dy * yb; }, s.y, dy, ybar);
  }
};

}  // namespace ops

template <Value V>
V tanh(const V& x) {
  return detail::apply(ops::Tanh{}, x);
}
#define AMARI_INSTANTIATE(V) template V tanh<V>(const V&);
AMARI_FOR_EACH_VALUE_TYPE(AMARI_INSTANTIATE)
#undef AMARI_INSTANTIATE

}  // namespace amari
