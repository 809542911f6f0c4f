// The generalized Gauss-Newton matrix of a model with an NLL head, applied matrix-free:
//   G v = (1/N) sum_i J_i^T H_L(z_i) J_i v                     (SEED-NOTES 4)
// as a forward sweep (a = J v), the head's closed-form logit curvature (b = H_L a, one dot product
// per example for softmax), and a reverse sweep (J^T b). For the three exponential-family heads
// (softmax, Bernoulli, fixed-sigma Gaussian) the output family is exponential with natural
// parameter z, so F_R = H_L and this is also the Fisher
// information matrix F = E_x E_{y ~ p_theta}[s s^T] (SEED-NOTES 3), the true Fisher, not the
// empirical one (see fisher.hpp for that, and for the Monte-Carlo estimate).
//
// For a head whose H_L depends on the targets (head.hessian_depends_on_targets(), e.g.
// nn::GaussianLearnedVariance) the GGN is J^T H_L(z, y) J at the data targets y: it differs from
// the Fisher (closed_form_fisher.hpp) and can be indefinite. Such a head needs the constructor
// with targets; the one without refuses it (ValueError).
//
// No P x P, N C x P or C x C matrix is formed. The forward pass is recorded once per
// (re)linearization; each product is then one tangent and one adjoint sweep and allocates nothing
// after the first one.
#pragma once

#include <string>

#include <amari/curvature/jtmj_operator.hpp>
#include <amari/nn/heads.hpp>

namespace amari::curvature {

/// G v (= F v, the Fisher, for the exponential-family heads) at the model's parameters on a batch of inputs.
/// The model and head are referenced and must outlive the operator. Cost per product: one JVP
/// sweep + O(N C) + one VJP sweep (about 2.5 forward passes of an MLP; SEED-NOTES 4).
template <Real T>
class GgnOperator final : public JtMJOperator<T> {
 public:
  /// Records the forward pass on `inputs` (N, ...) at the model's current parameters. ValueError
  /// for a head whose H_L depends on the targets (use the constructor with targets).
  GgnOperator(const nn::Model<T>& model, const nn::Head<T>& head, Tensor<T> inputs);
  /// The same with the targets y at which H_L(z, y) is taken; y must match the logits as the
  /// head's loss requires (checked here). For a head whose H_L does not depend on y the operator
  /// equals the one without targets.
  GgnOperator(const nn::Model<T>& model, const nn::Head<T>& head, Tensor<T> inputs, Tensor<T> targets);
  /// "GGN(<head>, N=<batch>)".
  std::string name() const override;
  /// Moves the linearization to the model's current parameters (after an update). All-or-nothing.
  void relinearize() { this->lin_.relinearize(); }
  /// ... and to new inputs (a new curvature minibatch); ValueError when the head needs targets.
  void relinearize(Tensor<T> inputs);
  /// ... and to new inputs with their targets. All-or-nothing.
  void relinearize(Tensor<T> inputs, Tensor<T> targets);
  const nn::Head<T>& head() const { return *head_; }
  /// The targets H_L is taken at (undefined when constructed without them).
  const Tensor<T>& targets() const { return targets_; }

 protected:
  /// b_i = H_L(z_i[, y_i]) a_i: the head's closed-form logit Hessian (one dot product per example
  /// for softmax), at the targets when the operator has them.
  void logit_product(const Tensor<T>& z, const Tensor<T>& a, Tensor<T>& b) const override {
    if (targets_.defined()) {
      head_->hessian_product(z, targets_, a, b);
    } else {
      head_->hessian_product(z, a, b);
    }
  }

 private:
  const nn::Head<T>* head_;
  Tensor<T> targets_;
};

extern template class GgnOperator<float>;
extern template class GgnOperator<double>;

}  // namespace amari::curvature
