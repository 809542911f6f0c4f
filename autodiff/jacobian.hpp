// Dense Jacobians and Hessians of small functions, and forward mode with many tangents at once,
// for f written once for any Value type (as in autodiff/transforms.hpp).
//
//   auto f = [](const auto& x) { return amari::tanh(amari::matmul(x, w)); };
//   Tensor J  = amari::jacfwd(f, x);        // (m, n): n tangent sweeps over one record
//   Tensor J2 = amari::jacrev(f, x);        // (m, n): m reverse sweeps over one record
//   Tensor H  = amari::hessian(g, x);       // (n, n), scalar g: n forward-over-reverse sweeps
//   Tensor JV = amari::jvp_multi(f, x, V);  // (m, K) = J V for K tangents V (n, K)
//
// Shapes: the input and the output are flattened in row-major order, n = x.size() and
// m = f(x).size(). Entry (i, j) of a Jacobian is d f(x)[i] / d x[j]; a scalar output (shape {})
// gives one row. Every transform records f once on a private tape and then sweeps that record,
// so the primal is paid once, whatever the number of sweeps (tape.hpp: jvp / vjp / hvp).
#pragma once

#include <string>
#include <utility>

#include <amari/autodiff/ops.hpp>

namespace amari {

namespace detail {

// f recorded once at x on its own tape: the input variable and the output.
template <Real T>
struct JacobianRecord {
  template <class F>
  JacobianRecord(F& f, const Tensor<T>& x0) : x(tape.variable(x0)), y(f(x)) {}
  Tape<T> tape;
  Var<T> x;
  Var<T> y;
};

template <Real T>
void check_jacobian_input(const char* op, const Tensor<T>& x) {
  if (!x.defined()) throw ValueError(std::string(op) + ": the input tensor is undefined");
}

}  // namespace detail

/// J V for K tangents at once: f recorded once at x, then one tangent sweep (Tape::jvp) per
/// column of V. V is (n, K) with n = x.size(): column k is a flattened tangent of x. Returns
/// (m, K), m = f(x).size(); column k equals amari::jvp(f, x, V[:, k]).second flattened.
/// Cost: one recording of f (the primal, paid once), then per tangent one forward sweep over the
/// record applying the JVP rules only (no primal recomputation). The tangent rules are most of a
/// dual pass's work (a matmul's tangent takes two of its three products), so a sweep costs about
/// 2/3 to 1 dual-number JVP: measured 0.8-1.0 per tangent for K = 4, 16 on the mnist MLP
/// (bench/jacobian_bench.cpp). It is not a batched dual: the K tangents are swept one by one.
/// Extra memory: a K x n copy of V (transposed so each tangent is contiguous).
template <Real T, class F>
Tensor<T> jvp_multi(F&& f, const Tensor<T>& x, const Tensor<T>& V) {
  detail::check_jacobian_input("jvp_multi", x);
  const Index n = x.size();
  if (!V.defined() || V.rank() != 2 || V.dim(0) != n) {
    throw ShapeError("jvp_multi: tangents must have shape (" + std::to_string(n) +
                     ", K) for an input of shape " + x.shape().str() + ", got " +
                     (V.defined() ? V.shape().str() : std::string("undefined")));
  }
  const Index K = V.dim(1);
  detail::JacobianRecord<T> rec(f, x);
  const Index m = rec.y.value().size();
  Tensor<T> out(Shape{m, K});
  // One transposition up front so that each tangent is contiguous (not K strided passes over V).
  Tensor<T> rows = Tensor<T>::uninitialized(Shape{K, n});
  for (Index j = 0; j < n; ++j)
    for (Index k = 0; k < K; ++k) rows[k * n + j] = V[j * K + k];
  Tensor<T> column = Tensor<T>::uninitialized(rec.y.shape());
  for (Index k = 0; k < K; ++k) {
    const Tensor<T> tangent = rows.view(k * n, x.shape());
    rec.tape.jvp_into(std::span<const Var<T>>(&rec.x, 1), std::span<const Tensor<T>>(&tangent, 1),
                      std::span<const Var<T>>(&rec.y, 1), std::span<Tensor<T>>(&column, 1));
    for (Index i = 0; i < m; ++i) out[i * K + k] = column[i];
  }
  return out;
}

/// The Jacobian (m, n) by forward mode: f recorded once, then n tangent sweeps over the record
/// with the unit tangents e_j (column j = J e_j). Best when n <= m. Cost: one recording plus n
/// tangent sweeps (see jvp_multi).
template <Real T, class F>
Tensor<T> jacfwd(F&& f, const Tensor<T>& x) {
  detail::check_jacobian_input("jacfwd", x);
  detail::JacobianRecord<T> rec(f, x);
  const Index n = x.size(), m = rec.y.value().size();
  Tensor<T> out(Shape{m, n});
  Tensor<T> tangent(x.shape());
  Tensor<T> column = Tensor<T>::uninitialized(rec.y.shape());
  for (Index j = 0; j < n; ++j) {
    tangent[j] = T(1);
    rec.tape.jvp_into(std::span<const Var<T>>(&rec.x, 1), std::span<const Tensor<T>>(&tangent, 1),
                      std::span<const Var<T>>(&rec.y, 1), std::span<Tensor<T>>(&column, 1));
    tangent[j] = T(0);
    for (Index i = 0; i < m; ++i) out[i * n + j] = column[i];
  }
  return out;
}

/// The Jacobian (m, n) by reverse mode: f recorded once, then m reverse sweeps over the record
/// with the unit cotangents e_i (row i = J^T e_i, the gradient of output i). Best when m <= n.
/// Cost: one recording plus m reverse sweeps.
template <Real T, class F>
Tensor<T> jacrev(F&& f, const Tensor<T>& x) {
  detail::check_jacobian_input("jacrev", x);
  detail::JacobianRecord<T> rec(f, x);
  const Index n = x.size(), m = rec.y.value().size();
  Tensor<T> out(Shape{m, n});
  Tensor<T> cotangent(rec.y.shape());
  for (Index i = 0; i < m; ++i) {
    Tensor<T> row = out.view(i * n, x.shape());  // the sweep writes row i in place
    cotangent[i] = T(1);
    rec.tape.vjp_into(std::span<const Var<T>>(&rec.y, 1), std::span<const Tensor<T>>(&cotangent, 1),
                      std::span<const Var<T>>(&rec.x, 1), std::span<Tensor<T>>(&row, 1));
    cotangent[i] = T(0);
  }
  return out;
}

/// The Hessian (n, n) of a scalar f (one output element; ShapeError naming "hessian" and the
/// output shape otherwise): f recorded once, then n forward-over-reverse sweeps (Tape::hvp) with
/// the unit tangents e_j, column j = H e_j. Symmetric up to rounding. Cost: one recording plus n
/// Hessian-vector products, each about twice a reverse sweep.
template <Real T, class F>
Tensor<T> hessian(F&& f, const Tensor<T>& x) {
  detail::check_jacobian_input("hessian", x);
  detail::JacobianRecord<T> rec(f, x);
  if (rec.y.value().size() != 1) {
    throw ShapeError("hessian: f must return a single element, got shape " + rec.y.shape().str());
  }
  const Index n = x.size();
  Tensor<T> out(Shape{n, n});
  const Tensor<T> one = Tensor<T>::full(rec.y.shape(), T(1));
  Tensor<T> tangent(x.shape());
  Tensor<T> column = Tensor<T>::uninitialized(x.shape());
  for (Index j = 0; j < n; ++j) {
    tangent[j] = T(1);
    rec.tape.hvp_into(std::span<const Var<T>>(&rec.y, 1), std::span<const Tensor<T>>(&one, 1),
                      std::span<const Var<T>>(&rec.x, 1), std::span<const Tensor<T>>(&tangent, 1),
                      std::span<Tensor<T>>(&column, 1));
    tangent[j] = T(0);
    for (Index i = 0; i < n; ++i) out[i * n + j] = column[i];
  }
  return out;
}

}  // namespace amari
