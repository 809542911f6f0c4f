// The vector kernels of vector.hpp; see there for the threshold and the reduction.
#include <amari/autodiff/kernels/vector.hpp>

#include <vector>
#include <xsimd/xsimd.hpp>

namespace amari::kernels {

template <class T>
double dot(Index n, const T* x, const T* y) {
  return block_sums<true>(n, dot_chunk(x, y), dot_element(x, y));
}

// The one exception to the reduction of vector.hpp: a sum has no products to form in double, and
// in the 8 double lanes it ran at half the speed of SIMD lanes in T when the data is in cache
// (4096 floats: 507 vs 234 ns), where the sum op and layer norm's mean use it: one chain of 8-lane
// additions against one of W-lane additions in T (W = 16 floats with AVX-512). So it sums blocks of
// kSumBlock elements in W lanes of T, short enough that float lane sums keep about 1e-6 relative
// accuracy, and adds the block sums in double in block order. The blocks depend on n only, so the
// result is also bit-identical for any thread count.
constexpr Index kSumBlock = 1024;

template <class T>
double sum_block(const T* x, Index lo, Index hi) {
  using B = xsimd::batch<T>;
  constexpr Index W = static_cast<Index>(B::size);
  B acc(T(0));
  Index i = lo;
  for (; i + W <= hi; i += W) acc += B::load_unaligned(x + i);
  T s = xsimd::hadd(acc);
  for (; i < hi; ++i) s += x[i];
  return static_cast<double>(s);
}

template <class T>
double sum(Index n, const T* x) {
  if (n <= 0) return 0.0;
  const Index blocks = (n + kSumBlock - 1) / kSumBlock;
  if (n < kParallelElements || omp_get_max_threads() == 1) {
    double total = 0.0;
    for (Index b = 0; b < blocks; ++b) {
      total += sum_block(x, b * kSumBlock, std::min(n, (b + 1) * kSumBlock));
    }
    return total;
  }
  std::vector<double> partial(static_cast<std::size_t>(blocks));
#pragma omp parallel for schedule(static)
  for (Index b = 0; b < blocks; ++b) {
    partial[static_cast<std::size_t>(b)] =
        sum_block(x, b * kSumBlock, std::min(n, (b + 1) * kSumBlock));
  }
  return combine_blocks(partial.data(), blocks);
}

// f(i) for i in [0, n): over OpenMP threads only from kParallelElements on and with more than
// one thread allowed. An `if` clause on the pragma is not enough: the region is entered (and
// costs ~1.5 us) even when the clause makes it serial. Element-wise, so the thread count never
// changes a result.
template <class F>
void elementwise_loop(Index n, const F& f) {
  if (n >= kParallelElements && omp_get_max_threads() > 1) {
#pragma omp parallel for simd schedule(static)
    for (Index i = 0; i < n; ++i) f(i);
  } else {
#pragma omp simd
    for (Index i = 0; i < n; ++i) f(i);
  }
}

template <class T>
void axpy(Index n, T alpha, const T* x, T* y) {
  elementwise_loop(n, [=](Index i) { y[i] += alpha * x[i]; });
}

template <class T>
void xpby(Index n, const T* x, T beta, T* y) {
  elementwise_loop(n, [=](Index i) { y[i] = x[i] + beta * y[i]; });
}

template <class T>
void scal(Index n, T alpha, T* x) {
  elementwise_loop(n, [=](Index i) { x[i] *= alpha; });
}

template <class T>
void copy(Index n, const T* src, T* dst) {
  if (n <= 0 || src == dst) return;
  if (n < kParallelElements || omp_get_max_threads() == 1) {
    std::memcpy(dst, src, static_cast<std::size_t>(n) * sizeof(T));
    return;
  }
  const Blocks blocks = blocks_for(n);
  for_each_block(n, blocks.count, [&](Index b) {
    const Span s = block_span(n, blocks, b);
    std::memcpy(dst + s.lo, src + s.lo, static_cast<std::size_t>(s.hi - s.lo) * sizeof(T));
  });
}

template <class T>
bool all_finite(Index n, const T* x) {
  if (n <= 0) return true;
  const Blocks blocks = blocks_for(n);
  bool ok[kMaxBlocks];
  for_each_block(n, blocks.count, [&](Index b) {
    const Span s = block_span(n, blocks, b);
    // v - v is 0 for finite v and NaN for NaN or +-inf; unlike std::isfinite it vectorizes.
    int finite = 1;
    for (Index i = s.lo; i < s.hi; ++i) finite &= static_cast<int>(x[i] - x[i] == T(0));
    ok[b] = finite != 0;
  });
  return std::all_of(ok, ok + blocks.count, [](bool v) { return v; });
}

#define AMARI_KERNELS_VECTOR_INSTANTIATE(T)          \
  template double dot<T>(Index, const T*, const T*); \
  template double sum<T>(Index, const T*);           \
  template void axpy<T>(Index, T, const T*, T*);     \
  template void xpby<T>(Index, const T*, T, T*);     \
  template void scal<T>(Index, T, T*);               \
  template void copy<T>(Index, const T*, T*);        \
  template bool all_finite<T>(Index, const T*);
AMARI_KERNELS_VECTOR_INSTANTIATE(float)
AMARI_KERNELS_VECTOR_INSTANTIATE(double)
#undef AMARI_KERNELS_VECTOR_INSTANTIATE

}  // namespace amari::kernels
