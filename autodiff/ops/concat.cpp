// concat: y = [x_1, ..., x_N] joined along one axis (all other extents equal), N = 2 or 3 inputs
// per primitive. Linear:
//   JVP   dy     = [dx_1, ..., dx_N]            (a zero block for a constant input)
//   VJP   xbar_k += the k-th block of ybar
// With every tensor viewed as (outer, n_k, inner), each outer index copies one contiguous run of
// n_k inner elements per input. A tape record takes at most three inputs (detail::kMaxArity), so
// concat of a list joins it as a balanced tree of 3-way concats: each element is copied
// ceil(log3 n) times (once for n <= 3), with about n / 2 records.
#include <amari/autodiff/kernels/blocks.hpp>
#include <amari/autodiff/ops/primitive.hpp>

namespace amari {
namespace ops {

template <int N>
struct Concat {
  static constexpr const char* name = "concat";
  static constexpr int arity = N;
  static constexpr unsigned saves = save::none;
  static constexpr bool linear = true;
  int axis = 0;              // normalized against the first input
  std::array<Index, N> n{};  // extent of each input along the axis (known without the tangents)

  template <class... S>
  Shape output_shape(const Shape& first, const S&... rest) const {
    const Shape* all[] = {&first, &rest...};
    std::string shapes;
    for (const Shape* s : all) shapes += (shapes.empty() ? "" : ", ") + s->str();
    Index total = 0;
    for (const Shape* s : all) {
      bool ok = s->rank() == first.rank();
      for (int a = 0; ok && a < first.rank(); ++a) ok = a == axis || (*s)[a] == first[a];
      if (!ok) {
        throw ShapeError("concat: shapes " + shapes + " differ outside axis " +
                         std::to_string(axis) + " (all other extents must be equal)");
      }
      total += (*s)[axis];
    }
    std::array<Index, Shape::kMaxRank> dims{};
    for (int a = 0; a < first.rank(); ++a) dims[static_cast<std::size_t>(a)] = first[a];
    dims[static_cast<std::size_t>(axis)] = total;
    return Shape(std::span<const Index>(dims.data(), static_cast<std::size_t>(first.rank())));
  }

  // f(o, k, offset of block k of row o in y, its length) for every outer index o and input k.
  template <class F>
  void for_each_block(const Shape& y, const F& f) const {
    const auto v = kernels::axis_view(y, axis);
    kernels::parallel_for(v.outer, y.numel(), [&](Index o) {
      Index off = o * v.n * v.inner;
      for (int k = 0; k < N; ++k) {
        const Index run = n[static_cast<std::size_t>(k)] * v.inner;
        f(o, k, off, run);
        off += run;
      }
    });
  }
  // y = [parts...]; a null part is a zero block.
  template <Real T>
  void join(const std::array<const Tensor<T>*, N>& parts, Tensor<T>& y) const {
    for_each_block(y.shape(), [&](Index o, int k, Index off, Index run) {
      if (const Tensor<T>* p = parts[static_cast<std::size_t>(k)]) {
        std::copy_n(p->data() + o * run, run, y.data() + off);
      } else {
        std::fill_n(y.data() + off, run, T(0));
      }
    });
  }
  // part_k += block k of ybar, for the non-null parts.
  template <Real T>
  void split_add(const Tensor<T>& ybar, const std::array<Tensor<T>*, N>& parts) const {
    for_each_block(ybar.shape(), [&](Index o, int k, Index off, Index run) {
      if (Tensor<T>* p = parts[static_cast<std::size_t>(k)]) {
        T* dst = p->data() + o * run;
        const T* src = ybar.data() + off;
        for (Index i = 0; i < run; ++i) dst[i] += src[i];
      }
    });
  }

  // The rules in the calling convention of each arity.
  template <Real T>
  void primal(const Tensor<T>& a, const Tensor<T>& b, Tensor<T>& y) const requires(N == 2) {
    join<T>({&a, &b}, y);
  }
  template <Real T>
  void primal(const Tensor<T>& a, const Tensor<T>& b, const Tensor<T>& c, Tensor<T>& y) const
      requires(N == 3) {
    join<T>({&a, &b, &c}, y);
  }
  template <Real T>
  void jvp(const detail::Saved<T, N>&, const Tensor<T>* da, const Tensor<T>* db,
           Tensor<T>& dy) const requires(N == 2) {
    join<T>({da, db}, dy);
  }
  template <Real T>
  void jvp(const detail::Saved<T, N>&, const Tensor<T>* da, const Tensor<T>* db,
           const Tensor<T>* dc, Tensor<T>& dy) const requires(N == 3) {
    join<T>({da, db, dc}, dy);
  }
  template <Real T>
  void vjp(const detail::Saved<T, N>&, const Tensor<T>& ybar, Tensor<T>* abar,
           Tensor<T>* bbar) const requires(N == 2) {
    split_add<T>(ybar, {abar, bbar});
  }
  template <Real T>
  void vjp(const detail::Saved<T, N>&, const Tensor<T>& ybar, Tensor<T>* abar, Tensor<T>* bbar,
           Tensor<T>* cbar) const requires(N == 3) {
    split_add<T>(ybar, {abar, bbar, cbar});
  }
};

// concat of 2 or 3 values along an axis already normalized against the first.
template <class V, class... R>
V concat_n(int axis, const V& first, const R&... rest) {
  ops::Concat<1 + sizeof...(R)> op{.axis = axis, .n = {first.shape()[axis], rest.shape()[axis]...}};
  return detail::apply(op, first, rest...);
}

// xs[lo, hi) joined: up to three at once, else three nearly equal parts joined recursively.
template <class V>
V concat_range(const std::vector<V>& xs, std::size_t lo, std::size_t hi, int axis) {
  const std::size_t count = hi - lo;
  if (count == 1) return xs[lo];
  if (count == 2) return concat_n(axis, xs[lo], xs[lo + 1]);
  if (count == 3) return concat_n(axis, xs[lo], xs[lo + 1], xs[lo + 2]);
  const std::size_t m1 = lo + (count + 2) / 3, m2 = m1 + (hi - m1 + 1) / 2;
  return concat_n(axis, concat_range(xs, lo, m1, axis), concat_range(xs, m1, m2, axis),
                  concat_range(xs, m2, hi, axis));
}

}  // namespace ops

template <Value V>
V concat(const V& a, const V& b, int axis) {
  detail::require_defined<ops::Concat<2>>(a, b);
  return ops::concat_n(a.shape().normalize_axis(axis, "concat"), a, b);
}
template <Value V>
V concat(const std::vector<V>& xs, int axis) {
  if (xs.empty()) throw ValueError("concat: needs at least one tensor, got an empty list");
  for (const V& x : xs) detail::require_defined<ops::Concat<2>>(x);
  const int a = xs[0].shape().normalize_axis(axis, "concat");
  // Check every shape up front, so an error names all of them and no partial tree is recorded.
  for (std::size_t i = 1; i < xs.size(); ++i) {
    bool ok = xs[i].shape().rank() == xs[0].shape().rank();
    for (int d = 0; ok && d < xs[0].shape().rank(); ++d)
      ok = d == a || xs[i].shape()[d] == xs[0].shape()[d];
    if (!ok) {
      std::string shapes;
      for (const V& x : xs) shapes += (shapes.empty() ? "" : ", ") + x.shape().str();
      throw ShapeError("concat: shapes " + shapes + " differ outside axis " + std::to_string(a) +
                       " (all other extents must be equal)");
    }
  }
  return ops::concat_range(xs, 0, xs.size(), a);
}
#define AMARI_INSTANTIATE(V)                     \
  template V concat<V>(const V&, const V&, int); \
  template V concat<V>(const std::vector<V>&, int);
AMARI_FOR_EACH_VALUE_TYPE(AMARI_INSTANTIATE)
#undef AMARI_INSTANTIATE

}  // namespace amari
