#include <amari/curvature/fisher.hpp>

namespace amari::curvature {

template <Real T>
ScoreOuterProductOperator<T>::ScoreOuterProductOperator(const nn::Model<T>& model, const nn::Head<T>& head,
                                                        Tensor<T> inputs)
    : head_(&head), lin_(model, std::move(inputs)) {}

template <Real T>
void ScoreOuterProductOperator<T>::apply(const Tensor<T>& v, Tensor<T>& out) {
  check_apply_arguments(*this, v, out);
  const Shape& zs = lin_.logits().shape();
  if (!a_.defined() || !(a_.shape() == zs)) {
    a_ = Tensor<T>::uninitialized(zs);
    b_ = Tensor<T>::uninitialized(zs);
  }
  lin_.jvp(v, a_);  // a_i = J_i v
  const Index n = zs[0], c = zs[1];
  const double weight = 1.0 / (static_cast<double>(n) * static_cast<double>(scores_.size()));
  b_.fill(T(0));
  for (const Tensor<T>& s : scores_) {
    for (Index i = 0; i < n; ++i) {
      // b_i += s_i (s_i . a_i): the rank-one logit-space curvature of one sampled label.
      double sa = 0;
      for (Index j = 0; j < c; ++j) sa += static_cast<double>(s[i * c + j]) * a_[i * c + j];
      const T coef = static_cast<T>(sa * weight);
      for (Index j = 0; j < c; ++j) b_[i * c + j] += coef * s[i * c + j];
    }
  }
  lin_.vjp(b_, out);
}

template <Real T>
MonteCarloFisherOperator<T>::MonteCarloFisherOperator(const nn::Model<T>& model, const nn::Head<T>& head,
                                                      Tensor<T> inputs, int samples, std::uint64_t seed)
    : ScoreOuterProductOperator<T>(model, head, std::move(inputs)), samples_(samples) {
  if (samples < 1) throw ValueError("MonteCarloFisherOperator: needs at least 1 sample, got " + std::to_string(samples));
  draw(seed);
}

template <Real T>
void MonteCarloFisherOperator<T>::draw(std::uint64_t seed) {
  const Tensor<T>& z = this->lin_.logits();
  this->scores_.clear();
  for (int s = 0; s < samples_; ++s) {
    // y ~ r(. | z) from the model itself: this is what makes it the true Fisher (SEED-NOTES 1).
    const Tensor<T> y = this->head_->sample(z, seed, static_cast<std::uint64_t>(s));
    Tensor<T> score = Tensor<T>::uninitialized(z.shape());
    this->head_->score(z, y, score);
    this->scores_.push_back(std::move(score));
  }
}

template <Real T>
void MonteCarloFisherOperator<T>::relinearize(std::uint64_t seed) {
  this->lin_.relinearize();
  draw(seed);
}

template <Real T>
void MonteCarloFisherOperator<T>::relinearize(Tensor<T> inputs, std::uint64_t seed) {
  this->lin_.relinearize(std::move(inputs));
  draw(seed);
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
  compute_scores();
}

template <Real T>
void EmpiricalFisherOperator<T>::compute_scores() {
  const Tensor<T>& z = this->lin_.logits();
  Tensor<T> score = Tensor<T>::uninitialized(z.shape());
  this->head_->score(z, targets_, score);  // at the data labels: the empirical Fisher
  this->scores_.assign(1, std::move(score));
}

template <Real T>
void EmpiricalFisherOperator<T>::relinearize() {
  this->lin_.relinearize();
  compute_scores();
}

template <Real T>
void EmpiricalFisherOperator<T>::relinearize(Tensor<T> inputs, Tensor<T> targets) {
  this->lin_.relinearize(std::move(inputs));
  targets_ = std::move(targets);
  compute_scores();
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
