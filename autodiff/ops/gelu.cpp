// gelu: y = x Phi(x), element-wise, exact form with Phi(x) = (1 + erf(x / sqrt 2)) / 2 and
// phi(x) = e^(-x^2/2) / sqrt(2 pi) (Hendrycks and Gimpel 2016).
//   JVP   dy        = (Phi(x) + x phi(x)) dx
//   VJP   xbar     += (Phi(x) + x phi(x)) ybar
//   2nd   xbar_dot += phi(x) (2 - x^2) dx ybar      (d/dx of Phi + x phi, using phi' = -x phi)
#include <amari/autodiff/ops/primitive.hpp>

namespace amari {
namespace ops {

struct Gelu : detail::UnaryElementwise {
  static constexpr const char* name = "gelu";
  static constexpr unsigned saves = save::x0;

  template <class B>
  static B cdf(B x) {
    return B(0.5) * (B(1) + kernels::erf(x * B(0.70710678118654752440)));
  }
  template <class B>
  static B pdf(B x) {
    return B(0.39894228040143267794) * kernels::exp(B(-0.5) * x * x);
  }
  template <Real T>
  void primal(const Tensor<T>& x, Tensor<T>& y) const {
    detail::elementwise(y, []<class B>(B x) { return x * cdf(x); }, x);
  }
  template <Real T>
  void jvp(const detail::Saved<T, 1>& s, const Tensor<T>& dx, Tensor<T>& dy) const {
    detail::elementwise(dy, []<class B>(B x, B dx) { return (cdf(x) + x * pdf(x)) * dx; }, s.x[0], dx);
  }
  template <Real T>
  void vjp(const detail::Saved<T, 1>& s, const Tensor<T>& ybar, Tensor<T>& xbar) const {
    detail::accumulate(xbar, []<class B>(B x, B yb) { return (cdf(x) + x * pdf(x)) * yb; }, s.x[0], ybar);
  }
  template <Real T>
  void vjp_tangent(const detail::Saved<T, 1>& s, const Tensor<T>& dx, const Tensor<T>&,
                   const Tensor<T>& ybar, Tensor<T>& xbar_dot) const {
    detail::accumulate(
        xbar_dot, []<class B>(B x, B dx, B yb) { return pdf(x) * (B(2) - x * x) * dx * yb; }, s.x[0], dx, ybar);
  }
};

}  // namespace ops

template <Value V>
V gelu(const V& x) {
  return detail::apply(ops::Gelu{}, x);
}
#define AMARI_INSTANTIATE(V) template V gelu<V>(const V&);
AMARI_FOR_EACH_VALUE_TYPE(AMARI_INSTANTIATE)
#undef AMARI_INSTANTIATE

}  // namespace amari
