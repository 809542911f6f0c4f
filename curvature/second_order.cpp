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
#include <amari/curvature/detail/damped_step.hpp>
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
  char buf[160];
  if (std::isnan(loss_after)) {  // not evaluated (K-FAC without evaluate_loss_after)
    std::snprintf(buf, sizeof buf, "loss %.4f | lambda %.3g | step %.2f", loss, lambda, step_scale);
  } else {
    std::snprintf(buf, sizeof buf, "loss %.4f -> %.4f | lambda %.3g | step %.2f", loss, loss_after, lambda,
                  step_scale);
  }
  return buf;
}

std::string CgStepReport::str() const {
  char buf[256];
  std::snprintf(buf, sizeof buf, "loss %.4f -> %.4f | lambda %.3g rho %.2f | cg %d (%s) | step %.2f", loss,
                loss_after, lambda, rho, cg_iterations, to_string(cg_status), step_scale);
  return buf;
}

std::string HessianFreeReport::str() const {
  char buf[288];
  std::snprintf(buf, sizeof buf, "loss %.4f -> %.4f | lambda %.3g rho %.2f | cg %d (%s) | iterate %d | step %.2f",
                loss, loss_after, lambda, rho, cg_iterations, to_string(cg_status), backtrack_iterate, step_scale);
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

using detail::Ranks;

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

// Loss at theta0 + alpha d, leaving the model at that point; +inf for a loss that is not finite.
// With several ranks, the mean over the union (one allreduce_sum of one value).
template <Real T>
double loss_at(nn::Model<T>& model, const nn::Head<T>& head, const Tensor<T>& x, const Tensor<T>& y,
               const Tensor<T>& theta0, const Tensor<T>& d, double alpha, const Ranks& p) {
  Tensor<T>& theta = model.parameters();
  copy(theta0, theta);
  axpy(alpha, d, theta);
  const double l = detail::mean_loss(model, head, x, y, p);
  return std::isfinite(l) ? l : std::numeric_limits<double>::infinity();
}

// A shard of a distributed batch may be empty (N = 0 on this rank); a single-process batch may not.
void check_batch(const char* op, const Shape& x, const Shape& y, bool allow_empty) {
  if (x.rank() != 2 || y.rank() != 2 || x[0] != y[0] || (x[0] == 0 && !allow_empty)) {
    throw ShapeError(std::string(op) + ": inputs " + x.str() + " and targets " + y.str() +
                     " must be (N, D) and (N, C) with the same N >= " + (allow_empty ? "0" : "1"));
  }
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

// ---- the CG step source -----------------------------------------------------------------------------
//
// NaturalGradient and HessianFree plug the same step source into the damped-step pipeline
// (detail/damped_step.hpp; SEED-NOTES 5; Martens 2010 for HF): the curvature operator at theta, CG
// on (A + lambda I) d = -g, the choice of the iterate and a line search. What the two options
// structs choose is collected here.
struct DampedStepPolicy {
  const char* op;                        // "NaturalGradient::step" or "HessianFree::step"
  Curvature curvature;
  Index curvature_batch;
  int mc_samples;
  std::uint64_t seed;
  double step_length;                    // NG: learning_rate; HF: 1
  bool adapt_damping;                    // NG may keep lambda fixed; HF always adapts
  bool keep_warm_start;                  // HF sec. 4.5: remember the CG solution ...
  double warm_start_decay;               // ... and start the next solve from decay * it
  bool preconditioner;                   // HF sec. 4.7: M = (diag(EF) + lambda)^exponent
  double preconditioner_exponent;
  Index preconditioner_examples;
  bool choose_kept_iterate;              // HF sec. 4.6: the step is a kept CG iterate ...
  bool backtracking;                     // ... walked back while the loss keeps dropping
  bool line_search;                      // Armijo from step_length, shrinking by line_search_shrink
  double line_search_shrink;
  int line_search_tries;
  CgOptions cg;
};

DampedStepPolicy policy_of(const NaturalGradientOptions& o) {
  return {.op = "NaturalGradient::step", .curvature = o.curvature, .curvature_batch = o.curvature_batch,
          .mc_samples = o.mc_samples, .seed = o.seed, .step_length = o.learning_rate,
          .adapt_damping = o.adapt_damping, .keep_warm_start = false, .warm_start_decay = 0,
          .preconditioner = false, .preconditioner_exponent = 0, .preconditioner_examples = 0,
          .choose_kept_iterate = false, .backtracking = false, .line_search = o.line_search,
          .line_search_shrink = 0.5, .line_search_tries = 30, .cg = o.cg};
}

DampedStepPolicy policy_of(const HessianFreeOptions& o) {
  // sec. 8: Armijo shrinking by 0.8.
  return {.op = "HessianFree::step", .curvature = o.curvature, .curvature_batch = o.curvature_batch,
          .mc_samples = o.mc_samples, .seed = o.seed, .step_length = 1.0, .adapt_damping = true,
          .keep_warm_start = true, .warm_start_decay = o.warm_start_decay,
          .preconditioner = o.preconditioner, .preconditioner_exponent = o.preconditioner_exponent,
          .preconditioner_examples = o.preconditioner_examples, .choose_kept_iterate = true,
          .backtracking = o.backtracking, .line_search = o.line_search, .line_search_shrink = 0.8,
          .line_search_tries = 60, .cg = o.cg};
}

// The stages of detail::damped_step_unguarded for a CG step. One object per step: it keeps what
// the start stage computed (g, -g, the curvature operator) for the later stages.
template <Real T>
class CgStepSource {
 public:
  using Report = HessianFreeReport;  // NaturalGradient returns its CgStepReport part

  CgStepSource(const DampedStepPolicy& policy, const detail::StepContext<T>& c) : policy_(policy), c_(c) {}

  // The loss and gradient of a training step (nn::loss_and_gradient), and the curvature operator
  // at theta on the curvature minibatch. A NaN or inf loss or gradient (bad data, a diverged
  // model) rejects the step: no curvature is built, and the parameters, the damping and the warm
  // start stay as they were; the report says why instead of throwing.
  bool start(const DampedStepState<T>& state, Report& r) {
    const Ranks& p = c_.ranks;
    g_ = c_.model.zeros_like_parameters();
    if (p.comm) {
      r.loss = static_cast<double>(
          nn::loss_and_gradient(c_.model, c_.head, c_.inputs, c_.targets, g_, *p.comm, p.shard));
    } else {
      r.loss = static_cast<double>(nn::loss_and_gradient(c_.model, c_.head, c_.inputs, c_.targets, g_));
    }
    r.gradient_norm = norm(g_);
    minus_g_ = g_.clone();
    scal(-1.0, minus_g_);
    if (!std::isfinite(r.loss) || !std::isfinite(r.gradient_norm)) {
      r.cg_status = CgStatus::non_finite;
      r.step_scale = 0;
      r.loss_after = r.loss;
      r.step_norm = 0;
      return false;
    }
    const std::uint64_t seed = policy_.seed + state.steps;
    if (p.comm) {
      // curvature_batch examples spread over the ranks in proportion to their rows (Shard::spread).
      const nn::Shard used = p.shard.spread(policy_.curvature_batch);
      const Batch<T> cb = first_examples(c_.inputs, c_.targets, used.local);
      curvature_ = make_distributed_curvature(policy_.curvature, c_.model, c_.head, cb.x, cb.y, *p.comm, used,
                                              policy_.mc_samples, seed);
    } else {
      const Batch<T> cb = first_examples(c_.inputs, c_.targets, policy_.curvature_batch);
      curvature_ = make_curvature(policy_.curvature, c_.model, c_.head, cb.x, cb.y, policy_.mc_samples, seed);
    }
    return true;
  }

  // CG on (A + lambda I) d = -g, from decay * the previous solution (sec. 4.5) and with
  // (diag(EF) + lambda)^alpha as preconditioner (sec. 4.7) where the policy says so.
  CgResult<T> direction(DampedStepState<T>& state, Report& r) {
    const double lambda = r.lambda;
    DampedOperator<T> a(borrowed(*curvature_), lambda);
    std::unique_ptr<DiagonalPreconditioner<T>> m;
    if (policy_.preconditioner) {
      // Martens 2010, sec. 4.7: M = (diag(EF) + lambda)^alpha, EF from per-example gradients.
      const Ranks& p = c_.ranks;
      const Tensor<T> diag =
          p.comm ? empirical_fisher_diagonal(c_.model, c_.head, c_.inputs, c_.targets,
                                             policy_.preconditioner_examples, *p.comm, p.shard)
                 : empirical_fisher_diagonal(c_.model, c_.head, c_.inputs, c_.targets,
                                             policy_.preconditioner_examples);
      m = std::make_unique<DiagonalPreconditioner<T>>(
          martens_preconditioner(diag, lambda, policy_.preconditioner_exponent));
    }
    Tensor<T> x0;
    const bool warm =
        state.previous.defined() && state.previous.size() == g_.size() && policy_.warm_start_decay > 0;
    if (warm) {
      x0 = state.previous.clone();
      scal(policy_.warm_start_decay, x0);
    }
    CgResult<T> cg = conjugate_gradient(a, minus_g_, policy_.cg, warm ? &x0 : nullptr, m.get());
    r.cg_iterations = cg.iterations;
    r.cg_products = cg.products;
    r.cg_status = cg.status;
    if (policy_.keep_warm_start) state.previous = cg.x;
    return cg;
  }

  // The step: CG's solution, or (sec. 4.6, CG backtracking) the last kept iterate, walked back
  // while the loss keeps dropping. Damping follows this step at step_length (its actual and
  // predicted reductions), before any line search (sec. 8) shortens it.
  detail::Proposal<T> length(CgResult<T> cg, DampedStepState<T>&, Report& r) {
    nn::Model<T>& model = c_.model;
    const Ranks& p = c_.ranks;
    const double length = policy_.step_length;
    const bool kept = policy_.choose_kept_iterate && !cg.iterates.empty();
    std::size_t best = kept ? cg.iterates.size() - 1 : 0;
    const Tensor<T>* d = kept ? &cg.iterates[best] : &cg.x;
    double best_loss = loss_at(model, c_.head, c_.inputs, c_.targets, c_.theta0, *d, length, p);
    if (kept && policy_.backtracking) {
      while (best > 0) {
        const double l = loss_at(model, c_.head, c_.inputs, c_.targets, c_.theta0, cg.iterates[best - 1], length, p);
        if (!(l < best_loss)) break;
        best_loss = l;
        d = &cg.iterates[--best];
      }
    }
    // The quadratic model's value at the chosen iterate (CG records it per iteration).
    const int step_index = kept ? cg.iterate_steps[best] : cg.iterations;
    const double phi = policy_.choose_kept_iterate && static_cast<std::size_t>(step_index) < cg.model_values.size()
                           ? cg.model_values[static_cast<std::size_t>(step_index)]
                           : cg.model_value;
    r.backtrack_iterate = step_index;
    const double gd = dot(g_, *d), dd = dot(*d, *d);
    r.predicted_reduction = predicted_reduction(phi, gd, dd, r.lambda, length);
    double after = best_loss;
    const double alpha = policy_.line_search
                             ? armijo(model, c_.head, c_.inputs, c_.targets, c_.theta0, *d, length, r.loss, gd,
                                      policy_.line_search_shrink, policy_.line_search_tries, p, after)
                             : (std::isfinite(after) ? length : 0.0);  // never keep a step into NaN/inf
    r.step_scale = alpha;
    r.step_norm = alpha * std::sqrt(dd);
    return {.update = *d,
            .scale = alpha,
            .loss_after = alpha == 0 ? r.loss : after,
            .predicted_reduction = r.predicted_reduction,
            .actual_reduction = r.loss - best_loss,
            .adapt_damping = policy_.adapt_damping};
  }

  // A CG step is never undone by the pipeline's guard (its loss after is finite: a step into
  // NaN/inf has scale 0 already), and HF keeps its warm start either way.
  void forget(DampedStepState<T>&) {}
  void report_rho(Report& r, double rho) { r.rho = rho; }

 private:
  const DampedStepPolicy& policy_;
  const detail::StepContext<T>& c_;
  Tensor<T> g_, minus_g_;
  std::unique_ptr<LinearOperator<T>> curvature_;
};

// One step, all or nothing: if it throws, the model (parameters, state, step counter, first
// example) and `state` (lambda, warm start, step count) are as they were before the call.
template <Real T>
HessianFreeReport damped_step(const DampedStepPolicy& policy, nn::Model<T>& model, const nn::Head<T>& head,
                              nn::Communicator* comm, DampedStepState<T>& state, const Tensor<T>& inputs,
                              const Tensor<T>& targets) {
  check_batch(policy.op, inputs.shape(), targets.shape(), comm != nullptr);
  const Ranks ranks = detail::ranks_of(comm, inputs.dim(0));
  return detail::all_or_nothing(
      model, state,
      [&](const Tensor<T>& theta0, DampedStepState<T>& working) {
        const detail::StepContext<T> c{model, head, inputs, targets, ranks, theta0};
        CgStepSource<T> source(policy, c);
        return detail::damped_step_unguarded(source, c, working);
      },
      [] {});
}

// A checkpoint of DampedStepState (nn/checkpoint.hpp): number lambda, counter steps, and tensor
// warm_start when there is one.
template <Real T>
nn::OptimizerState<T> save_damped_state(const char* kind, const DampedStepState<T>& state) {
  nn::OptimizerState<T> s;
  s.kind = kind;
  s.numbers["lambda"] = state.lm.lambda;
  s.counters["steps"] = static_cast<std::int64_t>(state.steps);
  if (state.previous.defined()) s.tensors["warm_start"] = state.previous.clone();
  return s;
}

// Validates everything before it changes `state` (ValueError naming `op`, nothing changed).
template <Real T>
void load_damped_state(const char* kind, const char* op, const nn::OptimizerState<T>& s, Index num_parameters,
                       DampedStepState<T>& state) {
  s.require_kind(kind, op);
  const double lambda = s.number("lambda");
  const std::int64_t steps = s.counter("steps");
  Tensor<T> warm;
  if (s.has_tensor("warm_start")) warm = s.tensor("warm_start", Shape{num_parameters}).clone();
  LevenbergMarquardt lm = state.lm;
  lm.lambda = lambda;
  lm.validate();  // a lambda that is not finite is refused here
  if (steps < 0) throw ValueError(std::string(op) + ": negative step count");
  state.lm = lm;
  state.steps = static_cast<std::uint64_t>(steps);
  state.previous = warm;
}

}  // namespace

// ---- natural gradient ----------------------------------------------------------------------------

template <Real T>
NaturalGradient<T>::NaturalGradient(nn::Model<T>& model, const nn::Head<T>& head, NaturalGradientOptions options)
    : model_(&model), head_(&head), options_(options) {
  if (!(options.learning_rate > 0) || !std::isfinite(options.learning_rate)) {
    throw ValueError("NaturalGradient: learning_rate must be positive and finite, got " +
                     std::to_string(options.learning_rate));
  }
  state_.lm.lambda = options.initial_damping;
  state_.lm.validate();
}

template <Real T>
NaturalGradient<T>::NaturalGradient(nn::Model<T>& model, const nn::Head<T>& head, NaturalGradientOptions options,
                                    nn::Communicator& comm)
    : NaturalGradient(model, head, agreed(comm, "NaturalGradient options", options)) {
  comm_ = &comm;
  nn::synchronize_model(comm, model);
}

template <Real T>
CgStepReport NaturalGradient<T>::step(const Tensor<T>& inputs, const Tensor<T>& targets) {
  return damped_step(policy_of(options_), *model_, *head_, comm_, state_, inputs, targets);  // sliced: no iterate
}

template <Real T>
nn::OptimizerState<T> NaturalGradient<T>::save_state() const {
  return save_damped_state("natural_gradient", state_);
}

template <Real T>
void NaturalGradient<T>::load_state(const nn::OptimizerState<T>& s) {
  load_damped_state("natural_gradient", "NaturalGradient::load_state", s, model_->num_parameters(), state_);
}

// ---- Hessian-free -----------------------------------------------------------------------------------

template <Real T>
HessianFree<T>::HessianFree(nn::Model<T>& model, const nn::Head<T>& head, HessianFreeOptions options)
    : model_(&model), head_(&head), options_(options) {
  if (!(options.warm_start_decay >= 0 && options.warm_start_decay <= 1)) {
    throw ValueError("HessianFree: warm_start_decay must be in [0, 1], got " + std::to_string(options.warm_start_decay));
  }
  state_.lm.lambda = options.initial_damping;
  state_.lm.validate();
}

template <Real T>
HessianFree<T>::HessianFree(nn::Model<T>& model, const nn::Head<T>& head, HessianFreeOptions options,
                            nn::Communicator& comm)
    : HessianFree(model, head, agreed(comm, "HessianFree options", options)) {
  comm_ = &comm;
  nn::synchronize_model(comm, model);
}

template <Real T>
HessianFreeReport HessianFree<T>::step(const Tensor<T>& inputs, const Tensor<T>& targets) {
  return damped_step(policy_of(options_), *model_, *head_, comm_, state_, inputs, targets);
}

template <Real T>
nn::OptimizerState<T> HessianFree<T>::save_state() const {
  return save_damped_state("hessian_free", state_);
}

template <Real T>
void HessianFree<T>::load_state(const nn::OptimizerState<T>& s) {
  load_damped_state("hessian_free", "HessianFree::load_state", s, model_->num_parameters(), state_);
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
