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
};

/// A module with its parameters (one flat vector) and forward passes in the three modes.
template <Real T>
class Model {
 public:
  /// Allocates the parameters of `net` and initializes them from `seed` (see initialize()).
  explicit Model(std::shared_ptr<const Module<T>> net, std::uint64_t seed = 0);

  const Module<T>& module() const { return *net_; }
  /// P: the total number of scalar parameters.
  Index num_parameters() const { return flat_.size(); }
  /// Per-parameter names, shapes and offsets, in flat order.
  const std::vector<ParamInfo>& layout() const { return layout_; }
  /// The flat parameter vector (P). Writing to it changes the model.
  Tensor<T>& parameters() { return flat_; }
  const Tensor<T>& parameters() const { return flat_; }
  /// Per-parameter views into parameters(), in flat order.
  const std::vector<Tensor<T>>& parameter_views() const { return views_; }

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

  /// Plain forward pass: f(x; theta).
  Tensor<T> forward(const Tensor<T>& x) const;
  /// Forward mode in parameter space: f(x; theta) and J v for a flat tangent v (P), in one pass.
  /// The input x is a constant (no tangent).
  Dual<T> forward_jvp(const Tensor<T>& x, const Tensor<T>& tangent) const;
  /// Tape variables over the parameter views (shares storage; no copy), in flat order.
  std::vector<Var<T>> variables(Tape<T>& tape) const;
  /// Forward pass with explicitly bound parameter values (one per parameter, in flat order), for
  /// any value type. Throws ValueError if the count does not match.
  template <Value V>
  V forward(const V& x, std::span<const V> params) const {
    if (params.size() != views_.size()) {
      throw ValueError("Model::forward: " + std::to_string(params.size()) + " parameter values bound, the model has " +
                       std::to_string(views_.size()));
    }
    ParamCursor<V> cursor(params);
    V y = net_->forward(x, cursor);
    if (cursor.position() != params.size()) {
      throw ValueError("Model::forward: the module used " + std::to_string(cursor.position()) + " of " +
                       std::to_string(params.size()) + " parameters");
    }
    return y;
  }
  /// One line per parameter: name, shape, offset; then the total.
  std::string summary() const;

 private:
  std::shared_ptr<const Module<T>> net_;
  std::vector<ParamInfo> layout_;
  Tensor<T> flat_;
  std::vector<Tensor<T>> views_;
};

extern template class Model<float>;
extern template class Model<double>;

}  // namespace amari::nn
