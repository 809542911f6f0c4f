// User-defined primitives: add an op to amari from your own code, also against an installed amari,
// with its four rules side by side, and get a function that runs on Tensor, Dual and Var alike.
//
// An element-wise op of one input is a struct of four scalar rules (docs/custom_primitives.md):
//
//   struct SinRules {
//     static constexpr const char* name = "sin";
//     template <class T> T primal(T x) const { return std::sin(x); }              // y = sin x
//     template <class T> T jvp(T x, T /*y*/, T dx) const { return std::cos(x) * dx; }
//     template <class T> T vjp(T x, T /*y*/, T ybar) const { return std::cos(x) * ybar; }
//     template <class T> T vjp_tangent(T x, T /*y*/, T dx, T /*dy*/, T ybar) const {
//       return -std::sin(x) * dx * ybar;  // d/de of cos(x + e dx) ybar
//     }
//   };
//   template <amari::Value V>
//   V sin(const V& x) { return amari::custom::elementwise(SinRules{}, x); }
//
// Any other op (one to three inputs, any shapes) is a struct of tensor rules that
// custom::apply(op, inputs...) runs; the contract is the `Primitive` concept below, with the
// calling convention of the built-in ops (autodiff/ops/primitive.hpp). amari::check_rules
// (autodiff/check_rules.hpp) tests the four rules against finite differences and against each
// other. The names follow JAX (primal, jvp) and amari's own ops (vjp, vjp_tangent); custom::apply
// plays the role of PyTorch's torch.autograd.Function.apply.
//
// What each mode runs, exactly as for a built-in op:
//   Tensor<T>  the primal rule;
//   Dual<T>    the primal rule, then the JVP rule on the tangents (skipped when all are zero);
//   Var<T>     the primal rule, then, if an input is on a tape, one record on that tape keeping the
//              inputs and the output for the rules; later the tape's sweeps call the JVP rule
//              (jvp), the VJP rule (vjp), or the JVP rule and then the VJP and second-order
//              rules (hvp).
#pragma once

#include <array>
#include <concepts>
#include <initializer_list>
#include <memory>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include <amari/autodiff/value.hpp>

namespace amari {

namespace detail {
/// True if some input is recorded on a tape. Throws TapeError naming `op` if an input was
/// recorded on a tape since cleared or destroyed, or if the inputs are on two different tapes.
template <Real T>
bool inputs_on_tape(const char* op, std::span<const Var<T>* const> inputs);
/// Appends `node` to the tape of the recorded inputs (inputs_on_tape must have returned true),
/// wires its input and output slots and returns the output variable with value y.
template <Real T>
Var<T> record_node(std::unique_ptr<NodeBase<T>> node, std::span<const Var<T>* const> inputs,
                   Tensor<T> y);
}  // namespace detail

namespace custom {

/// The point the rules of one application are evaluated at: the inputs x[0..N) and the output y.
/// A custom primitive keeps all of them (on a tape, until the tape is cleared).
template <Real T, int N>
struct Saved {
  std::array<Tensor<T>, N> x;
  Tensor<T> y;
};

/// A primitive defined by tensor rules. For arity 1:
///
///   static constexpr const char* name = "my_op";  // in error messages and tape dumps
///   static constexpr int arity = 1;               // 1, 2 or 3 tensor inputs
///   static constexpr bool linear = true;          // optional: the op is linear in its inputs,
///                                                 // so it has no second-order rule
///   Shape output_shape(const Shape& x) const;     // optional when the output and all inputs
///                                                 // share one shape; throws ShapeError otherwise
///   template <Real T> void primal(const Tensor<T>& x, Tensor<T>& y) const;          // y = f(x)
///   template <Real T> void jvp(const Saved<T, 1>& s, const Tensor<T>& dx,
///                              Tensor<T>& dy) const;                                // dy = J dx
///   template <Real T> void vjp(const Saved<T, 1>& s, const Tensor<T>& ybar,
///                              Tensor<T>& xbar) const;                        // xbar += J^T ybar
///   template <Real T> void vjp_tangent(const Saved<T, 1>& s, const Tensor<T>& dx,
///                                      const Tensor<T>& dy, const Tensor<T>& ybar,
///                                      Tensor<T>& xbar_dot) const;
///       // xbar_dot += d/de [J(x + e dx)^T ybar] at e = 0: the second-order rule behind exact
///       // Hessian-vector products (forward-over-reverse); dy = J dx is passed for convenience.
///
/// y and dy arrive with their shape but unset elements: primal and jvp must write every element.
/// vjp and vjp_tangent add to what xbar and xbar_dot hold (the tape sums the contributions of all
/// the records that read a value). With 2 or 3 inputs the rules take one argument per input, as
/// pointers: jvp(s, dx0, dx1, dy), vjp(s, ybar, xbar0, xbar1) and
/// vjp_tangent(s, dx0, dx1, dy, ybar, xbar_dot0, xbar_dot1), where dx_i is null when input i has
/// a zero tangent (a constant) and xbar_i, xbar_dot_i are null when input i's cotangent is not
/// wanted. jvp and vjp_tangent are never called with every dx_i null.
template <class Op>
concept Primitive = requires {
  { Op::name } -> std::convertible_to<const char*>;
  { Op::arity } -> std::convertible_to<int>;
} && Op::arity >= 1 && Op::arity <= detail::kMaxArity;

/// True if Op declares `linear = true`: its JVP does not depend on the point, so its
/// second-order rule is zero and need not be written.
template <class Op>
constexpr bool is_linear() {
  if constexpr (requires { Op::linear; }) {
    return Op::linear;
  } else {
    return false;
  }
}

namespace impl {

// The shape of the output: Op::output_shape if the op has one, else the one shape of all inputs.
template <class Op, class... S>
Shape output_shape_of(const Op& op, const Shape& s0, const S&... s) {
  if constexpr (requires { op.output_shape(s0, s...); }) {
    return op.output_shape(s0, s...);
  } else {
    if (!((s == s0) && ...)) {
      throw ShapeError(std::string(Op::name) + ": inputs of shapes " +
                       (s0.str() + ... + (", " + s.str())) +
                       " differ; an op whose inputs differ in shape must define output_shape");
    }
    return s0;
  }
}

template <class Op, Real T, class... X>
void require_defined(const Tensor<T>& x0, const X&... xs) {
  int i = 0;
  for (const Tensor<T>* x : {&x0, &xs...}) {
    if (!x->defined()) {
      throw ValueError(std::string(Op::name) + ": input " + std::to_string(i) +
                       " is an undefined tensor (default-constructed, no storage)");
    }
    ++i;
  }
}

// The rules, called with the convention of the op's arity (references for one input, pointers
// for more). dx, xbar and xbar_dot point to arity entries.
template <class Op, Real T>
void call_jvp(const Op& op, const Saved<T, Op::arity>& s, const Tensor<T>* const* dx,
              Tensor<T>& dy) {
  if constexpr (Op::arity == 1) {
    op.jvp(s, *dx[0], dy);
  } else if constexpr (Op::arity == 2) {
    op.jvp(s, dx[0], dx[1], dy);
  } else {
    op.jvp(s, dx[0], dx[1], dx[2], dy);
  }
}
template <class Op, Real T>
void call_vjp(const Op& op, const Saved<T, Op::arity>& s, const Tensor<T>& ybar,
              Tensor<T>* const* xbar) {
  if constexpr (Op::arity == 1) {
    if (xbar[0]) op.vjp(s, ybar, *xbar[0]);
  } else if constexpr (Op::arity == 2) {
    op.vjp(s, ybar, xbar[0], xbar[1]);
  } else {
    op.vjp(s, ybar, xbar[0], xbar[1], xbar[2]);
  }
}
template <class Op, Real T>
void call_vjp_tangent(const Op& op, const Saved<T, Op::arity>& s, const Tensor<T>* const* dx,
                      const Tensor<T>& dy, const Tensor<T>& ybar, Tensor<T>* const* xbar_dot) {
  if constexpr (is_linear<Op>()) {
    (void)op, (void)s, (void)dx, (void)dy, (void)ybar, (void)xbar_dot;  // never called by the tape
  } else if constexpr (Op::arity == 1) {
    if (xbar_dot[0]) op.vjp_tangent(s, *dx[0], dy, ybar, *xbar_dot[0]);
  } else if constexpr (Op::arity == 2) {
    op.vjp_tangent(s, dx[0], dx[1], dy, ybar, xbar_dot[0], xbar_dot[1]);
  } else {
    op.vjp_tangent(s, dx[0], dx[1], dx[2], dy, ybar, xbar_dot[0], xbar_dot[1], xbar_dot[2]);
  }
}

// The tape record of one application of Op: the op and its saved point, behind one virtual call
// per record and sweep.
template <Real T, class Op>
class Node final : public amari::detail::NodeBase<T> {
 public:
  Node(const Op& op, Saved<T, Op::arity> s) : op_(op), s_(std::move(s)) {}
  const char* name() const override { return Op::name; }
  bool is_linear() const override { return custom::is_linear<Op>(); }
  void jvp(const Tensor<T>* const* dx, Tensor<T>& dy) const override { call_jvp(op_, s_, dx, dy); }
  void vjp(const Tensor<T>& ybar, Tensor<T>* const* xbar) const override {
    call_vjp(op_, s_, ybar, xbar);
  }
  void vjp_tangent(const Tensor<T>* const* dx, const Tensor<T>& dy, const Tensor<T>& ybar,
                   Tensor<T>* const* xbar_dot) const override {
    call_vjp_tangent(op_, s_, dx, dy, ybar, xbar_dot);
  }
  void collect_saved(std::vector<const Tensor<T>*>& out) const override {
    for (const auto& x : s_.x) out.push_back(&x);
    out.push_back(&s_.y);
  }
  // Every input and the output (bit i: input i, bit 3: the output; autodiff/tape_print.hpp).
  unsigned saved_mask() const override { return ((1u << Op::arity) - 1u) | 8u; }

 private:
  Op op_;
  Saved<T, Op::arity> s_;
};

}  // namespace impl

/// Runs `op` on plain tensors: the primal rule only.
template <Primitive Op, Real T, class... X>
  requires(sizeof...(X) + 1 == Op::arity && (std::same_as<X, Tensor<T>> && ...))
Tensor<T> apply(const Op& op, const Tensor<T>& x0, const X&... xs) {
  impl::require_defined<Op>(x0, xs...);
  Tensor<T> y = Tensor<T>::uninitialized(impl::output_shape_of(op, x0.shape(), xs.shape()...));
  op.primal(x0, xs..., y);
  return y;
}

/// Runs `op` on duals (forward mode): the primal rule, then the JVP rule unless every input is a
/// constant (no tangent).
template <Primitive Op, Real T, class... X>
  requires(sizeof...(X) + 1 == Op::arity && (std::same_as<X, Dual<T>> && ...))
Dual<T> apply(const Op& op, const Dual<T>& x0, const X&... xs) {
  Tensor<T> y = apply(op, x0.primal(), xs.primal()...);
  if (!(x0.has_tangent() || ... || xs.has_tangent())) return Dual<T>(std::move(y));
  const Saved<T, Op::arity> s{{x0.primal(), xs.primal()...}, y};
  const Tensor<T>* dx[] = {x0.has_tangent() ? &x0.tangent() : nullptr,
                           (xs.has_tangent() ? &xs.tangent() : nullptr)...};
  Tensor<T> dy = Tensor<T>::uninitialized(y.shape());
  impl::call_jvp(op, s, dx, dy);
  return Dual<T>(std::move(y), std::move(dy));
}

/// Runs `op` on tape variables (reverse mode): the primal rule, then, if an input is recorded on
/// a tape, one record on that tape holding the inputs and the output. TapeError if the inputs'
/// tape was cleared or destroyed, or if they come from two tapes.
template <Primitive Op, Real T, class... X>
  requires(sizeof...(X) + 1 == Op::arity && (std::same_as<X, Var<T>> && ...))
Var<T> apply(const Op& op, const Var<T>& x0, const X&... xs) {
  const Var<T>* in[] = {&x0, &xs...};
  impl::require_defined<Op>(x0.value(), xs.value()...);
  const bool recorded = amari::detail::inputs_on_tape<T>(Op::name, in);
  Tensor<T> y = apply(op, x0.value(), xs.value()...);
  if (!recorded) return Var<T>(std::move(y));
  Saved<T, Op::arity> s{{x0.value(), xs.value()...}, y};
  return amari::detail::record_node<T>(std::make_unique<impl::Node<T, Op>>(op, std::move(s)), in,
                                       std::move(y));
}

/// The tensor rules of an element-wise op of one input, made from its scalar rules. Rules has
///   static constexpr const char* name;
///   T primal(T x)                                   y = f(x)
///   T jvp(T x, T y, T dx)                           dy = f'(x) dx
///   T vjp(T x, T y, T ybar)                         added to xbar:     f'(x) ybar
///   T vjp_tangent(T x, T y, T dx, T dy, T ybar)     added to xbar_dot: f''(x) dx ybar
/// for T = float and double (a template, or functions of double), and optionally
/// `static constexpr bool linear = true` instead of vjp_tangent. Each rule runs once per element
/// in a plain loop on one thread: cost O(size) per rule, as for a built-in op, without the
/// explicit SIMD of the built-in kernels.
template <class Rules>
struct Elementwise {
  static constexpr const char* name = Rules::name;
  static constexpr int arity = 1;
  static constexpr bool linear = is_linear<Rules>();
  Rules rules;

  template <Real T>
  void primal(const Tensor<T>& x, Tensor<T>& y) const {
    for (Index i = 0; i < y.size(); ++i) y[i] = rules.primal(x[i]);
  }
  template <Real T>
  void jvp(const Saved<T, 1>& s, const Tensor<T>& dx, Tensor<T>& dy) const {
    for (Index i = 0; i < dy.size(); ++i) dy[i] = rules.jvp(s.x[0][i], s.y[i], dx[i]);
  }
  template <Real T>
  void vjp(const Saved<T, 1>& s, const Tensor<T>& ybar, Tensor<T>& xbar) const {
    for (Index i = 0; i < xbar.size(); ++i) xbar[i] += rules.vjp(s.x[0][i], s.y[i], ybar[i]);
  }
  template <Real T>
  void vjp_tangent(const Saved<T, 1>& s, const Tensor<T>& dx, const Tensor<T>& dy,
                   const Tensor<T>& ybar, Tensor<T>& xbar_dot) const
    requires(!linear)
  {
    for (Index i = 0; i < xbar_dot.size(); ++i)
      xbar_dot[i] += rules.vjp_tangent(s.x[0][i], s.y[i], dx[i], dy[i], ybar[i]);
  }
};

/// Applies the element-wise op defined by the scalar `rules` to x (any shape, any value type):
/// the output has x's shape.
template <class Rules, Value V>
V elementwise(const Rules& rules, const V& x) {
  return apply(Elementwise<Rules>{rules}, x);
}

}  // namespace custom
}  // namespace amari
