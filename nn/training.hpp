// Loss and gradient of a model with a head on a batch, and evaluation helpers.
#pragma once

#include <cstdint>
#include <vector>

#include <amari/nn/communicator.hpp>
#include <amari/nn/heads.hpp>
#include <amari/nn/model.hpp>

namespace amari::nn {

/// Mean loss of `head` on `model`'s logits for inputs x (N, ...) and targets y (N, C), and its
/// gradient with respect to all parameters written into `gradient` (flat, length P; ShapeError
/// otherwise). One forward pass recorded by an nn::RecordedModel on the model's own parameters (no
/// copy; the record ends with the call) and one reverse sweep; the gradient lands directly in the
/// flat vector through per-parameter views (no copy).
/// This is the forward pass of a training step: in Mode::train it starts a new step (new dropout
/// masks: model.step() is incremented first) and updates the model's running statistics, once
/// (RecordOptions::update_state). The batch is the step's whole batch: model.first_example() is
/// set to 0.
template <Real T>
T loss_and_gradient(Model<T>& model, const Head<T>& head, const Tensor<T>& x, const Tensor<T>& y,
                    Tensor<T>& gradient);

/// Data-parallel: the mean loss and gradient over the union of every rank's shard, on every rank.
/// x and y are this rank's rows (`shard.local` of them, possibly 0; see nn/communicator.hpp); the
/// local mean loss and gradient are weighted by n_r / N and summed in rank order (two
/// allreduce_sum: P values and one), so every rank holds bitwise the same result, equal to the
/// single-process result on the union up to rounding for models whose examples do not interact
/// (no batch norm in train mode). model.first_example() is set to shard.offset, so dropout draws
/// for every row the mask one process draws for it in the union (nn::RandomKey). The step counter
/// moves on every rank, also with 0 rows.
template <Real T>
T loss_and_gradient(Model<T>& model, const Head<T>& head, const Tensor<T>& x, const Tensor<T>& y,
                    Tensor<T>& gradient, Communicator& comm, const Shard& shard);

/// A fingerprint of a model's structure: parameter and state names and shapes, and the count.
/// Two models that can exchange flat parameter vectors have equal fingerprints.
template <Real T>
std::uint64_t structure_fingerprint(const Model<T>& model);

/// The start of data-parallel training: checks that every rank's model has the same structure
/// (Communicator::agree: ValueError on every rank otherwise, before any transfer), then copies rank
/// 0's parameters, state and step counter to every rank. Cost: one allgather of 8 bytes and
/// broadcasts of P parameters, S state values (if any) and the step counter.
template <Real T>
void synchronize_model(Communicator& comm, Model<T>& model);

/// The same loss and gradient with no side effect: the pass runs in model.mode() at model.step()
/// (the current dropout masks) and leaves the state alone. The same RecordedModel and sweep as
/// loss_and_gradient without the state update. For measurements and checks.
template <Real T>
T gradient_at(const Model<T>& model, const Head<T>& head, const Tensor<T>& x, const Tensor<T>& y,
              Tensor<T>& gradient);

/// Mean loss and accuracy over a whole labelled set, evaluated in batches of `batch_size`
/// (plain forward passes in Mode::eval, no tape). Inputs (N, D): rows are examples.
struct Evaluation {
  double loss = 0;
  double accuracy = 0;
};
template <Real T>
Evaluation evaluate(const Model<T>& model, const Head<T>& head, const Tensor<T>& inputs,
                    const std::vector<int>& labels, Index num_classes, Index batch_size = 1000);

}  // namespace amari::nn
