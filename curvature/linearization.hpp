// The linearization of a model's logits at fixed parameters: record the forward pass once, then
// apply J and J^T (J = dz/dtheta, N C x P) as many times as wanted, each one sweep over the record.
//
// This is what makes repeated curvature products cheap (SEED-NOTES 4): a CG solve of 10-250
// products pays the forward pass once, and after the first product no sweep allocates.
#pragma once

#include <vector>

#include <amari/autodiff/autodiff.hpp>
#include <amari/nn/model.hpp>
#include <amari/nn/recorded_model.hpp>

namespace amari::curvature {

/// z = f(x; theta) recorded at a copy of the model's current parameters; J v and J^T b on demand.
/// A thin owner of one nn::RecordedModel that can be moved to new parameters or inputs: the record
/// uses a snapshot of theta, so it stays self-consistent if the model is updated afterwards; call
/// relinearize() to move it to the model's new parameters. The model itself is referenced (its
/// structure) and must outlive this object.
///
/// Every relinearize is all-or-nothing: the new record is made first and replaces the old one only
/// when recording succeeded, so after a throw (bad inputs, a layer refusing a shape) the object
/// still holds, and sweeps, the previous record.
template <Real T>
class ModelLinearization {
 public:
  /// Records the forward pass of `model` on `inputs` (N, ...). Cost: one taped forward pass.
  ModelLinearization(const nn::Model<T>& model, Tensor<T> inputs);
  ModelLinearization(const ModelLinearization&) = delete;
  ModelLinearization& operator=(const ModelLinearization&) = delete;

  /// Re-records at the model's current parameters (and optionally new inputs).
  void relinearize();
  void relinearize(Tensor<T> inputs);
  /// Replaces the record by one made elsewhere (of the same model; ValueError otherwise). Lets an
  /// owner check what it derives from a new record (targets, sampled labels) before committing.
  void replace(nn::RecordedModel<T> record);

  /// a = J v: flat v (P) to logit tangents a (N, C). One forward sweep over the record.
  void jvp(const Tensor<T>& v, Tensor<T>& a) { rec_.jvp(v, a); }
  /// out = J^T b: logit cotangents b (N, C) to a flat vector out (P). One reverse sweep.
  void vjp(const Tensor<T>& b, Tensor<T>& out) { rec_.vjp(b, out); }

  /// The logits z at the linearization point (N, C).
  const Tensor<T>& logits() const { return rec_.logits(); }
  /// The inputs x (N, ...).
  const Tensor<T>& inputs() const { return rec_.inputs(); }
  /// The parameters theta the record was made at (flat, P).
  const Tensor<T>& parameters() const { return rec_.parameters(); }
  Index batch_size() const { return rec_.batch_size(); }
  Index num_outputs() const { return rec_.num_outputs(); }
  Index num_parameters() const { return rec_.num_parameters(); }
  const nn::Model<T>& model() const { return rec_.model(); }
  /// The record itself (tape, parameter variables, logits variable).
  nn::RecordedModel<T>& record() { return rec_; }
  const nn::RecordedModel<T>& record() const { return rec_; }
  /// Bytes held by the record and its sweep buffers.
  std::size_t memory_bytes() const { return rec_.memory_bytes(); }

 private:
  nn::RecordedModel<T> rec_;
};

extern template class ModelLinearization<float>;
extern template class ModelLinearization<double>;

}  // namespace amari::curvature
