// Internal: what a primitive is, and how one definition serves all three modes.
//
// A primitive is a struct in its own file, autodiff/ops/<name>.cpp, with:
//   static constexpr const char* name;           // for errors and tape dumps
//   static constexpr int arity;                  // 1, 2 or 3 tensor inputs
//   static constexpr unsigned saves;             // residuals its rules read: save::x0|x1|x2|y
//   static constexpr bool linear;                // optional: true if linear in its inputs
//   Shape output_shape(const Shape&...) const;    // checks the input shapes (ShapeError)
//   primal(x..., y)                               // y = f(x)
//   jvp(s, dx..., dy)                             // dy = J dx            (tangent rule)
//   vjp(s, ybar, xbar...)                         // xbar += J^T ybar     (adjoint rule)
//     or vjp(s, ybar, xbar..., Overwrite ow)      // ... or xbar[i] = J_i^T ybar where ow[i]
//   vjp_tangent(s, dx..., dy, ybar, xbar_dot...)  // xbar_dot += d/de J(x + e dx)^T ybar
// where s holds the saved residuals (s.x[i], s.y). Unary rules get tensors by reference; rules of
// two or three inputs get pointers, null meaning "zero tangent" (jvp) or "cotangent not wanted" (vjp), so a
// constant input (data, labels) costs nothing. vjp_tangent is the second-order rule behind exact
// Hessian-vector products; linear primitives omit it. A VJP rule that takes the trailing Overwrite
// writes the adjoints the reverse sweep marks fresh (the first contribution to a buffer) instead of
// adding to them, which saves the sweep a zero fill and a read of every such buffer; rules without
// it get zero-filled buffers (NodeBase::vjp_fresh). Either way the values are the same.
//
// apply(op, inputs...) below then runs the primitive on plain tensors (primal only), on duals
// (primal + JVP rule: forward mode), or on tape variables (primal + one record on the tape; the
// tape's sweeps call the JVP, VJP and second-order rules later).
#pragma once

#include <array>
#include <concepts>
#include <cstdio>
#include <memory>
#include <string>
#include <type_traits>
#include <utility>

#include <amari/autodiff/dual.hpp>
#include <amari/autodiff/kernels/elementwise.hpp>
#include <amari/autodiff/kernels/math.hpp>
#include <amari/autodiff/kernels/reduce.hpp>
#include <amari/autodiff/ops.hpp>
#include <amari/autodiff/tape.hpp>
#include <amari/autodiff/tensor.hpp>

namespace amari {
namespace save {
/// Residual flags: which inputs/outputs the rules of a primitive read.
inline constexpr unsigned none = 0, x0 = 1, x1 = 2, x2 = 4, y = 8;
}  // namespace save

namespace detail {

/// Which adjoint buffers a VJP rule overwrites: ow[i] true means xbar[i] holds no value yet and
/// receives J_i^T ybar (its old contents are arbitrary and must not be read); false, add to it.
struct Overwrite {
  unsigned mask = 0;
  bool operator[](int i) const { return (mask >> i & 1u) != 0; }
};

/// Residuals available to the rules: inputs s.x[i] and output s.y (undefined if not saved).
template <Real T, int N>
struct Saved {
  std::array<Tensor<T>, N> x;
  Tensor<T> y;
};

struct VarAccess {
  template <Real T>
  static const std::shared_ptr<TapeState<T>>& tape(const Var<T>& v) { return v.tape_; }
  template <Real T>
  static std::int32_t slot(const Var<T>& v) { return v.slot_; }
  template <Real T>
  static std::uint64_t epoch(const Var<T>& v) { return v.epoch_; }
  template <Real T>
  static Var<T> make(Tensor<T> value, std::shared_ptr<TapeState<T>> tape, std::int32_t slot,
                     std::uint64_t epoch) {
    return Var<T>(std::move(value), std::move(tape), slot, epoch);
  }
};

template <class Op>
constexpr bool is_linear_op() {
  if constexpr (requires { Op::linear; }) {
    return Op::linear;
  } else {
    return false;
  }
}

// Calls the rules with the calling convention of the primitive's arity.
template <class Op, Real T>
void call_jvp(const Op& op, const Saved<T, Op::arity>& s, const Tensor<T>* const* dx, Tensor<T>& dy) {
  if constexpr (Op::arity == 1) {
    op.jvp(s, *dx[0], dy);
  } else if constexpr (Op::arity == 2) {
    op.jvp(s, dx[0], dx[1], dy);
  } else {
    op.jvp(s, dx[0], dx[1], dx[2], dy);
  }
}
// True when Op's VJP rule takes the trailing Overwrite (see the top of this file).
template <class Op, Real T>
constexpr bool vjp_overwrites() {
  const Saved<T, Op::arity>* s = nullptr;
  const Tensor<T>* ybar = nullptr;
  Tensor<T>* xbar = nullptr;
  if constexpr (Op::arity == 1) {
    return requires(const Op& op) { op.vjp(*s, *ybar, *xbar, Overwrite{}); };
  } else if constexpr (Op::arity == 2) {
    return requires(const Op& op) { op.vjp(*s, *ybar, xbar, xbar, Overwrite{}); };
  } else {
    return requires(const Op& op) { op.vjp(*s, *ybar, xbar, xbar, xbar, Overwrite{}); };
  }
}
// The VJP rule with the buffers in `ow` overwritten: only called when vjp_overwrites<Op, T>(), or
// with an empty mask.
template <class Op, Real T>
void call_vjp(const Op& op, const Saved<T, Op::arity>& s, const Tensor<T>& ybar, Tensor<T>* const* xbar,
              Overwrite ow = {}) {
  if constexpr (vjp_overwrites<Op, T>()) {
    if constexpr (Op::arity == 1) {
      if (xbar[0]) op.vjp(s, ybar, *xbar[0], ow);
    } else if constexpr (Op::arity == 2) {
      op.vjp(s, ybar, xbar[0], xbar[1], ow);
    } else {
      op.vjp(s, ybar, xbar[0], xbar[1], xbar[2], ow);
    }
  } else if constexpr (Op::arity == 1) {
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
  if constexpr (is_linear_op<Op>()) {
    (void)op, (void)s, (void)dx, (void)dy, (void)ybar, (void)xbar_dot;
  } else if constexpr (Op::arity == 1) {
    if (xbar_dot[0]) op.vjp_tangent(s, *dx[0], dy, ybar, *xbar_dot[0]);
  } else if constexpr (Op::arity == 2) {
    op.vjp_tangent(s, dx[0], dx[1], dy, ybar, xbar_dot[0], xbar_dot[1]);
  } else {
    op.vjp_tangent(s, dx[0], dx[1], dx[2], dy, ybar, xbar_dot[0], xbar_dot[1], xbar_dot[2]);
  }
}

// Attributes of a primitive for tape dumps: Op::describe() if the primitive defines one, else the
// scalar attributes it has under the usual names (axis, keep_dims, a, b, ta, tb, eps, p, start,
// stop, to), in that order. Only called when a tape is printed, never by the sweeps.
template <class Op>
std::string describe_op(const Op& op) {
  if constexpr (requires { std::string(op.describe()); }) {
    return op.describe();
  } else {
    std::string out;
    const auto put = [&out](const char* key, const auto& v) {
      using V = std::decay_t<decltype(v)>;
      std::string text;
      if constexpr (std::same_as<V, bool>) {
        text = v ? "1" : "0";
      } else if constexpr (std::is_enum_v<V> && requires { V::yes; }) {
        text = v == V::yes ? "T" : "N";  // a Trans flag, BLAS style
      } else if constexpr (std::same_as<V, Shape>) {
        text = v.str();
      } else if constexpr (std::floating_point<V>) {
        char buf[32];
        std::snprintf(buf, sizeof buf, "%g", static_cast<double>(v));
        text = buf;
      } else if constexpr (std::integral<V>) {
        text = std::to_string(v);
      } else {
        return;  // not a scalar attribute
      }
      if (!out.empty()) out += ' ';
      out += key;
      out += '=';
      out += text;
    };
    bool reduces_all = false;  // sum over all elements: its axis field is unused
    if constexpr (requires { bool(op.all); }) reduces_all = op.all;
    if constexpr (requires { op.axis; }) {
      if (!reduces_all) put("axis", op.axis);
    }
    if constexpr (requires { op.keep_dims; }) {
      if (!reduces_all) put("keep_dims", op.keep_dims);
    }
    if constexpr (requires { op.a; }) put("a", op.a);
    if constexpr (requires { op.b; }) put("b", op.b);
    if constexpr (requires { op.ta; }) put("ta", op.ta);
    if constexpr (requires { op.tb; }) put("tb", op.tb);
    if constexpr (requires { op.eps; }) put("eps", op.eps);
    if constexpr (requires { op.p; }) put("p", op.p);
    if constexpr (requires { op.start; }) put("start", op.start);
    if constexpr (requires { op.stop; }) put("stop", op.stop);
    if constexpr (requires { op.to; }) put("to", op.to);
    return out;
  }
}

/// The tape record of one application of primitive Op.
template <Real T, class Op>
class Node final : public NodeBase<T> {
 public:
  Node(const Op& op, Saved<T, Op::arity> s) : op_(op), s_(std::move(s)) {}
  const char* name() const override { return Op::name; }
  bool is_linear() const override { return is_linear_op<Op>(); }
  // An empty output has nothing to write (JVP), and J^T ybar and its tangent are 0 for an empty
  // ybar: the rules are skipped, so none loops over the other extents of an empty tensor.
  void jvp(const Tensor<T>* const* dx, Tensor<T>& dy) const override {
    if (dy.size() == 0) return;
    call_jvp(op_, s_, dx, dy);
  }
  void vjp(const Tensor<T>& ybar, Tensor<T>* const* xbar) const override {
    if (ybar.size() == 0) return;
    call_vjp(op_, s_, ybar, xbar);
  }
  void vjp_fresh(const Tensor<T>& ybar, Tensor<T>* const* xbar, unsigned fresh) const override {
    if (ybar.size() == 0 || !vjp_overwrites<Op, T>()) {
      NodeBase<T>::vjp_fresh(ybar, xbar, fresh);  // zero-fills, then (if ybar has elements) vjp
      return;
    }
    call_vjp(op_, s_, ybar, xbar, Overwrite{fresh});
  }
  void vjp_tangent(const Tensor<T>* const* dx, const Tensor<T>& dy, const Tensor<T>& ybar,
                   Tensor<T>* const* xbar_dot) const override {
    if (ybar.size() == 0) return;
    call_vjp_tangent(op_, s_, dx, dy, ybar, xbar_dot);
  }
  void collect_saved(std::vector<const Tensor<T>*>& out) const override {
    for (const auto& x : s_.x) out.push_back(&x);
    out.push_back(&s_.y);
  }
  unsigned saved_mask() const override { return Op::saves; }
  std::string describe() const override { return describe_op(op_); }

 private:
  Op op_;
  Saved<T, Op::arity> s_;
};

// ---- helpers the rules are written with ----------------------------------------------------------

/// out = f(in...) element by element; all tensors have out's shape. f maps SIMD batches.
template <Real T, class F, class... In>
void elementwise(Tensor<T>& out, const F& f, const In&... in) {
  kernels::map(out.size(), out.data(), f, in.data()...);
}
/// out += f(in...) element by element; all tensors have out's shape.
template <Real T, class F, class... In>
void accumulate(Tensor<T>& out, const F& f, const In&... in) {
  kernels::map_accumulate(out.size(), out.data(), f, in.data()...);
}
/// out = f(in...) if `overwrite`, else out += f(in...): a VJP rule's write to an adjoint that the
/// sweep may have marked fresh (Overwrite).
template <Real T, class F, class... In>
void assign_or_accumulate(bool overwrite, Tensor<T>& out, const F& f, const In&... in) {
  if (overwrite) {
    elementwise(out, f, in...);
  } else {
    accumulate(out, f, in...);
  }
}
/// xbar = or += ybar summed to xbar's shape (the VJP of broadcasting xbar to ybar's shape).
template <Real T>
void assign_or_accumulate_sum_to(bool overwrite, const Tensor<T>& ybar, Tensor<T>& xbar) {
  if (overwrite && xbar.shape() == ybar.shape()) {
    kernels::copy(ybar.size(), ybar.data(), xbar.data());
    return;
  }
  if (overwrite) xbar.fill(T(0));
  kernels::sum_to_accumulate(ybar.data(), ybar.shape(), xbar.data(), xbar.shape());
}
/// out = f(in...) with each input broadcast to out's shape.
template <Real T, class F, class... In>
void broadcast(Tensor<T>& out, const F& f, const In&... in) {
  kernels::broadcast_map<false>(out.shape(), out.data(), f,
                                std::pair<const T*, Shape>{in.data(), in.shape()}...);
}
/// xbar += unbroadcast(f(in...)): f is evaluated at the broadcast shape `full` and summed over the
/// axes along which xbar's shape was broadcast (the VJP of broadcasting). No temporary when xbar
/// already has the full shape.
template <Real T, class F, class... In>
void accumulate_unbroadcast(Tensor<T>& xbar, const Shape& full, const F& f, const In&... in) {
  if (xbar.shape() == full) {
    kernels::broadcast_map<true>(full, xbar.data(), f, std::pair<const T*, Shape>{in.data(), in.shape()}...);
    return;
  }
  Tensor<T> tmp = Tensor<T>::uninitialized(full);
  broadcast(tmp, f, in...);
  kernels::sum_to_accumulate(tmp.data(), full, xbar.data(), xbar.shape());
}

/// Base of the element-wise unary primitives: one input, output of the same shape.
struct UnaryElementwise {
  static constexpr int arity = 1;
  Shape output_shape(const Shape& x) const { return x; }
};

// ---- the three modes -------------------------------------------------------------------------

/// Every mode refuses an undefined (default-constructed) input before a kernel reads its null
/// storage; `primal_of` gives the tensor of a Tensor, a Dual or a Var.
template <class Op, class... X>
void require_defined(const X&... xs) {
  int i = 0;
  const auto check = [&i](const auto& x) {
    if (!primal_of(x).defined()) {
      throw ValueError(std::string(Op::name) + ": input " + std::to_string(i) +
                       " is an undefined tensor (default-constructed, no storage)");
    }
    ++i;
  };
  (check(xs), ...);
}

/// Plain evaluation: the primal rule only. In every mode a rule whose output has no elements is
/// not called: the output shape was checked, and there is nothing to write (a rule would only
/// loop over the other extents, which may be as large as Index allows).
template <class Op, Real T, class... X>
  requires(sizeof...(X) + 1 == Op::arity && (std::same_as<X, Tensor<T>> && ...))
Tensor<T> apply(const Op& op, const Tensor<T>& x0, const X&... xs) {
  require_defined<Op>(x0, xs...);
  Tensor<T> y = Tensor<T>::uninitialized(op.output_shape(x0.shape(), xs.shape()...));
  if (y.size() > 0) op.primal(x0, xs..., y);
  return y;
}

/// Forward mode: primal, then the JVP rule on the tangents (skipped if all tangents are zero).
template <class Op, Real T, class... X>
  requires(sizeof...(X) + 1 == Op::arity && (std::same_as<X, Dual<T>> && ...))
Dual<T> apply(const Op& op, const Dual<T>& x0, const X&... xs) {
  require_defined<Op>(x0, xs...);
  Tensor<T> y = Tensor<T>::uninitialized(op.output_shape(x0.shape(), xs.shape()...));
  if (y.size() > 0) op.primal(x0.primal(), xs.primal()..., y);
  if (!(x0.has_tangent() || ... || xs.has_tangent())) return Dual<T>(std::move(y));
  Saved<T, Op::arity> s{{x0.primal(), xs.primal()...}, y};
  const Tensor<T>* dx[Op::arity] = {x0.has_tangent() ? &x0.tangent() : nullptr,
                                    (xs.has_tangent() ? &xs.tangent() : nullptr)...};
  Tensor<T> dy = Tensor<T>::uninitialized(y.shape());
  if (dy.size() > 0) call_jvp(op, s, dx, dy);
  return Dual<T>(std::move(y), std::move(dy));
}

/// Reverse mode: primal, then (if any input depends on a variable) one record on the tape with
/// the residuals the primitive declared in `saves`.
template <class Op, Real T, class... X>
  requires(sizeof...(X) + 1 == Op::arity && (std::same_as<X, Var<T>> && ...))
Var<T> apply(const Op& op, const Var<T>& x0, const X&... xs) {
  require_defined<Op>(x0, xs...);
  const Var<T>* in[Op::arity] = {&x0, &xs...};
  std::shared_ptr<TapeState<T>> tape;
  for (int i = 0; i < Op::arity; ++i) {
    const auto& t = VarAccess::tape(*in[i]);
    if (!t) continue;
    if (!t->alive || VarAccess::epoch(*in[i]) != t->epoch) {
      throw TapeError(std::string(Op::name) + ": input " + std::to_string(i) +
                      (t->alive ? " was recorded before its tape was cleared"
                                : " was recorded on a tape that has been destroyed"));
    }
    if (tape && tape != t) {
      throw TapeError(std::string(Op::name) + ": inputs were recorded on two different tapes");
    }
    tape = t;
  }
  Tensor<T> y = Tensor<T>::uninitialized(op.output_shape(x0.shape(), xs.shape()...));
  if (y.size() > 0) op.primal(x0.value(), xs.value()..., y);
  if (!tape) return Var<T>(std::move(y));

  Saved<T, Op::arity> s;
  for (int i = 0; i < Op::arity; ++i) {
    if (Op::saves & (save::x0 << i)) s.x[static_cast<std::size_t>(i)] = in[i]->value();
  }
  if (Op::saves & save::y) s.y = y;
  auto node = std::make_unique<Node<T, Op>>(op, std::move(s));
  node->arity = Op::arity;
  for (int i = 0; i < Op::arity; ++i) node->inputs[static_cast<std::size_t>(i)] = VarAccess::slot(*in[i]);
  const auto slot = tape->add_slot(y.shape(), static_cast<std::int32_t>(tape->nodes.size()));
  node->output = slot;
  tape->nodes.push_back(std::move(node));
  const auto epoch = tape->epoch;
  return VarAccess::make(std::move(y), std::move(tape), slot, epoch);
}

}  // namespace detail
}  // namespace amari
