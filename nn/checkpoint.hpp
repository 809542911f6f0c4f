// Training checkpoints: a model (parameters, state, step counter) and its optimizer's state in one
// safetensors file, so that training stopped after k steps and resumed from the file continues
// exactly as if it had never stopped (bitwise: every value is stored in its own precision).
//
// An optimizer describes its state as an OptimizerState: its kind, named tensors (moments, warm
// starts), named numbers (lambda) and named counters (steps), through save_state(), and restores it
// with load_state(), which checks the kind and every shape before changing anything. nn::Sgd,
// nn::Adam, curvature::NaturalGradient, curvature::HessianFree and curvature::Kfac (K-FAC and
// EKFAC: factors, inverses or eigenbases and scalings, momentum) do.
//
// File layout (a standard safetensors file, readable by any safetensors reader):
//   "model/<name>"            every parameter, by model.layout() name, in T's dtype
//   "model_state/<name>"      every state tensor, by model.state_layout() name
//   "model_step"              I64 scalar: the model's step counter (it keys dropout masks)
//   "model_seed"              I64 scalar: the model's seed (the other stored dropout key),
//                             bit-cast; Model::first_example is not stored (each training step
//                             sets it)
//   "optimizer/<name>"        each tensor of the optimizer state, in T's dtype
//   "optimizer_number/<name>" F64 scalar per number (exact)
//   "optimizer_counter/<name>" I64 scalar per counter
//   metadata: "amari.checkpoint" = "1", "amari.optimizer" = the optimizer kind.
// Written through the atomic path of every amari writer (nn/atomic_file.hpp).
#pragma once

#include <cstdint>
#include <map>
#include <string>

#include <amari/nn/model.hpp>

namespace amari::nn {

/// What an optimizer needs to continue exactly where it stopped.
template <Real T>
struct OptimizerState {
  /// The optimizer's kind, e.g. "adam"; load_state() refuses a state of another kind.
  std::string kind;
  std::map<std::string, Tensor<T>> tensors;
  std::map<std::string, double> numbers;
  std::map<std::string, std::int64_t> counters;

  /// The tensor `name`, checked to have `shape`; ValueError naming the kind and entry otherwise.
  const Tensor<T>& tensor(const std::string& name, const Shape& shape) const;
  /// True if a tensor of this name is present (optional entries, e.g. a warm start not yet made).
  bool has_tensor(const std::string& name) const { return tensors.count(name) != 0; }
  /// The number / counter `name`; ValueError naming the kind and entry if absent.
  double number(const std::string& name) const;
  std::int64_t counter(const std::string& name) const;
  /// ValueError unless kind == expected (`who` names the caller in the message).
  void require_kind(const std::string& expected, const char* who) const;
};

/// Writes the model and the optimizer state to `path` (layout above). Atomic: `path` holds the old
/// file or the complete new one. IoError naming the path on failure. Cost O(P + S + state size).
template <Real T>
void save_checkpoint(const std::string& path, const Model<T>& model, const OptimizerState<T>& state);

/// Reads a checkpoint: the model's parameters, state, step counter and seed are replaced, and `state`
/// receives the optimizer state, only if the whole file is valid and matches the model (every
/// parameter and state tensor by name and shape): otherwise FormatError/ShapeError/ValueError
/// naming the path and entry, and neither the model nor `state` is changed. Pass the state to the
/// optimizer's load_state() afterwards.
template <Real T>
void load_checkpoint(const std::string& path, Model<T>& model, OptimizerState<T>& state);

extern template struct OptimizerState<float>;
extern template struct OptimizerState<double>;
extern template void save_checkpoint<float>(const std::string&, const Model<float>&, const OptimizerState<float>&);
extern template void save_checkpoint<double>(const std::string&, const Model<double>&,
                                             const OptimizerState<double>&);
extern template void load_checkpoint<float>(const std::string&, Model<float>&, OptimizerState<float>&);
extern template void load_checkpoint<double>(const std::string&, Model<double>&, OptimizerState<double>&);

}  // namespace amari::nn
