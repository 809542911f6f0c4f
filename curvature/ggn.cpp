#include <amari/curvature/ggn.hpp>

namespace amari::curvature {

namespace {

template <Real T>
void require_target_free(const nn::Head<T>& head, const char* where) {
  if (head.hessian_depends_on_targets()) {
    throw ValueError(
        std::string("GgnOperator") + where + ": the logit Hessian H_L(z, y) of head '" +
        head.name() +
        "' depends on the targets; pass them (GgnOperator(model, head, inputs, targets))");
  }
}

// The targets must be what the head's loss accepts for these logits: checked by evaluating the
// gradient once (every head validates the target shape there, naming both shapes).
template <Real T>
void check_targets(const nn::Head<T>& head, const Tensor<T>& z, const Tensor<T>& y) {
  if (!y.defined())
    throw ValueError("GgnOperator: targets are undefined (head '" + head.name() + "')");
  Tensor<T> g = Tensor<T>::uninitialized(z.shape());
  head.gradient(z, y, g);
}

}  // namespace

template <Real T>
GgnOperator<T>::GgnOperator(const nn::Model<T>& model, const nn::Head<T>& head, Tensor<T> inputs)
    : JtMJOperator<T>(model, std::move(inputs)), head_(&head) {
  require_target_free(head, "");
}

template <Real T>
GgnOperator<T>::GgnOperator(const nn::Model<T>& model, const nn::Head<T>& head, Tensor<T> inputs,
                            Tensor<T> targets)
    : JtMJOperator<T>(model, std::move(inputs)), head_(&head), targets_(std::move(targets)) {
  check_targets(head, this->lin_.logits(), targets_);
}

template <Real T>
void GgnOperator<T>::relinearize(Tensor<T> inputs) {
  require_target_free(*head_, "::relinearize");
  this->lin_.relinearize(std::move(inputs));
  targets_ = Tensor<T>();  // any old targets belonged to the old inputs
}

template <Real T>
void GgnOperator<T>::relinearize(Tensor<T> inputs, Tensor<T> targets) {
  // Record and check first, commit after: a throw leaves the operator as it was.
  nn::RecordedModel<T> record(this->lin_.model(), std::move(inputs));
  check_targets(*head_, record.logits(), targets);
  this->lin_.replace(std::move(record));
  targets_ = std::move(targets);
}

template <Real T>
std::string GgnOperator<T>::name() const {
  return "GGN(" + head_->name() + ", N=" + std::to_string(this->lin_.batch_size()) + ")";
}

template class GgnOperator<float>;
template class GgnOperator<double>;

}  // namespace amari::curvature
