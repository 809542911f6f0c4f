#include <amari/autodiff/tape.hpp>

#include <algorithm>
#include <cstdint>
#include <iterator>
#include <string>
#include <unordered_set>

#include <amari/autodiff/kernels/elementwise.hpp>

namespace amari {
namespace detail {

template <Real T>
std::int32_t TapeState<T>::add_slot(const Shape& shape, std::int32_t node) {
  slot_shapes.push_back(shape);
  slot_node.push_back(node);
  return static_cast<std::int32_t>(slot_shapes.size() - 1);
}

template <Real T>
void TapeState<T>::reset() {
  nodes.clear();
  slot_shapes.clear();
  slot_node.clear();
  names.clear();
  tangent_buf.clear();
  adjoint_buf.clear();
  adjoint_tangent_buf.clear();
  tangent.clear();
  adjoint.clear();
  adjoint_tangent.clear();
  needed.clear();
  target.clear();
  io_slots.clear();
  saved_scratch.clear();
}

}  // namespace detail

namespace {

// Returns the workspace tensor for a slot, allocating it on first use in this epoch. The sweeps
// size `buf` to the slot count before taking any pointer into it: growing the vector here would
// move the tensors that earlier pointers of the same sweep refer to.
template <Real T>
Tensor<T>& workspace(std::vector<Tensor<T>>& buf, std::size_t slot, const Shape& shape) {
  if (!buf[slot].defined() || !(buf[slot].shape() == shape)) buf[slot] = Tensor<T>::uninitialized(shape);
  return buf[slot];
}

template <Real T>
void add_into(Tensor<T>& dst, const Tensor<T>& src) {
  kernels::map_accumulate(dst.size(), dst.data(), []<class B>(B s) { return s; }, src.data());
}

std::string ordinal(const char* role, std::size_t k) { return std::string(role) + " " + std::to_string(k); }

}  // namespace

template <Real T>
Tape<T>::Tape() : state_(std::make_shared<detail::TapeState<T>>()) {}

template <Real T>
Tape<T>::~Tape() {
  state_->alive = false;
  state_->reset();
}

template <Real T>
Tape<T>& Tape<T>::current() {
  static thread_local Tape<T> tape;
  return tape;
}

template <Real T>
Var<T> Tape<T>::variable(Tensor<T> value) {
  if (!value.defined()) throw ValueError("Tape::variable: the value tensor is undefined");
  const std::int32_t slot = state_->add_slot(value.shape(), -1);
  return Var<T>(std::move(value), state_, slot, state_->epoch);
}

template <Real T>
Var<T> Tape<T>::variable(Tensor<T> value, std::string name) {
  Var<T> v = variable(std::move(value));
  state_->names.emplace_back(v.slot_, std::move(name));
  return v;
}

template <Real T>
void Tape<T>::clear() {
  ++state_->epoch;
  state_->reset();
}

template <Real T>
std::size_t Tape<T>::size() const {
  return state_->nodes.size();
}

template <Real T>
std::size_t Tape<T>::memory_bytes() const {
  std::vector<const Tensor<T>*> saved;
  for (const auto& n : state_->nodes) n->collect_saved(saved);
  for (const auto* bufs : {&state_->tangent_buf, &state_->adjoint_buf, &state_->adjoint_tangent_buf})
    for (const auto& t : *bufs) saved.push_back(&t);
  std::unordered_set<const T*> seen;
  std::size_t bytes = 0;
  for (const Tensor<T>* t : saved) {
    if (t->defined() && seen.insert(t->data()).second) bytes += static_cast<std::size_t>(t->size()) * sizeof(T);
  }
  return bytes;
}

template <Real T>
std::int32_t Tape<T>::slot_of(const Var<T>& v, const char* op, const char* role, std::size_t k) const {
  if (!v.tape_) return -1;
  if (v.tape_ != state_) {
    throw TapeError(std::string(op) + ": " + ordinal(role, k) + " was recorded on another tape");
  }
  if (v.epoch_ != state_->epoch) {
    throw TapeError(std::string(op) + ": " + ordinal(role, k) +
                    " was recorded before the tape was cleared");
  }
  return v.slot_;
}

template <Real T>
bool Tape<T>::results_alias(const char* op, std::span<Tensor<T>> results,
                            std::span<const std::int32_t> slots, std::span<const Tensor<T>> reads_a,
                            std::span<const Tensor<T>> reads_b) {
  // Results among themselves: the same buffer twice for one slot receives one result twice;
  // anything else would receive two different results in the same elements.
  for (std::size_t i = 0; i < results.size(); ++i) {
    for (std::size_t j = i + 1; j < results.size(); ++j) {
      if (!results[i].overlaps(results[j])) continue;
      const bool same = results[i].data() == results[j].data() &&
                        results[i].size() == results[j].size() && slots[i] == slots[j];
      if (!same) {
        throw ValueError(std::string(op) + ": result buffers " + std::to_string(i) + " and " +
                         std::to_string(j) +
                         " share elements but receive different results; nothing was written");
      }
    }
  }
  // The address range covered by the results, so the residual scan below costs two comparisons
  // per residual that lies elsewhere.
  std::uintptr_t lo = UINTPTR_MAX, hi = 0;
  for (const Tensor<T>& r : results) {
    if (r.size() == 0) continue;
    const auto b = reinterpret_cast<std::uintptr_t>(r.data());
    lo = std::min(lo, b);
    hi = std::max(hi, b + static_cast<std::uintptr_t>(r.size()) * sizeof(T));
  }
  if (lo >= hi) return false;  // no result has elements
  const auto hits = [&](const Tensor<T>& t) {
    if (t.size() == 0) return false;
    const auto b = reinterpret_cast<std::uintptr_t>(t.data());
    if (b >= hi || b + static_cast<std::uintptr_t>(t.size()) * sizeof(T) <= lo) return false;
    for (const Tensor<T>& r : results)
      if (r.overlaps(t)) return true;
    return false;
  };
  for (const Tensor<T>& t : reads_a)
    if (hits(t)) return true;
  for (const Tensor<T>& t : reads_b)
    if (hits(t)) return true;
  auto& saved = state_->saved_scratch;
  for (const auto& node : state_->nodes) {
    saved.clear();
    node->collect_saved(saved);
    for (const Tensor<T>* t : saved)
      if (hits(*t)) return true;
  }
  return false;
}

template <Real T>
void Tape<T>::forward_sweep(const char* op, std::span<const Var<T>> inputs,
                            std::span<const Tensor<T>> tangents, std::span<const Var<T>> outputs,
                            std::span<Tensor<T>> output_tangents, bool check_alias) {
  auto& st = *state_;
  if (inputs.size() != tangents.size()) {
    throw ShapeError(std::string(op) + ": " + std::to_string(inputs.size()) + " inputs but " +
                     std::to_string(tangents.size()) + " tangents");
  }
  const std::size_t nslots = st.slot_shapes.size();
  st.tangent.assign(nslots, nullptr);
  if (st.tangent_buf.size() < nslots) st.tangent_buf.resize(nslots);
  for (std::size_t i = 0; i < inputs.size(); ++i) {
    const std::int32_t s = slot_of(inputs[i], op, "input", i);
    if (s < 0 || st.slot_node[static_cast<std::size_t>(s)] >= 0) {
      throw TapeError(std::string(op) + ": " + ordinal("input", i) +
                      " is not a variable of this tape (tangents can only be seeded at variables)");
    }
    if (!tangents[i].defined()) {
      throw ValueError(std::string(op) + ": tangent " + std::to_string(i) + " is an undefined tensor");
    }
    if (!(tangents[i].shape() == inputs[i].shape())) {
      throw ShapeError(std::string(op) + ": tangent " + std::to_string(i) + " has shape " +
                       tangents[i].shape().str() + ", its input has shape " + inputs[i].shape().str());
    }
    // Seeds are only read by the rules; no record writes to a variable's slot.
    st.tangent[static_cast<std::size_t>(s)] = const_cast<Tensor<T>*>(&tangents[i]);
  }
  // Outputs computed by records are written straight into the caller's buffers.
  std::vector<std::int32_t>& out_slots = st.io_slots;
  out_slots.resize(outputs.size());
  for (std::size_t k = 0; k < outputs.size(); ++k) {
    out_slots[k] = slot_of(outputs[k], op, "output", k);
    if (!output_tangents.empty() && !output_tangents[k].defined()) {
      throw ValueError(std::string(op) + ": result buffer " + std::to_string(k) + " is an undefined tensor");
    }
    if (!output_tangents.empty() && !(output_tangents[k].shape() == outputs[k].shape())) {
      throw ShapeError(std::string(op) + ": result buffer " + std::to_string(k) + " has shape " +
                       output_tangents[k].shape().str() + ", output has shape " + outputs[k].shape().str());
    }
  }
  if (check_alias && !output_tangents.empty() &&
      results_alias(op, output_tangents, out_slots, tangents, {})) {
    // A result buffer is also read by the sweep (e.g. the output tangent is a seed): sweep into
    // fresh buffers, then copy out, when nothing is read any more.
    std::vector<Tensor<T>> fresh;
    fresh.reserve(output_tangents.size());
    for (const Tensor<T>& t : output_tangents) fresh.push_back(Tensor<T>::uninitialized(t.shape()));
    forward_sweep(op, inputs, tangents, outputs, fresh, false);
    for (std::size_t k = 0; k < fresh.size(); ++k) output_tangents[k].copy_from(fresh[k]);
    return;
  }
  std::vector<Tensor<T>*>& target = st.target;
  target.assign(nslots, nullptr);
  if (!output_tangents.empty()) {
    for (std::size_t k = 0; k < outputs.size(); ++k) {
      const std::int32_t s = out_slots[k];
      if (s >= 0 && st.slot_node[static_cast<std::size_t>(s)] >= 0 && !target[static_cast<std::size_t>(s)])
        target[static_cast<std::size_t>(s)] = &output_tangents[k];
    }
  }
  SweepObserver<T>* const obs = st.observer;
  if (obs) obs->on_begin(SweepKind::forward);
  const Tensor<T>* dx[detail::kMaxArity];
  for (const auto& node : st.nodes) {
    bool any = false;
    for (int i = 0; i < detail::kMaxArity; ++i) {
      const std::int32_t in = i < node->arity ? node->inputs[static_cast<std::size_t>(i)] : -1;
      dx[i] = in >= 0 ? st.tangent[static_cast<std::size_t>(in)] : nullptr;
      any = any || dx[i];
    }
    if (!any) continue;
    const auto out = static_cast<std::size_t>(node->output);
    Tensor<T>* dy = target[out] ? target[out] : &workspace(st.tangent_buf, out, st.slot_shapes[out]);
    node->jvp(dx, *dy);
    st.tangent[out] = dy;
    if (obs) {
      const auto index = static_cast<std::size_t>(&node - st.nodes.data());
      obs->on_forward(detail::node_info(*node, index), *dy);
    }
  }
  if (obs) obs->on_end(SweepKind::forward);
  if (output_tangents.empty()) return;
  for (std::size_t k = 0; k < outputs.size(); ++k) {
    const std::int32_t s = out_slots[k];
    Tensor<T>* t = s >= 0 ? st.tangent[static_cast<std::size_t>(s)] : nullptr;
    if (!t) {
      output_tangents[k].fill(T(0));  // the output does not depend on the seeded inputs
    } else if (t != &output_tangents[k]) {
      output_tangents[k].copy_from(*t);
    }
  }
}

template <Real T>
void Tape<T>::reverse_sweep(const char* op, std::span<const Var<T>> outputs,
                            std::span<const Tensor<T>> cotangents, std::span<const Var<T>> inputs,
                            std::span<const Tensor<T>> tangents, std::span<Tensor<T>> results,
                            bool second_order, bool check_alias) {
  auto& st = *state_;
  if (outputs.size() != cotangents.size()) {
    throw ShapeError(std::string(op) + ": " + std::to_string(outputs.size()) + " outputs but " +
                     std::to_string(cotangents.size()) + " cotangents");
  }
  // Every argument is checked before the first write, so a refused call changes no buffer.
  for (std::size_t k = 0; k < outputs.size(); ++k) {
    (void)slot_of(outputs[k], op, "output", k);
    if (!cotangents[k].defined()) {
      throw ValueError(std::string(op) + ": cotangent " + std::to_string(k) + " is an undefined tensor");
    }
    if (!(cotangents[k].shape() == outputs[k].shape())) {
      throw ShapeError(std::string(op) + ": cotangent " + std::to_string(k) + " has shape " +
                       cotangents[k].shape().str() + ", output has shape " + outputs[k].shape().str());
    }
  }
  const std::size_t nslots = st.slot_shapes.size();
  std::vector<std::int32_t>& in_slots = st.io_slots;
  in_slots.resize(inputs.size());
  st.needed.assign(nslots, 0);
  for (std::size_t i = 0; i < inputs.size(); ++i) {
    in_slots[i] = slot_of(inputs[i], op, "input", i);
    if (!results[i].defined()) {
      throw ValueError(std::string(op) + ": result buffer " + std::to_string(i) + " is an undefined tensor");
    }
    if (!(results[i].shape() == inputs[i].shape())) {
      throw ShapeError(std::string(op) + ": result buffer " + std::to_string(i) + " has shape " +
                       results[i].shape().str() + ", input has shape " + inputs[i].shape().str());
    }
    if (in_slots[i] >= 0) st.needed[static_cast<std::size_t>(in_slots[i])] = 1;
  }
  if (check_alias && results_alias(op, results, in_slots, cotangents, tangents)) {
    // A result buffer is also read by the sweep (a cotangent, a tangent, a saved value): sweep
    // into fresh buffers, then copy out, when nothing is read any more.
    std::vector<Tensor<T>> fresh;
    fresh.reserve(results.size());
    for (const Tensor<T>& r : results) fresh.push_back(Tensor<T>::uninitialized(r.shape()));
    reverse_sweep(op, outputs, cotangents, inputs, tangents, fresh, second_order, false);
    for (std::size_t i = 0; i < fresh.size(); ++i) results[i].copy_from(fresh[i]);
    return;
  }
  // A slot needs an adjoint only if it depends on a requested input: one forward pass of flags.
  for (const auto& node : st.nodes) {
    for (int i = 0; i < node->arity; ++i) {
      const std::int32_t in = node->inputs[static_cast<std::size_t>(i)];
      if (in >= 0 && st.needed[static_cast<std::size_t>(in)]) st.needed[static_cast<std::size_t>(node->output)] = 1;
    }
  }
  // Requested inputs accumulate straight into the caller's buffers (adjoints for first-order
  // sweeps, adjoint tangents for second-order ones).
  std::vector<Tensor<T>*>& target = st.target;
  target.assign(nslots, nullptr);
  for (std::size_t i = 0; i < inputs.size(); ++i) {
    if (in_slots[i] >= 0 && !target[static_cast<std::size_t>(in_slots[i])])
      target[static_cast<std::size_t>(in_slots[i])] = &results[i];
  }
  st.adjoint.assign(nslots, nullptr);
  if (st.adjoint_buf.size() < nslots) st.adjoint_buf.resize(nslots);
  if (second_order) {
    st.adjoint_tangent.assign(nslots, nullptr);
    if (st.adjoint_tangent_buf.size() < nslots) st.adjoint_tangent_buf.resize(nslots);
  }
  // First touch of a slot. In the first-order sweep the buffer is left as it is and marked fresh:
  // the first contribution overwrites it (NodeBase::vjp_fresh), later ones accumulate, so no
  // buffer is zero-filled and then read back. The second-order sweep zero-fills (its two rules
  // both accumulate into the adjoint tangents).
  std::vector<unsigned char>& fresh = st.fresh;
  fresh.assign(nslots, 0);
  auto acquire = [&](std::vector<Tensor<T>*>& ptrs, std::vector<Tensor<T>>& bufs, std::size_t s,
                     bool is_result) -> Tensor<T>* {
    if (!ptrs[s]) {
      ptrs[s] = is_result && target[s] ? target[s] : &workspace(bufs, s, st.slot_shapes[s]);
      if (second_order) {
        ptrs[s]->fill(T(0));
      } else {
        fresh[s] = 1;
      }
    }
    return ptrs[s];
  };
  auto adjoint = [&](std::size_t s) { return acquire(st.adjoint, st.adjoint_buf, s, !second_order); };
  auto adjoint_tangent = [&](std::size_t s) {
    return acquire(st.adjoint_tangent, st.adjoint_tangent_buf, s, true);
  };

  for (std::size_t k = 0; k < outputs.size(); ++k) {
    const std::int32_t s = slot_of(outputs[k], op, "output", k);
    if (s < 0 || !st.needed[static_cast<std::size_t>(s)]) continue;
    const auto slot = static_cast<std::size_t>(s);
    Tensor<T>& a = *adjoint(slot);
    if (fresh[slot]) {
      a.copy_from(cotangents[k]);
      fresh[slot] = 0;
    } else {
      add_into(a, cotangents[k]);
    }
  }

  const SweepKind kind = second_order ? SweepKind::second_order : SweepKind::reverse;
  SweepObserver<T>* const obs = st.observer;
  if (obs) obs->on_begin(kind);
  Tensor<T>* xbar[detail::kMaxArity];
  Tensor<T>* xbar_dot[detail::kMaxArity];
  const Tensor<T>* dx[detail::kMaxArity];
  for (auto it = st.nodes.rbegin(); it != st.nodes.rend(); ++it) {
    const auto& node = *it;
    const auto out = static_cast<std::size_t>(node->output);
    if (!st.adjoint[out]) continue;
    bool any = false, any_dx = false;
    for (int i = 0; i < detail::kMaxArity; ++i) {
      const std::int32_t in = i < node->arity ? node->inputs[static_cast<std::size_t>(i)] : -1;
      const bool want = in >= 0 && st.needed[static_cast<std::size_t>(in)];
      xbar[i] = want ? adjoint(static_cast<std::size_t>(in)) : nullptr;
      any = any || want;
      if (second_order) {
        xbar_dot[i] = want ? adjoint_tangent(static_cast<std::size_t>(in)) : nullptr;
        dx[i] = in >= 0 ? st.tangent[static_cast<std::size_t>(in)] : nullptr;
        any_dx = any_dx || dx[i];
      }
    }
    if (!any) continue;
    if (second_order) {
      node->vjp(*st.adjoint[out], xbar);
    } else {
      // The rule overwrites the fresh buffers it is the first to reach. An input slot read twice
      // by this record (x * x) gets two contributions from one rule: zero-filled instead.
      unsigned first = 0;
      for (int i = 0; i < node->arity; ++i) {
        const std::int32_t in = node->inputs[static_cast<std::size_t>(i)];
        if (!xbar[i] || !fresh[static_cast<std::size_t>(in)]) continue;
        bool repeated = false;
        for (int j = 0; j < node->arity; ++j) repeated = repeated || (j != i && xbar[j] == xbar[i]);
        if (repeated) {
          xbar[i]->fill(T(0));
        } else {
          first |= 1u << i;
        }
        fresh[static_cast<std::size_t>(in)] = 0;
      }
      if (first) {
        node->vjp_fresh(*st.adjoint[out], xbar, first);
      } else {
        node->vjp(*st.adjoint[out], xbar);
      }
    }
    if (second_order) {
      // Forward-over-reverse: the adjoint tangent flows back through the same (linear) VJP rule,
      // and the rule's own dependence on the inputs adds the curvature term.
      if (st.adjoint_tangent[out]) node->vjp(*st.adjoint_tangent[out], xbar_dot);
      if (any_dx && !node->is_linear())
        node->vjp_tangent(dx, *st.tangent[out], *st.adjoint[out], xbar_dot);
    }
    if (obs) {
      const auto index = static_cast<std::size_t>(std::distance(st.nodes.begin(), it.base()) - 1);
      obs->on_reverse(detail::node_info(*node, index), *st.adjoint[out],
                      second_order ? st.adjoint_tangent[out] : nullptr);
    }
  }
  if (obs) obs->on_end(kind);

  std::vector<Tensor<T>*>& final_ptrs = second_order ? st.adjoint_tangent : st.adjoint;
  for (std::size_t i = 0; i < inputs.size(); ++i) {
    const std::int32_t s = in_slots[i];
    Tensor<T>* r = s >= 0 ? final_ptrs[static_cast<std::size_t>(s)] : nullptr;
    if (!r) {
      results[i].fill(T(0));  // constant, or no path from the outputs
    } else if (r != &results[i]) {
      results[i].copy_from(*r);  // the same input requested twice
    }
  }
}

template <Real T>
std::vector<Tensor<T>> Tape<T>::vjp(std::span<const Var<T>> outputs,
                                    std::span<const Tensor<T>> cotangents,
                                    std::span<const Var<T>> inputs) {
  std::vector<Tensor<T>> results;
  results.reserve(inputs.size());
  for (const auto& v : inputs) results.push_back(Tensor<T>::uninitialized(v.shape()));
  reverse_sweep("Tape::vjp", outputs, cotangents, inputs, {}, results, false, false);
  return results;
}

template <Real T>
void Tape<T>::vjp_into(std::span<const Var<T>> outputs, std::span<const Tensor<T>> cotangents,
                       std::span<const Var<T>> inputs, std::span<Tensor<T>> input_cotangents) {
  if (inputs.size() != input_cotangents.size())
    throw ShapeError("Tape::vjp_into: " + std::to_string(inputs.size()) + " inputs but " +
                     std::to_string(input_cotangents.size()) + " result buffers");
  reverse_sweep("Tape::vjp_into", outputs, cotangents, inputs, {}, input_cotangents, false, true);
}

template <Real T>
std::vector<Tensor<T>> Tape<T>::jvp(std::span<const Var<T>> inputs,
                                    std::span<const Tensor<T>> tangents,
                                    std::span<const Var<T>> outputs) {
  std::vector<Tensor<T>> results;
  results.reserve(outputs.size());
  for (const auto& v : outputs) results.push_back(Tensor<T>::uninitialized(v.shape()));
  forward_sweep("Tape::jvp", inputs, tangents, outputs, results, false);
  return results;
}

template <Real T>
void Tape<T>::jvp_into(std::span<const Var<T>> inputs, std::span<const Tensor<T>> tangents,
                       std::span<const Var<T>> outputs, std::span<Tensor<T>> output_tangents) {
  if (outputs.size() != output_tangents.size())
    throw ShapeError("Tape::jvp_into: " + std::to_string(outputs.size()) + " outputs but " +
                     std::to_string(output_tangents.size()) + " result buffers");
  forward_sweep("Tape::jvp_into", inputs, tangents, outputs, output_tangents, true);
}

template <Real T>
std::vector<Tensor<T>> Tape<T>::hvp(std::span<const Var<T>> outputs,
                                    std::span<const Tensor<T>> cotangents,
                                    std::span<const Var<T>> inputs,
                                    std::span<const Tensor<T>> tangents) {
  std::vector<Tensor<T>> results;
  results.reserve(inputs.size());
  for (const auto& v : inputs) results.push_back(Tensor<T>::uninitialized(v.shape()));
  hvp_impl("Tape::hvp", outputs, cotangents, inputs, tangents, results, false);
  return results;
}

template <Real T>
void Tape<T>::hvp_into(std::span<const Var<T>> outputs, std::span<const Tensor<T>> cotangents,
                       std::span<const Var<T>> inputs, std::span<const Tensor<T>> tangents,
                       std::span<Tensor<T>> input_results) {
  hvp_impl("Tape::hvp_into", outputs, cotangents, inputs, tangents, input_results, true);
}

template <Real T>
void Tape<T>::hvp_impl(const char* op, std::span<const Var<T>> outputs,
                       std::span<const Tensor<T>> cotangents, std::span<const Var<T>> inputs,
                       std::span<const Tensor<T>> tangents, std::span<Tensor<T>> input_results,
                       bool check_alias) {
  if (inputs.size() != input_results.size())
    throw ShapeError(std::string(op) + ": " + std::to_string(inputs.size()) + " inputs but " +
                     std::to_string(input_results.size()) + " result buffers");
  forward_sweep(op, inputs, tangents, {}, {}, false);
  reverse_sweep(op, outputs, cotangents, inputs, tangents, input_results, true, check_alias);
}

template class Tape<float>;
template class Tape<double>;
template struct detail::TapeState<float>;
template struct detail::TapeState<double>;

}  // namespace amari
