#include <amari/curvature/hessian.hpp>

namespace amari::curvature {

template <Real T>
HessianOperator<T>::HessianOperator(const nn::Model<T>& model, const nn::Head<T>& head, Tensor<T> inputs,
                                    Tensor<T> targets)
    : model_(&model), head_(&head), x_(std::move(inputs)), y_(std::move(targets)), one_(Tensor<T>::scalar(T(1))) {
  relinearize();
}

template <Real T>
void HessianOperator<T>::relinearize(Tensor<T> inputs, Tensor<T> targets) {
  x_ = std::move(inputs);
  y_ = std::move(targets);
  relinearize();
}

template <Real T>
void HessianOperator<T>::relinearize() {
  tape_.clear();
  theta_ = model_->gather();  // a snapshot: later model updates do not disturb the record
  const std::vector<Tensor<T>> views = model_->split(theta_);
  params_.clear();
  for (const auto& v : views) params_.push_back(tape_.variable(v));
  const Var<T> z = model_->forward(Var<T>(x_), std::span<const Var<T>>(params_));
  loss_ = head_->loss(z, y_);
}

template <Real T>
void HessianOperator<T>::apply(const Tensor<T>& v, Tensor<T>& out) {
  check_apply_arguments(*this, v, out);
  model_->split_into(v, tangent_views_);
  model_->split_into(out, out_views_);
  tape_.hvp_into(std::span<const Var<T>>(&loss_, 1), std::span<const Tensor<T>>(&one_, 1), params_, tangent_views_,
                 out_views_);
}

template <Real T>
std::string HessianOperator<T>::name() const {
  return "Hessian(" + head_->name() + ", N=" + std::to_string(x_.shape()[0]) + ")";
}

template class HessianOperator<float>;
template class HessianOperator<double>;

}  // namespace amari::curvature
