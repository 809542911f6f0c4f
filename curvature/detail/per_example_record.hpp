// Internal: a batch recorded with layer taps, split into the parameters whose per-example
// gradients follow from the taps and those that need per-example reverse sweeps. Shared by the
// diagonal GGN (diag_ggn.cpp) and the per-example gradients (per_example.cpp), which both form
// per-example products J_n^T b_n without a P x N matrix of sweeps where the model allows it.
//
// Why the split: for a tapped layer s = a W + b applied to one row per example, row n of the error
// delta = d<b, z>/ds swept back from the logits for ALL examples at once belongs to example n
// alone, as long as examples do not interact in the model; example n's part of J_n^T b_n in the
// layer's [W; b] block is then the outer product of its augmented input row [a_n, 1] with delta_n
// (Linear), or sum_t [a_{n,t}, 1]^T delta_{n,t} over the output positions t (Conv2d). Examples
// interact through batch statistics (a model in Mode::train with state: batch norm), and a
// layer applied to several rows per example (a Linear on (N, T, in)) shares its weight within an
// example: then, and for parameters in no tapped layer (norm scales, embeddings, grouped or
// shared-weight layers), the per-example products come from reverse sweeps of the batch record
// with the cotangent in one row at a time.
#pragma once

#include <string>
#include <utility>
#include <vector>

#include <amari/autodiff/autodiff.hpp>
#include <amari/curvature/kfac.hpp>
#include <amari/nn/model.hpp>

namespace amari::curvature::detail {

/// The tapped record of one batch. Not copyable or movable: the variables live on `tape`.
template <Real T>
class PerExampleRecord {
 public:
  /// Records model.forward_observed(inputs) once. ShapeError naming `op` for inputs that are not
  /// (N, ...) with N >= 1, or a model output that is not logits (N, C).
  PerExampleRecord(const char* op, const nn::Model<T>& model, const Tensor<T>& inputs)
      : variables(model.variables(tape)) {
    if (!inputs.defined() || inputs.rank() < 1 || inputs.dim(0) < 1 || inputs.size() == 0) {
      throw ShapeError(std::string(op) + ": inputs " +
                       (inputs.defined() ? inputs.shape().str() : std::string("undefined")) +
                       " must be (N, ...) with N >= 1 and no empty dimension");
    }
    logits = record_tapped_forward(model, std::span<const Var<T>>(variables), inputs, TapPolicy::skip, layers);
    if (logits.shape().rank() != 2 || logits.shape()[0] != inputs.dim(0)) {
      throw ShapeError(std::string(op) + ": the model's output must be logits (N, C) with N = " +
                       std::to_string(inputs.dim(0)) + ", got " + logits.shape().str());
    }
    const Index n = inputs.dim(0);
    if (model.mode() == nn::Mode::train && model.state().size() > 0) layers.clear();  // examples interact
    std::erase_if(layers, [n](const TappedLayer<T>& t) {
      const int rank = t.layer.kind == KfacLayerKind::linear ? 2 : 4;
      return t.input.rank() != rank || t.input.dim(0) != n || t.output.shape().rank() != rank;
    });
    std::vector<bool> covered(model.layout().size(), false);
    for (const TappedLayer<T>& t : layers) {
      covered[t.layer.weight_index] = true;
      if (t.layer.bias) covered[t.layer.weight_index + 1] = true;
    }
    for (std::size_t p = 0; p < covered.size(); ++p) {
      if (!covered[p]) untapped.push_back(p);
    }
  }
  PerExampleRecord(const PerExampleRecord&) = delete;
  PerExampleRecord& operator=(const PerExampleRecord&) = delete;

  /// The errors delta_l = d<b, z>/ds_l at every tapped layer's output, all examples at once, for
  /// logit cotangents b (N, C): one reverse sweep of the batch record. `deltas` is resized.
  void tapped_errors(const Tensor<T>& b, std::vector<Tensor<T>>& deltas) {
    std::vector<Var<T>> outs;
    outs.reserve(layers.size());
    if (deltas.size() != layers.size()) deltas.assign(layers.size(), Tensor<T>());
    for (std::size_t l = 0; l < layers.size(); ++l) {
      outs.push_back(layers[l].output);
      if (!deltas[l].defined()) deltas[l] = Tensor<T>::uninitialized(layers[l].output.shape());
    }
    tape.vjp_into(std::span<const Var<T>>(&logits, 1), std::span<const Tensor<T>>(&b, 1), outs, deltas);
  }

  Tape<T> tape;
  std::vector<Var<T>> variables;        ///< one per parameter view (Model::layout() order)
  Var<T> logits;                        ///< z (N, C) on `tape`
  std::vector<TappedLayer<T>> layers;   ///< the layers whose products follow from the taps
  std::vector<std::size_t> untapped;    ///< indices into Model::layout() needing per-example sweeps
};

}  // namespace amari::curvature::detail
