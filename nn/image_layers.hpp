// Layers for images in channels-last layout (N, H, W, C): convolution, pooling, and the reshapes
// between images and feature vectors. Each is a thin module over one primitive of autodiff/ops.hpp.
//
// PyTorch users: amari's images are NHWC where PyTorch's are NCHW, and a convolution weight is
// (KH, KW, C_in/groups, C_out) where PyTorch's is (C_out, C_in/groups, KH, KW); Flatten flattens in
// PyTorch's (C, H, W) order, so the Linear layer after it takes PyTorch's weights unchanged
// (transposed, as for every Linear). nn/torch_layout.hpp converts tensors and whole weight files.
#pragma once

#include <array>
#include <string>
#include <vector>

#include <amari/nn/module.hpp>

namespace amari::nn {

namespace detail {
inline std::string pair_str(const std::array<Index, 2>& a) {
  return a[0] == a[1] ? std::to_string(a[0]) : "(" + std::to_string(a[0]) + ", " + std::to_string(a[1]) + ")";
}
/// ShapeError unless x is (N, H, W, channels) (channels < 0: any).
inline void require_image(const char* layer, const std::string& described, const Shape& x, Index channels) {
  if (x.rank() != 4 || (channels >= 0 && x[3] != channels)) {
    throw ShapeError(std::string(layer) + ": " + described + " expects images (N, H, W, " +
                     (channels >= 0 ? std::to_string(channels) : std::string("C")) + ") (channels last), got " +
                     x.str());
  }
}
}  // namespace detail

/// 2-D convolution, PyTorch's nn.Conv2d in channels-last layout: x (N, H, W, in_channels) ->
/// (N, OH, OW, out_channels). Parameters "weight" (KH, KW, in/groups, out) and "bias" (out), both
/// initialized as PyTorch does: U(-1/sqrt(fan_in), 1/sqrt(fan_in)), fan_in = in/groups * KH * KW.
/// Cost: 2 N OH OW KH KW in/groups out flops forward.
template <Real T>
class Conv2d final : public Layer<T, Conv2d<T>> {
 public:
  // The options are taken by reference: GCC 12.2's SLP vectorizer, at -O2 -march=native on
  // AVX-512 machines, miscompiled the by-value copy of this aggregate into the member (a stride of
  // 2 also appeared as padding[0]). tests/nn/layers_test.cpp keeps a regression check.
  Conv2d(Index in_channels, Index out_channels, std::array<Index, 2> kernel, const Conv2dOptions& options = {},
         bool bias = true)
      : in_(in_channels), out_(out_channels), kernel_(kernel), options_(options), bias_(bias) {
    if (in_ <= 0 || out_ <= 0 || kernel_[0] <= 0 || kernel_[1] <= 0 || options_.groups <= 0 ||
        in_ % options_.groups != 0 || out_ % options_.groups != 0) {
      throw ValueError("Conv2d: needs positive channels and kernel, and groups dividing both channel counts; got in=" +
                       std::to_string(in_) + ", out=" + std::to_string(out_) + ", kernel " +
                       detail::pair_str(kernel_) + ", groups=" + std::to_string(options_.groups));
    }
  }
  /// A square kernel.
  Conv2d(Index in_channels, Index out_channels, Index kernel, const Conv2dOptions& options = {}, bool bias = true)
      : Conv2d(in_channels, out_channels, {kernel, kernel}, options, bias) {}

  std::string describe() const override {
    std::string s = "Conv2d(" + std::to_string(in_) + " -> " + std::to_string(out_) + ", " +
                    detail::pair_str(kernel_);
    if (options_.stride != std::array<Index, 2>{1, 1}) s += ", stride " + detail::pair_str(options_.stride);
    if (options_.padding != std::array<Index, 2>{0, 0}) s += ", padding " + detail::pair_str(options_.padding);
    if (options_.dilation != std::array<Index, 2>{1, 1}) s += ", dilation " + detail::pair_str(options_.dilation);
    if (options_.groups != 1) s += ", groups " + std::to_string(options_.groups);
    return s + (bias_ ? ")" : ", no bias)");
  }
  void declare(std::vector<ParamSpec>& out, const std::string& prefix) const override {
    const Index fan_in = in_ / options_.groups * kernel_[0] * kernel_[1];
    const Index fan_out = out_ / options_.groups * kernel_[0] * kernel_[1];
    out.push_back({prefix + "weight", Shape{kernel_[0], kernel_[1], in_ / options_.groups, out_}, Init::torch_uniform,
                   fan_in, fan_out, TorchLayout::hwio});
    if (bias_) out.push_back({prefix + "bias", Shape{out_}, Init::torch_uniform, fan_in, fan_out});
  }
  template <Value V>
  V apply(const V& x, ForwardContext<V>& c) const {
    detail::require_image("Conv2d", describe(), x.shape(), in_);
    const std::size_t weight_index = c.position();
    const V& w = c.next();
    const V y = bias_ ? conv2d(x, w, c.next(), options_) : conv2d(x, w, options_);
    c.tap({.kind = LayerTap<V>::Kind::conv2d, .input = &x, .output = &y, .weight_index = weight_index,
           .has_bias = bias_, .kernel = kernel_, .conv = options_});
    return y;
  }
  /// This convolution followed by a ReLU and a max pooling with `pool`'s options, as one
  /// primitive (conv2d_relu_max_pool2d: the same values, derivatives equal up to rounding, and
  /// in a curvature product or a gradient the convolution's full-size tangent and cotangent
  /// never written where its fused rules apply). nn::Sequential calls it for a Conv2d with bias,
  /// a ReLU and a MaxPool2d in a row, when no observer takes the pass's taps (this path reports
  /// none: the convolution's output is not a value of the pass).
  template <Value V>
  V apply_relu_max_pool(const V& x, ForwardContext<V>& c, const Pool2dOptions& pool) const {
    detail::require_image("Conv2d", describe(), x.shape(), in_);
    if (!bias_) throw ValueError("Conv2d::apply_relu_max_pool: " + describe() + " has no bias");
    const V& w = c.next();
    return conv2d_relu_max_pool2d(x, w, c.next(), options_, pool);
  }
  bool has_bias() const { return bias_; }
  Index in_channels() const { return in_; }
  Index out_channels() const { return out_; }
  const std::array<Index, 2>& kernel() const { return kernel_; }
  const Conv2dOptions& options() const { return options_; }

 private:
  Index in_, out_;
  std::array<Index, 2> kernel_;
  Conv2dOptions options_;
  bool bias_;
};

/// Max pooling over windows, PyTorch's nn.MaxPool2d (stride defaults to the kernel): (N, H, W, C) ->
/// (N, OH, OW, C).
template <Real T>
class MaxPool2d final : public Layer<T, MaxPool2d<T>> {
 public:
  explicit MaxPool2d(Index kernel, Index stride = 0, Index padding = 0)
      : options_{.kernel = {kernel, kernel}, .stride = {stride, stride}, .padding = {padding, padding}} {}
  explicit MaxPool2d(const Pool2dOptions& options) : options_(options) {}
  std::string describe() const override { return "MaxPool2d(" + detail::pair_str(options_.kernel) + ")"; }
  void declare(std::vector<ParamSpec>&, const std::string&) const override {}
  template <Value V>
  V apply(const V& x, ForwardContext<V>&) const {
    detail::require_image("MaxPool2d", describe(), x.shape(), -1);
    return max_pool2d(x, options_);
  }
  /// This pooling of relu(x), as one primitive (relu_max_pool2d: the same values and derivatives,
  /// without relu's own pass and stored output). nn::Sequential calls it for a ReLU followed by
  /// this layer.
  template <Value V>
  V apply_after_relu(const V& x) const {
    detail::require_image("MaxPool2d", describe(), x.shape(), -1);
    return relu_max_pool2d(x, options_);
  }
  const Pool2dOptions& options() const { return options_; }

 private:
  Pool2dOptions options_;
};

/// Average pooling over windows, PyTorch's nn.AvgPool2d: (N, H, W, C) -> (N, OH, OW, C).
template <Real T>
class AvgPool2d final : public Layer<T, AvgPool2d<T>> {
 public:
  explicit AvgPool2d(Index kernel, Index stride = 0, Index padding = 0)
      : options_{.kernel = {kernel, kernel}, .stride = {stride, stride}, .padding = {padding, padding}} {}
  explicit AvgPool2d(const Pool2dOptions& options) : options_(options) {}
  std::string describe() const override { return "AvgPool2d(" + detail::pair_str(options_.kernel) + ")"; }
  void declare(std::vector<ParamSpec>&, const std::string&) const override {}
  template <Value V>
  V apply(const V& x, ForwardContext<V>&) const {
    detail::require_image("AvgPool2d", describe(), x.shape(), -1);
    return avg_pool2d(x, options_);
  }

 private:
  Pool2dOptions options_;
};

/// Mean over all pixels, (N, H, W, C) -> (N, C): PyTorch's nn.AdaptiveAvgPool2d(1) + flatten.
template <Real T>
class GlobalAvgPool final : public Layer<T, GlobalAvgPool<T>> {
 public:
  std::string describe() const override { return "GlobalAvgPool"; }
  void declare(std::vector<ParamSpec>&, const std::string&) const override {}
  template <Value V>
  V apply(const V& x, ForwardContext<V>&) const {
    detail::require_image("GlobalAvgPool", describe(), x.shape(), -1);
    return global_avg_pool2d(x);
  }
};

/// (N, ...) -> (N, features), in PyTorch's order: an image (N, H, W, C) is flattened as PyTorch
/// flattens its (N, C, H, W) tensor (channel-major), so weights of the Linear layer after a
/// Flatten transfer from PyTorch unchanged. That costs one permute (a copy of the activations,
/// small next to the convolutions before it); rank 2 passes through and rank 3 is a reshape.
template <Real T>
class Flatten final : public Layer<T, Flatten<T>> {
 public:
  std::string describe() const override { return "Flatten"; }
  void declare(std::vector<ParamSpec>&, const std::string&) const override {}
  template <Value V>
  V apply(const V& x, ForwardContext<V>&) const {
    const Shape& s = x.shape();
    if (s.rank() < 1) throw ShapeError("Flatten: expects a batch (N, ...), got a scalar");
    if (s.rank() <= 2) return x;
    const Index n = s[0];
    Index features = 1;
    for (int a = 1; a < s.rank(); ++a) features *= s[a];
    if (s.rank() == 4) return reshape(permute(x, {0, 3, 1, 2}), Shape{n, features});
    return reshape(x, Shape{n, features});
  }
};

/// (N, features) -> (N, dims...): each example reshaped, e.g. Reshape({28, 28, 1}) turns flat
/// Fashion-MNIST rows into single-channel images (PyTorch's nn.Unflatten(1, ...) in NHWC).
template <Real T>
class Reshape final : public Layer<T, Reshape<T>> {
 public:
  explicit Reshape(std::vector<Index> example_shape) : example_(std::move(example_shape)) {
    if (example_.empty() || example_.size() > 3) {
      throw ValueError("Reshape: an example shape has 1 to 3 dimensions (the batch axis comes first), got " +
                       std::to_string(example_.size()));
    }
  }
  std::string describe() const override {
    std::string s = "Reshape(";
    for (std::size_t i = 0; i < example_.size(); ++i) s += (i ? ", " : "") + std::to_string(example_[i]);
    return s + ")";
  }
  void declare(std::vector<ParamSpec>&, const std::string&) const override {}
  template <Value V>
  V apply(const V& x, ForwardContext<V>&) const {
    if (x.shape().rank() < 1) throw ShapeError("Reshape: expects a batch (N, ...), got a scalar");
    std::vector<Index> dims{x.shape()[0]};
    dims.insert(dims.end(), example_.begin(), example_.end());
    const Shape to{std::span<const Index>(dims)};
    if (to.numel() != x.shape().numel()) {
      throw ShapeError(describe() + ": cannot reshape " + x.shape().str() + " into " + to.str());
    }
    return reshape(x, to);
  }

 private:
  std::vector<Index> example_;
};

}  // namespace amari::nn
