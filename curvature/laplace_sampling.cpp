// Posterior samples theta_s = theta* + S eps_s and the sampling ("nn") predictive of the Laplace
// approximation (laplace.hpp, file comment): the members of Laplace<T> that draw weights and run
// the network itself at them. The square roots S are the structures' covariance_sqrt_product.
#include <amari/curvature/laplace.hpp>

#include <algorithm>
#include <cmath>
#include <numbers>
#include <string>

#include <amari/nn/random.hpp>

namespace amari::curvature {

namespace {

// x[0..n) ~ N(0, 1) by Box-Muller, both values of each pair used: half the transcendental calls
// of nn::Rng::normal(), which discards the second (the P normals of a full-network draw cost
// several forward passes of a 128 batch, bench/RESULTS.md, so this matters).
void fill_normal(nn::Rng& rng, double* x, Index n) {
  for (Index i = 0; i < n; i += 2) {
    const double u1 = 1.0 - rng.uniform();  // (0, 1]: log is finite
    const double u2 = rng.uniform();
    const double r = std::sqrt(-2.0 * std::log(u1)), a = 2.0 * std::numbers::pi * u2;
    x[i] = r * std::cos(a);
    if (i + 1 < n) x[i + 1] = r * std::sin(a);
  }
}

// Entries of eps per random stream (and per parallel task) in sample_posterior.
constexpr Index kNormalBlock = 4096;

}  // namespace

template <Real T>
Tensor<double> Laplace<T>::sample_posterior(std::uint64_t seed, Index index) const {
  if (index < 0) {
    throw ValueError("Laplace::sample_posterior: the sample index must be >= 0, got " +
                     std::to_string(index));
  }
  // eps in blocks of kNormalBlock entries, each from its own stream keyed by (seed, index, block):
  // counter-based, so draw s is the same whichever draws come before it, and the blocks can be
  // filled by any number of threads with the same result.
  Tensor<double> eps = Tensor<double>::uninitialized(Shape{size_});
  const Index blocks = (size_ + kNormalBlock - 1) / kNormalBlock;
#pragma omp parallel for schedule(static) if (blocks > 1)
  for (Index b = 0; b < blocks; ++b) {
    nn::Rng rng(nn::mix_key(seed, static_cast<std::uint64_t>(index), static_cast<std::uint64_t>(b)));
    fill_normal(rng, eps.data() + b * kNormalBlock, std::min(kNormalBlock, size_ - b * kNormalBlock));
  }
  Tensor<double> theta = Tensor<double>::uninitialized(Shape{size_});
  covariance_sqrt_product(eps, theta);
  for (Index i = 0; i < size_; ++i) theta[i] += mean_[i];
  return theta;
}

template <Real T>
Tensor<T> Laplace<T>::sample(Index count, std::uint64_t seed) const {
  if (count < 1) {
    throw ValueError("Laplace::sample: the number of samples must be >= 1, got " + std::to_string(count));
  }
  const Index p = theta_.size();
  Tensor<T> out = Tensor<T>::uninitialized(Shape{count, p});
  for (Index s = 0; s < count; ++s) {
    const Tensor<double> theta = sample_posterior(seed, s);
    T* row = out.data() + s * p;
    std::copy(theta_.begin(), theta_.end(), row);
    for (Index i = 0; i < size_; ++i) row[offset_ + i] = static_cast<T>(theta[i]);
  }
  return out;
}

template <Real T>
void Laplace<T>::check_sampled(const char* who, const Tensor<T>& inputs,
                               const PredictiveOptions& options) const {
  check_parameters_unchanged(who);
  if (!inputs.defined() || inputs.rank() < 1 || inputs.dim(0) == 0) {
    throw ShapeError(std::string(who) + ": expects a non-empty batch of inputs (B, ...), got " +
                     inputs.shape().str());
  }
  if (options.batch_size < 1) {
    throw ValueError(std::string(who) + ": batch_size must be >= 1, got " + std::to_string(options.batch_size));
  }
  if (options.samples < 1) {
    throw ValueError(std::string(who) + ": samples must be >= 1, got " + std::to_string(options.samples));
  }
}

template <Real T>
template <class Visit>
void Laplace<T>::for_each_sampled_logits(const Tensor<T>& inputs, const PredictiveOptions& options,
                                         Visit&& visit) const {
  // A deep copy of the model carries the samples, so the caller's model is never modified (and
  // stays at theta* if a forward pass throws).
  nn::Model<T> copy = *model_;
  Tensor<T> flat = theta_.clone();
  const Index n = inputs.dim(0);
  Tensor<double> logits;
  for (Index s = 0; s < options.samples; ++s) {
    const Tensor<double> theta = sample_posterior(options.seed, s);
    for (Index i = 0; i < size_; ++i) flat[offset_ + i] = static_cast<T>(theta[i]);
    copy.scatter(flat);
    for (Index begin = 0; begin < n; begin += options.batch_size) {
      const Index count = std::min(options.batch_size, n - begin);
      const Tensor<T> z = copy.forward(batch_rows(inputs, begin, count));
      if (z.rank() != 2 || z.dim(0) != count) {
        throw ShapeError("Laplace: the sampling predictive expects logits (B, C), got " + z.shape().str());
      }
      const Index c = z.dim(1);
      if (!logits.defined()) logits = Tensor<double>(Shape{n, c});
      for (Index q = 0; q < count * c; ++q) logits[begin * c + q] = static_cast<double>(z[q]);
    }
    visit(s, logits);
  }
}

template <Real T>
Tensor<double> Laplace<T>::predict_sampled(const Tensor<T>& inputs,
                                           const PredictiveOptions& options) const {
  const char* who = "Laplace::predict_sampled";
  if (likelihood_ == LaplaceLikelihood::gaussian) {
    throw ValueError(std::string(who) + ": the Gaussian head predicts means and variances " +
                     "(predict_regression_sampled), not class probabilities");
  }
  check_sampled(who, inputs, options);
  Tensor<double> sum;
  for_each_sampled_logits(inputs, options, [&](Index, const Tensor<double>& logits) {
    const Tensor<double> p = likelihood_ == LaplaceLikelihood::categorical ? softmax_probabilities(logits)
                                                                            : sigmoid_probabilities(logits);
    if (!sum.defined()) sum = Tensor<double>(p.shape());
    for (Index q = 0; q < p.size(); ++q) sum[q] += p[q];
  });
  for (Index q = 0; q < sum.size(); ++q) sum[q] /= options.samples;
  return sum;
}

template <Real T>
RegressionPredictive Laplace<T>::predict_regression_sampled(const Tensor<T>& inputs,
                                                            const PredictiveOptions& options) const {
  const char* who = "Laplace::predict_regression_sampled";
  if (likelihood_ != LaplaceLikelihood::gaussian) {
    throw ValueError(std::string(who) + ": needs the Gaussian head, got '" + head_->name() + "'");
  }
  check_sampled(who, inputs, options);
  RegressionPredictive out;
  // Welford's running mean and sum of squared deviations per output (stable for a small spread
  // around a large mean).
  for_each_sampled_logits(inputs, options, [&](Index s, const Tensor<double>& f) {
    if (!out.mean.defined()) {
      out.mean = Tensor<double>(f.shape());
      out.variance = Tensor<double>(f.shape());
    }
    const double w = 1.0 / static_cast<double>(s + 1);
    for (Index q = 0; q < f.size(); ++q) {
      const double delta = f[q] - out.mean[q];
      out.mean[q] += w * delta;
      out.variance[q] += delta * (f[q] - out.mean[q]);
    }
  });
  const double sigma = dynamic_cast<const nn::Gaussian<T>&>(*head_).sigma();
  for (Index q = 0; q < out.variance.size(); ++q) {
    out.variance[q] = out.variance[q] / options.samples + sigma * sigma;
  }
  return out;
}

// Explicit instantiations of the members defined here (laplace.cpp instantiates the others).
#define AMARI_LAPLACE_SAMPLING(T)                                                                 \
  template Tensor<double> Laplace<T>::sample_posterior(std::uint64_t, Index) const;              \
  template Tensor<T> Laplace<T>::sample(Index, std::uint64_t) const;                             \
  template Tensor<double> Laplace<T>::predict_sampled(const Tensor<T>&, const PredictiveOptions&) \
      const;                                                                                      \
  template RegressionPredictive Laplace<T>::predict_regression_sampled(const Tensor<T>&,         \
                                                                       const PredictiveOptions&) \
      const;                                                                                      \
  template void Laplace<T>::check_sampled(const char*, const Tensor<T>&, const PredictiveOptions&) \
      const;
AMARI_LAPLACE_SAMPLING(float)
AMARI_LAPLACE_SAMPLING(double)
#undef AMARI_LAPLACE_SAMPLING

}  // namespace amari::curvature
