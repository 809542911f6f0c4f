// The generalized Gauss-Newton matrix of a model with an NLL head, applied matrix-free:
//   G v = (1/N) sum_i J_i^T H_L(z_i) J_i v                     (SEED-NOTES 4)
// as a forward sweep (a = J v), the head's closed-form logit curvature (b = H_L a, one dot product
// per example for softmax), and a reverse sweep (J^T b). For the three heads amari ships the output
// family is exponential with natural parameter z, so F_R = H_L and this is also the Fisher
// information matrix F = E_x E_{y ~ p_theta}[s s^T] (SEED-NOTES 3), the true Fisher, not the
// empirical one (see fisher.hpp for that, and for the Monte-Carlo estimate).
//
// No P x P, N C x P or C x C matrix is formed. The forward pass is recorded once per
// (re)linearization; each product is then one tangent and one adjoint sweep and allocates nothing
// after the first one.
#pragma once

#include <string>

#include <amari/curvature/jtmj_operator.hpp>
#include <amari/nn/heads.hpp>

namespace amari::curvature {

/// G v (= F v, the Fisher, for amari's heads) at the model's parameters on a batch of inputs.
/// The model and head are referenced and must outlive the operator. Cost per product: one JVP
/// sweep + O(N C) + one VJP sweep (about 2.5 forward passes of an MLP; SEED-NOTES 4).
template <Real T>
class GgnOperator final : public JtMJOperator<T> {
 public:
  /// Records the forward pass on `inputs` (N, ...) at the model's current parameters.
  GgnOperator(const nn::Model<T>& model, const nn::Head<T>& head, Tensor<T> inputs);
  /// "GGN(<head>, N=<batch>)".
  std::string name() const override;
  /// Moves the linearization to the model's current parameters (after an update). All-or-nothing.
  void relinearize() { this->lin_.relinearize(); }
  /// ... and to new inputs (a new curvature minibatch).
  void relinearize(Tensor<T> inputs) { this->lin_.relinearize(std::move(inputs)); }
  const nn::Head<T>& head() const { return *head_; }

 protected:
  /// b_i = H_L(z_i) a_i: the head's closed-form logit Hessian (one dot product per example for
  /// softmax).
  void logit_product(const Tensor<T>& z, const Tensor<T>& a, Tensor<T>& b) const override {
    head_->hessian_product(z, a, b);
  }

 private:
  const nn::Head<T>* head_;
};

extern template class GgnOperator<float>;
extern template class GgnOperator<double>;

}  // namespace amari::curvature
