// The MLP configurations the benchmarks share (issue "foundation": small, mnist, wide), with a
// fixed model, batch, targets and parameter-space direction per configuration.
#pragma once

#include <omp.h>

#include <string>
#include <vector>

#include <amari/amari.hpp>

namespace amari::bench {

struct MlpConfig {
  const char* name;
  std::vector<Index> sizes;
  Index batch;
};

inline const std::vector<MlpConfig>& mlp_configs() {
  static const std::vector<MlpConfig> configs = {
      {"small", {64, 64, 64, 10}, 32},
      {"mnist", {784, 256, 256, 10}, 128},
      {"wide", {1024, 1024, 1024, 10}, 256},
  };
  return configs;
}

/// A tanh MLP with a softmax cross-entropy head, a random batch, one-hot targets and a random
/// flat parameter direction v (for JVPs and curvature products).
template <Real T>
struct MlpProblem {
  explicit MlpProblem(const MlpConfig& c)
      : model(nn::mlp<T>(c.sizes, nn::Act::tanh), 1),
        x(Tensor<T>::uninitialized(Shape{c.batch, c.sizes.front()})),
        v(model.zeros_like_parameters()),
        gradient(model.zeros_like_parameters()) {
    nn::Rng rng(42);
    for (Index i = 0; i < x.size(); ++i) x[i] = static_cast<T>(rng.normal());
    for (Index i = 0; i < v.size(); ++i) v[i] = static_cast<T>(rng.normal());
    std::vector<int> labels(static_cast<std::size_t>(c.batch));
    for (auto& l : labels) l = static_cast<int>(rng.below(static_cast<std::uint64_t>(c.sizes.back())));
    y = nn::one_hot<T>(labels, c.sizes.back());
  }
  nn::Model<T> model;
  nn::SoftmaxCrossEntropy<T> head;
  Tensor<T> x, y, v, gradient;

  /// f: the mean loss, one plain forward pass.
  T forward() { return head.loss(model.forward(x), y).item(); }
  /// JVP of the loss along v (parameters only), one dual forward pass.
  T jvp() { return head.loss(model.forward_jvp(x, v), y).tangent().item(); }
  /// VJP: the gradient (forward recorded on the tape + one reverse sweep).
  T vjp() { return nn::loss_and_gradient(model, head, x, y, gradient); }
};

}  // namespace amari::bench
