// Internal: a K-FAC factor A kept as the statistics rows behind it while they are few, and its
// damped inverse in the Woodbury form (KfacOptions::low_rank_inverses).
//
// A = sum_i w_i a_i a_i^T over r augmented input rows a_i of dimension d (the moving average of
// M&G 2015, sec. 5, written out row by row). While r <= d / 2 (train_cnn's first Linear: 32 rows
// per statistics update against d = 3137), the Woodbury identity gives its damped inverse from an
// r x r matrix instead of a d x d one:
//   (A + delta I)^{-1} = (I - C^T (delta I + C C^T)^{-1} C) / delta,   C = diag(sqrt(w)) R,
// with R the (r, d) rows. With P = (delta I + C C^T)^{-1} C stored beside C, applying it to a
// (d, cols) block X costs two (r, d) x (d, cols)-sized products, 4 r d cols flops against the
// dense inverse's 2 d^2 cols; building it costs about 4 r^2 d + r^3 flops (in double: C C^T, its
// Cholesky inverse, P) against the dense Cholesky inverse's d^3.
#pragma once

#include <optional>
#include <vector>

#include <amari/autodiff/tensor.hpp>

namespace amari::curvature::detail {

// The rows behind a factor: every statistics update so far added per_update[k - 1] rows (the k-th
// update's augmented rows, in order) to `rows`. Undefined (rows not defined) once there would be
// more than d / 2 of them; the factor is then dense only, for good (until reset_statistics).
template <Real T>
struct FactorRows {
  Tensor<T> rows;                 // (r, d), never written after it is stored (snapshots share it)
  std::vector<Index> per_update;  // one entry per update since the first; sums to r
  bool defined() const { return rows.defined(); }
};

// The weights w_i of the rows in the moving average with EMA weight eps_k = min(1 - 1/k, decay) on
// the old value at the k-th update (KfacOptions::decay): a row of update j, one of n_j, weighs
// (1 - eps_j) / n_j * prod_{k > j} eps_k. In double.
std::vector<double> factor_row_weights(const std::vector<Index>& per_update, double decay);

// old's rows followed by `count` rows of length d from `added` (row stride d), as a new tensor.
template <Real T>
FactorRows<T> with_rows_appended(const FactorRows<T>& old, const T* added, Index count, Index d);

// (A + delta I)^{-1} = (I - C^T P) / delta (see the file comment).
template <Real T>
struct WoodburyInverse {
  Tensor<T> c, p;  // (r, d) each
  double delta = 0;
  bool defined() const { return c.defined(); }
  Index rank() const { return defined() ? c.dim(0) : 0; }
};

// The damped inverse of the factor behind `rows` (weights from factor_row_weights(decay)), built in
// double and stored in T; std::nullopt if delta I + C C^T is not numerically positive definite.
template <Real T>
std::optional<WoodburyInverse<T>> woodbury_inverse(const FactorRows<T>& rows, double decay,
                                                   double delta);

// out = (A + delta I)^{-1} x for a (d, cols) row-major x; scratch holds rank() * cols values.
// out must not overlap x.
template <Real T>
void apply_woodbury_inverse(const WoodburyInverse<T>& inv, const T* x, Index cols, T* out,
                            T* scratch);

// The (d, d) matrix (I - C^T P) / delta itself, for callers that want the inverse as a matrix.
template <Real T>
Tensor<T> dense_woodbury_inverse(const WoodburyInverse<T>& inv);

}  // namespace amari::curvature::detail
