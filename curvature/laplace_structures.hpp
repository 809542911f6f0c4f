// Three structures of the curvature C of a Laplace approximation over all P parameters
// (laplace.hpp): posterior precision delta I + N C, C in the mean-over-examples convention.
//
// | structure | C                               | log det(delta I + N C)                     | Sigma v          |
// | diagonal  | diag(d), d given (P)            | sum_p log(delta + N d_p): O(P)             | O(P)             |
// | K-FAC     | blockdiag_l(A_l (x) G_l) (+ c I) | sum_l sum_ij log(N a_i g_j + delta): O(sum rows out) | 2 rows out (rows + out) per layer |
// | low rank  | U diag(l) U^T (+ diag(d))       | determinant lemma: O(P k^2 + k^3)          | O(P k)           |
//
// With per-group prior precisions (laplace.hpp) delta becomes the diagonal Lambda of the groups'
// precisions: diagonal and low rank take any groups (one per parameter tensor by default); K-FAC
// has one group per layer [W; b] (and one per untapped parameter tensor), so each Kronecker block
// keeps a single delta_l and the formulas above hold block by block with delta_l.
//
// The predictive's J_i Sigma J_i^T uses the per-layer Jacobians (laplace_jacobians.hpp) when every
// parameter sits in a tapped Linear layer: for the diagonal, sum_{j,k} a_ij^2 e_ick e_ic'k /
// (delta + N d_jk) per layer; for K-FAC the same in the eigenbases of A and G with the eigenvalues
// N a_j g_k + delta; for low rank the diagonal part that way and the rank-k correction from k
// tangent sweeps of the recorded chunk. Otherwise (convolutions, untapped parameters) it uses C
// per-example reverse sweeps and C products Sigma v per input.
#pragma once

#include <string>
#include <utility>
#include <vector>

#include <amari/curvature/kfac.hpp>
#include <amari/curvature/lanczos.hpp>
#include <amari/curvature/laplace.hpp>
#include <amari/curvature/linear_operator.hpp>

namespace amari::curvature {

/// Diagonal Laplace: C = diag(d) for a curvature diagonal d supplied by the caller, in the mean
/// convention (e.g. the diagonal of the GGN of the mean loss over the training set; or a
/// Hutchinson estimate, diagonal_estimate of trace_estimators.hpp, with negative entries raised to
/// 0 by the caller). Posterior precision delta + N d_p per parameter.
template <Real T>
class DiagonalLaplace final : public Laplace<T> {
 public:
  /// diagonal (P) finite and >= 0 (ShapeError / ValueError naming the first bad index); inputs
  /// (N, ...) and targets (N, C) are the training data (for N and log p(D | theta*)).
  DiagonalLaplace(const nn::Model<T>& model, const nn::Head<T>& head, const Tensor<T>& inputs,
                  const Tensor<T>& targets, const Tensor<T>& diagonal,
                  const LaplaceOptions& options = {});
  /// "Laplace(diagonal, P=..)".
  std::string name() const override;
  using Laplace<T>::log_det_posterior_precision;
  /// sum_p log(delta_p + N d_p), delta_p the precision of p's group. Cost O(P).
  double log_det_posterior_precision(const std::vector<double>& deltas) const override;
  /// out = v / (delta + N d). Cost O(P).
  void covariance_product(const Tensor<double>& v, Tensor<double>& out) const override;
  /// out = eps / sqrt(delta + N d) (Sigma^{1/2}, Sigma diagonal). Cost O(P).
  void covariance_sqrt_product(const Tensor<double>& eps, Tensor<double>& out) const override;
  /// d, (P) in double.
  const Tensor<double>& curvature_diagonal() const { return d_; }

 protected:
  bool layerwise_covariance(BatchJacobians<T>& jac, Tensor<double>& covariance) const override;

 private:
  Tensor<double> d_;
};

/// K-FAC Laplace (Ritter et al. 2018): C = blockdiag_l(A_l (x) G_l) from a KroneckerFactors after
/// at least one update (ValueError otherwise), and untapped_curvature * I on the parameters in no
/// tapped layer: exactly the matrix of KfacOperator(factors, 0), so delta I + N C is the posterior
/// precision (set KfacOptions::untapped_curvature = 0 to give those parameters the prior only).
/// A_l and G_l are taken as they are: for the GGN's Kronecker factors of the whole training set,
/// accumulate them with KfacFisher::kflr over all batches with decay close to 1 (the moving
/// average is then the mean over batches). Both factors are eigendecomposed once, in double
/// (dense_solve.hpp); eigenvalues below 0 (rounding of a positive semi-definite factor) are set
/// to 0. The factors are read at construction only.
template <Real T>
class KfacLaplace final : public Laplace<T> {
 public:
  KfacLaplace(const nn::Model<T>& model, const nn::Head<T>& head, const Tensor<T>& inputs,
              const Tensor<T>& targets, const KroneckerFactors<T>& factors,
              const LaplaceOptions& options = {});
  /// "Laplace(K-FAC, L layers, P=..)".
  std::string name() const override;
  using Laplace<T>::log_det_posterior_precision;
  /// sum_l sum_ij log(N a_i g_j + delta_l) + sum over untapped parameters p of log(N c + delta_p).
  double log_det_posterior_precision(const std::vector<double>& deltas) const override;
  /// Per layer: Q_A ((Q_A^T X Q_G) / (N a_i g_j + delta_l)) Q_G^T for the block X (rows, out);
  /// v / (N c + delta_p) on untapped parameters.
  void covariance_product(const Tensor<double>& v, Tensor<double>& out) const override;
  /// S_l = (Q_A (x) Q_G) diag(1/sqrt(N a_i g_j + delta_l)) per layer (S_l S_l^T = Sigma_l; not
  /// symmetric), applied to the block E (rows, out) of eps as
  /// Q_A (E / sqrt(N a_i g_j + delta_l)) Q_G^T; eps / sqrt(N c + delta_p) on untapped parameters.
  /// Cost: 2 GEMMs per layer (half of covariance_product).
  void covariance_sqrt_product(const Tensor<double>& eps, Tensor<double>& out) const override;

 protected:
  bool layerwise_covariance(BatchJacobians<T>& jac, Tensor<double>& covariance) const override;

 private:
  struct Block {
    Index offset = 0, rows = 0, out = 0;
    std::vector<double> a_values, g_values;  // ascending, >= 0
    Tensor<double> a_vectors, g_vectors;     // columns are eigenvectors
  };
  std::vector<Block> blocks_;
  std::vector<std::pair<Index, Index>> untapped_;
  Index untapped_count_ = 0;
  double untapped_curvature_ = 0;
};

/// Low-rank plus diagonal Laplace: C = U diag(l) U^T + diag(d), with (l, U) the `rank` largest
/// eigenpairs of a curvature operator (mean convention, e.g. a DatasetOperator of the GGN over the
/// training set) by Lanczos (lanczos.hpp; Ritz values below 0 are set to 0), and d an optional
/// diagonal (P, finite, >= 0; zero when absent; e.g. max(diag(GGN) - diag(U diag(l) U^T), 0) to
/// keep the diagonal of the GGN). With B = delta + N d and W = U diag(sqrt(N l)), the posterior
/// precision is diag(B) + W W^T (with per-group precisions B = delta_p + N d_p), so by the matrix determinant lemma and Woodbury's identity
///   log det = sum_p log B_p + log det K,   Sigma = B^{-1} - B^{-1} W K^{-1} W^T B^{-1},
///   K = I_k + W^T B^{-1} W (k x k, Cholesky in double).
/// The Ritz vectors are kept in double (rank * P doubles).
template <Real T>
class LowRankLaplace final : public Laplace<T> {
 public:
  /// Runs lanczos(curvature, rank, lanczos) for the largest pairs (ValueError for rank < 1 or a
  /// size other than P; its status is kept in lanczos_status()).
  LowRankLaplace(const nn::Model<T>& model, const nn::Head<T>& head, const Tensor<T>& inputs,
                 const Tensor<T>& targets, LinearOperator<T>& curvature, int rank,
                 const LanczosOptions& lanczos = {}, const Tensor<T>* diagonal = nullptr,
                 const LaplaceOptions& options = {});
  /// From eigenpairs computed elsewhere (e.g. a lanczos() result's `largest`, reused to form the
  /// diagonal correction): at least one pair, vectors of length P (ValueError / ShapeError).
  LowRankLaplace(const nn::Model<T>& model, const nn::Head<T>& head, const Tensor<T>& inputs,
                 const Tensor<T>& targets, const RitzPairs<T>& pairs,
                 const Tensor<T>* diagonal = nullptr, const LaplaceOptions& options = {});
  /// "Laplace(low rank k (+ diagonal), P=..)".
  std::string name() const override;
  using Laplace<T>::log_det_posterior_precision;
  /// sum_p log B_p + log det K, B_p = delta_p + N d_p. Cost O(P k^2 + k^3).
  double log_det_posterior_precision(const std::vector<double>& deltas) const override;
  /// Woodbury (see the class comment). Cost O(P k).
  void covariance_product(const Tensor<double>& v, Tensor<double>& out) const override;
  /// Exact: S = B^{-1/2} (I + W~ V diag(-1 / (s_m (s_m + 1))) V^T W~^T), W~ = B^{-1/2} W, with
  /// K = I + W~^T W~ = V diag(s_m^2) V^T (eigendecomposed, k x k, at every prior change). S is
  /// symmetric and S^2 = B^{-1/2} (I + W~ W~^T)^{-1} B^{-1/2} = Sigma, since on the range of W~ the
  /// middle factor scales by 1 / s_m. Applied as y + V_w c with y = B^{-1/2} eps,
  /// c = V diag(..) V^T (W^T y) and V_w = B^{-1} W. Cost O(P k + k^2).
  void covariance_sqrt_product(const Tensor<double>& eps, Tensor<double>& out) const override;
  /// l, descending (clamped at 0).
  const std::vector<double>& eigenvalues() const { return values_; }
  /// U: the Ritz vectors, (P) each.
  const std::vector<Tensor<double>>& eigenvectors() const { return vectors_; }
  /// How the Lanczos run ended, and its message.
  SpectrumStatus lanczos_status() const { return status_; }
  const std::string& lanczos_message() const { return message_; }

 protected:
  bool layerwise_covariance(BatchJacobians<T>& jac, Tensor<double>& covariance) const override;
  void prior_precision_changed() override;

 private:
  // B^{-1} (P), K's Cholesky factor (k x k) and V = B^{-1} W (k vectors) at delta.
  struct Factored {
    Tensor<double> b_inverse;
    Tensor<double> k_factor;
    std::vector<Tensor<double>> v;
    // For covariance_sqrt_product: K's eigenvectors (k, k), the coefficients
    // -1 / (s (s + 1)) with s = sqrt of K's eigenvalues, and B^{-1/2} (P).
    Tensor<double> k_vectors;
    std::vector<double> sqrt_coefficients;
    Tensor<double> b_inverse_sqrt;
  };
  Factored factor(const Tensor<double>& prior) const;  // prior: delta_p per parameter
  void take_pairs(const RitzPairs<T>& pairs, const Tensor<T>* diagonal);

  std::vector<double> values_;
  std::vector<Tensor<double>> vectors_;
  Tensor<double> d_;  // (P); zeros without a diagonal
  bool has_diagonal_ = false;
  SpectrumStatus status_ = SpectrumStatus::converged;
  std::string message_;
  Factored current_;
  std::vector<Tensor<T>> v_model_;  // current_.v in T, for tangent sweeps
};

extern template class DiagonalLaplace<float>;
extern template class DiagonalLaplace<double>;
extern template class KfacLaplace<float>;
extern template class KfacLaplace<double>;
extern template class LowRankLaplace<float>;
extern template class LowRankLaplace<double>;

}  // namespace amari::curvature
