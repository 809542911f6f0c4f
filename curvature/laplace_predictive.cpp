#include <amari/curvature/laplace_predictive.hpp>

#include <algorithm>
#include <cmath>
#include <numbers>
#include <string>
#include <vector>

#include <amari/nn/random.hpp>

namespace amari::curvature {

namespace {

void check_functional(const char* op, const FunctionalPosterior& f) {
  const bool ok = f.mean.defined() && f.covariance.defined() && f.mean.rank() == 2 &&
                  f.covariance.rank() == 3 && f.covariance.dim(0) == f.mean.dim(0) &&
                  f.covariance.dim(1) == f.mean.dim(1) && f.covariance.dim(2) == f.mean.dim(1);
  if (!ok) {
    throw ShapeError(std::string(op) + ": expects a mean (B, C) and a covariance (B, C, C), got " +
                     f.mean.shape().str() + " and " + f.covariance.shape().str());
  }
}

double sigmoid(double x) {
  if (x >= 0) return 1.0 / (1.0 + std::exp(-x));
  const double e = std::exp(x);
  return e / (1.0 + e);
}

// out[0..c) = softmax(x[0..c)), stable.
void softmax(const double* x, Index c, double* out) {
  const double m = *std::max_element(x, x + c);
  double s = 0;
  for (Index k = 0; k < c; ++k) s += (out[k] = std::exp(x[k] - m));
  for (Index k = 0; k < c; ++k) out[k] /= s;
}

// L (c x c, lower, row-major) with L L^T = S for a symmetric positive semi-definite S; a pivot at
// or below 1e-14 max_c S_cc (or negative from rounding) leaves a zero column.
void psd_cholesky(const double* s, Index c, double* l) {
  double scale = 0;
  for (Index k = 0; k < c; ++k) scale = std::max(scale, s[k * c + k]);
  const double floor = 1e-14 * scale;
  std::fill(l, l + c * c, 0.0);
  for (Index j = 0; j < c; ++j) {
    double d = s[j * c + j];
    for (Index k = 0; k < j; ++k) d -= l[j * c + k] * l[j * c + k];
    if (!(d > floor)) continue;  // zero column
    const double root = std::sqrt(d);
    l[j * c + j] = root;
    for (Index i = j + 1; i < c; ++i) {
      double v = s[i * c + j];
      for (Index k = 0; k < j; ++k) v -= l[i * c + k] * l[j * c + k];
      l[i * c + j] = v / root;
    }
  }
}

template <class Link>
Tensor<double> probit(const char* op, const FunctionalPosterior& f, Link link) {
  check_functional(op, f);
  const Index b = f.mean.dim(0), c = f.mean.dim(1);
  Tensor<double> out = Tensor<double>::uninitialized(f.mean.shape());
  std::vector<double> scaled(static_cast<std::size_t>(c));
  for (Index i = 0; i < b; ++i) {
    const double* s = f.covariance.data() + i * c * c;
    for (Index k = 0; k < c; ++k) {
      const double var = std::max(s[k * c + k], 0.0);
      scaled[static_cast<std::size_t>(k)] =
          f.mean[i * c + k] / std::sqrt(1.0 + std::numbers::pi / 8.0 * var);
    }
    link(scaled.data(), c, out.data() + i * c);
  }
  return out;
}

template <class Link>
Tensor<double> monte_carlo(const char* op, const FunctionalPosterior& f, int samples,
                           std::uint64_t seed, Index first_example, Link link) {
  check_functional(op, f);
  if (samples < 1) {
    throw ValueError(std::string(op) + ": samples must be >= 1, got " + std::to_string(samples));
  }
  const Index b = f.mean.dim(0), c = f.mean.dim(1);
  Tensor<double> out(f.mean.shape());
  std::vector<double> l(static_cast<std::size_t>(c * c)), eps(static_cast<std::size_t>(c)),
      logits(static_cast<std::size_t>(c)), p(static_cast<std::size_t>(c));
  for (Index i = 0; i < b; ++i) {
    psd_cholesky(f.covariance.data() + i * c * c, c, l.data());
    nn::Rng rng(seed, static_cast<std::uint64_t>(first_example + i));
    double* row = out.data() + i * c;
    for (int k = 0; k < samples; ++k) {
      for (double& e : eps) e = rng.normal();
      for (Index x = 0; x < c; ++x) {
        double v = f.mean[i * c + x];
        for (Index y = 0; y <= x; ++y) v += l[static_cast<std::size_t>(x * c + y)] * eps[static_cast<std::size_t>(y)];
        logits[static_cast<std::size_t>(x)] = v;
      }
      link(logits.data(), c, p.data());
      for (Index x = 0; x < c; ++x) row[x] += p[static_cast<std::size_t>(x)];
    }
    for (Index x = 0; x < c; ++x) row[x] /= samples;
  }
  return out;
}

void sigmoid_link(const double* x, Index c, double* out) {
  for (Index k = 0; k < c; ++k) out[k] = sigmoid(x[k]);
}

}  // namespace

Tensor<double> probit_softmax(const FunctionalPosterior& f) {
  return probit("probit_softmax", f, softmax);
}

Tensor<double> probit_sigmoid(const FunctionalPosterior& f) {
  return probit("probit_sigmoid", f, sigmoid_link);
}

Tensor<double> monte_carlo_softmax(const FunctionalPosterior& f, int samples, std::uint64_t seed,
                                   Index first_example) {
  return monte_carlo("monte_carlo_softmax", f, samples, seed, first_example, softmax);
}

Tensor<double> monte_carlo_sigmoid(const FunctionalPosterior& f, int samples, std::uint64_t seed,
                                   Index first_example) {
  return monte_carlo("monte_carlo_sigmoid", f, samples, seed, first_example, sigmoid_link);
}

namespace {

template <class Link>
Tensor<double> link_rows(const char* op, const Tensor<double>& logits, Link link) {
  if (!logits.defined() || logits.rank() != 2) {
    throw ShapeError(std::string(op) + ": expects logits (B, C), got " + logits.shape().str());
  }
  const Index b = logits.dim(0), c = logits.dim(1);
  Tensor<double> out = Tensor<double>::uninitialized(logits.shape());
  for (Index i = 0; i < b; ++i) link(logits.data() + i * c, c, out.data() + i * c);
  return out;
}

}  // namespace

Tensor<double> softmax_probabilities(const Tensor<double>& logits) {
  return link_rows("softmax_probabilities", logits, softmax);
}

Tensor<double> sigmoid_probabilities(const Tensor<double>& logits) {
  return link_rows("sigmoid_probabilities", logits, sigmoid_link);
}

}  // namespace amari::curvature
