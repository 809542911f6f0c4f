// The GGN product and its relatives on tiny networks: GGN == Fisher for the three heads
// (SEED-NOTES 3), symmetry and positivity of every curvature product, the closed forms of linear
// and logistic regression, the Hessian = GGN + residual decomposition, the behaviour of the
// linearization (snapshot, relinearize, adjoint identity), the apply() error paths, and float.
//
// Dense P x P matrices are formed here only, column by column from products (P <= 31), and the
// references are built independently of the operators under test: Jacobians from Model::forward_jvp
// (dual numbers, not the tape), H_L from the closed forms of SEED-NOTES 3 written out as matrices,
// scores from a tape VJP of log p on a batch of one example, Hessians from finite differences of
// first-order tape gradients.
#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdint>
#include <functional>
#include <limits>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include <catch2/catch.hpp>

#include <amari/autodiff/autodiff.hpp>
#include <amari/curvature/fisher.hpp>
#include <amari/curvature/ggn.hpp>
#include <amari/curvature/hessian.hpp>
#include <amari/curvature/linearization.hpp>
#include <amari/nn/heads.hpp>
#include <amari/nn/layers.hpp>
#include <amari/nn/model.hpp>

#include "support/random.hpp"
#include "support/matchers.hpp"
#include "support/dense.hpp"

namespace {

using amari::test::MessageContains;
using amari::test::Dense;
using amari::test::frobenius;
using amari::test::rel_frobenius;
using amari::test::dense_of;
using amari::test::concat;
using amari::test::row;
using amari::Index;
using amari::Shape;
using amari::Tape;
using amari::Tensor;
using amari::Var;
using amari::curvature::EmpiricalFisherOperator;
using amari::curvature::GgnOperator;
using amari::curvature::HessianOperator;
using amari::curvature::LinearOperator;
using amari::curvature::ModelLinearization;
using amari::curvature::MonteCarloFisherOperator;
using amari::nn::Act;
using amari::nn::Gaussian;
using amari::nn::Head;
using amari::nn::Linear;
using amari::nn::Model;
using amari::nn::SigmoidBernoulli;
using amari::nn::SoftmaxCrossEntropy;
using amari::test::distance;
using amari::test::dot;
using amari::test::norm;
using amari::test::normal_tensor;
using amari::test::Rng;

constexpr Index kD = 3, kH = 4, kC = 3, kN = 5;  // P = 3*4 + 4 + 4*3 + 3 = 31
constexpr double kSigma = 0.7;

// Column j: the derivative of f along e_j at theta, by central differences with one Richardson
// step (error O(h^4)); f maps R^P to R^P.
Dense fd_jacobian(const std::function<Tensor<double>(const Tensor<double>&)>& f,
                  const Tensor<double>& theta, double h = 1e-3) {
  const Index n = theta.size();
  Dense m(n);
  auto shifted = [&](Index j, double step) {
    Tensor<double> t = theta.clone();
    t[j] += step;
    return f(t);
  };
  for (Index j = 0; j < n; ++j) {
    const Tensor<double> a1 = shifted(j, h), b1 = shifted(j, -h);
    const Tensor<double> a2 = shifted(j, 2 * h), b2 = shifted(j, -2 * h);
    for (Index i = 0; i < n; ++i) m(i, j) = (8 * (a1[i] - b1[i]) - (a2[i] - b2[i])) / (12 * h);
  }
  return m;
}

Tensor<double> apply(LinearOperator<double>& op, const Tensor<double>& v) {
  Tensor<double> out(Shape{op.size()});
  op.apply(v, out);
  return out;
}

void randomize(Model<double>& model, Rng& rng, double scale) {
  Tensor<double>& theta = model.parameters();
  for (Index k = 0; k < theta.size(); ++k) theta[k] = rng.uniform(-scale, scale);
}

// The 3-4-3 tanh MLP with every parameter, biases included, uniform in [-1.5, 1.5].
Model<double> make_mlp(Rng& rng) {
  Model<double> model(amari::nn::mlp<double>({kD, kH, kC}, Act::tanh));
  randomize(model, rng, 1.5);
  return model;
}

// grad_theta log p_theta(y|x) for one example by a tape VJP of the head's NLL (batch of one), and
// log p up to the constant the head's loss leaves out (none for the two discrete heads).
struct LogLikelihood {
  double value;
  Tensor<double> score;
};
LogLikelihood log_likelihood(const Model<double>& model, const Head<double>& head,
                             const Tensor<double>& x1, const Tensor<double>& y1) {
  Tape<double> tape;
  const std::vector<Var<double>> params = model.variables(tape);
  const Var<double> z = model.forward(Var<double>(x1), std::span<const Var<double>>(params));
  const Var<double> nll = head.loss(z, y1);
  const Tensor<double> minus_one = Tensor<double>::full(nll.shape(), -1.0);
  auto g = tape.vjp(std::span<const Var<double>>(&nll, 1),
                    std::span<const Tensor<double>>(&minus_one, 1), params);
  return {-nll.value().item(), concat(g)};
}

// J (N C x P), row (i, c), from Model::forward_jvp with unit tangents: dual numbers, no tape.
std::vector<double> jacobian_by_duals(const Model<double>& model, const Tensor<double>& x) {
  const Index p = model.num_parameters(), n = x.dim(0);
  const Index c = model.forward(x).dim(1);
  std::vector<double> jac(static_cast<std::size_t>(n * c * p));
  Tensor<double> e(Shape{p});
  for (Index j = 0; j < p; ++j) {
    e.fill(0.0);
    e[j] = 1.0;
    const Tensor<double> a = model.forward_jvp(x, e).tangent_or_zeros();
    for (Index r = 0; r < n * c; ++r) jac[static_cast<std::size_t>(r * p + j)] = a[r];
  }
  return jac;
}

double sigmoid(double z) {
  return 1.0 / (1.0 + std::exp(-z));
}

std::vector<double> softmax_row(const Tensor<double>& z, Index i) {
  const Index c = z.dim(1);
  double m = -std::numeric_limits<double>::infinity();
  for (Index j = 0; j < c; ++j) m = std::max(m, z[i * c + j]);
  std::vector<double> p(static_cast<std::size_t>(c));
  double s = 0;
  for (Index j = 0; j < c; ++j) s += p[static_cast<std::size_t>(j)] = std::exp(z[i * c + j] - m);
  for (double& v : p) v /= s;
  return p;
}

// One label outcome of the output family at an example: y (1, C) with a probability weight, or
// no weight for "p(y|x) = exp(log p)" (discrete heads).
struct Outcome {
  Tensor<double> y;
  std::optional<double> weight;
};

// A head with its closed-form H_L(z_i) as a C x C matrix (SEED-NOTES 3 table) and an exact
// enumeration of its label distribution at z_i for E_y[s s^T].
struct HeadCase {
  std::string label;
  std::shared_ptr<const Head<double>> head;
  std::function<std::vector<double>(const Tensor<double>& z, Index i)> logit_hessian;
  std::function<std::vector<Outcome>(const Tensor<double>& z, Index i)> outcomes;
};

std::vector<HeadCase> head_cases() {
  std::vector<HeadCase> cases;
  cases.push_back({"softmax cross-entropy", std::make_shared<SoftmaxCrossEntropy<double>>(),
                   [](const Tensor<double>& z, Index i) {  // diag(p) - p p^T
                     const std::vector<double> p = softmax_row(z, i);
                     std::vector<double> h(static_cast<std::size_t>(kC * kC));
                     for (Index a = 0; a < kC; ++a)
                       for (Index b = 0; b < kC; ++b)
                         h[static_cast<std::size_t>(a * kC + b)] =
                             (a == b ? p[static_cast<std::size_t>(a)] : 0.0) -
                             p[static_cast<std::size_t>(a)] * p[static_cast<std::size_t>(b)];
                     return h;
                   },
                   [](const Tensor<double>&, Index) {  // the C classes
                     std::vector<Outcome> out;
                     for (Index y = 0; y < kC; ++y) {
                       Tensor<double> t(Shape{1, kC});
                       t[y] = 1.0;
                       out.push_back({t, std::nullopt});
                     }
                     return out;
                   }});
  cases.push_back({"sigmoid Bernoulli", std::make_shared<SigmoidBernoulli<double>>(),
                   [](const Tensor<double>& z, Index i) {  // diag(p (1 - p))
                     std::vector<double> h(static_cast<std::size_t>(kC * kC), 0.0);
                     for (Index a = 0; a < kC; ++a) {
                       const double p = sigmoid(z[i * kC + a]);
                       h[static_cast<std::size_t>(a * kC + a)] = p * (1 - p);
                     }
                     return h;
                   },
                   [](const Tensor<double>&, Index) {  // the 2^C binary vectors
                     std::vector<Outcome> out;
                     for (int bits = 0; bits < (1 << kC); ++bits) {
                       Tensor<double> t(Shape{1, kC});
                       for (Index c = 0; c < kC; ++c) t[c] = (bits >> c) & 1;
                       out.push_back({t, std::nullopt});
                     }
                     return out;
                   }});
  cases.push_back({"Gaussian sigma 0.7", std::make_shared<Gaussian<double>>(kSigma),
                   [](const Tensor<double>&, Index) {  // I / sigma^2
                     std::vector<double> h(static_cast<std::size_t>(kC * kC), 0.0);
                     for (Index a = 0; a < kC; ++a)
                       h[static_cast<std::size_t>(a * kC + a)] = 1 / (kSigma * kSigma);
                     return h;
                   },
                   [](const Tensor<double>& z, Index i) {
                     // E over y ~ N(z, sigma^2 I) of the quadratic s s^T, exactly: the 2-point
                     // Gauss-Hermite rule per coordinate (nodes z +- sigma, weights 1/2) integrates
                     // cubics exactly.
                     std::vector<Outcome> out;
                     for (int bits = 0; bits < (1 << kC); ++bits) {
                       Tensor<double> t(Shape{1, kC});
                       for (Index c = 0; c < kC; ++c)
                         t[c] = z[i * kC + c] + ((bits >> c) & 1 ? kSigma : -kSigma);
                       out.push_back({t, 1.0 / (1 << kC)});
                     }
                     return out;
                   }});
  return cases;
}

}  // namespace

TEST_CASE("GGN equals (1/N) sum_i J_i^T H_L(z_i) J_i and the enumerated Fisher, for every head",
          "[ggn]") {
  // SEED-NOTES 3: for an exponential family with natural parameter z, F_R = H_L, so the GGN
  // product (SEED-NOTES 4) is the Fisher. Three independent matrices are compared: GgnOperator
  // applied to the P unit vectors; (1/N) sum J^T H_L J with J from dual numbers and H_L from the
  // closed form; and E_x E_y[s s^T] with the labels enumerated (Gaussian: exact quadrature).
  for (const HeadCase& hc : head_cases()) {
    SECTION(hc.label) {
      Rng rng(21);
      Model<double> model = make_mlp(rng);
      const Tensor<double> x = normal_tensor<double>(Shape{kN, kD}, rng);
      const Index p = model.num_parameters();
      REQUIRE(p == 31);

      GgnOperator<double> ggn(model, *hc.head, x);
      const Dense g = dense_of(ggn);

      const Tensor<double> z = model.forward(x);
      const std::vector<double> jac = jacobian_by_duals(model, x);
      auto j_at = [&](Index i, Index c, Index k) {
        return jac[static_cast<std::size_t>((i * kC + c) * p + k)];
      };
      Dense expected(p);
      for (Index i = 0; i < kN; ++i) {
        const std::vector<double> hl = hc.logit_hessian(z, i);
        for (Index a = 0; a < kC; ++a)
          for (Index b = 0; b < kC; ++b) {
            const double w = hl[static_cast<std::size_t>(a * kC + b)] / kN;
            if (w == 0.0) continue;
            for (Index r = 0; r < p; ++r)
              for (Index s = 0; s < p; ++s) expected(r, s) += w * j_at(i, a, r) * j_at(i, b, s);
          }
      }
      CHECK(rel_frobenius(g, expected) < 1e-10);

      Dense fisher(p);
      for (Index i = 0; i < kN; ++i) {
        double total = 0;
        for (const Outcome& o : hc.outcomes(z, i)) {
          const LogLikelihood ll = log_likelihood(model, *hc.head, row(x, i), o.y);
          const double w = o.weight ? *o.weight : std::exp(ll.value);
          fisher.add_outer(w / kN, ll.score);
          total += w;
        }
        REQUIRE(total == Approx(1.0).epsilon(1e-13));
      }
      CHECK(rel_frobenius(g, fisher) < 1e-10);
    }
  }
}

TEST_CASE("curvature products are symmetric, and GGN, MC Fisher and EF are PSD, on probes",
          "[ggn]") {
  // u^T (A v) = v^T (A u) and v^T A v >= 0 (SEED-NOTES 4: J^T M J with M symmetric PSD for the
  // GGN and the score outer products). The Hessian is only symmetric: its residual term can make
  // it indefinite (SEED-NOTES 3).
  Rng rng(22);
  Model<double> model = make_mlp(rng);
  const Tensor<double> x = normal_tensor<double>(Shape{kN, kD}, rng);
  const Tensor<double> y = amari::nn::one_hot<double>({0, 2, 1, 1, 0}, kC);
  const SoftmaxCrossEntropy<double> head;
  GgnOperator<double> ggn(model, head, x);
  MonteCarloFisherOperator<double> mc(model, head, x, 5, 3);
  EmpiricalFisherOperator<double> ef(model, head, x, y);
  HessianOperator<double> hessian(model, head, x, y);
  struct Case {
    LinearOperator<double>* op;
    bool psd;
  };
  for (const Case& cs :
       {Case{&ggn, true}, Case{&mc, true}, Case{&ef, true}, Case{&hessian, false}}) {
    LinearOperator<double>& op = *cs.op;
    CAPTURE(op.name());
    double largest_quadratic = 0;
    for (int probe = 0; probe < 20; ++probe) {
      CAPTURE(probe);
      const Tensor<double> u = normal_tensor<double>(Shape{op.size()}, rng);
      const Tensor<double> v = normal_tensor<double>(Shape{op.size()}, rng);
      const Tensor<double> au = apply(op, u), av = apply(op, v);
      const double scale = norm(u) * norm(av) + norm(v) * norm(au);
      REQUIRE(scale > 0);
      CHECK(std::fabs(dot(u, av) - dot(v, au)) <= 1e-12 * scale);
      if (cs.psd) CHECK(dot(v, av) >= -1e-12 * norm(v) * norm(av));
      largest_quadratic = std::max(largest_quadratic, std::fabs(dot(v, av)));
    }
    CHECK(largest_quadratic > 1e-3);  // the probes see a non-zero operator
  }
}

TEST_CASE("apply_quadratic_form: the product of apply() and v^T A v of the dense matrix", "[ggn]") {
  // The J^T M J operators take v^T C v = a^T b from their logit-space vectors (jtmj_operator.hpp);
  // the Hessian uses LinearOperator's default (a dot with the product). The reference is the
  // dense matrix assembled from products, v^T (A v) summed in this test.
  Rng rng(23);
  Model<double> model = make_mlp(rng);
  const Tensor<double> x = normal_tensor<double>(Shape{kN, kD}, rng);
  const Tensor<double> y = amari::nn::one_hot<double>({1, 0, 2, 2, 1}, kC);
  const SoftmaxCrossEntropy<double> head;
  GgnOperator<double> ggn(model, head, x);
  MonteCarloFisherOperator<double> mc(model, head, x, 3, 7);
  EmpiricalFisherOperator<double> ef(model, head, x, y);
  HessianOperator<double> hessian(model, head, x, y);
  for (LinearOperator<double>* op : {static_cast<LinearOperator<double>*>(&ggn),
                                     static_cast<LinearOperator<double>*>(&mc),
                                     static_cast<LinearOperator<double>*>(&ef),
                                     static_cast<LinearOperator<double>*>(&hessian)}) {
    CAPTURE(op->name());
    const Dense a = dense_of(*op);
    const Index p = op->size();
    for (int probe = 0; probe < 5; ++probe) {
      const Tensor<double> v = normal_tensor<double>(Shape{p}, rng);
      Tensor<double> out(Shape{p});
      const double form = op->apply_quadratic_form(v, out);
      const Tensor<double> av = apply(*op, v);
      for (Index i = 0; i < p; ++i) REQUIRE(out[i] == av[i]);  // the same product, bit for bit
      double expected = 0, scale = 0;
      for (Index r = 0; r < p; ++r)
        for (Index c = 0; c < p; ++c) {
          expected += v[r] * a(r, c) * v[c];
          scale += std::fabs(v[r] * a(r, c) * v[c]);
        }
      REQUIRE(scale > 1e-6);
      CHECK(std::fabs(form - expected) <= 1e-12 * scale);
    }
  }
}

TEST_CASE("linear regression, Gaussian head: F = X^T X / (N sigma^2) and the Hessian equals it",
          "[ggn]") {
  // SEED-NOTES 3: z = x W + b is linear in theta, so J_i is x_i (augmented with 1 for the bias)
  // per output and the residual term vanishes: H == GGN == F exactly. Flat layout (model.hpp):
  // W (D, C) row-major, then b (C), so entry (d, c) of the augmented weight [W; b] is at d C + c.
  const Index d = 4, n = 6;
  for (const Index c : {Index{1}, Index{2}}) {
    SECTION("C = " + std::to_string(c)) {
      Rng rng(23);
      Model<double> model(std::make_shared<Linear<double>>(d, c));
      randomize(model, rng, 1.0);
      const Tensor<double> x = normal_tensor<double>(Shape{n, d}, rng);
      const Tensor<double> y = normal_tensor<double>(Shape{n, c}, rng);
      const Gaussian<double> head(kSigma);
      const Index p = model.num_parameters();
      REQUIRE(p == (d + 1) * c);

      auto xa = [&](Index i, Index k) { return k < d ? x[i * d + k] : 1.0; };  // [X, 1]
      Dense expected(p);
      for (Index k = 0; k <= d; ++k)
        for (Index l = 0; l <= d; ++l) {
          double xtx = 0;
          for (Index i = 0; i < n; ++i) xtx += xa(i, k) * xa(i, l);
          for (Index o = 0; o < c; ++o)
            expected(k * c + o, l * c + o) = xtx / (n * kSigma * kSigma);
        }
      GgnOperator<double> ggn(model, head, x);
      HessianOperator<double> hessian(model, head, x, y);
      const Dense g = dense_of(ggn), h = dense_of(hessian);
      CHECK(rel_frobenius(g, expected) < 1e-12);
      CHECK(rel_frobenius(h, g) < 1e-12);
    }
  }
}

TEST_CASE("logistic regression: F = X^T diag(p (1 - p)) X / N and the Hessian equals it", "[ggn]") {
  // SEED-NOTES 3 with H_L = diag(p (1 - p)); the model is linear in theta, so H == GGN.
  const Index d = 4, n = 7;
  Rng rng(24);
  Model<double> model(std::make_shared<Linear<double>>(d, 1));
  randomize(model, rng, 1.5);
  const Tensor<double> x = normal_tensor<double>(Shape{n, d}, rng);
  Tensor<double> y(Shape{n, 1});
  for (Index i = 0; i < n; ++i) y[i] = static_cast<double>(rng.below(2));
  const SigmoidBernoulli<double> head;

  const Tensor<double>& theta = model.parameters();  // w_0 .. w_{d-1}, b
  auto xa = [&](Index i, Index k) { return k < d ? x[i * d + k] : 1.0; };
  Dense expected(d + 1);
  for (Index i = 0; i < n; ++i) {
    double zi = 0;
    for (Index k = 0; k <= d; ++k) zi += xa(i, k) * theta[k];
    const double pi = sigmoid(zi);
    for (Index k = 0; k <= d; ++k)
      for (Index l = 0; l <= d; ++l) expected(k, l) += pi * (1 - pi) * xa(i, k) * xa(i, l) / n;
  }
  GgnOperator<double> ggn(model, head, x);
  HessianOperator<double> hessian(model, head, x, y);
  const Dense g = dense_of(ggn), h = dense_of(hessian);
  CHECK(rel_frobenius(g, expected) < 1e-12);
  CHECK(rel_frobenius(h, g) < 1e-12);
}

TEST_CASE("ModelLinearization: J v equals Model::forward_jvp and <b, J v> = <J^T b, v>", "[ggn]") {
  // The tape's forward sweep over the recorded pass against dual numbers (an independent forward
  // mode), and the reverse sweep against the forward one by the adjoint identity.
  Rng rng(25);
  Model<double> model = make_mlp(rng);
  const Tensor<double> x = normal_tensor<double>(Shape{kN, kD}, rng);
  ModelLinearization<double> lin(model, x);
  const Index p = model.num_parameters();
  REQUIRE(lin.num_parameters() == p);
  REQUIRE(lin.batch_size() == kN);
  REQUIRE(lin.num_outputs() == kC);
  CHECK(distance(lin.logits(), model.forward(x)) <= 1e-14 * norm(model.forward(x)));
  for (int probe = 0; probe < 5; ++probe) {
    CAPTURE(probe);
    const Tensor<double> v = normal_tensor<double>(Shape{p}, rng);
    const Tensor<double> b = normal_tensor<double>(Shape{kN, kC}, rng);
    Tensor<double> jv(Shape{kN, kC}), jtb(Shape{p});
    lin.jvp(v, jv);
    lin.vjp(b, jtb);
    const Tensor<double> reference = model.forward_jvp(x, v).tangent_or_zeros();
    CHECK(distance(jv, reference) <= 1e-12 * norm(reference));
    CHECK(std::fabs(dot(b, jv) - dot(jtb, v)) <=
          1e-12 * (norm(b) * norm(jv) + norm(jtb) * norm(v)));
  }
}

TEST_CASE("GGN and Hessian products keep the snapshot parameters until relinearize()", "[ggn]") {
  // linearization.hpp: the record is made at a copy of theta; updating the model afterwards must
  // not change the products, and relinearize() must move them to the new parameters exactly.
  Rng rng(26);
  Model<double> model = make_mlp(rng);
  const Tensor<double> x = normal_tensor<double>(Shape{kN, kD}, rng);
  const Tensor<double> y = amari::nn::one_hot<double>({1, 0, 2, 2, 1}, kC);
  const SoftmaxCrossEntropy<double> head;
  const Index p = model.num_parameters();
  const Tensor<double> v = normal_tensor<double>(Shape{p}, rng);
  const Tensor<double> old_theta = model.gather();

  GgnOperator<double> ggn(model, head, x);
  HessianOperator<double> hessian(model, head, x, y);
  const Tensor<double> g_old = apply(ggn, v), h_old = apply(hessian, v);

  Tensor<double>& theta = model.parameters();
  for (Index k = 0; k < p; ++k) theta[k] += rng.uniform(-0.5, 0.5);

  CHECK(apply(ggn, v).to_vector() == g_old.to_vector());
  CHECK(apply(hessian, v).to_vector() == h_old.to_vector());
  CHECK(ggn.linearization().parameters().to_vector() == old_theta.to_vector());

  GgnOperator<double> fresh_ggn(model, head, x);
  HessianOperator<double> fresh_hessian(model, head, x, y);
  const Tensor<double> g_new = apply(fresh_ggn, v), h_new = apply(fresh_hessian, v);
  REQUIRE(distance(g_new, g_old) > 1e-2 * norm(g_old));  // the update does change the product
  REQUIRE(distance(h_new, h_old) > 1e-2 * norm(h_old));

  ggn.relinearize();
  hessian.relinearize();
  CHECK(distance(apply(ggn, v), g_new) <= 1e-14 * norm(g_new));
  CHECK(distance(apply(hessian, v), h_new) <= 1e-14 * norm(h_new));
  CHECK(ggn.linearization().parameters().to_vector() == model.parameters().to_vector());
}

TEST_CASE("Hessian = GGN + residual sum_c dL/dz_c grad^2 z_c, and differs from the GGN on tanh",
          "[ggn]") {
  // SEED-NOTES 3. Two references for the residual R = sum_{i,c} (dL/dz_ic) grad^2 z_ic, with the
  // cotangent dL/dz fixed at the linearization point (head.gradient, which carries the 1/N):
  // exactly, by a second-order sweep of the logits alone; and without any second-order rule, by
  // finite differences of theta -> J(theta)^T dL/dz. The Hessian itself is also checked against
  // finite differences of the tape gradient (first-order rules only). Note that the information
  // identity (fisher_identities_test) cannot see errors in the residual: E_y[dL/dz] = 0.
  Rng rng(27);
  Model<double> model = make_mlp(rng);
  const Tensor<double> x = normal_tensor<double>(Shape{kN, kD}, rng);
  const Tensor<double> y = amari::nn::one_hot<double>({2, 1, 0, 1, 2}, kC);
  const SoftmaxCrossEntropy<double> head;
  const Index p = model.num_parameters();
  const Tensor<double> theta = model.gather();

  Tape<double> tape;
  const std::vector<Var<double>> params = model.variables(tape);
  const Var<double> z = model.forward(Var<double>(x), std::span<const Var<double>>(params));
  Tensor<double> dl_dz(Shape{kN, kC});
  head.gradient(z.value(), y, dl_dz);
  Dense residual(p);
  Tensor<double> e(Shape{p});
  for (Index j = 0; j < p; ++j) {
    e.fill(0.0);
    e[j] = 1.0;
    const std::vector<Tensor<double>> tangents = model.split(e);
    const Tensor<double> col =
        concat(tape.hvp(std::span<const Var<double>>(&z, 1),
                        std::span<const Tensor<double>>(&dl_dz, 1), params, tangents));
    for (Index i = 0; i < p; ++i) residual(i, j) = col[i];
  }
  // theta -> J(theta)^T b and theta -> grad L(theta), by first-order reverse sweeps.
  auto reverse_at = [&](const Tensor<double>& at, bool loss) {
    Tape<double> t;
    std::vector<Var<double>> vars;
    for (const Tensor<double>& view : model.split(at)) vars.push_back(t.variable(view.clone()));
    const Var<double> zt = model.forward(Var<double>(x), std::span<const Var<double>>(vars));
    const Var<double> out = loss ? head.loss(zt, y) : zt;
    const Tensor<double> cot = loss ? Tensor<double>::full(out.shape(), 1.0) : dl_dz;
    return concat(t.vjp(std::span<const Var<double>>(&out, 1),
                        std::span<const Tensor<double>>(&cot, 1), vars));
  };
  const Dense residual_fd =
      fd_jacobian([&](const Tensor<double>& at) { return reverse_at(at, false); }, theta);
  const Dense hessian_fd =
      fd_jacobian([&](const Tensor<double>& at) { return reverse_at(at, true); }, theta);
  CHECK(rel_frobenius(residual, residual_fd) < 1e-8);

  GgnOperator<double> ggn(model, head, x);
  HessianOperator<double> hessian(model, head, x, y);
  const Dense g = dense_of(ggn), h = dense_of(hessian);
  CHECK(rel_frobenius(h, hessian_fd) < 1e-8);
  Dense g_plus_r(p);
  for (std::size_t k = 0; k < g.a.size(); ++k) g_plus_r.a[k] = g.a[k] + residual.a[k];
  CHECK(rel_frobenius(h, g_plus_r) < 1e-10);
  const double differ = rel_frobenius(h, g);
  INFO("||H - GGN||_F / ||GGN||_F = " << differ);
  CHECK(differ > 1e-2);
}

TEST_CASE("apply() rejects wrong shapes (ShapeError naming the operator) and aliasing (ValueError)",
          "[ggn]") {
  Rng rng(28);
  Model<double> model = make_mlp(rng);
  const Tensor<double> x = normal_tensor<double>(Shape{kN, kD}, rng);
  const Tensor<double> y = amari::nn::one_hot<double>({0, 1, 2, 0, 1}, kC);
  const SoftmaxCrossEntropy<double> head;
  GgnOperator<double> ggn(model, head, x);
  MonteCarloFisherOperator<double> mc(model, head, x, 2, 1);
  EmpiricalFisherOperator<double> ef(model, head, x, y);
  HessianOperator<double> hessian(model, head, x, y);
  CHECK(ggn.name() == "GGN(softmax cross-entropy, N=5)");
  for (LinearOperator<double>* op :
       std::vector<LinearOperator<double>*>{&ggn, &mc, &ef, &hessian}) {
    const std::string name = op->name();
    CAPTURE(name);
    const Index p = op->size();
    REQUIRE(p == model.num_parameters());
    Tensor<double> v = normal_tensor<double>(Shape{p}, rng), out(Shape{p});
    Tensor<double> longer(Shape{p + 1}), shorter(Shape{p - 1}), column(Shape{p, 1});
    const MessageContains names_op({name, std::to_string(p)});
    CHECK_THROWS_MATCHES(op->apply(longer, out), amari::ShapeError, names_op);
    CHECK_THROWS_MATCHES(op->apply(v, shorter), amari::ShapeError, names_op);
    CHECK_THROWS_MATCHES(op->apply(column, out), amari::ShapeError, names_op);
    CHECK_THROWS_MATCHES(op->apply(v, v), amari::ValueError, MessageContains({name}));
    // A view of the same storage is aliasing too.
    Tensor<double> same = v.view(0, Shape{p});
    CHECK_THROWS_AS(op->apply(v, same), amari::ValueError);
    // After the rejected calls the operator still works and v was not touched.
    const Tensor<double> before = v.clone();
    CHECK_NOTHROW(op->apply(v, out));
    CHECK(v.to_vector() == before.to_vector());
  }
}

TEST_CASE("GgnOperator<float> matches GgnOperator<double> to 1e-5 relative", "[ggn]") {
  Rng rng(29);
  Model<double> model = make_mlp(rng);
  const Tensor<double> x = normal_tensor<double>(Shape{kN, kD}, rng);
  Model<float> model_f(amari::nn::mlp<float>({kD, kH, kC}, Act::tanh));
  model_f.scatter(amari::test::convert<float>(model.parameters()));
  const SoftmaxCrossEntropy<double> head;
  const SoftmaxCrossEntropy<float> head_f;
  GgnOperator<double> ggn(model, head, x);
  GgnOperator<float> ggn_f(model_f, head_f, amari::test::convert<float>(x));
  for (int probe = 0; probe < 5; ++probe) {
    CAPTURE(probe);
    // A float-representable probe, so the comparison measures the product and not the input.
    const Tensor<float> v_f = normal_tensor<float>(Shape{ggn.size()}, rng);
    const Tensor<double> v = amari::test::convert<double>(v_f);
    Tensor<float> out_f(Shape{ggn_f.size()});
    ggn_f.apply(v_f, out_f);
    const Tensor<double> out = apply(ggn, v);
    CHECK(distance(out_f, out) <= 1e-5 * norm(out));
  }
  CHECK(rel_frobenius(dense_of(ggn_f), dense_of(ggn)) < 1e-5);
}
