// The vector kernels of vector.hpp; see there for the threshold and the reduction.
#include <amari/autodiff/kernels/vector.hpp>

namespace amari::kernels {

template <class T>
double dot(Index n, const T* x, const T* y) {
  return block_sums<true>(n, dot_chunk(x, y), dot_element(x, y));
}

template <class T>
double sum(Index n, const T* x) {
  const auto chunk = [=](Index i, Sums& acc) {
    Lanes<T> xv;
    load(x + i, xv);
    Sums xd;
    widen(xv, xd);
    acc += xd;
  };
  const auto element = [=](Index i) { return static_cast<double>(x[i]); };
  return block_sums<true>(n, chunk, element);
}

template <class T>
void axpy(Index n, T alpha, const T* x, T* y) {
#pragma omp parallel for simd schedule(static) if (n >= kParallelElements)
  for (Index i = 0; i < n; ++i) y[i] += alpha * x[i];
}

template <class T>
void xpby(Index n, const T* x, T beta, T* y) {
#pragma omp parallel for simd schedule(static) if (n >= kParallelElements)
  for (Index i = 0; i < n; ++i) y[i] = x[i] + beta * y[i];
}

template <class T>
void scal(Index n, T alpha, T* x) {
#pragma omp parallel for simd schedule(static) if (n >= kParallelElements)
  for (Index i = 0; i < n; ++i) x[i] *= alpha;
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
