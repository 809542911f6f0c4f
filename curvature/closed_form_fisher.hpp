// The Fisher information matrix in closed form, applied matrix-free (SEED-NOTES 2):
//   F v = (1/N) sum_i J_i^T F_R(z_i) J_i v,    F_R(z) = E_{y ~ r(.|z)}[s_z s_z^T]
// with the head's closed-form logit-space Fisher (nn::Head::fisher_product). For the three
// exponential-family heads F_R = H_L, so this operator equals the GGN (ggn.hpp); for a head whose
// logits are not the natural parameter (nn::GaussianLearnedVariance) the two differ: F is PSD and
// needs no targets, the GGN needs them and can be indefinite. MonteCarloFisherOperator
// (fisher.hpp) estimates the same matrix by sampling y from the head.
#pragma once

#include <string>

#include <amari/curvature/jtmj_operator.hpp>
#include <amari/nn/heads.hpp>

namespace amari::curvature {

/// F v at the model's parameters on a batch of inputs, with F_R in closed form. The model and
/// head are referenced and must outlive the operator. Cost per product: one JVP sweep + O(N C) +
/// one VJP sweep, like the GGN.
template <Real T>
class ClosedFormFisherOperator final : public JtMJOperator<T> {
 public:
  /// Records the forward pass on `inputs` (N, ...) at the model's current parameters.
  ClosedFormFisherOperator(const nn::Model<T>& model, const nn::Head<T>& head, Tensor<T> inputs)
      : JtMJOperator<T>(model, std::move(inputs)), head_(&head) {}
  /// "Fisher(<head>, N=<batch>)".
  std::string name() const override {
    return "Fisher(" + head_->name() + ", N=" + std::to_string(this->lin_.batch_size()) + ")";
  }
  /// Moves the linearization to the model's current parameters. All-or-nothing.
  void relinearize() { this->lin_.relinearize(); }
  /// ... and to new inputs. All-or-nothing.
  void relinearize(Tensor<T> inputs) { this->lin_.relinearize(std::move(inputs)); }
  const nn::Head<T>& head() const { return *head_; }

 protected:
  /// b_i = F_R(z_i) a_i, the head's closed-form logit-space Fisher.
  void logit_product(const Tensor<T>& z, const Tensor<T>& a, Tensor<T>& b) const override {
    head_->fisher_product(z, a, b);
  }

 private:
  const nn::Head<T>* head_;
};

extern template class ClosedFormFisherOperator<float>;
extern template class ClosedFormFisherOperator<double>;

}  // namespace amari::curvature
