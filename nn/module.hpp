// Modules: layers written once, run on plain tensors, duals and tape variables.
//
// A module declares its parameters (name, shape, initializer) and computes its output from its
// input and parameter *values* handed to it by a ParamCursor, in declaration order. It owns no
// parameter storage: a Model (nn/model.hpp) keeps all parameters in one flat vector and binds
// them as plain tensors (evaluation), duals (JVP in parameter space) or tape variables (VJP), so
// one definition of a layer serves every mode.
//
// Writing a layer: derive from Layer<T, YourLayer> and provide
//   void declare(std::vector<ParamSpec>& out, const std::string& prefix) const;
//   template <Value V> V apply(const V& x, ParamCursor<V>& p) const;   // uses p.next() in order
//   std::string describe() const;
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include <amari/autodiff/autodiff.hpp>

namespace amari::nn {

/// How a parameter is initialized (see Model::initialize).
enum class Init {
  zeros,           ///< all zero (biases)
  xavier_uniform,  ///< U(-a, a), a = sqrt(6 / (fan_in + fan_out)) (Glorot and Bengio 2010): tanh/sigmoid nets
  he_normal,       ///< N(0, 2 / fan_in) (He et al. 2015): ReLU nets
};

/// Declaration of one parameter tensor.
struct ParamSpec {
  std::string name;  ///< e.g. "0.weight"
  Shape shape;
  Init init = Init::zeros;
  Index fan_in = 0;
  Index fan_out = 0;
};

/// Hands a module its parameter values in declaration order.
template <Value V>
class ParamCursor {
 public:
  explicit ParamCursor(std::span<const V> values) : values_(values) {}
  /// The next parameter value; ValueError if the module asks for more than were bound.
  const V& next() {
    if (pos_ >= values_.size()) {
      throw ValueError("module forward: asked for parameter " + std::to_string(pos_ + 1) + " but only " +
                       std::to_string(values_.size()) + " were bound");
    }
    return values_[pos_++];
  }
  /// How many parameters were consumed so far.
  std::size_t position() const { return pos_; }

 private:
  std::span<const V> values_;
  std::size_t pos_ = 0;
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
  /// Plain evaluation.
  virtual Tensor<T> forward(const Tensor<T>& x, ParamCursor<Tensor<T>>& p) const = 0;
  /// Forward mode: primal and tangent (the JVP).
  virtual Dual<T> forward(const Dual<T>& x, ParamCursor<Dual<T>>& p) const = 0;
  /// Recorded on the tape of the parameters / input (for VJPs).
  virtual Var<T> forward(const Var<T>& x, ParamCursor<Var<T>>& p) const = 0;
};

/// Implements the three forward overloads of Module from one template `apply` of Derived.
template <Real T, class Derived>
class Layer : public Module<T> {
 public:
  Tensor<T> forward(const Tensor<T>& x, ParamCursor<Tensor<T>>& p) const final { return self().apply(x, p); }
  Dual<T> forward(const Dual<T>& x, ParamCursor<Dual<T>>& p) const final { return self().apply(x, p); }
  Var<T> forward(const Var<T>& x, ParamCursor<Var<T>>& p) const final { return self().apply(x, p); }

 private:
  const Derived& self() const { return static_cast<const Derived&>(*this); }
};

}  // namespace amari::nn
