#include <amari/curvature/hessian.hpp>

namespace amari::curvature {

template <Real T>
HessianOperator<T>::HessianOperator(const nn::Model<T>& model, const nn::Head<T>& head, Tensor<T> inputs,
                                    Tensor<T> targets)
    : head_(&head), rec_(model, std::move(inputs), {.head = &head, .targets = std::move(targets)}) {}

template <Real T>
void HessianOperator<T>::relinearize(Tensor<T> inputs, Tensor<T> targets) {
  // The new record replaces the old one only once it is complete (strong guarantee).
  rec_ = nn::RecordedModel<T>(rec_.model(), std::move(inputs), {.head = head_, .targets = std::move(targets)});
}

template <Real T>
void HessianOperator<T>::relinearize() {
  rec_ = nn::RecordedModel<T>(rec_.model(), rec_.inputs(), {.head = head_, .targets = rec_.targets()});
}

template <Real T>
void HessianOperator<T>::apply(const Tensor<T>& v, Tensor<T>& out) {
  check_apply_arguments(*this, v, out);
  rec_.loss_hvp(v, out);  // forward-over-reverse on the recorded mean loss
}

template <Real T>
std::string HessianOperator<T>::name() const {
  return "Hessian(" + head_->name() + ", N=" + std::to_string(rec_.batch_size()) + ")";
}

template class HessianOperator<float>;
template class HessianOperator<double>;

}  // namespace amari::curvature
