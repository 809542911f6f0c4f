#include <amari/nn/optim.hpp>

#include <algorithm>
#include <array>
#include <charconv>
#include <cmath>
#include <limits>

#include <xsimd/xsimd.hpp>

#include <amari/autodiff/kernels/elementwise.hpp>

namespace amari::nn {

namespace {

// Shortest decimal form that reads back as the same double ("0.001", "1e-08").
std::string num(double x) {
  char buf[32];
  const auto r = std::to_chars(buf, buf + sizeof buf, x);
  return std::string(buf, r.ptr);
}

void require(bool ok, const char* optimizer, const char* option, double value,
             const char* expected) {
  if (!ok) {
    throw ValueError(std::string(optimizer) + ": " + option + " must be " + expected + ", got " +
                     num(value));
  }
}

// Written as "x >= 0 && finite" so that NaN, for which every comparison is false, is refused.
void check_learning_rate(const char* optimizer, double lr) {
  require(lr >= 0 && std::isfinite(lr), optimizer, "learning_rate", lr, "finite and >= 0");
}

template <Real T>
void check_arguments(const char* op, const Tensor<T>& params, const Tensor<T>& gradient,
                     const Tensor<T>& state) {
  if (!params.defined() || !gradient.defined()) {
    throw ShapeError(std::string(op) + ": undefined " +
                     (params.defined() ? "gradient" : "parameters"));
  }
  if (!(params.shape() == gradient.shape())) {
    throw ShapeError(std::string(op) + ": parameters of shape " + params.shape().str() +
                     " but gradient of shape " + gradient.shape().str());
  }
  if (state.defined() && state.size() != params.size()) {
    throw ShapeError(std::string(op) + ": the state was allocated for " +
                     std::to_string(state.size()) + " elements on the first step, now " +
                     std::to_string(params.size()) +
                     " are given; use one optimizer per tensor, or reset() it first");
  }
}

// Throws ValueError naming the first NaN or infinite element. The scan is a branch-free OR
// reduction so it vectorizes; the slow search for the index runs only when something is wrong.
template <Real T>
void check_finite(const char* op, const Tensor<T>& gradient) {
  const T* g = gradient.data();
  const Index n = gradient.size();
  constexpr T kMax = std::numeric_limits<T>::max();
  int bad = 0;
  for (Index i = 0; i < n; ++i) bad |= !(std::fabs(g[i]) <= kMax);
  if (!bad) return;
  Index first = 0;
  while (first < n && std::fabs(g[first]) <= kMax) ++first;
  const std::string what = std::isnan(g[first]) ? "NaN" : (g[first] > 0 ? "+inf" : "-inf");
  throw ValueError(std::string(op) + ": the gradient holds " + what + " at index " +
                   std::to_string(first) + " (of " + std::to_string(n) +
                   "); the parameters and the optimizer state were not modified");
}

// The four SGD-with-momentum variants, each a plain loop the compiler vectorizes; choosing the
// variant outside the loop keeps branches out of it.
template <bool kDecay, bool kNesterov, class T>
void sgd_momentum(T* p, const T* g, T* v, Index n, T lr, T mu, T wd) {
  for (Index i = 0; i < n; ++i) {
    T d = g[i];
    if constexpr (kDecay) d += wd * p[i];
    const T vi = mu * v[i] + d;
    v[i] = vi;
    if constexpr (kNesterov) {
      p[i] -= lr * (d + mu * vi);
    } else {
      p[i] -= lr * vi;
    }
  }
}

// The scalars of one Adam step, rounded to T once.
template <class T>
struct AdamScalars {
  T b1, one_minus_b1, b2, one_minus_b2, step_size, inv_sqrt_bc2, eps, wd;
};

// Written with xsimd batches rather than as a plain loop: std::sqrt may set errno, which stops
// GCC from vectorizing a scalar loop unless -fno-math-errno is given. The tail runs the same batch
// code on zero-padded copies (v = 0 keeps the padding lanes finite), so every element is computed
// by the same instructions wherever it falls. Multiplying by 1/sqrt(bc2) instead of dividing by
// sqrt(bc2) (PyTorch's form) saves a division per element and agrees to rounding.
template <bool kCoupledDecay, class T>
inline void adam_batch(const AdamScalars<T>& s, T* pp, const T* gp, T* mp, T* vp) {
  using B = xsimd::batch<T>;
  const B pi = B::load_unaligned(pp);
  B gi = B::load_unaligned(gp);
  if constexpr (kCoupledDecay) gi = gi + B(s.wd) * pi;
  const B mi = B(s.b1) * B::load_unaligned(mp) + B(s.one_minus_b1) * gi;
  const B vi = B(s.b2) * B::load_unaligned(vp) + B(s.one_minus_b2) * (gi * gi);
  mi.store_unaligned(mp);
  vi.store_unaligned(vp);
  const B denominator = xsimd::sqrt(vi) * B(s.inv_sqrt_bc2) + B(s.eps);
  (pi - B(s.step_size) * mi / denominator).store_unaligned(pp);
}

template <bool kCoupledDecay, class T>
void adam_update(T* p, const T* g, T* m, T* v, Index n, const AdamScalars<T>& s) {
  constexpr Index W = static_cast<Index>(xsimd::batch<T>::size);
  // Threads split the vector above the element-wise kernels' threshold (64k): every element's
  // result is the same for any split. Besides halving the update, this keeps each core's share of the freshly written
  // parameters in its own cache, where the next step's GEMMs read them.
  const Index full = n / W * W;
#pragma omp parallel if (full >= kernels::kParallelElements)
  {
    // A private copy of the scalars: the compiler can then keep them in registers, knowing the
    // stores to p, m and v cannot change them.
    const AdamScalars<T> k = s;
#pragma omp for schedule(static)
    for (Index j = 0; j < full; j += W) adam_batch<kCoupledDecay>(k, p + j, g + j, m + j, v + j);
  }
  if (full == n) return;
  const auto rest = static_cast<std::size_t>(n - full);
  std::array<T, W> tp{}, tg{}, tm{}, tv{};
  std::copy_n(p + full, rest, tp.begin());
  std::copy_n(g + full, rest, tg.begin());
  std::copy_n(m + full, rest, tm.begin());
  std::copy_n(v + full, rest, tv.begin());
  adam_batch<kCoupledDecay>(s, tp.data(), tg.data(), tm.data(), tv.data());
  std::copy_n(tp.begin(), rest, p + full);
  std::copy_n(tm.begin(), rest, m + full);
  std::copy_n(tv.begin(), rest, v + full);
}

}  // namespace

// ---- Sgd ---------------------------------------------------------------------------------------

template <Real T>
Sgd<T>::Sgd(SgdOptions options) : options_(options) {
  check_learning_rate("Sgd", options.learning_rate);
  require(options.momentum >= 0 && options.momentum < 1, "Sgd", "momentum", options.momentum,
          "in [0, 1)");
  require(options.weight_decay >= 0 && std::isfinite(options.weight_decay), "Sgd", "weight_decay",
          options.weight_decay, "finite and >= 0");
  if (options.nesterov && options.momentum == 0) {
    throw ValueError("Sgd: nesterov needs momentum > 0, got momentum 0");
  }
}

template <Real T>
void Sgd<T>::set_learning_rate(double learning_rate) {
  check_learning_rate("Sgd::set_learning_rate", learning_rate);
  options_.learning_rate = learning_rate;
}

template <Real T>
void Sgd<T>::step(Tensor<T>& params, const Tensor<T>& gradient) {
  check_arguments("Sgd::step", params, gradient, velocity_);
  check_finite("Sgd::step", gradient);
  const Index n = params.size();
  T* p = params.data();
  const T* g = gradient.data();
  const T lr = static_cast<T>(options_.learning_rate);
  const T wd = static_cast<T>(options_.weight_decay);
  if (options_.momentum == 0) {
    // No decay term at all when wd = 0 (not 0 * p), so infinite parameters stay what they were.
    if (wd == 0) {
      for (Index i = 0; i < n; ++i) p[i] -= lr * g[i];
    } else {
      for (Index i = 0; i < n; ++i) p[i] -= lr * (g[i] + wd * p[i]);
    }
  } else {
    // Zero-filled, so the first step's mu * 0 + g gives v = g exactly (PyTorch copies g there).
    if (!velocity_.defined()) velocity_ = Tensor<T>(Shape{n});
    T* v = velocity_.data();
    const T mu = static_cast<T>(options_.momentum);
    const bool decay = wd != 0;
    if (decay && options_.nesterov) sgd_momentum<true, true>(p, g, v, n, lr, mu, wd);
    if (decay && !options_.nesterov) sgd_momentum<true, false>(p, g, v, n, lr, mu, wd);
    if (!decay && options_.nesterov) sgd_momentum<false, true>(p, g, v, n, lr, mu, wd);
    if (!decay && !options_.nesterov) sgd_momentum<false, false>(p, g, v, n, lr, mu, wd);
  }
  ++steps_;
}

template <Real T>
void Sgd<T>::reset() {
  velocity_ = Tensor<T>();
  steps_ = 0;
}

template <Real T>
std::string Sgd<T>::describe() const {
  return "Sgd(lr=" + num(options_.learning_rate) + ", momentum=" + num(options_.momentum) +
         (options_.nesterov ? ", nesterov" : "") + ", weight_decay=" + num(options_.weight_decay) +
         ")";
}

// ---- Adam --------------------------------------------------------------------------------------

template <Real T>
Adam<T>::Adam(AdamOptions options) : options_(options) {
  check_learning_rate("Adam", options.learning_rate);
  require(options.beta1 >= 0 && options.beta1 < 1, "Adam", "beta1", options.beta1, "in [0, 1)");
  require(options.beta2 >= 0 && options.beta2 < 1, "Adam", "beta2", options.beta2, "in [0, 1)");
  require(options.epsilon > 0 && std::isfinite(options.epsilon), "Adam", "epsilon", options.epsilon,
          "finite and > 0");
  require(options.weight_decay >= 0 && std::isfinite(options.weight_decay), "Adam", "weight_decay",
          options.weight_decay, "finite and >= 0");
}

template <Real T>
void Adam<T>::set_learning_rate(double learning_rate) {
  check_learning_rate("Adam::set_learning_rate", learning_rate);
  options_.learning_rate = learning_rate;
}

template <Real T>
void Adam<T>::step(Tensor<T>& params, const Tensor<T>& gradient) {
  check_arguments("Adam::step", params, gradient, m_);
  check_finite("Adam::step", gradient);
  const Index n = params.size();
  if (!m_.defined()) {
    m_ = Tensor<T>(Shape{n});
    v_ = Tensor<T>(Shape{n});
  }
  ++steps_;
  const AdamOptions& o = options_;
  // Bias corrections in double: b^t underflows gracefully to 0, and the rounding to T happens once.
  const double t = static_cast<double>(steps_);
  const double bc1 = 1 - std::pow(o.beta1, t);
  const double bc2 = 1 - std::pow(o.beta2, t);
  T* p = params.data();
  const T* g = gradient.data();
  const T wd = static_cast<T>(o.weight_decay);
  if (o.decoupled_weight_decay && wd != 0) {
    // AdamW: the decay acts on the parameters directly, not through the adaptive scaling.
    const T keep = static_cast<T>(1 - o.learning_rate * o.weight_decay);
    for (Index i = 0; i < n; ++i) p[i] *= keep;
  }
  const AdamScalars<T> s{static_cast<T>(o.beta1),
                         static_cast<T>(1 - o.beta1),
                         static_cast<T>(o.beta2),
                         static_cast<T>(1 - o.beta2),
                         static_cast<T>(o.learning_rate / bc1),
                         static_cast<T>(1 / std::sqrt(bc2)),
                         static_cast<T>(o.epsilon),
                         wd};
  if (!o.decoupled_weight_decay && wd != 0) {
    adam_update<true>(p, g, m_.data(), v_.data(), n, s);
  } else {
    adam_update<false>(p, g, m_.data(), v_.data(), n, s);
  }
}

template <Real T>
void Adam<T>::reset() {
  m_ = Tensor<T>();
  v_ = Tensor<T>();
  steps_ = 0;
}

template <Real T>
std::string Adam<T>::describe() const {
  const AdamOptions& o = options_;
  return std::string(o.decoupled_weight_decay ? "AdamW" : "Adam") + "(lr=" + num(o.learning_rate) +
         ", beta1=" + num(o.beta1) + ", beta2=" + num(o.beta2) + ", epsilon=" + num(o.epsilon) +
         ", weight_decay=" + num(o.weight_decay) + ")";
}

template class Sgd<float>;
template class Sgd<double>;
template class Adam<float>;
template class Adam<double>;

}  // namespace amari::nn
