// Function transformations: write f once for any Value type, get its derivatives.
//
//   auto f = [](const auto& x) { return amari::sum(amari::tanh(x) * x); };
//   auto [y, jv]   = amari::jvp(f, x, v);    // forward mode, one pass with duals
//   auto [y2, ju]  = amari::vjp(f, x, u);    // reverse mode, record + one backward sweep
//   Tensor g       = amari::grad(f, x);      // gradient of a scalar f
//   Tensor hv      = amari::hvp(f, x, v);    // exact Hessian-vector product
//   auto lin       = amari::linearize(f, x); // record once, then lin.jvp(v) / lin.vjp(u) many times
//
// Multi-input forms take f(std::span<const V>) and spans of tensors.
#pragma once

#include <memory>
#include <span>
#include <utility>
#include <vector>

#include <amari/autodiff/ops.hpp>

namespace amari {

/// f(x) and the Jacobian-vector product J v, in one forward pass with dual numbers.
/// f: a generic callable V f(const V&). Cost: about 1 forward pass plus the tangent rules.
template <Real T, class F>
std::pair<Tensor<T>, Tensor<T>> jvp(F&& f, const Tensor<T>& x, const Tensor<T>& v) {
  Dual<T> y = f(Dual<T>(x, v));
  return {y.primal(), y.tangent_or_zeros()};
}

/// Multi-input JVP: f(std::span<const Dual<T>>) -> Dual<T>; one tangent per input.
template <Real T, class F>
std::pair<Tensor<T>, Tensor<T>> jvp(F&& f, std::span<const Tensor<T>> xs, std::span<const Tensor<T>> vs) {
  if (xs.size() != vs.size()) {
    throw ShapeError("jvp: " + std::to_string(xs.size()) + " inputs but " + std::to_string(vs.size()) + " tangents");
  }
  std::vector<Dual<T>> d;
  d.reserve(xs.size());
  for (std::size_t i = 0; i < xs.size(); ++i) d.emplace_back(xs[i], vs[i]);
  Dual<T> y = f(std::span<const Dual<T>>(d));
  return {y.primal(), y.tangent_or_zeros()};
}

/// f(x) and the vector-Jacobian product J^T u (u has the shape of f(x)), with a private tape.
template <Real T, class F>
std::pair<Tensor<T>, Tensor<T>> vjp(F&& f, const Tensor<T>& x, const Tensor<T>& u) {
  Tape<T> tape;
  const Var<T> xv = tape.variable(x);
  const Var<T> y = f(xv);
  auto g = tape.vjp(std::span<const Var<T>>(&y, 1), std::span<const Tensor<T>>(&u, 1),
                    std::span<const Var<T>>(&xv, 1));
  return {y.value(), std::move(g[0])};
}

/// Multi-input VJP: f(std::span<const Var<T>>) -> Var<T>; returns f(x) and one cotangent per input.
template <Real T, class F>
std::pair<Tensor<T>, std::vector<Tensor<T>>> vjp(F&& f, std::span<const Tensor<T>> xs, const Tensor<T>& u) {
  Tape<T> tape;
  std::vector<Var<T>> vars;
  vars.reserve(xs.size());
  for (const auto& x : xs) vars.push_back(tape.variable(x));
  const Var<T> y = f(std::span<const Var<T>>(vars));
  auto g = tape.vjp(std::span<const Var<T>>(&y, 1), std::span<const Tensor<T>>(&u, 1), vars);
  return {y.value(), std::move(g)};
}

/// Value and gradient of a scalar-valued f (any output with one element).
template <Real T, class F>
std::pair<T, Tensor<T>> value_and_grad(F&& f, const Tensor<T>& x) {
  Tape<T> tape;
  const Var<T> xv = tape.variable(x);
  const Var<T> y = f(xv);
  if (y.shape().numel() != 1) {
    throw ShapeError("grad: f must return a single element, got shape " + y.shape().str());
  }
  const Tensor<T> one = Tensor<T>::full(y.shape(), T(1));
  auto g = tape.vjp(std::span<const Var<T>>(&y, 1), std::span<const Tensor<T>>(&one, 1),
                    std::span<const Var<T>>(&xv, 1));
  return {y.value().item(), std::move(g[0])};
}

/// Gradient of a scalar-valued f.
template <Real T, class F>
Tensor<T> grad(F&& f, const Tensor<T>& x) {
  return value_and_grad(std::forward<F>(f), x).second;
}

/// Exact Hessian-vector product H v of a scalar-valued f at x (forward-over-reverse on one tape).
template <Real T, class F>
Tensor<T> hvp(F&& f, const Tensor<T>& x, const Tensor<T>& v) {
  Tape<T> tape;
  const Var<T> xv = tape.variable(x);
  const Var<T> y = f(xv);
  if (y.shape().numel() != 1) {
    throw ShapeError("hvp: f must return a single element, got shape " + y.shape().str());
  }
  const Tensor<T> one = Tensor<T>::full(y.shape(), T(1));
  auto h = tape.hvp(std::span<const Var<T>>(&y, 1), std::span<const Tensor<T>>(&one, 1),
                    std::span<const Var<T>>(&xv, 1), std::span<const Tensor<T>>(&v, 1));
  return std::move(h[0]);
}

/// f recorded once at x: its value, and JVPs / VJPs of the recorded linearization as many times as
/// wanted without re-running f (each is one sweep over the record; after the first call of each
/// kind, the *_into forms allocate nothing).
template <Real T>
class Linearization {
 public:
  /// Records f at the given inputs. f: V f(std::span<const Var<T>>).
  template <class F>
  Linearization(F&& f, std::span<const Tensor<T>> xs) : tape_(std::make_unique<Tape<T>>()) {
    inputs_.reserve(xs.size());
    for (const auto& x : xs) inputs_.push_back(tape_->variable(x));
    output_ = f(std::span<const Var<T>>(inputs_));
  }
  /// f(x).
  const Tensor<T>& value() const { return output_.value(); }
  /// J v (one tangent per input).
  Tensor<T> jvp(std::span<const Tensor<T>> tangents) {
    return std::move(tape_->jvp(inputs_, tangents, std::span<const Var<T>>(&output_, 1))[0]);
  }
  /// J^T u (one cotangent per input).
  std::vector<Tensor<T>> vjp(const Tensor<T>& u) {
    return tape_->vjp(std::span<const Var<T>>(&output_, 1), std::span<const Tensor<T>>(&u, 1), inputs_);
  }
  /// J v into `out` (shape of f(x)).
  void jvp_into(std::span<const Tensor<T>> tangents, Tensor<T>& out) {
    tape_->jvp_into(inputs_, tangents, std::span<const Var<T>>(&output_, 1), std::span<Tensor<T>>(&out, 1));
  }
  /// J^T u into `out` (one buffer per input).
  void vjp_into(const Tensor<T>& u, std::span<Tensor<T>> out) {
    tape_->vjp_into(std::span<const Var<T>>(&output_, 1), std::span<const Tensor<T>>(&u, 1), inputs_, out);
  }
  /// The tape holding the record (for hvp, memory accounting).
  Tape<T>& tape() { return *tape_; }
  const std::vector<Var<T>>& inputs() const { return inputs_; }
  const Var<T>& output() const { return output_; }

 private:
  std::unique_ptr<Tape<T>> tape_;
  std::vector<Var<T>> inputs_;
  Var<T> output_;
};

/// Records f(x) once for repeated JVPs and VJPs (see Linearization).
template <Real T, class F>
Linearization<T> linearize(F&& f, const Tensor<T>& x) {
  return Linearization<T>([&](std::span<const Var<T>> v) { return f(v[0]); }, std::span<const Tensor<T>>(&x, 1));
}

}  // namespace amari
