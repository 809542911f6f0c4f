// sum: y = sum of all elements (rank 0), or along one axis. Linear:
//   JVP   dy    = sum(dx)                  (the same reduction)
//   VJP   xbar += ybar broadcast back over the summed axes
// mean is sum scaled by 1/count, defined here too.
#include <amari/autodiff/ops/primitive.hpp>

namespace amari {
namespace ops {

struct Sum {
  static constexpr const char* name = "sum";
  static constexpr int arity = 1;
  static constexpr unsigned saves = save::none;
  static constexpr bool linear = true;
  bool all = true;
  int axis = 0;  // normalized; used when !all
  bool keep_dims = false;

  Shape output_shape(const Shape& x) const {
    return all ? Shape{} : kernels::reduced_shape(x, axis, keep_dims);
  }
  template <Real T>
  void reduce(const Tensor<T>& x, Tensor<T>& y) const {
    if (all) {
      y[0] = static_cast<T>(kernels::sum(x.size(), x.data()));
    } else {
      kernels::reduce_sum(kernels::axis_view(x.shape(), axis), x.data(), y.data());
    }
  }
  template <Real T>
  void primal(const Tensor<T>& x, Tensor<T>& y) const {
    reduce(x, y);
  }
  template <Real T>
  void jvp(const detail::Saved<T, 1>&, const Tensor<T>& dx, Tensor<T>& dy) const {
    reduce(dx, dy);
  }
  template <Real T>
  void vjp(const detail::Saved<T, 1>&, const Tensor<T>& ybar, Tensor<T>& xbar) const {
    // Give ybar the reduced axis back as size 1, then broadcast-add it over that axis.
    const Shape kept = all ? Shape{} : kernels::reduced_shape(xbar.shape(), axis, true);
    kernels::broadcast_map<true>(xbar.shape(), xbar.data(), []<class B>(B yb) { return yb; },
                                 std::pair<const T*, Shape>{ybar.data(), kept});
  }
};

}  // namespace ops

template <Value V>
V sum(const V& x) {
  return detail::apply(ops::Sum{}, x);
}
template <Value V>
V sum(const V& x, int axis, bool keep_dims) {
  const int a = x.shape().normalize_axis(axis, "sum");
  return detail::apply(ops::Sum{.all = false, .axis = a, .keep_dims = keep_dims}, x);
}
template <Value V>
V mean(const V& x) {
  return scale(sum(x), 1.0 / static_cast<double>(x.shape().numel()));
}
template <Value V>
V mean(const V& x, int axis, bool keep_dims) {
  const int a = x.shape().normalize_axis(axis, "mean");
  return scale(sum(x, a, keep_dims), 1.0 / static_cast<double>(x.shape()[a]));
}
#define AMARI_INSTANTIATE(V)                         \
  template V sum<V>(const V&);                       \
  template V sum<V>(const V&, int, bool);            \
  template V mean<V>(const V&);                      \
  template V mean<V>(const V&, int, bool);
AMARI_FOR_EACH_VALUE_TYPE(AMARI_INSTANTIATE)
#undef AMARI_INSTANTIATE

}  // namespace amari
