// Normalization and regularization layers: LayerNorm, BatchNorm, Dropout. The first two are modules
// over the fused primitives layer_norm and batch_norm; batch norm also keeps running statistics as
// model state (nn/module.hpp), and dropout draws its masks from the forward pass's key.
#pragma once

#include <cmath>
#include <string>
#include <vector>

#include <amari/nn/module.hpp>

namespace amari::nn {

/// PyTorch's nn.LayerNorm(features): each row normalized over its last axis, then scaled and shifted
/// per feature. x (..., features). Parameters "weight" (ones) and "bias" (zeros).
template <Real T>
class LayerNorm final : public Layer<T, LayerNorm<T>> {
 public:
  explicit LayerNorm(Index features, double eps = 1e-5) : features_(features), eps_(eps) {
    if (features <= 0 || !(eps > 0)) {
      throw ValueError("LayerNorm: needs features > 0 and eps > 0, got features=" + std::to_string(features) +
                       ", eps=" + std::to_string(eps));
    }
  }
  std::string describe() const override { return "LayerNorm(" + std::to_string(features_) + ")"; }
  void declare(std::vector<ParamSpec>& out, const std::string& prefix) const override {
    out.push_back({prefix + "weight", Shape{features_}, Init::ones, features_, features_});
    out.push_back({prefix + "bias", Shape{features_}, Init::zeros, features_, features_});
  }
  template <Value V>
  V apply(const V& x, ForwardContext<V>& c) const {
    if (x.shape().rank() < 1 || x.shape().dim(-1) != features_) {
      throw ShapeError(describe() + ": expects inputs (..., " + std::to_string(features_) + "), got " +
                       x.shape().str());
    }
    const V& gamma = c.next();
    return layer_norm(x, gamma, c.next(), eps_);
  }

 private:
  Index features_;
  double eps_;
};

/// Batch normalization per channel (Ioffe and Szegedy 2015), PyTorch's nn.BatchNorm2d for
/// channels-last images (N, H, W, C) and nn.BatchNorm1d for (N, C). Parameters "weight" (ones),
/// "bias" (zeros); state "running_mean" (zeros), "running_var" (ones).
/// Mode::train: normalizes with the batch's statistics (so every output depends on the whole batch,
/// and so do its derivatives and curvature products); the training pass (update_state) also moves
/// the running statistics as PyTorch does: r = (1 - momentum) r + momentum * batch value, with the
/// unbiased batch variance (M / (M - 1) times the biased one, M values per channel).
/// Mode::eval: y = (x - running_mean) / sqrt(running_var + eps) * weight + bias, an affine map per
/// channel that treats the running statistics as constants.
template <Real T>
class BatchNorm final : public Layer<T, BatchNorm<T>> {
 public:
  explicit BatchNorm(Index channels, double eps = 1e-5, double momentum = 0.1)
      : channels_(channels), eps_(eps), momentum_(momentum) {
    if (channels <= 0 || !(eps > 0) || !(momentum >= 0 && momentum <= 1)) {
      throw ValueError("BatchNorm: needs channels > 0, eps > 0 and momentum in [0, 1], got channels=" +
                       std::to_string(channels) + ", eps=" + std::to_string(eps) +
                       ", momentum=" + std::to_string(momentum));
    }
  }
  std::string describe() const override { return "BatchNorm(" + std::to_string(channels_) + ")"; }
  void declare(std::vector<ParamSpec>& out, const std::string& prefix) const override {
    out.push_back({prefix + "weight", Shape{channels_}, Init::ones, channels_, channels_});
    out.push_back({prefix + "bias", Shape{channels_}, Init::zeros, channels_, channels_});
  }
  void declare_state(std::vector<StateSpec>& out, const std::string& prefix) const override {
    out.push_back({prefix + "running_mean", Shape{channels_}, 0.0});
    out.push_back({prefix + "running_var", Shape{channels_}, 1.0});
  }
  template <Value V>
  V apply(const V& x, ForwardContext<V>& c) const {
    const Shape& s = x.shape();
    if ((s.rank() != 2 && s.rank() != 4) || s.dim(-1) != channels_) {
      throw ShapeError(describe() + ": expects (N, " + std::to_string(channels_) + ") or (N, H, W, " +
                       std::to_string(channels_) + "), got " + s.str());
    }
    const V& gamma = c.next();
    const V& beta = c.next();
    Tensor<T>& running_mean = c.next_state();
    Tensor<T>& running_var = c.next_state();
    if (!c.training()) {
      // Per-channel affine map with constant statistics: scale = gamma / sqrt(var + eps).
      Tensor<T> inv_std = Tensor<T>::uninitialized(Shape{channels_});
      for (Index k = 0; k < channels_; ++k) inv_std[k] = static_cast<T>(1.0 / std::sqrt(double(running_var[k]) + eps_));
      const V scale = gamma * constant_like<V>(inv_std);
      const V shift = beta - constant_like<V>(running_mean) * scale;
      return x * scale + shift;
    }
    if (!c.updates_state()) return batch_norm(x, gamma, beta, eps_);
    BatchStats<T> stats;
    V y = batch_norm(x, gamma, beta, eps_, &stats);
    const double m = momentum_;
    const double unbias = stats.count > 1 ? double(stats.count) / double(stats.count - 1) : 1.0;
    for (Index k = 0; k < channels_; ++k) {
      running_mean[k] = static_cast<T>((1 - m) * running_mean[k] + m * stats.mean[k]);
      running_var[k] = static_cast<T>((1 - m) * running_var[k] + m * unbias * stats.variance[k]);
    }
    return y;
  }
  Index channels() const { return channels_; }

 private:
  Index channels_;
  double eps_, momentum_;
};

template <Real T> using BatchNorm2d = BatchNorm<T>;
template <Real T> using BatchNorm1d = BatchNorm<T>;

/// Inverted dropout, PyTorch's nn.Dropout(p): in Mode::train each element is zeroed with
/// probability p and the rest scaled by 1 / (1 - p); in Mode::eval the identity. Masks are keyed by
/// (model seed, model step, this layer's position among the pass's dropout layers, the example's
/// index in the step's batch, the element's index within the example; ForwardContext::
/// dropout_first_element), so a pass re-recorded at the same step (curvature products, line
/// searches) sees the same masks, and k data-parallel ranks draw the masks of one process on the
/// union of their shards.
template <Real T>
class Dropout final : public Layer<T, Dropout<T>> {
 public:
  explicit Dropout(double p = 0.5) : p_(p) {
    if (!(p >= 0 && p < 1)) throw ValueError("Dropout: p must be in [0, 1), got " + std::to_string(p));
  }
  std::string describe() const override { return "Dropout(" + std::to_string(p_).substr(0, 4) + ")"; }
  void declare(std::vector<ParamSpec>&, const std::string&) const override {}
  template <Value V>
  V apply(const V& x, ForwardContext<V>& c) const {
    if (!c.training() || p_ == 0) return x;
    const auto [seed, stream] = c.next_dropout_key();
    return dropout(x, p_, seed, stream, c.dropout_first_element(x.shape().numel()));
  }
  double p() const { return p_; }

 private:
  double p_;
};

}  // namespace amari::nn
