// K-FAC's statistics cadence (KfacOptions::statistics_update_every): the factors move at steps 0,
// every, 2 every, ... only, and a step in between is the preconditioned gradient step with the
// factors left as they were. The reference step is recomputed here from the gradient of
// nn::loss_and_gradient and the optimizer's own (unchanged) factors.
#include <cmath>
#include <vector>

#include <catch2/catch.hpp>

#include <amari/autodiff/autodiff.hpp>
#include <amari/curvature/kfac.hpp>
#include <amari/nn/heads.hpp>
#include <amari/nn/layers.hpp>
#include <amari/nn/model.hpp>
#include <amari/nn/training.hpp>

#include "support/random.hpp"

namespace {

using amari::Index;
using amari::Shape;
using amari::Tensor;
using amari::ValueError;
using amari::curvature::Kfac;
using amari::curvature::KfacOptions;
using amari::nn::Act;
using amari::nn::Model;
using amari::nn::SoftmaxCrossEntropy;
using amari::test::normal_tensor;
using amari::test::Rng;

constexpr Index kD = 4, kC = 3, kN = 16;

Tensor<double> one_hot_targets(Index n, Index c, Rng& rng) {
  Tensor<double> y(Shape{n, c});
  for (Index i = 0; i < n; ++i)
    y[i * c + static_cast<Index>(rng.below(static_cast<std::uint64_t>(c)))] = 1;
  return y;
}

double max_abs_diff(const Tensor<double>& a, const Tensor<double>& b) {
  double m = 0;
  for (Index i = 0; i < a.size(); ++i) m = std::max(m, std::fabs(a[i] - b[i]));
  return m;
}

}  // namespace

TEST_CASE("K-FAC with statistics_update_every = 3 updates the factors at steps 0, 3, 6 only and "
          "takes the preconditioned gradient step in between",
          "[kfac][cadence]") {
  Rng rng(91);
  SoftmaxCrossEntropy<double> head;
  Model<double> model(amari::nn::mlp<double>({kD, 5, kC}, Act::tanh), 2);
  const KfacOptions o{.learning_rate = 0.2,
                      .damping = 1e-2,
                      .inverse_update_every = 1,  // the inverses follow the factors at once
                      .statistics_update_every = 3,
                      .seed = 5,
                      .kl_clip = 0};
  Kfac<double> kfac(model, head, o);
  for (int t = 0; t < 8; ++t) {
    INFO("step " << t);
    const Tensor<double> x = normal_tensor<double>(Shape{kN, kD}, rng);
    const Tensor<double> y = one_hot_targets(kN, kC, rng);
    const Tensor<double> theta0 = model.parameters().clone();
    const std::uint64_t updates0 = kfac.factors().updates();
    const Tensor<double> a0 = t > 0 ? kfac.factors().factor_a(0).clone() : Tensor<double>();
    const auto r = kfac.step(x, y);
    const bool statistics = t % 3 == 0;
    CHECK(kfac.factors().updates() == updates0 + (statistics ? 1 : 0));
    if (statistics || t == 0) continue;
    // Factors untouched, and the step is theta0 - lr F_kfac^{-1} g with those factors.
    CHECK(max_abs_diff(kfac.factors().factor_a(0), a0) == 0.0);
    Model<double> at_theta0 = model;
    at_theta0.parameters().copy_from(theta0);
    Tensor<double> g = model.zeros_like_parameters();
    const double loss = amari::nn::loss_and_gradient(at_theta0, head, x, y, g);
    CHECK(r.loss == Approx(loss).epsilon(1e-12));
    Tensor<double> d = model.zeros_like_parameters();
    kfac.factors().precondition(g, d);
    double err = 0, size = 0;
    for (Index i = 0; i < d.size(); ++i) {
      err = std::max(err, std::fabs(model.parameters()[i] - (theta0[i] - o.learning_rate * d[i])));
      size = std::max(size, std::fabs(o.learning_rate * d[i]));
    }
    CHECK(size > 0);
    CHECK(err <= 1e-12 * size);
  }
  CHECK(kfac.factors().updates() == 3);  // steps 0, 3, 6
}

TEST_CASE("K-FAC refuses statistics_update_every < 1 naming the option", "[kfac][cadence]") {
  SoftmaxCrossEntropy<double> head;
  Model<double> model(amari::nn::mlp<double>({kD, kC}, Act::tanh), 2);
  CHECK_THROWS_AS(Kfac<double>(model, head, KfacOptions{.statistics_update_every = 0}), ValueError);
  CHECK_THROWS_WITH(Kfac<double>(model, head, KfacOptions{.statistics_update_every = 0}),
                    Catch::Matchers::Contains("statistics_update_every"));
}
