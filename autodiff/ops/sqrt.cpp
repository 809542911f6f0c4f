// sqrt: y = sqrt(x), element-wise.
//   JVP   dy        = dx / (2 y)
//   VJP   xbar     += ybar / (2 y)
//   2nd   xbar_dot += -dy ybar / (2 y^2)   (d/de of ybar / (2 y))
// At x = 0 the derivative is +inf (reported as such, not hidden).
#include <amari/autodiff/ops/primitive.hpp>

namespace amari {
namespace ops {

struct Sqrt : detail::UnaryElementwise {
  static constexpr const char* name = "sqrt";
  static constexpr unsigned saves = save::y;

  template <Real T>
  void primal(const Tensor<T>& x, Tensor<T>& y) const {
    detail::elementwise(y, []<class B>(B x) { return xsimd::sqrt(x); }, x);
  }
  template <Real T>
  void jvp(const detail::Saved<T, 1>& s, const Tensor<T>& dx, Tensor<T>& dy) const {
    detail::elementwise(dy, []<class B>(B y, B dx) { return dx / (B(2) * y); }, s.y, dx);
  }
  template <Real T>
  void vjp(const detail::Saved<T, 1>& s, const Tensor<T>& ybar, Tensor<T>& xbar) const {
    detail::accumulate(xbar, []<class B>(B y, B yb) { return yb / (B(2) * y); }, s.y, ybar);
  }
  template <Real T>
  void vjp_tangent(const detail::Saved<T, 1>& s, const Tensor<T>&, const Tensor<T>& dy,
                   const Tensor<T>& ybar, Tensor<T>& xbar_dot) const {
    detail::accumulate(xbar_dot, []<class B>(B y, B dy, B yb) { return -dy * yb / (B(2) * y * y); },
                       s.y, dy, ybar);
  }
};

}  // namespace ops

template <Value V>
V sqrt(const V& x) {
  return detail::apply(ops::Sqrt{}, x);
}
#define AMARI_INSTANTIATE(V) template V sqrt<V>(const V&);
AMARI_FOR_EACH_VALUE_TYPE(AMARI_INSTANTIATE)
#undef AMARI_INSTANTIATE

}  // namespace amari
