// RecordedModel: a model's forward pass recorded once, at a snapshot of its parameters, and the
// sweeps every derivative consumer needs over that one record.
//
// Curvature products (SEED-NOTES 4) pay the forward pass once per linearization and then run sweeps
// over the record: J v (a tangent sweep to the logits), J^T b (an adjoint sweep from the logits),
// and, when a loss was recorded too, the gradient and H v (forward-over-reverse). The GGN, the
// Fisher operators, the Hessian, verify() and the Laplace approximations use it directly; K-FAC's
// statistics, the per-example gradients and the diagonal GGN use it with layer taps
// (curvature/detail/tapped_record.hpp), sweeping its tape to the tapped layers' outputs. So the
// model is recorded in one place.
//
// The training gradient (nn::loss_and_gradient, nn::gradient_at, and K-FAC's steps without
// statistics) records a loss on the model's own parameter storage (a record that ends with the
// call: RecordOptions::borrow_parameters) and sweeps the gradient once; a training step's record
// is the step's forward pass (RecordOptions::update_state: batch norm's running statistics move
// with the batch), K-FAC's statistics record included (update_state with taps).
//
// A record is a value: it owns its tape (Vars stay valid when the record is moved) and, unless it
// borrows them, a copy of the parameters it was made at, so a later update of the model does not
// disturb it. It only references the model's structure (for splitting flat vectors), and the model
// must outlive it. Recording either completes or throws with nothing else changed (a state update
// is undone when the recording throws), so an owner that swaps in a new record only after record()
// returned keeps its old one when recording fails (strong guarantee).
#pragma once

#include <memory>
#include <optional>
#include <vector>

#include <amari/autodiff/autodiff.hpp>
#include <amari/nn/heads.hpp>
#include <amari/nn/model.hpp>

namespace amari::nn {

/// What to record besides the logits.
template <Real T>
struct RecordOptions {
  /// When set (with targets), the head's mean loss is recorded too: gradient() and loss_hvp().
  const Head<T>* head = nullptr;
  /// Targets (N, C) for the loss; required with head.
  Tensor<T> targets;
  /// When set, every Linear and Conv2d layer reports itself during the recording (layer taps:
  /// input value, output variable, weight index), e.g. for K-FAC statistics. Only used while the
  /// constructor runs.
  TapObserver<Var<T>>* taps = nullptr;
  /// The operation the recording's errors name first, e.g. "diagonal_ggn", so that a caller's
  /// bad input is reported under the caller's name; "RecordedModel" when null.
  const char* op = nullptr;
  /// When set, the recording is the forward pass of a training step: this must be the recorded
  /// model (ValueError otherwise), and in Mode::train its non-parameter state (batch norm's
  /// running statistics) moves with this batch, once, as Model::forward_updating_state moves it;
  /// in Mode::eval nothing changes. If the recording throws, the state is restored (a copy of the
  /// S state values is kept while recording). With taps too: the layers report themselves from
  /// the same pass (K-FAC's statistics steps). Only used while the constructor runs.
  Model<T>* update_state = nullptr;
  /// When true, the record uses the model's own parameter storage instead of a copy: no P-element
  /// copy, but the record (its sweeps and parameters()) is only valid until the model's parameters
  /// change. For a record that does not outlive the call that makes it, e.g. the training gradient.
  bool borrow_parameters = false;
};

/// z = f(x; theta) (and optionally the loss) recorded at a copy of the model's parameters (or the
/// parameters themselves: RecordOptions::borrow_parameters), in the model's current mode, with its
/// current dropout masks; the model's state is changed only by RecordOptions::update_state.
template <Real T>
class RecordedModel {
 public:
  /// Records the forward pass of `model` on `inputs` (N, ...). The output must be logits (N, C)
  /// (ShapeError naming options.op otherwise). Cost: one copy of the P parameters (none with
  /// options.borrow_parameters) and one taped forward pass (plus the loss with options.head).
  RecordedModel(const Model<T>& model, Tensor<T> inputs, RecordOptions<T> options = {});
  RecordedModel(RecordedModel&&) noexcept = default;
  RecordedModel& operator=(RecordedModel&&) noexcept = default;
  RecordedModel(const RecordedModel&) = delete;
  RecordedModel& operator=(const RecordedModel&) = delete;

  /// a = J v: a flat tangent v (P) to logit tangents a (N, C). One forward sweep over the record;
  /// allocation-free after the first call.
  void jvp(const Tensor<T>& v, Tensor<T>& a);
  /// out = J^T b: logit cotangents b (N, C) to a flat vector (P). One reverse sweep.
  void vjp(const Tensor<T>& b, Tensor<T>& out);
  /// out = the gradient of the recorded mean loss (P). One reverse sweep. ValueError without a loss.
  void gradient(Tensor<T>& out);
  /// out = H v, the Hessian of the recorded mean loss times a flat v (P); forward-over-reverse,
  /// about two reverse sweeps. ValueError without a loss.
  void loss_hvp(const Tensor<T>& v, Tensor<T>& out);

  /// The logits z at the recording point (N, C).
  const Tensor<T>& logits() const { return z_.value(); }
  /// The logits as a variable of the record (for sweeps a caller runs on tape()).
  const Var<T>& logits_variable() const { return z_; }
  /// True when a loss was recorded.
  bool has_loss() const { return loss_.has_value(); }
  /// The recorded mean loss (ValueError without one).
  T loss() const;
  const Tensor<T>& inputs() const { return x_; }
  /// The targets the loss was recorded with (undefined without a loss).
  const Tensor<T>& targets() const { return y_; }
  /// The parameters theta the record was made at (flat, P; a copy, not the model's storage, unless
  /// RecordOptions::borrow_parameters was set).
  const Tensor<T>& parameters() const { return theta_; }
  /// The parameter variables (one per parameter view, in flat order).
  const std::vector<Var<T>>& parameter_variables() const { return params_; }
  Index batch_size() const { return logits().shape()[0]; }
  Index num_outputs() const { return logits().shape()[1]; }
  Index num_parameters() const { return theta_.size(); }
  const Model<T>& model() const { return *model_; }
  /// The tape holding the record (for printing, observers, or sweeps of other outputs).
  Tape<T>& tape() { return *tape_; }
  const Tape<T>& tape() const { return *tape_; }
  /// Bytes held by the record and its sweep buffers.
  std::size_t memory_bytes() const { return tape_->memory_bytes(); }

 private:
  void require_loss(const char* op) const;

  const Model<T>* model_;
  Tensor<T> x_, y_, theta_;
  std::unique_ptr<Tape<T>> tape_;  // owned through a pointer: Vars refer to the tape, moves keep them valid
  std::vector<Var<T>> params_;
  Var<T> z_;
  std::optional<Var<T>> loss_;
  Tensor<T> one_;
  std::vector<Tensor<T>> in_views_, out_views_;  // reused per-parameter views of caller buffers
};

extern template class RecordedModel<float>;
extern template class RecordedModel<double>;

}  // namespace amari::nn
