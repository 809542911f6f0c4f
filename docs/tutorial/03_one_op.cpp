// Chapter 3 of docs/tutorial: one op's rules (tanh, autodiff/ops/tanh.cpp) seen through the three
// modes, then a new op, cube, added from outside the library (autodiff/custom_primitive.hpp) and
// checked with check_rules (autodiff/check_rules.hpp). Exits with 1 if a number is wrong, if cube
// fails a check, or if a copy of cube with a wrong VJP rule passes them all.
#include <cmath>
#include <cstdio>

#include <amari/amari.hpp>
#include <amari/autodiff/check_rules.hpp>
#include <amari/autodiff/custom_primitive.hpp>

#include "check.hpp"

using amari::Tensor;

// [cube]
// cube, element-wise: y = x^3 with its four rules side by side.
struct CubeRules {
  static constexpr const char* name = "cube";
  template <class T>
  T primal(T x) const {
    return x * x * x;
  }
  // JVP:          dy = 3 x^2 dx
  template <class T>
  T jvp(T x, T /*y*/, T dx) const {
    return 3 * x * x * dx;
  }
  // VJP:          xbar += 3 x^2 ybar
  template <class T>
  T vjp(T x, T /*y*/, T ybar) const {
    return 3 * x * x * ybar;
  }
  // Second order: xbar_dot += d/de [3 (x + e dx)^2 ybar] at e = 0 = 6 x dx ybar
  template <class T>
  T vjp_tangent(T x, T /*y*/, T dx, T /*dy*/, T ybar) const {
    return 6 * x * dx * ybar;
  }
};

template <amari::Value V>
V cube(const V& x) {
  return amari::custom::elementwise(CubeRules{}, x);
}
// [cube]

// The same op with a mistake in its VJP rule (2 x^2 instead of 3 x^2).
struct CubeWrongVjp : CubeRules {
  template <class T>
  T vjp(T x, T /*y*/, T ybar) const {
    return 2 * x * x * ybar;
  }
};

int main() {
  std::printf("tanh's rules at x = 0.5, through the three modes (y = tanh(0.5)):\n");
  // [tanh]
  auto f = [](const auto& x) { return amari::sum(amari::tanh(x)); };
  const Tensor<double> x = Tensor<double>::from({1}, {0.5}), one = Tensor<double>::from({1}, {1.0});
  const auto [fx, jv] = amari::jvp(f, x, one);      // JVP rule:    (1 - y^2) dx
  const Tensor<double> g = amari::grad(f, x);       // VJP rule:    (1 - y^2) ybar
  const Tensor<double> hv = amari::hvp(f, x, one);  // second order: -2 y dy ybar
  // [tanh]
  const double y = std::tanh(0.5);
  tutorial::check_near("JVP 1 - y^2", jv.item(), 1 - y * y);
  tutorial::check_near("VJP 1 - y^2", g[0], 1 - y * y);
  tutorial::check_near("second order -2 y (1 - y^2)", hv[0], -2 * y * (1 - y * y));

  std::printf("cube at x = 2 with direction 1: f = 8, f' = 12, f'' = 12:\n");
  // [use]
  auto h = [](const auto& x) { return amari::sum(cube(x)); };
  const Tensor<double> two = Tensor<double>::from({1}, {2.0});
  const auto [hx, hjv] = amari::jvp(h, two, one);
  const Tensor<double> hg = amari::grad(h, two), hhv = amari::hvp(h, two, one);
  // [use]
  tutorial::check_near("primal 2^3", hx.item(), 8);
  tutorial::check_near("JVP 3 * 2^2", hjv.item(), 12);
  tutorial::check_near("VJP 3 * 2^2", hg[0], 12);
  tutorial::check_near("second order 6 * 2", hhv[0], 12);

  std::printf("check_rules on cube, at a random (3, 4) input:\n");
  // [check]
  const amari::CheckReport report =
      amari::check_rules("cube", [](auto xs) { return cube(xs[0]); }, {{amari::Shape{3, 4}}});
  std::printf("%s", report.str().c_str());
  const amari::CheckReport wrong =
      amari::check_rules("cube with 2 x^2 in its VJP",
                         [](auto xs) { return amari::custom::elementwise(CubeWrongVjp{}, xs[0]); },
                         {{amari::Shape{3, 4}}});
  for (const auto& name : wrong.failed())
    std::printf("  failed with the wrong VJP: %s\n", name.c_str());
  // [check]
  tutorial::check_true("cube passes every check", report.ok());
  tutorial::check_true("the wrong VJP fails a check", !wrong.ok());
  return tutorial::finish();
}
