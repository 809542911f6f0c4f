// reshape: the same elements (row-major order) under another shape with the same count. Linear:
//   JVP   dy    = dx reshaped
//   VJP   xbar += ybar reshaped back
#include <amari/autodiff/ops/primitive.hpp>

namespace amari {
namespace ops {

struct Reshape {
  static constexpr const char* name = "reshape";
  static constexpr int arity = 1;
  static constexpr unsigned saves = save::none;
  static constexpr bool linear = true;
  Shape to;

  Shape output_shape(const Shape& x) const {
    if (x.numel() != to.numel()) {
      throw ShapeError("reshape: cannot reshape " + x.str() + " (" + std::to_string(x.numel()) +
                       " elements) into " + to.str() + " (" + std::to_string(to.numel()) + " elements)");
    }
    return to;
  }
  template <Real T>
  void primal(const Tensor<T>& x, Tensor<T>& y) const {
    kernels::copy(x.size(), x.data(), y.data());
  }
  template <Real T>
  void jvp(const detail::Saved<T, 1>&, const Tensor<T>& dx, Tensor<T>& dy) const {
    kernels::copy(dx.size(), dx.data(), dy.data());
  }
  template <Real T>
  void vjp(const detail::Saved<T, 1>&, const Tensor<T>& ybar, Tensor<T>& xbar, detail::Overwrite ow) const {
    detail::assign_or_accumulate(ow[0], xbar, []<class B>(B yb) { return yb; }, ybar);
  }
};

}  // namespace ops

template <Value V>
V reshape(const V& x, const Shape& shape) {
  return detail::apply(ops::Reshape{.to = shape}, x);
}
#define AMARI_INSTANTIATE(V) template V reshape<V>(const V&, const Shape&);
AMARI_FOR_EACH_VALUE_TYPE(AMARI_INSTANTIATE)
#undef AMARI_INSTANTIATE

}  // namespace amari
