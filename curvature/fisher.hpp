// Fisher products from score outer products (SEED-NOTES 1 and 4):
//   F v ~ (1 / (N k)) sum_i sum_s J_i^T s_is (s_is^T J_i v),   s_is = grad_z log r(y_is | z_i)
// with two different choices of y, which give two different matrices:
//  - MonteCarloFisherOperator: y_is ~ r(. | z_i), k samples from the model itself. An unbiased
//    estimate of the true Fisher F (= the GGN for the exponential-family heads, ggn.hpp; the
//    matrix of ClosedFormFisherOperator for any head); the error shrinks like 1 / sqrt(k).
//  - EmpiricalFisherOperator: y_i = the data labels (k = 1). The "empirical Fisher": in general
//    neither F nor the GGN, and it does not converge to them with more data unless the model is
//    well specified and fits. Useful as a preconditioner (Martens 2010), not as the Fisher.
// Each product costs one JVP sweep, O(N C k) and one VJP sweep, whatever k is.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <amari/curvature/jtmj_operator.hpp>
#include <amari/nn/heads.hpp>

namespace amari::curvature {

/// The two operators below as J^T M J (jtmj_operator.hpp) with M_i = (1/k) sum_s s_is s_is^T for
/// fixed score matrices S_s (N, C), one per sample.
template <Real T>
class ScoreOuterProductOperator : public JtMJOperator<T> {
 public:
  const nn::Head<T>& head() const { return *head_; }
  /// The fixed scores S_s (N, C), one per sample.
  const std::vector<Tensor<T>>& scores() const { return scores_; }

 protected:
  ScoreOuterProductOperator(const nn::Model<T>& model, const nn::Head<T>& head, Tensor<T> inputs);
  /// b_i = (1/k) sum_s s_is (s_is . a_i): k rank-one logit-space matrices per example.
  void logit_product(const Tensor<T>& z, const Tensor<T>& a, Tensor<T>& b) const override;
  const nn::Head<T>* head_;
  std::vector<Tensor<T>> scores_;
};

/// Monte-Carlo estimate of the true Fisher with k labels sampled from the model per example. The
/// samples are drawn once per (re)linearization with a counter-based generator keyed by
/// (seed, example id, sample), so every product of a CG solve applies the same fixed symmetric PSD
/// matrix, whatever the thread count. The example id of row i is example_ids[i] (its index in the
/// data set, e.g. nn::Batch::indices), or i when example_ids is empty: with ids, the operator of
/// a batch equals the example-weighted mean of the operators of any split of it (for models whose
/// examples do not interact, i.e. no batch norm in train mode).
template <Real T>
class MonteCarloFisherOperator final : public ScoreOuterProductOperator<T> {
 public:
  /// k >= 1 samples per example (ValueError otherwise); example_ids empty or one per row
  /// (ShapeError otherwise).
  MonteCarloFisherOperator(const nn::Model<T>& model, const nn::Head<T>& head, Tensor<T> inputs, int samples,
                           std::uint64_t seed, std::vector<Index> example_ids = {});
  /// "MC-Fisher(<head>, N=.., k=..)".
  std::string name() const override;
  /// New linearization point (the model's current parameters), new samples from `seed`. Both
  /// relinearize calls are all-or-nothing: after a throw the operator is unchanged.
  void relinearize(std::uint64_t seed);
  void relinearize(Tensor<T> inputs, std::uint64_t seed, std::vector<Index> example_ids = {});
  int samples() const { return samples_; }

 private:
  std::vector<Tensor<T>> draw(const Tensor<T>& z, std::uint64_t seed, const std::vector<Index>& example_ids) const;
  int samples_;
  std::vector<Index> example_ids_;
};

/// The empirical Fisher: score outer products at the data labels y (N, C). Not the Fisher.
template <Real T>
class EmpiricalFisherOperator final : public ScoreOuterProductOperator<T> {
 public:
  EmpiricalFisherOperator(const nn::Model<T>& model, const nn::Head<T>& head, Tensor<T> inputs, Tensor<T> targets);
  /// "EmpiricalFisher(<head>, N=..)".
  std::string name() const override;
  /// New linearization point (and optionally a new batch); all-or-nothing: after a throw (e.g.
  /// targets that do not match the logits) the operator is unchanged.
  void relinearize();
  void relinearize(Tensor<T> inputs, Tensor<T> targets);

 private:
  Tensor<T> scores_at(const Tensor<T>& z, const Tensor<T>& targets) const;
  Tensor<T> targets_;
};

extern template class ScoreOuterProductOperator<float>;
extern template class ScoreOuterProductOperator<double>;
extern template class MonteCarloFisherOperator<float>;
extern template class MonteCarloFisherOperator<double>;
extern template class EmpiricalFisherOperator<float>;
extern template class EmpiricalFisherOperator<double>;

}  // namespace amari::curvature
