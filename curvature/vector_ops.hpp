// BLAS-1 style operations on flat vectors (rank-1 Tensor<T>), the vector arithmetic of the solvers
// (SEED-NOTES 5; conjugate gradient's inner loop fuses them further, detail/cg_kernels.hpp). Each
// checks the element counts and calls the vector kernel of the same name on the raw data
// (autodiff/kernels/vector.hpp): one pass of a simple loop the compiler vectorizes, split over
// OpenMP threads with static scheduling for vectors of 2^16 elements or more.
//
// Determinism: reductions (dot, norm) split the vector into blocks whose number and boundaries
// depend on the length only (never on the thread count), sum each block in a fixed lane order and
// combine the block sums in block order. The result is therefore bit-identical for any number of
// threads, with or without OpenMP, and for any start address of the data.
#pragma once

#include <amari/autodiff/tensor.hpp>

namespace amari::curvature {

/// sum_i x_i y_i, accumulated in double also for T = float (products formed in double).
/// x and y must have the same number of elements (ShapeError). Cost: 2n reads.
template <Real T>
double dot(const Tensor<T>& x, const Tensor<T>& y);

/// Euclidean norm sqrt(dot(x, x)), accumulated in double. No rescaling: the squares of entries
/// above ~1e154 (double) overflow to +inf, which callers treat as non-finite. Cost: n reads.
template <Real T>
double norm(const Tensor<T>& x);

/// y <- alpha x + y. alpha is rounded to T once. Same element count required (ShapeError).
/// Cost: 2n reads, n writes.
template <Real T>
void axpy(double alpha, const Tensor<T>& x, Tensor<T>& y);

/// y <- x + beta y (a CG direction update p = z + beta p). Same element count required
/// (ShapeError). Cost: 2n reads, n writes.
template <Real T>
void xpby(const Tensor<T>& x, double beta, Tensor<T>& y);

/// x <- alpha x. Cost: n reads, n writes.
template <Real T>
void scal(double alpha, Tensor<T>& x);

/// dst <- src (element copy; shapes may differ as long as the element counts agree, ShapeError
/// otherwise). Cost: n reads, n writes.
template <Real T>
void copy(const Tensor<T>& src, Tensor<T>& dst);

/// True if no element is NaN or +-inf. Cost: n reads.
template <Real T>
bool all_finite(const Tensor<T>& x);

#define AMARI_VECTOR_OPS_EXTERN(T)                                    \
  extern template double dot<T>(const Tensor<T>&, const Tensor<T>&);  \
  extern template double norm<T>(const Tensor<T>&);                   \
  extern template void axpy<T>(double, const Tensor<T>&, Tensor<T>&); \
  extern template void xpby<T>(const Tensor<T>&, double, Tensor<T>&); \
  extern template void scal<T>(double, Tensor<T>&);                   \
  extern template void copy<T>(const Tensor<T>&, Tensor<T>&);         \
  extern template bool all_finite<T>(const Tensor<T>&);
AMARI_VECTOR_OPS_EXTERN(float)
AMARI_VECTOR_OPS_EXTERN(double)
#undef AMARI_VECTOR_OPS_EXTERN

}  // namespace amari::curvature
