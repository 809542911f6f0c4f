// The Laplace approximation around a trained model (MacKay 1992; Ritter et al. 2018; Immer et al.
// 2021; Daxberger et al. 2021, "Laplace Redux", and its library laplace-torch): the posterior over
// the parameters theta (all of them, or the last layer's) is approximated by the Gaussian
//   p(theta | D) ~ N(theta*, Sigma),   Sigma^{-1} = delta I + N C,
// with theta* the trained parameters (the MAP of the data's NLL plus the prior's (delta/2)|theta|^2),
// the Gaussian prior N(0, delta^{-1} I) of precision delta > 0, N the number of training examples,
// and C a curvature of the mean training loss at theta*: the GGN (= the Fisher for amari's heads,
// SEED-NOTES 3) in the mean-over-examples convention of GgnOperator, so N C is the curvature of the
// summed NLL. The structures of C (laplace_structures.hpp, laplace_last_layer.hpp): diagonal,
// K-FAC, a dense matrix over the last Linear layer, and low rank (Lanczos) plus diagonal.
//
// Log marginal likelihood (the Laplace evidence; MacKay 1992; laplace-torch's
// BaseLaplace.log_marginal_likelihood), with P the number of parameters of the posterior:
//   log p(D) ~ log p(D | theta*) + log p(theta*) + (P/2) log 2 pi - (1/2) log det(Sigma^{-1})
//            = log p(D | theta*) - (1/2) [log det(Sigma^{-1}) - P log delta] - (delta/2)|theta*|^2,
// since log p(theta*) = -(P/2) log 2 pi + (P/2) log delta - (delta/2)|theta*|^2. laplace-torch
// writes the same as log_likelihood - (log_det_ratio + scatter) / 2. log p(D | theta*) =
// sum_n log r(y_n | f(x_n; theta*)) is the full log likelihood of the training set, including the
// Gaussian head's constant (C/2) log(2 pi sigma^2) per example.
//
// Prior precision fit: maximize the log marginal likelihood over delta with theta* and C fixed.
// With Sigma^{-1} = delta I + M and M symmetric positive semi-definite (every structure here), in
// t = log delta the objective has the derivative
//   (1/2) [ sum_i m_i / (m_i + e^t) - e^t |theta*|^2 ]    (m_i the eigenvalues of M),
// which decreases in t: the objective is concave in log delta, so a bracketing search finds its
// maximum. fit_prior_precision evaluates a log-spaced grid, then refines by golden-section search
// between the best grid point's neighbours (deterministic, no gradient, robust to a flat
// objective; laplace-torch instead runs Adam on log delta or a grid search).
//
// Predictive (the linearized or GLM predictive; Immer et al. 2021): f_lin(x) = f(x; theta*) +
// J(x) (theta - theta*), so f(x) ~ N(f(x; theta*), J(x) Sigma J(x)^T), a C x C covariance per
// input, formed from Jacobian products (laplace_jacobians.hpp), never from J of a whole batch.
// Classification: the probit approximation (MacKay 1992; laplace-torch's link_approx='probit')
// softmax(kappa * f) with kappa_c = 1 / sqrt(1 + (pi/8) var_c), or Monte-Carlo averages of
// softmax (sigmoid for the Bernoulli head) over seeded logit samples; regression (Gaussian head):
// mean f and variance diag(J Sigma J^T) + sigma^2.
//
// Every forward pass here runs in the model's current mode: put a model with dropout or batch norm
// in eval mode (model.eval()) before building the approximation.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <amari/autodiff/tensor.hpp>
#include <amari/curvature/laplace_jacobians.hpp>
#include <amari/curvature/laplace_predictive.hpp>
#include <amari/nn/heads.hpp>
#include <amari/nn/model.hpp>

namespace amari::curvature {

/// The output family of a head, which fixes the log likelihood's constant and the predictive link.
enum class LaplaceLikelihood {
  categorical,  ///< nn::SoftmaxCrossEntropy: classes, softmax link
  bernoulli,    ///< nn::SigmoidBernoulli: independent binary outputs, sigmoid link
  gaussian      ///< nn::Gaussian: regression with fixed sigma, identity link
};

/// "categorical", "bernoulli" or "gaussian".
const char* to_string(LaplaceLikelihood likelihood);

/// The likelihood of one of amari's three heads; ValueError naming the head for any other.
template <Real T>
LaplaceLikelihood likelihood_of(const nn::Head<T>& head);

/// log p(D | theta) = sum_n log r(y_n | f(x_n; theta)) at the model's current parameters, over
/// inputs (N, ...) and targets (N, C) in batches of `batch_size` (plain forward passes in the
/// model's mode). For the Gaussian head it includes the constant (C/2) log(2 pi sigma^2) per
/// example. ShapeError if N differs or N = 0, ValueError for batch_size < 1 or another head.
template <Real T>
double log_likelihood(const nn::Model<T>& model, const nn::Head<T>& head, const Tensor<T>& inputs,
                      const Tensor<T>& targets, Index batch_size = 256);

/// Options of every Laplace approximation.
struct LaplaceOptions {
  /// delta > 0: the precision of the prior N(0, delta^{-1} I); fit_prior_precision changes it.
  double prior_precision = 1.0;
  /// Examples per forward pass over the training data (> 0).
  Index batch_size = 256;
};

/// Which Jacobian form the predictive uses (laplace_jacobians.hpp).
enum class PredictiveJacobians {
  automatic,   ///< per layer when the structure and the model allow it, else per example
  per_example  ///< per example always (any model; C reverse sweeps per input)
};

/// Options of the predictive.
struct PredictiveOptions {
  /// Test inputs per recorded forward pass (> 0).
  Index batch_size = 256;
  /// How Jacobians are formed; both give the same covariance up to rounding.
  PredictiveJacobians jacobians = PredictiveJacobians::automatic;
  /// Logit samples per input of the Monte-Carlo predictive (> 0).
  int samples = 100;
  /// Seed of the Monte-Carlo samples: input i uses the stream nn::Rng(seed, i).
  std::uint64_t seed = 0;
};

/// Options of fit_prior_precision. The search is over log delta in
/// [log10_min, log10_max] * log(10).
struct PriorFitOptions {
  double log10_min = -4;     ///< finite, < log10_max
  double log10_max = 4;      ///< finite
  int grid_points = 17;      ///< >= 3, log-spaced including both ends
  double tolerance = 1e-6;   ///< > 0: golden section stops when its bracket in log delta is this narrow
  int max_iterations = 200;  ///< >= 0: golden-section iterations at most
};

/// What fit_prior_precision found.
struct PriorFit {
  /// The maximizing delta (now the approximation's prior precision).
  double prior_precision = 0;
  /// The log marginal likelihood there.
  double log_marginal_likelihood = 0;
  /// Log marginal likelihood evaluations (grid + golden section).
  int evaluations = 0;
  /// True when the maximum is at an end of the search range (within the tolerance): the range may
  /// be too narrow.
  bool at_boundary = false;
  /// The grid of delta values and their log marginal likelihoods.
  std::vector<double> grid;
  std::vector<double> grid_log_marginal_likelihood;
};

/// The Laplace approximation N(theta*, Sigma), Sigma^{-1} = delta I + N C, over the parameters
/// [offset, offset + size) of a model (all of them, or the last layer's); see the file comment.
/// The model and head are referenced and must outlive the approximation, and the model's
/// parameters must stay at theta* (the predictive checks this: ValueError otherwise).
template <Real T>
class Laplace {
 public:
  virtual ~Laplace() = default;
  Laplace(const Laplace&) = delete;
  Laplace& operator=(const Laplace&) = delete;

  /// "Laplace(diagonal, P=..)" and the like.
  virtual std::string name() const = 0;
  /// The number of parameters of the posterior (P, or the last layer's).
  Index size() const { return size_; }
  /// Flat offset of those parameters in the model.
  Index offset() const { return offset_; }
  /// N, the number of training examples.
  double num_data() const { return num_data_; }
  /// log p(D | theta*) (see log_likelihood()).
  double log_likelihood() const { return log_likelihood_; }
  /// The head's output family.
  LaplaceLikelihood likelihood() const { return likelihood_; }
  /// theta* restricted to the posterior's parameters, (size()) in double.
  const Tensor<double>& posterior_mean() const { return mean_; }
  /// delta.
  double prior_precision() const { return prior_precision_; }
  /// Sets delta > 0 (ValueError otherwise). The last-layer structure refactors its dense
  /// precision here (laplace_last_layer.hpp).
  void set_prior_precision(double delta);

  /// log det(delta I + N C) for any delta > 0 (ValueError otherwise), in double.
  virtual double log_det_posterior_precision(double delta) const = 0;
  /// The same at the current prior precision.
  double log_det_posterior_precision() const { return log_det_posterior_precision(prior_precision_); }
  /// out = Sigma v = (delta I + N C)^{-1} v at the current delta; v and out (size()), double.
  virtual void covariance_product(const Tensor<double>& v, Tensor<double>& out) const = 0;

  /// The log marginal likelihood at delta > 0 (see the file comment).
  double log_marginal_likelihood(double delta) const;
  /// The same at the current prior precision.
  double log_marginal_likelihood() const { return log_marginal_likelihood(prior_precision_); }
  /// Maximizes the log marginal likelihood over delta (grid, then golden section; see the file
  /// comment) and sets the prior precision to the maximizer. A delta where the value is not finite
  /// or the posterior precision is not numerically positive definite counts as -infinity.
  /// ValueError for bad options, or if no delta of the range gives a finite value.
  PriorFit fit_prior_precision(const PriorFitOptions& options = {});

  /// f(x; theta*) and J Sigma J^T at inputs (B, ...), in chunks of options.batch_size.
  /// ValueError if the model's parameters are no longer theta*.
  FunctionalPosterior functional_posterior(const Tensor<T>& inputs,
                                           const PredictiveOptions& options = {}) const;
  /// Class probabilities (B, C) by the probit approximation: softmax(kappa * f) (categorical) or
  /// sigmoid(kappa * f) per output (Bernoulli). ValueError for the Gaussian head.
  Tensor<double> predict_probit(const Tensor<T>& inputs, const PredictiveOptions& options = {}) const;
  /// Class probabilities (B, C) by Monte Carlo: the mean of softmax (or sigmoid) over
  /// options.samples draws of f ~ N(mean, covariance). ValueError for the Gaussian head.
  Tensor<double> predict_monte_carlo(const Tensor<T>& inputs,
                                     const PredictiveOptions& options = {}) const;
  /// Predictive mean and variance for the Gaussian head (ValueError for the others).
  RegressionPredictive predict_regression(const Tensor<T>& inputs,
                                          const PredictiveOptions& options = {}) const;

  const nn::Model<T>& model() const { return *model_; }
  const nn::Head<T>& head() const { return *head_; }

 protected:
  /// Computes N and log p(D | theta*) from the training data (one pass) and keeps theta*.
  /// ShapeError / ValueError for bad data or options (naming `who`).
  Laplace(const char* who, const nn::Model<T>& model, const nn::Head<T>& head,
          const Tensor<T>& inputs, const Tensor<T>& targets, const LaplaceOptions& options,
          Index offset, Index size);
  /// Logit means (B, C) and covariances (B, C, C, zero on entry) of one chunk of inputs. The
  /// default records the chunk (BatchJacobians), uses layerwise_covariance() when allowed and
  /// it accepts, else per-example Jacobians and covariance_product().
  virtual void chunk_functional(const Tensor<T>& inputs, const PredictiveOptions& options,
                                Tensor<double>& mean, Tensor<double>& covariance) const;
  /// The per-layer covariance of a recorded chunk (jac.layerwise() is true); returns false to fall
  /// back to per-example Jacobians. Default: false.
  virtual bool layerwise_covariance(BatchJacobians<T>& jac, Tensor<double>& covariance) const;
  /// Called by set_prior_precision after delta changed (to refactor cached matrices).
  virtual void prior_precision_changed() {}
  /// Checks delta > 0 and finite (ValueError naming `who`).
  static void check_delta(const char* who, double delta);

 private:
  void check_parameters_unchanged(const char* who) const;

  const nn::Model<T>* model_;
  const nn::Head<T>* head_;
  LaplaceLikelihood likelihood_;
  Index offset_, size_;
  double num_data_ = 0;
  double log_likelihood_ = 0;
  double prior_precision_ = 1;
  double mean_norm_squared_ = 0;
  Tensor<double> mean_;
  Tensor<T> theta_;  // the model's whole parameter vector at construction
};

extern template class Laplace<float>;
extern template class Laplace<double>;
extern template LaplaceLikelihood likelihood_of<float>(const nn::Head<float>&);
extern template LaplaceLikelihood likelihood_of<double>(const nn::Head<double>&);
extern template double log_likelihood<float>(const nn::Model<float>&, const nn::Head<float>&,
                                             const Tensor<float>&, const Tensor<float>&, Index);
extern template double log_likelihood<double>(const nn::Model<double>&, const nn::Head<double>&,
                                              const Tensor<double>&, const Tensor<double>&, Index);

}  // namespace amari::curvature
