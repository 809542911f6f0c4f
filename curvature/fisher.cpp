#include <amari/curvature/fisher.hpp>

#include <algorithm>

#include <amari/curvature/detail/sampled_scores.hpp>

namespace amari::curvature {

template <Real T>
ScoreOuterProductOperator<T>::ScoreOuterProductOperator(const nn::Model<T>& model, const nn::Head<T>& head,
                                                        Tensor<T> inputs)
    : JtMJOperator<T>(model, std::move(inputs)), head_(&head) {}

template <Real T>
void ScoreOuterProductOperator<T>::logit_product(const Tensor<T>& z, const Tensor<T>& a, Tensor<T>& b) const {
  const Index n = z.dim(0), c = z.dim(1);
  const double weight = 1.0 / static_cast<double>(scores_.size());  // the mean over the k samples
  b.fill(T(0));
  for (const Tensor<T>& s : scores_) {
    for (Index i = 0; i < n; ++i) {
      // b_i += s_i (s_i . a_i): the rank-one logit-space curvature of one label.
      double sa = 0;
      for (Index j = 0; j < c; ++j) sa += static_cast<double>(s[i * c + j]) * a[i * c + j];
      const T coef = static_cast<T>(sa * weight);
      for (Index j = 0; j < c; ++j) b[i * c + j] += coef * s[i * c + j];
    }
  }
}

template <Real T>
MonteCarloFisherOperator<T>::MonteCarloFisherOperator(const nn::Model<T>& model, const nn::Head<T>& head,
                                                      Tensor<T> inputs, int samples, std::uint64_t seed,
                                                      std::vector<Index> example_ids)
    : ScoreOuterProductOperator<T>(model, head, std::move(inputs)), samples_(samples), example_ids_(std::move(example_ids)) {
  if (samples < 1) throw ValueError("MonteCarloFisherOperator: needs at least 1 sample, got " + std::to_string(samples));
  this->scores_ = draw(this->lin_.logits(), seed, example_ids_);
}

namespace {

void check_example_ids(const std::vector<Index>& ids, Index rows) {
  if (!ids.empty() && static_cast<Index>(ids.size()) != rows) {
    throw ShapeError("MonteCarloFisherOperator: " + std::to_string(ids.size()) + " example ids for a batch of " +
                     std::to_string(rows) + " rows");
  }
}

}  // namespace

template <Real T>
std::vector<Tensor<T>> MonteCarloFisherOperator<T>::draw(const Tensor<T>& z, std::uint64_t seed,
                                                         const std::vector<Index>& example_ids) const {
  check_example_ids(example_ids, z.dim(0));
  return detail::sampled_scores(*this->head_, z, seed, samples_, example_ids);
}

template <Real T>
void MonteCarloFisherOperator<T>::relinearize(std::uint64_t seed) {
  // Record and draw first, commit after: a throw leaves the operator as it was.
  nn::RecordedModel<T> record(this->lin_.model(), this->lin_.inputs());
  std::vector<Tensor<T>> scores = draw(record.logits(), seed, example_ids_);
  this->lin_.replace(std::move(record));
  this->scores_ = std::move(scores);
}

template <Real T>
void MonteCarloFisherOperator<T>::relinearize(Tensor<T> inputs, std::uint64_t seed, std::vector<Index> example_ids) {
  check_example_ids(example_ids, inputs.defined() && inputs.rank() > 0 ? inputs.dim(0) : 0);
  nn::RecordedModel<T> record(this->lin_.model(), std::move(inputs));
  std::vector<Tensor<T>> scores = draw(record.logits(), seed, example_ids);
  this->lin_.replace(std::move(record));
  this->scores_ = std::move(scores);
  example_ids_ = std::move(example_ids);
}

template <Real T>
std::string MonteCarloFisherOperator<T>::name() const {
  return "MC-Fisher(" + this->head_->name() + ", N=" + std::to_string(this->lin_.batch_size()) +
         ", k=" + std::to_string(samples_) + ")";
}

template <Real T>
EmpiricalFisherOperator<T>::EmpiricalFisherOperator(const nn::Model<T>& model, const nn::Head<T>& head,
                                                    Tensor<T> inputs, Tensor<T> targets)
    : ScoreOuterProductOperator<T>(model, head, std::move(inputs)), targets_(std::move(targets)) {
  this->scores_.assign(1, scores_at(this->lin_.logits(), targets_));
}

template <Real T>
Tensor<T> EmpiricalFisherOperator<T>::scores_at(const Tensor<T>& z, const Tensor<T>& targets) const {
  Tensor<T> score = Tensor<T>::uninitialized(z.shape());
  this->head_->score(z, targets, score);  // at the data labels: the empirical Fisher
  return score;
}

template <Real T>
void EmpiricalFisherOperator<T>::relinearize() {
  nn::RecordedModel<T> record(this->lin_.model(), this->lin_.inputs());
  Tensor<T> score = scores_at(record.logits(), targets_);
  this->lin_.replace(std::move(record));
  this->scores_.assign(1, std::move(score));
}

template <Real T>
void EmpiricalFisherOperator<T>::relinearize(Tensor<T> inputs, Tensor<T> targets) {
  // The targets are checked against the new logits before anything is replaced (the old code
  // recorded the new inputs first and then threw, leaving a record and scores of different N).
  nn::RecordedModel<T> record(this->lin_.model(), std::move(inputs));
  Tensor<T> score = scores_at(record.logits(), targets);
  this->lin_.replace(std::move(record));
  this->scores_.assign(1, std::move(score));
  targets_ = std::move(targets);
}

template <Real T>
std::string EmpiricalFisherOperator<T>::name() const {
  return "EmpiricalFisher(" + this->head_->name() + ", N=" + std::to_string(this->lin_.batch_size()) + ")";
}

template class ScoreOuterProductOperator<float>;
template class ScoreOuterProductOperator<double>;
template class MonteCarloFisherOperator<float>;
template class MonteCarloFisherOperator<double>;
template class EmpiricalFisherOperator<float>;
template class EmpiricalFisherOperator<double>;

}  // namespace amari::curvature
