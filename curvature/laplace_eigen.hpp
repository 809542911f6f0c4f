// The eigendecomposition of a small dense symmetric matrix, in double: what the K-FAC Laplace
// approximation needs of its Kronecker factors (laplace.hpp). For A = Q_A diag(a) Q_A^T and
// G = Q_G diag(g) Q_G^T, the posterior precision N (A (x) G) + delta I is diagonal in the basis
// Q_A (x) Q_G with eigenvalues N a_i g_j + delta, so its log determinant and its inverse cost no
// more than the two decompositions (Ritter et al. 2018, sec. 3; laplace-torch's KronDecomposed).
//
// Method (Golub, Van Loan, "Matrix Computations", 4th ed., secs. 8.3.1 and 8.3.3): Householder
// reduction to a symmetric tridiagonal T = Q^T A Q, the implicit QL algorithm with Wilkinson
// shifts on T (symmetric_tridiagonal_eigen of lanczos.hpp), then the eigenvectors Q Z by applying
// the reflections to the eigenvectors Z of T. Sized for K-FAC factors (up to about a thousand
// rows: one input factor of a 784-wide layer is 785 x 785) and, eigenvalues only, for the dense
// last-layer GGN (a few thousand rows); it is not blocked.
#pragma once

#include <vector>

#include <amari/autodiff/tensor.hpp>

namespace amari::curvature {

/// A = V diag(values) V^T with V orthogonal.
struct SymmetricEigen {
  /// The eigenvalues, ascending.
  std::vector<double> values;
  /// (n, n) row-major; column i is the unit eigenvector of values[i].
  Tensor<double> vectors;
};

/// The eigendecomposition of a symmetric (n, n) matrix, read as (A + A^T) / 2 (ShapeError unless
/// square rank 2, ValueError naming the entry if one is not finite). n = 0 gives empty results.
/// Cost: about 7 n^3 flops (4/3 n^3 for the reduction, 3 n^3 for QL with vectors, 2 n^3 for the
/// back-transformation), n^2 doubles of scratch. Error (from the QL) if it does not converge.
SymmetricEigen symmetric_eigen(const Tensor<double>& a);

/// The eigenvalues only, ascending (errors as symmetric_eigen). Cost: the reduction (4/3 n^3
/// flops, memory bound: it streams the lower triangle twice per column) plus O(n^2) for QL.
std::vector<double> symmetric_eigenvalues(const Tensor<double>& a);

}  // namespace amari::curvature
