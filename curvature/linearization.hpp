// The linearization of a model's logits at fixed parameters: record the forward pass once, then
// apply J and J^T (J = dz/dtheta, N C x P) as many times as wanted, each one sweep over the record.
//
// This is what makes repeated curvature products cheap (SEED-NOTES 4): a CG solve of 10-250
// products pays the forward pass once, and after the first product no sweep allocates.
#pragma once

#include <vector>

#include <amari/autodiff/autodiff.hpp>
#include <amari/nn/model.hpp>

namespace amari::curvature {

/// z = f(x; theta) recorded at a copy of the model's current parameters; J v and J^T b on demand.
/// The record uses a snapshot of theta, so it stays self-consistent if the model is updated
/// afterwards; call relinearize() to move it to the model's new parameters. The model itself is
/// referenced (its structure) and must outlive this object.
template <Real T>
class ModelLinearization {
 public:
  /// Records the forward pass of `model` on `inputs` (N, D). Cost: one taped forward pass.
  ModelLinearization(const nn::Model<T>& model, Tensor<T> inputs);
  ModelLinearization(const ModelLinearization&) = delete;
  ModelLinearization& operator=(const ModelLinearization&) = delete;

  /// Re-records at the model's current parameters (and optionally new inputs).
  void relinearize();
  void relinearize(Tensor<T> inputs);

  /// a = J v: flat v (P) to logit tangents a (N, C). One forward sweep over the record.
  void jvp(const Tensor<T>& v, Tensor<T>& a);
  /// out = J^T b: logit cotangents b (N, C) to a flat vector out (P). One reverse sweep.
  void vjp(const Tensor<T>& b, Tensor<T>& out);

  /// The logits z at the linearization point (N, C).
  const Tensor<T>& logits() const { return z_.value(); }
  /// The inputs x (N, D).
  const Tensor<T>& inputs() const { return x_; }
  /// The parameters theta the record was made at (flat, P).
  const Tensor<T>& parameters() const { return theta_; }
  Index batch_size() const { return logits().shape()[0]; }
  Index num_outputs() const { return logits().shape()[1]; }
  Index num_parameters() const { return theta_.size(); }
  const nn::Model<T>& model() const { return *model_; }
  /// Bytes held by the record and its sweep buffers.
  std::size_t memory_bytes() const { return tape_.memory_bytes(); }

 private:
  const nn::Model<T>* model_;
  Tensor<T> x_;
  Tensor<T> theta_;
  Tape<T> tape_;
  std::vector<Var<T>> params_;
  Var<T> z_;
  std::vector<Tensor<T>> tangent_views_, cotangent_views_;
};

extern template class ModelLinearization<float>;
extern template class ModelLinearization<double>;

}  // namespace amari::curvature
