// square: y = x^2, element-wise.
//   JVP   dy        = 2 x dx
//   VJP   xbar     += 2 x ybar
//   2nd   xbar_dot += 2 dx ybar
#include <amari/autodiff/ops/primitive.hpp>

namespace amari {
namespace ops {

struct Square : detail::UnaryElementwise {
  static constexpr const char* name = "square";
  static constexpr unsigned saves = save::x0;

  template <Real T>
  void primal(const Tensor<T>& x, Tensor<T>& y) const {
    detail::elementwise(y, []<class B>(B x) { return x * x; }, x);
  }
  template <Real T>
  void jvp(const detail::Saved<T, 1>& s, const Tensor<T>& dx, Tensor<T>& dy) const {
    detail::elementwise(dy, []<class B>(B x, B dx) { return B(2) * x * dx; }, s.x[0], dx);
  }
  template <Real T>
  void vjp(const detail::Saved<T, 1>& s, const Tensor<T>& ybar, Tensor<T>& xbar) const {
    detail::accumulate(xbar, []<class B>(B x, B yb) { return B(2) * x * yb; }, s.x[0], ybar);
  }
  template <Real T>
  void vjp_tangent(const detail::Saved<T, 1>&, const Tensor<T>& dx, const Tensor<T>&,
                   const Tensor<T>& ybar, Tensor<T>& xbar_dot) const {
    detail::accumulate(xbar_dot, []<class B>(B dx, B yb) { return B(2) * dx * yb; }, dx, ybar);
  }
};

}  // namespace ops

template <Value V>
V square(const V& x) {
  return detail::apply(ops::Square{}, x);
}
#define AMARI_INSTANTIATE(V) template V square<V>(const V&);
AMARI_FOR_EACH_VALUE_TYPE(AMARI_INSTANTIATE)
#undef AMARI_INSTANTIATE

}  // namespace amari
