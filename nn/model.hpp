// Model: a module plus its parameters, stored in one flat vector.
//
// The flat layout is the declaration order of the module's parameters (Sequential: child 0's
// parameters first; Linear: weight (in, out) row-major, then bias), concatenated without padding.
// Every parameter tensor is a view into the flat vector, so optimizers, curvature products and
// files work on one contiguous vector of length P, and a vector of length P (a tangent, a
// gradient, a natural-gradient step) splits into per-parameter views without copying.
#pragma once

#include <memory>
#include <span>
#include <string>
#include <vector>

#include <amari/nn/module.hpp>

namespace amari::nn {

/// Where one parameter lives in the flat vector.
struct ParamInfo {
  std::string name;
  Shape shape;
  Index offset = 0;  ///< first element in the flat vector
  Init init = Init::zeros;
  Index fan_in = 0;
  Index fan_out = 0;
  TorchLayout torch_layout = TorchLayout::same;
};

/// Where one state tensor lives in the flat state vector.
struct StateInfo {
  std::string name;
  Shape shape;
  Index offset = 0;
  double initial = 0;
};

/// A module with its parameters (one flat vector), its non-parameter state (a second flat vector,
/// empty for most networks), a mode (train / eval) and forward passes in the three value types.
///
/// Mode and state: in Mode::train, batch norm uses batch statistics and dropout is active; only
/// forward passes started with update_state (the one taped pass of nn::loss_and_gradient) move the
/// running statistics. Curvature operators, line searches and plain forward() calls never change
/// the state. Dropout masks are keyed by (seed, step(), first_example()): loss_and_gradient in train
/// mode starts a new step, and every other pass at that step (a curvature product, a line search)
/// sees the same masks; first_example() places the rows of this process's batches in the step's
/// batch (data-parallel: the rank's shard offset), so every example's mask depends on its index
/// in the whole batch, not on how the batch is split. The default mode is train, as in PyTorch;
/// nn::evaluate() always evaluates in eval mode.
///
/// Invariants: parameter_views() are views into parameters() at the offsets of layout(), and the
/// state views into state(); the module is immutable and shared between copies.
/// Value semantics: copying a Model copies its parameters and state (a deep copy: a "best model"
/// snapshot does not change when training continues); the module is shared, being immutable.
/// Moving is cheap; a moved-from Model may only be assigned to or destroyed.
/// parameters() and state() hand out the model's own storage for writing into (element writes,
/// copy_from, optimizer steps). Rebinding the returned handle to another tensor does not detach the
/// model: the model keeps its storage, and its next operation raises ValueError saying what
/// happened (and restores the handle), instead of silently ignoring the new tensor.
template <Real T>
class Model {
 public:
  /// Allocates the parameters of `net` and initializes them from `seed` (see initialize()).
  explicit Model(std::shared_ptr<const Module<T>> net, std::uint64_t seed = 0);
  /// A deep copy: its own parameters and state, the same (immutable) module.
  Model(const Model& other);
  Model& operator=(const Model& other);
  Model(Model&&) noexcept = default;
  Model& operator=(Model&&) noexcept = default;

  const Module<T>& module() const { return *net_; }
  /// P: the total number of scalar parameters.
  Index num_parameters() const { return flat_.size(); }
  /// Per-parameter names, shapes and offsets, in flat order.
  const std::vector<ParamInfo>& layout() const { return layout_; }
  /// The flat parameter vector (P). Writing into it changes the model; rebinding the handle to
  /// another tensor is reported by the model's next operation (see the class comment).
  Tensor<T>& parameters() {
    check_handles("parameters");
    return exposed_flat_;
  }
  const Tensor<T>& parameters() const { return flat_; }
  /// Per-parameter views into parameters(), in flat order.
  const std::vector<Tensor<T>>& parameter_views() const { return views_; }

  /// Non-parameter state (running statistics), flat, in declaration order; empty for most models.
  const Tensor<T>& state() const { return state_; }
  /// The state for writing into (as parameters(): rebinding the handle is reported).
  Tensor<T>& state() {
    check_handles("state");
    return exposed_state_;
  }
  const std::vector<StateInfo>& state_layout() const { return state_layout_; }
  /// Resets every state tensor to its declared initial value.
  void reset_state();

  Mode mode() const { return mode_; }
  void set_mode(Mode mode) { mode_ = mode; }
  /// PyTorch's model.train() / model.eval().
  void train() { mode_ = Mode::train; }
  void eval() { mode_ = Mode::eval; }
  /// The training step counter that keys dropout masks (with the model's seed).
  std::uint64_t step() const { return step_; }
  void set_step(std::uint64_t step) { step_ = step; }
  /// The seed the model was created with; keys the dropout masks.
  std::uint64_t seed() const { return seed_; }
  /// Sets the seed that keys the dropout masks (e.g. when resuming from a checkpoint); does not
  /// re-initialize the parameters (initialize() does).
  void set_seed(std::uint64_t seed) { seed_ = seed; }
  /// The index in the step's batch of row 0 of the inputs this process passes: the third key of
  /// the dropout masks (nn::RandomKey). 0 unless a data-parallel training step set it:
  /// nn::loss_and_gradient(..., comm, shard) and the data-parallel optimizers set it to the rank's
  /// shard offset, their single-process forms to 0. A property of this process's place in the run,
  /// not of the model: checkpoints do not store it, and a copy keeps it.
  Index first_example() const { return static_cast<Index>(first_example_); }
  /// Sets first_example() (ValueError if negative).
  void set_first_example(Index first) {
    if (first < 0) {
      throw ValueError("Model::set_first_example: the first example's index must be >= 0, got " +
                       std::to_string(first));
    }
    first_example_ = static_cast<std::uint64_t>(first);
  }

  /// Re-initializes every parameter. Parameter i draws from its own stream Rng(seed, i), so a
  /// parameter's initial value does not depend on the layers before it. Reproducible everywhere.
  void initialize(std::uint64_t seed);
  /// Gather: a copy of the flat parameter vector.
  Tensor<T> gather() const { return flat_.clone(); }
  /// Scatter: sets all parameters from a flat vector of length P (ShapeError otherwise).
  void scatter(const Tensor<T>& flat);
  /// Splits any flat vector of length P into per-parameter views (no copy); for tangents,
  /// gradients and curvature products. ShapeError if the length is not P.
  std::vector<Tensor<T>> split(const Tensor<T>& flat) const;
  /// split() into an existing vector, reusing its capacity: allocation-free once `views` has the
  /// right size (for repeated curvature products).
  void split_into(const Tensor<T>& flat, std::vector<Tensor<T>>& views) const;
  /// A zero vector of length P.
  Tensor<T> zeros_like_parameters() const { return Tensor<T>(Shape{num_parameters()}); }

  /// Plain forward pass: f(x; theta), in mode().
  Tensor<T> forward(const Tensor<T>& x) const;
  /// The same in a given mode.
  Tensor<T> forward(const Tensor<T>& x, Mode mode) const;
  /// Forward mode in parameter space: f(x; theta) and J v for a flat tangent v (P), in one pass.
  /// The input x is a constant (no tangent).
  Dual<T> forward_jvp(const Tensor<T>& x, const Tensor<T>& tangent) const;
  /// Tape variables over the parameter views (shares storage; no copy), in flat order.
  std::vector<Var<T>> variables(Tape<T>& tape) const;
  /// Forward pass with explicitly bound parameter values (one per parameter, in flat order), for
  /// any value type. Throws ValueError if the count does not match.
  /// The pass runs in mode() and leaves the state unchanged.
  template <Value V>
  V forward(const V& x, std::span<const V> params) const {
    return run<V>(x, params, mode_, /*update_state=*/false);
  }
  /// The same in a given mode.
  template <Value V>
  V forward(const V& x, std::span<const V> params, Mode mode) const {
    return run<V>(x, params, mode, /*update_state=*/false);
  }
  /// The same, reporting every Linear and Conv2d layer to `observer` (see LayerTap).
  template <Value V>
  V forward_observed(const V& x, std::span<const V> params, TapObserver<V>& observer) const {
    return run<V>(x, params, mode_, /*update_state=*/false, &observer);
  }
  /// The forward pass of a training step: in Mode::train, state such as batch norm's running
  /// statistics is updated from this batch; in Mode::eval, the same as forward(). With an
  /// observer, every Linear and Conv2d layer reports itself as in forward_observed (a training
  /// step whose record also gathers K-FAC's statistics).
  template <Value V>
  V forward_updating_state(const V& x, std::span<const V> params, TapObserver<V>* observer = nullptr) {
    return run<V>(x, params, mode_, mode_ == Mode::train, observer);
  }
  /// One line per parameter: name, shape, offset; then the total; then the state tensors.
  std::string summary() const;

 private:
  /// ValueError (and the handles restored) if a handle given out by parameters() or state() was
  /// rebound to another tensor since.
  void check_handles(const char* op) const;
  /// Points the views at flat_ and state_ (after construction or a copy).
  void bind_views();

  template <Value V>
  V run(const V& x, std::span<const V> params, Mode mode, bool update_state,
        TapObserver<V>* observer = nullptr) const {
    check_handles("forward");
    if (params.size() != views_.size()) {
      throw ValueError("Model::forward: " + std::to_string(params.size()) + " parameter values bound, the model has " +
                       std::to_string(views_.size()));
    }
    // The state views are handles: a module writing through them writes into state_ (only when
    // update_state is set, which only the non-const forward_updating_state does).
    std::vector<Tensor<T>> state_views = state_views_;
    const Index examples = x.shape().rank() >= 1 ? x.shape()[0] : 1;
    ForwardContext<V> context(params, std::span<Tensor<T>>(state_views), mode, update_state,
                              RandomKey{seed_, step_, first_example_, examples}, observer);
    V y = net_->forward(x, context);
    if (context.position() != params.size() || context.state_position() != state_views.size()) {
      throw ValueError("Model::forward: the module used " + std::to_string(context.position()) + " of " +
                       std::to_string(params.size()) + " parameters and " +
                       std::to_string(context.state_position()) + " of " + std::to_string(state_views.size()) +
                       " state tensors");
    }
    return y;
  }

  std::shared_ptr<const Module<T>> net_;
  std::vector<ParamInfo> layout_;
  Tensor<T> flat_;
  std::vector<Tensor<T>> views_;
  std::vector<StateInfo> state_layout_;
  Tensor<T> state_;
  std::vector<Tensor<T>> state_views_;
  // The handles parameters() and state() return: the same storage as flat_ and state_, kept apart
  // so a user rebinding them cannot detach the model (mutable: check_handles() restores them).
  mutable Tensor<T> exposed_flat_, exposed_state_;
  Mode mode_ = Mode::train;
  std::uint64_t step_ = 0;
  std::uint64_t seed_ = 0;
  std::uint64_t first_example_ = 0;
};

extern template class Model<float>;
extern template class Model<double>;

}  // namespace amari::nn
