// The Jacobians J_i = dz_i/dtheta (C x P) of a model's logits at test inputs, in the two forms the
// linearized predictive of a Laplace approximation needs (laplace.hpp): its C x C functional
// covariance J_i Sigma J_i^T is formed from them without ever holding J of a whole batch.
//
//  - Per example (any model): example i is recorded alone and its C rows J_i^T e_c come from C
//    reverse sweeps of that record. Cost per example: one forward pass and C reverse sweeps on a
//    batch of one; memory C P doubles.
//  - Per layer (models whose parameters all sit in tapped Linear layers, nn::LayerTap): for a
//    layer s = x W + b with augmented input a_i = (x_i, 1), row c of J_i restricted to the layer's
//    block [W; b] ((rows, out) row-major, as K-FAC lays it out, kfac.hpp) is the outer product
//    a_i e_{i,c}^T, where e_{i,c} = dz_{i,c}/ds_i is the error of output c back-propagated to the
//    layer's output. One recording of the batch and C reverse sweeps give a and e for every layer
//    and example at once. A quadratic form J_i S J_i^T with S diagonal in a layer's (rows, out)
//    block is then sum_{j,k} a_ij^2 S_jk e_{i,c,k} e_{i,c',k}: a GEMM and O(C^2 out) per example,
//    instead of C P-vectors per example.
// The per-layer form needs examples that do not interact inside the model (no batch norm in train
// mode) and parameters used by their tapped layer only (no weight shared with untapped code); the
// per-example form needs neither.
#pragma once

#include <vector>

#include <amari/autodiff/autodiff.hpp>
#include <amari/nn/model.hpp>
#include <amari/nn/recorded_model.hpp>

namespace amari::curvature {

/// Rows [begin, begin + count) of a batch x (N, ...) as a batch (count, ...) sharing x's storage
/// (ValueError unless 0 <= begin <= begin + count <= N).
template <Real T>
Tensor<T> batch_rows(const Tensor<T>& x, Index begin, Index count);

/// One tapped Linear layer's share of the Jacobian of a batch of B examples.
struct LinearLayerJacobian {
  Index offset = 0;   ///< flat offset of the weight W (in, out); the bias (out) follows it
  Index in = 0;       ///< input features
  Index out = 0;      ///< output features
  bool bias = false;  ///< whether the layer has a bias
  /// (B, rows): row i is a_i = x_i, followed by 1 with a bias.
  Tensor<double> inputs;
  /// C tensors (B, out): row i of errors[c] is e_{i,c} = dz_{i,c}/ds_i.
  std::vector<Tensor<double>> errors;
  /// in (+ 1 with a bias): the rows of the layer's block [W; b].
  Index rows() const { return in + (bias ? 1 : 0); }
};

/// The logits of a batch of inputs recorded once at the model's current parameters (in its current
/// mode, with layer taps), and the Jacobians of that batch on demand. The model is referenced and
/// must outlive this object.
template <Real T>
class BatchJacobians {
 public:
  /// Records `model` on `inputs` (B, ...). Cost: one taped forward pass.
  BatchJacobians(const nn::Model<T>& model, Tensor<T> inputs);
  /// The logits z (B, C).
  const Tensor<T>& logits() const { return record_.logits(); }
  Index batch_size() const { return record_.batch_size(); }
  Index num_outputs() const { return record_.num_outputs(); }
  /// True when every parameter belongs to exactly one tapped Linear layer whose [W; b] is one
  /// contiguous (rows, out) block: then layers() describes the whole Jacobian.
  bool layerwise() const { return layerwise_; }
  /// The per-layer factors of J (see the file comment), in tap order; computed at the first call
  /// by C reverse sweeps of the record. ValueError unless layerwise().
  const std::vector<LinearLayerJacobian>& layers();
  /// a = J v: a flat v (P) to logit tangents a (B, C). One tangent sweep of the record.
  void jvp(const Tensor<T>& v, Tensor<T>& a) { record_.jvp(v, a); }
  /// The C rows of J_i, (C, P) in double: example i (0 <= i < B, ValueError otherwise) recorded
  /// alone, then C reverse sweeps.
  Tensor<double> example_jacobian(Index i) const;

 private:
  struct Tapped {
    Tensor<T> input;  // x_l (B, in)
    Var<T> output;    // s_l, a recorded intermediate
    Index offset = 0, in = 0, out = 0;
    bool bias = false;
  };
  static nn::RecordedModel<T> record_with_taps(const nn::Model<T>& model, Tensor<T> inputs,
                                                std::vector<Tapped>& tapped, bool& layerwise);

  const nn::Model<T>* model_;
  std::vector<Tapped> tapped_;  // before record_: filled while record_ is constructed
  bool layerwise_ = false;
  nn::RecordedModel<T> record_;
  std::vector<LinearLayerJacobian> layers_;
  bool computed_ = false;
};

/// cov (B, C, C) += the quadratic form of one layer: for every example i and outputs c, c',
///   cov[i, c, c'] += sum_{j < rows} sum_{k < out} a_ij^2 s_jk e_{c,ik} e_{c',ik},
/// i.e. J_i^l S J_i^l^T for a diagonal S laid out as (rows, out) (a: (B, rows), e: C tensors
/// (B, out), s: (rows, out)). ShapeError on mismatched shapes. Cost: a (B, rows) x (rows, out)
/// GEMM plus B C^2 out multiply-adds.
void add_layer_quadratic(const Tensor<double>& a, const std::vector<Tensor<double>>& e,
                         const Tensor<double>& s, Tensor<double>& cov);

extern template Tensor<float> batch_rows<float>(const Tensor<float>&, Index, Index);
extern template Tensor<double> batch_rows<double>(const Tensor<double>&, Index, Index);
extern template class BatchJacobians<float>;
extern template class BatchJacobians<double>;

}  // namespace amari::curvature
