// log: y = ln x, element-wise.
//   JVP   dy        = dx / x
//   VJP   xbar     += ybar / x
//   2nd   xbar_dot += -dx ybar / x^2
#include <amari/autodiff/ops/primitive.hpp>

namespace amari {
namespace ops {

struct Log : detail::UnaryElementwise {
  static constexpr const char* name = "log";
  static constexpr unsigned saves = save::x0;

  template <Real T>
  void primal(const Tensor<T>& x, Tensor<T>& y) const {
    detail::elementwise(y, []<class B>(B x) { return xsimd::log(x); }, x);
  }
  template <Real T>
  void jvp(const detail::Saved<T, 1>& s, const Tensor<T>& dx, Tensor<T>& dy) const {
    detail::elementwise(dy, []<class B>(B x, B dx) { return dx / x; }, s.x[0], dx);
  }
  template <Real T>
  void vjp(const detail::Saved<T, 1>& s, const Tensor<T>& ybar, Tensor<T>& xbar) const {
    detail::accumulate(xbar, []<class B>(B x, B yb) { return yb / x; }, s.x[0], ybar);
  }
  template <Real T>
  void vjp_tangent(const detail::Saved<T, 1>& s, const Tensor<T>& dx, const Tensor<T>&,
                   const Tensor<T>& ybar, Tensor<T>& xbar_dot) const {
    detail::accumulate(xbar_dot, []<class B>(B x, B dx, B yb) { return -dx * yb / (x * x); },
                       s.x[0], dx, ybar);
  }
};

}  // namespace ops

template <Value V>
V log(const V& x) {
  return detail::apply(ops::Log{}, x);
}
#define AMARI_INSTANTIATE(V) template V log<V>(const V&);
AMARI_FOR_EACH_VALUE_TYPE(AMARI_INSTANTIATE)
#undef AMARI_INSTANTIATE

}  // namespace amari
