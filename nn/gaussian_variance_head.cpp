#include <amari/nn/gaussian_variance_head.hpp>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>

#include <amari/nn/detail/aliasing.hpp>
#include <amari/nn/random.hpp>

namespace amari::nn {

namespace {

constexpr const char* kOp = "gaussian_learned_variance";

// z must be (N, 2C) with N, C >= 1; y (when given) (N, C).
void check_logits(const std::string& op, const Shape& z, const Shape* y = nullptr) {
  if (z.rank() != 2) throw ShapeError(op + ": logits must have shape (N, 2C), got " + z.str());
  if (z[0] == 0) throw ValueError(op + ": empty batch (logits of shape " + z.str() + ")");
  if (z[1] == 0 || z[1] % 2 != 0) {
    throw ValueError(
        op +
        ": logits (means, log-variances) need an even, positive number of columns, got shape " +
        z.str());
  }
  if (y && !(y->rank() == 2 && (*y)[0] == z[0] && (*y)[1] * 2 == z[1])) {
    throw ShapeError(op + ": targets of shape " + y->str() + " do not match logits of shape " +
                     z.str() + " (expected (" + std::to_string(z[0]) + ", " +
                     std::to_string(z[1] / 2) + "))");
  }
}

void check_same(const std::string& op, const Shape& z, const Shape& t, const char* what) {
  if (!(t == z))
    throw ShapeError(op + ": " + what + " of shape " + t.str() +
                     " does not match logits of shape " + z.str());
}

using detail::into;

}  // namespace

template <Real T>
GaussianLearnedVariance<T>::GaussianLearnedVariance(double min_log_variance,
                                                    double max_log_variance)
    : lo_(min_log_variance), hi_(max_log_variance) {
  constexpr double kMin = std::numeric_limits<T>::min(), kMax = std::numeric_limits<T>::max();
  // exp(-lo) (the largest precision) and exp(hi) (the largest variance) scale residuals in T.
  const auto normal_in_t = [&](double v) { return v >= kMin && v <= kMax; };
  if (!std::isfinite(lo_) || !std::isfinite(hi_) || !(lo_ < hi_) || !normal_in_t(std::exp(-lo_)) ||
      !normal_in_t(std::exp(lo_)) || !normal_in_t(std::exp(hi_)) || !normal_in_t(std::exp(-hi_))) {
    char buf[160];
    std::snprintf(buf, sizeof buf, "[%g, %g]", lo_, hi_);
    throw ValueError(std::string("GaussianLearnedVariance: log-variance range ") + buf +
                     " must be finite with min < max, and exp(+-bound) finite, normal numbers of " +
                     dtype_name(dtype_of<T>));
  }
}

template <Real T>
double GaussianLearnedVariance<T>::nll_constant(Index num_outputs) {
  return 0.5 * static_cast<double>(num_outputs) * std::log(2 * 3.14159265358979323846);
}

template <Real T>
template <Value V>
V GaussianLearnedVariance<T>::nll(const V& z, const Tensor<T>& y) const {
  check_logits(kOp, z.shape(), &y.shape());
  const Index n = z.shape()[0], c = z.shape()[1] / 2;
  const V targets = constant_like<V>(y);
  const V mu = slice(z, 1, 0, c);
  // clamp(s, lo, hi) from two relus: derivative 1 on (lo, hi], 0 elsewhere.
  const V s = (relu(slice(z, 1, c, 2 * c) - lo_) - relu(slice(z, 1, c, 2 * c) - hi_)) + lo_;
  return (sum(s) + sum(square(mu - targets) * exp(-s))) * (0.5 / static_cast<double>(n));
}

namespace {

// The per-output quantities every closed form needs, for logits row i, output j.
struct Cell {
  double w;     // exp(-clamp(s)): the precision
  double var;   // exp(clamp(s))
  bool active;  // lo < s <= hi: the log-variance is not clamped
};

inline Cell cell(double s, double lo, double hi) {
  const double se = std::clamp(s, lo, hi);
  return {std::exp(-se), std::exp(se), lo < s && s <= hi};
}

}  // namespace

template <Real T>
void GaussianLearnedVariance<T>::mean(const Tensor<T>& z, Tensor<T>& mu) const {
  const std::string op = std::string(kOp) + "::mean";
  check_logits(op, z.shape());
  check_same(op, z.shape(), mu.shape(), "output");
  const Index n = z.dim(0), c = z.dim(1) / 2;
  into(mu, {&z}, [&](Tensor<T>& dst) {
    for (Index i = 0; i < n; ++i)
      for (Index j = 0; j < c; ++j) {
        dst[i * 2 * c + j] = z[i * 2 * c + j];
        dst[i * 2 * c + c + j] = static_cast<T>(cell(z[i * 2 * c + c + j], lo_, hi_).var);
      }
  });
}

template <Real T>
void GaussianLearnedVariance<T>::compute_residual(const char* op_name, const Tensor<T>& z, const Tensor<T>& y,
                                                  Tensor<T>& out) const {
  const std::string op = std::string(kOp) + "::" + op_name;
  check_logits(op, z.shape(), &y.shape());
  check_same(op, z.shape(), out.shape(), "output");
  const Index n = z.dim(0), c = z.dim(1) / 2;
  into(out, {&z, &y}, [&](Tensor<T>& dst) {
    for (Index i = 0; i < n; ++i)
      for (Index j = 0; j < c; ++j) {
        const Cell k = cell(z[i * 2 * c + c + j], lo_, hi_);
        const double r = static_cast<double>(z[i * 2 * c + j]) - y[i * c + j];  // mu - y
        dst[i * 2 * c + j] = static_cast<T>(r * k.w);  // dNLL/dmu = (mu - y) w
        // dNLL/ds = (1 - r^2 w) / 2 inside the clamp range, 0 where s is clamped.
        dst[i * 2 * c + c + j] = static_cast<T>(k.active ? 0.5 * (1.0 - r * r * k.w) : 0.0);
      }
  });
}

template <Real T>
void GaussianLearnedVariance<T>::hessian_product(const Tensor<T>& z, const Tensor<T>& a,
                                                 Tensor<T>& out) const {
  (void)a;
  (void)out;
  throw ValueError(std::string(kOp) +
                   "::hessian_product: H_L(z, y) of this head depends on the targets y (logits " +
                   z.shape().str() +
                   "); call hessian_product(z, y, a, out), or fisher_product(z, a, out) for F_R");
}

template <Real T>
void GaussianLearnedVariance<T>::hessian_product(const Tensor<T>& z, const Tensor<T>& y,
                                                 const Tensor<T>& a, Tensor<T>& out) const {
  const std::string op = std::string(kOp) + "::hessian_product";
  check_logits(op, z.shape(), &y.shape());
  check_same(op, z.shape(), a.shape(), "direction");
  check_same(op, z.shape(), out.shape(), "output");
  const Index n = z.dim(0), c = z.dim(1) / 2;
  into(out, {&z, &y, &a}, [&](Tensor<T>& dst) {
    for (Index i = 0; i < n; ++i)
      for (Index j = 0; j < c; ++j) {
        const Index m = i * 2 * c + j, v = m + c;
        const Cell k = cell(z[v], lo_, hi_);
        const double r = static_cast<double>(y[i * c + j]) - z[m];
        const double am = a[m], as = k.active ? static_cast<double>(a[v]) : 0.0;
        // [[w, r w], [r w, r^2 w / 2]] (a_mu, a_s), with the s row and column zero when clamped.
        dst[m] = static_cast<T>(k.w * am + r * k.w * as);
        dst[v] = static_cast<T>(k.active ? r * k.w * am + 0.5 * r * r * k.w * as : 0.0);
      }
  });
}

template <Real T>
void GaussianLearnedVariance<T>::fisher_product(const Tensor<T>& z, const Tensor<T>& a,
                                                Tensor<T>& out) const {
  const std::string op = std::string(kOp) + "::fisher_product";
  check_logits(op, z.shape());
  check_same(op, z.shape(), a.shape(), "direction");
  check_same(op, z.shape(), out.shape(), "output");
  const Index n = z.dim(0), c = z.dim(1) / 2;
  into(out, {&z, &a}, [&](Tensor<T>& dst) {
    for (Index i = 0; i < n; ++i)
      for (Index j = 0; j < c; ++j) {
        const Index m = i * 2 * c + j, v = m + c;
        const Cell k = cell(z[v], lo_, hi_);
        dst[m] = static_cast<T>(k.w * a[m]);                   // E[r^2 w^2] = w
        dst[v] = static_cast<T>(k.active ? 0.5 * a[v] : 0.0);  // E[(r^2 w - 1)^2] / 4 = 1/2
      }
  });
}

template <Real T>
Tensor<T> GaussianLearnedVariance<T>::sample(const Tensor<T>& z, std::uint64_t seed,
                                             std::uint64_t sample_index,
                                             Index first_example) const {
  check_logits(std::string(kOp) + "::sample", z.shape());
  const Index n = z.dim(0), c = z.dim(1) / 2;
  Tensor<T> y = Tensor<T>::uninitialized(Shape{n, c});
  for (Index i = 0; i < n; ++i) {
    Rng rng(mix_key(seed, static_cast<std::uint64_t>(first_example + i), sample_index));
    for (Index j = 0; j < c; ++j) {
      const double sd = std::sqrt(cell(z[i * 2 * c + c + j], lo_, hi_).var);
      y[i * c + j] = static_cast<T>(z[i * 2 * c + j] + sd * rng.normal());
    }
  }
  return y;
}

#define AMARI_GLV_NLL(T, V) \
  template V GaussianLearnedVariance<T>::nll<V>(const V&, const Tensor<T>&) const;
#define AMARI_INSTANTIATE(T)                 \
  template class GaussianLearnedVariance<T>; \
  AMARI_GLV_NLL(T, Tensor<T>)                \
  AMARI_GLV_NLL(T, Dual<T>)                  \
  AMARI_GLV_NLL(T, Var<T>)
AMARI_INSTANTIATE(float)
AMARI_INSTANTIATE(double)
#undef AMARI_INSTANTIATE

}  // namespace amari::nn
