// One function, written once, differentiated four ways.
//
// f(x) = sum(tanh(x) * x) is written as a template over the value type; amari runs it on plain
// tensors (evaluation), duals (forward mode: JVP), tape variables (reverse mode: VJP / gradient),
// and both sweeps of the tape together (Hessian-vector product). The results are checked against
// each other and against central finite differences.
#include <cmath>
#include <cstdio>

#include <amari/amari.hpp>

#include "example_support.hpp"

using amari::Tensor;

int main(int argc, char** argv) {
  [[maybe_unused]] const example::Options options(
      argc, argv, {},
      "autodiff_basics: f(x) = sum(tanh(x) * x) evaluated, JVP, VJP and Hessian-vector product,\n"
      "checked against each other and against central finite differences");
  // Written once, for any value type V (Tensor, Dual or Var; float or double).
  auto f = [](const auto& x) { return amari::sum(amari::tanh(x) * x); };

  const Tensor<double> x = Tensor<double>::from({2, 3}, {0.5, -1.0, 2.0, 0.1, -0.3, 1.5});
  const Tensor<double> v = Tensor<double>::from({2, 3}, {1.0, 0.0, -1.0, 2.0, 0.5, 0.25});

  const double fx = f(x).item();                         // plain evaluation
  const auto [y, jv] = amari::jvp(f, x, v);              // forward mode: f(x) and J v in one pass
  const Tensor<double> g = amari::grad(f, x);            // reverse mode: the gradient
  const Tensor<double> hv = amari::hvp(f, x, v);         // forward-over-reverse: H v

  // The gradient dotted with v must equal the JVP (both are the directional derivative).
  double g_dot_v = 0;
  for (amari::Index i = 0; i < x.size(); ++i) g_dot_v += g[i] * v[i];

  // Finite differences of f along v, and of the gradient along v.
  const double h = 1e-5;
  Tensor<double> xp = x.clone(), xm = x.clone();
  for (amari::Index i = 0; i < x.size(); ++i) {
    xp[i] += h * v[i];
    xm[i] -= h * v[i];
  }
  const double fd = (f(xp).item() - f(xm).item()) / (2 * h);
  const Tensor<double> gp = amari::grad(f, xp), gm = amari::grad(f, xm);
  double hv_err = 0;
  for (amari::Index i = 0; i < x.size(); ++i) hv_err = std::fmax(hv_err, std::fabs((gp[i] - gm[i]) / (2 * h) - hv[i]));

  std::printf("f(x)                   = %.12f (dual primal %.12f)\n", fx, y.item());
  std::printf("J v       (forward)    = %.12f\n", jv.item());
  std::printf("<grad, v> (reverse)    = %.12f\n", g_dot_v);
  std::printf("finite differences     = %.12f\n", fd);
  std::printf("H v vs FD of gradients: max error %.2e\n", hv_err);
  const bool ok = std::fabs(jv.item() - g_dot_v) < 1e-12 && std::fabs(fd - g_dot_v) < 1e-8 && hv_err < 1e-7;
  std::printf("%s\n", ok ? "all modes agree" : "MISMATCH");
  return ok ? 0 : 1;
}
