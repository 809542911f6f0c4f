// Forward mode: a dual tensor carries a primal value and a tangent. Every primitive applied to
// duals computes its primal and applies its JVP rule to the tangents (autodiff/ops/*.cpp), so a
// function written once for any value type gives f(x) and J v in one forward pass.
#pragma once

#include <utility>

#include <amari/autodiff/tensor.hpp>

namespace amari {

/// A tensor paired with a tangent (a directional derivative) of the same shape.
/// An undefined tangent means zero: the value is a constant for differentiation, and the JVP rules
/// skip it (e.g. the data input of a network when differentiating with respect to parameters).
template <Real T>
class Dual {
 public:
  using value_type = T;

  Dual() = default;
  /// A constant: primal value with a zero tangent.
  explicit Dual(Tensor<T> primal) : primal_(std::move(primal)) {}
  /// A value with a tangent; throws ShapeError if the shapes differ.
  Dual(Tensor<T> primal, Tensor<T> tangent) : primal_(std::move(primal)), tangent_(std::move(tangent)) {
    if (tangent_.defined() && !(tangent_.shape() == primal_.shape())) {
      throw ShapeError("Dual: tangent shape " + tangent_.shape().str() +
                       " differs from primal shape " + primal_.shape().str());
    }
  }

  /// The primal value.
  const Tensor<T>& primal() const { return primal_; }
  /// The tangent; undefined (defined() == false) when it is zero.
  const Tensor<T>& tangent() const { return tangent_; }
  /// True unless the tangent is the implicit zero.
  bool has_tangent() const { return tangent_.defined(); }
  /// The tangent, materialized as zeros when it is the implicit zero.
  Tensor<T> tangent_or_zeros() const { return has_tangent() ? tangent_ : Tensor<T>(primal_.shape()); }
  const Shape& shape() const { return primal_.shape(); }

 private:
  Tensor<T> primal_;
  Tensor<T> tangent_;
};

}  // namespace amari
