// Internal (not part of the public API): a factor of the head's closed-form logit Hessian, shared
// by the curvature code that back-propagates "square roots" of H_L instead of products with it:
// KFLR (kfac.cpp; Botev et al. 2017) and the exact diagonal of the GGN (diag_ggn.cpp; BackPACK's
// DiagGGN, Dangel et al. 2020). With B_i B_i^T = H_L(z_i) (SEED-NOTES 3),
//   G = (1/N) sum_i J_i^T H_L(z_i) J_i = (1/N) sum_i sum_c (J_i^T b_{i,c}) (J_i^T b_{i,c})^T,
// so every column c of B needs one reverse sweep of the recorded batch (all examples at once).
#pragma once

#include <algorithm>
#include <cmath>
#include <vector>

#include <amari/autodiff/tensor.hpp>
#include <amari/nn/heads.hpp>

namespace amari::curvature::detail {

// Columns of a symmetric factor B_i B_i^T = H_L(z_i) for every example: factors[c] is (N, C) with
// row i the c-th column of B_i. H_L(z_i) comes from C head.hessian_product() calls on unit
// vectors; B_i is its lower Cholesky factor, with a zero column where the pivot is at roundoff
// level (H_L is only semi-definite, e.g. softmax's has the null vector 1).
template <Real T>
inline std::vector<Tensor<T>> logit_hessian_factor(const nn::Head<T>& head, const Tensor<T>& z) {
  const Index n = z.dim(0), c = z.dim(1);
  std::vector<double> h(static_cast<std::size_t>(n * c * c));  // h[i][r][k] = H_L(z_i)[r, k]
  Tensor<T> e(z.shape()), col = Tensor<T>::uninitialized(z.shape());
  for (Index k = 0; k < c; ++k) {
    e.fill(T(0));
    for (Index i = 0; i < n; ++i) e[i * c + k] = T(1);
    head.hessian_product(z, e, col);
    for (Index i = 0; i < n; ++i)
      for (Index r = 0; r < c; ++r)
        h[static_cast<std::size_t>((i * c + r) * c + k)] = static_cast<double>(col[i * c + r]);
  }
  std::vector<Tensor<T>> factors;
  for (Index k = 0; k < c; ++k) factors.push_back(Tensor<T>(z.shape()));
  std::vector<double> l(static_cast<std::size_t>(c * c));
  for (Index i = 0; i < n; ++i) {
    const double* hi = h.data() + i * c * c;
    double max_diag = 0;
    for (Index r = 0; r < c; ++r) max_diag = std::max(max_diag, std::fabs(hi[r * c + r]));
    const double tol = 1e-13 * max_diag;
    std::fill(l.begin(), l.end(), 0.0);
    for (Index k = 0; k < c; ++k) {
      double d = hi[k * c + k];
      for (Index j = 0; j < k; ++j)
        d -= l[static_cast<std::size_t>(k * c + j)] * l[static_cast<std::size_t>(k * c + j)];
      if (!(d > tol)) continue;  // zero column
      const double lkk = std::sqrt(d);
      l[static_cast<std::size_t>(k * c + k)] = lkk;
      for (Index r = k + 1; r < c; ++r) {
        double s = hi[r * c + k];
        for (Index j = 0; j < k; ++j)
          s -= l[static_cast<std::size_t>(r * c + j)] * l[static_cast<std::size_t>(k * c + j)];
        l[static_cast<std::size_t>(r * c + k)] = s / lkk;
      }
    }
    for (Index k = 0; k < c; ++k)
      for (Index r = 0; r < c; ++r)
        factors[static_cast<std::size_t>(k)][i * c + r] =
            static_cast<T>(l[static_cast<std::size_t>(r * c + k)]);
  }
  return factors;
}

}  // namespace amari::curvature::detail
