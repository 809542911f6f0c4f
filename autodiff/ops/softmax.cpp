// softmax: y = exp(x - logsumexp(x)) along one axis. With <a, b> the sum over the axis:
//   JVP   dy        = y (dx - <y, dx>)
//   VJP   xbar     += y (ybar - <y, ybar>)
//   2nd   xbar_dot += dy (ybar - <y, ybar>) - y <dy, ybar>
// (the VJP is the JVP transposed: J = diag(y) - y y^T is symmetric).
#include <amari/autodiff/ops/primitive.hpp>

namespace amari {
namespace ops {

struct Softmax {
  static constexpr const char* name = "softmax";
  static constexpr int arity = 1;
  static constexpr unsigned saves = save::y;
  int axis = 0;

  Shape output_shape(const Shape& x) const { return x; }
  // <a, b> along the axis, with the axis kept as size 1.
  template <Real T>
  Tensor<T> inner(const Tensor<T>& a, const Tensor<T>& b) const {
    Tensor<T> r = Tensor<T>::uninitialized(kernels::reduced_shape(a.shape(), axis, true));
    kernels::reduce_dot(kernels::axis_view(a.shape(), axis), a.data(), b.data(), r.data());
    return r;
  }
  template <Real T>
  void primal(const Tensor<T>& x, Tensor<T>& y) const {
    kernels::softmax(kernels::axis_view(x.shape(), axis), x.data(), y.data());
  }
  template <Real T>
  void jvp(const detail::Saved<T, 1>& s, const Tensor<T>& dx, Tensor<T>& dy) const {
    detail::broadcast(dy, []<class B>(B y, B dx, B r) { return y * (dx - r); }, s.y, dx, inner(s.y, dx));
  }
  template <Real T>
  void vjp(const detail::Saved<T, 1>& s, const Tensor<T>& ybar, Tensor<T>& xbar) const {
    detail::accumulate_unbroadcast(xbar, xbar.shape(), []<class B>(B y, B yb, B r) { return y * (yb - r); },
                                   s.y, ybar, inner(s.y, ybar));
  }
  template <Real T>
  void vjp_tangent(const detail::Saved<T, 1>& s, const Tensor<T>&, const Tensor<T>& dy,
                   const Tensor<T>& ybar, Tensor<T>& xbar_dot) const {
    detail::accumulate_unbroadcast(
        xbar_dot, xbar_dot.shape(),
        []<class B>(B y, B dy, B yb, B r1, B r2) { return dy * (yb - r1) - y * r2; }, s.y, dy, ybar,
        inner(s.y, ybar), inner(dy, ybar));
  }
};

}  // namespace ops

template <Value V>
V softmax(const V& x, int axis) {
  const int a = x.shape().normalize_axis(axis, "softmax");
  return detail::apply(ops::Softmax{.axis = a}, x);
}
#define AMARI_INSTANTIATE(V) template V softmax<V>(const V&, int);
AMARI_FOR_EACH_VALUE_TYPE(AMARI_INSTANTIATE)
#undef AMARI_INSTANTIATE

}  // namespace amari
