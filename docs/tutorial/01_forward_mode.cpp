// Chapter 1 of docs/tutorial: forward mode with dual numbers (autodiff/dual.hpp).
// Exits with 1 if a number differs from its hand-computed value.
#include <cmath>
#include <cstdio>

#include <amari/amari.hpp>

#include "check.hpp"

using amari::Dual;
using amari::Tensor;

int main() {
  std::printf("A dual number carries a value and a tangent through every op:\n");
  // [dual]
  const Tensor<double> x = Tensor<double>::from({3}, {1.0, 2.0, 3.0});
  const Tensor<double> v = Tensor<double>::from({3}, {1.0, 1.0, 0.0});
  const Dual<double> xd(x, v);               // value x, tangent v
  const Dual<double> y = amari::square(xd);  // value x^2, tangent 2 x v
  const Dual<double> f = amari::sum(y);      // value sum x^2, tangent sum 2 x v = J v
  // [dual]
  tutorial::check_tensor("value of y = x^2", y.primal(), {1, 4, 9});
  tutorial::check_tensor("tangent of y = 2 x v", y.tangent(), {2, 4, 0});
  tutorial::check_near("value of f = 1 + 4 + 9", f.primal().item(), 14);
  tutorial::check_near("tangent of f = J v = 2 + 4 + 0", f.tangent().item(), 6);

  std::printf(
      "The same through the jvp transform, for a function written once for any value type:\n");
  // [jvp]
  auto g = [](const auto& x) { return amari::sum(amari::square(x)); };
  const auto [value, jv] = amari::jvp(g, x, v);  // one forward pass: f(x) and J v
  // [jvp]
  tutorial::check_near("jvp value", value.item(), 14);
  tutorial::check_near("jvp tangent", jv.item(), 6);

  std::printf("One forward pass per direction: the gradient takes one pass per input:\n");
  // [columns]
  Tensor<double> by_columns(amari::Shape{3});
  for (amari::Index i = 0; i < 3; ++i) {
    Tensor<double> e(amari::Shape{3});  // zeros
    e[i] = 1;
    const auto [unused, d] = amari::jvp(g, x, e);  // the i-th partial derivative
    by_columns[i] = d.item();
  }
  const Tensor<double> gradient = amari::grad(g, x);  // reverse mode: all of them in one sweep
  // [columns]
  tutorial::check_tensor("three JVPs along e_0, e_1, e_2 = 2 x", by_columns, {2, 4, 6});
  tutorial::check_tensor("grad (reverse mode, chapter 2)", gradient, {2, 4, 6});

  std::printf(
      "Each op applies its JVP rule; tanh's is dy = (1 - y^2) dx (autodiff/ops/tanh.cpp):\n");
  // [tanh]
  const Dual<double> t =
      amari::tanh(Dual<double>(Tensor<double>::from({1}, {0.5}), Tensor<double>::from({1}, {1.0})));
  // [tanh]
  const double y05 = std::tanh(0.5);
  tutorial::check_near("tanh(0.5)", t.primal()[0], 0.46211715726000974);
  tutorial::check_near("its tangent 1 - tanh(0.5)^2", t.tangent()[0], 1 - y05 * y05);

  std::printf("A dual without a tangent is a constant; ops on it carry no tangent:\n");
  // [constant]
  const Dual<double> c(x);  // no tangent: the implicit zero
  const Dual<double> c2 = amari::square(c);
  // [constant]
  tutorial::check_true("square(constant) has no tangent", !c2.has_tangent());
  return tutorial::finish();
}
