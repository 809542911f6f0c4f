// slice: y = x[..., start:stop, ...] along one axis (0 <= start <= stop <= extent). Linear:
//   JVP   dy                          = dx[..., start:stop, ...]
//   VJP   xbar[..., start:stop, ...] += ybar
// With x viewed as (outer, n, inner), every outer index copies one contiguous run of
// (stop - start) inner elements.
#include <amari/autodiff/kernels/blocks.hpp>
#include <amari/autodiff/ops/primitive.hpp>

namespace amari {
namespace ops {

struct Slice {
  static constexpr const char* name = "slice";
  static constexpr int arity = 1;
  static constexpr unsigned saves = save::none;
  static constexpr bool linear = true;
  int axis = 0;  // normalized
  Index start = 0, stop = 0;

  Shape output_shape(const Shape& x) const {
    if (start < 0 || start > stop || stop > x[axis]) {
      throw ShapeError("slice: range [" + std::to_string(start) + ", " + std::to_string(stop) +
                       ") does not fit axis " + std::to_string(axis) + " of shape " + x.str() +
                       " (need 0 <= start <= stop <= " + std::to_string(x[axis]) + ")");
    }
    std::array<Index, Shape::kMaxRank> dims{};
    for (int a = 0; a < x.rank(); ++a) dims[static_cast<std::size_t>(a)] = x[a];
    dims[static_cast<std::size_t>(axis)] = stop - start;
    return Shape(std::span<const Index>(dims.data(), static_cast<std::size_t>(x.rank())));
  }
  // f(offset in x, offset in y, run length) for every outer index.
  template <class F>
  void for_each_run(const Shape& x, const F& f) const {
    const auto v = kernels::axis_view(x, axis);
    const Index run = (stop - start) * v.inner;
    kernels::parallel_for(v.outer, v.outer * run,
                          [&](Index o) { f((o * v.n + start) * v.inner, o * run, run); });
  }
  template <Real T>
  void primal(const Tensor<T>& x, Tensor<T>& y) const {
    for_each_run(x.shape(), [&](Index xo, Index yo, Index n) {
      std::copy_n(x.data() + xo, n, y.data() + yo);
    });
  }
  template <Real T>
  void jvp(const detail::Saved<T, 1>&, const Tensor<T>& dx, Tensor<T>& dy) const {
    primal(dx, dy);
  }
  template <Real T>
  void vjp(const detail::Saved<T, 1>&, const Tensor<T>& ybar, Tensor<T>& xbar) const {
    for_each_run(xbar.shape(), [&](Index xo, Index yo, Index n) {
      T* dst = xbar.data() + xo;
      const T* src = ybar.data() + yo;
      for (Index i = 0; i < n; ++i) dst[i] += src[i];
    });
  }
};

}  // namespace ops

template <Value V>
V slice(const V& x, int axis, Index start, Index stop) {
  detail::require_defined<ops::Slice>(x);
  const int a = x.shape().normalize_axis(axis, "slice");
  return detail::apply(ops::Slice{.axis = a, .start = start, .stop = stop}, x);
}
#define AMARI_INSTANTIATE(V) template V slice<V>(const V&, int, Index, Index);
AMARI_FOR_EACH_VALUE_TYPE(AMARI_INSTANTIATE)
#undef AMARI_INSTANTIATE

}  // namespace amari
