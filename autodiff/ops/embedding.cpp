// embedding: y[i, :] = weight[idx[i], :] for weight (V, D) and integer indices idx of shape S:
// y has shape S + (D). The indices are data, not an input: they live in the op struct (shared with
// the tape's copy), and weight is the only differentiable input. Linear in weight:
//   JVP   dy[i, :]         = dweight[idx[i], :]
//   VJP   wbar[idx[i], :] += ybar[i, :]      (scatter-add: a repeated index accumulates)
// The VJP runs over the indices in order, in parallel only across blocks of columns, so every sum
// has a fixed order at any thread count.
#include <amari/autodiff/kernels/blocks.hpp>
#include <amari/autodiff/ops/primitive.hpp>

namespace amari {
namespace ops {

struct Embedding {
  static constexpr const char* name = "embedding";
  static constexpr int arity = 1;
  static constexpr unsigned saves = save::none;
  static constexpr bool linear = true;
  std::shared_ptr<const std::vector<Index>> indices;
  Shape index_shape;

  Shape output_shape(const Shape& w) const {
    if (w.rank() != 2) throw ShapeError("embedding: expects weight (V, D), got shape " + w.str());
    const auto count = static_cast<Index>(indices->size());
    if (count != index_shape.numel()) {
      throw ShapeError("embedding: " + std::to_string(count) +
                       " indices do not fill the index shape " + index_shape.str() + " (" +
                       std::to_string(index_shape.numel()) + " elements)");
    }
    if (index_shape.rank() + 1 > Shape::kMaxRank) {
      throw ShapeError("embedding: index shape " + index_shape.str() + " with weight " + w.str() +
                       " gives a rank-" + std::to_string(index_shape.rank() + 1) +
                       " result (at most 4)");
    }
    for (Index i = 0; i < count; ++i) {
      const Index k = (*indices)[static_cast<std::size_t>(i)];
      if (k < 0 || k >= w[0]) {
        throw ValueError("embedding: index " + std::to_string(k) + " at position " +
                         std::to_string(i) + " is outside [0, " + std::to_string(w[0]) +
                         ") for weight " + w.str());
      }
    }
    std::array<Index, Shape::kMaxRank> dims{};
    for (int a = 0; a < index_shape.rank(); ++a) dims[static_cast<std::size_t>(a)] = index_shape[a];
    dims[static_cast<std::size_t>(index_shape.rank())] = w[1];
    return Shape(
        std::span<const Index>(dims.data(), static_cast<std::size_t>(index_shape.rank() + 1)));
  }
  template <Real T>
  void gather(const Tensor<T>& w, Tensor<T>& y) const {
    const Index d = w.shape()[1], n = static_cast<Index>(indices->size());
    kernels::parallel_for(n, n * d, [&](Index i) {
      const T* src = w.data() + (*indices)[static_cast<std::size_t>(i)] * d;
      std::copy(src, src + d, y.data() + i * d);
    });
  }
  template <Real T>
  void primal(const Tensor<T>& w, Tensor<T>& y) const {
    gather(w, y);
  }
  template <Real T>
  void jvp(const detail::Saved<T, 1>&, const Tensor<T>& dw, Tensor<T>& dy) const {
    gather(dw, dy);
  }
  template <Real T>
  void vjp(const detail::Saved<T, 1>&, const Tensor<T>& ybar, Tensor<T>& wbar) const {
    const Index d = wbar.shape()[1], n = static_cast<Index>(indices->size());
    constexpr Index kCols = 256;  // columns per work item
    const Index blocks = (d + kCols - 1) / kCols;
    kernels::parallel_for(blocks, n * d, [&](Index b) {
      const Index c0 = b * kCols, c1 = std::min(d, c0 + kCols);
      for (Index i = 0; i < n; ++i) {
        T* dst = wbar.data() + (*indices)[static_cast<std::size_t>(i)] * d;
        const T* src = ybar.data() + i * d;
        for (Index c = c0; c < c1; ++c) dst[c] += src[c];
      }
    });
  }
};

}  // namespace ops

template <Value V>
V embedding(const V& weight, const std::vector<Index>& indices, const Shape& index_shape) {
  return detail::apply(
      ops::Embedding{.indices = std::make_shared<const std::vector<Index>>(indices),
                     .index_shape = index_shape},
      weight);
}
#define AMARI_INSTANTIATE(V) \
  template V embedding<V>(const V&, const std::vector<Index>&, const Shape&);
AMARI_FOR_EACH_VALUE_TYPE(AMARI_INSTANTIATE)
#undef AMARI_INSTANTIATE

}  // namespace amari
