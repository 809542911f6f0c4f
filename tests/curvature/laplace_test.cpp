// Tests of the Laplace approximation (curvature/laplace*.hpp) on tiny models in double. Every
// reference is a dense matrix built here only: Jacobians from Model::forward_jvp with unit tangents
// (dual numbers, no tape), the GGN as (1/N) sum_n J_n^T H_L(z_n) J_n with the softmax Hessian
// diag(p) - p p^T written out, log determinants and inverses by a Cholesky factorization in this
// file, the log marginal likelihood from the log prior density with its 2 pi terms. Bayesian linear
// regression checks the closed forms (posterior covariance, predictive variance, evidence and its
// maximizer).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <memory>
#include <numbers>
#include <vector>

#include <catch2/catch.hpp>

#include <amari/autodiff/autodiff.hpp>
#include <amari/curvature/ggn.hpp>
#include <amari/curvature/kfac.hpp>
#include <amari/curvature/laplace.hpp>
#include <amari/curvature/dense_solve.hpp>
#include <amari/curvature/laplace_last_layer.hpp>
#include <amari/curvature/laplace_structures.hpp>
#include <amari/nn/heads.hpp>
#include <amari/nn/layers.hpp>
#include <amari/nn/model.hpp>
#include <amari/nn/normalization.hpp>

#include "support/dense.hpp"
#include "support/matchers.hpp"
#include "support/random.hpp"

namespace {

using amari::Index;
using amari::Shape;
using amari::ShapeError;
using amari::Tensor;
using amari::ValueError;
using amari::test::Dense;
using amari::test::dense_of;
using amari::test::MessageContains;
using amari::test::Rng;
using namespace amari::curvature;
using amari::nn::Gaussian;
using amari::nn::Linear;
using amari::nn::Model;
using amari::nn::Sequential;
using amari::nn::SoftmaxCrossEntropy;

constexpr Index kD = 3, kH = 4, kC = 3, kN = 8, kTest = 4;  // P = 3*4 + 4 + 4*3 + 3 = 31
constexpr Index kLastOffset = 16, kLastSize = 15;           // the last Linear's [W; b]

Model<double> mlp_model(std::uint64_t seed) {
  return Model<double>(amari::nn::mlp<double>({kD, kH, kC}, amari::nn::Act::tanh), seed);
}

// Linear, LayerNorm (untapped scale and shift), tanh, Linear.
Model<double> layer_norm_model(std::uint64_t seed) {
  auto seq = std::make_shared<Sequential<double>>();
  seq->emplace<Linear<double>>(kD, kH);
  seq->emplace<amari::nn::LayerNorm<double>>(kH);
  seq->emplace<amari::nn::Tanh<double>>();
  seq->emplace<Linear<double>>(kH, kC);
  Model<double> m(seq, seed);
  // Move the norm's scale and shift off 1 and 0 so their Jacobian is generic.
  Rng rng(seed + 100);
  for (Index i = 0; i < m.num_parameters(); ++i) m.parameters()[i] += 0.1 * rng.normal();
  return m;
}

struct Data {
  Tensor<double> x, y, test;
  std::vector<int> labels;
};

Data make_data(std::uint64_t seed) {
  Rng rng(seed);
  Data d;
  d.x = amari::test::normal_tensor<double>(Shape{kN, kD}, rng);
  d.test = amari::test::normal_tensor<double>(Shape{kTest, kD}, rng);
  for (Index i = 0; i < kN; ++i) d.labels.push_back(static_cast<int>(rng.below(kC)));
  d.y = amari::nn::one_hot<double>(d.labels, kC);
  return d;
}

// ---- dense references ---------------------------------------------------------------------------

// J_n of every example, row-major C x P: jac[n][c * P + j] = dz_{n,c}/dtheta_j, from forward_jvp
// with unit tangents.
std::vector<std::vector<double>> jacobians(const Model<double>& model, const Tensor<double>& x) {
  const Index p = model.num_parameters(), n = x.dim(0), c = model.forward(x).dim(1);
  std::vector<std::vector<double>> rows(static_cast<std::size_t>(n),
                                        std::vector<double>(static_cast<std::size_t>(c * p)));
  Tensor<double> e(Shape{p});
  for (Index j = 0; j < p; ++j) {
    e.fill(0.0);
    e[j] = 1.0;
    const Tensor<double> a = model.forward_jvp(x, e).tangent_or_zeros();
    for (Index i = 0; i < n; ++i)
      for (Index k = 0; k < c; ++k) rows[static_cast<std::size_t>(i)][static_cast<std::size_t>(k * p + j)] = a[i * c + k];
  }
  return rows;
}

std::vector<double> softmax(const Tensor<double>& z, Index i) {
  const Index c = z.dim(1);
  double m = z[i * c];
  for (Index k = 1; k < c; ++k) m = std::max(m, z[i * c + k]);
  std::vector<double> p(static_cast<std::size_t>(c));
  double s = 0;
  for (Index k = 0; k < c; ++k) s += p[static_cast<std::size_t>(k)] = std::exp(z[i * c + k] - m);
  for (double& v : p) v /= s;
  return p;
}

// The GGN of the mean softmax cross-entropy: (1/N) sum_n J_n^T (diag(p) - p p^T) J_n.
Dense dense_ggn(const Model<double>& model, const Tensor<double>& x) {
  const Index p = model.num_parameters(), n = x.dim(0);
  const Tensor<double> z = model.forward(x);
  const Index c = z.dim(1);
  const std::vector<std::vector<double>> js = jacobians(model, x);
  Dense g(p);
  for (Index i = 0; i < n; ++i) {
    const std::vector<double> pr = softmax(z, i);
    const std::vector<double>& j = js[static_cast<std::size_t>(i)];
    for (Index a = 0; a < c; ++a) {
      for (Index b = 0; b < c; ++b) {
        const double h = (a == b ? pr[static_cast<std::size_t>(a)] : 0.0) -
                         pr[static_cast<std::size_t>(a)] * pr[static_cast<std::size_t>(b)];
        for (Index r = 0; r < p; ++r)
          for (Index s = 0; s < p; ++s) g(r, s) += h * j[static_cast<std::size_t>(a * p + r)] * j[static_cast<std::size_t>(b * p + s)] / static_cast<double>(n);
      }
    }
  }
  return g;
}

// sum_n log softmax(z_n)[y_n].
double dense_log_likelihood(const Model<double>& model, const Tensor<double>& x,
                            const std::vector<int>& labels) {
  const Tensor<double> z = model.forward(x);
  double s = 0;
  for (Index i = 0; i < x.dim(0); ++i) s += std::log(softmax(z, i)[static_cast<std::size_t>(labels[static_cast<std::size_t>(i)])]);
  return s;
}

// Lower Cholesky factor of an SPD matrix (test-only, unblocked).
Dense cholesky(const Dense& a) {
  Dense l(a.n);
  for (Index j = 0; j < a.n; ++j) {
    double d = a(j, j);
    for (Index k = 0; k < j; ++k) d -= l(j, k) * l(j, k);
    REQUIRE(d > 0);
    l(j, j) = std::sqrt(d);
    for (Index i = j + 1; i < a.n; ++i) {
      double v = a(i, j);
      for (Index k = 0; k < j; ++k) v -= l(i, k) * l(j, k);
      l(i, j) = v / l(j, j);
    }
  }
  return l;
}

double log_det(const Dense& a) {
  const Dense l = cholesky(a);
  double s = 0;
  for (Index i = 0; i < a.n; ++i) s += 2 * std::log(l(i, i));
  return s;
}

// A^{-1} column by column from the Cholesky factor.
Dense inverse(const Dense& a) {
  const Dense l = cholesky(a);
  const Index n = a.n;
  Dense inv(n);
  std::vector<double> y(static_cast<std::size_t>(n));
  for (Index col = 0; col < n; ++col) {
    for (Index i = 0; i < n; ++i) {
      double v = i == col ? 1.0 : 0.0;
      for (Index k = 0; k < i; ++k) v -= l(i, k) * y[static_cast<std::size_t>(k)];
      y[static_cast<std::size_t>(i)] = v / l(i, i);
    }
    for (Index i = n - 1; i >= 0; --i) {
      double v = y[static_cast<std::size_t>(i)];
      for (Index k = i + 1; k < n; ++k) v -= l(k, i) * inv(k, col);
      inv(i, col) = v / l(i, i);
    }
  }
  return inv;
}

// delta I + N C.
Dense precision(const Dense& c, double delta, double n) {
  Dense p(c.n);
  for (Index i = 0; i < c.n; ++i)
    for (Index j = 0; j < c.n; ++j) p(i, j) = n * c(i, j) + (i == j ? delta : 0.0);
  return p;
}

// The submatrix [offset, offset + size)^2.
Dense block(const Dense& a, Index offset, Index size) {
  Dense b(size);
  for (Index i = 0; i < size; ++i)
    for (Index j = 0; j < size; ++j) b(i, j) = a(offset + i, offset + j);
  return b;
}

// log p(D | theta) + log N(theta; 0, delta^{-1} I) + (P/2) log 2 pi - (1/2) log det(delta I + N C).
double dense_lml(double log_lik, const std::vector<double>& theta, double delta, const Dense& c,
                 double n) {
  const double p = static_cast<double>(theta.size());
  double sq = 0;
  for (double t : theta) sq += t * t;
  const double log_prior = -0.5 * p * std::log(2 * std::numbers::pi) + 0.5 * p * std::log(delta) -
                           0.5 * delta * sq;
  return log_lik + log_prior + 0.5 * p * std::log(2 * std::numbers::pi) -
         0.5 * log_det(precision(c, delta, n));
}

std::vector<double> params(const Model<double>& m, Index offset, Index size) {
  return std::vector<double>(m.parameters().begin() + offset, m.parameters().begin() + offset + size);
}

// J_i Sigma J_i^T (C x C) for every test input, J restricted to [offset, offset + sigma.n).
std::vector<Dense> dense_functional(const Model<double>& model, const Tensor<double>& x,
                                    const Dense& sigma, Index offset) {
  const Index p = model.num_parameters(), m = sigma.n;
  std::vector<Dense> out;
  for (const std::vector<double>& j : jacobians(model, x)) {
    const Index c = static_cast<Index>(j.size()) / p;
    Dense f(c);
    for (Index a = 0; a < c; ++a)
      for (Index b = 0; b < c; ++b)
        for (Index r = 0; r < m; ++r)
          for (Index s = 0; s < m; ++s)
            f(a, b) += j[static_cast<std::size_t>(a * p + offset + r)] * sigma(r, s) *
                       j[static_cast<std::size_t>(b * p + offset + s)];
    out.push_back(std::move(f));
  }
  return out;
}

// max over inputs of ||cov_i - ref_i||_F / ||ref_i||_F.
double covariance_error(const FunctionalPosterior& f, const std::vector<Dense>& ref) {
  double worst = 0;
  const Index c = f.mean.dim(1);
  for (std::size_t i = 0; i < ref.size(); ++i) {
    double num = 0, den = 0;
    for (Index a = 0; a < c; ++a) {
      for (Index b = 0; b < c; ++b) {
        const double d = f.covariance[(static_cast<Index>(i) * c + a) * c + b] - ref[i](a, b);
        num += d * d;
        den += ref[i](a, b) * ref[i](a, b);
      }
    }
    worst = std::max(worst, std::sqrt(num / den));
  }
  return worst;
}

// Checks both Jacobian paths of the predictive against the dense J Sigma J^T.
template <class L>
void check_predictive(const L& laplace, const Model<double>& model, const Tensor<double>& x,
                      const Dense& sigma, Index offset) {
  const std::vector<Dense> ref = dense_functional(model, x, sigma, offset);
  const Tensor<double> z = model.forward(x);
  for (PredictiveJacobians path : {PredictiveJacobians::automatic, PredictiveJacobians::per_example}) {
    INFO("per_example path: " << (path == PredictiveJacobians::per_example));
    const FunctionalPosterior f = laplace.functional_posterior(x, {.batch_size = 3, .jacobians = path});
    CHECK(amari::test::max_abs_diff(f.mean, z) < 1e-14);  // taped and plain passes may round apart
    CHECK(covariance_error(f, ref) < 1e-10);
  }
}

// (Sigma v) against the dense inverse for a few random v.
template <class L>
void check_covariance_product(const L& laplace, const Dense& sigma) {
  Rng rng(77);
  for (int t = 0; t < 3; ++t) {
    Tensor<double> v = amari::test::normal_tensor<double>(Shape{sigma.n}, rng), out(Shape{sigma.n});
    laplace.covariance_product(v, out);
    CHECK(amari::test::rel_err(out, sigma.times(v)) < 1e-10);
  }
}

Tensor<double> diagonal_of(const Dense& a) {
  Tensor<double> d(Shape{a.n});
  for (Index i = 0; i < a.n; ++i) d[i] = a(i, i);
  return d;
}

Dense diagonal_matrix(const Tensor<double>& d) {
  Dense m(d.size());
  for (Index i = 0; i < d.size(); ++i) m(i, i) = d[i];
  return m;
}

}  // namespace

// ---- symmetric eigendecomposition --------------------------------------------------------------

TEST_CASE("symmetric_eigen: V diag(values) V^T reconstructs a symmetric matrix and V is orthogonal",
          "[curvature][laplace]") {
  for (Index n : {1, 2, 3, 7, 40}) {
    INFO("n = " << n);
    Rng rng(static_cast<std::uint64_t>(n));
    Tensor<double> a(Shape{n, n});
    for (Index i = 0; i < n; ++i)
      for (Index j = 0; j <= i; ++j) a[i * n + j] = a[j * n + i] = rng.normal();
    const SymmetricEigen e = symmetric_eigen(a);
    REQUIRE(static_cast<Index>(e.values.size()) == n);
    CHECK(std::is_sorted(e.values.begin(), e.values.end()));
    double rec = 0, orth = 0;
    for (Index i = 0; i < n; ++i) {
      for (Index j = 0; j < n; ++j) {
        double s = 0, q = 0;
        for (Index k = 0; k < n; ++k) {
          s += e.vectors[i * n + k] * e.values[static_cast<std::size_t>(k)] * e.vectors[j * n + k];
          q += e.vectors[k * n + i] * e.vectors[k * n + j];
        }
        rec = std::max(rec, std::fabs(s - a[i * n + j]));
        orth = std::max(orth, std::fabs(q - (i == j ? 1.0 : 0.0)));
      }
    }
    CHECK(rec < 1e-12);
    CHECK(orth < 1e-12);
  }
}

TEST_CASE("symmetric_eigen: a non-square or non-finite matrix is refused", "[curvature][laplace][errors]") {
  CHECK_THROWS_AS(symmetric_eigen(Tensor<double>(Shape{2, 3})), ShapeError);
  Tensor<double> a(Shape{2, 2});
  a[1] = std::nan("");
  CHECK_THROWS_MATCHES(symmetric_eigen(a), ValueError, MessageContains({"symmetric_eigen", "(0, 1)"}));
}

// ---- diagonal -----------------------------------------------------------------------------------

TEST_CASE("diagonal Laplace: log det, log marginal likelihood and Sigma v equal the dense computation",
          "[curvature][laplace]") {
  const Model<double> model = mlp_model(1);
  const Data d = make_data(2);
  SoftmaxCrossEntropy<double> head;
  const Dense g = dense_ggn(model, d.x);
  const Tensor<double> diag = diagonal_of(g);
  const double delta = 0.7;
  DiagonalLaplace<double> la(model, head, d.x, d.y, diag, {.prior_precision = delta});
  const Dense c = diagonal_matrix(diag);
  const double ll = dense_log_likelihood(model, d.x, d.labels);
  CHECK(la.num_data() == kN);
  CHECK(la.size() == model.num_parameters());
  CHECK(la.log_likelihood() == Approx(ll).epsilon(1e-12));
  for (double dl : {1e-3, 0.7, 30.0}) {
    CHECK(la.log_det_posterior_precision(dl) == Approx(log_det(precision(c, dl, kN))).epsilon(1e-12));
    CHECK(la.log_marginal_likelihood(dl) ==
          Approx(dense_lml(ll, params(model, 0, model.num_parameters()), dl, c, kN)).epsilon(1e-12));
  }
  check_covariance_product(la, inverse(precision(c, delta, kN)));
}

TEST_CASE("diagonal Laplace: the linearized predictive covariance equals the dense J Sigma J^T",
          "[curvature][laplace]") {
  const Model<double> model = mlp_model(3);
  const Data d = make_data(4);
  SoftmaxCrossEntropy<double> head;
  const Tensor<double> diag = diagonal_of(dense_ggn(model, d.x));
  DiagonalLaplace<double> la(model, head, d.x, d.y, diag, {.prior_precision = 0.5});
  CHECK(BatchJacobians<double>(model, d.test).layerwise());
  check_predictive(la, model, d.test, inverse(precision(diagonal_matrix(diag), 0.5, kN)), 0);
}

TEST_CASE("diagonal Laplace: a model with an untapped LayerNorm falls back to per-example Jacobians",
          "[curvature][laplace]") {
  const Model<double> model = layer_norm_model(5);
  const Data d = make_data(6);
  SoftmaxCrossEntropy<double> head;
  CHECK_FALSE(BatchJacobians<double>(model, d.test).layerwise());
  const Tensor<double> diag = diagonal_of(dense_ggn(model, d.x));
  DiagonalLaplace<double> la(model, head, d.x, d.y, diag, {.prior_precision = 2.0});
  check_predictive(la, model, d.test, inverse(precision(diagonal_matrix(diag), 2.0, kN)), 0);
}

// ---- last layer ---------------------------------------------------------------------------------

TEST_CASE("last-layer Laplace: the layer's GGN equals the dense GGN's block of the last Linear layer",
          "[curvature][laplace]") {
  const Model<double> model = mlp_model(7);
  const Data d = make_data(8);
  SoftmaxCrossEntropy<double> head;
  LastLayerLaplace<double> la(model, head, d.x, d.y, {.prior_precision = 1.3, .batch_size = 3});
  CHECK(la.offset() == kLastOffset);
  CHECK(la.size() == kLastSize);
  CHECK(la.layer().in == kH);
  CHECK(la.layer().out == kC);
  const Dense ref = block(dense_ggn(model, d.x), kLastOffset, kLastSize);
  Dense got(kLastSize);
  for (Index q = 0; q < kLastSize * kLastSize; ++q) got.a[static_cast<std::size_t>(q)] = la.curvature()[q];
  CHECK(amari::test::rel_frobenius(got, ref) < 1e-12);
}

TEST_CASE("last-layer Laplace: log det, log marginal likelihood, Sigma v and the predictive equal the dense ones",
          "[curvature][laplace]") {
  const Model<double> model = mlp_model(9);
  const Data d = make_data(10);
  SoftmaxCrossEntropy<double> head;
  const double delta = 0.4;
  LastLayerLaplace<double> la(model, head, d.x, d.y, {.prior_precision = delta});
  const Dense c = block(dense_ggn(model, d.x), kLastOffset, kLastSize);
  const double ll = dense_log_likelihood(model, d.x, d.labels);
  for (double dl : {1e-2, 0.4, 12.0}) {
    CHECK(la.log_det_posterior_precision(dl) == Approx(log_det(precision(c, dl, kN))).epsilon(1e-11));
    CHECK(la.log_marginal_likelihood(dl) ==
          Approx(dense_lml(ll, params(model, kLastOffset, kLastSize), dl, c, kN)).epsilon(1e-11));
  }
  const Dense sigma = inverse(precision(c, delta, kN));
  check_covariance_product(la, sigma);
  check_predictive(la, model, d.test, sigma, kLastOffset);
}

// ---- K-FAC --------------------------------------------------------------------------------------

TEST_CASE("K-FAC Laplace: log det and log marginal likelihood equal the dense delta I + N K of KfacOperator",
          "[curvature][laplace]") {
  const Model<double> model = mlp_model(11);
  const Data d = make_data(12);
  SoftmaxCrossEntropy<double> head;
  KroneckerFactors<double> factors(model, head, {.fisher = KfacFisher::kflr});
  factors.update(d.x, d.y);
  KfacOperator<double> op(factors);
  const Dense k = dense_of(op);
  const double delta = 0.9;
  KfacLaplace<double> la(model, head, d.x, d.y, factors, {.prior_precision = delta});
  const double ll = dense_log_likelihood(model, d.x, d.labels);
  for (double dl : {1e-3, 0.9, 50.0}) {
    CHECK(la.log_det_posterior_precision(dl) == Approx(log_det(precision(k, dl, kN))).epsilon(1e-11));
    CHECK(la.log_marginal_likelihood(dl) ==
          Approx(dense_lml(ll, params(model, 0, model.num_parameters()), dl, k, kN)).epsilon(1e-11));
  }
  const Dense sigma = inverse(precision(k, delta, kN));
  check_covariance_product(la, sigma);
  check_predictive(la, model, d.test, sigma, 0);
}

TEST_CASE("K-FAC Laplace: untapped LayerNorm parameters get c I, and the predictive falls back per example",
          "[curvature][laplace]") {
  const Model<double> model = layer_norm_model(13);
  const Data d = make_data(14);
  SoftmaxCrossEntropy<double> head;
  for (double c : {0.0, 1.0}) {
    INFO("untapped_curvature = " << c);
    KroneckerFactors<double> factors(model, head, {.fisher = KfacFisher::kflr, .untapped_curvature = c});
    factors.update(d.x, d.y);
    KfacOperator<double> op(factors);
    const Dense k = dense_of(op);
    KfacLaplace<double> la(model, head, d.x, d.y, factors, {.prior_precision = 1.5});
    CHECK(la.log_det_posterior_precision() == Approx(log_det(precision(k, 1.5, kN))).epsilon(1e-11));
    const Dense sigma = inverse(precision(k, 1.5, kN));
    check_covariance_product(la, sigma);
    check_predictive(la, model, d.test, sigma, 0);
  }
}

// ---- low rank -----------------------------------------------------------------------------------

TEST_CASE("low-rank Laplace: with rank at least the GGN's rank it reproduces the full GGN posterior",
          "[curvature][laplace]") {
  const Model<double> model = mlp_model(15);
  const Data d = make_data(16);
  SoftmaxCrossEntropy<double> head;
  GgnOperator<double> ggn(model, head, d.x);
  const Dense g = dense_ggn(model, d.x);
  const double delta = 0.6;
  // rank(GGN) <= N (C - 1) = 16 < P = 31.
  LowRankLaplace<double> la(model, head, d.x, d.y, ggn, 20, {.max_iterations = 31}, nullptr,
                            {.prior_precision = delta});
  const double ll = dense_log_likelihood(model, d.x, d.labels);
  for (double dl : {0.05, 0.6, 8.0}) {
    CHECK(la.log_det_posterior_precision(dl) == Approx(log_det(precision(g, dl, kN))).epsilon(1e-8));
    CHECK(la.log_marginal_likelihood(dl) ==
          Approx(dense_lml(ll, params(model, 0, model.num_parameters()), dl, g, kN)).epsilon(1e-8));
  }
  const Dense sigma = inverse(precision(g, delta, kN));
  check_covariance_product(la, sigma);
}

TEST_CASE("low-rank plus diagonal Laplace: log det, Sigma v and the predictive equal dense delta I + N (U L U^T + D)",
          "[curvature][laplace]") {
  const Model<double> model = mlp_model(17);
  const Data d = make_data(18);
  SoftmaxCrossEntropy<double> head;
  GgnOperator<double> ggn(model, head, d.x);
  Rng rng(19);
  const Tensor<double> diag = amari::test::uniform_tensor<double>(Shape{model.num_parameters()}, rng, 0.0, 0.3);
  const double delta = 0.25;
  LowRankLaplace<double> la(model, head, d.x, d.y, ggn, 4, {}, &diag, {.prior_precision = delta});
  REQUIRE(la.eigenvalues().size() == 4);
  // C = U diag(l) U^T + D from the returned pairs.
  Dense c = diagonal_matrix(diag);
  for (std::size_t m = 0; m < 4; ++m) c.add_outer(la.eigenvalues()[m], la.eigenvectors()[m]);
  for (double dl : {0.01, 0.25, 4.0}) {
    CHECK(la.log_det_posterior_precision(dl) == Approx(log_det(precision(c, dl, kN))).epsilon(1e-11));
  }
  const Dense sigma = inverse(precision(c, delta, kN));
  check_covariance_product(la, sigma);
  check_predictive(la, model, d.test, sigma, 0);
  // The top Ritz values are the GGN's top eigenvalues.
  const SymmetricEigen e = symmetric_eigen([&] {
    const Dense g = dense_ggn(model, d.x);
    return Tensor<double>::from(Shape{g.n, g.n}, g.a);
  }());
  for (std::size_t m = 0; m < 4; ++m) {
    CHECK(la.eigenvalues()[m] == Approx(e.values[e.values.size() - 1 - m]).epsilon(1e-8));
  }
}

// ---- prior precision fit --------------------------------------------------------------------------

TEST_CASE("prior fit: the fitted delta maximizes the log marginal likelihood of a dense grid",
          "[curvature][laplace]") {
  const Model<double> model = mlp_model(21);
  const Data d = make_data(22);
  SoftmaxCrossEntropy<double> head;
  const Dense g = dense_ggn(model, d.x);
  const double ll = dense_log_likelihood(model, d.x, d.labels);
  const std::vector<double> theta = params(model, 0, model.num_parameters());
  DiagonalLaplace<double> diag(model, head, d.x, d.y, diagonal_of(g));
  LastLayerLaplace<double> last(model, head, d.x, d.y);
  const Dense cd = diagonal_matrix(diagonal_of(g));
  const Dense cl = block(g, kLastOffset, kLastSize);
  const std::vector<double> theta_last = params(model, kLastOffset, kLastSize);
  auto check = [&](Laplace<double>& la, const Dense& c, const std::vector<double>& th) {
    // The grid: log10 delta from -4 to 4 in steps of 0.01.
    double best = -1e300, best_t = 0;
    for (int k = 0; k <= 800; ++k) {
      const double t = (-4.0 + 0.01 * k) * std::log(10.0);
      const double v = dense_lml(ll, th, std::exp(t), c, kN);
      if (v > best) {
        best = v;
        best_t = t;
      }
    }
    const PriorFit fit = la.fit_prior_precision();
    CHECK_FALSE(fit.at_boundary);
    CHECK(la.prior_precision() == fit.prior_precision);
    CHECK(fit.log_marginal_likelihood >= best - 1e-9);
    CHECK(std::fabs(std::log(fit.prior_precision) - best_t) <= 0.01 * std::log(10.0));
    CHECK(fit.log_marginal_likelihood ==
          Approx(dense_lml(ll, th, fit.prior_precision, c, kN)).epsilon(1e-11));
    CHECK(fit.grid.size() == 17);
    CHECK(fit.evaluations > 17);
  };
  check(diag, cd, theta);
  check(last, cl, theta_last);
}

TEST_CASE("prior fit: bad search options are ValueErrors naming the option", "[curvature][laplace][errors]") {
  const Model<double> model = mlp_model(23);
  const Data d = make_data(24);
  SoftmaxCrossEntropy<double> head;
  DiagonalLaplace<double> la(model, head, d.x, d.y, Tensor<double>(Shape{model.num_parameters()}));
  CHECK_THROWS_MATCHES(la.fit_prior_precision({.log10_min = 2, .log10_max = 1}), ValueError,
                       MessageContains({"fit_prior_precision", "range"}));
  CHECK_THROWS_MATCHES(la.fit_prior_precision({.grid_points = 2}), ValueError,
                       MessageContains({"grid_points", "2"}));
  CHECK_THROWS_MATCHES(la.fit_prior_precision({.tolerance = 0}), ValueError,
                       MessageContains({"tolerance"}));
}

// ---- link approximations ------------------------------------------------------------------------

TEST_CASE("probit: softmax of each logit scaled by 1 / sqrt(1 + pi/8 var), sigmoid likewise",
          "[curvature][laplace]") {
  FunctionalPosterior f{Tensor<double>::from(Shape{1, 2}, {1.0, 0.0}),
                        Tensor<double>::from(Shape{1, 2, 2}, {8 / std::numbers::pi, 0.3, 0.3, 0.0})};
  // kappa = (1 / sqrt(2), 1): softmax(1 / sqrt(2), 0).
  const double e = std::exp(1 / std::sqrt(2.0));
  const Tensor<double> p = probit_softmax(f);
  CHECK(p[0] == Approx(e / (e + 1)).epsilon(1e-14));
  CHECK(p[1] == Approx(1 / (e + 1)).epsilon(1e-14));
  const Tensor<double> s = probit_sigmoid(f);
  CHECK(s[0] == Approx(1 / (1 + std::exp(-1 / std::sqrt(2.0)))).epsilon(1e-14));
  CHECK(s[1] == Approx(0.5).epsilon(1e-14));
}

TEST_CASE("Monte-Carlo predictive: zero covariance gives the softmax of the mean, a seed gives the same draws",
          "[curvature][laplace]") {
  FunctionalPosterior f{Tensor<double>::from(Shape{2, 3}, {1, 2, 3, -1, 0, 4}), Tensor<double>(Shape{2, 3, 3})};
  const Tensor<double> p = monte_carlo_softmax(f, 5, 1);
  for (Index i = 0; i < 2; ++i) {
    const std::vector<double> ref = softmax(f.mean, i);
    for (Index k = 0; k < 3; ++k) CHECK(p[i * 3 + k] == Approx(ref[static_cast<std::size_t>(k)]).epsilon(1e-14));
  }
  f.covariance[0] = f.covariance[4] = f.covariance[8] = 2.0;
  CHECK(amari::test::max_abs_diff(monte_carlo_softmax(f, 50, 9), monte_carlo_softmax(f, 50, 9)) == 0);
  CHECK(amari::test::max_abs_diff(monte_carlo_softmax(f, 50, 9), monte_carlo_softmax(f, 50, 10)) > 0);
  // Row 1 draws from stream 1 whether or not row 0 is present.
  FunctionalPosterior row1{f.mean.view(3, Shape{1, 3}).clone(), f.covariance.view(9, Shape{1, 3, 3}).clone()};
  const Tensor<double> all = monte_carlo_softmax(f, 50, 9), one = monte_carlo_softmax(row1, 50, 9, 1);
  for (Index k = 0; k < 3; ++k) CHECK(all[3 + k] == one[k]);
}

TEST_CASE("Monte-Carlo predictive: two classes converge to the one-dimensional Gaussian integral",
          "[curvature][laplace]") {
  // p_0 = E[sigmoid(f_0 - f_1)] with f_0 - f_1 ~ N(0.8, 1.5 + 0.7 - 2 * 0.4).
  FunctionalPosterior f{Tensor<double>::from(Shape{1, 2}, {0.5, -0.3}),
                        Tensor<double>::from(Shape{1, 2, 2}, {1.5, 0.4, 0.4, 0.7})};
  const double m = 0.8, s = std::sqrt(1.5 + 0.7 - 0.8);
  double integral = 0;  // trapezoid on [-10, 10] standard deviations
  const int steps = 20000;
  for (int k = 0; k <= steps; ++k) {
    const double u = -10.0 + 20.0 * k / steps;
    const double w = (k == 0 || k == steps ? 0.5 : 1.0) * 20.0 / steps;
    integral += w * std::exp(-0.5 * u * u) / std::sqrt(2 * std::numbers::pi) / (1 + std::exp(-(m + s * u)));
  }
  const Tensor<double> p = monte_carlo_softmax(f, 40000, 3);
  CHECK(std::fabs(p[0] - integral) < 4 * 0.5 / std::sqrt(40000.0));  // 4 standard errors at most
  CHECK(p[0] + p[1] == Approx(1.0).epsilon(1e-12));
}

TEST_CASE("link approximations: bad shapes and sample counts are refused", "[curvature][laplace][errors]") {
  FunctionalPosterior bad{Tensor<double>(Shape{2, 3}), Tensor<double>(Shape{2, 3, 2})};
  CHECK_THROWS_MATCHES(probit_softmax(bad), ShapeError, MessageContains({"probit_softmax", "(2, 3, 2)"}));
  FunctionalPosterior ok{Tensor<double>(Shape{1, 2}), Tensor<double>(Shape{1, 2, 2})};
  CHECK_THROWS_MATCHES(monte_carlo_sigmoid(ok, 0, 1), ValueError, MessageContains({"samples", "0"}));
}

TEST_CASE("predict_probit and predict_monte_carlo return rows on the simplex for the softmax head",
          "[curvature][laplace]") {
  const Model<double> model = mlp_model(25);
  const Data d = make_data(26);
  SoftmaxCrossEntropy<double> head;
  LastLayerLaplace<double> la(model, head, d.x, d.y);
  const FunctionalPosterior f = la.functional_posterior(d.test);
  const Tensor<double> probit = la.predict_probit(d.test);
  CHECK(amari::test::max_abs_diff(probit, probit_softmax(f)) == 0);
  const Tensor<double> mc = la.predict_monte_carlo(d.test, {.samples = 64, .seed = 4});
  CHECK(amari::test::max_abs_diff(mc, monte_carlo_softmax(f, 64, 4)) == 0);
  for (Index i = 0; i < kTest; ++i) {
    double s = 0;
    for (Index k = 0; k < kC; ++k) s += probit[i * kC + k];
    CHECK(s == Approx(1.0).epsilon(1e-14));
  }
}

// ---- Bayesian linear regression: the Laplace approximation is exact ---------------------------------

namespace {

constexpr Index kBlrN = 20, kBlrD = 3, kBlrP = kBlrD + 1;
constexpr double kBlrSigma = 0.4;

struct Blr {
  Tensor<double> x, y, test;
  Dense xtx{kBlrP};               // X~^T X~ (X~ = [X, 1])
  std::vector<double> xty = std::vector<double>(kBlrP);  // X~^T y
};

Blr make_blr() {
  Rng rng(31);
  Blr b;
  b.x = amari::test::normal_tensor<double>(Shape{kBlrN, kBlrD}, rng);
  b.test = amari::test::normal_tensor<double>(Shape{3, kBlrD}, rng);
  b.y = Tensor<double>(Shape{kBlrN, 1});
  for (Index i = 0; i < kBlrN; ++i) {
    b.y[i] = 0.5 * b.x[i * kBlrD] - 1.0 * b.x[i * kBlrD + 1] + 0.2 + kBlrSigma * rng.normal();
    for (Index j = 0; j < kBlrP; ++j) {
      const double xj = j < kBlrD ? b.x[i * kBlrD + j] : 1.0;
      b.xty[static_cast<std::size_t>(j)] += xj * b.y[i];
      for (Index k = 0; k < kBlrP; ++k) b.xtx(j, k) += xj * (k < kBlrD ? b.x[i * kBlrD + k] : 1.0);
    }
  }
  return b;
}

// (delta I + X~^T X~ / sigma^2)^{-1}.
Dense blr_covariance(const Blr& b, double delta) {
  Dense a(kBlrP);
  for (Index j = 0; j < kBlrP; ++j)
    for (Index k = 0; k < kBlrP; ++k) a(j, k) = b.xtx(j, k) / (kBlrSigma * kBlrSigma) + (j == k ? delta : 0.0);
  return inverse(a);
}

// The MAP Sigma X~^T y / sigma^2, in the layout [W (D, 1); b].
Tensor<double> blr_map(const Blr& b, double delta) {
  const Dense s = blr_covariance(b, delta);
  Tensor<double> t(Shape{kBlrP});
  for (Index j = 0; j < kBlrP; ++j)
    for (Index k = 0; k < kBlrP; ++k) t[j] += s(j, k) * b.xty[static_cast<std::size_t>(k)] / (kBlrSigma * kBlrSigma);
  return t;
}

// log N(y; 0, sigma^2 I + X~ X~^T / delta): the exact evidence.
double blr_evidence(const Blr& b, double delta) {
  Dense k(kBlrN);
  for (Index i = 0; i < kBlrN; ++i) {
    for (Index j = 0; j < kBlrN; ++j) {
      double s = 1.0;  // the bias feature
      for (Index q = 0; q < kBlrD; ++q) s += b.x[i * kBlrD + q] * b.x[j * kBlrD + q];
      k(i, j) = s / delta + (i == j ? kBlrSigma * kBlrSigma : 0.0);
    }
  }
  const Dense ki = inverse(k);
  double quad = 0;
  for (Index i = 0; i < kBlrN; ++i)
    for (Index j = 0; j < kBlrN; ++j) quad += b.y[i] * ki(i, j) * b.y[j];
  return -0.5 * quad - 0.5 * log_det(k) - 0.5 * kBlrN * std::log(2 * std::numbers::pi);
}

Model<double> blr_model(const Tensor<double>& theta) {
  Model<double> m(std::make_shared<Linear<double>>(kBlrD, 1));
  m.scatter(theta);
  return m;
}

}  // namespace

TEST_CASE("Bayesian linear regression: covariance, predictive variance and evidence equal the closed form",
          "[curvature][laplace]") {
  const Blr b = make_blr();
  const double delta = 0.8;
  const Model<double> model = blr_model(blr_map(b, delta));
  Gaussian<double> head(kBlrSigma);
  LastLayerLaplace<double> la(model, head, b.x, b.y, {.prior_precision = delta});
  REQUIRE(la.size() == kBlrP);
  const Dense sigma = blr_covariance(b, delta);
  double err = 0;
  for (Index q = 0; q < kBlrP * kBlrP; ++q) err = std::max(err, std::fabs(la.covariance()[q] - sigma.a[static_cast<std::size_t>(q)]));
  CHECK(err < 1e-8 * std::fabs(sigma(0, 0)));
  CHECK(la.log_marginal_likelihood() == Approx(blr_evidence(b, delta)).epsilon(1e-10));
  const RegressionPredictive pred = la.predict_regression(b.test);
  for (Index i = 0; i < 3; ++i) {
    std::vector<double> xt = {b.test[i * 3], b.test[i * 3 + 1], b.test[i * 3 + 2], 1.0};
    double var = kBlrSigma * kBlrSigma, mean = 0;
    for (Index j = 0; j < kBlrP; ++j) {
      mean += xt[static_cast<std::size_t>(j)] * model.parameters()[j];
      for (Index k = 0; k < kBlrP; ++k) var += xt[static_cast<std::size_t>(j)] * sigma(j, k) * xt[static_cast<std::size_t>(k)];
    }
    CHECK(pred.mean[i] == Approx(mean).epsilon(1e-12));
    CHECK(pred.variance[i] == Approx(var).epsilon(1e-10));
  }
}

TEST_CASE("Bayesian linear regression: the prior fit finds the maximizer of the exact evidence",
          "[curvature][laplace]") {
  const Blr b = make_blr();
  // The exact evidence's maximizer, by golden section on log delta in the test.
  double lo = std::log(1e-4), hi = std::log(1e4);
  for (int it = 0; it < 200; ++it) {
    const double m1 = lo + (hi - lo) / 3, m2 = hi - (hi - lo) / 3;
    if (blr_evidence(b, std::exp(m1)) < blr_evidence(b, std::exp(m2))) lo = m1; else hi = m2;
  }
  const double best = std::exp(0.5 * (lo + hi));
  // At the MAP of that delta the Laplace evidence is stationary in delta exactly there.
  const Model<double> model = blr_model(blr_map(b, best));
  Gaussian<double> head(kBlrSigma);
  LastLayerLaplace<double> la(model, head, b.x, b.y);
  const PriorFit fit = la.fit_prior_precision();
  CHECK(fit.prior_precision == Approx(best).epsilon(1e-5));
  CHECK(fit.log_marginal_likelihood == Approx(blr_evidence(b, best)).epsilon(1e-10));
}

// ---- error paths ----------------------------------------------------------------------------------

TEST_CASE("Laplace: a last layer above the parameter limit is a ValueError naming its size",
          "[curvature][laplace][errors]") {
  const Model<double> model = mlp_model(41);
  const Data d = make_data(42);
  SoftmaxCrossEntropy<double> head;
  CHECK_THROWS_MATCHES(LastLayerLaplace<double>(model, head, d.x, d.y, {}, 10), ValueError,
                       MessageContains({"15 parameters", "limit of 10"}));
}

TEST_CASE("Laplace: a model whose output is not its last Linear layer's has no last-layer Laplace",
          "[curvature][laplace][errors]") {
  auto seq = std::make_shared<Sequential<double>>();
  seq->emplace<Linear<double>>(kD, kC);
  seq->emplace<amari::nn::Tanh<double>>();
  const Model<double> model(seq, 1);
  const Data d = make_data(43);
  SoftmaxCrossEntropy<double> head;
  CHECK_THROWS_MATCHES(LastLayerLaplace<double>(model, head, d.x, d.y), ValueError,
                       MessageContains({"not the output of its last Linear layer"}));
}

TEST_CASE("Laplace: bad diagonals, prior precisions and data are errors naming the value",
          "[curvature][laplace][errors]") {
  const Model<double> model = mlp_model(44);
  const Data d = make_data(45);
  SoftmaxCrossEntropy<double> head;
  const Index p = model.num_parameters();
  Tensor<double> diag(Shape{p});
  diag[5] = -0.5;
  CHECK_THROWS_MATCHES(DiagonalLaplace<double>(model, head, d.x, d.y, diag), ValueError,
                       MessageContains({"DiagonalLaplace", "entry 5", "-0.5"}));
  CHECK_THROWS_MATCHES(DiagonalLaplace<double>(model, head, d.x, d.y, Tensor<double>(Shape{3})),
                       ShapeError, MessageContains({"(31)", "(3)"}));
  const Tensor<double> zero(Shape{p});
  CHECK_THROWS_MATCHES(DiagonalLaplace<double>(model, head, d.x, d.y, zero, {.prior_precision = 0}),
                       ValueError, MessageContains({"prior precision", "0"}));
  DiagonalLaplace<double> la(model, head, d.x, d.y, zero);
  CHECK_THROWS_MATCHES(la.set_prior_precision(-1), ValueError, MessageContains({"set_prior_precision", "-1"}));
  CHECK_THROWS_MATCHES(la.log_marginal_likelihood(std::nan("")), ValueError, MessageContains({"nan"}));
  CHECK_THROWS_MATCHES(DiagonalLaplace<double>(model, head, d.x, Tensor<double>(Shape{3, kC}), zero),
                       ShapeError, MessageContains({"(8, 3)", "(3, 3)"}));
}

TEST_CASE("Laplace: predicting after the model's parameters changed is a ValueError",
          "[curvature][laplace][errors]") {
  Model<double> model = mlp_model(46);
  const Data d = make_data(47);
  SoftmaxCrossEntropy<double> head;
  DiagonalLaplace<double> la(model, head, d.x, d.y, Tensor<double>(Shape{model.num_parameters()}));
  model.parameters()[0] += 1;
  CHECK_THROWS_MATCHES(la.functional_posterior(d.test), ValueError,
                       MessageContains({"parameters changed"}));
}

TEST_CASE("Laplace: the predictive matching the head is required", "[curvature][laplace][errors]") {
  const Model<double> model = mlp_model(48);
  const Data d = make_data(49);
  SoftmaxCrossEntropy<double> head;
  DiagonalLaplace<double> la(model, head, d.x, d.y, Tensor<double>(Shape{model.num_parameters()}));
  CHECK_THROWS_MATCHES(la.predict_regression(d.test), ValueError,
                       MessageContains({"predict_regression", "Gaussian"}));
  const Blr b = make_blr();
  const Model<double> reg = blr_model(blr_map(b, 1.0));
  Gaussian<double> gauss(kBlrSigma);
  LastLayerLaplace<double> lr(reg, gauss, b.x, b.y);
  CHECK_THROWS_MATCHES(lr.predict_probit(b.test), ValueError, MessageContains({"predict_probit", "Gaussian"}));
}

TEST_CASE("Laplace: K-FAC factors without an update are refused", "[curvature][laplace][errors]") {
  const Model<double> model = mlp_model(50);
  const Data d = make_data(51);
  SoftmaxCrossEntropy<double> head;
  KroneckerFactors<double> factors(model, head);
  CHECK_THROWS_MATCHES(KfacLaplace<double>(model, head, d.x, d.y, factors), ValueError,
                       MessageContains({"KfacLaplace", "no update"}));
}

TEST_CASE("Laplace: a float model's diagonal log marginal likelihood matches the double one",
          "[curvature][laplace]") {
  const Model<double> md = mlp_model(52);
  const Data d = make_data(53);
  Model<float> mf(amari::nn::mlp<float>({kD, kH, kC}, amari::nn::Act::tanh), 52);
  mf.scatter(amari::test::convert<float>(md.parameters()));
  SoftmaxCrossEntropy<double> hd;
  SoftmaxCrossEntropy<float> hf;
  const Tensor<double> diag = diagonal_of(dense_ggn(md, d.x));
  DiagonalLaplace<double> ld(md, hd, d.x, d.y, diag);
  DiagonalLaplace<float> lf(mf, hf, amari::test::convert<float>(d.x), amari::test::convert<float>(d.y),
                            amari::test::convert<float>(diag));
  CHECK(lf.log_marginal_likelihood() == Approx(ld.log_marginal_likelihood()).epsilon(1e-5));
  const FunctionalPosterior ff = lf.functional_posterior(amari::test::convert<float>(d.test));
  const FunctionalPosterior fd = ld.functional_posterior(d.test);
  CHECK(amari::test::rel_err(ff.covariance, fd.covariance) < 1e-4);
}

// ---- per-group prior precisions --------------------------------------------------------------------

namespace {

// The precision of every parameter from one delta per prior group.
Tensor<double> spread(const std::vector<PriorGroup>& groups, const std::vector<double>& deltas, Index size) {
  Tensor<double> prior(Shape{size});
  REQUIRE(groups.size() == deltas.size());
  for (std::size_t g = 0; g < groups.size(); ++g)
    for (Index i = groups[g].offset; i < groups[g].offset + groups[g].size; ++i) prior[i] = deltas[g];
  return prior;
}

// Lambda + N C.
Dense precision_diag(const Dense& c, const Tensor<double>& prior, double n) {
  Dense p(c.n);
  for (Index i = 0; i < c.n; ++i)
    for (Index j = 0; j < c.n; ++j) p(i, j) = n * c(i, j) + (i == j ? prior[i] : 0.0);
  return p;
}

// log p(D | theta) + log N(theta; 0, Lambda^{-1}) + (P/2) log 2 pi - (1/2) log det(Lambda + N C).
double dense_lml_groups(double log_lik, const std::vector<double>& theta, const Tensor<double>& prior,
                        const Dense& c, double n) {
  double log_prior = 0;
  for (std::size_t i = 0; i < theta.size(); ++i) {
    const double l = prior[static_cast<Index>(i)];
    log_prior += -0.5 * std::log(2 * std::numbers::pi) + 0.5 * std::log(l) - 0.5 * l * theta[i] * theta[i];
  }
  return log_lik + log_prior + 0.5 * static_cast<double>(theta.size()) * std::log(2 * std::numbers::pi) -
         0.5 * log_det(precision_diag(c, prior, n));
}

// Every quantity of a Laplace approximation with per-group precisions against the dense matrices.
template <class L>
void check_groups_dense(L& la, const Model<double>& model, const Data& d, const Dense& c,
                        const std::vector<double>& deltas, double eps) {
  const Index p = model.num_parameters();
  const Tensor<double> prior = spread(la.prior_groups(), deltas, p);
  const double ll = dense_log_likelihood(model, d.x, d.labels);
  CHECK(la.log_det_posterior_precision(deltas) == Approx(log_det(precision_diag(c, prior, kN))).epsilon(eps));
  CHECK(la.log_marginal_likelihood(deltas) ==
        Approx(dense_lml_groups(ll, params(model, 0, p), prior, c, kN)).epsilon(eps));
  // One precision for every group is the scalar path, exactly.
  const std::vector<double> same(la.prior_groups().size(), 0.7);
  CHECK(la.log_marginal_likelihood(same) == la.log_marginal_likelihood(0.7));
  la.set_prior_precisions(deltas);
  CHECK(la.prior_precisions() == deltas);
  const Dense sigma = inverse(precision_diag(c, prior, kN));
  check_covariance_product(la, sigma);
  check_predictive(la, model, d.test, sigma, 0);
}

// Bayesian linear regression with the prior precision dw on W and db on the bias.
Dense blr_covariance2(const Blr& b, double dw, double db) {
  Dense a(kBlrP);
  for (Index j = 0; j < kBlrP; ++j)
    for (Index k = 0; k < kBlrP; ++k)
      a(j, k) = b.xtx(j, k) / (kBlrSigma * kBlrSigma) + (j == k ? (j < kBlrD ? dw : db) : 0.0);
  return inverse(a);
}

Tensor<double> blr_map2(const Blr& b, double dw, double db) {
  const Dense s = blr_covariance2(b, dw, db);
  Tensor<double> t(Shape{kBlrP});
  for (Index j = 0; j < kBlrP; ++j)
    for (Index k = 0; k < kBlrP; ++k) t[j] += s(j, k) * b.xty[static_cast<std::size_t>(k)] / (kBlrSigma * kBlrSigma);
  return t;
}

// log N(y; 0, sigma^2 I + X W^{-1} X^T / dw + 1 1^T / db): the exact evidence.
double blr_evidence2(const Blr& b, double dw, double db) {
  Dense k(kBlrN);
  for (Index i = 0; i < kBlrN; ++i) {
    for (Index j = 0; j < kBlrN; ++j) {
      double s = 0;
      for (Index q = 0; q < kBlrD; ++q) s += b.x[i * kBlrD + q] * b.x[j * kBlrD + q];
      k(i, j) = s / dw + 1.0 / db + (i == j ? kBlrSigma * kBlrSigma : 0.0);
    }
  }
  const Dense ki = inverse(k);
  double quad = 0;
  for (Index i = 0; i < kBlrN; ++i)
    for (Index j = 0; j < kBlrN; ++j) quad += b.y[i] * ki(i, j) * b.y[j];
  return -0.5 * quad - 0.5 * log_det(k) - 0.5 * kBlrN * std::log(2 * std::numbers::pi);
}

}  // namespace

TEST_CASE("per-group prior: diagonal, K-FAC and low-rank Laplace equal the dense Lambda + N C",
          "[curvature][laplace]") {
  const Model<double> model = mlp_model(51);
  const Data d = make_data(52);
  SoftmaxCrossEntropy<double> head;
  const Dense g = dense_ggn(model, d.x);
  SECTION("diagonal: one group per parameter tensor") {
    const Tensor<double> diag = diagonal_of(g);
    DiagonalLaplace<double> la(model, head, d.x, d.y, diag);
    REQUIRE(la.prior_groups().size() == 4);
    CHECK(la.prior_groups()[1].offset == kD * kH);
    CHECK(la.prior_groups()[1].size == kH);
    check_groups_dense(la, model, d, diagonal_matrix(diag), {0.3, 2.0, 1.1, 5.0}, 1e-12);
  }
  SECTION("K-FAC: one group per layer [W; b]") {
    KroneckerFactors<double> factors(model, head, {.fisher = KfacFisher::kflr});
    factors.update(d.x, d.y);
    KfacOperator<double> op(factors);
    KfacLaplace<double> la(model, head, d.x, d.y, factors);
    REQUIRE(la.prior_groups().size() == 2);
    CHECK(la.prior_groups()[0].size == (kD + 1) * kH);
    CHECK(la.prior_groups()[1].offset == kLastOffset);
    check_groups_dense(la, model, d, dense_of(op), {0.4, 3.0}, 1e-11);
  }
  SECTION("low rank plus diagonal") {
    GgnOperator<double> ggn(model, head, d.x);
    Rng rng(53);
    const Tensor<double> diag = amari::test::uniform_tensor<double>(Shape{model.num_parameters()}, rng, 0.0, 0.3);
    LowRankLaplace<double> la(model, head, d.x, d.y, ggn, 4, {}, &diag);
    Dense c = diagonal_matrix(diag);
    for (std::size_t m = 0; m < 4; ++m) c.add_outer(la.eigenvalues()[m], la.eigenvectors()[m]);
    check_groups_dense(la, model, d, c, {0.3, 2.0, 1.1, 5.0}, 1e-11);
  }
}

TEST_CASE("per-group prior: Bayesian linear regression with different precisions on W and b equals the closed form",
          "[curvature][laplace]") {
  const Blr b = make_blr();
  const double dw = 0.8, db = 3.0;
  const Model<double> model = blr_model(blr_map2(b, dw, db));
  Gaussian<double> head(kBlrSigma);
  LastLayerLaplace<double> la(model, head, b.x, b.y, {.prior_precisions = {dw, db}});
  REQUIRE(la.prior_groups().size() == 2);
  CHECK(la.prior_groups()[1].size == 1);  // the bias
  const Dense sigma = blr_covariance2(b, dw, db);
  double err = 0;
  for (Index q = 0; q < kBlrP * kBlrP; ++q) err = std::max(err, std::fabs(la.covariance()[q] - sigma.a[static_cast<std::size_t>(q)]));
  CHECK(err < 1e-8 * std::fabs(sigma(0, 0)));
  CHECK(la.log_marginal_likelihood() == Approx(blr_evidence2(b, dw, db)).epsilon(1e-10));
  CHECK(la.log_det_posterior_precision() == Approx(-log_det(sigma)).epsilon(1e-10));
  const RegressionPredictive pred = la.predict_regression(b.test);
  for (Index i = 0; i < 3; ++i) {
    std::vector<double> xt = {b.test[i * 3], b.test[i * 3 + 1], b.test[i * 3 + 2], 1.0};
    double var = kBlrSigma * kBlrSigma;
    for (Index j = 0; j < kBlrP; ++j)
      for (Index k = 0; k < kBlrP; ++k) var += xt[static_cast<std::size_t>(j)] * sigma(j, k) * xt[static_cast<std::size_t>(k)];
    CHECK(pred.variance[i] == Approx(var).epsilon(1e-10));
  }
  CHECK_THROWS_MATCHES(la.prior_precision(), ValueError, MessageContains({"prior_precisions()"}));
}

TEST_CASE("per-group prior fit: Bayesian linear regression finds the maximizer of the exact two-precision evidence",
          "[curvature][laplace]") {
  const Blr b = make_blr();
  // The exact evidence's maximizer over (log dw, log db), by coordinate golden sections here.
  double tw = 0, tb = 0;
  auto golden = [](const std::function<double(double)>& f) {
    double lo = std::log(1e-4), hi = std::log(1e4);
    for (int it = 0; it < 200; ++it) {
      const double m1 = lo + (hi - lo) / 3, m2 = hi - (hi - lo) / 3;
      if (f(m1) < f(m2)) lo = m1; else hi = m2;
    }
    return 0.5 * (lo + hi);
  };
  for (int sweep = 0; sweep < 100; ++sweep) {
    tw = golden([&](double t) { return blr_evidence2(b, std::exp(t), std::exp(tb)); });
    tb = golden([&](double t) { return blr_evidence2(b, std::exp(tw), std::exp(t)); });
  }
  const double dw = std::exp(tw), db = std::exp(tb);
  INFO("exact maximizer dw = " << dw << ", db = " << db);
  REQUIRE(std::fabs(std::log(dw / db)) > 0.5);  // the two groups do want different precisions
  const Model<double> model = blr_model(blr_map2(b, dw, db));
  Gaussian<double> head(kBlrSigma);
  LastLayerLaplace<double> la(model, head, b.x, b.y);
  const PriorFit shared = la.fit_prior_precision();
  const PriorFit fit = la.fit_prior_precisions();
  REQUIRE(fit.prior_precisions.size() == 2);
  CHECK(fit.prior_precisions[0] == Approx(dw).epsilon(1e-4));
  CHECK(fit.prior_precisions[1] == Approx(db).epsilon(1e-4));
  CHECK(fit.log_marginal_likelihood == Approx(blr_evidence2(b, dw, db)).epsilon(1e-10));
  CHECK(fit.log_marginal_likelihood > shared.log_marginal_likelihood);
  CHECK(la.prior_precisions() == fit.prior_precisions);
  CHECK(fit.sweeps >= 1);
  CHECK_FALSE(fit.at_boundary);
}

TEST_CASE("per-group prior: a wrong number of precisions or a bad one is a ValueError naming the counts",
          "[curvature][laplace][errors]") {
  const Model<double> model = mlp_model(55);
  const Data d = make_data(56);
  SoftmaxCrossEntropy<double> head;
  const Tensor<double> diag = diagonal_of(dense_ggn(model, d.x));
  CHECK_THROWS_MATCHES(DiagonalLaplace<double>(model, head, d.x, d.y, diag, {.prior_precisions = {1.0, 2.0}}),
                       ValueError, MessageContains({"DiagonalLaplace", "2 prior precisions for 4 prior groups"}));
  DiagonalLaplace<double> la(model, head, d.x, d.y, diag);
  CHECK_THROWS_MATCHES(la.set_prior_precisions({1.0, 2.0, -1.0, 1.0}), ValueError,
                       MessageContains({"set_prior_precisions", "-1"}));
  CHECK_THROWS_MATCHES(la.log_marginal_likelihood(std::vector<double>{1.0}), ValueError,
                       MessageContains({"1 prior precisions for 4 prior groups"}));
  CHECK_THROWS_MATCHES(la.fit_prior_precisions({.max_sweeps = 0}), ValueError, MessageContains({"max_sweeps"}));
  CHECK(la.prior_precisions() == std::vector<double>(4, 1.0));
}
