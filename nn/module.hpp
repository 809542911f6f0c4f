// Modules: layers written once, run on plain tensors, duals and tape variables.
//
// A module declares its parameters (name, shape, initializer) and computes its output from its
// input and parameter *values* handed to it by a ForwardContext, in declaration order. It owns no
// parameter storage: a Model (nn/model.hpp) keeps all parameters in one flat vector and binds
// them as plain tensors (evaluation), duals (JVP in parameter space) or tape variables (VJP), so
// one definition of a layer serves every mode. Non-parameter state (batch norm's running
// statistics) lives in the Model too, in a second flat vector, and is handed out the same way.
//
// Writing a layer: derive from Layer<T, YourLayer> and provide
//   void declare(std::vector<ParamSpec>& out, const std::string& prefix) const;
//   template <Value V> V apply(const V& x, ForwardContext<V>& c) const;   // uses c.next() in order
//   std::string describe() const;
// and, if it has state, declare_state() (and c.next_state() in apply, in the same order).
#pragma once

#include <array>
#include <cstdint>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include <amari/autodiff/autodiff.hpp>
#include <amari/nn/random.hpp>

namespace amari::nn {

/// How a parameter is initialized (see Model::initialize).
enum class Init {
  zeros,           ///< all zero (biases, batch/layer norm shifts)
  ones,            ///< all one (batch/layer norm scales)
  xavier_uniform,  ///< U(-a, a), a = sqrt(6 / (fan_in + fan_out)) (Glorot and Bengio 2010): tanh/sigmoid nets
  he_normal,       ///< N(0, 2 / fan_in) (He et al. 2015): ReLU nets
  /// U(-a, a), a = 1 / sqrt(fan_in): PyTorch's default for the weights *and* biases of nn.Linear and
  /// nn.Conv2d (kaiming_uniform_ with a = sqrt(5) gives exactly this bound); fan_in = in features, or
  /// C_in / groups * KH * KW for a convolution.
  torch_uniform,
  normal,          ///< N(0, 1): PyTorch's default for nn.Embedding
};

/// How a parameter's array relates to the array PyTorch's equivalent layer holds, for exchanging
/// weights (nn/torch_layout.hpp). amari keeps its own layouts because they are the fast ones here.
enum class TorchLayout {
  same,        ///< identical shape and order (biases, norms, embeddings)
  transposed,  ///< a Linear weight: amari (in, out), PyTorch (out, in)
  hwio,        ///< a Conv2d weight: amari (KH, KW, C_in/groups, C_out), PyTorch (C_out, C_in/groups, KH, KW)
};

/// Declaration of one parameter tensor. Constructing one with an initializer that is undefined
/// for its fans is a ValueError naming the parameter (see check_init()), so a layer cannot
/// declare a parameter that would initialize to NaN.
struct ParamSpec {
  std::string name;  ///< e.g. "0.weight"
  Shape shape;
  Init init = Init::zeros;
  Index fan_in = 0;
  Index fan_out = 0;
  TorchLayout torch_layout = TorchLayout::same;

  ParamSpec() = default;
  /// The declaration {name, shape, init, fan_in, fan_out, torch_layout}; checks the init.
  ParamSpec(std::string name_, Shape shape_, Init init_ = Init::zeros, Index fan_in_ = 0,
            Index fan_out_ = 0, TorchLayout torch_layout_ = TorchLayout::same)
      : name(std::move(name_)),
        shape(shape_),
        init(init_),
        fan_in(fan_in_),
        fan_out(fan_out_),
        torch_layout(torch_layout_) {
    check_init();
  }

  /// ValueError naming the parameter if its initializer is undefined for its fans: negative fans
  /// for any init; for a parameter with elements, xavier_uniform needs fan_in + fan_out > 0 and
  /// he_normal fan_in > 0 (both divide by them). torch_uniform with fan_in 0 is defined: the
  /// bound 1 / sqrt(fan_in) is taken as 0 and the parameter starts at 0.
  void check_init() const {
    const auto refuse = [&](const char* needs) {
      throw ValueError("parameter \"" + name + "\" of shape " + shape.str() + ": " + needs +
                       ", got fan_in = " + std::to_string(fan_in) + " and fan_out = " +
                       std::to_string(fan_out) + " (set them in its ParamSpec)");
    };
    if (fan_in < 0 || fan_out < 0) refuse("fans must be >= 0");
    if (shape.numel() == 0) return;  // nothing is drawn
    // Summed in double: two fans near Index's maximum must not overflow.
    if (init == Init::xavier_uniform && static_cast<double>(fan_in) + static_cast<double>(fan_out) <= 0)
      refuse("xavier_uniform divides by fan_in + fan_out, which must be > 0");
    if (init == Init::he_normal && fan_in <= 0) refuse("he_normal divides by fan_in, which must be > 0");
  }
};

/// Declaration of one tensor of non-parameter state: saved and loaded with the model, never
/// differentiated, changed only by a training pass (batch norm's running mean and variance).
struct StateSpec {
  std::string name;  ///< e.g. "1.running_mean" (PyTorch's buffer names)
  Shape shape;
  double initial = 0;  ///< every element starts at this value
};

/// What a forward pass is for. Training mode uses batch statistics and dropout; evaluation mode
/// uses the running statistics and no dropout (PyTorch's model.train() / model.eval()).
enum class Mode { train, eval };

/// The key of the dropout masks of one forward pass: the masks are a pure function of
/// (seed, step, the dropout layer's position in the pass, the example's index in the step's batch,
/// the element's index within the example), so a re-recorded forward pass at the same step (a
/// curvature product, a line search) sees the masks of the gradient, and a data-parallel rank
/// holding rows [o, o + n) of the batch sees the masks one process sees for those rows.
struct RandomKey {
  std::uint64_t seed = 0;
  std::uint64_t step = 0;
  /// The index in the step's batch of the pass's first example (row 0 of its input): 0 on one
  /// process, the shard's offset on a rank of a data-parallel run (nn::Shard::offset).
  std::uint64_t first_example = 0;
  /// The examples of the pass (rows of its input). A layer's output (N, ...) holds its values
  /// example by example, elements / examples of them per example (dropout_first_element).
  Index examples = 0;
};

/// What a layer with a weight matrix shows an observer of the forward pass: its input and its
/// output (before any activation), and where its parameters are. This is how curvature code that
/// needs per-layer quantities (K-FAC's Kronecker factors) finds Linear and Conv2d layers wherever
/// they sit: inside a Sequential, a Residual or a forward function (kfac-jax's layer tags and
/// curvlinops' hooks play the same role).
template <Value V>
struct LayerTap {
  enum class Kind { linear, conv2d };
  Kind kind = Kind::linear;
  const V* input = nullptr;        ///< (N, in) or (N, H, W, C_in)
  const V* output = nullptr;       ///< (N, out) or (N, OH, OW, C_out): x W (+ b), or the convolution
  std::size_t weight_index = 0;    ///< index of the weight in Model::layout(); the bias, if any, is next
  bool has_bias = false;
  std::array<Index, 2> kernel{1, 1};  ///< conv2d only
  Conv2dOptions conv;                  ///< conv2d only
};

/// Receives a LayerTap from every Linear and Conv2d layer of a forward pass, in execution order.
template <Value V>
class TapObserver {
 public:
  virtual ~TapObserver() = default;
  virtual void on_layer(const LayerTap<V>& tap) = 0;
};

/// Everything a module reads during one forward pass: its parameter values in declaration order,
/// its state tensors in declaration order, the mode, and whether it may update its state.
template <Value V>
class ForwardContext {
 public:
  using T = typename V::value_type;
  /// A context over parameter values only: evaluation mode, no state.
  explicit ForwardContext(std::span<const V> params) : params_(params) {}
  ForwardContext(std::span<const V> params, std::span<Tensor<T>> state, Mode mode, bool update_state,
                 RandomKey key, TapObserver<V>* observer = nullptr)
      : params_(params), state_(state), mode_(mode), update_state_(update_state), key_(key), observer_(observer) {}

  /// The next parameter value; ValueError if the module asks for more than were bound.
  const V& next() {
    if (pos_ >= params_.size()) {
      throw ValueError("module forward: asked for parameter " + std::to_string(pos_ + 1) + " but only " +
                       std::to_string(params_.size()) + " were bound");
    }
    return params_[pos_++];
  }
  /// The next state tensor (plain, mutable); ValueError if the module asks for more than were bound.
  Tensor<T>& next_state() {
    if (state_pos_ >= state_.size()) {
      throw ValueError("module forward: asked for state tensor " + std::to_string(state_pos_ + 1) + " but only " +
                       std::to_string(state_.size()) + " were bound");
    }
    return state_[state_pos_++];
  }
  /// The seed and stream of the next dropout mask of this pass (a new stream per call).
  std::pair<std::uint64_t, std::uint64_t> next_dropout_key() {
    return {mix_key(key_.seed, key_.step), dropout_calls_++};
  }
  /// The counter of element 0 of a dropout mask over `elements` values of this pass (dropout's
  /// `first`): first_example * (elements / examples). The values of a layer's output (N, ...) are
  /// stored example by example, so element j of example n is keyed by
  /// (first_example + n) * (elements / examples) + j, its index in the output of the pass over the
  /// step's whole batch: a data-parallel rank draws the masks one process draws on the union of the
  /// shards. 0 whenever first_example is 0 (one process), whatever the shape. ValueError if
  /// first_example > 0 and the values are not `examples` blocks of equal size (a tensor that is not
  /// per example has no place in the batch's masks).
  std::uint64_t dropout_first_element(Index elements) const {
    if (key_.first_example == 0 || elements == 0) return 0;
    if (key_.examples <= 0 || elements % key_.examples != 0) {
      throw ValueError("dropout: a tensor of " + std::to_string(elements) +
                       " values in a pass over " + std::to_string(key_.examples) +
                       " examples starting at example " + std::to_string(key_.first_example) +
                       " of the batch is not one block of values per example, so its mask "
                       "cannot be keyed by the example's index in the batch");
    }
    return key_.first_example * static_cast<std::uint64_t>(elements / key_.examples);
  }
  /// Reports a layer to the pass's observer, if any (Linear and Conv2d call this).
  void tap(const LayerTap<V>& t) {
    if (observer_) observer_->on_layer(t);
  }
  /// True when an observer receives the pass's LayerTaps (then every Linear and Conv2d output
  /// must exist as its own value: nn::Sequential does not fuse a Conv2d with what follows it).
  bool observed() const { return observer_ != nullptr; }
  Mode mode() const { return mode_; }
  bool training() const { return mode_ == Mode::train; }
  /// True in the one forward pass of a training step that may update running statistics.
  bool updates_state() const { return update_state_; }
  /// How many parameters / state tensors were consumed so far.
  std::size_t position() const { return pos_; }
  std::size_t state_position() const { return state_pos_; }

 private:
  std::span<const V> params_;
  std::span<Tensor<T>> state_;
  Mode mode_ = Mode::eval;
  bool update_state_ = false;
  RandomKey key_;
  TapObserver<V>* observer_ = nullptr;
  std::size_t pos_ = 0, state_pos_ = 0;
  std::uint64_t dropout_calls_ = 0;
};

/// A network component: declares parameters and maps an input to an output in any mode.
template <Real T>
class Module {
 public:
  virtual ~Module() = default;
  /// Human-readable description, e.g. "Linear(784 -> 256)".
  virtual std::string describe() const = 0;
  /// Appends this module's parameter declarations (children included, in order), names prefixed.
  virtual void declare(std::vector<ParamSpec>& out, const std::string& prefix) const = 0;
  /// Appends this module's state declarations (children included, in order); most modules have none.
  virtual void declare_state(std::vector<StateSpec>&, const std::string&) const {}
  /// Plain evaluation.
  virtual Tensor<T> forward(const Tensor<T>& x, ForwardContext<Tensor<T>>& p) const = 0;
  /// Forward mode: primal and tangent (the JVP).
  virtual Dual<T> forward(const Dual<T>& x, ForwardContext<Dual<T>>& p) const = 0;
  /// Recorded on the tape of the parameters / input (for VJPs).
  virtual Var<T> forward(const Var<T>& x, ForwardContext<Var<T>>& p) const = 0;
};

/// Implements the three forward overloads of Module from one template `apply` of Derived.
template <Real T, class Derived>
class Layer : public Module<T> {
 public:
  Tensor<T> forward(const Tensor<T>& x, ForwardContext<Tensor<T>>& p) const final { return self().apply(x, p); }
  Dual<T> forward(const Dual<T>& x, ForwardContext<Dual<T>>& p) const final { return self().apply(x, p); }
  Var<T> forward(const Var<T>& x, ForwardContext<Var<T>>& p) const final { return self().apply(x, p); }

 private:
  const Derived& self() const { return static_cast<const Derived&>(*this); }
};

}  // namespace amari::nn
