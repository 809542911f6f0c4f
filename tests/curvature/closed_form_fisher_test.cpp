// The closed-form Fisher operator J^T F_R J (curvature/closed_form_fisher.hpp) and the GGN with
// targets, on tiny networks: for the three exponential-family heads the Fisher equals the GGN
// (SEED-NOTES 3); for the learned-variance Gaussian head the two differ, each equals its dense
// (1/N) sum_i J_i^T M_i J_i built here, the GGN refuses to run without targets and has a negative
// eigenvalue at large residuals, and the Monte-Carlo Fisher converges to the closed form.
//
// Dense P x P matrices are formed here only (P = 28 or 31). The references: Jacobians from
// Model::forward_jvp (dual numbers), H_L from the tape Hessian of the head's loss in z, F_R from
// the closed form diag(w, 1/2) written out here, eigenvalues by Jacobi (support/sym_eigen.hpp).
#include <cmath>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <catch2/catch.hpp>

#include <amari/autodiff/autodiff.hpp>
#include <amari/curvature/closed_form_fisher.hpp>
#include <amari/curvature/diag_ggn.hpp>
#include <amari/curvature/fisher.hpp>
#include <amari/curvature/ggn.hpp>
#include <amari/curvature/lanczos.hpp>
#include <amari/nn/gaussian_variance_head.hpp>
#include <amari/nn/heads.hpp>
#include <amari/nn/layers.hpp>
#include <amari/nn/model.hpp>

#include "support/dense.hpp"
#include "support/matchers.hpp"
#include "support/random.hpp"
#include "support/sym_eigen.hpp"

namespace {

using amari::Index;
using amari::Shape;
using amari::Tensor;
using amari::Var;
using amari::curvature::ClosedFormFisherOperator;
using amari::curvature::GgnOperator;
using amari::curvature::MonteCarloFisherOperator;
using amari::nn::Act;
using amari::nn::GaussianLearnedVariance;
using amari::nn::Head;
using amari::nn::Model;
using amari::test::Dense;
using amari::test::dense_of;
using amari::test::MessageContains;
using amari::test::normal_tensor;
using amari::test::rel_frobenius;
using amari::test::Rng;

constexpr Index kD = 3, kH = 4, kN = 5;

Model<double> make_mlp(Rng& rng, Index outputs) {
  Model<double> model(amari::nn::mlp<double>({kD, kH, outputs}, Act::tanh));
  Tensor<double>& theta = model.parameters();
  for (Index k = 0; k < theta.size(); ++k) theta[k] = rng.uniform(-1.0, 1.0);
  return model;
}

// J (N Z x P), row (i, c), from Model::forward_jvp with unit tangents: dual numbers, no tape.
std::vector<double> jacobian_by_duals(const Model<double>& model, const Tensor<double>& x,
                                      Index z_width) {
  const Index p = model.num_parameters(), n = x.dim(0);
  std::vector<double> jac(static_cast<std::size_t>(n * z_width * p));
  Tensor<double> e(Shape{p});
  for (Index j = 0; j < p; ++j) {
    e.fill(0.0);
    e[j] = 1.0;
    const Tensor<double> a = model.forward_jvp(x, e).tangent_or_zeros();
    for (Index r = 0; r < n * z_width; ++r) jac[static_cast<std::size_t>(r * p + j)] = a[r];
  }
  return jac;
}

// (1/N) sum_i J_i^T M_i J_i with M_i (Z x Z, row-major) given per example.
Dense pullback(const std::vector<double>& jac, Index n, Index zw, Index p,
               const std::function<std::vector<double>(Index)>& m_of) {
  Dense out(p);
  for (Index i = 0; i < n; ++i) {
    const std::vector<double> m = m_of(i);
    for (Index r = 0; r < zw; ++r)
      for (Index c = 0; c < zw; ++c) {
        const double w = m[static_cast<std::size_t>(r * zw + c)] / static_cast<double>(n);
        if (w == 0.0) continue;
        for (Index a = 0; a < p; ++a)
          for (Index b = 0; b < p; ++b)
            out(a, b) += w * jac[static_cast<std::size_t>((i * zw + r) * p + a)] *
                         jac[static_cast<std::size_t>((i * zw + c) * p + b)];
      }
  }
  return out;
}

// A regression problem for the learned-variance head: C = 2 outputs, logits (N, 4). Targets are
// the predicted means shifted by `offset` (large offsets: large residuals).
struct VarianceProblem {
  Rng rng{31};
  Model<double> model = make_mlp(rng, 4);
  Tensor<double> x = normal_tensor<double>(Shape{kN, kD}, rng);
  GaussianLearnedVariance<double> head;
  Tensor<double> targets(double offset) {
    const Tensor<double> z = model.forward(x);
    Tensor<double> y(Shape{kN, 2});
    for (Index i = 0; i < kN; ++i)
      for (Index j = 0; j < 2; ++j)
        y[i * 2 + j] = z[i * 4 + j] + offset * (j == 0 ? 1.0 : -0.5) + 0.1 * rng.normal();
    return y;
  }
};

}  // namespace

TEST_CASE("closed-form Fisher equals the GGN for the three exponential-family heads",
          "[fisher][ggn]") {
  Rng rng(5);
  const Model<double> model = make_mlp(rng, 3);
  const Tensor<double> x = normal_tensor<double>(Shape{kN, kD}, rng);
  std::vector<std::shared_ptr<const Head<double>>> heads = {
      std::make_shared<amari::nn::SoftmaxCrossEntropy<double>>(),
      std::make_shared<amari::nn::SigmoidBernoulli<double>>(),
      std::make_shared<amari::nn::Gaussian<double>>(0.7)};
  for (const auto& head : heads) {
    DYNAMIC_SECTION(head->name()) {
      ClosedFormFisherOperator<double> fisher(model, *head, x);
      GgnOperator<double> ggn(model, *head, x);
      const Dense f = dense_of(fisher), g = dense_of(ggn);
      CHECK(f.a == g.a);  // the same product, bit for bit
      CHECK(amari::test::frobenius(f) > 1e-3);
      CHECK(fisher.name() == "Fisher(" + head->name() + ", N=5)");
    }
  }
}

TEST_CASE("learned-variance head: the Fisher operator equals the dense (1/N) sum J^T F_R J",
          "[fisher][variance]") {
  VarianceProblem pr;
  ClosedFormFisherOperator<double> fisher(pr.model, pr.head, pr.x);
  const Dense f = dense_of(fisher);
  const Index p = pr.model.num_parameters();
  const Tensor<double> z = pr.model.forward(pr.x);
  const std::vector<double> jac = jacobian_by_duals(pr.model, pr.x, 4);
  // F_R(z_i) = diag(exp(-s_1), exp(-s_2), 1/2, 1/2): the closed form, written out independently.
  const Dense expected = pullback(jac, kN, 4, p, [&](Index i) {
    std::vector<double> m(16, 0.0);
    m[0] = std::exp(-z[i * 4 + 2]);
    m[5] = std::exp(-z[i * 4 + 3]);
    m[10] = m[15] = 0.5;
    return m;
  });
  INFO("relative Frobenius error " << rel_frobenius(f, expected));
  CHECK(rel_frobenius(f, expected) < 1e-12);
  CHECK(amari::test::asymmetry(f) < 1e-14);
  CHECK(amari::test::symmetric_eigenvalues(f).front() > -1e-12);  // PSD
}

TEST_CASE(
    "learned-variance head: the GGN with targets equals the dense (1/N) sum J^T H_L J with H_L "
    "from the tape",
    "[ggn][variance]") {
  VarianceProblem pr;
  const Tensor<double> y = pr.targets(1.0);
  GgnOperator<double> ggn(pr.model, pr.head, pr.x, y);
  const Dense g = dense_of(ggn);
  const Index p = pr.model.num_parameters();
  const Tensor<double> z = pr.model.forward(pr.x);
  const std::vector<double> jac = jacobian_by_duals(pr.model, pr.x, 4);
  const Dense expected = pullback(jac, kN, 4, p, [&](Index i) {
    // The Hessian of example i's loss in z_i (batch of one), by tape Hessian-vector products.
    const Tensor<double> zi = amari::test::row(z, i), yi = amari::test::row(y, i);
    std::vector<double> m(16);
    for (Index k = 0; k < 4; ++k) {
      Tensor<double> e(Shape{1, 4});
      e[k] = 1;
      const Tensor<double> col =
          amari::hvp([&](const Var<double>& v) { return pr.head.loss(v, yi); }, zi, e);
      for (Index r = 0; r < 4; ++r) m[static_cast<std::size_t>(r * 4 + k)] = col[r];
    }
    return m;
  });
  INFO("relative Frobenius error " << rel_frobenius(g, expected));
  CHECK(rel_frobenius(g, expected) < 1e-12);
  // ... and it is not the Fisher.
  ClosedFormFisherOperator<double> fisher(pr.model, pr.head, pr.x);
  CHECK(rel_frobenius(g, dense_of(fisher)) > 0.05);
}

TEST_CASE(
    "learned-variance head: the GGN has a negative eigenvalue at large residuals, the Fisher none",
    "[ggn][variance]") {
  VarianceProblem pr;
  GgnOperator<double> ggn(pr.model, pr.head, pr.x, pr.targets(20.0));
  ClosedFormFisherOperator<double> fisher(pr.model, pr.head, pr.x);
  const std::vector<double> g = amari::test::symmetric_eigenvalues(dense_of(ggn));
  const std::vector<double> f = amari::test::symmetric_eigenvalues(dense_of(fisher));
  INFO("GGN eigenvalues " << g.front() << " .. " << g.back() << ", Fisher " << f.front() << " .. "
                          << f.back());
  CHECK(g.front() < -1e-3 * g.back());
  CHECK(f.front() > -1e-12 * f.back());
  // Lanczos on the operator finds the same smallest eigenvalue (full Krylov space: P steps).
  amari::curvature::LanczosOptions options;
  options.which = amari::curvature::SpectrumEnd::smallest;
  options.max_iterations = static_cast<int>(ggn.size());
  const auto lz = amari::curvature::lanczos(ggn, 1, options);
  CHECK(lz.smallest.eigenvalues.at(0) == Approx(g.front()).epsilon(1e-8));
}

TEST_CASE("learned-variance head: GgnOperator without targets refuses the head with a clear error",
          "[ggn][variance]") {
  VarianceProblem pr;
  CHECK_THROWS_MATCHES(
      GgnOperator<double>(pr.model, pr.head, pr.x), amari::ValueError,
      MessageContains({"GgnOperator", "Gaussian (learned variance)", "depends on the targets"}));
  GgnOperator<double> ggn(pr.model, pr.head, pr.x, pr.targets(1.0));
  CHECK_THROWS_MATCHES(ggn.relinearize(pr.x), amari::ValueError,
                       MessageContains({"relinearize", "targets"}));
  // Targets of the logits' width (N, 2C) instead of (N, C) are refused, naming both shapes, and
  // leave the operator as it was.
  const Dense before = dense_of(ggn);
  CHECK_THROWS_MATCHES(ggn.relinearize(pr.x, Tensor<double>(Shape{kN, 4})), amari::ShapeError,
                       MessageContains({"(5, 4)", "(5, 2)"}));
  CHECK(dense_of(ggn).a == before.a);
  // Code that factors H_L without targets gets the head's error too.
  CHECK_THROWS_MATCHES(amari::curvature::diagonal_ggn(pr.model, pr.head, pr.x), amari::ValueError,
                       MessageContains({"hessian_product", "depends on the targets"}));
}

TEST_CASE(
    "learned-variance head: the Monte-Carlo Fisher converges to the closed-form Fisher like "
    "1/sqrt(k)",
    "[fisher][variance]") {
  VarianceProblem pr;
  ClosedFormFisherOperator<double> fisher(pr.model, pr.head, pr.x);
  const Dense f = dense_of(fisher);
  MonteCarloFisherOperator<double> few(pr.model, pr.head, pr.x, 64, 7);
  MonteCarloFisherOperator<double> many(pr.model, pr.head, pr.x, 4096, 7);
  const double err_few = rel_frobenius(dense_of(few), f),
               err_many = rel_frobenius(dense_of(many), f);
  INFO("relative error with 64 samples " << err_few << ", with 4096 " << err_many);
  // 64 times the samples: the error shrinks by about 8.
  CHECK(err_many < err_few / 3);
  CHECK(err_many < 0.05);
  // Sampling keyed by example id (ids 0..N-1) draws exactly the same labels as the batch call.
  std::vector<Index> ids = {0, 1, 2, 3, 4};
  MonteCarloFisherOperator<double> by_id(pr.model, pr.head, pr.x, 64, 7, ids);
  CHECK(dense_of(by_id).a == dense_of(few).a);
}
