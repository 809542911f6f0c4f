// Uses each component through its installed header: a gradient, a layer, a GGN product, and an
// out-of-tree primitive (sin, defined here with the public custom-primitive header) that must pass
// check_rules.
#include <amari/amari.hpp>
#include <amari/autodiff/check_rules.hpp>
#include <amari/autodiff/custom_primitive.hpp>
#include <amari/curvature/ggn.hpp>

#include <cmath>
#include <cstdio>

namespace {

// sin, element-wise, by its four scalar rules.
struct SinRules {
  static constexpr const char* name = "sin";
  // y = sin x
  template <class T>
  T primal(T x) const { return std::sin(x); }
  // dy = cos x dx
  template <class T>
  T jvp(T x, T, T dx) const { return std::cos(x) * dx; }
  // xbar += cos x ybar
  template <class T>
  T vjp(T x, T, T ybar) const { return std::cos(x) * ybar; }
  // xbar_dot += -sin x dx ybar
  template <class T>
  T vjp_tangent(T x, T, T dx, T, T ybar) const { return -std::sin(x) * dx * ybar; }
};

}  // namespace

int main() {
  auto f = [](const auto& x) { return amari::sum(amari::square(x)); };
  const auto x = amari::Tensor<double>::from({3}, {1.0, -2.0, 0.5});
  const auto g = amari::grad(f, x);  // 2 x
  amari::nn::Model<float> model(amari::nn::mlp<float>({4, 3, 2}), 1);
  amari::nn::SoftmaxCrossEntropy<float> head;
  amari::curvature::GgnOperator<float> ggn(model, head, amari::Tensor<float>(amari::Shape{5, 4}));
  amari::Tensor<float> v(amari::Shape{model.num_parameters()}), out(amari::Shape{model.num_parameters()});
  ggn.apply(v, out);
  const bool ok = std::fabs(g[1] + 4.0) < 1e-12 && out.size() == model.num_parameters();
  std::printf("installed amari: %s\n", ok ? "ok" : "FAILED");

  const amari::CheckReport report = amari::check_rules(
      "sin", [](auto xs) { return amari::custom::elementwise(SinRules{}, xs[0]); },
      {{amari::Shape{3, 4}}});
  std::printf("%s", report.str().c_str());
  return ok && report.ok() ? 0 : 1;
}
