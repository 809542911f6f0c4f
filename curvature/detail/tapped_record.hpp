// Internal (not part of the public API): a model's forward pass recorded once with layer taps, and
// the tapped Linear and Conv2d layers planned as K-FAC blocks. The record is an nn::RecordedModel
// (nn/recorded_model.hpp) whose taps were collected while it recorded, so K-FAC's statistics
// (kfac.cpp), the per-example gradients (per_example.cpp) and the diagonal GGN (diag_ggn.cpp)
// record the model where every curvature operator does, and sweep its tape from the logits to the
// tapped outputs s_l (one reverse sweep gives every layer's errors delta_l = dl/ds_l at once).
//
// Planning: each tap names its weight by its index in Model::layout(); the layer's [W; b] must be
// one contiguous (rows, out) row-major block there (kfac.hpp, KfacLayer), which is what turns an
// outer product [a, 1]^T delta into that layer's slice of a flat gradient.
#pragma once

#include <vector>

#include <amari/autodiff/autodiff.hpp>
#include <amari/curvature/kfac.hpp>
#include <amari/nn/model.hpp>
#include <amari/nn/recorded_model.hpp>

namespace amari::curvature::detail {

/// One tapped layer of a record: its block, its input a_l and its output s_l.
template <Real T>
struct TappedLayer {
  KfacLayer layer;
  Tensor<T> input;  ///< a_l: (N, in) for Linear, (N, H, W, C_in) for Conv2d
  Var<T> output;    ///< s_l on the record's tape: (N, out) or (N, OH, OW, C_out)
};

/// What record_tapped does with a tap that has no Kronecker block: a grouped convolution, a
/// weight tapped more than once (shared weights), or a [W; b] that is not one contiguous block.
enum class TapPolicy {
  refuse,  ///< throw (K-FAC: ValueError, or Error for the layout)
  skip     ///< leave it out (every tap of a shared weight): its parameters count as untapped
};

/// A record and its tapped layers in execution order. A value: moving it keeps every Var valid
/// (the RecordedModel owns its tape through a pointer).
template <Real T>
struct TappedRecord {
  nn::RecordedModel<T> record;  ///< sweeps run on record.tape() from record.logits_variable()
  std::vector<TappedLayer<T>> layers;
};

/// Records the forward pass of `model` on `inputs` (N, ...) at a snapshot of its parameters, with
/// every tapped Linear and Conv2d layer planned against Model::layout() under `policy`. Every
/// error is an amari::Error. Those of the recording name `op` first: a model output that is not
/// logits (N, C) is a ShapeError, and a std::logic_error thrown inside the forward pass (e.g.
/// std::out_of_range from a module changed after the Model was built) is rethrown as Error naming
/// the model. Those of the planning (refuse only) are K-FAC's: ValueError for a grouped
/// convolution or a weight tapped twice, Error for a [W; b] that is not one block. Cost: one copy
/// of the parameters and one taped forward pass. With `training_step` (which must be `model`:
/// RecordOptions::update_state), the record is a training step's forward pass and moves the
/// model's running statistics with the batch, once (restored if the recording throws; a
/// planning error after it leaves them moved, for the caller's rollback to restore).
template <Real T>
TappedRecord<T> record_tapped(const char* op, const nn::Model<T>& model, const Tensor<T>& inputs,
                              TapPolicy policy, nn::Model<T>* training_step = nullptr);

extern template TappedRecord<float> record_tapped<float>(const char*, const nn::Model<float>&,
                                                         const Tensor<float>&, TapPolicy,
                                                         nn::Model<float>*);
extern template TappedRecord<double> record_tapped<double>(const char*, const nn::Model<double>&,
                                                           const Tensor<double>&, TapPolicy,
                                                           nn::Model<double>*);

}  // namespace amari::curvature::detail
