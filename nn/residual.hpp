// Residual blocks: y = shortcut(x) + body(x), where the shortcut is the identity or a projection
// module (e.g. a 1x1 strided convolution when the body changes the shape), as in He et al. 2016.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include <amari/nn/module.hpp>
#include <amari/nn/nesting.hpp>

namespace amari::nn {

/// y = x + body(x), or projection(x) + body(x). Parameter and state names are prefixed "body." and
/// "projection."; the body's parameters come first in the flat vector.
template <Real T>
class Residual final : public Layer<T, Residual<T>> {
 public:
  explicit Residual(std::shared_ptr<const Module<T>> body, std::shared_ptr<const Module<T>> projection = nullptr)
      : body_(std::move(body)), projection_(std::move(projection)) {
    if (!body_) throw ValueError("Residual: null body module");
  }
  Residual(const Residual&) = default;
  Residual& operator=(const Residual&) = default;
  ~Residual() override {  // no recursion through nested containers (nesting.hpp)
    std::vector<std::shared_ptr<const Module<T>>> children{std::move(body_), std::move(projection_)};
    detail::release_children(children);
  }
  std::string describe() const override {
    const detail::NestingLevel level("Residual::describe");
    return "Residual(" + body_->describe() + (projection_ ? ", projection " + projection_->describe() : "") + ")";
  }
  void declare(std::vector<ParamSpec>& out, const std::string& prefix) const override {
    const detail::NestingLevel level("Residual::declare");
    body_->declare(out, prefix + "body.");
    if (projection_) projection_->declare(out, prefix + "projection.");
  }
  void declare_state(std::vector<StateSpec>& out, const std::string& prefix) const override {
    const detail::NestingLevel level("Residual::declare_state");
    body_->declare_state(out, prefix + "body.");
    if (projection_) projection_->declare_state(out, prefix + "projection.");
  }
  template <Value V>
  V apply(const V& x, ForwardContext<V>& c) const {
    const detail::NestingLevel level("Residual::forward");
    const V fx = body_->forward(x, c);
    const V sx = projection_ ? projection_->forward(x, c) : x;
    if (!(fx.shape() == sx.shape())) {
      throw ShapeError(describe() + ": the body gives " + fx.shape().str() + " but the shortcut gives " +
                       sx.shape().str() + (projection_ ? "" : " (add a projection module)"));
    }
    return sx + fx;
  }
  const Module<T>& body() const { return *body_; }
  const Module<T>* projection() const { return projection_.get(); }

 private:
  std::shared_ptr<const Module<T>> body_;
  std::shared_ptr<const Module<T>> projection_;
};

}  // namespace amari::nn
