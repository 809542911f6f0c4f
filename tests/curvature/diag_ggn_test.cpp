// The diagonal of the GGN (curvature/diag_ggn.hpp), exact and Monte Carlo.
//
// The references are dense P x P matrices built here, in double, column by column from the
// operators' products on unit vectors (GgnOperator for the exact diagonal, MonteCarloFisherOperator
// for the Monte-Carlo one): the diagonal functions share neither their sweeps nor their
// per-example bookkeeping with those operators.
#include <cmath>
#include <cstdint>
#include <memory>
#include <numeric>
#include <string>
#include <vector>

#include <catch2/catch.hpp>

#include <amari/autodiff/autodiff.hpp>
#include <amari/curvature/diag_ggn.hpp>
#include <amari/curvature/fisher.hpp>
#include <amari/curvature/ggn.hpp>
#include <amari/nn/heads.hpp>
#include <amari/nn/image_layers.hpp>
#include <amari/nn/layers.hpp>
#include <amari/nn/model.hpp>
#include <amari/nn/normalization.hpp>
#include <amari/nn/residual.hpp>

#include "support/dense.hpp"
#include "support/random.hpp"

namespace {

using amari::Index;
using amari::Shape;
using amari::ShapeError;
using amari::Tensor;
using amari::ValueError;
using amari::curvature::diagonal_ggn;
using amari::curvature::diagonal_ggn_monte_carlo;
using amari::curvature::diagonal_ggn_over_dataset;
using amari::curvature::GgnOperator;
using amari::curvature::MonteCarloFisherOperator;
using amari::nn::Act;
using amari::nn::Gaussian;
using amari::nn::Head;
using amari::nn::Linear;
using amari::nn::Model;
using amari::nn::Sequential;
using amari::nn::SigmoidBernoulli;
using amari::nn::SoftmaxCrossEntropy;
using amari::test::dense_of;
using amari::test::normal_tensor;
using amari::test::Rng;

constexpr Index kD = 3, kC = 3, kN = 5;

void randomize(Model<double>& model, Rng& rng, double scale) {
  Tensor<double>& theta = model.parameters();
  for (Index k = 0; k < theta.size(); ++k) theta[k] = rng.uniform(-scale, scale);
}

std::vector<std::unique_ptr<Head<double>>> all_heads() {
  std::vector<std::unique_ptr<Head<double>>> heads;
  heads.push_back(std::make_unique<SoftmaxCrossEntropy<double>>());
  heads.push_back(std::make_unique<SigmoidBernoulli<double>>());
  heads.push_back(std::make_unique<Gaussian<double>>(0.7));
  return heads;
}

// The diagonal of a dense matrix assembled from an operator's products on unit vectors.
std::vector<double> dense_diagonal(amari::curvature::LinearOperator<double>& op) {
  const amari::test::Dense m = dense_of(op);
  std::vector<double> d(static_cast<std::size_t>(m.n));
  for (Index i = 0; i < m.n; ++i) d[static_cast<std::size_t>(i)] = m(i, i);
  return d;
}

// max_i |d_i - ref_i| / max_i |ref_i|.
double rel_error(const Tensor<double>& d, const std::vector<double>& ref) {
  double err = 0, scale = 0;
  for (std::size_t i = 0; i < ref.size(); ++i) {
    err = std::max(err, std::fabs(d[static_cast<Index>(i)] - ref[i]));
    scale = std::max(scale, std::fabs(ref[i]));
  }
  return err / scale;
}

Model<double> make_mlp(Rng& rng) {
  Model<double> model(amari::nn::mlp<double>({kD, 4, kC}, Act::tanh));
  randomize(model, rng, 1.0);
  return model;
}

// Reshape(6, 5, 2) -> Conv2d(2 -> 3, 3x3, stride (2, 1), padding 1, dilation (1, 2)) -> Tanh ->
// (3, 3, 3) -> MaxPool2d(2, stride 1) -> Conv2d(3 -> 2, 1x1, no bias) -> (2, 2, 2) -> Flatten ->
// Linear(8 -> C): several output positions per convolution, windows over the padding, a
// bias-less convolution.
Model<double> small_cnn(Rng& rng) {
  const amari::Conv2dOptions geometry{.stride = {2, 1}, .padding = {1, 1}, .dilation = {1, 2}};
  auto net = std::make_shared<Sequential<double>>();
  net->emplace<amari::nn::Reshape<double>>(std::vector<Index>{6, 5, 2})
      .emplace<amari::nn::Conv2d<double>>(2, 3, 3, geometry)
      .emplace<amari::nn::Tanh<double>>()
      .emplace<amari::nn::MaxPool2d<double>>(2, 1)
      .emplace<amari::nn::Conv2d<double>>(3, 2, 1, amari::Conv2dOptions{}, false)
      .emplace<amari::nn::Flatten<double>>()
      .emplace<Linear<double>>(2 * 2 * 2, kC);
  Model<double> model(net);
  randomize(model, rng, 0.8);
  return model;
}

// Linear, Tanh, Residual(Linear), LayerNorm (untapped: per-example sweeps), Linear.
Model<double> model_with_untapped(Rng& rng) {
  auto body = std::make_shared<Sequential<double>>();
  body->emplace<Linear<double>>(4, 4).emplace<amari::nn::Tanh<double>>();
  auto net = std::make_shared<Sequential<double>>();
  net->emplace<Linear<double>>(kD, 4)
      .emplace<amari::nn::Tanh<double>>()
      .emplace<amari::nn::Residual<double>>(body)
      .emplace<amari::nn::LayerNorm<double>>(4)
      .emplace<Linear<double>>(4, kC);
  Model<double> model(net);
  randomize(model, rng, 1.0);
  return model;
}

void check_exact(const Model<double>& model, const Head<double>& head, const Tensor<double>& x) {
  GgnOperator<double> ggn(model, head, x);
  const std::vector<double> ref = dense_diagonal(ggn);
  const Tensor<double> d = diagonal_ggn(model, head, x);
  REQUIRE(d.size() == model.num_parameters());
  CHECK(rel_error(d, ref) < 1e-12);
}

}  // namespace

TEST_CASE(
    "diagonal GGN: equals the diagonal of the dense GGN for an MLP with softmax, sigmoid and "
    "Gaussian heads",
    "[diag_ggn]") {
  for (const auto& head : all_heads()) {
    INFO(head->name());
    Rng rng(1);
    const Model<double> model = make_mlp(rng);
    check_exact(model, *head, normal_tensor<double>(Shape{kN, kD}, rng));
    // One example: the sum over the C columns alone.
    check_exact(model, *head, normal_tensor<double>(Shape{1, kD}, rng));
  }
}

TEST_CASE(
    "diagonal GGN: equals the diagonal of the dense GGN for a CNN with strided, padded, dilated "
    "and bias-less convolutions and pooling",
    "[diag_ggn]") {
  for (const auto& head : all_heads()) {
    INFO(head->name());
    Rng rng(2);
    const Model<double> model = small_cnn(rng);
    check_exact(model, *head, normal_tensor<double>(Shape{4, 6 * 5 * 2}, rng));
  }
}

TEST_CASE(
    "diagonal GGN: untapped parameters and batch norm in train mode take per-example sweeps and "
    "still equal the dense diagonal",
    "[diag_ggn]") {
  SoftmaxCrossEntropy<double> head;
  Rng rng(3);
  const Model<double> model = model_with_untapped(rng);
  check_exact(model, head, normal_tensor<double>(Shape{kN, kD}, rng));

  // Batch norm: in train mode the examples interact through the batch statistics.
  auto net = std::make_shared<Sequential<double>>();
  net->emplace<Linear<double>>(kD, 4)
      .emplace<amari::nn::BatchNorm<double>>(4)
      .emplace<amari::nn::Tanh<double>>()
      .emplace<Linear<double>>(4, kC);
  Model<double> bn(net);
  randomize(bn, rng, 1.0);
  const Tensor<double> x = normal_tensor<double>(Shape{kN, kD}, rng);
  for (amari::nn::Mode mode : {amari::nn::Mode::train, amari::nn::Mode::eval}) {
    INFO("train mode " << (mode == amari::nn::Mode::train));
    bn.set_mode(mode);
    check_exact(bn, head, x);
  }
}

TEST_CASE(
    "diagonal GGN Monte Carlo: equals the diagonal of the dense MonteCarloFisherOperator for the "
    "same seed, samples and example ids",
    "[diag_ggn]") {
  for (const auto& head : all_heads()) {
    INFO(head->name());
    Rng rng(4);
    const Model<double> model = make_mlp(rng);
    const Tensor<double> x = normal_tensor<double>(Shape{kN, kD}, rng);
    for (const std::vector<Index>& ids :
         {std::vector<Index>{}, std::vector<Index>{7, 3, 11, 0, 42}}) {
      INFO("ids " << ids.size());
      MonteCarloFisherOperator<double> mc(model, *head, x, 3, 99, ids);
      const std::vector<double> ref = dense_diagonal(mc);
      CHECK(rel_error(diagonal_ggn_monte_carlo(model, *head, x, 3, 99, ids), ref) < 1e-12);
    }
  }
  // A CNN too: the per-example squares of the shared convolution weights.
  SoftmaxCrossEntropy<double> head;
  Rng rng(5);
  const Model<double> cnn = small_cnn(rng);
  const Tensor<double> x = normal_tensor<double>(Shape{3, 6 * 5 * 2}, rng);
  MonteCarloFisherOperator<double> mc(cnn, head, x, 2, 7);
  CHECK(rel_error(diagonal_ggn_monte_carlo(cnn, head, x, 2, 7), dense_diagonal(mc)) < 1e-12);
}

TEST_CASE(
    "diagonal GGN Monte Carlo: converges to the exact diagonal as the samples grow, error about "
    "1 over sqrt of samples",
    "[diag_ggn]") {
  for (const auto& head : all_heads()) {
    INFO(head->name());
    Rng rng(6);
    const Model<double> model = make_mlp(rng);
    const Tensor<double> x = normal_tensor<double>(Shape{kN, kD}, rng);
    const Tensor<double> exact = diagonal_ggn(model, *head, x);
    auto rel = [&](int samples) {
      const Tensor<double> mc = diagonal_ggn_monte_carlo(model, *head, x, samples, 2024);
      double e = 0, s = 0;
      for (Index k = 0; k < exact.size(); ++k) {
        e += (mc[k] - exact[k]) * (mc[k] - exact[k]);
        s += exact[k] * exact[k];
      }
      return std::sqrt(e / s);
    };
    const double e4 = rel(4), e1600 = rel(1600);
    INFO("relative error with 4 samples " << e4 << ", with 1600 " << e1600);
    // 1 / sqrt(400) = 0.05 expected; loose bounds for a fixed seed.
    CHECK(e1600 < 0.3 * e4);
    CHECK(e1600 < 0.1);
  }
}

TEST_CASE(
    "diagonal GGN over a data set: equals the one-batch diagonal for any batch size, exact and "
    "Monte Carlo",
    "[diag_ggn]") {
  SoftmaxCrossEntropy<double> head;
  Rng rng(7);
  const Model<double> model = make_mlp(rng);
  const Index n = 11;
  const Tensor<double> x = normal_tensor<double>(Shape{n, kD}, rng);
  const Tensor<double> exact = diagonal_ggn(model, head, x);
  const Tensor<double> mc = diagonal_ggn_monte_carlo(model, head, x, 2, 5);
  auto as_vector = [](const Tensor<double>& t) { return std::vector<double>(t.begin(), t.end()); };
  for (Index batch : {Index{1}, Index{3}, Index{4}, n, Index{20}}) {
    INFO("batch " << batch);
    CHECK(rel_error(diagonal_ggn_over_dataset(model, head, x, batch), as_vector(exact)) < 1e-12);
    CHECK(rel_error(diagonal_ggn_over_dataset(model, head, x, batch, 2, 5), as_vector(mc)) < 1e-12);
  }
}

TEST_CASE("diagonal GGN: float models agree with double to float precision", "[diag_ggn]") {
  SoftmaxCrossEntropy<double> head64;
  SoftmaxCrossEntropy<float> head32;
  Rng rng(8);
  const Model<double> model = make_mlp(rng);
  Model<float> model32(amari::nn::mlp<float>({kD, 4, kC}, Act::tanh));
  model32.scatter(amari::test::convert<float>(model.parameters()));
  const Tensor<double> x = normal_tensor<double>(Shape{kN, kD}, rng);
  const Tensor<double> d = diagonal_ggn(model, head64, x);
  const Tensor<float> d32 = diagonal_ggn(model32, head32, amari::test::convert<float>(x));
  std::vector<double> ref(d.begin(), d.end());
  CHECK(rel_error(amari::test::convert<double>(d32), ref) < 1e-4);
}

TEST_CASE("diagonal GGN: bad shapes raise ShapeError and bad counts ValueError", "[diag_ggn]") {
  SoftmaxCrossEntropy<double> head;
  Rng rng(9);
  const Model<double> model = make_mlp(rng);
  const Tensor<double> x = normal_tensor<double>(Shape{kN, kD}, rng);
  CHECK_THROWS_AS(diagonal_ggn(model, head, Tensor<double>()), ShapeError);
  CHECK_THROWS_AS(diagonal_ggn(model, head, Tensor<double>(Shape{0, kD})), ShapeError);
  CHECK_THROWS_AS(diagonal_ggn(model, head, normal_tensor<double>(Shape{kN, kD + 1}, rng)),
                  ShapeError);
  CHECK_THROWS_AS(diagonal_ggn_monte_carlo(model, head, x, 1, 0, {1, 2}), ShapeError);
  CHECK_THROWS_AS(diagonal_ggn_monte_carlo(model, head, x, 0, 0), ValueError);
  CHECK_THROWS_AS(diagonal_ggn_over_dataset(model, head, x, 0), ValueError);
  CHECK_THROWS_AS(diagonal_ggn_over_dataset(model, head, x, 2, -1), ValueError);
  CHECK_THROWS_AS(diagonal_ggn_over_dataset(model, head, Tensor<double>(), 2), ShapeError);
}
