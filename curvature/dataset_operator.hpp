// A curvature operator over a whole data set, not one minibatch: the product of the mean over all
// N examples, assembled batch by batch,
//   A v = sum_b (N_b / N) A_b v,
// where A_b is the operator of the same kind on batch b (each per-batch operator is itself a mean
// over its N_b examples). Batches are consecutive rows, so memory is bounded by one batch's record
// (or all records, with Storage::keep). For the Monte-Carlo Fisher, example i's labels are keyed by
// its row index in the data set, so the result does not depend on the batch size.
//
// The operator equals the operator of the whole data set as one batch (up to rounding) whenever
// examples do not interact inside the model: not for batch norm in train mode, whose statistics
// (and so outputs and curvature) depend on the batch; evaluate such models in eval mode here.
//
// A data set sharded over MPI ranks: each rank builds the DatasetOperator of its rows (with
// first_example_id = its global offset) and wraps it in a DistributedOperator with weight n_r / N
// (distributed_operator.hpp); the product is then the operator of the whole data set on every rank.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <amari/curvature/linear_operator.hpp>
#include <amari/curvature/second_order.hpp>
#include <amari/nn/heads.hpp>
#include <amari/nn/model.hpp>

namespace amari::curvature {

/// The curvature of `kind` for the mean loss over a data set of inputs (N, D) and targets (N, C).
///
/// Invariants: with Storage::keep it holds exactly num_batches() batch operators, all recorded at
/// one parameter point (that of construction or of the last successful relinearize()), so a
/// product is always the operator of one point; relinearize() builds every new record before
/// replacing any (a failure in any batch keeps all the old ones). The data set is held by value
/// (Tensor copies share storage: clone() the inputs first if the caller will modify them). Not
/// copyable (it owns per-batch operators); movable.
template <Real T>
class DatasetOperator final : public LinearOperator<T> {
 public:
  /// Whether per-batch records are kept between products (one forward pass per batch once,
  /// memory of all records) or recorded again in every product (one forward pass per batch per
  /// product, memory of one record).
  enum class Storage { keep, recompute };

  /// Model and head are referenced and must outlive the operator; the operator is at the model's
  /// parameters of construction (Storage::keep) or of each product (Storage::recompute) until
  /// relinearize(). ShapeError if inputs and targets disagree on N or N = 0; ValueError if
  /// batch_size < 1 or samples < 1. first_example_id: the index of row 0 in a larger data set
  /// that this one is a shard of (the Monte-Carlo labels of row i are keyed by first_example_id + i;
  /// see DistributedOperator for the operator over all shards).
  DatasetOperator(Curvature kind, const nn::Model<T>& model, const nn::Head<T>& head, Tensor<T> inputs,
                  Tensor<T> targets, Index batch_size, Storage storage = Storage::keep, int samples = 1,
                  std::uint64_t seed = 0, Index first_example_id = 0);
  Index size() const override { return model_->num_parameters(); }
  /// out = sum_b (N_b / N) A_b v. Cost: one product per batch (plus a forward pass per batch with
  /// Storage::recompute).
  void apply(const Tensor<T>& v, Tensor<T>& out) override;
  /// "Dataset(<kind>, N=.., batch=..)".
  std::string name() const override;
  /// Re-records every batch at the model's current parameters (Storage::keep).
  void relinearize();
  Index num_examples() const { return inputs_.dim(0); }
  Index num_batches() const { return (num_examples() + batch_size_ - 1) / batch_size_; }

 private:
  std::unique_ptr<LinearOperator<T>> batch_operator(Index b) const;

  Curvature kind_;
  const nn::Model<T>* model_;
  const nn::Head<T>* head_;
  Tensor<T> inputs_, targets_;
  Index batch_size_;
  Storage storage_;
  int samples_;
  std::uint64_t seed_;
  Index first_example_id_;
  std::vector<std::unique_ptr<LinearOperator<T>>> kept_;
  Tensor<T> partial_;
};

extern template class DatasetOperator<float>;
extern template class DatasetOperator<double>;

}  // namespace amari::curvature
