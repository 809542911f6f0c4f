// Chapter 2 of docs/tutorial: the tape (autodiff/tape.hpp). f(x) = sum(tanh(x) * x) is recorded
// once, then swept backwards (the gradient), forwards (a JVP) and both ways (a Hessian-vector
// product). Exits with 1 if a number differs from its hand-computed value.
#include <cmath>
#include <cstdio>
#include <vector>

#include <amari/amari.hpp>
#include <amari/autodiff/tape_print.hpp>

#include "check.hpp"

using amari::Tensor;
using amari::Var;

int main() {
  // [record]
  amari::Tape<double> tape;
  const Var<double> x = tape.variable(Tensor<double>::from({2}, {0.5, -1.0}), "x");
  const Var<double> f = amari::sum(amari::tanh(x) * x);  // three records: tanh, mul, sum
  std::printf("%s", amari::to_string(tape).c_str());
  // [record]
  tutorial::check_true("three records on the tape", tape.size() == 3);
  const double t0 = std::tanh(0.5), t1 = std::tanh(-1.0);
  tutorial::check_near("f = 0.5 tanh(0.5) + (-1) tanh(-1)", f.value().item(), 0.5 * t0 - t1);

  // [reverse]
  const std::vector<Var<double>> outputs{f}, inputs{x};
  const std::vector<Tensor<double>> one{Tensor<double>::full(f.shape(), 1.0)};  // df/df = 1
  const Tensor<double> g = tape.vjp(outputs, one, inputs)[0];  // one backward loop: the gradient
  // [reverse]
  // df/dx_i = tanh(x_i) + x_i (1 - tanh(x_i)^2)
  tutorial::check_tensor("gradient tanh(x) + x (1 - tanh(x)^2)", g,
                         {t0 + 0.5 * (1 - t0 * t0), t1 - 1.0 * (1 - t1 * t1)});

  // [forward]
  const std::vector<Tensor<double>> v{Tensor<double>::from({2}, {1.0, 2.0})};
  const Tensor<double> jv = tape.jvp(inputs, v, outputs)[0];  // one forward loop, no primal re-run
  // [forward]
  tutorial::check_near("J v = <gradient, v>", jv.item(), g[0] * 1.0 + g[1] * 2.0);

  // [hvp]
  const Tensor<double> hv = tape.hvp(outputs, one, inputs, v)[0];  // forward-over-reverse
  // [hvp]
  // d2f/dx_i^2 = 2 (1 - t^2) - 2 x t (1 - t^2) with t = tanh(x_i); the Hessian is diagonal.
  auto d2 = [](double x) {
    const double t = std::tanh(x);
    return 2 * (1 - t * t) - 2 * x * t * (1 - t * t);
  };
  tutorial::check_tensor("H v = diag(f'') v", hv, {d2(0.5) * 1.0, d2(-1.0) * 2.0});

  // [clear]
  tape.clear();  // forgets every record; x and f are now invalid
  // [clear]
  tutorial::check_true("an empty tape after clear()", tape.size() == 0);
  return tutorial::finish();
}
