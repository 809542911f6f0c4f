#include <amari/autodiff/kernels/elementwise.hpp>

#include <vector>

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

namespace {
// Sums one block with SIMD lanes in T, then reduces the lanes; blocks are short enough (1024) that
// float lane sums keep about 1e-6 relative accuracy before the double combination.
constexpr Index kSumBlock = 1024;

template <class T, class F>
double block_reduce(Index n, const F& term) {
  constexpr Index W = static_cast<Index>(Batch<T>::size);
  const Index blocks = (n + kSumBlock - 1) / kSumBlock;
  auto block = [&](Index b) {
    const Index begin = b * kSumBlock, end = std::min(n, begin + kSumBlock);
    Batch<T> acc(T(0));
    Index i = begin;
    for (; i + W <= end; i += W) acc += term(i);
    T s = xsimd::hadd(acc);
    for (; i < end; ++i) s += term.scalar(i);
    return static_cast<double>(s);
  };
  if (n < kParallelElements || omp_get_max_threads() == 1) {
    double total = 0;
    for (Index b = 0; b < blocks; ++b) total += block(b);
    return total;
  }
  std::vector<double> partial(static_cast<std::size_t>(blocks));
#pragma omp parallel for schedule(static)
  for (Index b = 0; b < blocks; ++b) partial[static_cast<std::size_t>(b)] = block(b);
  double total = 0;
  for (double p : partial) total += p;  // fixed order: deterministic for any thread count
  return total;
}

template <class T>
struct SumTerm {
  const T* x;
  Batch<T> operator()(Index i) const { return Batch<T>::load_unaligned(x + i); }
  T scalar(Index i) const { return x[i]; }
};
template <class T>
struct DotTerm {
  const T* x;
  const T* y;
  Batch<T> operator()(Index i) const {
    return Batch<T>::load_unaligned(x + i) * Batch<T>::load_unaligned(y + i);
  }
  T scalar(Index i) const { return x[i] * y[i]; }
};
}  // namespace

template <class T>
double sum(Index n, const T* x) {
  return block_reduce<T>(n, SumTerm<T>{x});
}

template <class T>
double dot(Index n, const T* x, const T* y) {
  return block_reduce<T>(n, DotTerm<T>{x, y});
}

template <class T>
void copy(Index n, const T* src, T* dst) {
  if (n <= 0 || src == dst) return;
  if (n < kParallelElements || omp_get_max_threads() == 1) {
    std::memcpy(dst, src, static_cast<std::size_t>(n) * sizeof(T));
    return;
  }
  const Index chunks = (n + kChunk - 1) / kChunk;
#pragma omp parallel for schedule(static)
  for (Index c = 0; c < chunks; ++c) {
    const Index b = c * kChunk, e = std::min(n, b + kChunk);
    std::memcpy(dst + b, src + b, static_cast<std::size_t>(e - b) * sizeof(T));
  }
}

#define AMARI_INSTANTIATE(T)                                                             \
  template void sum_to_accumulate<T>(const T*, const Shape&, T*, const Shape&);          \
  template double sum<T>(Index, const T*);                                               \
  template double dot<T>(Index, const T*, const T*);                                     \
  template void copy<T>(Index, const T*, T*);
AMARI_INSTANTIATE(float)
AMARI_INSTANTIATE(double)
#undef AMARI_INSTANTIATE

}  // namespace amari::kernels
