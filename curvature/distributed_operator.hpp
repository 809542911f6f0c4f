// Data-parallel curvature: rank r holds n_r of the N examples of a batch and an operator A_r of
// their mean; the operator of the whole batch is the example-weighted mean
//   A v = sum_r (n_r / N) A_r v,
// the same identity DatasetOperator uses for batches on one process (dataset_operator.hpp). Each
// product applies the local operator and reduces with Communicator::allreduce_sum, whose fixed rank
// order gives every rank bitwise the same A v: conjugate gradient then runs identically everywhere.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include <amari/curvature/linear_operator.hpp>
#include <amari/curvature/second_order.hpp>
#include <amari/nn/communicator.hpp>

namespace amari::curvature {

/// sum_r weight_r A_r v over the ranks of a communicator. Every rank must apply it the same number
/// of times (a collective per product).
template <Real T>
class DistributedOperator final : public LinearOperator<T> {
 public:
  /// `local` is this rank's A_r (null for a rank holding no example: it contributes 0), `size` the
  /// parameter count P, `weight` n_r / N (nn::Shard::weight()). The communicator is borrowed and
  /// must outlive the operator. ShapeError if local's size is not `size`; ValueError if weight is
  /// negative or not finite.
  DistributedOperator(std::unique_ptr<LinearOperator<T>> local, Index size, nn::Communicator& comm,
                      double weight);
  Index size() const override { return size_; }
  /// out = sum_r weight_r A_r v. Cost: one local product, P multiplications and one allreduce_sum
  /// of P values.
  void apply(const Tensor<T>& v, Tensor<T>& out) override;
  /// out = A v as apply() gives it, and v^T A v. On one rank, the local operator's own form times
  /// the weight (what a single process computes, bit for bit); on several, the dot of v with the
  /// reduced product (LinearOperator's default), so a product stays one allreduce_sum, the count
  /// docs/scaling.md gives.
  double apply_quadratic_form(const Tensor<T>& v, Tensor<T>& out) override;
  /// "Distributed(<local name>, k ranks)".
  std::string name() const override;
  /// This rank's operator (null when it holds no example).
  LinearOperator<T>* local() const { return local_.get(); }

 private:
  std::unique_ptr<LinearOperator<T>> local_;
  Index size_;
  nn::Communicator* comm_;
  double weight_;
};

/// The curvature of `kind` over the union of the ranks' shards (x, y: this rank's `shard.local`
/// rows), as a DistributedOperator. For mc_fisher, example i of this rank is keyed by its global
/// index shard.offset + i, so the labels drawn do not depend on the number of ranks. Model, head
/// and communicator must outlive the operator.
template <Real T>
std::unique_ptr<LinearOperator<T>> make_distributed_curvature(
    Curvature kind, const nn::Model<T>& model, const nn::Head<T>& head, const Tensor<T>& x,
    const Tensor<T>& y, nn::Communicator& comm, const nn::Shard& shard, int samples = 1,
    std::uint64_t seed = 0);

extern template class DistributedOperator<float>;
extern template class DistributedOperator<double>;

}  // namespace amari::curvature
