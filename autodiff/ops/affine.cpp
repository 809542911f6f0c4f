// affine: y = a x + b for scalars a, b, element-wise. Behind neg (a = -1), scale (b = 0) and
// add_scalar (a = 1). Linear in x, so no residuals and no second-order term.
//   JVP   dy        = a dx
//   VJP   xbar     += a ybar
#include <amari/autodiff/ops/primitive.hpp>

namespace amari {
namespace ops {

struct Affine : detail::UnaryElementwise {
  static constexpr const char* name = "affine";
  static constexpr unsigned saves = save::none;
  static constexpr bool linear = true;
  double a = 1, b = 0;

  template <Real T>
  void primal(const Tensor<T>& x, Tensor<T>& y) const {
    const T a_ = static_cast<T>(a), b_ = static_cast<T>(b);
    detail::elementwise(y, [a_, b_]<class B>(B x) { return xsimd::fma(B(a_), x, B(b_)); }, x);
  }
  template <Real T>
  void jvp(const detail::Saved<T, 1>&, const Tensor<T>& dx, Tensor<T>& dy) const {
    const T a_ = static_cast<T>(a);
    detail::elementwise(dy, [a_]<class B>(B dx) { return B(a_) * dx; }, dx);
  }
  template <Real T>
  void vjp(const detail::Saved<T, 1>&, const Tensor<T>& ybar, Tensor<T>& xbar) const {
    const T a_ = static_cast<T>(a);
    detail::accumulate(xbar, [a_]<class B>(B yb) { return B(a_) * yb; }, ybar);
  }
};

}  // namespace ops

template <Value V>
V affine(const V& x, double a, double b) {
  ops::Affine op;
  op.a = a;
  op.b = b;
  return detail::apply(op, x);
}
#define AMARI_INSTANTIATE(V) template V affine<V>(const V&, double, double);
AMARI_FOR_EACH_VALUE_TYPE(AMARI_INSTANTIATE)
#undef AMARI_INSTANTIATE

}  // namespace amari
