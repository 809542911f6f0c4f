// transpose: y = x^T for rank-2 x (copied into a new row-major tensor). Linear:
//   JVP   dy    = dx^T
//   VJP   xbar += ybar^T
#include <amari/autodiff/ops/primitive.hpp>

namespace amari {
namespace ops {

// y (cols x rows) = x^T or y += x^T, in 32 x 32 tiles so both sides stay in cache.
template <bool kAccumulate, Real T>
void transpose_into(const Tensor<T>& x, Tensor<T>& y) {
  const Index rows = x.shape()[0], cols = x.shape()[1];
  constexpr Index kTile = 32;
  const T* src = x.data();
  T* dst = y.data();
  for (Index i0 = 0; i0 < rows; i0 += kTile)
    for (Index j0 = 0; j0 < cols; j0 += kTile)
      for (Index i = i0; i < std::min(rows, i0 + kTile); ++i)
        for (Index j = j0; j < std::min(cols, j0 + kTile); ++j) {
          if constexpr (kAccumulate) {
            dst[j * rows + i] += src[i * cols + j];
          } else {
            dst[j * rows + i] = src[i * cols + j];
          }
        }
}

struct Transpose {
  static constexpr const char* name = "transpose";
  static constexpr int arity = 1;
  static constexpr unsigned saves = save::none;
  static constexpr bool linear = true;

  Shape output_shape(const Shape& x) const {
    if (x.rank() != 2) throw ShapeError("transpose: expects a rank-2 tensor, got shape " + x.str());
    return Shape{x[1], x[0]};
  }
  template <Real T>
  void primal(const Tensor<T>& x, Tensor<T>& y) const {
    transpose_into<false>(x, y);
  }
  template <Real T>
  void jvp(const detail::Saved<T, 1>&, const Tensor<T>& dx, Tensor<T>& dy) const {
    transpose_into<false>(dx, dy);
  }
  template <Real T>
  void vjp(const detail::Saved<T, 1>&, const Tensor<T>& ybar, Tensor<T>& xbar) const {
    transpose_into<true>(ybar, xbar);
  }
};

}  // namespace ops

template <Value V>
V transpose(const V& x) {
  return detail::apply(ops::Transpose{}, x);
}
#define AMARI_INSTANTIATE(V) template V transpose<V>(const V&);
AMARI_FOR_EACH_VALUE_TYPE(AMARI_INSTANTIATE)
#undef AMARI_INSTANTIATE

}  // namespace amari
