#include <amari/curvature/ggn.hpp>

#include <amari/curvature/vector_ops.hpp>

namespace amari::curvature {

template <Real T>
GgnOperator<T>::GgnOperator(const nn::Model<T>& model, const nn::Head<T>& head, Tensor<T> inputs)
    : head_(&head), lin_(model, std::move(inputs)) {}

template <Real T>
void GgnOperator<T>::apply(const Tensor<T>& v, Tensor<T>& out) {
  check_apply_arguments(*this, v, out);
  const Shape& zs = lin_.logits().shape();
  if (!a_.defined() || !(a_.shape() == zs)) {
    a_ = Tensor<T>::uninitialized(zs);
    b_ = Tensor<T>::uninitialized(zs);
  }
  lin_.jvp(v, a_);                                 // 1. a = J v               (SEED-NOTES 4)
  head_->hessian_product(lin_.logits(), a_, b_);  // 2. b = H_L(z) a, per example
  scal(1.0 / static_cast<double>(zs[0]), b_);     //    averaged over the batch
  lin_.vjp(b_, out);                              // 3. out = J^T b
}

template <Real T>
std::string GgnOperator<T>::name() const {
  return "GGN(" + head_->name() + ", N=" + std::to_string(lin_.batch_size()) + ")";
}

template class GgnOperator<float>;
template class GgnOperator<double>;

}  // namespace amari::curvature
