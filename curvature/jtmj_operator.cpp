#include <amari/curvature/jtmj_operator.hpp>

#include <amari/curvature/vector_ops.hpp>

namespace amari::curvature {

template <Real T>
void JtMJOperator<T>::apply(const Tensor<T>& v, Tensor<T>& out) {
  product(v, out);
}

template <Real T>
double JtMJOperator<T>::apply_quadratic_form(const Tensor<T>& v, Tensor<T>& out) {
  product(v, out);
  // v^T J^T b = (J v)^T b = a^T b: the same number as v^T out up to rounding, without reading the
  // two P-vectors again.
  return dot(a_, b_);
}

template <Real T>
void JtMJOperator<T>::product(const Tensor<T>& v, Tensor<T>& out) {
  check_apply_arguments(*this, v, out);
  const Tensor<T>& z = lin_.logits();
  if (!a_.defined() || !(a_.shape() == z.shape())) {
    a_ = Tensor<T>::uninitialized(z.shape());
    b_ = Tensor<T>::uninitialized(z.shape());
  }
  lin_.jvp(v, a_);                                   // 1. a = J v
  logit_product(z, a_, b_);                          // 2. b_i = M_i a_i, per example
  scal(1.0 / static_cast<double>(z.dim(0)), b_);     //    the mean over the batch, applied once
  lin_.vjp(b_, out);                                 // 3. out = J^T b
}

template class JtMJOperator<float>;
template class JtMJOperator<double>;

}  // namespace amari::curvature
