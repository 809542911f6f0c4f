#include <amari/curvature/dataset_operator.hpp>

#include <numeric>

#include <amari/curvature/fisher.hpp>
#include <amari/curvature/ggn.hpp>
#include <amari/curvature/hessian.hpp>
#include <amari/curvature/vector_ops.hpp>

namespace amari::curvature {

template <Real T>
DatasetOperator<T>::DatasetOperator(Curvature kind, const nn::Model<T>& model, const nn::Head<T>& head,
                                    Tensor<T> inputs, Tensor<T> targets, Index batch_size, Storage storage,
                                    int samples, std::uint64_t seed, Index first_example_id)
    : kind_(kind),
      model_(&model),
      head_(&head),
      inputs_(std::move(inputs)),
      targets_(std::move(targets)),
      batch_size_(batch_size),
      storage_(storage),
      samples_(samples),
      seed_(seed),
      first_example_id_(first_example_id) {
  if (!inputs_.defined() || !targets_.defined() || inputs_.rank() != 2 || targets_.rank() != 2 ||
      inputs_.dim(0) != targets_.dim(0) || inputs_.dim(0) == 0) {
    throw ShapeError("DatasetOperator: inputs " + inputs_.shape().str() + " and targets " + targets_.shape().str() +
                     " must be (N, D) and (N, C) with the same N >= 1");
  }
  if (batch_size < 1) throw ValueError("DatasetOperator: batch_size must be >= 1, got " + std::to_string(batch_size));
  if (samples < 1) throw ValueError("DatasetOperator: samples must be >= 1, got " + std::to_string(samples));
  relinearize();
}

template <Real T>
std::unique_ptr<LinearOperator<T>> DatasetOperator<T>::batch_operator(Index b) const {
  const Index n = num_examples(), first = b * batch_size_, rows = std::min(batch_size_, n - first);
  const Index d = inputs_.dim(1), c = targets_.dim(1);
  // Views: the batch operators read the data set's rows without copying them.
  const Tensor<T> x = inputs_.view(first * d, Shape{rows, d});
  const Tensor<T> y = targets_.view(first * c, Shape{rows, c});
  if (kind_ == Curvature::mc_fisher) {
    std::vector<Index> ids(static_cast<std::size_t>(rows));
    // Labels keyed by the example's index in the (whole, possibly sharded) data set.
    std::iota(ids.begin(), ids.end(), first_example_id_ + first);
    return std::make_unique<MonteCarloFisherOperator<T>>(*model_, *head_, x, samples_, seed_, std::move(ids));
  }
  return make_curvature(kind_, *model_, *head_, x, y, samples_, seed_);
}

template <Real T>
void DatasetOperator<T>::relinearize() {
  // Build every batch's record first and swap them in at the end: a throw leaves the old ones.
  std::vector<std::unique_ptr<LinearOperator<T>>> kept;
  if (storage_ == Storage::keep) {
    for (Index b = 0; b < num_batches(); ++b) kept.push_back(batch_operator(b));
  }
  kept_.swap(kept);
}

template <Real T>
void DatasetOperator<T>::apply(const Tensor<T>& v, Tensor<T>& out) {
  check_apply_arguments(*this, v, out);
  if (!partial_.defined()) partial_ = Tensor<T>::uninitialized(v.shape());
  out.fill(T(0));
  const double n = static_cast<double>(num_examples());
  for (Index b = 0; b < num_batches(); ++b) {
    const Index rows = std::min(batch_size_, num_examples() - b * batch_size_);
    if (storage_ == Storage::keep) {
      kept_[static_cast<std::size_t>(b)]->apply(v, partial_);
    } else {
      batch_operator(b)->apply(v, partial_);
    }
    axpy(static_cast<double>(rows) / n, partial_, out);  // the batch's share of the mean
  }
}

template <Real T>
std::string DatasetOperator<T>::name() const {
  return std::string("Dataset(") + to_string(kind_) + ", N=" + std::to_string(num_examples()) +
         ", batch=" + std::to_string(batch_size_) + ")";
}

template class DatasetOperator<float>;
template class DatasetOperator<double>;

}  // namespace amari::curvature
