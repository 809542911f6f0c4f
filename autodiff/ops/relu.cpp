// relu: y = max(x, 0), element-wise.
//   JVP   dy        = [x > 0] dx
//   VJP   xbar     += [x > 0] ybar
//   2nd   nothing: relu'' = 0 everywhere except at 0, where it does not exist.
// Convention at the kink: the derivative at x = 0 is 0 (as in PyTorch and JAX). [x > 0] is read off
// y (y > 0 exactly when x > 0), so only the output is saved. NaN inputs give NaN outputs.
#include <amari/autodiff/ops/primitive.hpp>

namespace amari {
namespace ops {

struct Relu : detail::UnaryElementwise {
  static constexpr const char* name = "relu";
  static constexpr unsigned saves = save::y;

  template <Real T>
  void primal(const Tensor<T>& x, Tensor<T>& y) const {
    // select(x <= 0, 0, x) rather than max(x, 0): a NaN compares false and passes through.
    detail::elementwise(y, []<class B>(B x) { return xsimd::select(x <= B(0), B(0), x); }, x);
  }
  template <Real T>
  void jvp(const detail::Saved<T, 1>& s, const Tensor<T>& dx, Tensor<T>& dy) const {
    detail::elementwise(dy, []<class B>(B y, B dx) { return xsimd::select(y > B(0), dx, B(0)); }, s.y, dx);
  }
  template <Real T>
  void vjp(const detail::Saved<T, 1>& s, const Tensor<T>& ybar, Tensor<T>& xbar, detail::Overwrite ow) const {
    detail::assign_or_accumulate(ow[0], xbar, []<class B>(B y, B yb) { return xsimd::select(y > B(0), yb, B(0)); },
                                 s.y, ybar);
  }
  template <Real T>
  void vjp_tangent(const detail::Saved<T, 1>&, const Tensor<T>&, const Tensor<T>&, const Tensor<T>&,
                   Tensor<T>&) const {}
};

}  // namespace ops

template <Value V>
V relu(const V& x) {
  return detail::apply(ops::Relu{}, x);
}
#define AMARI_INSTANTIATE(V) template V relu<V>(const V&);
AMARI_FOR_EACH_VALUE_TYPE(AMARI_INSTANTIATE)
#undef AMARI_INSTANTIATE

}  // namespace amari
