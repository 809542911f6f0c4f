// Small dense symmetric linear algebra for the Kronecker factors of K-FAC (kfac.hpp) and the
// Laplace approximations (laplace_structures.hpp, laplace_last_layer.hpp): a blocked Cholesky
// factorization, the inverse of a symmetric positive definite matrix from its factor, the Gram
// product X^T X, and the symmetric eigendecomposition. Matrices are row-major rank-2 tensors, sized
// up to a few thousand (a K-FAC factor is (in + 1) x (in + 1) or out x out for one layer); nothing
// here is matrix-free.
//
// The factorizations run in double whatever the model's element type: a damped factor can be ill
// conditioned (condition numbers of 1e6 and more are common for the input factor of the first
// layer), and the O(n^3) work is amortized over many steps (K-FAC refreshes the inverses every few
// iterations only). Every O(n^3) part of the Cholesky routines and of the Gram product goes
// through the GEMM kernel in blocks of kDenseBlock columns, so they run at GEMM speed and are
// deterministic for a given thread count (kernels/gemm.hpp). The eigensolver uses GEMM for its
// blocked parts (trailing updates of the reduction, the back-transformation) only; its other
// parts are described at symmetric_eigen.
#pragma once

#include <vector>

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
/// and exactly symmetric. Cost: 2n^3/3 flops (triangular inverse n^3/3 by blocked GEMM, then the
/// lower half of L^{-T} L^{-1}, n^3/3: the zero triangles are skipped), in parallel over blocks.
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

/// A = V diag(values) V^T with V orthogonal.
struct SymmetricEigen {
  /// The eigenvalues, ascending.
  std::vector<double> values;
  /// (n, n) row-major; column i is the unit eigenvector of values[i].
  Tensor<double> vectors;
};

/// The eigendecomposition of a symmetric (n, n) matrix, read as (A + A^T) / 2 (ShapeError unless
/// square rank 2, ValueError naming the entry if one is not finite). n = 0 gives empty results.
/// Used for Kronecker factors: with A = Q_A diag(a) Q_A^T and G = Q_G diag(g) Q_G^T,
/// N (A (x) G) + delta I is diagonal in the basis Q_A (x) Q_G (Ritter et al. 2018, sec. 3: the
/// K-FAC Laplace; George et al. 2018: EKFAC's eigenbasis).
/// Method (Golub, Van Loan, "Matrix Computations", 4th ed., secs. 5.1, 8.3; LAPACK's dsytrd,
/// dsteqr and dormtr): blocked Householder reduction to tridiagonal T = Q^T A Q, implicit QL
/// with Wilkinson shifts on T, then V = Q Z for the eigenvectors Z of T.
/// Cost, about 9 n^3 flops: the reduction 4/3 n^3 (half in GEMM updates of the trailing lower
/// triangle, half in matrix-vector products, memory bound and serial); the QL about n^2 plane
/// rotations of rows of length n (1.03 n^2 measured at n = 785), about 6 n^3 flops applied to
/// contiguous rows in batches split over threads by columns; the back-transformation 2 n^3 in
/// GEMM calls (blocks of kDenseBlock reflections, I - V T V^T). About 2 n^2 doubles of scratch
/// besides the result. Error if the QL does not converge (60 sweeps for one eigenvalue). The
/// result is bitwise identical for any thread count.
SymmetricEigen symmetric_eigen(const Tensor<double>& a);

/// The eigenvalues only, ascending (errors as symmetric_eigen, and the same values bitwise). Cost:
/// the reduction (4/3 n^3 flops, see symmetric_eigen) plus O(n^2) for the QL.
std::vector<double> symmetric_eigenvalues(const Tensor<double>& a);

}  // namespace amari::curvature
