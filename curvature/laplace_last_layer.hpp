// Last-layer Laplace (Kristiadi et al. 2020; Daxberger et al. 2021; laplace-torch's
// FullLLLaplace): the posterior over the parameters of the model's last Linear layer only, the
// other parameters fixed at theta*, with the exact GGN of that layer as a dense matrix.
//
// The last layer z = phi W + b (the last Linear layer the forward pass taps, whose output must be
// the logits) has the flat parameters [W; b], W (in, out) row-major then b (out): index j * C + c
// for row j of [W; b] (j = in for the bias) and output c, C = out. With the augmented feature
// phi~ = (phi, 1) of example n (the layer's input, read through its layer tap), the Jacobian of
// z_n in these parameters is J_n = phi~_n^T (x) I_C, so the layer's GGN is
//   C = (1/N) sum_n (phi~_n phi~_n^T) (x) H_L(z_n),       ((in + 1) C)^2 entries,
// computed exactly from the features and the head's closed-form H_L (no Jacobian products): for
// each pair of outputs (c, c'), the block sum_n H_L(z_n)[c, c'] phi~_n phi~_n^T is one weighted
// Gram product. Cost: N (C^2 / 2) (in + 1)^2 multiply-adds to build, n^2 doubles (n = (in + 1) C)
// to store.
//
// The eigenvalues c_i of C are computed once (dense_solve.hpp, values only: the blocked reduction, about 4/3 n^3 flops), so
// log det(delta I + N C) = sum_i log(N c_i + delta) costs O(n) for any delta and the prior fit is
// cheap. Sigma = (delta I + N C)^{-1} is formed by a Cholesky factorization in double at every
// set_prior_precision (5/3 n^3 flops, at GEMM speed), whose factor L is kept for sampling
// (theta* + L^{-T} eps). The predictive is closed form:
// J(x) Sigma J(x)^T [c, c'] = sum_{j,j'} phi~_j phi~_j' Sigma[(j, c), (j', c')], one
// (B, in + 1) x (in + 1, C n) GEMM per chunk of B inputs.
//
// Layers above kLastLayerMaxParameters parameters are refused (ValueError naming the size): the
// dense matrix of 4096 parameters is 128 MiB, and its factorization the cost that grows fastest.
#pragma once

#include <string>
#include <vector>

#include <amari/curvature/laplace.hpp>

namespace amari::curvature {

/// The default limit on the last layer's parameter count (in + 1) C.
inline constexpr Index kLastLayerMaxParameters = 4096;

/// Where the last Linear layer of a model sits (found by its layer tap).
struct LastLayerInfo {
  std::size_t weight_index = 0;  ///< index of W in Model::layout()
  Index offset = 0;              ///< flat offset of W; b follows
  Index in = 0;                  ///< input features (phi)
  Index out = 0;                 ///< outputs C
  bool bias = false;
  /// (in + 1 with a bias) * out.
  Index num_parameters() const { return (in + (bias ? 1 : 0)) * out; }
};

/// Finds the last tapped layer of a forward pass on the first example of `inputs` (N, ...): it must
/// be Linear, with a contiguous [W; b], and its output must be the model's output (ValueError
/// otherwise, naming the model). ValueError if (in + 1) out > max_parameters.
template <Real T>
LastLayerInfo find_last_layer(const nn::Model<T>& model, const Tensor<T>& inputs,
                              Index max_parameters = kLastLayerMaxParameters);

/// The full-covariance Laplace approximation over the last Linear layer (see the file comment).
template <Real T>
class LastLayerLaplace final : public Laplace<T> {
 public:
  /// Training inputs (N, ...) and targets (N, C); builds the layer's GGN in one pass over them.
  LastLayerLaplace(const nn::Model<T>& model, const nn::Head<T>& head, const Tensor<T>& inputs,
                   const Tensor<T>& targets, const LaplaceOptions& options = {},
                   Index max_parameters = kLastLayerMaxParameters);
  /// "Laplace(last layer, in -> out, P=..)".
  std::string name() const override;
  using Laplace<T>::log_det_posterior_precision;
  /// With one delta for both groups (W and b): sum_i log(N c_i + delta) over the eigenvalues c_i
  /// of C (those below 0 from rounding set to 0), cost O(n). With different precisions: a
  /// Cholesky factorization of Lambda + N C, cost n^3 / 3.
  double log_det_posterior_precision(const std::vector<double>& deltas) const override;
  /// out = Sigma v (dense), v and out (n).
  void covariance_product(const Tensor<double>& v, Tensor<double>& out) const override;
  /// out = L^{-T} eps with L L^T = Lambda + N C (the Cholesky factor kept from the last prior
  /// change): Cov(L^{-T} eps) = (L L^T)^{-1} = Sigma. One triangular solve, n^2 flops.
  void covariance_sqrt_product(const Tensor<double>& eps, Tensor<double>& out) const override;
  /// The layer's GGN C (mean convention), (n, n).
  const Tensor<double>& curvature() const { return ggn_; }
  /// The eigenvalues of C, ascending, clamped at 0.
  const std::vector<double>& curvature_eigenvalues() const { return eigenvalues_; }
  /// Sigma = (Lambda + N C)^{-1} at the current prior precisions, (n, n).
  const Tensor<double>& covariance() const { return sigma_; }
  const LastLayerInfo& layer() const { return info_; }

 protected:
  void chunk_functional(const Tensor<T>& inputs, const PredictiveOptions& options,
                        Tensor<double>& mean, Tensor<double>& covariance) const override;
  void prior_precision_changed() override;

 private:
  LastLayerLaplace(const nn::Model<T>& model, const nn::Head<T>& head, const Tensor<T>& inputs,
                   const Tensor<T>& targets, const LaplaceOptions& options, LastLayerInfo info);
  /// phi~ (B, rows) and the logits (B, C) of a batch, by one plain forward pass with taps.
  void features(const Tensor<T>& inputs, Tensor<double>& phi, Tensor<T>& logits) const;
  void build_ggn(const Tensor<T>& inputs, Index batch_size);
  /// The Cholesky factor of diag(prior) + N C (ValueError naming `who` if not positive definite).
  Tensor<double> factored_precision(const char* who, const Tensor<double>& prior) const;

  LastLayerInfo info_;
  Tensor<double> ggn_, sigma_;
  Tensor<double> precision_factor_;  // L, lower, (n, n): n^2 more doubles, for sampling
  std::vector<double> eigenvalues_;
};

extern template class LastLayerLaplace<float>;
extern template class LastLayerLaplace<double>;
extern template LastLayerInfo find_last_layer<float>(const nn::Model<float>&, const Tensor<float>&,
                                                     Index);
extern template LastLayerInfo find_last_layer<double>(const nn::Model<double>&,
                                                      const Tensor<double>&, Index);

}  // namespace amari::curvature
