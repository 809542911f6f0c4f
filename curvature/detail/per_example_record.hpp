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
//
// The batch is recorded by detail::record_tapped (tapped_record.hpp): one nn::RecordedModel, as
// for every other consumer of the model's forward pass.
#pragma once

#include <string>
#include <vector>

#include <amari/autodiff/autodiff.hpp>
#include <amari/curvature/detail/tapped_record.hpp>
#include <amari/curvature/kfac.hpp>
#include <amari/nn/model.hpp>
#include <amari/nn/recorded_model.hpp>

namespace amari::curvature::detail {

/// The tapped record of one batch, split into tapped layers and untapped parameters.
template <Real T>
class PerExampleRecord {
 public:
  /// Records the forward pass of `model` on `inputs` once (record_tapped, shared weights and
  /// layers without a block skipped). ShapeError naming `op` for inputs that are not (N, ...) with
  /// N >= 1, or a model output that is not logits (N, C).
  PerExampleRecord(const char* op, const nn::Model<T>& model, const Tensor<T>& inputs)
      : tapped_(record_tapped(op, model, checked_inputs(op, inputs), TapPolicy::skip)) {
    const Index n = inputs.dim(0);
    const Shape& z = batch().logits().shape();
    if (z[0] != n) {  // rank 2 is checked by the record
      throw ShapeError(std::string(op) + ": the model's output must be logits (N, C) with N = " +
                       std::to_string(n) + ", got " + z.str());
    }
    std::vector<TappedLayer<T>>& layers = tapped_.layers;
    // Batch statistics (train mode with state) make the examples interact: no layer qualifies.
    if (model.mode() == nn::Mode::train && model.state().size() > 0) layers.clear();
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
      if (!covered[p]) untapped_.push_back(p);
    }
  }

  /// The batch record: sweeps run on batch().tape() from batch().logits_variable() (N, C) to
  /// batch().parameter_variables() (Model::layout() order) or to the tapped outputs.
  nn::RecordedModel<T>& batch() { return tapped_.record; }
  /// The layers whose per-example products follow from the taps, in execution order.
  const std::vector<TappedLayer<T>>& layers() const { return tapped_.layers; }
  /// Indices into Model::layout() of the parameters that need per-example sweeps.
  const std::vector<std::size_t>& untapped() const { return untapped_; }

  /// The errors delta_l = d<b, z>/ds_l at every tapped layer's output, all examples at once, for
  /// logit cotangents b (N, C): one reverse sweep of the batch record. `deltas` is resized.
  void tapped_errors(const Tensor<T>& b, std::vector<Tensor<T>>& deltas) {
    const std::vector<TappedLayer<T>>& layers = tapped_.layers;
    std::vector<Var<T>> outs;
    outs.reserve(layers.size());
    if (deltas.size() != layers.size()) deltas.assign(layers.size(), Tensor<T>());
    for (std::size_t l = 0; l < layers.size(); ++l) {
      outs.push_back(layers[l].output);
      if (!deltas[l].defined()) deltas[l] = Tensor<T>::uninitialized(layers[l].output.shape());
    }
    batch().tape().vjp_into(std::span<const Var<T>>(&batch().logits_variable(), 1),
                            std::span<const Tensor<T>>(&b, 1), outs, deltas);
  }

 private:
  // The inputs, or ShapeError naming `op` before anything is recorded.
  static const Tensor<T>& checked_inputs(const char* op, const Tensor<T>& inputs) {
    if (!inputs.defined() || inputs.rank() < 1 || inputs.dim(0) < 1 || inputs.size() == 0) {
      throw ShapeError(std::string(op) + ": inputs " +
                       (inputs.defined() ? inputs.shape().str() : std::string("undefined")) +
                       " must be (N, ...) with N >= 1 and no empty dimension");
    }
    return inputs;
  }

  TappedRecord<T> tapped_;
  std::vector<std::size_t> untapped_;
};

}  // namespace amari::curvature::detail
