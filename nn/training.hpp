// Loss and gradient of a model with a head on a batch, and evaluation helpers.
#pragma once

#include <vector>

#include <amari/nn/heads.hpp>
#include <amari/nn/model.hpp>

namespace amari::nn {

/// Mean loss of `head` on `model`'s logits for inputs x (N, D) and targets y (N, C), and its
/// gradient with respect to all parameters written into `gradient` (flat, length P; ShapeError
/// otherwise). One forward pass recorded on `tape` (cleared first) and one reverse sweep; the
/// gradient lands directly in the flat vector through per-parameter views (no copy).
template <Real T>
T loss_and_gradient(const Model<T>& model, const Head<T>& head, const Tensor<T>& x, const Tensor<T>& y,
                    Tensor<T>& gradient, Tape<T>& tape);

/// Same, with a tape owned by the call.
template <Real T>
T loss_and_gradient(const Model<T>& model, const Head<T>& head, const Tensor<T>& x, const Tensor<T>& y,
                    Tensor<T>& gradient) {
  Tape<T> tape;
  return loss_and_gradient(model, head, x, y, gradient, tape);
}

/// Mean loss and accuracy over a whole labelled set, evaluated in batches of `batch_size`
/// (plain forward passes, no tape).
struct Evaluation {
  double loss = 0;
  double accuracy = 0;
};
template <Real T>
Evaluation evaluate(const Model<T>& model, const Head<T>& head, const Tensor<T>& inputs,
                    const std::vector<int>& labels, Index num_classes, Index batch_size = 1000);

}  // namespace amari::nn
