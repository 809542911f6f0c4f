// max: y = max along one axis. Piecewise linear: the derivative picks the maximal element.
//   JVP   dy[o, i]      = dx[o, j*, i]
//   VJP   xbar[o, j*, i] += ybar[o, i]
//   2nd   nothing (zero second derivative wherever the max is unique)
// j* is the first j where x[o, j, i] equals the max (ties go to the first, as in NumPy's argmax),
// or the first NaN, which the max propagates.
#include <cmath>

#include <amari/autodiff/ops/primitive.hpp>

namespace amari {
namespace ops {

struct Max {
  static constexpr const char* name = "max";
  static constexpr int arity = 1;
  static constexpr unsigned saves = save::x0 | save::y;
  int axis = 0;
  bool keep_dims = false;

  Shape output_shape(const Shape& x) const {
    if (x[axis] == 0) throw ShapeError("max: cannot reduce the empty axis " + std::to_string(axis) + " of " + x.str());
    return kernels::reduced_shape(x, axis, keep_dims);
  }
  // Calls f(k_in, k_out) with the flat index of the maximal element of each slice.
  template <Real T, class F>
  void for_each_argmax(const detail::Saved<T, 1>& s, F f) const {
    const auto v = kernels::axis_view(s.x[0].shape(), axis);
    const T* x = s.x[0].data();
    const T* y = s.y.data();
    for (Index o = 0; o < v.outer; ++o)
      for (Index i = 0; i < v.inner; ++i) {
        const Index out = o * v.inner + i;
        Index j = 0;
        while (j + 1 < v.n) {
          const T e = x[(o * v.n + j) * v.inner + i];
          if (e == y[out] || std::isnan(e)) break;
          ++j;
        }
        f((o * v.n + j) * v.inner + i, out);
      }
  }
  template <Real T>
  void primal(const Tensor<T>& x, Tensor<T>& y) const {
    kernels::reduce_max(kernels::axis_view(x.shape(), axis), x.data(), y.data());
  }
  template <Real T>
  void jvp(const detail::Saved<T, 1>& s, const Tensor<T>& dx, Tensor<T>& dy) const {
    for_each_argmax(s, [&](Index in, Index out) { dy[out] = dx[in]; });
  }
  template <Real T>
  void vjp(const detail::Saved<T, 1>& s, const Tensor<T>& ybar, Tensor<T>& xbar) const {
    for_each_argmax(s, [&](Index in, Index out) { xbar[in] += ybar[out]; });
  }
  template <Real T>
  void vjp_tangent(const detail::Saved<T, 1>&, const Tensor<T>&, const Tensor<T>&, const Tensor<T>&,
                   Tensor<T>&) const {}
};

}  // namespace ops

template <Value V>
V max(const V& x, int axis, bool keep_dims) {
  const int a = x.shape().normalize_axis(axis, "max");
  return detail::apply(ops::Max{.axis = a, .keep_dims = keep_dims}, x);
}
#define AMARI_INSTANTIATE(V) template V max<V>(const V&, int, bool);
AMARI_FOR_EACH_VALUE_TYPE(AMARI_INSTANTIATE)
#undef AMARI_INSTANTIATE

}  // namespace amari
