// The convolutional networks of train_cnn (and of bench/cnn_bench.cpp): a small CNN and a small
// residual network for 28x28 single-channel images given as flat rows (N, 784).
#pragma once

#include <memory>
#include <string>

#include <amari/amari.hpp>

namespace example {

struct CnnOptions {
  bool batch_norm = false;  ///< BatchNorm after each convolution
  double dropout = 0;       ///< Dropout probability before each Linear layer (0: none)
};

/// Reshape to (N, 28, 28, 1), conv 32 3x3 pad 1, ReLU, 2x2 max-pool, conv 64 3x3 pad 1, ReLU, 2x2
/// max-pool, Flatten, Linear 3136 -> 128, ReLU, Linear 128 -> 10. About 0.42 M parameters and
/// 2 * 8.7 M multiply-adds per example forward.
template <amari::Real T>
std::shared_ptr<amari::nn::Sequential<T>> small_cnn(const CnnOptions& o = {}) {
  using namespace amari::nn;
  const amari::Conv2dOptions same{.padding = {1, 1}};
  auto net = std::make_shared<Sequential<T>>();
  net->template emplace<Reshape<T>>(std::vector<amari::Index>{28, 28, 1});
  net->template emplace<Conv2d<T>>(1, 32, 3, same);
  if (o.batch_norm) net->template emplace<BatchNorm2d<T>>(32);
  net->template emplace<ReLU<T>>();
  net->template emplace<MaxPool2d<T>>(2);
  net->template emplace<Conv2d<T>>(32, 64, 3, same);
  if (o.batch_norm) net->template emplace<BatchNorm2d<T>>(64);
  net->template emplace<ReLU<T>>();
  net->template emplace<MaxPool2d<T>>(2);
  net->template emplace<Flatten<T>>();
  if (o.dropout > 0) net->template emplace<Dropout<T>>(o.dropout);
  net->template emplace<Linear<T>>(7 * 7 * 64, 128, true, Init::torch_uniform);
  net->template emplace<ReLU<T>>();
  if (o.dropout > 0) net->template emplace<Dropout<T>>(o.dropout);
  net->template emplace<Linear<T>>(128, 10, true, Init::torch_uniform);
  return net;
}

/// Conv -> BatchNorm -> ReLU -> Conv -> BatchNorm, the body of a basic residual block (He et al.
/// 2016); the first convolution has the given stride.
template <amari::Real T>
std::shared_ptr<amari::nn::Sequential<T>> basic_block_body(amari::Index in, amari::Index out, amari::Index stride) {
  using namespace amari::nn;
  auto body = std::make_shared<Sequential<T>>();
  body->template emplace<Conv2d<T>>(in, out, 3, amari::Conv2dOptions{.stride = {stride, stride}, .padding = {1, 1}},
                                    false);
  body->template emplace<BatchNorm2d<T>>(out);
  body->template emplace<ReLU<T>>();
  body->template emplace<Conv2d<T>>(out, out, 3, amari::Conv2dOptions{.padding = {1, 1}}, false);
  body->template emplace<BatchNorm2d<T>>(out);
  return body;
}

/// A small ResNet: conv 16 3x3 + BatchNorm + ReLU on 28x28, a residual block at 16 channels, a
/// residual block to 32 channels with stride 2 (14x14) whose shortcut is a 1x1 stride-2 convolution,
/// global average pooling, Linear 32 -> 10.
template <amari::Real T>
std::shared_ptr<amari::nn::Sequential<T>> small_resnet() {
  using namespace amari::nn;
  auto net = std::make_shared<Sequential<T>>();
  net->template emplace<Reshape<T>>(std::vector<amari::Index>{28, 28, 1});
  net->template emplace<Conv2d<T>>(1, 16, 3, amari::Conv2dOptions{.padding = {1, 1}}, false);
  net->template emplace<BatchNorm2d<T>>(16);
  net->template emplace<ReLU<T>>();
  net->template emplace<Residual<T>>(basic_block_body<T>(16, 16, 1));
  net->template emplace<ReLU<T>>();
  auto projection = std::make_shared<Sequential<T>>();
  projection->template emplace<Conv2d<T>>(16, 32, 1, amari::Conv2dOptions{.stride = {2, 2}}, false);
  projection->template emplace<BatchNorm2d<T>>(32);
  net->template emplace<Residual<T>>(basic_block_body<T>(16, 32, 2), projection);
  net->template emplace<ReLU<T>>();
  net->template emplace<GlobalAvgPool<T>>();
  net->template emplace<Linear<T>>(32, 10, true, Init::torch_uniform);
  return net;
}

}  // namespace example
