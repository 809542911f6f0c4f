// logsumexp: y = log sum_j exp(x_j) along one axis, computed as m + log sum exp(x - m) (m the max),
// so logits of +-1e4 give finite values. With p = exp(x - y) = softmax(x) along the axis:
//   JVP   dy        = sum_j p_j dx_j
//   VJP   xbar     += p ybar
//   2nd   xbar_dot += p (dx - dy) ybar     (dp = p (dx - sum_j p_j dx_j) = p (dx - dy))
#include <amari/autodiff/ops/primitive.hpp>

namespace amari {
namespace ops {

struct LogSumExp {
  static constexpr const char* name = "logsumexp";
  static constexpr int arity = 1;
  static constexpr unsigned saves = save::x0 | save::y;
  int axis = 0;
  bool keep_dims = false;

  Shape output_shape(const Shape& x) const { return kernels::reduced_shape(x, axis, keep_dims); }
  // y (or any reduced tensor) with the axis kept as size 1, so it broadcasts against x.
  template <Real T>
  Tensor<T> kept(const Tensor<T>& r, const Shape& x) const {
    return r.reshaped(kernels::reduced_shape(x, axis, true));
  }
  template <Real T>
  void primal(const Tensor<T>& x, Tensor<T>& y) const {
    kernels::reduce_logsumexp(kernels::axis_view(x.shape(), axis), x.data(), y.data());
  }
  template <Real T>
  void jvp(const detail::Saved<T, 1>& s, const Tensor<T>& dx, Tensor<T>& dy) const {
    const Tensor<T>& x = s.x[0];
    Tensor<T> pdx = Tensor<T>::uninitialized(x.shape());
    detail::broadcast(pdx, []<class B>(B x, B y, B dx) { return kernels::exp(x - y) * dx; }, x, kept(s.y, x.shape()), dx);
    kernels::reduce_sum(kernels::axis_view(x.shape(), axis), pdx.data(), dy.data());
  }
  template <Real T>
  void vjp(const detail::Saved<T, 1>& s, const Tensor<T>& ybar, Tensor<T>& xbar) const {
    const Tensor<T>& x = s.x[0];
    kernels::broadcast_map<true>(x.shape(), xbar.data(), []<class B>(B x, B y, B yb) { return kernels::exp(x - y) * yb; },
                                 std::pair<const T*, Shape>{x.data(), x.shape()},
                                 std::pair<const T*, Shape>{s.y.data(), kept(s.y, x.shape()).shape()},
                                 std::pair<const T*, Shape>{ybar.data(), kept(ybar, x.shape()).shape()});
  }
  template <Real T>
  void vjp_tangent(const detail::Saved<T, 1>& s, const Tensor<T>& dx, const Tensor<T>& dy,
                   const Tensor<T>& ybar, Tensor<T>& xbar_dot) const {
    const Tensor<T>& x = s.x[0];
    const Shape k = kernels::reduced_shape(x.shape(), axis, true);
    kernels::broadcast_map<true>(
        x.shape(), xbar_dot.data(),
        []<class B>(B x, B y, B dx, B dy, B yb) { return kernels::exp(x - y) * (dx - dy) * yb; },
        std::pair<const T*, Shape>{x.data(), x.shape()}, std::pair<const T*, Shape>{s.y.data(), k},
        std::pair<const T*, Shape>{dx.data(), x.shape()}, std::pair<const T*, Shape>{dy.data(), k},
        std::pair<const T*, Shape>{ybar.data(), k});
  }
};

}  // namespace ops

template <Value V>
V logsumexp(const V& x, int axis, bool keep_dims) {
  const int a = x.shape().normalize_axis(axis, "logsumexp");
  return detail::apply(ops::LogSumExp{.axis = a, .keep_dims = keep_dims}, x);
}
#define AMARI_INSTANTIATE(V) template V logsumexp<V>(const V&, int, bool);
AMARI_FOR_EACH_VALUE_TYPE(AMARI_INSTANTIATE)
#undef AMARI_INSTANTIATE

}  // namespace amari
