// First-order optimizers on a flat parameter vector: SGD (with momentum, Nesterov, weight decay)
// and Adam / AdamW.
//
// An optimizer updates one tensor in place from a gradient of the same shape. The usual use is the
// model's whole flat vector:
//
//   Adam<float> adam({.learning_rate = 1e-3});
//   loss_and_gradient(model, head, x, y, grad);   // grad: flat, length P
//   adam.step(model.parameters(), grad);
//
// Per-parameter settings need no extra machinery: model.split() gives views of the parameters and
// of the gradient, and each view gets its own optimizer:
//
//   auto params = model.split(model.parameters());
//   auto grads = model.split(grad);
//   for (size_t i = 0; i < params.size(); ++i) optimizers[i].step(params[i], grads[i]);
//
// Numerics: the state (velocity, moments) is kept in T and the update is computed in T, as in
// PyTorch; the hyperparameters are stored in double and rounded to T once per step, so they are
// validated in T too: a learning rate or weight decay that is infinite in T (1e39 in float) or
// rounds to 0 there, a momentum or beta that rounds to 1, an epsilon that is not a normal number of
// T (1e-50 in float) are ValueErrors at construction (and in set_learning_rate).
//
// Guards on what is read and on what is written (strong guarantee): a step first computes every
// new value without storing any (a dry run), then stores them. If the gradient holds NaN or
// infinity, or if the update would turn a finite parameter or state element into inf or NaN (a
// huge but finite gradient, a huge learning rate), step() throws ValueError naming the optimizer,
// the element and the value, and the parameters, the state and the step count are exactly as they
// were: the caller can skip the batch or lower the learning rate and continue. Parameters that
// already were inf or NaN are not refused again. Cost: the dry run reads the parameters, gradient
// and state once more (no extra memory).
//
// Checkpoints: save_state() / load_state() give and take the state (moments, velocity, step count,
// learning rate) as an OptimizerState, which nn/checkpoint.hpp writes next to the model, so a run
// resumed from a checkpoint continues bitwise as if it had not stopped.
//
// Value semantics: an optimizer is a value. Copying one copies its options, its step count and
// its state tensors (deep copies, clone()), so a copy made as a snapshot is unaffected by later
// steps of the original and vice versa. Moving transfers the state.
#pragma once

#include <cstdint>
#include <string>

#include <amari/autodiff/tensor.hpp>
#include <amari/nn/checkpoint.hpp>

namespace amari::nn {

/// An in-place update rule: params <- params - (step computed from the gradient and the state).
/// Stateful optimizers allocate their state on the first step and tie it to that size.
template <Real T>
class Optimizer {
 public:
  virtual ~Optimizer() = default;
  /// One update of `params` in place from `gradient` (same shape, any rank; ShapeError otherwise,
  /// and also if the size differs from the one the state was allocated for). ValueError naming the
  /// optimizer and the first bad index if the gradient holds NaN or infinity, or if the update
  /// would make a finite parameter or state element non-finite; nothing is modified then (not the
  /// parameters, the state or the step count). Cost O(size), a dry run and a commit pass, no
  /// allocation after the first step.
  virtual void step(Tensor<T>& params, const Tensor<T>& gradient) = 0;
  /// Forgets the state (velocity, moments, step count): the next step is like the first.
  virtual void reset() = 0;
  /// The optimizer and its options, e.g. "Adam(lr=0.001, beta1=0.9, ...)".
  virtual std::string describe() const = 0;
  /// The current learning rate.
  virtual double learning_rate() const = 0;
  /// Changes the learning rate for the following steps (schedules, recovery after a bad step);
  /// the state is kept. ValueError if it is negative, not finite in T, or rounds to 0 in T.
  virtual void set_learning_rate(double learning_rate) = 0;
  /// What a resumed run needs to continue bitwise where this one stopped (nn/checkpoint.hpp):
  /// the state tensors (copies), the step count and the current learning rate; not the other
  /// options (construct the resumed optimizer with the same ones). The default throws ValueError
  /// naming the optimizer: an optimizer written outside amari overrides both functions to
  /// take part in checkpoints.
  virtual OptimizerState<T> save_state() const;
  /// Restores a state from save_state(): all or nothing, after checking the kind, the shapes and
  /// that every value is finite (ValueError naming the entry otherwise). The tensors are copied.
  virtual void load_state(const OptimizerState<T>& state);
};

/// Options of Sgd. All must be finite, also when rounded to T (see the file comment).
struct SgdOptions {
  double learning_rate = 0.01;  ///< >= 0
  double momentum = 0;          ///< mu in [0, 1); 0 disables the velocity buffer
  bool nesterov = false;        ///< Nesterov momentum (needs momentum > 0)
  double weight_decay = 0;      ///< >= 0; L2 penalty (wd/2)||p||^2 added to the loss
};

/// Stochastic gradient descent with PyTorch's torch.optim.SGD semantics (dampening 0):
///   g = grad + wd p;  v = mu v + g (v = g on the first step);
///   p -= lr (nesterov ? g + mu v : v)            (with mu = 0: p -= lr g).
/// State: the velocity v (size of params, in T) when momentum > 0. Cost O(size) per step.
template <Real T>
class Sgd final : public Optimizer<T> {
 public:
  /// ValueError naming the option and its value if an option is out of range.
  explicit Sgd(SgdOptions options = {});
  /// Deep copy: the velocity is cloned.
  Sgd(const Sgd& other)
      : options_(other.options_), velocity_(other.velocity_.clone()), steps_(other.steps_) {}
  Sgd& operator=(const Sgd& other) {
    if (this != &other) *this = Sgd(other);
    return *this;
  }
  Sgd(Sgd&&) noexcept = default;
  Sgd& operator=(Sgd&&) noexcept = default;
  void step(Tensor<T>& params, const Tensor<T>& gradient) override;
  void reset() override;
  std::string describe() const override;
  double learning_rate() const override { return options_.learning_rate; }
  void set_learning_rate(double learning_rate) override;
  /// Kind "sgd": tensor "velocity" (when allocated), counter "steps", number "learning_rate".
  OptimizerState<T> save_state() const override;
  void load_state(const OptimizerState<T>& state) override;
  const SgdOptions& options() const { return options_; }
  /// Number of steps taken since construction or reset().
  std::int64_t steps() const { return steps_; }
  /// The velocity v (undefined before the first step or without momentum).
  const Tensor<T>& velocity() const { return velocity_; }

 private:
  SgdOptions options_;
  Tensor<T> velocity_;
  std::int64_t steps_ = 0;
};

/// Options of Adam. All must be finite, also when rounded to T (see the file comment).
struct AdamOptions {
  double learning_rate = 1e-3;  ///< >= 0
  double beta1 = 0.9;           ///< in [0, 1): decay of the first moment
  double beta2 = 0.999;         ///< in [0, 1): decay of the second moment
  double epsilon = 1e-8;        ///< > 0 and a normal number of T: added to sqrt(v_hat)
  double weight_decay = 0;      ///< >= 0
  /// false: L2 penalty added to the gradient (Adam, like torch.optim.Adam's weight_decay).
  /// true: decoupled decay p -= lr wd p before the Adam step (AdamW, Loshchilov & Hutter 2019).
  bool decoupled_weight_decay = false;
};

/// Adam (Kingma & Ba 2015, Algorithm 1) with bias correction; at step t (from 1):
///   g = grad (+ wd p if coupled);  m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2;
///   p -= lr (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps)   (AdamW: first p -= lr wd p).
/// State: m and v (each the size of params, in T) allocated on the first step, and t. Cost O(size)
/// per step, one sqrt and one division per element.
template <Real T>
class Adam final : public Optimizer<T> {
 public:
  /// ValueError naming the option and its value if an option is out of range.
  explicit Adam(AdamOptions options = {});
  /// Deep copy: both moments are cloned.
  Adam(const Adam& other)
      : options_(other.options_), m_(other.m_.clone()), v_(other.v_.clone()), steps_(other.steps_) {}
  Adam& operator=(const Adam& other) {
    if (this != &other) *this = Adam(other);
    return *this;
  }
  Adam(Adam&&) noexcept = default;
  Adam& operator=(Adam&&) noexcept = default;
  void step(Tensor<T>& params, const Tensor<T>& gradient) override;
  void reset() override;
  std::string describe() const override;
  double learning_rate() const override { return options_.learning_rate; }
  void set_learning_rate(double learning_rate) override;
  /// Kind "adam": tensors "first_moment" and "second_moment" (when allocated, same shape), counter "steps", number "learning_rate".
  OptimizerState<T> save_state() const override;
  void load_state(const OptimizerState<T>& state) override;
  const AdamOptions& options() const { return options_; }
  /// t: the number of steps taken since construction or reset().
  std::int64_t steps() const { return steps_; }
  /// The first moment m (undefined before the first step).
  const Tensor<T>& first_moment() const { return m_; }
  /// The second moment v (undefined before the first step).
  const Tensor<T>& second_moment() const { return v_; }

 private:
  AdamOptions options_;
  Tensor<T> m_, v_;
  std::int64_t steps_ = 0;
};

extern template class Optimizer<float>;
extern template class Optimizer<double>;
extern template class Sgd<float>;
extern template class Sgd<double>;
extern template class Adam<float>;
extern template class Adam<double>;

}  // namespace amari::nn
