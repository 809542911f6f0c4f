#include <amari/nn/heads.hpp>

#include <cmath>
#include <cstdio>
#include <initializer_list>
#include <limits>

#include <amari/autodiff/kernels/reduce.hpp>
#include <amari/nn/detail/aliasing.hpp>
#include <amari/nn/random.hpp>

namespace amari::nn {

namespace {

using detail::into;

// z must be (N, C) with N >= 1, and y (when given) the same shape.
void check_logits(const char* op, const Shape& z, const Shape* y = nullptr) {
  if (z.rank() != 2) throw ShapeError(std::string(op) + ": logits must have shape (N, C), got " + z.str());
  if (z[0] == 0) throw ValueError(std::string(op) + ": empty batch (logits of shape " + z.str() + ")");
  // Zero outputs per example has no distribution to sample from or normalize (softmax over no
  // classes): refused rather than read or written one element out of bounds.
  if (z[1] == 0) throw ValueError(std::string(op) + ": no outputs per example (logits of shape " + z.str() + ")");
  if (y && !(*y == z)) {
    throw ShapeError(std::string(op) + ": targets of shape " + y->str() + " do not match logits of shape " + z.str());
  }
}

template <Real T>
void check_out(const char* op, const Tensor<T>& z, const Tensor<T>& out, const char* what) {
  if (!(out.shape() == z.shape())) {
    throw ShapeError(std::string(op) + ": " + what + " of shape " + out.shape().str() +
                     " does not match logits of shape " + z.shape().str());
  }
}

// sigmoid without overflow for either sign of z.
inline double stable_sigmoid(double z) {
  if (z >= 0) return 1.0 / (1.0 + std::exp(-z));
  const double e = std::exp(z);
  return e / (1.0 + e);
}

}  // namespace

// ---- softmax + cross-entropy ---------------------------------------------------------------------

template <Real T>
template <Value V>
V SoftmaxCrossEntropy<T>::nll(const V& z, const Tensor<T>& y) const {
  check_logits("softmax_cross_entropy", z.shape(), &y.shape());
  const V targets = constant_like<V>(y);
  // -log softmax(z)_c = logsumexp(z) - z_c; with soft targets (rows summing to 1) the same formula
  // is the cross-entropy -sum_c y_c log p_c.
  return (sum(logsumexp(z, 1)) - sum(targets * z)) * (1.0 / static_cast<double>(z.shape()[0]));
}

template <Real T>
void SoftmaxCrossEntropy<T>::mean(const Tensor<T>& z, Tensor<T>& mu) const {
  check_logits("softmax_cross_entropy::mean", z.shape());
  check_out("softmax_cross_entropy::mean", z, mu, "output");
  into(mu, {&z}, [&](Tensor<T>& dst) {
    kernels::softmax(kernels::axis_view(z.shape(), 1), z.data(), dst.data());
  });
}

template <Real T>
void SoftmaxCrossEntropy<T>::compute_residual(const char* op, const Tensor<T>& z, const Tensor<T>& y,
                                              Tensor<T>& out) const {
  const std::string name = std::string("softmax_cross_entropy::") + op;
  check_logits(name.c_str(), z.shape(), &y.shape());
  check_out(name.c_str(), z, out, "output");
  into(out, {&z, &y}, [&](Tensor<T>& dst) {
    mean(z, dst);
    for (Index k = 0; k < dst.size(); ++k) dst[k] = dst[k] - y[k];  // mu(z) - T(y) = p - y, SEED-NOTES 3
  });
}

template <Real T>
void SoftmaxCrossEntropy<T>::hessian_product(const Tensor<T>& z, const Tensor<T>& a, Tensor<T>& out) const {
  check_logits("softmax_cross_entropy::hessian_product", z.shape());
  check_out("softmax_cross_entropy::hessian_product", z, a, "direction");
  check_out("softmax_cross_entropy::hessian_product", z, out, "output");
  // out == a exactly (the in-place product of the curvature code) needs one scratch row, below;
  // any other overlap with a or z goes through a temporary.
  if (out.overlaps(z) || (out.overlaps(a) && !out.same_storage(a))) {
    Tensor<T> tmp = Tensor<T>::uninitialized(out.shape());
    hessian_product(z, a, tmp);
    out.copy_from(tmp);
    return;
  }
  const Index n = z.shape()[0], c = z.shape()[1];
  const bool aliased = out.same_storage(a);
  // p goes into out's row first (no allocation); only when out aliases a does a scratch row hold p.
  std::vector<T> scratch(aliased ? static_cast<std::size_t>(c) : 0);
  for (Index i = 0; i < n; ++i) {
    T* p = aliased ? scratch.data() : out.data() + i * c;
    const T* ai = a.data() + i * c;
    kernels::softmax(kernels::AxisView{1, c, 1}, z.data() + i * c, p);
    double pa = 0;
    for (Index j = 0; j < c; ++j) pa += static_cast<double>(p[j]) * ai[j];
    // (diag(p) - p p^T) a = p * (a - p . a), SEED-NOTES 3: one dot product per example.
    T* o = out.data() + i * c;
    for (Index j = 0; j < c; ++j) o[j] = p[j] * (ai[j] - static_cast<T>(pa));
  }
}

template <Real T>
Tensor<T> SoftmaxCrossEntropy<T>::sample(const Tensor<T>& z, std::uint64_t seed, std::uint64_t sample_index,
                                         Index first_example) const {
  check_logits("softmax_cross_entropy::sample", z.shape());
  const Index n = z.shape()[0], c = z.shape()[1];
  Tensor<T> p = Tensor<T>::uninitialized(z.shape());
  mean(z, p);
  Tensor<T> y(z.shape());
  for (Index i = 0; i < n; ++i) {
    Rng rng(mix_key(seed, static_cast<std::uint64_t>(first_example + i), sample_index));
    // Inverse CDF; the last class takes any rounding slack so a class is always chosen.
    const double u = rng.uniform();
    double cdf = 0;
    Index k = c - 1;
    for (Index j = 0; j < c - 1; ++j) {
      cdf += p[i * c + j];
      if (u < cdf) {
        k = j;
        break;
      }
    }
    y[i * c + k] = T(1);
  }
  return y;
}

// ---- sigmoid + Bernoulli -------------------------------------------------------------------------

template <Real T>
template <Value V>
V SigmoidBernoulli<T>::nll(const V& z, const Tensor<T>& y) const {
  check_logits("sigmoid_bernoulli", z.shape(), &y.shape());
  const V targets = constant_like<V>(y);
  // -log p(y | z) = softplus(z) - y z for y in {0, 1}: softplus is stable, so logits of +-1e4 give
  // finite losses and gradients.
  return (sum(softplus(z)) - sum(targets * z)) * (1.0 / static_cast<double>(z.shape()[0]));
}

template <Real T>
void SigmoidBernoulli<T>::mean(const Tensor<T>& z, Tensor<T>& mu) const {
  check_logits("sigmoid_bernoulli::mean", z.shape());
  check_out("sigmoid_bernoulli::mean", z, mu, "output");
  into(mu, {&z}, [&](Tensor<T>& dst) {
    for (Index k = 0; k < z.size(); ++k) dst[k] = static_cast<T>(stable_sigmoid(z[k]));
  });
}

template <Real T>
void SigmoidBernoulli<T>::compute_residual(const char* op, const Tensor<T>& z, const Tensor<T>& y,
                                           Tensor<T>& out) const {
  const std::string name = std::string("sigmoid_bernoulli::") + op;
  check_logits(name.c_str(), z.shape(), &y.shape());
  check_out(name.c_str(), z, out, "output");
  into(out, {&z, &y}, [&](Tensor<T>& dst) {
    for (Index k = 0; k < z.size(); ++k) dst[k] = static_cast<T>(stable_sigmoid(z[k]) - y[k]);  // p - y
  });
}

template <Real T>
void SigmoidBernoulli<T>::hessian_product(const Tensor<T>& z, const Tensor<T>& a, Tensor<T>& out) const {
  check_logits("sigmoid_bernoulli::hessian_product", z.shape());
  check_out("sigmoid_bernoulli::hessian_product", z, a, "direction");
  check_out("sigmoid_bernoulli::hessian_product", z, out, "output");
  into(out, {&z, &a}, [&](Tensor<T>& dst) {
    for (Index k = 0; k < z.size(); ++k) {
      const double p = stable_sigmoid(z[k]);
      dst[k] = static_cast<T>(p * (1 - p) * a[k]);  // diag(p (1 - p)) a, SEED-NOTES 3
    }
  });
}

template <Real T>
Tensor<T> SigmoidBernoulli<T>::sample(const Tensor<T>& z, std::uint64_t seed, std::uint64_t sample_index,
                                      Index first_example) const {
  check_logits("sigmoid_bernoulli::sample", z.shape());
  const Index n = z.shape()[0], c = z.shape()[1];
  Tensor<T> y(z.shape());
  for (Index i = 0; i < n; ++i) {
    Rng rng(mix_key(seed, static_cast<std::uint64_t>(first_example + i), sample_index));
    for (Index j = 0; j < c; ++j) y[i * c + j] = rng.uniform() < stable_sigmoid(z[i * c + j]) ? T(1) : T(0);
  }
  return y;
}

// ---- Gaussian with fixed sigma -------------------------------------------------------------------

template <Real T>
Gaussian<T>::Gaussian(double sigma) : sigma_(sigma) {
  if (!(sigma > 0) || !std::isfinite(sigma)) {
    throw ValueError("Gaussian: sigma must be positive and finite, got " + std::to_string(sigma));
  }
  // Validated in the precision of use: the products scale by sigma (sample) and by 1 / sigma^2
  // (loss, gradient, score, H_L) in T, so both must be finite, normal numbers of T. In double
  // sigma = 1e-200 gives 1 / sigma^2 = inf; in float sigma = 1e-20 does.
  constexpr T kMin = std::numeric_limits<T>::min(), kMax = std::numeric_limits<T>::max();
  const double inv_var = 1.0 / (sigma * sigma);
  const auto normal_in_t = [&](double v) { return v >= kMin && v <= kMax; };
  if (!normal_in_t(sigma) || !normal_in_t(inv_var)) {
    char buf[64];
    std::snprintf(buf, sizeof buf, "%g (1 / sigma^2 = %g)", sigma, inv_var);
    throw ValueError(std::string("Gaussian: sigma = ") + buf + " is out of range for " +
                     dtype_name(dtype_of<T>) +
                     ": sigma and 1 / sigma^2 must be finite, normal numbers in that type");
  }
}

template <Real T>
double Gaussian<T>::nll_constant(Index num_outputs) const {
  return 0.5 * static_cast<double>(num_outputs) * std::log(2 * 3.14159265358979323846 * sigma_ * sigma_);
}

template <Real T>
template <Value V>
V Gaussian<T>::nll(const V& z, const Tensor<T>& y) const {
  check_logits("gaussian", z.shape(), &y.shape());
  const V targets = constant_like<V>(y);
  return sum(square(z - targets)) * (1.0 / (2.0 * sigma_ * sigma_ * static_cast<double>(z.shape()[0])));
}

template <Real T>
void Gaussian<T>::mean(const Tensor<T>& z, Tensor<T>& mu) const {
  check_logits("gaussian::mean", z.shape());
  check_out("gaussian::mean", z, mu, "output");
  mu.copy_from(z);  // memmove: any overlap is fine
}

template <Real T>
void Gaussian<T>::compute_residual(const char* op, const Tensor<T>& z, const Tensor<T>& y, Tensor<T>& out) const {
  const std::string name = std::string("gaussian::") + op;
  check_logits(name.c_str(), z.shape(), &y.shape());
  check_out(name.c_str(), z, out, "output");
  const double s = 1.0 / (sigma_ * sigma_);
  into(out, {&z, &y}, [&](Tensor<T>& dst) {
    for (Index k = 0; k < z.size(); ++k) dst[k] = static_cast<T>((z[k] - y[k]) * s);  // (z - y) / sigma^2
  });
}

template <Real T>
void Gaussian<T>::hessian_product(const Tensor<T>& z, const Tensor<T>& a, Tensor<T>& out) const {
  check_logits("gaussian::hessian_product", z.shape());
  check_out("gaussian::hessian_product", z, a, "direction");
  check_out("gaussian::hessian_product", z, out, "output");
  const T s = static_cast<T>(1.0 / (sigma_ * sigma_));
  into(out, {&a}, [&](Tensor<T>& dst) {
    for (Index k = 0; k < z.size(); ++k) dst[k] = a[k] * s;  // I / sigma^2, SEED-NOTES 3
  });
}

template <Real T>
Tensor<T> Gaussian<T>::sample(const Tensor<T>& z, std::uint64_t seed, std::uint64_t sample_index,
                              Index first_example) const {
  check_logits("gaussian::sample", z.shape());
  const Index n = z.shape()[0], c = z.shape()[1];
  Tensor<T> y = Tensor<T>::uninitialized(z.shape());
  for (Index i = 0; i < n; ++i) {
    Rng rng(mix_key(seed, static_cast<std::uint64_t>(first_example + i), sample_index));
    for (Index j = 0; j < c; ++j) y[i * c + j] = static_cast<T>(z[i * c + j] + sigma_ * rng.normal());
  }
  return y;
}

// ---- labels ----------------------------------------------------------------------------------------

template <Real T>
Tensor<T> one_hot(const std::vector<int>& labels, Index num_classes) {
  if (num_classes <= 0) throw ValueError("one_hot: num_classes must be positive, got " + std::to_string(num_classes));
  Tensor<T> y(Shape{static_cast<Index>(labels.size()), num_classes});
  for (std::size_t i = 0; i < labels.size(); ++i) {
    if (labels[i] < 0 || labels[i] >= num_classes) {
      throw ValueError("one_hot: label " + std::to_string(labels[i]) + " at position " + std::to_string(i) +
                       " is outside [0, " + std::to_string(num_classes) + ")");
    }
    y[static_cast<Index>(i) * num_classes + labels[i]] = T(1);
  }
  return y;
}

template <Real T>
std::vector<int> argmax_rows(const Tensor<T>& z) {
  if (z.rank() != 2) throw ShapeError("argmax_rows: expects shape (N, C), got " + z.shape().str());
  const Index n = z.shape()[0], c = z.shape()[1];
  std::vector<int> out(static_cast<std::size_t>(n));
  for (Index i = 0; i < n; ++i) {
    Index best = 0;
    for (Index j = 1; j < c; ++j)
      if (z[i * c + j] > z[i * c + best]) best = j;
    out[static_cast<std::size_t>(i)] = static_cast<int>(best);
  }
  return out;
}

template <Real T>
double accuracy(const Tensor<T>& z, const std::vector<int>& labels) {
  const std::vector<int> pred = argmax_rows(z);
  if (pred.size() != labels.size()) {
    throw ShapeError("accuracy: " + std::to_string(pred.size()) + " rows of logits but " +
                     std::to_string(labels.size()) + " labels");
  }
  if (pred.empty()) return 0.0;
  std::size_t hits = 0;
  for (std::size_t i = 0; i < pred.size(); ++i) hits += pred[i] == labels[i];
  return static_cast<double>(hits) / static_cast<double>(pred.size());
}

#define AMARI_HEAD_NLL(H, T, V) template V H<T>::nll<V>(const V&, const Tensor<T>&) const;
#define AMARI_INSTANTIATE(T)                                                                          \
  template class SoftmaxCrossEntropy<T>;                                                              \
  template class SigmoidBernoulli<T>;                                                                 \
  template class Gaussian<T>;                                                                         \
  AMARI_HEAD_NLL(SoftmaxCrossEntropy, T, Tensor<T>)                                                   \
  AMARI_HEAD_NLL(SoftmaxCrossEntropy, T, Dual<T>)                                                     \
  AMARI_HEAD_NLL(SoftmaxCrossEntropy, T, Var<T>)                                                      \
  AMARI_HEAD_NLL(SigmoidBernoulli, T, Tensor<T>)                                                      \
  AMARI_HEAD_NLL(SigmoidBernoulli, T, Dual<T>)                                                        \
  AMARI_HEAD_NLL(SigmoidBernoulli, T, Var<T>)                                                         \
  AMARI_HEAD_NLL(Gaussian, T, Tensor<T>)                                                              \
  AMARI_HEAD_NLL(Gaussian, T, Dual<T>)                                                                \
  AMARI_HEAD_NLL(Gaussian, T, Var<T>)                                                                 \
  template Tensor<T> one_hot<T>(const std::vector<int>&, Index);                                      \
  template std::vector<int> argmax_rows<T>(const Tensor<T>&);                                         \
  template double accuracy<T>(const Tensor<T>&, const std::vector<int>&);
AMARI_INSTANTIATE(float)
AMARI_INSTANTIATE(double)
#undef AMARI_INSTANTIATE

}  // namespace amari::nn
