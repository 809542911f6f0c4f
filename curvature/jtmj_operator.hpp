// J^T M J operators: every Gauss-Newton-type curvature amari computes has the form
//   C v = (1/N) sum_i J_i^T M_i J_i v                                   (SEED-NOTES 4)
// with J_i = dz_i/dtheta the Jacobian of example i's logits and M_i a C x C logit-space matrix:
//  - M_i = H_L(z_i), the head's closed-form logit Hessian: the GGN (= the Fisher for the
//    exponential-family heads, ggn.hpp);
//  - M_i = F_R(z_i), the head's closed-form logit-space Fisher: the Fisher
//    (closed_form_fisher.hpp);
//  - M_i = (1/k) sum_s s_is s_is^T with labels sampled from the model: the Monte-Carlo Fisher;
//  - M_i = s_i s_i^T at the data label: the empirical Fisher (fisher.hpp).
// The operators differ only in M, so the product is written once: a = J v (a tangent sweep over
// the record), b_i = M_i a_i per example, the 1/N of the mean (applied here and nowhere else),
// out = J^T b (an adjoint sweep). No P x P, N C x P or C x C matrix is formed. The quadratic form
// v^T C v = a^T b comes with the product for N C more multiply-adds.
#pragma once

#include <amari/curvature/linear_operator.hpp>
#include <amari/curvature/linearization.hpp>

namespace amari::curvature {

/// C v = (1/N) sum_i J_i^T M_i J_i v, with M supplied per example by the derived class.
template <Real T>
class JtMJOperator : public LinearOperator<T> {
 public:
  Index size() const override { return lin_.num_parameters(); }
  /// out = C v, v and out flat (P). One JVP sweep + the logit-space product + one VJP sweep;
  /// allocation-free after the first product.
  void apply(const Tensor<T>& v, Tensor<T>& out) final;
  /// out = C v, and v^T C v = (1/N) sum_i a_i^T M_i a_i = a^T b from the product's own logit-space
  /// vectors: N C terms instead of a pass over two P-vectors (what CG's p^T A p costs).
  double apply_quadratic_form(const Tensor<T>& v, Tensor<T>& out) final;
  ModelLinearization<T>& linearization() { return lin_; }
  const ModelLinearization<T>& linearization() const { return lin_; }
  /// b_i = M_i a_i at the recorded logits, per example (a, b (N, C)): the operator's logit-space
  /// matrix on its own, e.g. for verify()'s dense check against J^T M J assembled from JVPs.
  void logit_matrix_product(const Tensor<T>& a, Tensor<T>& b) const { logit_product(lin_.logits(), a, b); }

 protected:
  JtMJOperator(const nn::Model<T>& model, Tensor<T> inputs) : lin_(model, std::move(inputs)) {}
  /// b_i = M_i a_i for every row i of the logit tangents a (N, C), per example (no 1/N).
  virtual void logit_product(const Tensor<T>& z, const Tensor<T>& a, Tensor<T>& b) const = 0;
  ModelLinearization<T> lin_;

 private:
  // a = J v and b = (1/N) M a into a_ and b_, out = J^T b.
  void product(const Tensor<T>& v, Tensor<T>& out);
  Tensor<T> a_, b_;  // (N, C) sweep buffers, reused across products
};

extern template class JtMJOperator<float>;
extern template class JtMJOperator<double>;

}  // namespace amari::curvature
