// amari in one file: the whole design on scalars, in about 200 lines, then checked against amari.
//
// 1. Each primitive is defined once with three rules side by side: primal, JVP (tangent) and VJP
//    (adjoint). amari does the same per tensor primitive in autodiff/ops/<name>.cpp.
// 2. Forward mode: a dual number carries (value, tangent); applying a primitive applies its JVP.
// 3. Reverse mode: a tape (Wengert list) records each primitive applied; the reverse sweep is one
//    backward loop over the records applying the VJP rules. The same records also run forward with
//    the JVP rules: the linearization, recorded once, used many times (amari's Tape::jvp).
// 4. Curvature: for logistic regression, the Fisher-vector product F v = J^T H_L J v / N is one
//    JVP, a logit-space scaling p (1 - p), and one VJP (SEED-NOTES 4). No matrix is formed.
#include <cmath>
#include <cstdio>
#include <vector>

#include <amari/amari.hpp>

#include "example_support.hpp"

namespace mini {

// ---- 1. primitives: primal, JVP, VJP side by side --------------------------------------------
enum class Op { add, mul, tanh };

struct Rules {
  // y = f(a, b)
  static double primal(Op op, double a, double b) {
    switch (op) {
      case Op::add: return a + b;
      case Op::mul: return a * b;
      case Op::tanh: return std::tanh(a);
    }
    return 0;
  }
  // dy = df/da da + df/db db
  static double jvp(Op op, double a, double b, double y, double da, double db) {
    switch (op) {
      case Op::add: return da + db;
      case Op::mul: return da * b + a * db;
      case Op::tanh: return (1 - y * y) * da;
    }
    return 0;
  }
  // abar += df/da ybar; bbar += df/db ybar
  static void vjp(Op op, double a, double b, double y, double ybar, double& abar, double& bbar) {
    switch (op) {
      case Op::add: abar += ybar, bbar += ybar; break;
      case Op::mul: abar += b * ybar, bbar += a * ybar; break;
      case Op::tanh: abar += (1 - y * y) * ybar; break;
    }
  }
};

// ---- 2. forward mode -------------------------------------------------------------------------
struct Dual {
  double v, t;  // value, tangent
};
Dual apply(Op op, Dual a, Dual b = {0, 0}) {
  const double y = Rules::primal(op, a.v, b.v);
  return {y, Rules::jvp(op, a.v, b.v, y, a.t, b.t)};
}

// ---- 3. reverse mode: a flat tape in recording order ------------------------------------------
struct Tape {
  struct Record {
    Op op;
    int a, b;  // input slots (-1: none)
  };
  std::vector<double> value;      // one slot per variable or recorded output
  std::vector<Record> records;    // records[k] produced slot first_output + k
  std::vector<int> output_slot;
  int variable(double x) {
    value.push_back(x);
    return static_cast<int>(value.size()) - 1;
  }
  int apply(Op op, int a, int b = -1) {
    value.push_back(Rules::primal(op, value[a], b >= 0 ? value[b] : 0));
    records.push_back({op, a, b});
    output_slot.push_back(static_cast<int>(value.size()) - 1);
    return output_slot.back();
  }
  // Reverse sweep: one backward loop, linear in the number of records.
  std::vector<double> vjp(int out, double cotangent) const {
    std::vector<double> bar(value.size(), 0.0);
    bar[out] = cotangent;
    for (std::size_t k = records.size(); k-- > 0;) {
      const Record& r = records[k];
      double scratch = 0;
      Rules::vjp(r.op, value[r.a], r.b >= 0 ? value[r.b] : 0, value[output_slot[k]], bar[output_slot[k]], bar[r.a],
                 r.b >= 0 ? bar[r.b] : scratch);
    }
    return bar;
  }
  // Forward sweep over the same records: the JVP of the recorded linearization.
  std::vector<double> jvp(const std::vector<double>& seed) const {
    std::vector<double> dot = seed;
    dot.resize(value.size(), 0.0);
    for (std::size_t k = 0; k < records.size(); ++k) {
      const Record& r = records[k];
      dot[output_slot[k]] = Rules::jvp(r.op, value[r.a], r.b >= 0 ? value[r.b] : 0, value[output_slot[k]], dot[r.a],
                                       r.b >= 0 ? dot[r.b] : 0);
    }
    return dot;
  }
};

}  // namespace mini

int main(int argc, char** argv) {
  [[maybe_unused]] const example::Options options(
      argc, argv, {},
      "amari_in_one_file: forward mode, a tape and a Fisher-vector product on scalars in one file,\n"
      "checked against amari's GgnOperator (exits 1 on a mismatch)");
  using mini::Op;
  // Logistic regression with two weights: z_i = w0 x_i0 + w1 x_i1, p_i = sigmoid(z_i).
  const double xs[4][2] = {{0.5, -1.0}, {1.5, 0.3}, {-0.7, 0.8}, {0.2, 0.2}};
  const double w[2] = {0.3, -0.6}, v[2] = {1.0, 0.25};

  // Forward mode: the logits' tangents along v, one pass per example.
  // Reverse mode: record all examples on one tape, then sweep.
  mini::Tape tape;
  const int w0 = tape.variable(w[0]), w1 = tape.variable(w[1]);
  std::vector<int> z;
  for (const auto& x : xs) {
    const int a = tape.apply(Op::mul, w0, tape.variable(x[0]));
    const int b = tape.apply(Op::mul, w1, tape.variable(x[1]));
    z.push_back(tape.apply(Op::add, a, b));
  }
  // F v = (1/N) sum_i J_i^T H_L(z_i) J_i v with H_L = p (1 - p) for the Bernoulli head.
  std::vector<double> seed(tape.value.size(), 0.0);
  seed[w0] = v[0], seed[w1] = v[1];
  const std::vector<double> jv = tape.jvp(seed);  // 1. a_i = J_i v, all examples in one sweep
  double fv[2] = {0, 0};
  for (std::size_t i = 0; i < z.size(); ++i) {
    const double p = 1 / (1 + std::exp(-tape.value[z[i]]));
    const double b = p * (1 - p) * jv[z[i]] / 4.0;  // 2. b_i = H_L(z_i) a_i / N
    const auto bar = tape.vjp(z[i], b);             // 3. J_i^T b_i
    fv[0] += bar[w0], fv[1] += bar[w1];
  }
  // Forward mode with duals gives the same tangent as the tape's forward sweep; through tanh too.
  const mini::Dual d = mini::apply(Op::add, mini::apply(Op::mul, {w[0], v[0]}, {xs[0][0], 0}),
                                   mini::apply(Op::mul, {w[1], v[1]}, {xs[0][1], 0}));
  const mini::Dual t = mini::apply(Op::tanh, d);
  std::printf("mini: z_0 tangent by duals %.12f, by the tape's forward sweep %.12f\n", d.t, jv[z[0]]);
  std::printf("mini: tanh(z_0) tangent %.12f = (1 - tanh^2) * %.12f\n", t.t, d.t);
  std::printf("mini: F v = (%.12f, %.12f)\n", fv[0], fv[1]);

  // The same Fisher-vector product with amari: a Linear(2 -> 1, no bias) model, Bernoulli head.
  auto net = std::make_shared<amari::nn::Linear<double>>(2, 1, false);
  amari::nn::Model<double> model(net);
  model.parameters()[0] = w[0], model.parameters()[1] = w[1];
  auto x = amari::Tensor<double>::uninitialized(amari::Shape{4, 2});
  for (int i = 0; i < 4; ++i) x[2 * i] = xs[i][0], x[2 * i + 1] = xs[i][1];
  amari::nn::SigmoidBernoulli<double> head;
  amari::curvature::GgnOperator<double> fisher(model, head, x);
  const auto vt = amari::Tensor<double>::from({2}, {v[0], v[1]});
  amari::Tensor<double> out(amari::Shape{2});
  fisher.apply(vt, out);
  std::printf("amari: F v = (%.12f, %.12f)\n", out[0], out[1]);
  const bool ok = std::fabs(out[0] - fv[0]) < 1e-12 && std::fabs(out[1] - fv[1]) < 1e-12 && std::fabs(d.t - jv[z[0]]) < 1e-15;
  std::printf("%s\n", ok ? "the one-file version and amari agree" : "MISMATCH");
  return ok ? 0 : 1;
}
