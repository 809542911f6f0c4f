// Tests of the Laplace approximation's posterior samples and sampling ("nn") predictive
// (curvature/laplace.hpp, laplace_sampling.cpp) on tiny models in double. The reference covariance
// Sigma is the inverse of the dense posterior precision Lambda + N C, built here from each
// structure's curvature (the diagonal, the dense K-FAC matrix of KfacOperator, the last layer's
// GGN, the Ritz pairs plus diagonal) and inverted by a Cholesky factorization in this file.
//
// Monte-Carlo tolerances: with S independent draws theta_s ~ N(theta*, Sigma), the sample mean of
// coordinate i has standard error sqrt(Sigma_ii / S) and the sample covariance of (i, j) about
// sqrt((Sigma_ii Sigma_jj + Sigma_ij^2) / S); every check allows 5 standard errors (the seeds are
// fixed, so a pass is reproducible; at 5 SE a fresh seed fails one of ~500 entries with
// probability ~3e-4).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <memory>
#include <vector>

#include <omp.h>

#include <catch2/catch.hpp>

#include <amari/autodiff/autodiff.hpp>
#include <amari/curvature/ggn.hpp>
#include <amari/curvature/kfac.hpp>
#include <amari/curvature/laplace.hpp>
#include <amari/curvature/laplace_last_layer.hpp>
#include <amari/curvature/laplace_structures.hpp>
#include <amari/nn/heads.hpp>
#include <amari/nn/layers.hpp>
#include <amari/nn/model.hpp>

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
using amari::nn::SoftmaxCrossEntropy;

constexpr Index kD = 3, kH = 4, kC = 3, kN = 8;  // P = 3*4 + 4 + 4*3 + 3 = 31
constexpr int kSamples = 20000;                  // posterior draws of the moment tests
constexpr double kSe = 5;                        // allowed standard errors

Model<double> mlp_model(std::uint64_t seed) {
  return Model<double>(amari::nn::mlp<double>({kD, kH, kC}, amari::nn::Act::tanh), seed);
}

struct Data {
  Tensor<double> x, y, test;
};

Data make_data(std::uint64_t seed, Index outputs = kC) {
  Rng rng(seed);
  Data d;
  d.x = amari::test::normal_tensor<double>(Shape{kN, kD}, rng);
  d.test = amari::test::normal_tensor<double>(Shape{4, kD}, rng);
  std::vector<int> labels;
  for (Index i = 0; i < kN; ++i) labels.push_back(static_cast<int>(rng.below(static_cast<std::uint64_t>(outputs))));
  d.y = amari::nn::one_hot<double>(labels, outputs);
  return d;
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

// Sigma = (diag(prior) + N C)^{-1} for the dense curvature C and the approximation's priors.
template <class L>
Dense dense_sigma(const L& la, const Dense& c) {
  Dense p(c.n);
  for (Index i = 0; i < c.n; ++i)
    for (Index j = 0; j < c.n; ++j) p(i, j) = la.num_data() * c(i, j) + (i == j ? la.prior_diagonal()[i] : 0.0);
  return inverse(p);
}

// S S^T from the columns S e_j of covariance_sqrt_product equals Sigma (deterministic, exact).
template <class L>
void check_square_root(const L& la, const Dense& sigma) {
  const Index n = la.size();
  Dense s(n);  // column j = S e_j
  Tensor<double> e(Shape{n}), out(Shape{n});
  for (Index j = 0; j < n; ++j) {
    e.fill(0.0);
    e[j] = 1.0;
    la.covariance_sqrt_product(e, out);
    for (Index i = 0; i < n; ++i) s(i, j) = out[i];
  }
  double err = 0, scale = 0;
  for (Index i = 0; i < n; ++i) {
    for (Index j = 0; j < n; ++j) {
      double v = 0;
      for (Index k = 0; k < n; ++k) v += s(i, k) * s(j, k);
      err = std::max(err, std::fabs(v - sigma(i, j)));
      scale = std::max(scale, std::fabs(sigma(i, j)));
    }
  }
  CHECK(err <= 1e-10 * scale);
}

// The sample mean and covariance of kSamples draws match theta* and Sigma within kSe standard
// errors; sample() keeps the parameters outside the posterior at theta*.
template <class L>
void check_sample_moments(const L& la, const Model<double>& model, const Dense& sigma, std::uint64_t seed) {
  const Index n = la.size(), p = model.num_parameters(), off = la.offset();
  const Tensor<double> draws = la.sample(kSamples, seed);
  REQUIRE(draws.dim(0) == kSamples);
  REQUIRE(draws.dim(1) == p);
  std::vector<double> mean(static_cast<std::size_t>(n), 0.0);
  Dense cov(n);
  bool others_at_map = true;
  for (Index s = 0; s < kSamples; ++s) {
    const double* row = draws.data() + s * p;
    for (Index i = 0; i < p; ++i) {
      if ((i < off || i >= off + n) && row[i] != model.parameters()[i]) others_at_map = false;
    }
    for (Index i = 0; i < n; ++i) mean[static_cast<std::size_t>(i)] += row[off + i] / kSamples;
  }
  CHECK(others_at_map);
  for (Index s = 0; s < kSamples; ++s) {
    const double* row = draws.data() + s * p + off;
    for (Index i = 0; i < n; ++i)
      for (Index j = 0; j <= i; ++j)
        cov(i, j) += (row[i] - mean[static_cast<std::size_t>(i)]) * (row[j] - mean[static_cast<std::size_t>(j)]) / (kSamples - 1);
  }
  int bad_mean = 0, bad_cov = 0;
  for (Index i = 0; i < n; ++i) {
    const double se = std::sqrt(sigma(i, i) / kSamples);
    if (std::fabs(mean[static_cast<std::size_t>(i)] - la.posterior_mean()[i]) > kSe * se) ++bad_mean;
    for (Index j = 0; j <= i; ++j) {
      const double se_cov = std::sqrt((sigma(i, i) * sigma(j, j) + sigma(i, j) * sigma(i, j)) / kSamples);
      if (std::fabs(cov(i, j) - sigma(i, j)) > kSe * se_cov) ++bad_cov;
    }
  }
  CHECK(bad_mean == 0);
  CHECK(bad_cov == 0);
}

Dense diagonal_matrix(const Tensor<double>& d) {
  Dense m(d.size());
  for (Index i = 0; i < d.size(); ++i) m(i, i) = d[i];
  return m;
}

}  // namespace

TEST_CASE("Laplace sampling, diagonal: S S^T equals the dense Sigma, and draws have the MAP as mean and Sigma as covariance",
          "[curvature][laplace][sampling]") {
  const Model<double> model = mlp_model(1);
  const Data d = make_data(2);
  SoftmaxCrossEntropy<double> head;
  Rng rng(3);
  const Tensor<double> diag = amari::test::uniform_tensor<double>(Shape{model.num_parameters()}, rng, 0.0, 0.5);
  DiagonalLaplace<double> la(model, head, d.x, d.y, diag, {.prior_precisions = {0.5, 1.0, 2.0, 0.8}});
  const Dense sigma = dense_sigma(la, diagonal_matrix(diag));
  check_square_root(la, sigma);
  check_sample_moments(la, model, sigma, 4);
}

TEST_CASE("Laplace sampling, K-FAC: S S^T equals the dense Sigma, and draws have the MAP as mean and Sigma as covariance",
          "[curvature][laplace][sampling]") {
  const Model<double> model = mlp_model(5);
  const Data d = make_data(6);
  SoftmaxCrossEntropy<double> head;
  KroneckerFactors<double> factors(model, head, {.fisher = KfacFisher::kflr});
  factors.update(d.x, d.y);
  KfacOperator<double> op(factors);
  KfacLaplace<double> la(model, head, d.x, d.y, factors, {.prior_precisions = {0.7, 1.3}});
  const Dense sigma = dense_sigma(la, dense_of(op));
  check_square_root(la, sigma);
  check_sample_moments(la, model, sigma, 7);
}

TEST_CASE("Laplace sampling, last layer: S S^T equals the dense Sigma, and draws have the MAP as mean and Sigma as covariance",
          "[curvature][laplace][sampling]") {
  const Model<double> model = mlp_model(8);
  const Data d = make_data(9);
  SoftmaxCrossEntropy<double> head;
  LastLayerLaplace<double> la(model, head, d.x, d.y, {.prior_precision = 0.4});
  REQUIRE(la.offset() > 0);  // the first layer stays at theta*: checked by check_sample_moments
  const Index n = la.size();
  Dense c(n);
  c.a.assign(la.curvature().begin(), la.curvature().end());
  const Dense sigma = dense_sigma(la, c);
  check_square_root(la, sigma);
  check_sample_moments(la, model, sigma, 10);
}

TEST_CASE("Laplace sampling, low rank + diagonal: S S^T equals the dense Sigma, and draws have the MAP as mean and Sigma as covariance",
          "[curvature][laplace][sampling]") {
  const Model<double> model = mlp_model(11);
  const Data d = make_data(12);
  SoftmaxCrossEntropy<double> head;
  GgnOperator<double> ggn(model, head, d.x);
  Rng rng(13);
  const Tensor<double> diag = amari::test::uniform_tensor<double>(Shape{model.num_parameters()}, rng, 0.0, 0.3);
  LowRankLaplace<double> la(model, head, d.x, d.y, ggn, 4, {}, &diag, {.prior_precision = 0.25});
  la.set_prior_precisions({0.25, 0.5, 1.5, 0.9});  // the square root is refactored here
  Dense c = diagonal_matrix(diag);
  for (std::size_t m = 0; m < la.eigenvalues().size(); ++m) c.add_outer(la.eigenvalues()[m], la.eigenvectors()[m]);
  const Dense sigma = dense_sigma(la, c);
  check_square_root(la, sigma);
  check_sample_moments(la, model, sigma, 14);
  SECTION("and without the diagonal, rank 1") {
    LowRankLaplace<double> la1(model, head, d.x, d.y, ggn, 1, {}, nullptr, {.prior_precision = 2.0});
    Dense c1(model.num_parameters());
    c1.add_outer(la1.eigenvalues()[0], la1.eigenvectors()[0]);
    check_square_root(la1, dense_sigma(la1, c1));
  }
}

TEST_CASE("Laplace sampling: samples are keyed by (seed, index) only", "[curvature][laplace][sampling]") {
  const Model<double> model = mlp_model(15);
  const Data d = make_data(16);
  SoftmaxCrossEntropy<double> head;
  LastLayerLaplace<double> la(model, head, d.x, d.y);
  const Tensor<double> a = la.sample(5, 42), b = la.sample(5, 42), other = la.sample(5, 43);
  CHECK(std::equal(a.begin(), a.end(), b.begin()));
  CHECK(!std::equal(a.begin(), a.end(), other.begin()));
  // Sample 3 drawn alone equals row 3 of the batch.
  const Tensor<double> third = la.sample_posterior(42, 3);
  bool same = true;
  for (Index i = 0; i < la.size(); ++i) same = same && third[i] == a[3 * model.num_parameters() + la.offset() + i];
  CHECK(same);
  // The predictive is reproducible too.
  const Tensor<double> p1 = la.predict_sampled(d.test, {.samples = 7, .seed = 9});
  const Tensor<double> p2 = la.predict_sampled(d.test, {.batch_size = 3, .samples = 7, .seed = 9});
  for (Index q = 0; q < p1.size(); ++q) CHECK(p1[q] == Approx(p2[q]).epsilon(1e-14));
}

TEST_CASE("Laplace sampling: a draw of more than one block of normals is the same on 1 and 2 threads",
          "[curvature][laplace][sampling]") {
  // P = 64*64 + 64 + 64*10 + 10 = 4810 > 4096: two blocks of eps, filled in parallel.
  const Model<double> model(amari::nn::mlp<double>({64, 64, 10}, amari::nn::Act::tanh), 31);
  Rng rng(32);
  const Tensor<double> x = amari::test::normal_tensor<double>(Shape{4, 64}, rng);
  std::vector<int> labels = {0, 3, 5, 9};
  const Tensor<double> y = amari::nn::one_hot<double>(labels, 10);
  SoftmaxCrossEntropy<double> head;
  const Tensor<double> diag = amari::test::uniform_tensor<double>(Shape{model.num_parameters()}, rng, 0.0, 1.0);
  DiagonalLaplace<double> la(model, head, x, y, diag);
  REQUIRE(la.size() > 4096);
  const int threads = omp_get_max_threads();
  omp_set_num_threads(1);
  const Tensor<double> one = la.sample_posterior(5, 2);
  omp_set_num_threads(2);
  const Tensor<double> two = la.sample_posterior(5, 2);
  omp_set_num_threads(threads);
  CHECK(std::equal(one.begin(), one.end(), two.begin()));
}

TEST_CASE("sampling predictive: on a model linear in its parameters it matches the GLM predictive's mean and variance",
          "[curvature][laplace][sampling]") {
  // f(x; theta) = x W + b is its own linearization, so f(x; theta_s) ~ N(f(x; theta*), J Sigma J^T)
  // exactly: mean and variance of S = 4000 draws are within MC error of the GLM predictive's.
  // Standard errors: sqrt(v / S) for the mean (v = J Sigma J^T's diagonal), v sqrt(2 / S) for the
  // variance, whose 1/S normalization is biased by -v / S (allowed too).
  constexpr int kS = 4000;
  Rng rng(17);
  Model<double> model(std::make_shared<Linear<double>>(kD, 2), 18);
  const Data d = make_data(19, 2);
  Tensor<double> y = amari::test::normal_tensor<double>(Shape{kN, 2}, rng);
  Gaussian<double> head(0.3);
  const Tensor<double> theta_before = model.gather();
  auto check = [&](const Laplace<double>& la) {
    const RegressionPredictive glm = la.predict_regression(d.test);
    const RegressionPredictive nn = la.predict_regression_sampled(d.test, {.samples = kS, .seed = 20});
    for (Index q = 0; q < glm.mean.size(); ++q) {
      const double v = glm.variance[q] - 0.09;  // J Sigma J^T
      CHECK(std::fabs(nn.mean[q] - glm.mean[q]) <= kSe * std::sqrt(v / kS));
      CHECK(std::fabs(nn.variance[q] - glm.variance[q]) <= kSe * v * std::sqrt(2.0 / kS) + v / kS);
    }
  };
  SECTION("last layer (here the whole model)") {
    check(LastLayerLaplace<double>(model, head, d.x, y, {.prior_precision = 0.5}));
  }
  SECTION("diagonal") {
    const Tensor<double> diag = amari::test::uniform_tensor<double>(Shape{model.num_parameters()}, rng, 0.0, 1.0);
    check(DiagonalLaplace<double>(model, head, d.x, y, diag, {.prior_precision = 0.5}));
  }
  const Tensor<double> theta_after = model.gather();
  CHECK(std::equal(theta_before.begin(), theta_before.end(), theta_after.begin()));
}

TEST_CASE("sampling predictive: softmax probabilities of a linear model match the GLM Monte-Carlo predictive",
          "[curvature][laplace][sampling]") {
  // Both average softmax over draws of the same Gaussian logits (exactly, for a linear model):
  // each probability has standard error <= 0.5 / sqrt(S) per estimate.
  constexpr int kS = 4000;
  Model<double> model(std::make_shared<Linear<double>>(kD, kC), 21);
  const Data d = make_data(22);
  SoftmaxCrossEntropy<double> head;
  LastLayerLaplace<double> la(model, head, d.x, d.y, {.prior_precision = 0.3});
  const Tensor<double> nn = la.predict_sampled(d.test, {.samples = kS, .seed = 23});
  const Tensor<double> glm = la.predict_monte_carlo(d.test, {.samples = kS, .seed = 24});
  REQUIRE(nn.dim(0) == d.test.dim(0));
  REQUIRE(nn.dim(1) == kC);
  for (Index i = 0; i < nn.dim(0); ++i) {
    double row = 0;
    for (Index k = 0; k < kC; ++k) row += nn[i * kC + k];
    CHECK(row == Approx(1.0).epsilon(1e-12));
  }
  for (Index q = 0; q < nn.size(); ++q) CHECK(std::fabs(nn[q] - glm[q]) <= kSe * std::sqrt(2.0) * 0.5 / std::sqrt(kS));
}

TEST_CASE("sampling predictive: a tiny posterior gives the network's own probabilities", "[curvature][laplace][sampling]") {
  const Model<double> model = mlp_model(25);
  const Data d = make_data(26);
  SoftmaxCrossEntropy<double> head;
  DiagonalLaplace<double> la(model, head, d.x, d.y, Tensor<double>(Shape{model.num_parameters()}),
                             {.prior_precision = 1e16});
  const Tensor<double> p = la.predict_sampled(d.test, {.samples = 3});
  const Tensor<double> z = model.forward(d.test);
  for (Index i = 0; i < d.test.dim(0); ++i) {
    double m = z[i * kC], s = 0;
    for (Index k = 1; k < kC; ++k) m = std::max(m, z[i * kC + k]);
    for (Index k = 0; k < kC; ++k) s += std::exp(z[i * kC + k] - m);
    for (Index k = 0; k < kC; ++k) CHECK(p[i * kC + k] == Approx(std::exp(z[i * kC + k] - m) / s).epsilon(1e-6));
  }
}

TEST_CASE("Laplace sampling: bad sample counts, shapes and heads are typed errors naming the call",
          "[curvature][laplace][sampling][errors]") {
  Model<double> model = mlp_model(27);
  const Data d = make_data(28);
  SoftmaxCrossEntropy<double> head;
  DiagonalLaplace<double> la(model, head, d.x, d.y, Tensor<double>(Shape{model.num_parameters()}));
  CHECK_THROWS_MATCHES(la.predict_sampled(d.test, {.samples = 0}), ValueError,
                       MessageContains({"Laplace::predict_sampled", "samples must be >= 1, got 0"}));
  CHECK_THROWS_MATCHES(la.predict_sampled(d.test, {.batch_size = 0}), ValueError,
                       MessageContains({"Laplace::predict_sampled", "batch_size"}));
  CHECK_THROWS_MATCHES(la.predict_sampled(Tensor<double>(Shape{0, kD})), ShapeError,
                       MessageContains({"Laplace::predict_sampled", "(0, 3)"}));
  CHECK_THROWS_AS(la.predict_sampled(Tensor<double>(Shape{2, kD + 1})), ShapeError);
  CHECK_THROWS_MATCHES(la.predict_regression_sampled(d.test), ValueError,
                       MessageContains({"Laplace::predict_regression_sampled", "Gaussian head"}));
  CHECK_THROWS_MATCHES(la.sample(0), ValueError, MessageContains({"Laplace::sample", "got 0"}));
  CHECK_THROWS_MATCHES(la.sample_posterior(0, -1), ValueError, MessageContains({"Laplace::sample_posterior", "-1"}));
  Tensor<double> small(Shape{3}), out(Shape{model.num_parameters()});
  CHECK_THROWS_MATCHES(la.covariance_sqrt_product(small, out), ShapeError,
                       MessageContains({"DiagonalLaplace::covariance_sqrt_product", "(3)"}));
  {
    Gaussian<double> gauss(1.0);
    Model<double> lin(std::make_shared<Linear<double>>(kD, 2), 29);
    const Data r = make_data(30, 2);
    DiagonalLaplace<double> lg(lin, gauss, r.x, r.y, Tensor<double>(Shape{lin.num_parameters()}));
    CHECK_THROWS_MATCHES(lg.predict_sampled(r.test), ValueError,
                         MessageContains({"Laplace::predict_sampled", "Gaussian head"}));
  }
  model.parameters()[0] += 1.0;
  CHECK_THROWS_MATCHES(la.predict_sampled(d.test), ValueError,
                       MessageContains({"Laplace::predict_sampled", "parameters changed"}));
}
