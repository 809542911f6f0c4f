// softplus: y = log(1 + e^x), element-wise, computed as max(x, 0) + log1p(e^-|x|): e^-|x| <= 1
// never overflows, so y is finite for every finite x (x = 1e4 gives 1e4, x = -1e4 gives 0).
//   JVP   dy        = s dx,             s = sigmoid(x)
//   VJP   xbar     += s ybar
//   2nd   xbar_dot += s (1 - s) dx ybar
#include <amari/autodiff/ops/primitive.hpp>

namespace amari {
namespace ops {

struct Softplus : detail::UnaryElementwise {
  static constexpr const char* name = "softplus";
  static constexpr unsigned saves = save::x0;

  template <class B>
  static B sigmoid(B x) {
    return B(1) / (B(1) + kernels::exp(-x));
  }
  template <Real T>
  void primal(const Tensor<T>& x, Tensor<T>& y) const {
    detail::elementwise(
        y, []<class B>(B x) { return xsimd::max(x, B(0)) + xsimd::log1p(kernels::exp(-xsimd::abs(x))); }, x);
  }
  template <Real T>
  void jvp(const detail::Saved<T, 1>& s, const Tensor<T>& dx, Tensor<T>& dy) const {
    detail::elementwise(dy, []<class B>(B x, B dx) { return sigmoid(x) * dx; }, s.x[0], dx);
  }
  template <Real T>
  void vjp(const detail::Saved<T, 1>& s, const Tensor<T>& ybar, Tensor<T>& xbar) const {
    detail::accumulate(xbar, []<class B>(B x, B yb) { return sigmoid(x) * yb; }, s.x[0], ybar);
  }
  template <Real T>
  void vjp_tangent(const detail::Saved<T, 1>& s, const Tensor<T>& dx, const Tensor<T>&,
                   const Tensor<T>& ybar, Tensor<T>& xbar_dot) const {
    detail::accumulate(
        xbar_dot,
        []<class B>(B x, B dx, B yb) {
          const B p = sigmoid(x);
          return p * (B(1) - p) * dx * yb;
        },
        s.x[0], dx, ybar);
  }
};

}  // namespace ops

template <Value V>
V softplus(const V& x) {
  return detail::apply(ops::Softplus{}, x);
}
#define AMARI_INSTANTIATE(V) template V softplus<V>(const V&);
AMARI_FOR_EACH_VALUE_TYPE(AMARI_INSTANTIATE)
#undef AMARI_INSTANTIATE

}  // namespace amari
