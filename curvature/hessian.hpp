// The exact Hessian of the mean loss in the parameters, applied matrix-free by forward-over-reverse
// on a tape that records the model and the loss once per linearization. Unlike the GGN it includes
// the residual term sum_c (dL/dz_c) grad^2 z_c (SEED-NOTES 3), so it can be indefinite.
#pragma once

#include <string>
#include <vector>

#include <amari/autodiff/autodiff.hpp>
#include <amari/curvature/linear_operator.hpp>
#include <amari/nn/heads.hpp>
#include <amari/nn/model.hpp>
#include <amari/nn/recorded_model.hpp>

namespace amari::curvature {

/// H v for the mean loss of `head` on `model` at a batch (inputs (N, D), targets (N, C)).
/// Cost per product: one tangent sweep plus one second-order reverse sweep (about twice a VJP).
template <Real T>
class HessianOperator final : public LinearOperator<T> {
 public:
  HessianOperator(const nn::Model<T>& model, const nn::Head<T>& head, Tensor<T> inputs, Tensor<T> targets);
  HessianOperator(const HessianOperator&) = delete;
  HessianOperator& operator=(const HessianOperator&) = delete;
  Index size() const override { return rec_.num_parameters(); }
  void apply(const Tensor<T>& v, Tensor<T>& out) override;
  /// "Hessian(<head>, N=..)".
  std::string name() const override;
  /// Re-records at the model's current parameters (and optionally a new batch). All-or-nothing:
  /// after a throw the operator keeps its previous record.
  void relinearize();
  void relinearize(Tensor<T> inputs, Tensor<T> targets);
  /// The loss at the linearization point.
  T loss() const { return rec_.loss(); }
  /// The record (tape, logits, loss) the products sweep.
  const nn::RecordedModel<T>& record() const { return rec_; }
  nn::RecordedModel<T>& record() { return rec_; }

 private:
  const nn::Head<T>* head_;
  nn::RecordedModel<T> rec_;
};

extern template class HessianOperator<float>;
extern template class HessianOperator<double>;

}  // namespace amari::curvature
