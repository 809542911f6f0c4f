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

namespace amari::curvature {

/// H v for the mean loss of `head` on `model` at a batch (inputs (N, D), targets (N, C)).
/// Cost per product: one tangent sweep plus one second-order reverse sweep (about twice a VJP).
template <Real T>
class HessianOperator final : public LinearOperator<T> {
 public:
  HessianOperator(const nn::Model<T>& model, const nn::Head<T>& head, Tensor<T> inputs, Tensor<T> targets);
  HessianOperator(const HessianOperator&) = delete;
  HessianOperator& operator=(const HessianOperator&) = delete;
  Index size() const override { return theta_.size(); }
  void apply(const Tensor<T>& v, Tensor<T>& out) override;
  /// "Hessian(<head>, N=..)".
  std::string name() const override;
  /// Re-records at the model's current parameters.
  void relinearize();
  void relinearize(Tensor<T> inputs, Tensor<T> targets);
  /// The loss at the linearization point.
  T loss() const { return loss_.value().item(); }

 private:
  const nn::Model<T>* model_;
  const nn::Head<T>* head_;
  Tensor<T> x_, y_, theta_;
  Tape<T> tape_;
  std::vector<Var<T>> params_;
  Var<T> loss_;
  Tensor<T> one_;
  std::vector<Tensor<T>> tangent_views_, out_views_;
};

extern template class HessianOperator<float>;
extern template class HessianOperator<double>;

}  // namespace amari::curvature
