// A primitive defined outside amari: sin, with its four rules side by side, used on plain tensors,
// duals and tape variables, then checked with amari::check_rules. docs/custom_primitives.md walks
// through this file. A copy of sin with a wrong VJP rule shows what a caught mistake looks like.
// Exits with 1 if sin fails a check or if the wrong copy passes them all.
#include <cmath>
#include <cstdio>

#include <amari/amari.hpp>
#include <amari/autodiff/check_rules.hpp>
#include <amari/autodiff/custom_primitive.hpp>

#include "example_support.hpp"

using amari::Tensor;

namespace my_ops {

// sin, element-wise: the four rules, each for one element (T is float or double).
struct SinRules {
  static constexpr const char* name = "sin";  // in error messages and tape dumps

  // y = sin x
  template <class T>
  T primal(T x) const { return std::sin(x); }
  // JVP (forward mode):  dy = cos x dx
  template <class T>
  T jvp(T x, T /*y*/, T dx) const { return std::cos(x) * dx; }
  // VJP (reverse mode):  xbar += cos x ybar
  template <class T>
  T vjp(T x, T /*y*/, T ybar) const { return std::cos(x) * ybar; }
  // Second order:        xbar_dot += d/de [cos(x + e dx) ybar] = -sin x dx ybar
  template <class T>
  T vjp_tangent(T x, T /*y*/, T dx, T /*dy*/, T ybar) const { return -std::sin(x) * dx * ybar; }
};

// sin for every value type: Tensor, Dual and Var, float and double.
template <amari::Value V>
V sin(const V& x) {
  return amari::custom::elementwise(SinRules{}, x);
}

// The same op with a sign error in its VJP rule.
struct SinWrongVjp : SinRules {
  template <class T>
  T vjp(T x, T /*y*/, T ybar) const { return -std::cos(x) * ybar; }
};

}  // namespace my_ops

int main(int argc, char** argv) {
  [[maybe_unused]] const example::Options options(
      argc, argv, {}, "custom_primitive: defines sin outside amari and checks its rules");

  // Written once for any value type, with the new op next to built-in ones.
  auto f = [](const auto& x) { return amari::sum(my_ops::sin(x) * x); };
  const Tensor<double> x = Tensor<double>::from({2, 2}, {0.5, -1.0, 2.0, 0.25});
  const Tensor<double> v = Tensor<double>::from({2, 2}, {1.0, 0.0, -1.0, 2.0});

  const double fx = f(x).item();                  // plain tensors: the primal rules
  const auto [y, jv] = amari::jvp(f, x, v);       // duals: the JVP rules
  const Tensor<double> g = amari::grad(f, x);     // a tape: the VJP rules
  const Tensor<double> hv = amari::hvp(f, x, v);  // a tape, both sweeps: the second-order rules

  // By hand: f = sum x sin x, df/dx = sin x + x cos x, d2f/dx2 = 2 cos x - x sin x.
  double worst = 0, g_dot_v = 0;
  for (amari::Index i = 0; i < x.size(); ++i) {
    const double xi = x[i];
    worst = std::fmax(worst, std::fabs(g[i] - (std::sin(xi) + xi * std::cos(xi))));
    worst = std::fmax(worst, std::fabs(hv[i] - (2 * std::cos(xi) - xi * std::sin(xi)) * v[i]));
    g_dot_v += g[i] * v[i];
  }
  worst = std::fmax(worst, std::fabs(jv.item() - g_dot_v));
  std::printf("f(x) = %.6f, J v = %.6f, <grad, v> = %.6f\n", fx, jv.item(), g_dot_v);
  std::printf("largest difference from the hand formulas: %.1e\n", worst);

  // The checks amari's own ops pass, on sin at a random (3, 4) input.
  const amari::CheckReport report =
      amari::check_rules("sin", [](auto xs) { return my_ops::sin(xs[0]); }, {{amari::Shape{3, 4}}});
  std::printf("%s", report.str().c_str());

  // A wrong rule does not pass.
  const amari::CheckReport wrong = amari::check_rules(
      "sin with -cos in its VJP",
      [](auto xs) { return amari::custom::elementwise(my_ops::SinWrongVjp{}, xs[0]); },
      {{amari::Shape{3, 4}}});
  std::printf("\nfailed checks of %s:\n", wrong.subject.c_str());
  for (const auto& name : wrong.failed()) std::printf("  %s\n", name.c_str());

  return report.ok() && !wrong.ok() && worst < 1e-12 ? 0 : 1;
}
