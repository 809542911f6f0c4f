// log_softmax: y = x - logsumexp(x) along one axis. With p = exp(y) and sums over the axis:
//   JVP   dy        = dx - <p, dx>
//   VJP   xbar     += ybar - p sum(ybar)
//   2nd   xbar_dot += -p dy sum(ybar)      (dp = p dy)
#include <amari/autodiff/ops/primitive.hpp>

namespace amari {
namespace ops {

struct LogSoftmax {
  static constexpr const char* name = "log_softmax";
  static constexpr int arity = 1;
  static constexpr unsigned saves = save::y;
  int axis = 0;

  Shape output_shape(const Shape& x) const { return x; }
  template <Real T>
  Tensor<T> reduced(const Shape& x) const {
    return Tensor<T>::uninitialized(kernels::reduced_shape(x, axis, true));
  }
  template <Real T>
  void primal(const Tensor<T>& x, Tensor<T>& y) const {
    kernels::log_softmax(kernels::axis_view(x.shape(), axis), x.data(), y.data());
  }
  template <Real T>
  void jvp(const detail::Saved<T, 1>& s, const Tensor<T>& dx, Tensor<T>& dy) const {
    Tensor<T> p = Tensor<T>::uninitialized(s.y.shape());
    detail::elementwise(p, []<class B>(B y) { return kernels::exp(y); }, s.y);
    Tensor<T> r = reduced<T>(s.y.shape());
    kernels::reduce_dot(kernels::axis_view(s.y.shape(), axis), p.data(), dx.data(), r.data());
    detail::broadcast(dy, []<class B>(B dx, B r) { return dx - r; }, dx, r);
  }
  template <Real T>
  void vjp(const detail::Saved<T, 1>& s, const Tensor<T>& ybar, Tensor<T>& xbar) const {
    Tensor<T> r = reduced<T>(s.y.shape());
    kernels::reduce_sum(kernels::axis_view(s.y.shape(), axis), ybar.data(), r.data());
    detail::accumulate_unbroadcast(xbar, xbar.shape(), []<class B>(B y, B yb, B r) { return yb - kernels::exp(y) * r; },
                                   s.y, ybar, r);
  }
  template <Real T>
  void vjp_tangent(const detail::Saved<T, 1>& s, const Tensor<T>&, const Tensor<T>& dy,
                   const Tensor<T>& ybar, Tensor<T>& xbar_dot) const {
    Tensor<T> r = reduced<T>(s.y.shape());
    kernels::reduce_sum(kernels::axis_view(s.y.shape(), axis), ybar.data(), r.data());
    detail::accumulate_unbroadcast(xbar_dot, xbar_dot.shape(),
                                   []<class B>(B y, B dy, B r) { return -kernels::exp(y) * dy * r; }, s.y, dy, r);
  }
};

}  // namespace ops

template <Value V>
V log_softmax(const V& x, int axis) {
  const int a = x.shape().normalize_axis(axis, "log_softmax");
  return detail::apply(ops::LogSoftmax{.axis = a}, x);
}
#define AMARI_INSTANTIATE(V) template V log_softmax<V>(const V&, int);
AMARI_FOR_EACH_VALUE_TYPE(AMARI_INSTANTIATE)
#undef AMARI_INSTANTIATE

}  // namespace amari
