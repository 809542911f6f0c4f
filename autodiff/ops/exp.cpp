// exp: y = e^x, element-wise.
//   JVP   dy        = y dx
//   VJP   xbar     += y ybar
//   2nd   xbar_dot += dy ybar             (d/de of y ybar; dy = y dx)
#include <amari/autodiff/ops/primitive.hpp>

namespace amari {
namespace ops {

struct Exp : detail::UnaryElementwise {
  static constexpr const char* name = "exp";
  static constexpr unsigned saves = save::y;

  template <Real T>
  void primal(const Tensor<T>& x, Tensor<T>& y) const {
    detail::elementwise(y, []<class B>(B x) { return kernels::exp(x); }, x);
  }
  template <Real T>
  void jvp(const detail::Saved<T, 1>& s, const Tensor<T>& dx, Tensor<T>& dy) const {
    detail::elementwise(dy, []<class B>(B y, B dx) { return y * dx; }, s.y, dx);
  }
  template <Real T>
  void vjp(const detail::Saved<T, 1>& s, const Tensor<T>& ybar, Tensor<T>& xbar) const {
    detail::accumulate(xbar, []<class B>(B y, B yb) { return y * yb; }, s.y, ybar);
  }
  template <Real T>
  void vjp_tangent(const detail::Saved<T, 1>&, const Tensor<T>&, const Tensor<T>& dy,
                   const Tensor<T>& ybar, Tensor<T>& xbar_dot) const {
    detail::accumulate(xbar_dot, []<class B>(B dy, B yb) { return dy * yb; }, dy, ybar);
  }
};

}  // namespace ops

template <Value V>
V exp(const V& x) {
  return detail::apply(ops::Exp{}, x);
}
#define AMARI_INSTANTIATE(V) template V exp<V>(const V&);
AMARI_FOR_EACH_VALUE_TYPE(AMARI_INSTANTIATE)
#undef AMARI_INSTANTIATE

}  // namespace amari
