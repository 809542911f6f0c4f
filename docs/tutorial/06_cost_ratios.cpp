// Chapter 6 of docs/tutorial: reading the cost ratios. Counts the GEMM flops of f, a JVP, a VJP,
// a GGN-vector product and a Hessian-vector product of a tanh MLP (the limits bench/sweep draws
// as lines, bench/sweep_bench.cpp), checks them by hand for the 784-256-256-10 network, then
// measures the same computations with curvature::measure_costs (curvature/cost.hpp) and prints
// both. Only the counts are checked: times depend on the machine.
#include <cstdio>
#include <vector>

#include <amari/amari.hpp>

#include "check.hpp"

using amari::Index;

int main() {
  // [count]
  const std::vector<Index> sizes{784, 256, 256, 10};
  double F = 0, R = 0;  // F: GEMM flops of f per example / 2; R: the same without the first layer
  for (std::size_t l = 0; l + 1 < sizes.size(); ++l) {
    const double w = static_cast<double>(sizes[l] * sizes[l + 1]);
    F += w;
    if (l > 0) R += w;  // the first layer's input is data: no tangent or adjoint flows into it
  }
  const double jvp = (2 * F + R) / F;      // X dW for every layer, dX W for the others
  const double vjp = (2 * F + R) / F;      // forward, then X^T dY and dY W^T
  const double ggn = (3 * F + 2 * R) / F;  // forward record, then a JVP and a VJP sweep
  const double ggn_linearized = (2 * F + 2 * R) / F;
  const double hvp = (4 * F + 5 * R) / F;  // record, tangent sweep, reverse sweep with tangents
  // [count]
  // F = 784*256 + 256*256 + 256*10 = 268800, R = 68096.
  tutorial::check_near("F", F, 268800);
  tutorial::check_near("R", R, 68096);
  tutorial::check_near("JVP / f = 605696 / 268800", jvp, 605696.0 / 268800);
  tutorial::check_near("VJP / f", vjp, 605696.0 / 268800);
  tutorial::check_near("GGN-vp / f = 942592 / 268800", ggn, 942592.0 / 268800);
  tutorial::check_near("linearized GGN-vp / f = 673792 / 268800", ggn_linearized,
                       673792.0 / 268800);
  tutorial::check_near("Hessian-vp / f = 1415680 / 268800", hvp, 1415680.0 / 268800);

  // [measure]
  amari::nn::Model<float> model(amari::nn::mlp<float>(sizes, amari::nn::Act::tanh), 1);
  amari::nn::SoftmaxCrossEntropy<float> head;
  amari::nn::Rng rng(3);
  auto x = amari::Tensor<float>::uninitialized(amari::Shape{128, 784});
  for (Index i = 0; i < x.size(); ++i) x[i] = static_cast<float>(rng.normal());
  std::vector<int> labels(128);
  for (auto& l : labels) l = static_cast<int>(rng.below(10));
  const auto costs =
      amari::curvature::measure_costs(model, head, x, amari::nn::one_hot<float>(labels, 10), 5);
  std::printf("%s", costs.table().c_str());
  // [measure]
  std::printf(
      "GEMM-flop limits: JVP %.2f, VJP %.2f, GGN v %.2f, linearized GGN v %.2f, Hessian v %.2f\n",
      jvp, vjp, ggn, ggn_linearized, hvp);
  tutorial::check_true("every measured time is positive",
                       costs.forward_us > 0 && costs.jvp_us > 0 && costs.vjp_us > 0 &&
                           costs.ggn_us > 0 && costs.ggn_linearized_us > 0 && costs.hvp_us > 0);
  return tutorial::finish();
}
