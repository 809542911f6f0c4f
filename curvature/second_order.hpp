// Second-order training steps built on the curvature products: natural gradient (CG on the damped
// Fisher) and Hessian-free optimization as Martens (2010) runs it. Both work with any nn::Model
// and any nn::Head, and report what they did at every step.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include <amari/curvature/cg.hpp>
#include <amari/curvature/damping.hpp>
#include <amari/curvature/linear_operator.hpp>
#include <amari/nn/checkpoint.hpp>
#include <amari/nn/communicator.hpp>
#include <amari/nn/heads.hpp>
#include <amari/nn/model.hpp>

namespace amari::curvature {

/// Which curvature matrix a second-order method solves with.
enum class Curvature {
  ggn,               ///< Generalized Gauss-Newton = true Fisher for amari's heads (ggn.hpp)
  mc_fisher,         ///< Monte-Carlo Fisher with sampled labels (fisher.hpp)
  empirical_fisher,  ///< Empirical Fisher at the data labels: NOT the Fisher (fisher.hpp)
  hessian,           ///< Exact Hessian of the loss (may be indefinite: CG may stop early)
};
/// "ggn", "mc_fisher", "empirical_fisher", "hessian".
const char* to_string(Curvature c);

/// The curvature operator of `kind` at the model's current parameters on a batch. For mc_fisher,
/// `samples` labels per example are drawn with `seed`, and row i is keyed as example
/// first_example_id + i (its index in a larger batch or data set: MonteCarloFisherOperator's
/// example ids). Model and head must outlive the operator.
template <Real T>
std::unique_ptr<LinearOperator<T>> make_curvature(Curvature kind, const nn::Model<T>& model,
                                                  const nn::Head<T>& head, const Tensor<T>& inputs,
                                                  const Tensor<T>& targets, int samples = 1,
                                                  std::uint64_t seed = 0, Index first_example_id = 0);

/// The diagonal of the empirical Fisher, (1/n) sum_i g_i * g_i with g_i the gradient of example
/// i's loss, over the first `max_examples` examples of the batch (all if 0): per-example gradients
/// from one recorded forward pass and one reverse sweep per example. Used by Martens' (2010,
/// sec. 4.7) preconditioner. Cost: n reverse sweeps.
template <Real T>
Tensor<T> empirical_fisher_diagonal(const nn::Model<T>& model, const nn::Head<T>& head, const Tensor<T>& inputs,
                                    const Tensor<T>& targets, Index max_examples = 0);

/// Data-parallel: the same diagonal over `max_examples` examples of the union of the ranks' shards
/// (inputs, targets: this rank's rows), spread over the ranks (nn::Shard::spread: each rank's first
/// rows), on every rank. One allreduce_sum of P.
template <Real T>
Tensor<T> empirical_fisher_diagonal(const nn::Model<T>& model, const nn::Head<T>& head, const Tensor<T>& inputs,
                                    const Tensor<T>& targets, Index max_examples, nn::Communicator& comm,
                                    const nn::Shard& shard);

/// What every second-order step reports; each optimizer's report adds the fields only it fills
/// (CgStepReport for NaturalGradient, HessianFreeReport, KfacReport in kfac.hpp).
struct StepReport {
  double loss = 0;                  ///< minibatch loss before the step
  double loss_after = 0;            ///< minibatch loss after the step (K-FAC: NaN if not evaluated)
  double gradient_norm = 0;
  double lambda = 0;                ///< damping used for this step
  double step_scale = 1;            ///< factor applied to the proposed step (0: rejected or undone)
  double step_norm = 0;             ///< ||theta_new - theta||
  /// One line: "loss 0.53 -> 0.49 | lambda 0.1 | step 1.0" (without "-> 0.49" when loss_after is
  /// NaN: not evaluated).
  std::string str() const;
};

/// A step solved by CG on the damped curvature and judged by its quadratic model (SEED-NOTES 5):
/// what NaturalGradient::step returns.
struct CgStepReport : StepReport {
  double rho = 0;                   ///< reduction ratio actual / predicted (SEED-NOTES 5)
  double predicted_reduction = 0;   ///< decrease promised by the quadratic model
  int cg_iterations = 0;
  int cg_products = 0;
  /// non_finite also when the loss or gradient at the start is NaN/inf: then no solve ran, the
  /// step is rejected (step_scale 0) and lambda is unchanged.
  CgStatus cg_status = CgStatus::converged;
  /// One line: "loss 0.53 -> 0.49 | lambda 0.1 rho 0.82 | cg 17 (progress_stalled) | step 1.0".
  std::string str() const;
};

/// What HessianFree::step returns: a CG step whose iterate was chosen by CG backtracking.
struct HessianFreeReport : CgStepReport {
  int backtrack_iterate = -1;       ///< the CG iteration whose iterate was taken (-1: no solve ran)
  /// CgStepReport's line with "| iterate k" before the step.
  std::string str() const;
};

/// What a damped step carries from one step to the next. NaturalGradient, HessianFree and Kfac
/// run one step pipeline (curvature/detail/damped_step.hpp): the loss and gradient at theta, a
/// direction from a step source (CG on (A + lambda I) d = -g, or K-FAC's preconditioned
/// gradient), its length (the choice of CG iterate and a line search; K-FAC's KL clip and
/// momentum, or its adaptive quadratic model), the update, a guard that undoes a step into
/// NaN/inf, and Levenberg-Marquardt on lambda. NaturalGradient and HessianFree share the CG step
/// source, whose policies their options choose (step length, warm start, preconditioner, CG
/// backtracking, line-search shrink factor); Kfac adds its momentum buffer to this state.
template <Real T>
struct DampedStepState {
  LevenbergMarquardt lm;   ///< lambda and its update rule
  /// What the next step starts from: HessianFree's warm start (the last CG solution), adaptive
  /// K-FAC's previous update delta_0; undefined for NaturalGradient and default K-FAC.
  Tensor<T> previous;
  std::uint64_t steps = 0;  ///< steps taken (rejected ones included)
};

/// Natural gradient: d solves (F + lambda I) d = -g by CG on the chosen curvature, then
/// theta += learning_rate * d (optionally with an Armijo backtracking line search), and lambda
/// follows the Levenberg-Marquardt rule (SEED-NOTES 5). Damping bounds the step, which is close to
/// bounding the KL divergence between the model before and after it.
struct NaturalGradientOptions {
  Curvature curvature = Curvature::ggn;
  double learning_rate = 1.0;
  double initial_damping = 1.0;
  bool adapt_damping = true;        ///< Levenberg-Marquardt on lambda
  bool line_search = false;         ///< Armijo backtracking on the minibatch loss
  Index curvature_batch = 0;        ///< examples used for the curvature (first n; 0 = all)
  int mc_samples = 1;               ///< labels per example for Curvature::mc_fisher
  std::uint64_t seed = 0;           ///< for sampled labels
  CgOptions cg = {.max_iterations = 50, .relative_tolerance = 1e-4};
};

template <Real T>
class NaturalGradient {
 public:
  /// The model is updated in place by step(); model and head must outlive the optimizer.
  NaturalGradient(nn::Model<T>& model, const nn::Head<T>& head, NaturalGradientOptions options = {});
  /// Data-parallel (docs/scaling.md): collective, every rank constructs it with the same options
  /// (checked: ValueError on every rank otherwise) and a model of the same structure, whose
  /// parameters are then replaced by rank 0's (nn::synchronize_model). step() then takes this
  /// rank's shard of the batch (consecutive rows in rank order, any sizes, 0 allowed) and every
  /// rank takes the step of a single process on the union of the shards. A curvature_batch of n
  /// takes each rank's first rows in proportion to its share (nn::Shard::spread), so every rank
  /// computes curvature products: the single-process equivalent is the union ordered with those
  /// rows first, rank by rank (the Monte-Carlo labels are keyed by position in that order). The
  /// communicator must outlive the optimizer.
  NaturalGradient(nn::Model<T>& model, const nn::Head<T>& head, NaturalGradientOptions options,
                  nn::Communicator& comm);
  /// One step on a batch (inputs (N, D), targets (N, C)). All or nothing: if it throws, the model (parameters, state, step
  /// counter) and the optimizer (lambda, warm start, step count) are as they were before the call.
  CgStepReport step(const Tensor<T>& inputs, const Tensor<T>& targets);
  double lambda() const { return state_.lm.lambda; }
  /// The state a resumed run needs (lambda, the step count); the options are not part of
  /// it (construct the resumed optimizer with the same options). See nn/checkpoint.hpp.
  nn::OptimizerState<T> save_state() const;
  /// Restores a state from save_state(); ValueError (nothing changed) for a state of another
  /// optimizer or a tensor of the wrong shape.
  void load_state(const nn::OptimizerState<T>& state);
  const NaturalGradientOptions& options() const { return options_; }

 private:
  nn::Model<T>* model_;
  const nn::Head<T>* head_;
  NaturalGradientOptions options_;
  nn::Communicator* comm_ = nullptr;  // null: one process
  DampedStepState<T> state_;          // lambda and the step count (no warm start)
};

/// Hessian-free optimization (Martens 2010): GGN products on a curvature minibatch, CG warm-started
/// from decay * the previous solution, iterates kept for CG backtracking, an Armijo line search,
/// Levenberg-Marquardt damping, and optionally the (diag(EF) + lambda)^alpha preconditioner.
struct HessianFreeOptions {
  Curvature curvature = Curvature::ggn;
  double initial_damping = 1.0;
  double warm_start_decay = 0.95;   ///< sec. 4.5: x0 = decay * previous CG solution
  bool backtracking = true;         ///< sec. 4.6: choose among the kept CG iterates
  bool line_search = true;          ///< sec. 8: Armijo with c = 1e-2, shrinking by 0.8
  bool preconditioner = false;      ///< sec. 4.7: M = (diag(EF) + lambda)^alpha
  double preconditioner_exponent = 0.75;
  Index preconditioner_examples = 32;  ///< examples for diag(EF) (one reverse sweep each)
  Index curvature_batch = 0;        ///< examples used for the curvature (first n; 0 = all)
  int mc_samples = 1;
  std::uint64_t seed = 0;
  CgOptions cg = {.max_iterations = 250, .relative_tolerance = 0, .keep_iterates = true};
};

template <Real T>
class HessianFree {
 public:
  HessianFree(nn::Model<T>& model, const nn::Head<T>& head, HessianFreeOptions options = {});
  /// Data-parallel, as NaturalGradient's: collective construction (options and model structure
  /// checked, rank 0's parameters broadcast), step() on this rank's shard; curvature_batch and
  /// preconditioner_examples are spread over the ranks as NaturalGradient's curvature_batch.
  HessianFree(nn::Model<T>& model, const nn::Head<T>& head, HessianFreeOptions options, nn::Communicator& comm);
  /// One step on a batch. All or nothing: if it throws, the model (parameters, state, step
  /// counter) and the optimizer (lambda, warm start, step count) are as they were before the call.
  HessianFreeReport step(const Tensor<T>& inputs, const Tensor<T>& targets);
  double lambda() const { return state_.lm.lambda; }
  /// The state a resumed run needs (lambda, the step count and the CG warm start); the options are not part of
  /// it (construct the resumed optimizer with the same options). See nn/checkpoint.hpp.
  nn::OptimizerState<T> save_state() const;
  /// Restores a state from save_state(); ValueError (nothing changed) for a state of another
  /// optimizer or a tensor of the wrong shape.
  void load_state(const nn::OptimizerState<T>& state);
  const HessianFreeOptions& options() const { return options_; }

 private:
  nn::Model<T>* model_;
  const nn::Head<T>* head_;
  HessianFreeOptions options_;
  nn::Communicator* comm_ = nullptr;  // null: one process
  DampedStepState<T> state_;          // lambda, the last CG solution (warm start), the step count
};

/// Fingerprints of the options every rank must agree on (Communicator::agree).
std::uint64_t options_fingerprint(const NaturalGradientOptions& o);
std::uint64_t options_fingerprint(const HessianFreeOptions& o);

extern template class NaturalGradient<float>;
extern template class NaturalGradient<double>;
extern template class HessianFree<float>;
extern template class HessianFree<double>;

}  // namespace amari::curvature
