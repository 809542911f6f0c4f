#include <amari/curvature/ggn.hpp>

namespace amari::curvature {

template <Real T>
GgnOperator<T>::GgnOperator(const nn::Model<T>& model, const nn::Head<T>& head, Tensor<T> inputs)
    : JtMJOperator<T>(model, std::move(inputs)), head_(&head) {}

template <Real T>
std::string GgnOperator<T>::name() const {
  return "GGN(" + head_->name() + ", N=" + std::to_string(this->lin_.batch_size()) + ")";
}

template class GgnOperator<float>;
template class GgnOperator<double>;

}  // namespace amari::curvature
