#include <amari/curvature/linearization.hpp>

namespace amari::curvature {

template <Real T>
ModelLinearization<T>::ModelLinearization(const nn::Model<T>& model, Tensor<T> inputs)
    : model_(&model), x_(std::move(inputs)) {
  relinearize();
}

template <Real T>
void ModelLinearization<T>::relinearize(Tensor<T> inputs) {
  x_ = std::move(inputs);
  relinearize();
}

template <Real T>
void ModelLinearization<T>::relinearize() {
  tape_.clear();
  theta_ = model_->gather();
  std::vector<Tensor<T>> views = model_->split(theta_);
  params_.clear();
  for (const auto& v : views) params_.push_back(tape_.variable(v));
  z_ = model_->forward(Var<T>(x_), std::span<const Var<T>>(params_));
  if (z_.shape().rank() != 2) {
    throw ShapeError("ModelLinearization: the model's output must be logits of shape (N, C), got " +
                     z_.shape().str());
  }
}

template <Real T>
void ModelLinearization<T>::jvp(const Tensor<T>& v, Tensor<T>& a) {
  model_->split_into(v, tangent_views_);  // views into v: no copy, no allocation after the first call
  tape_.jvp_into(params_, tangent_views_, std::span<const Var<T>>(&z_, 1), std::span<Tensor<T>>(&a, 1));
}

template <Real T>
void ModelLinearization<T>::vjp(const Tensor<T>& b, Tensor<T>& out) {
  model_->split_into(out, cotangent_views_);  // the sweep accumulates straight into out
  tape_.vjp_into(std::span<const Var<T>>(&z_, 1), std::span<const Tensor<T>>(&b, 1), params_, cotangent_views_);
}

template class ModelLinearization<float>;
template class ModelLinearization<double>;

}  // namespace amari::curvature
