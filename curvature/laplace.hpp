// The Laplace approximation around a trained model (MacKay 1992; Ritter et al. 2018; Immer et al.
// 2021; Daxberger et al. 2021, "Laplace Redux", and its library laplace-torch): the posterior over
// the parameters theta (all of them, or the last layer's) is approximated by the Gaussian
//   p(theta | D) ~ N(theta*, Sigma),   Sigma^{-1} = delta I + N C,
// with theta* the trained parameters (the MAP of the data's NLL plus the prior's (delta/2)|theta|^2),
// the Gaussian prior N(0, delta^{-1} I) of precision delta > 0, N the number of training examples,
// and C a curvature of the mean training loss at theta*: the GGN (= the Fisher for the three heads Laplace accepts,
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
// Per-group prior precisions (laplace-torch's per-layer prior_precision): the prior may instead be
// N(0, Lambda^{-1}) with Lambda = diag(delta_g on group g), one precision per prior group
// (prior_groups(): by default one group per parameter tensor of the model inside the posterior,
// i.e. the views of Model::split(); for K-FAC one per layer [W; b] and one per untapped tensor,
// since a Kronecker block is diagonalized only by one shared precision). Then, with n_g and
// |theta*_g|^2 the size and squared norm of group g,
//   log p(D) ~ log p(D | theta*) - (1/2) [log det(Lambda + N C) - sum_g n_g log delta_g]
//              - (1/2) sum_g delta_g |theta*_g|^2,
// and fit_prior_precisions maximizes it over the vector (delta_g) by coordinate ascent: sweeps of
// one-dimensional searches (grid, then golden section, as above) in each log delta_g with the
// others fixed, starting from the shared fit, until a sweep improves the objective by less than
// the tolerance. With a single group everything reduces to the scalar formulas above.
//
// Predictive (the linearized or GLM predictive; Immer et al. 2021): f_lin(x) = f(x; theta*) +
// J(x) (theta - theta*), so f(x) ~ N(f(x; theta*), J(x) Sigma J(x)^T), a C x C covariance per
// input, formed from Jacobian products (laplace_jacobians.hpp), never from J of a whole batch.
// Classification: the probit approximation (MacKay 1992; laplace-torch's link_approx='probit')
// softmax(kappa * f) with kappa_c = 1 / sqrt(1 + (pi/8) var_c), or Monte-Carlo averages of
// softmax (sigmoid for the Bernoulli head) over seeded logit samples; regression (Gaussian head):
// mean f and variance diag(J Sigma J^T) + sigma^2.
//
// Posterior samples and the sampling predictive (laplace-torch's sample() and pred_type="nn";
// laplace_sampling.cpp): theta_s = theta* + S eps_s with S S^T = Sigma (covariance_sqrt_product,
// exact for every structure; see their class comments) and eps_s ~ N(0, I) drawn in blocks of
// 4096 entries, block b from nn::Rng(nn::mix_key(seed, s, b)), so sample s depends on (seed, s)
// alone, for any thread count. The predictive runs the
// network itself at each theta_s (on a deep copy of the model, which is never modified) and
// averages softmax / sigmoid probabilities over the samples, or, for the Gaussian head, returns
// the mean and variance of the mixture (1/S) sum_s N(f(x; theta_s), sigma^2). Cost: S forward
// passes over the inputs plus S covariance square-root products.
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
  /// Empty: prior_precision for every prior group. Otherwise one precision > 0 per group of the
  /// approximation's prior_groups() (ValueError naming the counts otherwise).
  std::vector<double> prior_precisions = {};
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
  /// Logit samples per input of the Monte-Carlo predictive, or weight samples of the sampling
  /// predictive (predict_sampled) (> 0).
  int samples = 100;
  /// Seed of the Monte-Carlo samples: input i uses the stream nn::Rng(seed, i); weight sample s of
  /// the sampling predictive is sample_posterior(seed, s).
  std::uint64_t seed = 0;
};

/// Options of fit_prior_precision and fit_prior_precisions. The search is over log delta in
/// [log10_min, log10_max] * log(10) (for each group's delta in the per-group fit).
struct PriorFitOptions {
  double log10_min = -4;     ///< finite, < log10_max
  double log10_max = 4;      ///< finite
  int grid_points = 17;      ///< >= 3, log-spaced including both ends
  double tolerance = 1e-6;   ///< > 0: golden section stops when its bracket in log delta is this narrow
  int max_iterations = 200;  ///< >= 0: golden-section iterations at most
  /// >= 1: coordinate-ascent sweeps over the groups at most (fit_prior_precisions only); they stop
  /// earlier once a sweep raises the log marginal likelihood by less than 1e-9 (1 + |value|).
  int max_sweeps = 50;
};

/// A set of the posterior's parameters that shares one prior precision.
struct PriorGroup {
  std::string name;  ///< the parameter's name in Model::layout(), or the K-FAC layer's
  Index offset = 0;  ///< first parameter, relative to Laplace::offset()
  Index size = 0;    ///< parameters in the group
};

/// What fit_prior_precision found.
struct PriorFit {
  /// The maximizing delta (now the approximation's prior precision); for fit_prior_precisions
  /// the shared fit it started from.
  double prior_precision = 0;
  /// One delta per prior group (now the approximation's precisions): all equal to prior_precision
  /// for fit_prior_precision, the per-group maximizer for fit_prior_precisions.
  std::vector<double> prior_precisions;
  /// Coordinate-ascent sweeps made (0 for fit_prior_precision).
  int sweeps = 0;
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
  /// delta, when every prior group has the same precision; ValueError (pointing to
  /// prior_precisions()) when they differ.
  double prior_precision() const;
  /// The groups of parameters that share a prior precision (see the file comment); they partition
  /// [0, size()).
  const std::vector<PriorGroup>& prior_groups() const { return groups_; }
  /// The current precision of each prior group.
  const std::vector<double>& prior_precisions() const { return precisions_; }
  /// The prior precision of every posterior parameter, (size()) in double.
  const Tensor<double>& prior_diagonal() const { return prior_diagonal_; }
  /// Sets every group's precision to delta > 0 (ValueError otherwise). The last-layer structure
  /// refactors its dense precision here (laplace_last_layer.hpp).
  void set_prior_precision(double delta);
  /// Sets one precision > 0 per prior group (ValueError for another count or a bad value).
  void set_prior_precisions(const std::vector<double>& deltas);

  /// log det(Lambda + N C) for one precision > 0 per prior group (ValueError otherwise), in
  /// double. Cost: that of the structure (see its class comment).
  virtual double log_det_posterior_precision(const std::vector<double>& deltas) const = 0;
  /// log det(delta I + N C) for any delta > 0 (ValueError otherwise), in double.
  double log_det_posterior_precision(double delta) const;
  /// The same at the current prior precisions.
  double log_det_posterior_precision() const { return log_det_posterior_precision(precisions_); }
  /// out = Sigma v = (Lambda + N C)^{-1} v at the current precisions; v and out (size()), double.
  virtual void covariance_product(const Tensor<double>& v, Tensor<double>& out) const = 0;

  /// out = S eps with S S^T = Sigma at the current prior precisions (S is specific to the
  /// structure, see its class comment); eps and out (size()), double (ShapeError otherwise).
  /// Cost: about that of covariance_product.
  virtual void covariance_sqrt_product(const Tensor<double>& eps, Tensor<double>& out) const = 0;
  /// One draw theta* + S eps ~ N(theta*, Sigma) of the posterior's parameters, (size()) in double,
  /// eps ~ N(0, I) in blocks of 4096 entries, block b from nn::Rng(nn::mix_key(seed, index, b))
  /// (filled in parallel): the same for any thread count or call order. ValueError for index < 0.
  /// Cost: P normals (Box-Muller) plus covariance_sqrt_product.
  Tensor<double> sample_posterior(std::uint64_t seed, Index index) const;
  /// `count` >= 1 samples of the model's whole parameter vector, (count, num_parameters()) in T
  /// (laplace-torch's sample()): row s holds sample_posterior(seed, s) on [offset, offset + size)
  /// and theta* elsewhere (e.g. the layers below the last one). ValueError for count < 1.
  Tensor<T> sample(Index count, std::uint64_t seed = 0) const;
  /// Class probabilities (B, C) of the sampling predictive: the mean over options.samples weight
  /// samples (sample_posterior(options.seed, s)) of softmax (categorical) or sigmoid (Bernoulli)
  /// of the network's own logits. Runs on a copy of the model. ValueError for the Gaussian head,
  /// samples < 1, batch_size < 1 or changed parameters; ShapeError for an empty batch. Cost:
  /// options.samples forward passes over the inputs.
  Tensor<double> predict_sampled(const Tensor<T>& inputs, const PredictiveOptions& options = {}) const;
  /// The sampling predictive of the Gaussian head: mean (1/S) sum_s f_s and variance
  /// (1/S) sum_s (f_s - mean)^2 + sigma^2 per output (the mixture's moments), f_s = f(x; theta_s).
  /// ValueError for the other heads; other errors and cost as predict_sampled.
  RegressionPredictive predict_regression_sampled(const Tensor<T>& inputs,
                                                  const PredictiveOptions& options = {}) const;

  /// The log marginal likelihood at delta > 0 for every group (see the file comment).
  double log_marginal_likelihood(double delta) const;
  /// ... at one precision per prior group.
  double log_marginal_likelihood(const std::vector<double>& deltas) const;
  /// The same at the current prior precisions.
  double log_marginal_likelihood() const { return log_marginal_likelihood(precisions_); }
  /// Maximizes the log marginal likelihood over delta (grid, then golden section; see the file
  /// comment) and sets the prior precision to the maximizer. A delta where the value is not finite
  /// or the posterior precision is not numerically positive definite counts as -infinity.
  /// ValueError for bad options, or if no delta of the range gives a finite value.
  PriorFit fit_prior_precision(const PriorFitOptions& options = {});
  /// Maximizes the log marginal likelihood over one delta per prior group by coordinate ascent
  /// from the shared fit (see the file comment) and sets the precisions to the maximizer. Each
  /// sweep costs (grid_points + golden-section steps) log-determinants per group.
  PriorFit fit_prior_precisions(const PriorFitOptions& options = {});

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
  /// `groups` partitions [0, size) into prior groups (ValueError otherwise); empty: one group per
  /// parameter tensor of model.layout() inside [offset, offset + size) (a tensor cut by the range
  /// keeps its part). options.prior_precisions must then have one entry per group, or none.
  Laplace(const char* who, const nn::Model<T>& model, const nn::Head<T>& head,
          const Tensor<T>& inputs, const Tensor<T>& targets, const LaplaceOptions& options,
          Index offset, Index size, std::vector<PriorGroup> groups = {});
  /// The prior precision of every posterior parameter for one delta per group (checked: count,
  /// finite and > 0; ValueError naming `who`), (size()).
  Tensor<double> prior_diagonal(const char* who, const std::vector<double>& deltas) const;
  /// True when all deltas are equal (the scalar fast paths of the structures).
  static bool all_equal(const std::vector<double>& deltas);
  /// Logit means (B, C) and covariances (B, C, C, zero on entry) of one chunk of inputs. The
  /// default records the chunk (BatchJacobians), uses layerwise_covariance() when allowed and
  /// it accepts, else per-example Jacobians and covariance_product().
  virtual void chunk_functional(const Tensor<T>& inputs, const PredictiveOptions& options,
                                Tensor<double>& mean, Tensor<double>& covariance) const;
  /// The per-layer covariance of a recorded chunk (jac.layerwise() is true); returns false to fall
  /// back to per-example Jacobians. Default: false.
  virtual bool layerwise_covariance(BatchJacobians<T>& jac, Tensor<double>& covariance) const;
  /// Called by set_prior_precision(s) after the precisions changed (to refactor cached matrices).
  virtual void prior_precision_changed() {}
  /// Checks delta > 0 and finite (ValueError naming `who`).
  static void check_delta(const char* who, double delta);

 private:
  void check_parameters_unchanged(const char* who) const;
  // Checks the sampling predictive's arguments (naming `who`).
  void check_sampled(const char* who, const Tensor<T>& inputs, const PredictiveOptions& options) const;
  // Calls visit(s, logits (B, C) in double) for each weight sample s, logits of the whole batch.
  template <class Visit>
  void for_each_sampled_logits(const Tensor<T>& inputs, const PredictiveOptions& options,
                               Visit&& visit) const;

  const nn::Model<T>* model_;
  const nn::Head<T>* head_;
  LaplaceLikelihood likelihood_;
  Index offset_, size_;
  double num_data_ = 0;
  double log_likelihood_ = 0;
  std::vector<PriorGroup> groups_;
  std::vector<double> precisions_;     // one per group
  std::vector<double> group_norms_;    // |theta*_g|^2 per group
  Tensor<double> prior_diagonal_;      // (size): precisions_ spread over the groups
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
