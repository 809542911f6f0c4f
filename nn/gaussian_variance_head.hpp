// A Gaussian head that predicts its own variance (heteroscedastic regression): the logits of an
// example are z = (mu, s), (1, 2C), the C predicted means followed by the C log-variances
// s = log sigma^2, one per output; targets y are (N, C), half as wide as the logits (N, 2C).
//
//   L(y, z) = (1/2) sum_c [ s_c + (y_c - mu_c)^2 exp(-s_c) ]         (+ (C/2) log 2 pi, left out)
//
// This is the case of SEED-NOTES 3 where z is NOT the natural parameter of the family (that would
// be (mu / sigma^2, -1 / (2 sigma^2))), so the logit Hessian of the loss and the Fisher of the
// output family differ. Per output c, with w = exp(-s_c) the precision and r = y_c - mu_c:
//
//   gradient   dL/dmu = -r w                   dL/ds = (1 - r^2 w) / 2
//   score      s_mu   =  r w                   s_s   = (r^2 w - 1) / 2
//   H_L(z, y)  [[ w,   r w       ],            depends on y; det = -r^2 w^2 / 2 < 0 whenever
//               [ r w, r^2 w / 2 ]]            r != 0, so H_L is indefinite off the fit
//   F_R(z)     [[ w,   0   ],                  = E_y[s s^T] = E_y[H_L] (SEED-NOTES 1.1 b); PSD
//               [ 0,   1/2 ]]
//
// so the GGN J^T H_L J (curvature/ggn.hpp, which needs the targets for this head) and the Fisher
// J^T F_R J (curvature/closed_form_fisher.hpp) are different matrices, and the GGN can have
// negative eigenvalues where residuals are large.
//
// Stability: s is clamped to [min_log_variance, max_log_variance] (defaults -20 and 20, i.e.
// sigma^2 in [2e-9, 4.9e8]) before use, so exp(-s) never overflows and a network that drives s to
// -infinity cannot make the loss -infinity on a perfectly fitted point. The clamp is part of the
// model: the head's distribution is N(mu, exp(clamp(s))), and every closed form below is exact for
// it (outside the range the log-variance has zero gradient, zero H_L and zero F_R rows). The clamp
// is written as lo + relu(s - lo) - relu(s - hi) on the tape, whose derivative is 1 for
// lo < s <= hi and 0 elsewhere; the closed forms use the same convention.
//
// Conventions as for the other heads (nn/heads.hpp): loss() and gradient() carry the 1/N of the
// batch mean; residual(), score(), the H_L and F_R products and sample() are per example. mean() returns
// (mu, sigma^2) (N, 2C): the predictive mean and variance. Outputs may alias inputs.
#pragma once

#include <cstdint>
#include <string>

#include <amari/nn/heads.hpp>

namespace amari::nn {

/// Gaussian NLL with a learned per-output log-variance: logits (N, 2C) = (means, log-variances),
/// targets (N, C). H_L depends on the targets and differs from the Fisher F_R (see above).
template <Real T>
class GaussianLearnedVariance final : public Head<T> {
 public:
  /// The log-variance is clamped to [min_log_variance, max_log_variance]; ValueError unless
  /// min < max, both finite, and exp(+-bound) finite, normal numbers of T.
  explicit GaussianLearnedVariance(double min_log_variance = -20.0, double max_log_variance = 20.0);
  /// "Gaussian (learned variance)".
  std::string name() const override { return "Gaussian (learned variance)"; }
  Tensor<T> loss(const Tensor<T>& z, const Tensor<T>& y) const override { return nll(z, y); }
  Dual<T> loss(const Dual<T>& z, const Tensor<T>& y) const override { return nll(z, y); }
  Var<T> loss(const Var<T>& z, const Tensor<T>& y) const override { return nll(z, y); }
  /// (mu, exp(clamp(s))): predicted means and variances, (N, 2C).
  void mean(const Tensor<T>& z, Tensor<T>& mu) const override;
  /// H_L depends on the targets here: always throws ValueError (use the targeted overload).
  void hessian_product(const Tensor<T>& z, const Tensor<T>& a, Tensor<T>& out) const override;
  /// out_i = H_L(z_i, y_i) a_i (2 x 2 block per output, indefinite when y_c != mu_c). O(N C).
  void hessian_product(const Tensor<T>& z, const Tensor<T>& y, const Tensor<T>& a,
                       Tensor<T>& out) const override;
  bool hessian_depends_on_targets() const override { return true; }
  /// out_i = F_R(z_i) a_i = (w * a_mu, a_s / 2) (zero for clamped log-variances). O(N C).
  void fisher_product(const Tensor<T>& z, const Tensor<T>& a, Tensor<T>& out) const override;
  /// y ~ N(mu, exp(clamp(s))), (N, C); row i keyed by (seed, first_example + i, sample_index).
  Tensor<T> sample(const Tensor<T>& z, std::uint64_t seed, std::uint64_t sample_index,
                   Index first_example = 0) const override;
  double min_log_variance() const { return lo_; }
  double max_log_variance() const { return hi_; }
  /// The constant (C/2) log(2 pi) per example that loss() leaves out.
  static double nll_constant(Index num_outputs);

  /// mean_i (1/2) sum_c [ s_ic + (y_ic - mu_ic)^2 exp(-s_ic) ], s clamped.
  template <Value V>
  V nll(const V& z, const Tensor<T>& y) const;

 protected:
  /// grad_z NLL per example, (N, 2C): ((mu - y) w, (1 - (y - mu)^2 w) / 2) with w = exp(-s), the
  /// second part 0 where s is clamped. score() = -residual has zero mean under y ~ r(.|z).
  void compute_residual(const char* op, const Tensor<T>& z, const Tensor<T>& y, Tensor<T>& out) const override;

 private:
  double lo_, hi_;
};

extern template class GaussianLearnedVariance<float>;
extern template class GaussianLearnedVariance<double>;

}  // namespace amari::nn
