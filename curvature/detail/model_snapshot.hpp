// Internal: everything an optimizer step may change in a model, kept so that a step that throws
// half-way can put it back (the strong guarantee of NaturalGradient, HessianFree and Kfac steps).
#pragma once

#include <cstdint>

#include <amari/nn/model.hpp>

namespace amari::curvature::detail {

// The parameters, the state (batch norm's running statistics, moved by a training pass), the step
// counter and the first example's index (both key the dropout masks; a data-parallel step sets the
// latter to the shard's offset). A step that fails (a head refusing targets, an operator refusing
// a batch, an allocation failing during CG) restores them, so the next step gives what it would
// have given without the failed call. Cost: one copy of the parameters and of the state.
template <Real T>
class ModelSnapshot {
 public:
  explicit ModelSnapshot(const nn::Model<T>& model)
      : theta_(model.gather()),
        state_(model.state().size() > 0 ? model.state().clone() : Tensor<T>()),
        step_(model.step()),
        first_example_(model.first_example()) {}

  void restore(nn::Model<T>& model) const {
    model.scatter(theta_);
    if (state_.defined()) model.state().copy_from(state_);
    model.set_step(step_);
    model.set_first_example(first_example_);
  }
  /// The parameters at the snapshot (flat, P).
  const Tensor<T>& parameters() const { return theta_; }

 private:
  Tensor<T> theta_, state_;
  std::uint64_t step_;
  Index first_example_;
};

}  // namespace amari::curvature::detail
