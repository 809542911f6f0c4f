// Adaptive K-FAC (KfacOptions::adaptive; Martens & Grosse 2015, secs. 6.5 and 7): the learning
// rate alpha and momentum mu minimize the exact quadratic model, and the damping lambda follows
// the Levenberg-Marquardt rule.
//
// The references are built here: the GGN as a dense P x P matrix (column by column from
// GgnOperator, whose exactness ggn_test.cpp checks), the gradient from nn::loss_and_gradient, the
// K-FAC direction from the factors the step used (inverses refreshed at every step), and the 2 x 2
// system solved by Cramer's rule.
#include <cmath>
#include <vector>

#include <catch2/catch.hpp>

#include <amari/autodiff/autodiff.hpp>
#include <amari/curvature/ggn.hpp>
#include <amari/curvature/kfac.hpp>
#include <amari/nn/heads.hpp>
#include <amari/nn/layers.hpp>
#include <amari/nn/model.hpp>
#include <amari/nn/training.hpp>

#include "support/dense.hpp"
#include "support/random.hpp"

namespace {

using amari::Index;
using amari::Shape;
using amari::Tensor;
using amari::ValueError;
using amari::curvature::GgnOperator;
using amari::curvature::Kfac;
using amari::curvature::KfacOptions;
using amari::nn::Act;
using amari::nn::Gaussian;
using amari::nn::Head;
using amari::nn::Model;
using amari::nn::SoftmaxCrossEntropy;
using amari::test::Dense;
using amari::test::normal_tensor;
using amari::test::Rng;
using Catch::Matchers::Contains;

constexpr Index kD = 3, kH = 4, kC = 3, kN = 8;

double dot(const Tensor<double>& a, const Tensor<double>& b) {
  double s = 0;
  for (Index i = 0; i < a.size(); ++i) s += a[i] * b[i];
  return s;
}

// u^T (F + kappa I) w with the dense F.
double c_product(const Dense& f, double kappa, const Tensor<double>& u, const Tensor<double>& w) {
  return dot(u, f.times(w)) + kappa * dot(u, w);
}

Model<double> make_mlp(Rng& rng, std::vector<Index> sizes, double scale) {
  Model<double> model(amari::nn::mlp<double>(sizes, Act::tanh));
  Tensor<double>& theta = model.parameters();
  for (Index k = 0; k < theta.size(); ++k) theta[k] = rng.uniform(-scale, scale);
  return model;
}

Tensor<double> one_hot_targets(Index n, Index c, Rng& rng) {
  Tensor<double> y(Shape{n, c});
  for (Index i = 0; i < n; ++i)
    y[i * c + static_cast<Index>(rng.below(static_cast<std::uint64_t>(c)))] = 1;
  return y;
}

// The gradient of the objective: mean loss + (wd / 2) ||theta||^2.
Tensor<double> objective_gradient(Model<double>& model, const Head<double>& head,
                                  const Tensor<double>& x, const Tensor<double>& y, double wd) {
  Tensor<double> g = model.zeros_like_parameters();
  amari::nn::loss_and_gradient(model, head, x, y, g);
  for (Index i = 0; i < g.size(); ++i) g[i] += wd * model.parameters()[i];
  return g;
}

}  // namespace

TEST_CASE("adaptive K-FAC: alpha and mu minimize the exact quadratic model of the dense GGN",
          "[kfac][adaptive]") {
  Rng rng(81);
  SoftmaxCrossEntropy<double> head;
  Model<double> model = make_mlp(rng, {kD, kH, kC}, 1.0);
  const Tensor<double> x = normal_tensor<double>(Shape{kN, kD}, rng);
  const Tensor<double> y = one_hot_targets(kN, kC, rng);
  const double wd = 1e-3;
  Kfac<double> kfac(model, head,
                    {.damping = 1e-2,
                     .inverse_update_every = 1,  // the inverses after a step are the ones it used
                     .seed = 5,
                     .weight_decay = wd,
                     .adaptive = true,
                     .damping_adaptation_every = 2});
  for (int t = 0; t < 4; ++t) {
    INFO("step " << t);
    const Tensor<double> theta0 = model.gather();
    const double lambda = kfac.damping();
    const bool has_previous = kfac.previous_update().defined();
    const Tensor<double> previous =
        has_previous ? kfac.previous_update().clone() : Tensor<double>();
    CHECK(has_previous == (t > 0));
    const Tensor<double> g = objective_gradient(model, head, x, y, wd);
    GgnOperator<double> ggn(model, head, x);
    const Dense f = amari::test::dense_of(ggn);
    const auto r = kfac.step(x, y);
    CHECK(r.lambda == lambda);
    // Delta = -F_kfac^{-1} g with the inverses of this step.
    Tensor<double> direction(g.shape());
    kfac.factors().precondition(g, direction);
    for (Index i = 0; i < direction.size(); ++i) direction[i] = -direction[i];
    const double kappa = lambda + wd;
    const double a11 = c_product(f, kappa, direction, direction), b1 = dot(g, direction);
    double alpha = -b1 / a11, mu = 0, a12 = 0, a22 = 0, b2 = 0;
    if (has_previous) {
      a12 = c_product(f, kappa, direction, previous);
      a22 = c_product(f, kappa, previous, previous);
      b2 = dot(g, previous);
      const double det = a11 * a22 - a12 * a12;
      alpha = (a12 * b2 - a22 * b1) / det;
      mu = (a12 * b1 - a11 * b2) / det;
      // The minimizer: the model's gradient in (alpha, mu) vanishes there.
      CHECK(std::fabs(a11 * alpha + a12 * mu + b1) < 1e-10 * std::fabs(b1));
    } else {
      CHECK(kfac.adaptive_momentum() == 0.0);
    }
    CHECK(r.step_scale == Approx(alpha).epsilon(1e-10));
    CHECK(kfac.adaptive_learning_rate() == r.step_scale);
    CHECK(kfac.adaptive_momentum() == Approx(mu).epsilon(1e-10).margin(1e-14));
    const double m =
        alpha * b1 + mu * b2 + 0.5 * (alpha * alpha * a11 + 2 * alpha * mu * a12 + mu * mu * a22);
    REQUIRE(r.adaptive);
    CHECK(r.adaptive->momentum == kfac.adaptive_momentum());
    CHECK(r.adaptive->predicted_reduction == Approx(-m).epsilon(1e-10));
    CHECK(r.adaptive->predicted_reduction > 0);
    // theta moved by delta = alpha Delta + mu delta_0, which becomes the next delta_0.
    const Tensor<double>& theta = model.parameters();
    const Tensor<double>& delta = kfac.previous_update();
    double err = 0, size = 0;
    for (Index i = 0; i < theta.size(); ++i) {
      const double expected = alpha * direction[i] + (has_previous ? mu * previous[i] : 0.0);
      err = std::max(err, std::fabs(theta[i] - theta0[i] - expected));
      err = std::max(err, std::fabs(delta[i] - expected));
      size = std::max(size, std::fabs(expected));
    }
    CHECK(err <= 1e-10 * size);
    CHECK(r.step_norm == Approx(std::sqrt(dot(delta, delta))).epsilon(1e-12));
    // rho = (h(theta + delta) - h(theta)) / M(delta), h with the weight decay term.
    const double h0 = r.loss + 0.5 * wd * dot(theta0, theta0);
    const double h1 = r.loss_after + 0.5 * wd * dot(theta, theta);
    REQUIRE(r.adaptive->rho);
    CHECK(*r.adaptive->rho == Approx((h1 - h0) / m).epsilon(1e-10));
  }
}

TEST_CASE(
    "adaptive K-FAC: the Levenberg-Marquardt rule shrinks lambda when rho > 3/4 and grows it when "
    "rho < 1/4",
    "[kfac][adaptive]") {
  Rng rng(82);
  const int t1 = 2;
  const double omega = std::pow(0.95, t1);  // M&G 2015, sec. 6.5: (19/20)^T1
  SECTION("a linear model with a Gaussian head: the loss is its own quadratic model, rho > 1") {
    Gaussian<double> head(1.0);
    Model<double> model(amari::nn::mlp<double>({kD, kC}, Act::tanh), 3);
    const Tensor<double> x = normal_tensor<double>(Shape{kN, kD}, rng);
    const Tensor<double> y = normal_tensor<double>(Shape{kN, kC}, rng);
    Kfac<double> kfac(model, head,
                      {.damping = 0.1, .adaptive = true, .damping_adaptation_every = t1});
    for (int t = 0; t < 5; ++t) {
      INFO("step " << t);
      const double lambda = kfac.damping();
      const auto r = kfac.step(x, y);
      // h(theta + delta) - h(theta) = g^T delta + 1/2 delta^T F delta = M(delta) - lambda/2
      // |delta|^2 exactly, so rho = 1 + lambda |delta|^2 / (2 predicted_reduction).
      REQUIRE(r.adaptive);
      REQUIRE(r.adaptive->rho);
      const double m = -r.adaptive->predicted_reduction, rho = *r.adaptive->rho;
      CHECK(rho == Approx((m - 0.5 * lambda * r.step_norm * r.step_norm) / m).epsilon(1e-8));
      CHECK(rho > 0.75);
      // Steps 0, 2, 4 update lambda; the others leave it.
      CHECK(kfac.damping() == Approx(t % t1 == 0 ? lambda * omega : lambda).epsilon(1e-15));
    }
  }
  SECTION("a saturated tanh network with tiny damping: the model overstates the decrease") {
    SoftmaxCrossEntropy<double> head;
    Model<double> model = make_mlp(rng, {kD, 16, kC}, 3.0);
    const Tensor<double> x = normal_tensor<double>(Shape{kN, kD}, rng);
    const Tensor<double> y = one_hot_targets(kN, kC, rng);
    Kfac<double> kfac(
        model, head,
        {.damping = 1e-6, .adaptive = true, .damping_adaptation_every = t1, .min_damping = 1e-9});
    const auto r = kfac.step(x, y);
    REQUIRE(r.adaptive);
    REQUIRE(r.adaptive->rho);
    INFO(r.str());
    CHECK(*r.adaptive->rho < 0.25);
    CHECK(kfac.damping() == Approx(1e-6 / omega).epsilon(1e-15));
  }
  SECTION("lambda stays within [min_damping, max_damping]") {
    Gaussian<double> head(1.0);
    Model<double> model(amari::nn::mlp<double>({kD, kC}, Act::tanh), 3);
    const Tensor<double> x = normal_tensor<double>(Shape{kN, kD}, rng);
    const Tensor<double> y = normal_tensor<double>(Shape{kN, kC}, rng);
    Kfac<double> kfac(
        model, head,
        {.damping = 0.1, .adaptive = true, .damping_adaptation_every = 1, .min_damping = 0.092});
    kfac.step(x, y);
    CHECK(kfac.damping() == Approx(0.095).epsilon(1e-15));
    kfac.step(x, y);
    CHECK(kfac.damping() == 0.092);  // 0.09025 clamped
  }
}

TEST_CASE("adaptive K-FAC reduces the training loss of a small MLP over 20 steps",
          "[kfac][adaptive]") {
  Rng rng(83);
  SoftmaxCrossEntropy<double> head;
  const Index n = 64, d = 4, c = 3;
  // A teacher network labels the inputs, so the task is learnable.
  Model<double> teacher = make_mlp(rng, {d, 6, c}, 2.0);
  const Tensor<double> x = normal_tensor<double>(Shape{n, d}, rng);
  const Tensor<double> zt = teacher.forward(x);
  Tensor<double> y(zt.shape());
  for (Index i = 0; i < n; ++i) {
    Index best = 0;
    for (Index j = 0; j < c; ++j)
      if (zt[i * c + j] > zt[i * c + best]) best = j;
    y[i * c + best] = 1;
  }
  Model<double> model(amari::nn::mlp<double>({d, 8, c}, Act::tanh), 1);
  Kfac<double> kfac(model, head, {.seed = 4, .adaptive = true});
  double first = 0, last = 0;
  for (int t = 0; t < 20; ++t) {
    const auto r = kfac.step(x, y);
    if (t == 0) first = r.loss;
    last = r.loss_after;
    REQUIRE(r.adaptive);
    CHECK(r.adaptive->rho.has_value());  // evaluate_loss_after is on by default
    CHECK(std::isfinite(r.adaptive->rho.value_or(0)));
    CHECK(r.adaptive->predicted_reduction > 0);
    CHECK(r.step_scale > 0);
  }
  INFO("loss " << first << " -> " << last << ", lambda " << kfac.damping());
  CHECK(last < 0.5 * first);
}

TEST_CASE("adaptive K-FAC: a step that throws leaves lambda, delta_0 and theta as they were",
          "[kfac][adaptive]") {
  Rng rng(84);
  SoftmaxCrossEntropy<double> head;
  Model<double> model = make_mlp(rng, {kD, kH, kC}, 1.0);
  Model<double> twin_model(amari::nn::mlp<double>({kD, kH, kC}, Act::tanh));
  twin_model.scatter(model.gather());
  const Tensor<double> x = normal_tensor<double>(Shape{kN, kD}, rng);
  const Tensor<double> y = one_hot_targets(kN, kC, rng);
  const KfacOptions o{.damping = 1e-2, .seed = 2, .adaptive = true, .damping_adaptation_every = 1};
  Kfac<double> kfac(model, head, o), twin(twin_model, head, o);
  for (int t = 0; t < 2; ++t) {
    kfac.step(x, y);
    twin.step(x, y);
  }
  const double lambda = kfac.damping();
  const Tensor<double> previous = kfac.previous_update().clone();
  const Tensor<double> theta = model.gather();
  // Inputs of 1e200 saturate the tanh (finite loss) but overflow the factor A of layer 0.
  CHECK_THROWS_AS(kfac.step(Tensor<double>::full(Shape{kN, kD}, 1e200), y), ValueError);
  CHECK(kfac.damping() == lambda);
  CHECK(amari::test::max_abs_diff(kfac.previous_update(), previous) == 0.0);
  CHECK(amari::test::max_abs_diff(model.parameters(), theta) == 0.0);
  kfac.step(x, y);
  twin.step(x, y);
  CHECK(amari::test::max_abs_diff(model.parameters(), twin_model.parameters()) == 0.0);
  CHECK(kfac.damping() == twin.damping());
}

TEST_CASE("adaptive K-FAC: bad adaptive options raise ValueError naming the option",
          "[kfac][adaptive]") {
  Rng rng(85);
  SoftmaxCrossEntropy<double> head;
  Model<double> model = make_mlp(rng, {kD, kH, kC}, 1.0);
  CHECK_THROWS_WITH(Kfac<double>(model, head, {.momentum = 0.5, .adaptive = true}),
                    Contains("momentum"));
  CHECK_THROWS_WITH(Kfac<double>(model, head, {.adaptive = true, .damping_adaptation_every = 0}),
                    Contains("damping_adaptation_every"));
  CHECK_THROWS_WITH(Kfac<double>(model, head, {.adaptive = true, .min_damping = 0}),
                    Contains("min_damping"));
  CHECK_THROWS_WITH(
      Kfac<double>(model, head, {.adaptive = true, .min_damping = 1, .max_damping = 0.5}),
      Contains("max_damping"));
  CHECK_THROWS_WITH(
      Kfac<double>(model, head, {.damping = 1e-3, .adaptive = true, .min_damping = 1e-2}),
      Contains("damping"));
  // The default mode is untouched: a fixed momentum is still allowed and lambda is the option.
  Kfac<double> fixed(model, head, {.momentum = 0.5});
  CHECK(fixed.damping() == 1e-3);
}
