#include <amari/curvature/kfac.hpp>

#include <algorithm>
#include <cmath>
#include <limits>
#include <span>

#include <amari/autodiff/kernels/gemm.hpp>
#include <amari/curvature/dense_solve.hpp>
#include <amari/curvature/vector_ops.hpp>

namespace amari::curvature {

namespace {

using kernels::Trans;

// Retries of a failed factorization, each with 10x the damping of both factors of the layer.
constexpr int kDampingRetries = 6;

void check_option(bool ok, const char* option, double value, const char* expected) {
  if (!ok) {
    throw ValueError(std::string("K-FAC: option ") + option + " = " + std::to_string(value) +
                     " must be " + expected);
  }
}

void check_batch(const char* op, const Shape& x, const Shape& y) {
  if (x.rank() != 2 || y.rank() != 2 || x[0] != y[0] || x[0] == 0) {
    throw ShapeError(std::string(op) + ": inputs " + x.str() + " and targets " + y.str() +
                     " must be (N, D) and (N, C) with the same N >= 1");
  }
}

double mean_diagonal(const Tensor<double>& m) {
  const Index n = m.dim(0);
  double s = 0;
  for (Index i = 0; i < n; ++i) s += m[i * n + i];
  return s / static_cast<double>(n);
}

template <Real T>
Tensor<double> to_double(const Tensor<T>& t) {
  Tensor<double> d = Tensor<double>::uninitialized(t.shape());
  for (Index i = 0; i < t.size(); ++i) d[i] = static_cast<double>(t[i]);
  return d;
}

template <Real T>
Tensor<T> from_double(const Tensor<double>& d) {
  Tensor<T> t = Tensor<T>::uninitialized(d.shape());
  for (Index i = 0; i < d.size(); ++i) t[i] = static_cast<T>(d[i]);
  return t;
}

// (m + damping I) factored and inverted in place; false if the factorization fails.
bool damped_inverse(Tensor<double>& m, double damping) {
  const Index n = m.dim(0);
  for (Index i = 0; i < n; ++i) m[i * n + i] += damping;
  if (cholesky_in_place(m) >= 0) return false;
  cholesky_inverse_in_place(m);
  return true;
}

}  // namespace

void validate(const KfacOptions& o) {
  check_option(o.learning_rate > 0 && std::isfinite(o.learning_rate), "learning_rate",
               o.learning_rate, "positive and finite");
  check_option(o.damping > 0 && std::isfinite(o.damping), "damping", o.damping,
               "positive and finite");
  check_option(o.decay >= 0 && o.decay < 1, "decay", o.decay, "in [0, 1)");
  check_option(o.inverse_update_every >= 1, "inverse_update_every", o.inverse_update_every, ">= 1");
  check_option(o.statistics_batch >= 0, "statistics_batch", static_cast<double>(o.statistics_batch),
               ">= 0 (0: the whole batch)");
  check_option(o.momentum >= 0 && o.momentum < 1, "momentum", o.momentum, "in [0, 1)");
  check_option(o.kl_clip >= 0 && std::isfinite(o.kl_clip), "kl_clip", o.kl_clip,
               ">= 0 and finite (0 disables it)");
  check_option(o.weight_decay >= 0 && std::isfinite(o.weight_decay), "weight_decay", o.weight_decay,
               ">= 0 and finite");
}

// ---- KroneckerFactors ---------------------------------------------------------------------------

template <Real T>
struct KroneckerFactors<T>::State {
  const nn::Model<T>* model;
  const nn::Head<T>* head;
  const nn::Sequential<T>* net;
  KfacOptions options;
  std::vector<std::size_t> param_counts;  // parameters of each module of the Sequential
  std::vector<KfacLayer> layers;
  std::vector<Tensor<T>> a, g, a_inv, g_inv;
  std::vector<double> pi, damping_used;
  std::uint64_t updates = 0;
  bool has_inverses = false;
  Tape<T> tape;
  Tensor<T> scratch;  // (rows, out) of the largest layer, for precondition()
};

template <Real T>
KroneckerFactors<T>::KroneckerFactors(const nn::Model<T>& model, const nn::Head<T>& head,
                                      KfacOptions options)
    : s_(std::make_unique<State>()) {
  validate(options);
  State& s = *s_;
  s.model = &model;
  s.head = &head;
  s.options = options;
  s.net = dynamic_cast<const nn::Sequential<T>*>(&model.module());
  if (!s.net) {
    throw ValueError("K-FAC: the model's module " + model.module().describe() +
                     " is not an nn::Sequential; K-FAC supports a Sequential of nn::Linear layers "
                     "and parameter-free modules (activations)");
  }
  const std::vector<nn::ParamInfo>& layout = model.layout();
  std::size_t p = 0;
  Index scratch = 0;
  for (std::size_t i = 0; i < s.net->size(); ++i) {
    const nn::Module<T>& m = (*s.net)[i];
    std::vector<nn::ParamSpec> specs;
    m.declare(specs, "");
    s.param_counts.push_back(specs.size());
    if (const auto* lin = dynamic_cast<const nn::Linear<T>*>(&m)) {
      KfacLayer l;
      l.module_index = i;
      l.name = std::to_string(i) + ": " + m.describe();
      l.in = lin->in_features();
      l.out = lin->out_features();
      l.bias = specs.size() == 2;
      l.offset = layout.at(p).offset;
      // The block [W; b] must be one contiguous (rows, out) row-major matrix (nn/model.hpp).
      const bool contiguous = layout[p].shape == Shape{l.in, l.out} &&
                              (!l.bias || (layout.at(p + 1).shape == Shape{l.out} &&
                                           layout[p + 1].offset == l.offset + l.in * l.out));
      if (!contiguous) {
        throw Error("K-FAC: layer " + l.name + ": parameters are not laid out as [W; b]");
      }
      scratch = std::max(scratch, l.rows() * l.out);
      s.a.push_back(Tensor<T>(Shape{l.rows(), l.rows()}));
      s.g.push_back(Tensor<T>(Shape{l.out, l.out}));
      s.layers.push_back(std::move(l));
    } else if (!specs.empty()) {
      throw ValueError("K-FAC: module " + std::to_string(i) + " of the Sequential, " +
                       m.describe() +
                       ", is not supported: it has parameters and is not an nn::Linear (K-FAC "
                       "handles Linear layers and parameter-free modules such as activations)");
    }
    p += specs.size();
  }
  if (s.layers.empty()) {
    throw ValueError("K-FAC: the model " + s.net->describe() + " has no Linear layer");
  }
  s.a_inv.resize(s.layers.size());
  s.g_inv.resize(s.layers.size());
  s.pi.assign(s.layers.size(), 1.0);
  s.damping_used.assign(s.layers.size(), 0.0);
  s.scratch = Tensor<T>::uninitialized(Shape{scratch});
}

template <Real T>
KroneckerFactors<T>::KroneckerFactors(KroneckerFactors&&) noexcept = default;
template <Real T>
KroneckerFactors<T>& KroneckerFactors<T>::operator=(KroneckerFactors&&) noexcept = default;
template <Real T>
KroneckerFactors<T>::~KroneckerFactors() = default;

template <Real T>
double KroneckerFactors<T>::update(const Tensor<T>& inputs, const Tensor<T>& targets,
                                   Tensor<T>* gradient) {
  check_batch("KroneckerFactors::update", inputs.shape(), targets.shape());
  State& s = *s_;
  const Index n = inputs.dim(0);
  const Index ns = (s.options.statistics_batch > 0 && s.options.statistics_batch < n)
                       ? s.options.statistics_batch
                       : n;
  const std::size_t num_layers = s.layers.size();
  std::vector<Tensor<T>> grads;
  if (gradient) grads = s.model->split(*gradient);  // views: ShapeError unless length P

  // Forward pass recorded layer by layer, keeping each Linear's input value a_l and output Var s_l.
  Tape<T>& tape = s.tape;
  tape.clear();
  const std::vector<Var<T>> params = s.model->variables(tape);
  const std::span<const Var<T>> all(params);
  std::vector<Tensor<T>> acts(num_layers);
  std::vector<Var<T>> outs(num_layers);
  Var<T> h(inputs);
  for (std::size_t i = 0, p = 0, l = 0; i < s.net->size(); ++i) {
    nn::ForwardContext<Var<T>> cursor(all.subspan(p, s.param_counts[i]));
    const bool linear = l < num_layers && s.layers[l].module_index == i;
    if (linear) acts[l] = h.value();
    h = (*s.net)[i].forward(h, cursor);
    if (linear) outs[l++] = h;
    p += s.param_counts[i];
  }
  const Var<T> z = h;
  const double loss = static_cast<double>(s.head->loss(z.value(), targets).item());
  if (!std::isfinite(loss)) {
    tape.clear();
    throw ValueError("K-FAC: the loss " + std::to_string(loss) +
                     " is not finite; the Kronecker factors were not updated");
  }

  // Logit cotangent of the mean loss, (mu(z) - T(y)) / N: the gradient's sweep.
  Tensor<T> gz = Tensor<T>::uninitialized(z.shape());
  s.head->gradient(z.value(), targets, gz);
  std::vector<Tensor<T>> deltas(num_layers);
  for (std::size_t l = 0; l < num_layers; ++l) {
    deltas[l] = Tensor<T>::uninitialized(outs[l].shape());
  }
  const std::span<const Var<T>> zs(&z, 1);
  double delta_scale = 1;  // delta = delta_scale * (swept cotangent at s_l)
  if (!s.options.true_fisher) {
    // Empirical Fisher: the data labels' errors N dl/ds_l come out of the gradient's own sweep.
    std::vector<Var<T>> ins;
    std::vector<Tensor<T>> res;
    if (gradient) {
      ins = params;
      res = grads;
    }
    ins.insert(ins.end(), outs.begin(), outs.end());
    res.insert(res.end(), deltas.begin(), deltas.end());  // shares storage with deltas
    tape.vjp_into(zs, std::span<const Tensor<T>>(&gz, 1), ins, res);
    delta_scale = static_cast<double>(n);
  } else {
    if (gradient) tape.vjp_into(zs, std::span<const Tensor<T>>(&gz, 1), all, grads);
    // True Fisher: y ~ p_theta(.|x), error mu(z) - T(y) per example (no 1/N). The sign does not
    // change G; it is kept so that delta is the error a data label would give.
    const Tensor<T> y = s.head->sample(z.value(), s.options.seed, s.updates);
    Tensor<T> e = Tensor<T>::uninitialized(z.shape());
    s.head->score(z.value(), y, e);
    scal(-1.0, e);
    tape.vjp_into(zs, std::span<const Tensor<T>>(&e, 1), outs, deltas);
  }
  tape.clear();

  // Moving averages (M&G 2015, sec. 5): weight eps = min(1 - 1/k, decay) on the old value.
  const double k = static_cast<double>(s.updates + 1);
  const double eps = std::min(1.0 - 1.0 / k, s.options.decay), w = 1.0 - eps;
  const double inv_ns = 1.0 / static_cast<double>(ns);
  std::vector<double> colsum;
  for (std::size_t l = 0; l < num_layers; ++l) {
    const KfacLayer& L = s.layers[l];
    const Index rows = L.rows();
    T* a = s.a[l].data();
    // A = a^T a / Ns on the in x in block (row stride rows), then the bias row/column E[a] and 1.
    symmetric_gram<T>(ns, L.in, w * inv_ns, acts[l].data(), L.in, eps, a, rows);
    if (L.bias) {
      // Column means E[a], accumulated in double row by row (contiguous reads).
      const T* x = acts[l].data();
      colsum.assign(static_cast<std::size_t>(L.in), 0.0);
      for (Index i = 0; i < ns; ++i) {
        const T* xi = x + i * L.in;
        for (Index j = 0; j < L.in; ++j) colsum[static_cast<std::size_t>(j)] += xi[j];
      }
      for (Index j = 0; j < L.in; ++j) {
        const double m = colsum[static_cast<std::size_t>(j)];
        const T v = static_cast<T>(eps * static_cast<double>(a[L.in * rows + j]) + w * m * inv_ns);
        a[L.in * rows + j] = v;
        a[j * rows + L.in] = v;
      }
      a[L.in * rows + L.in] = static_cast<T>(eps * static_cast<double>(a[L.in * rows + L.in]) + w);
    }
    // G = delta^T delta / Ns.
    symmetric_gram<T>(ns, L.out, w * delta_scale * delta_scale * inv_ns, deltas[l].data(), L.out,
                      eps, s.g[l].data(), L.out);
  }
  ++s.updates;
  return loss;
}

template <Real T>
void KroneckerFactors<T>::update_inverses(double lambda) {
  State& s = *s_;
  if (!(lambda > 0) || !std::isfinite(lambda)) {
    throw ValueError("KroneckerFactors::update_inverses: damping lambda = " +
                     std::to_string(lambda) + " must be positive and finite");
  }
  if (s.updates == 0) {
    throw ValueError("KroneckerFactors::update_inverses: no statistics yet (call update() first)");
  }
  const double gamma = std::sqrt(lambda);
  for (std::size_t l = 0; l < s.layers.size(); ++l) {
    const Tensor<double> a = to_double(s.a[l]), g = to_double(s.g[l]);
    const double ta = mean_diagonal(a), tg = mean_diagonal(g);
    for (const auto& [f, name] : {std::pair{&a, "A"}, std::pair{&g, "G"}}) {
      for (Index i = 0; i < f->size(); ++i) {
        if (!std::isfinite((*f)[i])) {
          throw ValueError("K-FAC: layer " + s.layers[l].name + ": factor " + name +
                           " has a non-finite entry (" + std::to_string((*f)[i]) + ")");
        }
      }
    }
    // sec. 6.3: pi balances the two dampings by the factors' mean eigenvalues.
    const double pi = (ta > 0 && tg > 0) ? std::sqrt(ta / tg) : 1.0;
    bool ok = false;
    double boost = 1;
    Tensor<double> ai, gi;
    for (int attempt = 0; attempt <= kDampingRetries && !ok; ++attempt, boost *= 10) {
      ai = a.clone();
      gi = g.clone();
      ok = damped_inverse(ai, pi * gamma * boost) && damped_inverse(gi, gamma / pi * boost);
      if (ok) s.damping_used[l] = lambda * boost * boost;
    }
    if (!ok) {
      throw ValueError("K-FAC: layer " + s.layers[l].name + ": the damped Kronecker factors (A " +
                       s.a[l].shape().str() + ", G " + s.g[l].shape().str() +
                       ") are not positive definite even with damping lambda = " +
                       std::to_string(lambda * boost * boost / 100));
    }
    s.pi[l] = pi;
    s.a_inv[l] = from_double<T>(ai);
    s.g_inv[l] = from_double<T>(gi);
  }
  s.has_inverses = true;
}

template <Real T>
void KroneckerFactors<T>::precondition(const Tensor<T>& g, Tensor<T>& out) {
  State& s = *s_;
  const Index p = s.model->num_parameters();
  if (g.rank() != 1 || out.rank() != 1 || g.size() != p || out.size() != p) {
    throw ShapeError("KroneckerFactors::precondition: g " + g.shape().str() + " and out " +
                     out.shape().str() + " must both be (" + std::to_string(p) + ")");
  }
  if (!s.has_inverses) {
    throw ValueError("KroneckerFactors::precondition: no inverses yet (call update_inverses())");
  }
  T* tmp = s.scratch.data();
  for (std::size_t l = 0; l < s.layers.size(); ++l) {
    const KfacLayer& L = s.layers[l];
    const Index rows = L.rows(), cols = L.out;
    // U = A^{-1} X G^{-1} for the row-major block X = [grad W; grad b]: (A (x) G)^{-1} vec(X).
    kernels::gemm<T>(Trans::no, Trans::no, rows, cols, rows, T(1), s.a_inv[l].data(), rows,
                     g.data() + L.offset, cols, T(0), tmp, cols);
    kernels::gemm<T>(Trans::no, Trans::no, rows, cols, cols, T(1), tmp, cols, s.g_inv[l].data(),
                     cols, T(0), out.data() + L.offset, cols);
  }
}

template <Real T>
const std::vector<KfacLayer>& KroneckerFactors<T>::layers() const {
  return s_->layers;
}
template <Real T>
const Tensor<T>& KroneckerFactors<T>::factor_a(std::size_t l) const {
  return s_->a.at(l);
}
template <Real T>
const Tensor<T>& KroneckerFactors<T>::factor_g(std::size_t l) const {
  return s_->g.at(l);
}
template <Real T>
const Tensor<T>& KroneckerFactors<T>::inverse_a(std::size_t l) const {
  return s_->a_inv.at(l);
}
template <Real T>
const Tensor<T>& KroneckerFactors<T>::inverse_g(std::size_t l) const {
  return s_->g_inv.at(l);
}
template <Real T>
double KroneckerFactors<T>::pi(std::size_t l) const {
  return s_->pi.at(l);
}
template <Real T>
double KroneckerFactors<T>::damping_used(std::size_t l) const {
  return s_->damping_used.at(l);
}
template <Real T>
std::uint64_t KroneckerFactors<T>::updates() const {
  return s_->updates;
}
template <Real T>
bool KroneckerFactors<T>::has_inverses() const {
  return s_->has_inverses;
}
template <Real T>
Index KroneckerFactors<T>::num_parameters() const {
  return s_->model->num_parameters();
}
template <Real T>
const KfacOptions& KroneckerFactors<T>::options() const {
  return s_->options;
}
template <Real T>
std::string KroneckerFactors<T>::name() const {
  return std::string("K-FAC(") + (s_->options.true_fisher ? "true" : "EMPIRICAL") + " Fisher, " +
         std::to_string(s_->layers.size()) + " layers, P=" + std::to_string(num_parameters()) + ")";
}

// ---- Kfac
// -----------------------------------------------------------------------------------------

template <Real T>
Kfac<T>::Kfac(nn::Model<T>& model, const nn::Head<T>& head, KfacOptions options)
    : model_(&model), head_(&head), factors_(model, head, options) {}

template <Real T>
StepReport Kfac<T>::step(const Tensor<T>& inputs, const Tensor<T>& targets) {
  check_batch("Kfac::step", inputs.shape(), targets.shape());
  const KfacOptions& o = factors_.options();
  StepReport r;
  r.lambda = o.damping;
  Tensor<T>& theta = model_->parameters();
  Tensor<T> g = model_->zeros_like_parameters();
  r.loss = factors_.update(inputs, targets, &g);
  r.gradient_norm = norm(g);
  if (steps_ % static_cast<std::uint64_t>(o.inverse_update_every) == 0 ||
      !factors_.has_inverses()) {
    factors_.update_inverses(o.damping + o.weight_decay);
  }
  if (o.weight_decay > 0) axpy(o.weight_decay, theta, g);

  Tensor<T> d = Tensor<T>::uninitialized(g.shape());
  factors_.precondition(g, d);
  // Ba et al. 2017: lr^2 g^T F^{-1} g is twice the KL divergence the step predicts.
  const double gd = dot(g, d);
  double nu = 1;
  if (o.kl_clip > 0 && gd > 0) {
    nu = std::min(1.0, std::sqrt(o.kl_clip / (o.learning_rate * o.learning_rate * gd)));
  }
  if (nu != 1) scal(nu, d);
  const Tensor<T>* step = &d;
  if (o.momentum > 0) {
    if (!velocity_.defined()) velocity_ = model_->zeros_like_parameters();
    xpby(d, o.momentum, velocity_);  // v = d + momentum v
    step = &velocity_;
  }
  Tensor<T> theta0;
  if (o.evaluate_loss_after) theta0 = theta.clone();
  axpy(-o.learning_rate, *step, theta);
  r.step_scale = nu;
  r.step_norm = o.learning_rate * norm(*step);
  r.loss_after = std::numeric_limits<double>::quiet_NaN();
  if (o.evaluate_loss_after) {
    const double after = static_cast<double>(head_->loss(model_->forward(inputs), targets).item());
    if (std::isfinite(after)) {
      r.loss_after = after;
    } else {  // never keep a step into NaN/inf: undo it, and forget the momentum that led there
      copy(theta0, theta);
      if (velocity_.defined()) velocity_.fill(T(0));
      r.loss_after = r.loss;
      r.step_scale = 0;
      r.step_norm = 0;
    }
  }
  ++steps_;
  return r;
}

// ---- KfacPreconditioner
// ---------------------------------------------------------------------------

template <Real T>
void KfacPreconditioner<T>::apply(const Tensor<T>& r, Tensor<T>& z) {
  check_apply_arguments(*this, r, z);
  factors_->precondition(r, z);
}

template class KroneckerFactors<float>;
template class KroneckerFactors<double>;
template class Kfac<float>;
template class Kfac<double>;
template class KfacPreconditioner<float>;
template class KfacPreconditioner<double>;

}  // namespace amari::curvature
