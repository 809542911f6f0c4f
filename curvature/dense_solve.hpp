// Small dense symmetric linear algebra for the Kronecker factors of K-FAC (kfac.hpp): a blocked
// Cholesky factorization, the inverse of a symmetric positive definite matrix from its factor, and
// the Gram product X^T X. Matrices are row-major rank-2 tensors, sized up to a few thousand (a
// K-FAC factor is (in + 1) x (in + 1) or out x out for one layer); nothing here is matrix-free.
//
// The factorization and the inverse run in double whatever the model's element type: a damped
// factor can be ill conditioned (condition numbers of 1e6 and more are common for the input
// factor of the first layer), and the O(n^3) work is amortized over many steps (K-FAC refreshes
// the inverses every few iterations only). Every O(n^3) part goes through the GEMM kernel in
// blocks of kDenseBlock columns, so it runs at GEMM speed and is deterministic for a given thread
// count (kernels/gemm.hpp).
#pragma once

#include <amari/autodiff/tensor.hpp>

namespace amari::curvature {

/// Column block of the blocked algorithms below (panel width of the Cholesky factorization).
inline constexpr Index kDenseBlock = 64;

/// In-place Cholesky factorization A = L L^T of a symmetric positive definite n x n matrix
/// (shape (n, n); ShapeError otherwise). Only the lower triangle of `a` is read. On success the
/// lower triangle holds L, the strict upper triangle is set to zero, and the result is -1. If a
/// pivot is not positive and finite (A is not positive definite to working precision, or holds
/// NaN/inf), returns the index of that pivot and leaves `a` partially overwritten.
/// Right-looking blocked algorithm: the trailing submatrix is updated by GEMM on the lower block
/// columns only. Cost: n^3/3 flops.
Index cholesky_in_place(Tensor<double>& a);

/// Overwrites a Cholesky factor L (as left by cholesky_in_place) with A^{-1} = L^{-T} L^{-1}, full
/// and exactly symmetric. Cost: 4n^3/3 flops (triangular inverse 2n^3/3 by blocked GEMM, then the
/// lower half of L^{-T} L^{-1}, 2n^3/3).
void cholesky_inverse_in_place(Tensor<double>& l);

/// Solves A X = B for X given the Cholesky factor L of A (n, n) and B (n, k) (or (n)), which is
/// overwritten by X. Two triangular substitutions; cost 2 n^2 k flops. ShapeError on mismatch.
void cholesky_solve_in_place(const Tensor<double>& l, Tensor<double>& b);

/// The inverse of a symmetric positive definite matrix (n, n), computed in double: Cholesky, then
/// cholesky_inverse_in_place. ValueError naming the pivot if A is not positive definite.
/// Cost: 5n^3/3 flops.
Tensor<double> spd_inverse(const Tensor<double>& a);

/// C <- alpha X^T X + beta C for X with m rows and n columns (row i starts at x + i * ldx) and C
/// n x n (row stride ldc): the lower triangle by GEMM on block columns, then mirrored, so C is
/// exactly symmetric; only the lower triangle of C is read (C is taken as symmetric), and not at
/// all when beta == 0. Cost: m n^2 flops (half of a GEMM). Used for the
/// K-FAC factors a^T a / N and delta^T delta / N.
template <Real T>
void symmetric_gram(Index m, Index n, double alpha, const T* x, Index ldx, double beta, T* c,
                    Index ldc);

extern template void symmetric_gram<float>(Index, Index, double, const float*, Index, double,
                                           float*, Index);
extern template void symmetric_gram<double>(Index, Index, double, const double*, Index, double,
                                            double*, Index);

}  // namespace amari::curvature
