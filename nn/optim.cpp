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

// Options are checked in the precision the update uses them in: a value that is fine as a double
// can round to 0, to 1 or to infinity in float (epsilon 1e-50, momentum 1 - 1e-12, learning rate
// 1e39). Written as "x >= 0 && finite" so that NaN, for which every comparison is false, is refused.
template <Real T>
void require_in_t(bool ok, const char* optimizer, const char* option, double value,
                  const char* expected) {
  if (!ok) {
    throw ValueError(std::string(optimizer) + ": " + option + " must be " + expected + " in " +
                     dtype_name(dtype_of<T>) + " (the precision of the update), got " +
                     num(value) + " (" + num(static_cast<double>(static_cast<T>(value))) + " in " +
                     dtype_name(dtype_of<T>) + ")");
  }
}

// A non-negative option (learning rate, weight decay): finite in T, and not rounded to 0 in T
// unless it is 0.
template <Real T>
void check_nonnegative(const char* optimizer, const char* option, double x) {
  require(x >= 0 && std::isfinite(x), optimizer, option, x, "finite and >= 0");
  const T t = static_cast<T>(x);
  require_in_t<T>(std::isfinite(t) && (x == 0 || t > 0), optimizer, option, x,
                  "finite and, unless 0, not rounded to 0");
}

// A decay rate (momentum, beta1, beta2) in [0, 1) that stays below 1 when rounded to T.
template <Real T>
void check_rate(const char* optimizer, const char* option, double x) {
  require(x >= 0 && x < 1, optimizer, option, x, "in [0, 1)");
  require_in_t<T>(static_cast<T>(x) < T(1), optimizer, option, x, "below 1 after rounding");
}

template <Real T>
void check_learning_rate(const char* optimizer, double lr) {
  check_nonnegative<T>(optimizer, "learning_rate", lr);
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

// ---- the guarded update ------------------------------------------------------------------------
//
// Every step is two passes over the same arithmetic: a dry run that computes each element's new
// parameter (and state) without storing anything, and the commit that stores them. The dry run
// flags a non-finite gradient, and a new value that is non-finite where the old one was finite (an
// overflow: a huge but finite gradient, a huge learning rate); then the step throws and nothing has
// been written (strong guarantee), with no copy of the parameters. Parameters that already were
// inf or NaN are not flagged again (the update leaves inf as it is when there is no decay).
// Both passes evaluate the same inline functions, so the commit stores exactly what was checked.
// Adam's dry run is a cheap screen (no sqrt, no division) backed by an exact pass when the screen
// is unsure, so a normal step costs one extra memory-bound read of p, g, m and v.

constexpr const char* kNotModified = "; the parameters and the optimizer state were not modified";

// Where the dry run found the first problem, for the error message.
struct Overflow {
  Index index = -1;
  const char* what = "";  // "parameter", "velocity", "first moment", "second moment"
  double before = 0, after = 0;
};

// Throws the ValueError of a step whose dry run found `o` (gradient problems are reported by
// check_finite first, with their own message).
[[noreturn]] void throw_overflow(const char* op, const Overflow& o, Index n) {
  throw ValueError(std::string(op) + ": the update would make " + o.what + " " +
                   std::to_string(o.index) + " (of " + std::to_string(n) + ") " + num(o.after) +
                   " (it was " + num(o.before) + "); lower the learning rate or clip the gradient" +
                   kNotModified);
}

template <class T>
bool finite_value(T x) {
  return std::fabs(x) <= std::numeric_limits<T>::max();  // false for NaN
}

// SGD's rule for one element (torch.optim.SGD, dampening 0): returns the new parameter and
// updates v (with momentum). With mu = 0 and wd = 0 it is p - lr g: no decay term at all (not
// 0 * p), so infinite parameters stay what they were.
template <bool kMomentum, bool kDecay, bool kNesterov, class T>
struct SgdRule {
  T lr, mu, wd;
  T operator()(T p, T g, T& v) const {
    T d = g;
    if constexpr (kDecay) d += wd * p;
    if constexpr (kMomentum) {
      const T vi = mu * v + d;
      v = vi;
      if constexpr (kNesterov) {
        return p - lr * (d + mu * vi);
      } else {
        return p - lr * vi;
      }
    } else {
      return p - lr * d;
    }
  }
};

// Dry run (kWrite false): returns true if a gradient element is non-finite or an update would
// overflow. Commit (kWrite true): stores the new parameters (and velocity), returns false. The
// dry-run loop is branch-free (an OR of flags), so it vectorizes like the commit.
template <bool kWrite, bool kMomentum, class Rule, class T>
bool sgd_pass(const Rule& rule, T* p, const T* g, T* v, Index n) {
  int bad = 0;
  for (Index i = 0; i < n; ++i) {
    T vi = kMomentum ? v[i] : T(0);
    const T pi = rule(p[i], g[i], vi);
    if constexpr (kWrite) {
      p[i] = pi;
      if constexpr (kMomentum) v[i] = vi;
    } else {
      // Bitwise on 0/1 integers, not && / !: no branch, so the loop vectorizes.
      const int g_ok = finite_value(g[i]), p_ok = finite_value(p[i]), new_ok = finite_value(pi);
      bad |= (g_ok ^ 1) | ((new_ok ^ 1) & p_ok);
      if constexpr (kMomentum) {
        const int v_ok = finite_value(v[i]), new_v_ok = finite_value(vi);
        bad |= (new_v_ok ^ 1) & v_ok;
      }
    }
  }
  return bad != 0;
}

// The first element the dry run would flag (scalar search, run only when something is wrong).
template <bool kMomentum, class Rule, class T>
Overflow sgd_first_overflow(const Rule& rule, const T* p, const T* g, const T* v, Index n) {
  for (Index i = 0; i < n; ++i) {
    T vi = kMomentum ? v[i] : T(0);
    const T pi = rule(p[i], g[i], vi);
    if (!finite_value(pi) && finite_value(p[i])) return {i, "parameter", double(p[i]), double(pi)};
    if (kMomentum && !finite_value(vi) && finite_value(v[i])) return {i, "velocity", double(v[i]), double(vi)};
  }
  return {};
}

// One guarded SGD step with the variant fixed at compile time.
template <bool kMomentum, bool kDecay, bool kNesterov, class T>
void sgd_step(const char* op, const Tensor<T>& gradient, T* p, const T* g, T* v, Index n, T lr,
              T mu, T wd) {
  const SgdRule<kMomentum, kDecay, kNesterov, T> rule{lr, mu, wd};
  if (sgd_pass<false, kMomentum>(rule, p, g, v, n)) {
    check_finite(op, gradient);  // throws if the gradient is the problem
    throw_overflow(op, sgd_first_overflow<kMomentum>(rule, p, g, v, n), n);
  }
  sgd_pass<true, kMomentum>(rule, p, g, v, n);
}

// Whether and how Adam's weight decay enters the update.
enum class Decay { none, coupled, decoupled };

// The scalars of one Adam step, rounded to T once. half_max and inv_eps serve the screening pass.
template <class T>
struct AdamScalars {
  T b1, one_minus_b1, b2, one_minus_b2, step_size, inv_sqrt_bc2, eps, wd, keep;
  T half_max, inv_eps;
};

template <class T>
struct AdamMoments {
  xsimd::batch<T> p, m, v;  // p after AdamW's decay (the p the update starts from)
};

// The first half of one batch of Adam: the decayed parameters (AdamW first scales p by
// keep = 1 - lr wd) and the new moments. Shared by every pass, so all compute the same values.
template <Decay kDecay, class T>
inline AdamMoments<T> adam_moments(const AdamScalars<T>& s, const T* pp, const T* gp, const T* mp,
                                   const T* vp) {
  using B = xsimd::batch<T>;
  B pi = B::load_unaligned(pp);
  if constexpr (kDecay == Decay::decoupled) pi = pi * B(s.keep);
  B gi = B::load_unaligned(gp);
  if constexpr (kDecay == Decay::coupled) gi = gi + B(s.wd) * pi;
  const B mi = B(s.b1) * B::load_unaligned(mp) + B(s.one_minus_b1) * gi;
  const B vi = B(s.b2) * B::load_unaligned(vp) + B(s.one_minus_b2) * (gi * gi);
  return {pi, mi, vi};
}

// The second half: the new parameters. Written with xsimd batches rather than as a plain loop:
// std::sqrt may set errno, which stops GCC from vectorizing a scalar loop unless -fno-math-errno
// is given. Multiplying by 1/sqrt(bc2) instead of dividing by sqrt(bc2) (PyTorch's form) saves a
// division per element and agrees to rounding.
template <class T>
inline xsimd::batch<T> adam_parameters(const AdamScalars<T>& s, const AdamMoments<T>& r) {
  using B = xsimd::batch<T>;
  const B denominator = xsimd::sqrt(r.v) * B(s.inv_sqrt_bc2) + B(s.eps);
  return r.p - B(s.step_size) * r.m / denominator;
}

// Lanes whose new value is non-finite where the old one was finite.
template <class T>
xsimd::batch_bool<T> overflows(const xsimd::batch<T>& after, const T* before) {
  return (!xsimd::isfinite(after)) & xsimd::isfinite(xsimd::batch<T>::load_unaligned(before));
}

// What a pass over the batches does.
enum class AdamPass {
  screen,  // flags a bad gradient or moment exactly, and parameters that *might* overflow
  exact,   // flags exactly (the full update, sqrt and division included)
  write,   // stores the new parameters and moments
};

// Flags of one batch for the screening and exact passes. The screen skips the sqrt and the
// division: since the denominator is at least eps, |p - step m / den| <= |p| + |step m| / eps, so
// a lane whose bound stays below max / 2 (a margin far above the rounding of the bound) cannot
// overflow. A lane above the bound is flagged as unsure, and the exact pass decides.
template <AdamPass kPass, Decay kDecay, class T>
xsimd::batch_bool<T> adam_flags(const AdamScalars<T>& s, const T* pp, const T* gp, const T* mp,
                                const T* vp) {
  using B = xsimd::batch<T>;
  const AdamMoments<T> r = adam_moments<kDecay>(s, pp, gp, mp, vp);
  const auto bad = (!xsimd::isfinite(B::load_unaligned(gp))) | overflows(r.m, mp) | overflows(r.v, vp);
  if constexpr (kPass == AdamPass::exact) {
    return bad | overflows(adam_parameters(s, r), pp);
  } else {
    const B step_m = xsimd::abs(B(s.step_size) * r.m);
    // A non-finite v (only if it already was) would break den >= eps: such lanes are unsure too.
    const auto sure = (step_m <= B(s.half_max)) & xsimd::isfinite(r.v) &
                      (xsimd::abs(r.p) + step_m * B(s.inv_eps) <= B(s.half_max));
    return bad | ((!sure) & xsimd::isfinite(B::load_unaligned(pp)));
  }
}

// One pass over the full batches (in parallel above the element-wise kernels' threshold: every
// element's result is the same for any split; besides halving the update, this keeps each core's
// share of the freshly written parameters in its own cache, where the next step's GEMMs read
// them), then over zero-padded copies of the tail (v = 0 keeps the padding lanes finite), so every
// element is computed by the same instructions wherever it falls. Returns true if a lane was
// flagged (never for kPass == write).
template <AdamPass kPass, Decay kDecay, class T>
bool adam_pass(const AdamScalars<T>& s, T* p, const T* g, T* m, T* v, Index n) {
  using B = xsimd::batch<T>;
  constexpr Index W = static_cast<Index>(B::size);
  const Index full = n / W * W;
  int bad = 0;
#pragma omp parallel if (full >= kernels::kParallelElements) reduction(| : bad)
  {
    // A private copy of the scalars: the compiler can then keep them in registers, knowing the
    // stores to p, m and v cannot change them.
    const AdamScalars<T> k = s;
    xsimd::batch_bool<T> flags(false);
#pragma omp for schedule(static)
    for (Index j = 0; j < full; j += W) {
      if constexpr (kPass == AdamPass::write) {
        const AdamMoments<T> r = adam_moments<kDecay>(k, p + j, g + j, m + j, v + j);
        const B pn = adam_parameters(k, r);
        r.m.store_unaligned(m + j);
        r.v.store_unaligned(v + j);
        pn.store_unaligned(p + j);
      } else {
        flags = flags | adam_flags<kPass, kDecay>(k, p + j, g + j, m + j, v + j);
      }
    }
    if constexpr (kPass != AdamPass::write) bad |= xsimd::any(flags) ? 1 : 0;
  }
  if (full == n) return bad != 0;
  const auto rest = static_cast<std::size_t>(n - full);
  alignas(64) std::array<T, W> tp{}, tg{}, tm{}, tv{};
  std::copy_n(p + full, rest, tp.begin());
  std::copy_n(g + full, rest, tg.begin());
  std::copy_n(m + full, rest, tm.begin());
  std::copy_n(v + full, rest, tv.begin());
  if constexpr (kPass == AdamPass::write) {
    const AdamMoments<T> r = adam_moments<kDecay>(s, tp.data(), tg.data(), tm.data(), tv.data());
    adam_parameters(s, r).store_unaligned(tp.data());
    r.m.store_unaligned(tm.data());
    r.v.store_unaligned(tv.data());
    std::copy_n(tp.begin(), rest, p + full);
    std::copy_n(tm.begin(), rest, m + full);
    std::copy_n(tv.begin(), rest, v + full);
  } else {
    // Padding lanes (all zero) are finite before and after and far inside the screening bound.
    const auto f = adam_flags<kPass, kDecay>(s, tp.data(), tg.data(), tm.data(), tv.data());
    bad |= xsimd::any(f) ? 1 : 0;
  }
  return bad != 0;
}

// The first element the exact pass flags (run only when something is wrong).
template <Decay kDecay, class T>
Overflow adam_first_overflow(const AdamScalars<T>& s, const T* p, const T* g, const T* m,
                             const T* v, Index n) {
  constexpr Index W = static_cast<Index>(xsimd::batch<T>::size);
  for (Index j = 0; j < n; j += W) {
    const auto rest = static_cast<std::size_t>(std::min(W, n - j));
    alignas(64) std::array<T, W> tp{}, tg{}, tm{}, tv{}, rp, rm, rv;
    std::copy_n(p + j, rest, tp.begin());
    std::copy_n(g + j, rest, tg.begin());
    std::copy_n(m + j, rest, tm.begin());
    std::copy_n(v + j, rest, tv.begin());
    const AdamMoments<T> r = adam_moments<kDecay>(s, tp.data(), tg.data(), tm.data(), tv.data());
    adam_parameters(s, r).store_unaligned(rp.data());
    r.m.store_unaligned(rm.data());
    r.v.store_unaligned(rv.data());
    for (std::size_t l = 0; l < rest; ++l) {
      const Index i = j + static_cast<Index>(l);
      if (!finite_value(rp[l]) && finite_value(tp[l])) return {i, "parameter", double(tp[l]), double(rp[l])};
      if (!finite_value(rm[l]) && finite_value(tm[l])) return {i, "first moment", double(tm[l]), double(rm[l])};
      if (!finite_value(rv[l]) && finite_value(tv[l])) return {i, "second moment", double(tv[l]), double(rv[l])};
    }
  }
  return {};
}

// The screen is one memory-bound pass without sqrt or division; only when it flags something (a
// bad gradient, or a step so large that it might overflow a parameter) does the exact pass run.
template <Decay kDecay, class T>
void adam_step(const char* op, const Tensor<T>& gradient, const AdamScalars<T>& s, T* p,
               const T* g, T* m, T* v, Index n) {
  if (adam_pass<AdamPass::screen, kDecay>(s, p, g, m, v, n) &&
      adam_pass<AdamPass::exact, kDecay>(s, p, g, m, v, n)) {
    check_finite(op, gradient);  // throws if the gradient is the problem
    throw_overflow(op, adam_first_overflow<kDecay>(s, p, g, m, v, n), n);
  }
  adam_pass<AdamPass::write, kDecay>(s, p, g, m, v, n);
}

}  // namespace

// ---- Sgd ---------------------------------------------------------------------------------------

template <Real T>
Sgd<T>::Sgd(SgdOptions options) : options_(options) {
  check_learning_rate<T>("Sgd", options.learning_rate);
  check_rate<T>("Sgd", "momentum", options.momentum);
  check_nonnegative<T>("Sgd", "weight_decay", options.weight_decay);
  if (options.nesterov && options.momentum == 0) {
    throw ValueError("Sgd: nesterov needs momentum > 0, got momentum 0");
  }
}

template <Real T>
void Sgd<T>::set_learning_rate(double learning_rate) {
  check_learning_rate<T>("Sgd::set_learning_rate", learning_rate);
  options_.learning_rate = learning_rate;
}

template <Real T>
void Sgd<T>::step(Tensor<T>& params, const Tensor<T>& gradient) {
  constexpr const char* op = "Sgd::step";
  check_arguments(op, params, gradient, velocity_);
  const Index n = params.size();
  T* p = params.data();
  const T* g = gradient.data();
  const T lr = static_cast<T>(options_.learning_rate);
  const T wd = static_cast<T>(options_.weight_decay);
  const bool decay = wd != 0;
  if (options_.momentum == 0) {
    if (decay) {
      sgd_step<false, true, false>(op, gradient, p, g, static_cast<T*>(nullptr), n, lr, T(0), wd);
    } else {
      sgd_step<false, false, false>(op, gradient, p, g, static_cast<T*>(nullptr), n, lr, T(0), wd);
    }
  } else {
    // Zero-filled, so the first step's mu * 0 + g gives v = g exactly (PyTorch copies g there).
    // Kept in a local until the step succeeded: a refused first step leaves no velocity behind.
    Tensor<T> velocity = velocity_.defined() ? velocity_ : Tensor<T>(Shape{n});
    T* v = velocity.data();
    const T mu = static_cast<T>(options_.momentum);
    if (decay && options_.nesterov) sgd_step<true, true, true>(op, gradient, p, g, v, n, lr, mu, wd);
    if (decay && !options_.nesterov) sgd_step<true, true, false>(op, gradient, p, g, v, n, lr, mu, wd);
    if (!decay && options_.nesterov) sgd_step<true, false, true>(op, gradient, p, g, v, n, lr, mu, wd);
    if (!decay && !options_.nesterov) sgd_step<true, false, false>(op, gradient, p, g, v, n, lr, mu, wd);
    velocity_ = std::move(velocity);
  }
  ++steps_;
}

template <Real T>
OptimizerState<T> Optimizer<T>::save_state() const {
  throw ValueError(describe() + ": this optimizer does not save its state (override save_state and load_state)");
}

template <Real T>
void Optimizer<T>::load_state(const OptimizerState<T>&) {
  throw ValueError(describe() + ": this optimizer does not load a state (override save_state and load_state)");
}

namespace {

// A state tensor for load_state: present (or absent: undefined), every value finite, and copied,
// so the optimizer never shares storage with the caller's state.
template <Real T>
Tensor<T> restored_tensor(const OptimizerState<T>& s, const char* op, const std::string& name) {
  if (!s.has_tensor(name)) return Tensor<T>();
  const Tensor<T>& t = s.tensors.at(name);
  if (!t.defined()) return Tensor<T>();
  for (Index i = 0; i < t.size(); ++i) {
    if (!std::isfinite(t[i])) {
      throw ValueError(std::string(op) + ": state tensor '" + name + "' " + t.shape().str() + " holds " +
                       num(static_cast<double>(t[i])) + " at index " + std::to_string(i));
    }
  }
  return t.clone();
}

// The step count and learning rate of a state, checked for `op`.
template <Real T>
std::pair<std::int64_t, double> restored_counters(const OptimizerState<T>& s, const char* op) {
  const std::int64_t steps = s.counter("steps");
  if (steps < 0) throw ValueError(std::string(op) + ": negative step count " + std::to_string(steps));
  const double lr = s.number("learning_rate");
  check_learning_rate<T>(op, lr);
  return {steps, lr};
}

}  // namespace

template <Real T>
OptimizerState<T> Sgd<T>::save_state() const {
  OptimizerState<T> s;
  s.kind = "sgd";
  if (velocity_.defined()) s.tensors["velocity"] = velocity_.clone();
  s.counters["steps"] = steps_;
  s.numbers["learning_rate"] = options_.learning_rate;
  return s;
}

template <Real T>
void Sgd<T>::load_state(const OptimizerState<T>& s) {
  constexpr const char* op = "Sgd::load_state";
  s.require_kind("sgd", op);
  const auto [steps, lr] = restored_counters(s, op);
  Tensor<T> velocity = restored_tensor(s, op, "velocity");
  if (velocity.defined() && options_.momentum == 0) {
    throw ValueError(std::string(op) + ": the state has a velocity but this Sgd has no momentum");
  }
  velocity_ = std::move(velocity);  // commit: nothing below throws
  steps_ = steps;
  options_.learning_rate = lr;
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
  check_learning_rate<T>("Adam", options.learning_rate);
  check_rate<T>("Adam", "beta1", options.beta1);
  check_rate<T>("Adam", "beta2", options.beta2);
  require(options.epsilon > 0 && std::isfinite(options.epsilon), "Adam", "epsilon", options.epsilon,
          "finite and > 0");
  // epsilon bounds the step where the second moment is 0: it must be a normal number of T
  // (1e-50 rounds to 0 in float, and a subnormal one loses its precision).
  const T eps = static_cast<T>(options.epsilon);
  require_in_t<T>(eps >= std::numeric_limits<T>::min() && std::isfinite(eps), "Adam", "epsilon",
                  options.epsilon, "a finite, normal number");
  check_nonnegative<T>("Adam", "weight_decay", options.weight_decay);
}

template <Real T>
void Adam<T>::set_learning_rate(double learning_rate) {
  check_learning_rate<T>("Adam::set_learning_rate", learning_rate);
  options_.learning_rate = learning_rate;
}

template <Real T>
void Adam<T>::step(Tensor<T>& params, const Tensor<T>& gradient) {
  constexpr const char* op = "Adam::step";
  check_arguments(op, params, gradient, m_);
  const Index n = params.size();
  // The state and the step count are committed only when the step succeeds.
  Tensor<T> m = m_.defined() ? m_ : Tensor<T>(Shape{n});
  Tensor<T> v = v_.defined() ? v_ : Tensor<T>(Shape{n});
  const AdamOptions& o = options_;
  // Bias corrections in double: b^t underflows gracefully to 0, and the rounding to T happens once.
  const double t = static_cast<double>(steps_ + 1);
  const double bc1 = 1 - std::pow(o.beta1, t);
  const double bc2 = 1 - std::pow(o.beta2, t);
  T* p = params.data();
  const T* g = gradient.data();
  const T wd = static_cast<T>(o.weight_decay);
  // AdamW: the decay acts on the parameters directly (p *= 1 - lr wd), not through the adaptive
  // scaling.
  const AdamScalars<T> s{static_cast<T>(o.beta1),
                         static_cast<T>(1 - o.beta1),
                         static_cast<T>(o.beta2),
                         static_cast<T>(1 - o.beta2),
                         static_cast<T>(o.learning_rate / bc1),
                         static_cast<T>(1 / std::sqrt(bc2)),
                         static_cast<T>(o.epsilon),
                         wd,
                         static_cast<T>(1 - o.learning_rate * o.weight_decay),
                         std::numeric_limits<T>::max() / 2,
                         static_cast<T>(1 / o.epsilon)};
  if (wd == 0) {
    adam_step<Decay::none>(op, gradient, s, p, g, m.data(), v.data(), n);
  } else if (o.decoupled_weight_decay) {
    adam_step<Decay::decoupled>(op, gradient, s, p, g, m.data(), v.data(), n);
  } else {
    adam_step<Decay::coupled>(op, gradient, s, p, g, m.data(), v.data(), n);
  }
  m_ = std::move(m);
  v_ = std::move(v);
  ++steps_;
}

template <Real T>
OptimizerState<T> Adam<T>::save_state() const {
  OptimizerState<T> s;
  s.kind = "adam";
  if (m_.defined()) {
    s.tensors["first_moment"] = m_.clone();
    s.tensors["second_moment"] = v_.clone();
  }
  s.counters["steps"] = steps_;
  s.numbers["learning_rate"] = options_.learning_rate;
  return s;
}

template <Real T>
void Adam<T>::load_state(const OptimizerState<T>& s) {
  constexpr const char* op = "Adam::load_state";
  s.require_kind("adam", op);
  const auto [steps, lr] = restored_counters(s, op);
  Tensor<T> m = restored_tensor(s, op, "first_moment");
  Tensor<T> v = restored_tensor(s, op, "second_moment");
  if (m.defined() != v.defined() || (m.defined() && m.shape() != v.shape())) {
    throw ValueError(std::string(op) + ": the moments must both be present with one shape, got " +
                     (m.defined() ? m.shape().str() : std::string("none")) + " and " +
                     (v.defined() ? v.shape().str() : std::string("none")));
  }
  for (Index i = 0; i < v.size(); ++i) {
    if (v[i] < T(0)) {
      throw ValueError(std::string(op) + ": the second moment holds " + num(static_cast<double>(v[i])) +
                       " < 0 at index " + std::to_string(i));
    }
  }
  m_ = std::move(m);  // commit: nothing below throws
  v_ = std::move(v);
  steps_ = steps;
  options_.learning_rate = lr;
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

template class Optimizer<float>;
template class Optimizer<double>;
template class Sgd<float>;
template class Sgd<double>;
template class Adam<float>;
template class Adam<double>;

}  // namespace amari::nn
