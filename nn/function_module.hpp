// Any forward function as a module: for networks that are not a nesting of modules (shared weights,
// several paths, custom arithmetic). Declare the parameters once, write the forward pass once as a
// generic lambda over any Value type, and wrap it in a Model: it gets the same flat parameter vector,
// training, serialization and every curvature operator as a Sequential.
//
//   auto net = nn::function_module<float>(
//       "two-tower", {{"w", Shape{8, 4}, nn::Init::torch_uniform, 8, 4}, {"b", Shape{4}}},
//       [](const auto& x, auto& c) {
//         const auto& w = c.next();
//         const auto& b = c.next();
//         return amari::tanh(amari::linear(x, w, b)) + amari::linear(x, w, b);
//       });
//   nn::Model<float> model(net, /*seed=*/1);
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <amari/nn/module.hpp>

namespace amari::nn {

/// A module defined by a parameter list and a forward function f(x, context) written once for any
/// Value type; f takes the parameters from context.next() in the declared order (and state from
/// context.next_state(), if any was declared).
template <Real T>
class FunctionModule final : public Module<T> {
 public:
  template <class F>
  FunctionModule(std::string name, std::vector<ParamSpec> params, F f, std::vector<StateSpec> state = {})
      : name_(std::move(name)),
        params_(std::move(params)),
        state_(std::move(state)),
        plain_(f),
        dual_(f),
        var_(f) {}
  std::string describe() const override { return name_; }
  void declare(std::vector<ParamSpec>& out, const std::string& prefix) const override {
    for (ParamSpec p : params_) {
      p.name = prefix + p.name;
      out.push_back(std::move(p));
    }
  }
  void declare_state(std::vector<StateSpec>& out, const std::string& prefix) const override {
    for (StateSpec s : state_) {
      s.name = prefix + s.name;
      out.push_back(std::move(s));
    }
  }
  Tensor<T> forward(const Tensor<T>& x, ForwardContext<Tensor<T>>& c) const override { return plain_(x, c); }
  Dual<T> forward(const Dual<T>& x, ForwardContext<Dual<T>>& c) const override { return dual_(x, c); }
  Var<T> forward(const Var<T>& x, ForwardContext<Var<T>>& c) const override { return var_(x, c); }

 private:
  template <class V>
  using Fn = std::function<V(const V&, ForwardContext<V>&)>;
  std::string name_;
  std::vector<ParamSpec> params_;
  std::vector<StateSpec> state_;
  Fn<Tensor<T>> plain_;
  Fn<Dual<T>> dual_;
  Fn<Var<T>> var_;
};

/// Shorthand: a shared FunctionModule, ready for Model or Sequential.
template <Real T, class F>
std::shared_ptr<FunctionModule<T>> function_module(std::string name, std::vector<ParamSpec> params, F f,
                                                   std::vector<StateSpec> state = {}) {
  return std::make_shared<FunctionModule<T>>(std::move(name), std::move(params), std::move(f), std::move(state));
}

}  // namespace amari::nn
