#include <amari/autodiff/kernels/elementwise.hpp>

namespace amari::kernels {

Shape broadcast_shapes(const char* op, const Shape& a, const Shape& b) {
  const int rank = std::max(a.rank(), b.rank());
  std::array<Index, Shape::kMaxRank> dims{};
  for (int i = 0; i < rank; ++i) {
    // Align on the right: axis i of the result is axis i - (rank - r) of an operand of rank r.
    const int ia = i - (rank - a.rank()), ib = i - (rank - b.rank());
    const Index da = ia >= 0 ? a[ia] : 1, db = ib >= 0 ? b[ib] : 1;
    if (da != db && da != 1 && db != 1) {
      throw ShapeError(std::string(op) + ": shapes " + a.str() + " and " + b.str() +
                       " cannot be broadcast together (axis " + std::to_string(i) + ": " +
                       std::to_string(da) + " vs " + std::to_string(db) + ")");
    }
    dims[static_cast<std::size_t>(i)] = da == 1 ? db : da;
  }
  try {
    return Shape(std::span<const Index>(dims.data(), static_cast<std::size_t>(rank)));
  } catch (const SizeError&) {
    throw SizeError(std::string(op) + ": broadcasting shapes " + a.str() + " and " + b.str() +
                    " gives more than 2^48 elements");
  }
}

template <class T>
void sum_to_accumulate(const T* src, const Shape& src_shape, T* dst, const Shape& dst_shape) {
  if (src_shape.numel() == 0 || dst_shape.numel() == 0) return;
  if (src_shape == dst_shape) {
    map_accumulate(src_shape.numel(), dst, []<class B>(B s) { return s; }, src);
    return;
  }
  const auto d = detail::dims4(src_shape);
  const detail::Layout4 l = detail::layout_for(dst_shape, src_shape);
  const Index n = d[3];
  for (Index i0 = 0; i0 < d[0]; ++i0) {
    for (Index i1 = 0; i1 < d[1]; ++i1) {
      for (Index i2 = 0; i2 < d[2]; ++i2) {
        const T* s = src + ((i0 * d[1] + i1) * d[2] + i2) * n;
        T* o = dst + i0 * l.strides[0] + i1 * l.strides[1] + i2 * l.strides[2];
        if (l.strides[3] == 1) {
          detail::map_range<true>(Index{0}, n, o, []<class B>(B v) { return v; },
                                  std::pair<const T*, Index>{s, 1});
        } else {
          *o += static_cast<T>(sum(n, s));
        }
      }
    }
  }
}

#define AMARI_INSTANTIATE(T) \
  template void sum_to_accumulate<T>(const T*, const Shape&, T*, const Shape&);
AMARI_INSTANTIATE(float)
AMARI_INSTANTIATE(double)
#undef AMARI_INSTANTIATE

}  // namespace amari::kernels
