#include <amari/curvature/linearization.hpp>

namespace amari::curvature {

template <Real T>
ModelLinearization<T>::ModelLinearization(const nn::Model<T>& model, Tensor<T> inputs)
    : rec_(model, std::move(inputs)) {}

template <Real T>
void ModelLinearization<T>::relinearize(Tensor<T> inputs) {
  rec_ = nn::RecordedModel<T>(rec_.model(), std::move(inputs));  // assigned only once recorded
}

template <Real T>
void ModelLinearization<T>::relinearize() {
  rec_ = nn::RecordedModel<T>(rec_.model(), rec_.inputs());
}

template <Real T>
void ModelLinearization<T>::replace(nn::RecordedModel<T> record) {
  if (&record.model() != &rec_.model()) {
    throw ValueError("ModelLinearization::replace: the record was made of a different model");
  }
  rec_ = std::move(record);
}

template class ModelLinearization<float>;
template class ModelLinearization<double>;

}  // namespace amari::curvature
