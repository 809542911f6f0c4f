// From the linearized model's distribution of the logits, f ~ N(m, S) per input (laplace.hpp), to
// predicted probabilities: the two link approximations of laplace-torch's GLM predictive.
//
//  - Probit (MacKay 1992, "The evidence framework applied to classification networks";
//    Daxberger et al. 2021): E[sigmoid(f)] ~ sigmoid(kappa m) with kappa = 1 / sqrt(1 + (pi/8) s^2),
//    from sigmoid(x) ~ Phi(sqrt(pi/8) x). For softmax, the same scaling of each logit by its own
//    variance, then softmax (laplace-torch: softmax(kappa * f_mu), kappa from diag(S)).
//  - Monte Carlo: the mean of softmax (or sigmoid per output) over K samples f_k = m + L eps_k,
//    L L^T = S (a Cholesky factor that keeps semi-definite S: a pivot <= 1e-14 max_c S_cc gives a
//    zero column), eps_k ~ N(0, I) from nn::Rng(seed, i) for input i, so a row's samples do not
//    depend on the other rows. Unbiased for E[softmax(f)]; standard error O(1/sqrt(K)).
#pragma once

#include <cstdint>

#include <amari/autodiff/tensor.hpp>

namespace amari::curvature {

/// The linearized model's distribution of the logits at B inputs.
struct FunctionalPosterior {
  /// (B, C): f(x_i; theta*).
  Tensor<double> mean;
  /// (B, C, C): J(x_i) Sigma J(x_i)^T.
  Tensor<double> covariance;
};

/// The regression predictive (Gaussian head) at B inputs.
struct RegressionPredictive {
  /// (B, C): f(x_i; theta*).
  Tensor<double> mean;
  /// (B, C): diag(J(x_i) Sigma J(x_i)^T) + sigma^2.
  Tensor<double> variance;
};

/// (B, C): softmax over c of m_ic / sqrt(1 + (pi/8) S_i,cc). ShapeError unless mean (B, C) and
/// covariance (B, C, C). Cost O(B C).
Tensor<double> probit_softmax(const FunctionalPosterior& f);
/// (B, C): sigmoid(m_ic / sqrt(1 + (pi/8) S_i,cc)) per output. ShapeError as probit_softmax.
Tensor<double> probit_sigmoid(const FunctionalPosterior& f);
/// (B, C): (1/K) sum_k softmax(m_i + L_i eps_ik), K = samples >= 1 (ValueError otherwise), input i
/// drawing from nn::Rng(seed, first_example + i). Cost O(B (C^3 + K C^2)).
Tensor<double> monte_carlo_softmax(const FunctionalPosterior& f, int samples, std::uint64_t seed,
                                   Index first_example = 0);
/// (B, C): (1/K) sum_k sigmoid(m_i + L_i eps_ik) per output; otherwise as monte_carlo_softmax.
Tensor<double> monte_carlo_sigmoid(const FunctionalPosterior& f, int samples, std::uint64_t seed,
                                   Index first_example = 0);

/// (B, C): softmax of each row of logits (B, C) (ShapeError unless rank 2). Cost O(B C).
Tensor<double> softmax_probabilities(const Tensor<double>& logits);
/// (B, C): sigmoid of each entry of logits (B, C) (ShapeError unless rank 2). Cost O(B C).
Tensor<double> sigmoid_probabilities(const Tensor<double>& logits);

}  // namespace amari::curvature
