// Uses each component through its installed header: a gradient, a layer, a GGN product.
#include <amari/amari.hpp>
#include <amari/curvature/ggn.hpp>

#include <cmath>
#include <cstdio>

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
  return ok ? 0 : 1;
}
