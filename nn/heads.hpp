// Negative-log-likelihood heads on logits z (N, C): an output distribution r(y | z) from an
// exponential family with natural parameter z (SEED-NOTES 3), its loss, and its logit-space
// curvature in closed form.
//
// | head                     | mean mu(z)        | H_L(z) a               | sample y ~ r(.|z)       |
// | SoftmaxCrossEntropy      | p = softmax(z)    | p * a - p (p . a)      | one-hot categorical(p)  |
// | SigmoidBernoulli         | p = sigmoid(z)    | p (1 - p) * a          | Bernoulli(p) per output |
// | Gaussian (fixed sigma)   | z                 | a / sigma^2            | z + sigma N(0, I)       |
//
// For these three heads the targets are a tensor y of the same shape (N, C) as z: one-hot rows (or
// class probabilities) for softmax, 0/1 (or probabilities) for Bernoulli, real values for the
// Gaussian. one_hot() turns class labels into such rows. Their family is exponential with natural
// parameter z, so H_L(z) does not depend on y and equals the Fisher F_R(z) of the output family
// (SEED-NOTES 3): hessian_product() needs no targets and fisher_product() is the same product.
// A head for which that fails (GaussianLearnedVariance, nn/gaussian_variance_head.hpp: z holds a
// mean and a log-variance, targets are (N, C) for logits (N, 2C)) overrides fisher_product() and
// the targeted hessian_product(z, y, a, out), and says so with hessian_depends_on_targets().
//
// Conventions: every closed form of a head is per example. A head defines one logit-space
// first-order quantity, the residual r_i = grad_{z_i} of example i's NLL (p_i - y_i for softmax
// and Bernoulli, (z_i - y_i) / sigma^2 for the Gaussian); the batch-level forms are derived from it here, in one place:
// gradient() = r / N is the gradient of loss(), the mean over the batch, and score() = -r is
// grad_z log r(y | z). hessian_product(), fisher_product() and sample() are per example (no 1/N),
// because the Fisher/GGN averages them itself (SEED-NOTES 4).
//
// Aliasing: the output tensor of mean(), residual(), gradient(), score() and hessian_product() may
// share elements with any input (logits, targets, direction), e.g. gradient(z, y, y) or
// hessian_product(z, a, a); the result is the same as with a separate output (a temporary is used
// when needed; hessian_product(z, a, a) of the softmax head needs only one scratch row).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <amari/autodiff/autodiff.hpp>

namespace amari::nn {

/// A head: loss on logits in all three modes plus the closed-form pieces curvature needs.
template <Real T>
class Head {
 public:
  virtual ~Head() = default;
  /// Name for reports, e.g. "softmax cross-entropy".
  virtual std::string name() const = 0;

  /// Mean NLL over the batch; z and y (N, C). Stable for logits of any finite magnitude.
  virtual Tensor<T> loss(const Tensor<T>& z, const Tensor<T>& y) const = 0;
  /// The same loss with z carrying a tangent (forward mode).
  virtual Dual<T> loss(const Dual<T>& z, const Tensor<T>& y) const = 0;
  /// The same loss recorded on z's tape (reverse mode, Hessian-vector products).
  virtual Var<T> loss(const Var<T>& z, const Tensor<T>& y) const = 0;

  /// mu(z) = E[T(Y)], row by row: the predicted class probabilities / means. (N, C).
  virtual void mean(const Tensor<T>& z, Tensor<T>& mu) const = 0;
  /// The residual r_i = grad_{z_i} NLL(y_i | z_i), per example (no 1/N): p - y for softmax and
  /// Bernoulli (mu(z) - T(y), SEED-NOTES 3), (z - y) / sigma^2 for the Gaussian. Same shape as z.
  void residual(const Tensor<T>& z, const Tensor<T>& y, Tensor<T>& out) const {
    compute_residual("residual", z, y, out);
  }
  /// Gradient of loss() (the batch mean) in z: residual / N. Same shape as z.
  void gradient(const Tensor<T>& z, const Tensor<T>& y, Tensor<T>& out) const {
    compute_residual("gradient", z, y, out);
    const T inv_n = T(1) / static_cast<T>(z.dim(0));
    T* o = out.data();
    for (Index k = 0; k < out.size(); ++k) o[k] *= inv_n;
  }
  /// Score s_z(y | z) = grad_z log r(y | z) = -residual, per example (no 1/N); T(y) - mu(z) for
  /// the exponential-family heads.
  void score(const Tensor<T>& z, const Tensor<T>& y, Tensor<T>& out) const {
    compute_residual("score", z, y, out);
    T* o = out.data();
    for (Index k = 0; k < out.size(); ++k) o[k] = -o[k];
  }
  /// out_i = H_L(z_i) a_i for every row i, in closed form, without forming any C x C matrix
  /// (per example, no 1/N). Cost O(N C).
  virtual void hessian_product(const Tensor<T>& z, const Tensor<T>& a, Tensor<T>& out) const = 0;
  /// True when H_L(z, y) depends on the targets y (z is not the natural parameter of an
  /// exponential family, SEED-NOTES 3): then only the targeted hessian_product() below is defined
  /// and differs from fisher_product(). False for the three exponential-family heads.
  virtual bool hessian_depends_on_targets() const { return false; }
  /// out_i = H_L(z_i, y_i) a_i, the logit Hessian of the loss at the targets (per example, no 1/N).
  /// Defaults to the target-free product, which is exact when H_L does not depend on y.
  virtual void hessian_product(const Tensor<T>& z, const Tensor<T>& y, const Tensor<T>& a, Tensor<T>& out) const {
    (void)y;
    hessian_product(z, a, out);
  }
  /// out_i = F_R(z_i) a_i with F_R(z) = E_{y ~ r(.|z)}[s_z s_z^T] the Fisher of the output family in
  /// logit space (SEED-NOTES 2), per example (no 1/N). Defaults to hessian_product(z, a, out):
  /// F_R = H_L for an exponential family with natural parameter z (SEED-NOTES 3).
  virtual void fisher_product(const Tensor<T>& z, const Tensor<T>& a, Tensor<T>& out) const {
    hessian_product(z, a, out);
  }
  /// One draw y ~ r(. | z_i) per row. Counter-based: row i uses the key
  /// (seed, first_example + i, sample_index), so the draw is the same whatever the batch split,
  /// thread count or call order.
  virtual Tensor<T> sample(const Tensor<T>& z, std::uint64_t seed, std::uint64_t sample_index,
                           Index first_example = 0) const = 0;

  /// Class probabilities / predicted means (= mean()).
  Tensor<T> predict(const Tensor<T>& z) const {
    Tensor<T> mu = Tensor<T>::uninitialized(z.shape());
    mean(z, mu);
    return mu;
  }

 protected:
  /// What a head implements for residual(), gradient() and score(): out = the residual, with
  /// shape errors naming "<head>::<op>" (op is the public function called). out may alias z or y.
  virtual void compute_residual(const char* op, const Tensor<T>& z, const Tensor<T>& y, Tensor<T>& out) const = 0;
};

/// Softmax + cross-entropy: r(y | z) = categorical(softmax(z)).
template <Real T>
class SoftmaxCrossEntropy final : public Head<T> {
 public:
  std::string name() const override { return "softmax cross-entropy"; }
  Tensor<T> loss(const Tensor<T>& z, const Tensor<T>& y) const override { return nll(z, y); }
  Dual<T> loss(const Dual<T>& z, const Tensor<T>& y) const override { return nll(z, y); }
  Var<T> loss(const Var<T>& z, const Tensor<T>& y) const override { return nll(z, y); }
  void mean(const Tensor<T>& z, Tensor<T>& mu) const override;
  void hessian_product(const Tensor<T>& z, const Tensor<T>& a, Tensor<T>& out) const override;
  using Head<T>::hessian_product;  // the targeted overload, (z, y, a, out)
  Tensor<T> sample(const Tensor<T>& z, std::uint64_t seed, std::uint64_t sample_index,
                   Index first_example = 0) const override;

  /// mean_i [ logsumexp(z_i) - y_i . z_i ]; equals -mean_i log p_{y_i} for one-hot y.
  template <Value V>
  V nll(const V& z, const Tensor<T>& y) const;

 protected:
  /// mu(z) - T(y) per example (SEED-NOTES 3).
  void compute_residual(const char* op, const Tensor<T>& z, const Tensor<T>& y, Tensor<T>& out) const override;
};

/// Sigmoid + Bernoulli cross-entropy, one independent binary output per column.
template <Real T>
class SigmoidBernoulli final : public Head<T> {
 public:
  std::string name() const override { return "sigmoid Bernoulli"; }
  Tensor<T> loss(const Tensor<T>& z, const Tensor<T>& y) const override { return nll(z, y); }
  Dual<T> loss(const Dual<T>& z, const Tensor<T>& y) const override { return nll(z, y); }
  Var<T> loss(const Var<T>& z, const Tensor<T>& y) const override { return nll(z, y); }
  void mean(const Tensor<T>& z, Tensor<T>& mu) const override;
  void hessian_product(const Tensor<T>& z, const Tensor<T>& a, Tensor<T>& out) const override;
  using Head<T>::hessian_product;  // the targeted overload, (z, y, a, out)
  Tensor<T> sample(const Tensor<T>& z, std::uint64_t seed, std::uint64_t sample_index,
                   Index first_example = 0) const override;

  /// mean_i sum_c [ softplus(z_ic) - y_ic z_ic ] (= -log p or -log(1 - p), computed stably).
  template <Value V>
  V nll(const V& z, const Tensor<T>& y) const;

 protected:
  /// mu(z) - T(y) per example (SEED-NOTES 3).
  void compute_residual(const char* op, const Tensor<T>& z, const Tensor<T>& y, Tensor<T>& out) const override;
};

/// Gaussian with mean z and fixed standard deviation sigma (mean squared error).
template <Real T>
class Gaussian final : public Head<T> {
 public:
  /// sigma > 0 and finite, and validated in T, the precision of use: sigma and 1 / sigma^2 must
  /// be finite, normal numbers of T (ValueError naming sigma and T otherwise). For float that is
  /// about 5.5e-20 <= sigma <= 9.2e18; for double 7.5e-155 <= sigma <= 6.7e153.
  explicit Gaussian(double sigma = 1.0);
  std::string name() const override { return "Gaussian (sigma " + std::to_string(sigma_) + ")"; }
  Tensor<T> loss(const Tensor<T>& z, const Tensor<T>& y) const override { return nll(z, y); }
  Dual<T> loss(const Dual<T>& z, const Tensor<T>& y) const override { return nll(z, y); }
  Var<T> loss(const Var<T>& z, const Tensor<T>& y) const override { return nll(z, y); }
  void mean(const Tensor<T>& z, Tensor<T>& mu) const override;
  void hessian_product(const Tensor<T>& z, const Tensor<T>& a, Tensor<T>& out) const override;
  using Head<T>::hessian_product;  // the targeted overload, (z, y, a, out)
  Tensor<T> sample(const Tensor<T>& z, std::uint64_t seed, std::uint64_t sample_index,
                   Index first_example = 0) const override;
  double sigma() const { return sigma_; }
  /// The constant (C/2) log(2 pi sigma^2) per example that loss() leaves out (it has no gradient).
  double nll_constant(Index num_outputs) const;

  /// mean_i ||z_i - y_i||^2 / (2 sigma^2): the NLL up to nll_constant().
  template <Value V>
  V nll(const V& z, const Tensor<T>& y) const;

 protected:
  /// (z - y) / sigma^2 per example.
  void compute_residual(const char* op, const Tensor<T>& z, const Tensor<T>& y, Tensor<T>& out) const override;

 private:
  double sigma_;
};

/// One-hot rows (N, num_classes) for class labels; ValueError naming the first label outside
/// [0, num_classes).
template <Real T>
Tensor<T> one_hot(const std::vector<int>& labels, Index num_classes);
/// Index of the largest logit of each row (first one on ties).
template <Real T>
std::vector<int> argmax_rows(const Tensor<T>& z);
/// Fraction of rows whose largest logit is at the label.
template <Real T>
double accuracy(const Tensor<T>& z, const std::vector<int>& labels);

}  // namespace amari::nn
