// The standard layers: Linear, element-wise activations, Sequential, and an MLP builder.
#pragma once

#include <initializer_list>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <amari/nn/image_layers.hpp>
#include <amari/nn/module.hpp>
#include <amari/nn/nesting.hpp>

namespace amari::nn {

/// y = x W + b: x (N, in), W (in, out), b (out). Parameters "weight" then "bias" (PyTorch's names;
/// PyTorch stores the weight transposed, (out, in)). The bias starts at zero, except with
/// Init::torch_uniform, where it is drawn like PyTorch's, U(-1/sqrt(in), 1/sqrt(in)).
/// Cost: 2 N in out flops forward.
template <Real T>
class Linear final : public Layer<T, Linear<T>> {
 public:
  /// A layer from `in` to `out` features; weights initialized by `init`, bias (if any) zero.
  Linear(Index in, Index out, bool bias = true, Init init = Init::xavier_uniform)
      : in_(in), out_(out), bias_(bias), init_(init) {
    if (in <= 0 || out <= 0) {
      throw ValueError("Linear: feature counts must be positive, got in=" + std::to_string(in) +
                       ", out=" + std::to_string(out));
    }
  }
  std::string describe() const override {
    return "Linear(" + std::to_string(in_) + " -> " + std::to_string(out_) + (bias_ ? ")" : ", no bias)");
  }
  void declare(std::vector<ParamSpec>& out, const std::string& prefix) const override {
    out.push_back({prefix + "weight", Shape{in_, out_}, init_, in_, out_, TorchLayout::transposed});
    if (bias_) out.push_back({prefix + "bias", Shape{out_}, bias_init(), in_, out_});
  }
  template <Value V>
  V apply(const V& x, ForwardContext<V>& p) const {
    if (x.shape().rank() != 2 || x.shape()[1] != in_) {
      throw ShapeError(describe() + ": expects input of shape (N, " + std::to_string(in_) + "), got " +
                       x.shape().str());
    }
    const std::size_t weight_index = p.position();
    const V& w = p.next();
    const V y = bias_ ? linear(x, w, p.next()) : matmul(x, w);  // x w + b in one primitive
    p.tap({.kind = LayerTap<V>::Kind::linear, .input = &x, .output = &y, .weight_index = weight_index,
           .has_bias = bias_, .kernel = {1, 1}, .conv = {}});
    return y;
  }
  Index in_features() const { return in_; }
  Index out_features() const { return out_; }

 private:
  Init bias_init() const { return init_ == Init::torch_uniform ? Init::torch_uniform : Init::zeros; }

  Index in_, out_;
  bool bias_;
  Init init_;
};

/// An element-wise activation with no parameters; Fn is one of the tags below.
template <Real T, class Fn>
class Activation final : public Layer<T, Activation<T, Fn>> {
 public:
  std::string describe() const override { return Fn::name; }
  void declare(std::vector<ParamSpec>&, const std::string&) const override {}
  template <Value V>
  V apply(const V& x, ForwardContext<V>&) const {
    return Fn::apply(x);
  }
};

namespace activation {
struct Tanh {
  static constexpr const char* name = "Tanh";
  template <Value V> static V apply(const V& x) { return amari::tanh(x); }
};
struct Relu {
  static constexpr const char* name = "ReLU";
  template <Value V> static V apply(const V& x) { return amari::relu(x); }
};
struct Sigmoid {
  static constexpr const char* name = "Sigmoid";
  template <Value V> static V apply(const V& x) { return amari::sigmoid(x); }
};
struct Softplus {
  static constexpr const char* name = "Softplus";
  template <Value V> static V apply(const V& x) { return amari::softplus(x); }
};
struct Gelu {
  static constexpr const char* name = "GELU";
  template <Value V> static V apply(const V& x) { return amari::gelu(x); }
};
}  // namespace activation

template <Real T> using Tanh = Activation<T, activation::Tanh>;
template <Real T> using ReLU = Activation<T, activation::Relu>;
template <Real T> using Sigmoid = Activation<T, activation::Sigmoid>;
template <Real T> using Softplus = Activation<T, activation::Softplus>;
template <Real T> using GELU = Activation<T, activation::Gelu>;

/// Modules applied in order. Parameter names are prefixed with the child's index ("0.weight").
/// A ReLU followed by a MaxPool2d runs as one primitive, relu_max_pool2d: the same values and
/// derivatives bit for bit, one pass over the ReLU's input fewer forward and backward, and the
/// ReLU's output never stored (on a tape the pair is one node). A Conv2d with bias before them
/// joins them (conv2d_relu_max_pool2d: the same values, derivatives equal up to rounding) unless
/// an observer takes the pass's layer taps (K-FAC), which need the convolution's output.
template <Real T>
class Sequential final : public Layer<T, Sequential<T>> {
 public:
  Sequential() = default;
  Sequential(const Sequential&) = default;
  Sequential& operator=(const Sequential&) = default;
  ~Sequential() override { detail::release_children(children_); }  // no recursion (nesting.hpp)
  /// Appends a module; returns *this for chaining.
  Sequential& add(std::shared_ptr<const Module<T>> m) {
    if (!m) throw ValueError("Sequential::add: null module");
    const auto* pool = dynamic_cast<const MaxPool2d<T>*>(m.get());
    if (pool && !children_.empty() && dynamic_cast<const ReLU<T>*>(children_.back().get())) {
      pool_after_relu_.back() = pool;
      const std::size_t before = children_.size() - 1;  // the ReLU's predecessor, if any
      const auto* conv = before > 0 ? dynamic_cast<const Conv2d<T>*>(children_[before - 1].get()) : nullptr;
      if (conv && conv->has_bias()) conv_before_relu_pool_[before - 1] = conv;
    }
    children_.push_back(std::move(m));
    pool_after_relu_.push_back(nullptr);
    conv_before_relu_pool_.push_back(nullptr);
    return *this;
  }
  /// Constructs a module in place: seq.emplace<Linear<float>>(784, 256).
  template <class M, class... Args>
  Sequential& emplace(Args&&... args) {
    return add(std::make_shared<M>(std::forward<Args>(args)...));
  }
  std::string describe() const override {
    const detail::NestingLevel level("Sequential::describe");
    std::string s = "Sequential(";
    for (std::size_t i = 0; i < children_.size(); ++i) s += (i ? ", " : "") + children_[i]->describe();
    return s + ")";
  }
  void declare(std::vector<ParamSpec>& out, const std::string& prefix) const override {
    const detail::NestingLevel level("Sequential::declare");
    for (std::size_t i = 0; i < children_.size(); ++i) children_[i]->declare(out, prefix + std::to_string(i) + ".");
  }
  void declare_state(std::vector<StateSpec>& out, const std::string& prefix) const override {
    const detail::NestingLevel level("Sequential::declare_state");
    for (std::size_t i = 0; i < children_.size(); ++i)
      children_[i]->declare_state(out, prefix + std::to_string(i) + ".");
  }
  template <Value V>
  V apply(const V& x, ForwardContext<V>& p) const {
    const detail::NestingLevel level("Sequential::forward");
    if (children_.empty()) return x;
    std::size_t i = 0;
    V h = forward_from(i, x, p);
    while (i < children_.size()) h = forward_from(i, h, p);
    return h;
  }
  std::size_t size() const { return children_.size(); }
  const Module<T>& operator[](std::size_t i) const { return *children_.at(i); }

 private:
  // Child i on x, or children i to i + 2 or i and i + 1 fused; advances i past what it ran.
  template <Value V>
  V forward_from(std::size_t& i, const V& x, ForwardContext<V>& p) const {
    if (const Conv2d<T>* conv = conv_before_relu_pool_[i]; conv && !p.observed()) {
      const MaxPool2d<T>* pool = pool_after_relu_[i + 1];
      i += 3;
      return conv->apply_relu_max_pool(x, p, pool->options());
    }
    if (const MaxPool2d<T>* pool = pool_after_relu_[i]) {
      i += 2;
      return pool->apply_after_relu(x);
    }
    return children_[i++]->forward(x, p);
  }

  std::vector<std::shared_ptr<const Module<T>>> children_;
  // Entry i: child i + 1 when child i is a ReLU and child i + 1 a MaxPool2d, else null.
  std::vector<const MaxPool2d<T>*> pool_after_relu_;
  // Entry i: child i when it is a Conv2d with bias followed by a ReLU and a MaxPool2d, else null.
  std::vector<const Conv2d<T>*> conv_before_relu_pool_;
};

/// Activation choice for mlp().
enum class Act { tanh, relu, sigmoid, softplus, gelu };

/// A multilayer perceptron: Linear layers between consecutive `sizes`, the activation after
/// every layer but the last (which outputs logits). Weights: Xavier for tanh/sigmoid/softplus,
/// He for relu/gelu. E.g. mlp<float>({784, 256, 256, 10}, Act::tanh).
template <Real T>
std::shared_ptr<Sequential<T>> mlp(std::vector<Index> sizes, Act act = Act::tanh) {
  if (sizes.size() < 2) throw ValueError("mlp: needs at least an input and an output size");
  auto seq = std::make_shared<Sequential<T>>();
  const Init init = (act == Act::relu || act == Act::gelu) ? Init::he_normal : Init::xavier_uniform;
  for (std::size_t i = 0; i + 1 < sizes.size(); ++i) {
    seq->template emplace<Linear<T>>(sizes[i], sizes[i + 1], true, init);
    if (i + 2 == sizes.size()) break;
    switch (act) {
      case Act::tanh: seq->template emplace<Tanh<T>>(); break;
      case Act::relu: seq->template emplace<ReLU<T>>(); break;
      case Act::sigmoid: seq->template emplace<Sigmoid<T>>(); break;
      case Act::softplus: seq->template emplace<Softplus<T>>(); break;
      case Act::gelu: seq->template emplace<GELU<T>>(); break;
    }
  }
  return seq;
}

}  // namespace amari::nn
