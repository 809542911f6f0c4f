// Forward and reverse mode by hand, line by line, on a function of two scalars:
//
//   f(x1, x2) = log(x1) + x1 x2 - x2^2
//
// (the example of Baydin et al. 2018, "Automatic differentiation in machine learning: a survey",
// Table 2, with sin(x2) replaced by x2^2 so every number can be checked on paper). The tape records
// five primitives, the "evaluation trace":
//
//   #0  v1 = log(x1)    #1  v2 = x1 * x2    #2  v3 = x2^2    #3  v4 = v1 + v2    #4  v5 = v4 - v3 =
//   f
//
// A SweepObserver (autodiff/tape.hpp) prints every tangent of the forward sweeps and every adjoint
// of the reverse sweep as the tape computes it, next to the value of the hand-derived formula, so
// a student can check each line. At the default point (2, 5):
//   df/dx1 = 1/x1 + x2 = 5.5,  df/dx2 = x1 - 2 x2 = -8,
//   Hessian [[-1/x1^2, 1], [1, -2]] = [[-0.25, 1], [1, -2]].
// Forward mode needs one sweep per input (seeds e1, e2) to get the gradient; reverse mode needs
// one sweep per output (here one). The program exits with 1 if a line disagrees.
#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include <amari/amari.hpp>
#include <amari/autodiff/tape_print.hpp>

#include "example_support.hpp"

using amari::NodeInfo;
using amari::SweepKind;
using amari::Tape;
using amari::Tensor;
using amari::Var;

namespace {

// Prints one line per record: the rule the tape applied, its result, and the hand-computed value
// for that record (`hand[k]` for record k).
class Walkthrough final : public amari::SweepObserver<double> {
 public:
  std::vector<std::string> rules;  // the derivative rule of record k, in words
  std::vector<double> hand;        // the hand-computed tangent or adjoint of record k's output
  bool ok = true;

  void on_forward(const NodeInfo& node, const Tensor<double>& tangent) override {
    line(node, tangent.item());
  }
  void on_reverse(const NodeInfo& node, const Tensor<double>& adjoint,
                  const Tensor<double>*) override {
    line(node, adjoint.item());
  }

 private:
  void line(const NodeInfo& node, double value) {
    const double expect = hand[node.index];
    const bool same = std::fabs(value - expect) <= 1e-12 * (1 + std::fabs(expect));
    ok = ok && same;
    std::printf("  #%zu %-6s %-36s = %10.6f   hand: %10.6f  %s\n", node.index, node.op,
                rules[node.index].c_str(), value, expect, same ? "ok" : "MISMATCH");
  }
};

}  // namespace

int main(int argc, char** argv) {
  const example::Options opt(
      argc, argv, {{"x1", "2"}, {"x2", "5"}},
      "scalar_walkthrough: every tangent (forward mode) and adjoint (reverse mode)\n"
      "of f(x1, x2) = log(x1) + x1 x2 - x2^2, next to its hand-computed value");
  const double a = opt.real("x1"), b = opt.real("x2");
  if (!(a > 0)) {
    std::fprintf(stderr, "scalar_walkthrough: x1 must be positive (log), got %g\n", a);
    return 2;
  }

  // Record the evaluation trace: two variables, five records.
  Tape<double> tape;
  const Var<double> x1 = tape.variable(Tensor<double>::scalar(a), "x1");
  const Var<double> x2 = tape.variable(Tensor<double>::scalar(b), "x2");
  const Var<double> v1 = amari::log(x1);
  const Var<double> v2 = amari::mul(x1, x2);
  const Var<double> v3 = amari::square(x2);
  const Var<double> v4 = amari::add(v1, v2);
  const Var<double> v5 = amari::sub(v4, v3);
  std::printf("primal trace at (x1, x2) = (%g, %g)\n", a, b);
  std::printf("  v1 = log(x1)  = %10.6f\n  v2 = x1 * x2  = %10.6f\n  v3 = x2^2     = %10.6f\n",
              v1.value().item(), v2.value().item(), v3.value().item());
  std::printf("  v4 = v1 + v2  = %10.6f\n  v5 = v4 - v3  = %10.6f  = f(x1, x2)\n\n",
              v4.value().item(), v5.value().item());
  std::printf("%s\n", amari::to_string(tape).c_str());

  Walkthrough walk;
  tape.set_observer(&walk);
  const std::vector<Var<double>> inputs{x1, x2}, outputs{v5};

  // Forward mode: a tangent (dx1, dx2) flows from the inputs to f, one record at a time.
  walk.rules = {"dv1 = dx1 / x1", "dv2 = dx1 x2 + x1 dx2", "dv3 = 2 x2 dx2", "dv4 = dv1 + dv2",
                "dv5 = dv4 - dv3"};
  double grad_forward[2];
  for (int seed = 0; seed < 2; ++seed) {
    const double dx1 = seed == 0 ? 1 : 0, dx2 = seed == 1 ? 1 : 0;
    const double dv1 = dx1 / a, dv2 = dx1 * b + a * dx2, dv3 = 2 * b * dx2;
    walk.hand = {dv1, dv2, dv3, dv1 + dv2, dv1 + dv2 - dv3};
    std::printf("forward sweep (jvp), seed (dx1, dx2) = (%g, %g): tangents in recording order\n",
                dx1, dx2);
    const std::vector<Tensor<double>> seeds{Tensor<double>::scalar(dx1),
                                            Tensor<double>::scalar(dx2)};
    grad_forward[seed] = tape.jvp(inputs, seeds, outputs)[0].item();
    std::printf("  => df/dx%d = %g\n\n", seed + 1, grad_forward[seed]);
  }

  // Reverse mode: the adjoint vbar = df/dv flows from f back to the inputs; each line is the
  // adjoint of the record's output, complete when the record is reached.
  walk.rules = {"v1bar = v4bar", "v2bar = v4bar", "v3bar = -v5bar", "v4bar = v5bar",
                "v5bar = 1 (seed)"};
  walk.hand = {1, 1, -1, 1, 1};
  std::printf("reverse sweep (vjp), seed v5bar = 1: adjoints in reverse recording order\n");
  const std::vector<Tensor<double>> one{Tensor<double>::scalar(1.0)};
  const std::vector<Tensor<double>> g = tape.vjp(outputs, one, inputs);
  std::printf(
      "  then the variables: x1bar = v1bar / x1 + v2bar x2 = %g (hand %g), "
      "x2bar = v2bar x1 + v3bar 2 x2 = %g (hand %g)\n\n",
      g[0].item(), 1 / a + b, g[1].item(), a - 2 * b);

  // Second order: hvp runs a forward sweep, then a reverse sweep carrying each adjoint's tangent.
  // Here every intermediate adjoint is constant (f is a sum of the v's), so the curvature enters
  // only where the rules meet the variables: H e1 = (-1/x1^2, 1).
  tape.set_observer(nullptr);
  const std::vector<Tensor<double>> e1{Tensor<double>::scalar(1.0), Tensor<double>::scalar(0.0)};
  const std::vector<Tensor<double>> h = tape.hvp(outputs, one, inputs, e1);
  std::printf("hvp along e1: H e1 = (%g, %g), hand (-1/x1^2, 1) = (%g, %g)\n", h[0].item(),
              h[1].item(), -1 / (a * a), 1.0);

  const auto near = [](double u, double v) {
    return std::fabs(u - v) <= 1e-12 * (1 + std::fabs(v));
  };
  const bool ok = walk.ok && near(grad_forward[0], 1 / a + b) && near(grad_forward[1], a - 2 * b) &&
                  near(g[0].item(), 1 / a + b) && near(g[1].item(), a - 2 * b) &&
                  near(h[0].item(), -1 / (a * a)) && near(h[1].item(), 1.0);
  std::printf("%s\n", ok ? "every line agrees with the hand computation" : "MISMATCH");
  return ok ? 0 : 1;
}
