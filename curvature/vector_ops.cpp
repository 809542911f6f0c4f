// BLAS-1 vector operations; see vector_ops.hpp for the determinism contract.
#include <amari/curvature/vector_ops.hpp>

#include <amari/autodiff/kernels/elementwise.hpp>
#include <amari/curvature/detail/blocked.hpp>

#include <algorithm>
#include <cmath>
#include <string>

namespace amari::curvature {

// One parallel threshold for every vector loop of the library: the public constant of this header
// and the kernels' internal one must not drift apart.
static_assert(kParallelThreshold == kernels::kParallelElements);

namespace {

using detail::block_dot;
using detail::Blocks;
using detail::blocks_for;
using detail::for_each_block;
using detail::kMaxBlocks;

void check_same_length(const char* op, Index a, Index b) {
  if (a != b) {
    throw ShapeError(std::string(op) + ": vectors of " + std::to_string(a) + " and " +
                     std::to_string(b) + " elements, expected equal lengths");
  }
}

}  // namespace

template <Real T>
double dot(const Tensor<T>& x, const Tensor<T>& y) {
  const Index n = x.size();
  check_same_length("dot", n, y.size());
  if (n == 0) return 0.0;
  const Blocks blocks = blocks_for(n);
  double partial[kMaxBlocks];
  const T* xp = x.data();
  const T* yp = y.data();
  for_each_block(n, blocks, [&](Index b) {
    const Index lo = b * blocks.size;
    partial[b] = block_dot(xp, yp, lo, std::min(n, lo + blocks.size));
  });
  // Block sums are combined in block order, whatever thread produced them.
  double s = 0.0;
  for (Index b = 0; b < blocks.count; ++b) s += partial[b];
  return s;
}

template <Real T>
double norm(const Tensor<T>& x) {
  return std::sqrt(dot(x, x));
}

template <Real T>
void axpy(double alpha, const Tensor<T>& x, Tensor<T>& y) {
  const Index n = x.size();
  check_same_length("axpy", n, y.size());
  const T a = static_cast<T>(alpha);
  const T* xp = x.data();
  T* yp = y.data();
#pragma omp parallel for simd schedule(static) if (n >= kParallelThreshold)
  for (Index i = 0; i < n; ++i) yp[i] += a * xp[i];
}

template <Real T>
void xpby(const Tensor<T>& x, double beta, Tensor<T>& y) {
  const Index n = x.size();
  check_same_length("xpby", n, y.size());
  const T c = static_cast<T>(beta);
  const T* xp = x.data();
  T* yp = y.data();
#pragma omp parallel for simd schedule(static) if (n >= kParallelThreshold)
  for (Index i = 0; i < n; ++i) yp[i] = xp[i] + c * yp[i];
}

template <Real T>
void scal(double alpha, Tensor<T>& x) {
  const Index n = x.size();
  const T a = static_cast<T>(alpha);
  T* xp = x.data();
#pragma omp parallel for simd schedule(static) if (n >= kParallelThreshold)
  for (Index i = 0; i < n; ++i) xp[i] *= a;
}

template <Real T>
void copy(const Tensor<T>& src, Tensor<T>& dst) {
  const Index n = src.size();
  check_same_length("copy", n, dst.size());
  if (n == 0 || src.data() == dst.data()) return;
  const T* s = src.data();
  T* d = dst.data();
#pragma omp parallel for simd schedule(static) if (n >= kParallelThreshold)
  for (Index i = 0; i < n; ++i) d[i] = s[i];
}

template <Real T>
bool all_finite(const Tensor<T>& x) {
  const Index n = x.size();
  if (n == 0) return true;
  const Blocks blocks = blocks_for(n);
  bool ok[kMaxBlocks];
  const T* xp = x.data();
  for_each_block(n, blocks, [&](Index b) {
    const Index lo = b * blocks.size;
    const Index hi = std::min(n, lo + blocks.size);
    // v - v is 0 for finite v and NaN for NaN or +-inf; unlike std::isfinite it vectorizes.
    int finite = 1;
    for (Index i = lo; i < hi; ++i) finite &= static_cast<int>(xp[i] - xp[i] == T(0));
    ok[b] = finite != 0;
  });
  return std::all_of(ok, ok + blocks.count, [](bool v) { return v; });
}

#define AMARI_VECTOR_OPS_INSTANTIATE(T)                        \
  template double dot<T>(const Tensor<T>&, const Tensor<T>&);  \
  template double norm<T>(const Tensor<T>&);                   \
  template void axpy<T>(double, const Tensor<T>&, Tensor<T>&); \
  template void xpby<T>(const Tensor<T>&, double, Tensor<T>&); \
  template void scal<T>(double, Tensor<T>&);                   \
  template void copy<T>(const Tensor<T>&, Tensor<T>&);         \
  template bool all_finite<T>(const Tensor<T>&);
AMARI_VECTOR_OPS_INSTANTIATE(float)
AMARI_VECTOR_OPS_INSTANTIATE(double)
#undef AMARI_VECTOR_OPS_INSTANTIATE

}  // namespace amari::curvature
