// Reverse mode: a tape (Wengert list) records the primitives applied to tape variables, in order.
//
// * Recording: every primitive applied to a Var computes its value and, if any input depends on a
//   variable, appends one record holding the input/output slots and the residuals its rules need
//   (autodiff/ops/*.cpp declare which). Constants (Vars made from plain tensors) are never recorded.
// * vjp(): one backward loop over the records, applying each VJP rule. Any output cotangent, not
//   only a scalar loss; cotangents for any requested inputs.
// * jvp(): one forward loop over the same records applying the JVP rules: the JVP of the recorded
//   (linearized) function, with no primal recomputation. Repeated products at a fixed point reuse
//   the record and the sweep buffers, so they allocate nothing after the first one.
// * hvp(): both loops with the tangents of the VJP rules: exact Hessian-vector products
//   (forward-over-reverse).
// * Seeing it: autodiff/tape_print.hpp prints the records as a table or a Graphviz graph, and a
//   SweepObserver set with set_observer() sees every tangent and adjoint a sweep computes.
//
// Ownership: a Var keeps its value alive; the tape keeps only residuals. A Var used after its tape
// was cleared or destroyed, or combined with a Var of another tape, raises TapeError.
// Threads: a tape and its Vars belong to one thread at a time; use one tape per thread.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include <amari/autodiff/detail/node.hpp>
#include <amari/autodiff/tensor.hpp>

namespace amari {

template <Real T>
class Tape;
template <Real T>
class Var;
template <Real T>
class SweepObserver;

namespace detail {

// Everything a tape owns. Vars hold a shared_ptr to it so that a Var outliving its tape detects
// this (alive == false) instead of touching freed memory.
template <Real T>
struct TapeState {
  std::uint64_t epoch = 0;  // bumped by clear(): Vars recorded before become invalid
  bool alive = true;
  std::vector<std::unique_ptr<NodeBase<T>>> nodes;  // recording order
  std::vector<Shape> slot_shapes;                   // one slot per variable or recorded output
  std::vector<std::int32_t> slot_node;              // producing record, -1 for variables
  // Labels of the named variables, (slot, name); only Tape::variable(value, name) adds one.
  std::vector<std::pair<std::int32_t, std::string>> names;
  SweepObserver<T>* observer = nullptr;  // kept by clear(); null: the sweeps report nothing

  // Sweep workspace, kept between sweeps so repeated products do not allocate.
  std::vector<Tensor<T>> tangent_buf, adjoint_buf, adjoint_tangent_buf;
  std::vector<Tensor<T>*> tangent, adjoint, adjoint_tangent;  // per sweep: null = zero
  std::vector<unsigned char> needed;
  std::vector<unsigned char> fresh;      // per reverse sweep: adjoint acquired, nothing written yet
  std::vector<Tensor<T>*> target;        // per sweep: caller buffer that receives a slot's result
  std::vector<std::int32_t> io_slots;    // per sweep: slots of the requested inputs/outputs
  std::vector<const Tensor<T>*> saved_scratch;  // *_into alias checks: one record's residuals

  std::int32_t add_slot(const Shape& shape, std::int32_t node);
  void reset();
};

// Grants the primitives' recording code access to Var internals.
struct VarAccess;
// Grants the tape printers (autodiff/tape_print.cpp) read access to the records.
struct TapeAccess;

}  // namespace detail

/// One record of a tape as a sweep observer sees it: its position, its primitive and its slots.
/// Slots number the tape's values: variables and record outputs, in creation order.
struct NodeInfo {
  std::size_t index = 0;  ///< position in recording order (0 = first recorded)
  const char* op = "";    ///< the primitive's name, e.g. "tanh", "matmul"
  int arity = 0;          ///< number of tensor inputs
  /// Input slots (first `arity` entries); -1 for a constant input (not on the tape).
  std::array<std::int32_t, detail::kMaxArity> inputs{-1, -1, -1};
  std::int32_t output = -1;  ///< slot of the record's output
};

namespace detail {
/// The observer's view of a record.
template <Real T>
NodeInfo node_info(const NodeBase<T>& node, std::size_t index) {
  NodeInfo info;
  info.index = index;
  info.op = node.name();
  info.arity = node.arity;
  info.inputs = node.inputs;
  info.output = node.output;
  return info;
}
}  // namespace detail

/// Which sweep an observer is watching.
enum class SweepKind {
  forward,       ///< jvp / jvp_into, and the first half of hvp: tangents in recording order
  reverse,       ///< vjp / vjp_into: adjoints in reverse recording order
  second_order,  ///< the second half of hvp: adjoints and adjoint tangents in reverse order
};

/// Sees every tangent and adjoint a tape sweep computes, one call per record (set it with
/// Tape::set_observer). For teaching, debugging and monitoring (e.g. where gradients vanish).
/// Only records whose rules run are reported: the forward sweep skips records none of whose inputs
/// depend on the seeded variables (and reports the others even if no requested output reads
/// them); the reverse sweeps skip records whose output gets no cotangent from the requested
/// outputs, and records none of whose inputs leads to a requested input. The tensors
/// passed are the sweep's own buffers: read them during the call, do not keep or modify them.
template <Real T>
class SweepObserver {
 public:
  virtual ~SweepObserver() = default;
  /// Called once at the start of each sweep, before any record is reported.
  virtual void on_begin(SweepKind) {}
  /// Forward sweep: called after the record's JVP rule, with the output tangent it wrote.
  virtual void on_forward(const NodeInfo&, const Tensor<T>& tangent) { (void)tangent; }
  /// Reverse sweeps: called after the record's VJP rule(s) ran, with the output adjoint it
  /// consumed. That adjoint is final: every record reading the output comes later in recording
  /// order and was processed before. `adjoint_tangent` is the tangent of that adjoint in the
  /// second-order sweep of hvp (null when nothing reached it, i.e. zero; always null in vjp).
  virtual void on_reverse(const NodeInfo&, const Tensor<T>& adjoint,
                          const Tensor<T>* adjoint_tangent) {
    (void)adjoint, (void)adjoint_tangent;
  }
  /// Called once at the end of each sweep that ran to completion.
  virtual void on_end(SweepKind) {}
};

/// A value recorded on a tape (or a constant). Cheap to copy: a handle to the value tensor and to
/// the tape. Primitives applied to Vars are recorded on the inputs' tape.
template <Real T>
class Var {
 public:
  using value_type = T;

  /// An empty Var (no value).
  Var() = default;
  /// A constant: not on any tape, never differentiated (e.g. the data input of a network).
  explicit Var(Tensor<T> constant) : value_(std::move(constant)) {}

  /// The value computed when the Var was recorded.
  const Tensor<T>& value() const { return value_; }
  const Shape& shape() const { return value_.shape(); }
  /// True if the Var depends on a variable of a tape (so it has a slot on that tape).
  bool is_active() const { return slot_ >= 0; }
  /// True if the Var is still usable: a constant, or recorded on a tape that is alive and was not
  /// cleared since.
  bool is_valid() const { return !tape_ || (tape_->alive && tape_->epoch == epoch_); }

 private:
  friend class Tape<T>;
  friend struct detail::VarAccess;
  Var(Tensor<T> value, std::shared_ptr<detail::TapeState<T>> tape, std::int32_t slot,
      std::uint64_t epoch)
      : value_(std::move(value)), tape_(std::move(tape)), slot_(slot), epoch_(epoch) {}

  Tensor<T> value_;
  std::shared_ptr<detail::TapeState<T>> tape_;
  std::int32_t slot_ = -1;
  std::uint64_t epoch_ = 0;
};

/// A Wengert list of recorded primitives with reverse (vjp), forward (jvp) and second-order (hvp)
/// sweeps. Not copyable; one tape per thread (Tape<T>::current() is a thread-local default).
template <Real T>
class Tape {
 public:
  Tape();
  ~Tape();
  Tape(const Tape&) = delete;
  Tape& operator=(const Tape&) = delete;

  /// The calling thread's default tape (one per thread and element type, created on first use).
  static Tape& current();

  /// A new variable (leaf) with the given value: the inputs derivatives are taken with respect to.
  /// The tensor is shared, not copied; do not modify it while the record is in use.
  Var<T> variable(Tensor<T> value);
  /// The same, with a label shown by the tape printers and graphs (autodiff/tape_print.hpp).
  Var<T> variable(Tensor<T> value, std::string name);

  /// Sets the observer that sees every tangent and adjoint of the following sweeps (null: none,
  /// the default). The tape does not own it; it must outlive its use. Kept by clear(). Cost when
  /// unset: one pointer test per record per sweep.
  void set_observer(SweepObserver<T>* observer) { state_->observer = observer; }
  /// The current observer, or null.
  SweepObserver<T>* observer() const { return state_->observer; }

  /// Forgets every record and releases their memory and the sweep buffers. Vars recorded before
  /// become invalid (using them raises TapeError). O(number of records).
  void clear();

  /// Number of recorded primitive applications.
  std::size_t size() const;
  /// Bytes held by residuals and sweep buffers (a tensor shared by several records counts once).
  std::size_t memory_bytes() const;

  /// Reverse mode. Returns, for each input, sum_k J_k^T cotangents[k], where J_k is the Jacobian of
  /// outputs[k] with respect to that input. Cotangent k must have the shape of output k. Inputs
  /// may be variables or recorded intermediates; constants get zeros. Cost: one backward loop
  /// over the records.
  std::vector<Tensor<T>> vjp(std::span<const Var<T>> outputs, std::span<const Tensor<T>> cotangents,
                             std::span<const Var<T>> inputs);
  /// Reverse mode into caller buffers (shapes of the inputs); no allocation after the first call.
  /// Aliasing (this holds for every *_into below): a result buffer may share elements with an
  /// argument the sweep reads (a tangent, a cotangent, or a value the tape saved, such as a
  /// variable's own value); the sweep then runs into temporaries and copies them out at the end,
  /// so the result is the same as without aliasing (at the cost of one allocation per call). Two
  /// result buffers that share elements must be the same tensor requested for the same input
  /// (both then receive the same result); otherwise ValueError naming the function and both
  /// buffers, before anything is written.
  void vjp_into(std::span<const Var<T>> outputs, std::span<const Tensor<T>> cotangents,
                std::span<const Var<T>> inputs, std::span<Tensor<T>> input_cotangents);

  /// Forward mode over the record (the linearization at the recorded point): for each output,
  /// sum_i J_i tangents[i] where inputs[i] must be variables of this tape. Cost: one forward loop
  /// over the records; no primal is recomputed.
  std::vector<Tensor<T>> jvp(std::span<const Var<T>> inputs, std::span<const Tensor<T>> tangents,
                             std::span<const Var<T>> outputs);
  /// Forward mode into caller buffers (shapes of the outputs); no allocation after the first call.
  void jvp_into(std::span<const Var<T>> inputs, std::span<const Tensor<T>> tangents,
                std::span<const Var<T>> outputs, std::span<Tensor<T>> output_tangents);

  /// Exact Hessian-vector product, forward-over-reverse: for each input x_i, the directional
  /// derivative along `tangents` (one per input, variables only) of sum_k J_k^T cotangents[k],
  /// i.e. sum_k d^2 <cotangents[k], outputs[k]> / dx_i dx . tangents. For a scalar loss with
  /// cotangent 1 this is H v. Cost: one forward plus one reverse loop, each about twice a plain one.
  std::vector<Tensor<T>> hvp(std::span<const Var<T>> outputs, std::span<const Tensor<T>> cotangents,
                             std::span<const Var<T>> inputs, std::span<const Tensor<T>> tangents);
  /// hvp into caller buffers; no allocation after the first call. A result buffer may be the
  /// tangent itself (v <- H v) or any other argument: see vjp_into for aliasing.
  void hvp_into(std::span<const Var<T>> outputs, std::span<const Tensor<T>> cotangents,
                std::span<const Var<T>> inputs, std::span<const Tensor<T>> tangents,
                std::span<Tensor<T>> input_results);

 private:
  std::int32_t slot_of(const Var<T>& v, const char* op, const char* role, std::size_t k) const;
  // check_alias: the result buffers come from the caller (the *_into functions) and may alias
  // what the sweep reads; false for buffers the tape allocated itself.
  void forward_sweep(const char* op, std::span<const Var<T>> inputs,
                     std::span<const Tensor<T>> tangents, std::span<const Var<T>> outputs,
                     std::span<Tensor<T>> output_tangents, bool check_alias);
  // `tangents`: the seeds of the preceding forward sweep (second order only), read by this one.
  void reverse_sweep(const char* op, std::span<const Var<T>> outputs,
                     std::span<const Tensor<T>> cotangents, std::span<const Var<T>> inputs,
                     std::span<const Tensor<T>> tangents, std::span<Tensor<T>> input_results,
                     bool second_order, bool check_alias);
  void hvp_impl(const char* op, std::span<const Var<T>> outputs,
                std::span<const Tensor<T>> cotangents, std::span<const Var<T>> inputs,
                std::span<const Tensor<T>> tangents, std::span<Tensor<T>> input_results,
                bool check_alias);
  // True if a result buffer shares elements with a tensor the sweep reads: one of `reads_a`,
  // `reads_b`, or a residual saved by a record. Throws ValueError naming `op` if two result
  // buffers share elements without being the same buffer for the same slot.
  bool results_alias(const char* op, std::span<Tensor<T>> results,
                     std::span<const std::int32_t> slots, std::span<const Tensor<T>> reads_a,
                     std::span<const Tensor<T>> reads_b);

  friend struct detail::TapeAccess;
  std::shared_ptr<detail::TapeState<T>> state_;
};

extern template class Tape<float>;
extern template class Tape<double>;

}  // namespace amari
