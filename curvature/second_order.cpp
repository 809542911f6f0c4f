#include <amari/curvature/second_order.hpp>

#include <cmath>
#include <cstdio>
#include <limits>
#include <numeric>
#include <span>
#include <vector>

#include <amari/curvature/fisher.hpp>
#include <amari/curvature/distributed_operator.hpp>
#include <amari/curvature/ggn.hpp>
#include <amari/curvature/hessian.hpp>
#include <amari/curvature/linearization.hpp>
#include <amari/curvature/vector_ops.hpp>
#include <amari/nn/training.hpp>

namespace amari::curvature {

const char* to_string(Curvature c) {
  switch (c) {
    case Curvature::ggn: return "ggn";
    case Curvature::mc_fisher: return "mc_fisher";
    case Curvature::empirical_fisher: return "empirical_fisher";
    case Curvature::hessian: return "hessian";
  }
  return "unknown";
}

std::string StepReport::str() const {
  char buf[256];
  std::snprintf(buf, sizeof buf, "loss %.4f -> %.4f | lambda %.3g rho %.2f | cg %d (%s) | step %.2f", loss,
                loss_after, lambda, rho, cg_iterations, to_string(cg_status), step_scale);
  return buf;
}

template <Real T>
std::unique_ptr<LinearOperator<T>> make_curvature(Curvature kind, const nn::Model<T>& model,
                                                  const nn::Head<T>& head, const Tensor<T>& inputs,
                                                  const Tensor<T>& targets, int samples, std::uint64_t seed,
                                                  Index first_example_id) {
  switch (kind) {
    case Curvature::ggn: return std::make_unique<GgnOperator<T>>(model, head, inputs);
    case Curvature::mc_fisher: {
      std::vector<Index> ids;  // empty: row i is example i
      if (first_example_id != 0) {
        ids.resize(static_cast<std::size_t>(inputs.dim(0)));
        std::iota(ids.begin(), ids.end(), first_example_id);
      }
      return std::make_unique<MonteCarloFisherOperator<T>>(model, head, inputs, samples, seed, std::move(ids));
    }
    case Curvature::empirical_fisher:
      return std::make_unique<EmpiricalFisherOperator<T>>(model, head, inputs, targets);
    case Curvature::hessian: return std::make_unique<HessianOperator<T>>(model, head, inputs, targets);
  }
  throw ValueError("make_curvature: unknown curvature kind");
}

template <Real T>
Tensor<T> empirical_fisher_diagonal(const nn::Model<T>& model, const nn::Head<T>& head, const Tensor<T>& inputs,
                                    const Tensor<T>& targets, Index max_examples) {
  const Index n_all = inputs.shape()[0];
  const Index n = (max_examples > 0 && max_examples < n_all) ? max_examples : n_all;
  const Index d = inputs.size() / std::max<Index>(n_all, 1), c = targets.shape()[1];
  ModelLinearization<T> lin(model, inputs.view(0, Shape{n, d}));
  const Tensor<T> y = targets.view(0, Shape{n, c});
  // Row i of the residual is the gradient of example i's own loss in z_i.
  Tensor<T> r = Tensor<T>::uninitialized(lin.logits().shape());
  head.residual(lin.logits(), y, r);
  Tensor<T> b(lin.logits().shape()), gi = model.zeros_like_parameters(), diag = model.zeros_like_parameters();
  for (Index i = 0; i < n; ++i) {
    b.fill(T(0));
    for (Index j = 0; j < c; ++j) b[i * c + j] = r[i * c + j];
    lin.vjp(b, gi);  // g_i = J_i^T grad_z l_i
    for (Index k = 0; k < gi.size(); ++k) diag[k] += gi[k] * gi[k];
  }
  scal(1.0 / static_cast<double>(n), diag);
  return diag;
}

template <Real T>
Tensor<T> empirical_fisher_diagonal(const nn::Model<T>& model, const nn::Head<T>& head, const Tensor<T>& inputs,
                                    const Tensor<T>& targets, Index max_examples, nn::Communicator& comm,
                                    const nn::Shard& shard) {
  const nn::Shard used = shard.spread(max_examples);
  Tensor<T> diag = used.local > 0 ? empirical_fisher_diagonal(model, head, inputs, targets, used.local)
                                  : model.zeros_like_parameters();
  nn::reduce_mean(comm, used.weight(), std::span<T>(diag.data(), static_cast<std::size_t>(diag.size())));
  return diag;
}

std::uint64_t options_fingerprint(const NaturalGradientOptions& o) {
  char buf[512];
  std::snprintf(buf, sizeof buf, "ng %s %.17g %.17g %d %d %lld %d %llu | cg %d %.17g %d %.17g %d",
                to_string(o.curvature), o.learning_rate, o.initial_damping, o.adapt_damping, o.line_search,
                static_cast<long long>(o.curvature_batch), o.mc_samples, static_cast<unsigned long long>(o.seed),
                o.cg.max_iterations, o.cg.relative_tolerance, o.cg.progress_stopping, o.cg.progress_epsilon,
                o.cg.keep_iterates);
  return nn::fingerprint(buf);
}

std::uint64_t options_fingerprint(const HessianFreeOptions& o) {
  char buf[512];
  std::snprintf(buf, sizeof buf, "hf %s %.17g %.17g %d %d %d %.17g %lld %lld %d %llu | cg %d %.17g %d %.17g %d",
                to_string(o.curvature), o.initial_damping, o.warm_start_decay, o.backtracking, o.line_search,
                o.preconditioner, o.preconditioner_exponent, static_cast<long long>(o.preconditioner_examples),
                static_cast<long long>(o.curvature_batch), o.mc_samples, static_cast<unsigned long long>(o.seed),
                o.cg.max_iterations, o.cg.relative_tolerance, o.cg.progress_stopping, o.cg.progress_epsilon,
                o.cg.keep_iterates);
  return nn::fingerprint(buf);
}

namespace {

// Where a step's examples live: on this process (comm null, the shard is the whole batch), or
// sharded over the ranks of comm, every loss, gradient and product then being the mean over the
// union (nn/communicator.hpp).
struct Ranks {
  nn::Communicator* comm = nullptr;
  nn::Shard shard;
};

Ranks ranks_of(nn::Communicator* comm, Index rows) {
  if (!comm) return {nullptr, nn::Shard{rows, 0, rows}};
  return {comm, nn::shard_of(*comm, rows)};
}

// Options agreed by every rank before any of them validates them: equal options give equal
// outcomes, so a bad option throws on every rank and a mismatch is reported instead of a hang.
template <class Options>
const Options& agreed(nn::Communicator& comm, const char* what, const Options& o) {
  comm.agree(what, options_fingerprint(o));
  return o;
}

template <Real T>
struct Batch {
  Tensor<T> x, y;
};

// The first n examples (all if n == 0 or n >= N), as views.
template <Real T>
Batch<T> first_examples(const Tensor<T>& x, const Tensor<T>& y, Index n) {
  const Index total = x.shape()[0];
  if (n <= 0 || n >= total) return {x, y};
  return {x.view(0, Shape{n, x.size() / total}), y.view(0, Shape{n, y.shape()[1]})};
}

// Loss at theta0 + alpha d, leaving the model at that point.
// With several ranks, the mean over the union (one allreduce_sum of one value).
template <Real T>
double loss_at(nn::Model<T>& model, const nn::Head<T>& head, const Tensor<T>& x, const Tensor<T>& y,
               const Tensor<T>& theta0, const Tensor<T>& d, double alpha, const Ranks& p) {
  Tensor<T>& theta = model.parameters();
  copy(theta0, theta);
  axpy(alpha, d, theta);
  double l = p.shard.local > 0 ? static_cast<double>(head.loss(model.forward(x), y).item()) : 0.0;
  if (p.comm) nn::reduce_mean(*p.comm, p.shard.weight(), std::span<double>(&l, 1));
  return std::isfinite(l) ? l : std::numeric_limits<double>::infinity();
}

// theta = theta0 + alpha d (theta0 itself for alpha == 0).
template <Real T>
void set_parameters(nn::Model<T>& model, const Tensor<T>& theta0, const Tensor<T>& d, double alpha) {
  copy(theta0, model.parameters());
  if (alpha != 0) axpy(alpha, d, model.parameters());
}

// A shard of a distributed batch may be empty (N = 0 on this rank); a single-process batch may not.
void check_batch(const char* op, const Shape& x, const Shape& y, bool allow_empty) {
  if (x.rank() != 2 || y.rank() != 2 || x[0] != y[0] || (x[0] == 0 && !allow_empty)) {
    throw ShapeError(std::string(op) + ": inputs " + x.str() + " and targets " + y.str() +
                     " must be (N, D) and (N, C) with the same N >= " + (allow_empty ? "0" : "1"));
  }
}

// What every second-order step starts from: the parameters, the gradient and the right-hand side
// -g of (A + lambda I) d = -g, and the curvature operator on the curvature minibatch. Fills the
// loss, gradient norm and lambda of the report.
template <Real T>
struct StepStart {
  Tensor<T> theta0, g, minus_g;
  std::unique_ptr<LinearOperator<T>> curvature;  ///< null: non-finite loss or gradient, no step
};

template <Real T>
StepStart<T> start_step(nn::Model<T>& model, const nn::Head<T>& head, const Tensor<T>& inputs,
                        const Tensor<T>& targets, Curvature kind, Index curvature_batch, int samples,
                        std::uint64_t seed, double lambda, const Ranks& p, StepReport& r) {
  StepStart<T> s;
  s.theta0 = model.gather();
  s.g = model.zeros_like_parameters();
  if (p.comm) {
    Tape<T> tape;
    r.loss = static_cast<double>(nn::loss_and_gradient(model, head, inputs, targets, s.g, tape, *p.comm, p.shard));
  } else {
    r.loss = static_cast<double>(nn::loss_and_gradient(model, head, inputs, targets, s.g));
  }
  r.gradient_norm = norm(s.g);
  r.lambda = lambda;
  s.minus_g = s.g.clone();
  scal(-1.0, s.minus_g);
  // A NaN or inf loss or gradient (bad data, a diverged model) gives no step: no curvature is
  // built (the caller sees a null operator and returns this report), and the parameters, the
  // damping and the warm start stay as they were; the report says why instead of throwing.
  if (!std::isfinite(r.loss) || !std::isfinite(r.gradient_norm)) {
    r.cg_status = CgStatus::non_finite;
    r.step_scale = 0;
    r.loss_after = r.loss;
    r.step_norm = 0;
    return s;
  }
  if (p.comm) {
    // curvature_batch examples spread over the ranks in proportion to their rows (Shard::spread).
    const nn::Shard used = p.shard.spread(curvature_batch);
    const Batch<T> cb = first_examples(inputs, targets, used.local);
    s.curvature = make_distributed_curvature(kind, model, head, cb.x, cb.y, *p.comm, used, samples, seed);
    return s;
  }
  const Batch<T> cb = first_examples(inputs, targets, curvature_batch);
  s.curvature = make_curvature(kind, model, head, cb.x, cb.y, samples, seed);
  return s;
}

// Armijo backtracking line search along d from step `alpha`, whose loss is `after`: shrink alpha
// until f(theta0 + alpha d) <= f(theta0) + c alpha g.d (c = 1e-2). Returns the accepted alpha, or 0
// if none within max_tries or the loss is not finite; `after` is the loss at the returned alpha
// (the model is left there, or anywhere for alpha = 0).
template <Real T>
double armijo(nn::Model<T>& model, const nn::Head<T>& head, const Tensor<T>& x, const Tensor<T>& y,
              const Tensor<T>& theta0, const Tensor<T>& d, double alpha, double loss0, double g_dot_d,
              double shrink, int max_tries, const Ranks& p, double& after) {
  constexpr double c = 1e-2;
  for (int tries = 0; after > loss0 + c * alpha * g_dot_d && tries < max_tries; ++tries) {
    alpha *= shrink;
    after = loss_at(model, head, x, y, theta0, d, alpha, p);
  }
  return after <= loss0 + c * alpha * g_dot_d && std::isfinite(after) ? alpha : 0.0;
}

// Undamped predicted reduction of the quadratic model for step alpha d, from phi(d) (the damped
// model value CG reports): q(alpha d) = alpha g.d + alpha^2/2 d^T G d with
// d^T G d = 2 (phi - g.d) - lambda |d|^2.
double predicted_reduction(double phi, double g_dot_d, double d_norm2, double lambda, double alpha) {
  const double dgd = 2.0 * (phi - g_dot_d) - lambda * d_norm2;
  return -(alpha * g_dot_d + 0.5 * alpha * alpha * dgd);
}

// Everything a second-order step may change in the model: parameters, state (batch norm's running
// statistics, moved by the training pass), the step counter and the first example's index (both
// key the dropout masks; loss_and_gradient sets the latter to the shard's offset). restore() puts
// them back, for the strong guarantee of step(): a step that throws half-way (a head refusing
// targets, an operator refusing a batch, an allocation failing during CG) leaves the model as it was.
template <Real T>
class ModelSnapshot {
 public:
  explicit ModelSnapshot(const nn::Model<T>& model)
      : theta_(model.gather()),
        state_(model.state().clone()),
        step_(model.step()),
        first_example_(model.first_example()) {}
  void restore(nn::Model<T>& model) const {
    model.scatter(theta_);
    model.state().copy_from(state_);
    model.set_step(step_);
    model.set_first_example(first_example_);
  }

 private:
  Tensor<T> theta_, state_;
  std::uint64_t step_;
  Index first_example_;
};

}  // namespace

// ---- natural gradient ----------------------------------------------------------------------------

template <Real T>
NaturalGradient<T>::NaturalGradient(nn::Model<T>& model, const nn::Head<T>& head, NaturalGradientOptions options)
    : model_(&model), head_(&head), options_(options) {
  if (!(options.learning_rate > 0) || !std::isfinite(options.learning_rate)) {
    throw ValueError("NaturalGradient: learning_rate must be positive and finite, got " +
                     std::to_string(options.learning_rate));
  }
  lm_.lambda = options.initial_damping;
  lm_.validate();
}

template <Real T>
NaturalGradient<T>::NaturalGradient(nn::Model<T>& model, const nn::Head<T>& head, NaturalGradientOptions options,
                                    nn::Communicator& comm)
    : NaturalGradient(model, head, agreed(comm, "NaturalGradient options", options)) {
  comm_ = &comm;
  nn::synchronize_model(comm, model);
}

template <Real T>
StepReport NaturalGradient<T>::step(const Tensor<T>& inputs, const Tensor<T>& targets) {
  // All or nothing: on a throw the model, lambda and the step count are put back.
  const ModelSnapshot<T> model_before(*model_);
  const LevenbergMarquardt lm_before = lm_;
  const std::uint64_t steps_before = steps_;
  try {
    return step_unguarded(inputs, targets);
  } catch (...) {
    model_before.restore(*model_);
    lm_ = lm_before;
    steps_ = steps_before;
    throw;
  }
}

template <Real T>
StepReport NaturalGradient<T>::step_unguarded(const Tensor<T>& inputs, const Tensor<T>& targets) {
  StepReport r;
  check_batch("NaturalGradient::step", inputs.shape(), targets.shape(), comm_ != nullptr);
  const Ranks p = ranks_of(comm_, inputs.dim(0));
  const StepStart<T> start =
      start_step(*model_, *head_, inputs, targets, options_.curvature,
                 options_.curvature_batch, options_.mc_samples, options_.seed + steps_, lm_.lambda, p, r);
  if (!start.curvature) {  // rejected: non-finite loss or gradient
    ++steps_;
    return r;
  }
  DampedOperator<T> a(borrowed(*start.curvature), lm_.lambda);
  const CgResult<T> cg = conjugate_gradient(a, start.minus_g, options_.cg);
  r.cg_iterations = cg.iterations;
  r.cg_products = cg.products;
  r.cg_status = cg.status;

  const Tensor<T>& d = cg.x;
  const double gd = dot(start.g, d), dd = dot(d, d);
  // Damping follows the step CG proposed (learning_rate * d), before any line search shortens it.
  const double lr = options_.learning_rate;
  const double proposed = loss_at(*model_, *head_, inputs, targets, start.theta0, d, lr, p);
  r.predicted_reduction = predicted_reduction(cg.model_value, gd, dd, lm_.lambda, lr);
  r.rho = options_.adapt_damping ? lm_.update(r.loss - proposed, r.predicted_reduction)
                                 : reduction_ratio(r.loss - proposed, r.predicted_reduction);
  double after = proposed;
  double alpha = options_.line_search
                     ? armijo(*model_, *head_, inputs, targets, start.theta0, d, lr, r.loss, gd, 0.5, 30, p, after)
                     : (std::isfinite(after) ? lr : 0.0);  // never keep a step into NaN/inf
  set_parameters(*model_, start.theta0, d, alpha);
  r.step_scale = alpha;
  r.loss_after = alpha == 0 ? r.loss : after;
  r.step_norm = alpha * std::sqrt(dd);
  ++steps_;
  return r;
}

// ---- Hessian-free -----------------------------------------------------------------------------------

template <Real T>
HessianFree<T>::HessianFree(nn::Model<T>& model, const nn::Head<T>& head, HessianFreeOptions options)
    : model_(&model), head_(&head), options_(options) {
  if (!(options.warm_start_decay >= 0 && options.warm_start_decay <= 1)) {
    throw ValueError("HessianFree: warm_start_decay must be in [0, 1], got " + std::to_string(options.warm_start_decay));
  }
  lm_.lambda = options.initial_damping;
  lm_.validate();
}

template <Real T>
HessianFree<T>::HessianFree(nn::Model<T>& model, const nn::Head<T>& head, HessianFreeOptions options,
                            nn::Communicator& comm)
    : HessianFree(model, head, agreed(comm, "HessianFree options", options)) {
  comm_ = &comm;
  nn::synchronize_model(comm, model);
}

template <Real T>
StepReport HessianFree<T>::step(const Tensor<T>& inputs, const Tensor<T>& targets) {
  // All or nothing: on a throw the model, lambda, the warm start and the step count are put back.
  const ModelSnapshot<T> model_before(*model_);
  const LevenbergMarquardt lm_before = lm_;
  const Tensor<T> previous_before = previous_;  // a handle: step() rebinds previous_, never writes into it
  const std::uint64_t steps_before = steps_;
  try {
    return step_unguarded(inputs, targets);
  } catch (...) {
    model_before.restore(*model_);
    lm_ = lm_before;
    previous_ = previous_before;
    steps_ = steps_before;
    throw;
  }
}

template <Real T>
StepReport HessianFree<T>::step_unguarded(const Tensor<T>& inputs, const Tensor<T>& targets) {
  StepReport r;
  check_batch("HessianFree::step", inputs.shape(), targets.shape(), comm_ != nullptr);
  const Ranks p = ranks_of(comm_, inputs.dim(0));
  const StepStart<T> start =
      start_step(*model_, *head_, inputs, targets, options_.curvature,
                 options_.curvature_batch, options_.mc_samples, options_.seed + steps_, lm_.lambda, p, r);
  if (!start.curvature) {  // rejected: non-finite loss or gradient
    ++steps_;
    return r;
  }
  const Tensor<T>& g = start.g;
  const Tensor<T>& theta0 = start.theta0;
  DampedOperator<T> a(borrowed(*start.curvature), lm_.lambda);

  std::unique_ptr<DiagonalPreconditioner<T>> m;
  if (options_.preconditioner) {
    // Martens 2010, sec. 4.7: M = (diag(EF) + lambda)^alpha, EF from per-example gradients.
    const Tensor<T> diag =
        comm_ ? empirical_fisher_diagonal(*model_, *head_, inputs, targets, options_.preconditioner_examples, *comm_,
                                          p.shard)
              : empirical_fisher_diagonal(*model_, *head_, inputs, targets, options_.preconditioner_examples);
    m = std::make_unique<DiagonalPreconditioner<T>>(
        martens_preconditioner(diag, lm_.lambda, options_.preconditioner_exponent));
  }
  // sec. 4.5: start CG from a decayed copy of the previous solution.
  Tensor<T> x0;
  const bool warm = previous_.defined() && previous_.size() == g.size() && options_.warm_start_decay > 0;
  if (warm) {
    x0 = previous_.clone();
    scal(options_.warm_start_decay, x0);
  }
  const CgResult<T> cg = conjugate_gradient(a, start.minus_g, options_.cg, warm ? &x0 : nullptr, m.get());
  r.cg_iterations = cg.iterations;
  r.cg_products = cg.products;
  r.cg_status = cg.status;
  previous_ = cg.x;

  // sec. 4.6, CG backtracking: walk back from the last kept iterate while the loss keeps dropping.
  std::size_t best = cg.iterates.empty() ? 0 : cg.iterates.size() - 1;
  const Tensor<T>* d = cg.iterates.empty() ? &cg.x : &cg.iterates[best];
  double best_loss = loss_at(*model_, *head_, inputs, targets, theta0, *d, 1.0, p);
  if (options_.backtracking) {
    while (best > 0) {
      const double l = loss_at(*model_, *head_, inputs, targets, theta0, cg.iterates[best - 1], 1.0, p);
      if (!(l < best_loss)) break;
      best_loss = l;
      d = &cg.iterates[--best];
    }
  }
  const int step_index = cg.iterates.empty() ? cg.iterations : cg.iterate_steps[best];
  r.backtrack_iterate = step_index;
  const double gd = dot(g, *d), dd = dot(*d, *d);
  const double phi = static_cast<std::size_t>(step_index) < cg.model_values.size()
                         ? cg.model_values[static_cast<std::size_t>(step_index)]
                         : cg.model_value;
  r.predicted_reduction = predicted_reduction(phi, gd, dd, lm_.lambda, 1.0);
  r.rho = lm_.update(r.loss - best_loss, r.predicted_reduction);  // sec. 4.1, on the chosen iterate

  double after = best_loss;
  // sec. 8: backtracking Armijo line search, shrinking by 0.8.
  const double alpha = options_.line_search
                           ? armijo(*model_, *head_, inputs, targets, theta0, *d, 1.0, r.loss, gd, 0.8, 60, p, after)
                           : (std::isfinite(after) ? 1.0 : 0.0);
  set_parameters(*model_, theta0, *d, alpha);
  r.step_scale = alpha;
  r.loss_after = alpha == 0 ? r.loss : after;
  r.step_norm = alpha * std::sqrt(dd);
  ++steps_;
  return r;
}

// ---- state for checkpoints ------------------------------------------------------------------------

template <Real T>
nn::OptimizerState<T> NaturalGradient<T>::save_state() const {
  nn::OptimizerState<T> s;
  s.kind = "natural_gradient";
  s.numbers["lambda"] = lm_.lambda;
  s.counters["steps"] = static_cast<std::int64_t>(steps_);
  return s;
}

template <Real T>
void NaturalGradient<T>::load_state(const nn::OptimizerState<T>& s) {
  s.require_kind("natural_gradient", "NaturalGradient::load_state");
  const double lambda = s.number("lambda");
  const std::int64_t steps = s.counter("steps");
  LevenbergMarquardt lm = lm_;
  lm.lambda = lambda;
  lm.validate();  // a lambda that is not finite is refused here
  if (steps < 0) throw ValueError("NaturalGradient::load_state: negative step count");
  lm_ = lm;
  steps_ = static_cast<std::uint64_t>(steps);
}

template <Real T>
nn::OptimizerState<T> HessianFree<T>::save_state() const {
  nn::OptimizerState<T> s;
  s.kind = "hessian_free";
  s.numbers["lambda"] = lm_.lambda;
  s.counters["steps"] = static_cast<std::int64_t>(steps_);
  if (previous_.defined()) s.tensors["warm_start"] = previous_.clone();
  return s;
}

template <Real T>
void HessianFree<T>::load_state(const nn::OptimizerState<T>& s) {
  s.require_kind("hessian_free", "HessianFree::load_state");
  const double lambda = s.number("lambda");
  const std::int64_t steps = s.counter("steps");
  Tensor<T> warm;
  if (s.has_tensor("warm_start")) warm = s.tensor("warm_start", Shape{model_->num_parameters()}).clone();
  LevenbergMarquardt lm = lm_;
  lm.lambda = lambda;
  lm.validate();
  if (steps < 0) throw ValueError("HessianFree::load_state: negative step count");
  lm_ = lm;
  steps_ = static_cast<std::uint64_t>(steps);
  previous_ = warm;
}

template std::unique_ptr<LinearOperator<float>> make_curvature<float>(Curvature, const nn::Model<float>&,
                                                                      const nn::Head<float>&, const Tensor<float>&,
                                                                      const Tensor<float>&, int, std::uint64_t, Index);
template std::unique_ptr<LinearOperator<double>> make_curvature<double>(Curvature, const nn::Model<double>&,
                                                                        const nn::Head<double>&, const Tensor<double>&,
                                                                        const Tensor<double>&, int, std::uint64_t, Index);
template Tensor<float> empirical_fisher_diagonal<float>(const nn::Model<float>&, const nn::Head<float>&,
                                                        const Tensor<float>&, const Tensor<float>&, Index,
                                                        nn::Communicator&, const nn::Shard&);
template Tensor<double> empirical_fisher_diagonal<double>(const nn::Model<double>&, const nn::Head<double>&,
                                                          const Tensor<double>&, const Tensor<double>&, Index,
                                                          nn::Communicator&, const nn::Shard&);
template Tensor<float> empirical_fisher_diagonal<float>(const nn::Model<float>&, const nn::Head<float>&,
                                                        const Tensor<float>&, const Tensor<float>&, Index);
template Tensor<double> empirical_fisher_diagonal<double>(const nn::Model<double>&, const nn::Head<double>&,
                                                          const Tensor<double>&, const Tensor<double>&, Index);
template class NaturalGradient<float>;
template class NaturalGradient<double>;
template class HessianFree<float>;
template class HessianFree<double>;

}  // namespace amari::curvature
