// Recording of user-defined primitives (autodiff/custom_primitive.hpp). Compiled into the library
// because a record is wired to its tape through Var internals (detail::VarAccess), which the
// installed headers do not expose.
#include <amari/autodiff/custom_primitive.hpp>

#include <amari/autodiff/ops/primitive.hpp>

namespace amari::detail {

template <Real T>
bool inputs_on_tape(const char* op, std::span<const Var<T>* const> inputs) {
  // The same checks and messages as detail::apply for the built-in ops.
  const TapeState<T>* tape = nullptr;
  for (std::size_t i = 0; i < inputs.size(); ++i) {
    const auto& t = VarAccess::tape(*inputs[i]);
    if (!t) continue;
    if (!t->alive || VarAccess::epoch(*inputs[i]) != t->epoch) {
      throw TapeError(std::string(op) + ": input " + std::to_string(i) +
                      (t->alive ? " was recorded before its tape was cleared"
                                : " was recorded on a tape that has been destroyed"));
    }
    if (tape && tape != t.get()) {
      throw TapeError(std::string(op) + ": inputs were recorded on two different tapes");
    }
    tape = t.get();
  }
  return tape != nullptr;
}

template <Real T>
Var<T> record_node(std::unique_ptr<NodeBase<T>> node, std::span<const Var<T>* const> inputs,
                   Tensor<T> y) {
  std::shared_ptr<TapeState<T>> tape;
  node->arity = static_cast<int>(inputs.size());
  for (std::size_t i = 0; i < inputs.size(); ++i) {
    node->inputs[i] = VarAccess::slot(*inputs[i]);
    if (!tape) tape = VarAccess::tape(*inputs[i]);
  }
  if (!tape) throw TapeError(std::string(node->name()) + ": no input is recorded on a tape");
  const auto slot = tape->add_slot(y.shape(), static_cast<std::int32_t>(tape->nodes.size()));
  node->output = slot;
  tape->nodes.push_back(std::move(node));
  const auto epoch = tape->epoch;
  return VarAccess::make(std::move(y), std::move(tape), slot, epoch);
}

#define AMARI_INSTANTIATE(T)                                                                   \
  template bool inputs_on_tape<T>(const char*, std::span<const Var<T>* const>);                \
  template Var<T> record_node<T>(std::unique_ptr<NodeBase<T>>, std::span<const Var<T>* const>, \
                                 Tensor<T>);
AMARI_INSTANTIATE(float)
AMARI_INSTANTIATE(double)
#undef AMARI_INSTANTIATE

}  // namespace amari::detail
