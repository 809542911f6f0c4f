// Internal (not part of the public API): the one damped-step pipeline of the second-order
// optimizers. NaturalGradient, HessianFree (second_order.cpp) and Kfac (kfac.cpp) run the same
// stages, in this order, and differ only in the step source each plugs in:
//   1. start: the loss and gradient at theta, from the step's recorded forward pass (a training
//      step: new dropout masks, running statistics moved once); K-FAC gathers its factor
//      statistics from the same record and refreshes its inverses, CG builds the curvature
//      operator at theta. A source may reject the step here (CG: a non-finite loss or gradient).
//   2. direction: CG on (A + lambda I) d = -g (warm start, preconditioner: Martens 2010, secs. 4.5
//      and 4.7), or K-FAC's preconditioned gradient F_kfac^{-1} g (Martens & Grosse 2015).
//   3. length: how much of it, or which combination: the choice among CG's iterates and an Armijo
//      line search (Martens 2010, secs. 4.6 and 8), K-FAC's KL clip and momentum (Ba et al. 2017),
//      or the adaptive alpha and mu minimizing the exact quadratic model (M&G 2015, sec. 7). It
//      proposes theta0 + scale u and what the quadratic model predicts for it.
//   4. update: theta = theta0 + scale u.
//   5. the loss after the step, where the length stage did not measure it already and the source
//      asks for it.
//   6. the non-finite guard: a step whose loss after it is NaN or inf is undone (theta = theta0,
//      step_scale 0), and the source forgets what the step would have carried to the next one.
//   7. Levenberg-Marquardt on lambda from the reduction ratio rho (SEED-NOTES 5; Martens 2010,
//      sec. 4.1; M&G 2015, sec. 6.5), on the steps the source says; rho is reported either way.
// all_or_nothing() wraps a step: the model (parameters, state, step counter, first example) is
// snapshotted and the optimizer's state updated in a copy, kept only if the step succeeds.
#pragma once

#include <cmath>
#include <limits>
#include <optional>
#include <span>
#include <utility>

#include <amari/curvature/damping.hpp>
#include <amari/curvature/detail/model_snapshot.hpp>
#include <amari/curvature/vector_ops.hpp>
#include <amari/nn/communicator.hpp>
#include <amari/nn/heads.hpp>
#include <amari/nn/model.hpp>

namespace amari::curvature::detail {

/// Where a step's examples live: on this process (comm null, the shard is the whole batch), or
/// sharded over the ranks of comm, every loss, gradient and product then being the mean over the
/// union (nn/communicator.hpp).
struct Ranks {
  nn::Communicator* comm = nullptr;
  nn::Shard shard;
};

/// One process holding `rows` rows (comm null), or this rank's shard of the union (one allgather).
inline Ranks ranks_of(nn::Communicator* comm, Index rows) {
  if (!comm) return {nullptr, nn::Shard{rows, 0, rows}};
  return {comm, nn::shard_of(*comm, rows)};
}

/// The mean loss at the model's current parameters, in its mode, leaving its state alone (a plain
/// forward pass); with several ranks, the mean over the union (one allreduce_sum of one value).
template <Real T>
double mean_loss(const nn::Model<T>& model, const nn::Head<T>& head, const Tensor<T>& x,
                 const Tensor<T>& y, const Ranks& p) {
  double l = p.shard.local > 0 ? static_cast<double>(head.loss(model.forward(x), y).item()) : 0.0;
  if (p.comm) nn::reduce_mean(*p.comm, p.shard.weight(), std::span<double>(&l, 1));
  return l;
}

/// theta = theta0 + alpha u (theta0 itself for alpha == 0).
template <Real T>
void set_parameters(nn::Model<T>& model, const Tensor<T>& theta0, const Tensor<T>& u,
                    double alpha) {
  copy(theta0, model.parameters());
  if (alpha != 0) axpy(alpha, u, model.parameters());
}

/// What every stage reads: the model and head, this rank's rows of the batch, where the rows
/// live, and the parameters theta0 the step starts from. References: the caller's step outlives it.
template <Real T>
struct StepContext {
  nn::Model<T>& model;
  const nn::Head<T>& head;
  const Tensor<T>& inputs;
  const Tensor<T>& targets;
  Ranks ranks;
  const Tensor<T>& theta0;
};

/// What the length stage proposes: theta0 + scale u, and what the pipeline needs to judge it.
template <Real T>
struct Proposal {
  Tensor<T> update;                  ///< u (a handle: the source's direction or combination)
  double scale = 0;                  ///< 0: no step (theta stays theta0)
  std::optional<double> loss_after;  ///< measured by the length stage (CG's trial points)
  bool measure_loss_after = false;   ///< otherwise measure it after the update (else: NaN)
  /// The reduction the quadratic model predicts for the step; empty: no model (no rho, no LM).
  std::optional<double> predicted_reduction;
  /// The actual reduction measured by the length stage (CG: at the chosen iterate, before a line
  /// search shortens it); empty: h(theta0) - h(theta0 + scale u) from the loss after the step,
  /// h = loss + (weight_decay / 2) ||theta||^2 (K-FAC's objective; NaN if that loss is not finite).
  std::optional<double> actual_reduction;
  double weight_decay = 0;
  bool adapt_damping = false;  ///< Levenberg-Marquardt on lambda at this step
};

/// The pipeline of the file comment, without the guard: the model and `state` are left half-way
/// if a stage throws. `Source` supplies the stages (with Report deriving from StepReport and State
/// from DampedStepState<T>):
///   bool start(State&, Report&);                          // stage 1; false: rejected, no step
///   D direction(State&, Report&);                         // stage 2
///   Proposal<T> length(D, State&, Report&);               // stage 3
///   void forget(State&);                                  // after stage 6 undid the step
///   void report_rho(Report&, double rho);                 // stage 7
/// The report's lambda is the damping of this step (before stage 7 moves it); stages 1 and 3 fill
/// the loss, gradient norm, step scale and step norm; the pipeline fills loss_after (NaN when not
/// measured). state.steps counts every step that returns, rejected ones included.
template <Real T, class Source, class State>
typename Source::Report damped_step_unguarded(Source& source, const StepContext<T>& c,
                                              State& state) {
  typename Source::Report r;
  r.lambda = state.lm.lambda;
  if (source.start(state, r)) {
    auto direction = source.direction(state, r);
    const Proposal<T> p = source.length(std::move(direction), state, r);
    set_parameters(c.model, c.theta0, p.update, p.scale);
    std::optional<double> after = p.loss_after;
    if (!after && p.measure_loss_after)
      after = mean_loss(c.model, c.head, c.inputs, c.targets, c.ranks);
    r.loss_after = after.value_or(std::numeric_limits<double>::quiet_NaN());
    const bool finite = after && std::isfinite(*after);
    if (after && !finite) {  // never keep a step into NaN/inf
      copy(c.theta0, c.model.parameters());
      source.forget(state);
      r.loss_after = r.loss;
      r.step_scale = 0;
      r.step_norm = 0;
    }
    if (p.predicted_reduction && after) {
      double actual = std::numeric_limits<double>::quiet_NaN();
      if (p.actual_reduction) {
        actual = *p.actual_reduction;
      } else if (finite) {
        const Tensor<T>& theta = c.model.parameters();
        const double h0 = r.loss + 0.5 * p.weight_decay * dot(c.theta0, c.theta0);
        const double h1 = *after + 0.5 * p.weight_decay * dot(theta, theta);
        actual = h0 - h1;
      }
      // A non-finite actual or a non-positive prediction gives rho = -infinity (damping.hpp).
      const double rho = p.adapt_damping ? state.lm.update(actual, *p.predicted_reduction)
                                         : reduction_ratio(actual, *p.predicted_reduction);
      source.report_rho(r, rho);
    }
  }
  ++state.steps;
  return r;
}

/// Runs step(theta0, working) on a copy `working` of `state`, all or nothing: on success `state`
/// becomes the copy; if it throws, on_failure() runs (undoing what the source changed elsewhere,
/// e.g. K-FAC's factors; it must not throw) and the model's parameters, state, step counter and
/// first example are restored, then the exception propagates. theta0 is the parameters before
/// the step. Cost: one copy of the parameters and of the model state, and of `state` (its tensors
/// are handles: the step rebinds them, never writes into them).
template <Real T, class State, class Step, class OnFailure>
auto all_or_nothing(nn::Model<T>& model, State& state, Step&& step, OnFailure&& on_failure) {
  const ModelSnapshot<T> before(model);
  State working = state;
  try {
    auto r = step(before.parameters(), working);
    state = std::move(working);
    return r;
  } catch (...) {
    on_failure();
    before.restore(model);
    throw;
  }
}

}  // namespace amari::curvature::detail
