// Per-example gradients (curvature/per_example.hpp): row n is the gradient of example n's loss,
// the rows average to the batch gradient, the norms are the rows' norms, and the noise statistics
// match the textbook formulas computed here directly.
#include <amari/curvature/diag_ggn.hpp>
#include <amari/curvature/per_example.hpp>
#include <amari/nn/heads.hpp>
#include <amari/nn/image_layers.hpp>
#include <amari/nn/layers.hpp>
#include <amari/nn/model.hpp>
#include <amari/nn/normalization.hpp>
#include <amari/nn/training.hpp>

#include <algorithm>
#include <cmath>
#include <memory>
#include <vector>

#include <catch2/catch.hpp>

#include "support/matchers.hpp"
#include "support/random.hpp"

namespace {

using amari::Index;
using amari::Shape;
using amari::Tensor;
using amari::curvature::gradient_noise;
using amari::curvature::per_example_gradient_norms;
using amari::curvature::per_example_gradients;
using amari::nn::Model;
using amari::test::max_abs_diff;
using amari::test::MessageContains;
using amari::test::normal_tensor;
using amari::test::Rng;

constexpr Index kN = 6, kD = 4, kC = 3;

Tensor<double> row(const Tensor<double>& m, Index n) {
  const Index cols = m.dim(1);
  return m.view(n * cols, Shape{cols}).clone();
}

double max_abs(const Tensor<double>& a) {
  double m = 0;
  for (Index i = 0; i < a.size(); ++i) m = std::max(m, std::fabs(a[i]));
  return m;
}

struct Problem {
  Model<double> model{amari::nn::mlp<double>({kD, 5, kC}, amari::nn::Act::tanh), 3};
  Tensor<double> x, y_onehot, y_real;
  Problem() {
    Rng rng(21);
    x = normal_tensor<double>(Shape{kN, kD}, rng);
    y_onehot = amari::nn::one_hot<double>({0, 2, 1, 1, 0, 2}, kC);
    y_real = normal_tensor<double>(Shape{kN, kC}, rng);
  }
};

// Checks rows against gradient_at on one-example batches, and the mean against the batch gradient.
void check_rows(const Model<double>& model, const amari::nn::Head<double>& head,
                const Tensor<double>& x, const Tensor<double>& y) {
  INFO(head.name());
  const Tensor<double> G = per_example_gradients(model, head, x, y);
  const Index P = model.num_parameters();
  REQUIRE(G.shape() == Shape{kN, P});
  for (Index n = 0; n < kN; ++n) {
    Tensor<double> g = model.zeros_like_parameters();
    amari::nn::gradient_at(model, head, x.view(n * kD, Shape{1, kD}), y.view(n * kC, Shape{1, kC}),
                           g);
    CHECK(max_abs_diff(row(G, n), g) <= 1e-12 * std::max(1.0, max_abs(g)));
  }
  Tensor<double> batch = model.zeros_like_parameters();
  amari::nn::gradient_at(model, head, x, y, batch);
  const auto stats = gradient_noise(G);
  CHECK(max_abs_diff(stats.mean, batch) <= 1e-12 * std::max(1.0, max_abs(batch)));
}

// Conv2d and Linear layers (tapped) with a grouped convolution and a LayerNorm (untapped: swept
// per example), inputs (N, 4, 4, 2).
Model<double> conv_net_with_untapped() {
  amari::Conv2dOptions grouped;
  grouped.groups = 2;
  auto net = std::make_shared<amari::nn::Sequential<double>>();
  net->emplace<amari::nn::Conv2d<double>>(2, 4, 3)
      .emplace<amari::nn::Tanh<double>>()
      .emplace<amari::nn::Conv2d<double>>(4, 4, 1, grouped)
      .emplace<amari::nn::Flatten<double>>()
      .emplace<amari::nn::LayerNorm<double>>(16)
      .emplace<amari::nn::Linear<double>>(16, kC);
  return Model<double>(net, 2);
}

// Batch norm between two Linears, inputs (N, kD): in train mode every parameter is swept.
Model<double> batch_norm_net() {
  auto net = std::make_shared<amari::nn::Sequential<double>>();
  net->emplace<amari::nn::Linear<double>>(kD, 5)
      .emplace<amari::nn::BatchNorm<double>>(5)
      .emplace<amari::nn::Tanh<double>>()
      .emplace<amari::nn::Linear<double>>(5, kC);
  return Model<double>(net, 4);
}

// Calls check(model, head, x, y) on the cases the matrix-free statistics are compared with the
// per-example matrix on: the MLP with each head, a conv net with untapped parameters, and batch
// norm in train mode (every parameter swept).
template <class Check>
void on_every_case(const Check& check) {
  Problem p;
  check(p.model, amari::nn::SoftmaxCrossEntropy<double>(), p.x, p.y_onehot);
  check(p.model, amari::nn::SigmoidBernoulli<double>(), p.x, p.y_onehot);
  check(p.model, amari::nn::Gaussian<double>(0.5), p.x, p.y_real);
  Model<double> conv = conv_net_with_untapped();
  Rng rng(9);
  check(conv, amari::nn::SoftmaxCrossEntropy<double>(), normal_tensor<double>(Shape{kN, 4, 4, 2}, rng), p.y_onehot);
  Model<double> bn = batch_norm_net();
  bn.train();
  check(bn, amari::nn::SoftmaxCrossEntropy<double>(), p.x, p.y_onehot);
}

}  // namespace

TEST_CASE("per-example gradients: row n equals the gradient on example n alone, for every head",
          "[per_example]") {
  Problem p;
  check_rows(p.model, amari::nn::SoftmaxCrossEntropy<double>(), p.x, p.y_onehot);
  const Tensor<double> y01 = amari::nn::one_hot<double>({1, 1, 0, 2, 2, 0}, kC);
  check_rows(p.model, amari::nn::SigmoidBernoulli<double>(), p.x, y01);
  check_rows(p.model, amari::nn::Gaussian<double>(0.7), p.x, p.y_real);
}

TEST_CASE("per-example gradients: the norms are the Euclidean norms of the rows", "[per_example]") {
  Problem p;
  const amari::nn::SoftmaxCrossEntropy<double> head;
  const Tensor<double> G = per_example_gradients(p.model, head, p.x, p.y_onehot);
  const Tensor<double> norms = per_example_gradient_norms(p.model, head, p.x, p.y_onehot);
  REQUIRE(norms.shape() == Shape{kN});
  for (Index n = 0; n < kN; ++n)
    CHECK(norms[n] == Approx(amari::test::norm(row(G, n))).epsilon(1e-14));
}

TEST_CASE("per-example gradients: noise statistics match the formulas of McCandlish et al. 2018",
          "[per_example]") {
  Problem p;
  const Tensor<double> G =
      per_example_gradients(p.model, amari::nn::SoftmaxCrossEntropy<double>(), p.x, p.y_onehot);
  const Index P = G.dim(1);
  const auto s = gradient_noise(G);
  REQUIRE(s.mean.shape() == Shape{P});
  REQUIRE(s.variance.shape() == Shape{P});
  double trace = 0, g2 = 0;
  for (Index j = 0; j < P; ++j) {
    double mean = 0;
    for (Index n = 0; n < kN; ++n) mean += G.at(n, j);
    mean /= kN;
    double var = 0;
    for (Index n = 0; n < kN; ++n) var += (G.at(n, j) - mean) * (G.at(n, j) - mean);
    var /= kN - 1;
    CHECK(s.mean[j] == Approx(mean).epsilon(1e-13).margin(1e-15));
    CHECK(s.variance[j] == Approx(var).epsilon(1e-13).margin(1e-15));
    trace += var;
    g2 += mean * mean;
  }
  CHECK(s.trace_covariance == Approx(trace).epsilon(1e-13));
  CHECK(s.mean_norm_squared == Approx(g2).epsilon(1e-13));
  CHECK(s.noise_scale == Approx(trace / g2).epsilon(1e-13));
  // Identical rows: no noise.
  Tensor<double> same(Shape{3, 2});
  for (Index n = 0; n < 3; ++n) same.at(n, 0) = 1, same.at(n, 1) = -2;
  const auto z = gradient_noise(same);
  CHECK(z.trace_covariance == 0);
  CHECK(z.noise_scale == 0);
  CHECK(z.mean_norm_squared == Approx(5));
}

TEST_CASE(
    "per-example gradients: with batch norm in train mode the rows still average to the batch "
    "gradient",
    "[per_example]") {
  // Examples interact through the batch statistics: row n is d l_n / d theta with the batch fixed
  // (not the one-example gradient), so only the mean identity holds.
  auto net = std::make_shared<amari::nn::Sequential<double>>();
  net->emplace<amari::nn::Linear<double>>(kD, 5)
      .emplace<amari::nn::BatchNorm<double>>(5)
      .emplace<amari::nn::Tanh<double>>()
      .emplace<amari::nn::Linear<double>>(5, kC);
  Model<double> model(net, 4);
  model.train();
  Problem p;
  const amari::nn::SoftmaxCrossEntropy<double> head;
  const Tensor<double> G = per_example_gradients(model, head, p.x, p.y_onehot);
  Tensor<double> batch = model.zeros_like_parameters();
  amari::nn::gradient_at(model, head, p.x, p.y_onehot, batch);
  CHECK(max_abs_diff(gradient_noise(G).mean, batch) <= 1e-12 * std::max(1.0, max_abs(batch)));
}

TEST_CASE("per-example gradients: mismatched batch sizes and too few examples are refused",
          "[per_example][errors]") {
  Problem p;
  const amari::nn::SoftmaxCrossEntropy<double> head;
  REQUIRE_THROWS_MATCHES(
      per_example_gradients(p.model, head, p.x, Tensor<double>(Shape{kN - 1, kC})),
      amari::ShapeError, MessageContains({"per_example_gradients", "(6, 4)", "(5, 3)"}));
  REQUIRE_THROWS_MATCHES(gradient_noise(Tensor<double>(Shape{1, 4})), amari::ValueError,
                         MessageContains({"gradient_noise", "2"}));
}

TEST_CASE(
    "per-example gradients: a conv net with tapped and untapped parameters, rows and norms, train "
    "and eval",
    "[per_example]") {
  // Conv2d and Linear blocks come from the layer taps (one sweep for all examples); LayerNorm's
  // scale and shift and the grouped convolution from per-example sweeps; batch norm in eval mode
  // keeps the examples independent, so every row is the one-example gradient.
  amari::Conv2dOptions padded;
  padded.padding = {1, 1};
  amari::Conv2dOptions grouped;
  grouped.groups = 3;
  auto net = std::make_shared<amari::nn::Sequential<double>>();
  net->emplace<amari::nn::Conv2d<double>>(2, 3, 3, padded)
      .emplace<amari::nn::BatchNorm<double>>(3)
      .emplace<amari::nn::Tanh<double>>()
      .emplace<amari::nn::Conv2d<double>>(3, 3, 2, grouped)
      .emplace<amari::nn::Flatten<double>>()
      .emplace<amari::nn::LayerNorm<double>>(27)
      .emplace<amari::nn::Linear<double>>(27, kC);
  Model<double> model(net, 8);
  model.eval();
  Rng rng(5);
  const Tensor<double> x = normal_tensor<double>(Shape{kN, 4, 4, 2}, rng);
  const Tensor<double> y = amari::nn::one_hot<double>({0, 2, 1, 1, 0, 2}, kC);
  const amari::nn::SoftmaxCrossEntropy<double> head;
  const Tensor<double> G = per_example_gradients(model, head, x, y);
  const Index P = model.num_parameters(), row_size = 4 * 4 * 2;
  REQUIRE(G.shape() == Shape{kN, P});
  const Tensor<double> norms = per_example_gradient_norms(model, head, x, y);
  for (Index n = 0; n < kN; ++n) {
    Tensor<double> g = model.zeros_like_parameters();
    amari::nn::gradient_at(model, head, x.view(n * row_size, Shape{1, 4, 4, 2}),
                           y.view(n * kC, Shape{1, kC}), g);
    CHECK(max_abs_diff(row(G, n), g) <= 1e-12 * std::max(1.0, max_abs(g)));
    double s = 0;
    for (Index j = 0; j < P; ++j) s += g[j] * g[j];
    CHECK(norms[n] == Approx(std::sqrt(s)).epsilon(1e-12));
  }
  // In train mode the batch statistics make the examples interact: every parameter is swept, and
  // the rows still average to the batch gradient.
  model.train();
  const Tensor<double> Gt = per_example_gradients(model, head, x, y);
  Tensor<double> batch = model.zeros_like_parameters();
  amari::nn::gradient_at(model, head, x, y, batch);
  CHECK(max_abs_diff(gradient_noise(Gt).mean, batch) <= 1e-12 * std::max(1.0, max_abs(batch)));
}

namespace {

// The reference: the mean of the clipped rows of the dense per-example matrix.
Tensor<double> clipped_mean_of_rows(const Tensor<double>& G, double max_norm) {
  const Index n = G.dim(0), p = G.dim(1);
  Tensor<double> mean(Shape{p});
  for (Index e = 0; e < n; ++e) {
    double s = 0;
    for (Index j = 0; j < p; ++j) s += G[e * p + j] * G[e * p + j];
    const double c = std::sqrt(s) > max_norm ? max_norm / std::sqrt(s) : 1.0;
    for (Index j = 0; j < p; ++j) mean[j] += c * G[e * p + j] / static_cast<double>(n);
  }
  return mean;
}

}  // namespace

TEST_CASE("clipped mean gradient: equals the mean of the clipped per-example rows, MLP and conv net, eval and train",
          "[per_example]") {
  const amari::nn::SoftmaxCrossEntropy<double> head;
  Problem p;
  const Tensor<double> norms = per_example_gradient_norms(p.model, head, p.x, p.y_onehot);
  // A threshold between the smallest and largest norm, so some rows are clipped and some are not.
  double lo = norms[0], hi = norms[0];
  for (Index e = 0; e < kN; ++e) lo = std::min(lo, norms[e]), hi = std::max(hi, norms[e]);
  REQUIRE(lo < hi);
  const double threshold = 0.5 * (lo + hi);
  Tensor<double> g = p.model.zeros_like_parameters();
  const Tensor<double> returned = amari::curvature::clipped_mean_gradient(p.model, head, p.x, p.y_onehot, threshold, g);
  const Tensor<double> reference = clipped_mean_of_rows(per_example_gradients(p.model, head, p.x, p.y_onehot), threshold);
  CHECK(max_abs_diff(g, reference) <= 1e-13 * std::max(1.0, max_abs(reference)));
  CHECK(max_abs_diff(returned, norms) <= 1e-13 * hi);
  // A threshold above every norm gives the batch gradient.
  Tensor<double> batch = p.model.zeros_like_parameters();
  amari::nn::gradient_at(p.model, head, p.x, p.y_onehot, batch);
  amari::curvature::clipped_mean_gradient(p.model, head, p.x, p.y_onehot, 2 * hi, g);
  CHECK(max_abs_diff(g, batch) <= 1e-13 * std::max(1.0, max_abs(batch)));

  // Batch norm in train mode: examples interact, the identity sum c_n g_n = J^T (c o b) still holds.
  auto net = std::make_shared<amari::nn::Sequential<double>>();
  net->emplace<amari::nn::Linear<double>>(kD, 5)
      .emplace<amari::nn::BatchNorm<double>>(5)
      .emplace<amari::nn::Tanh<double>>()
      .emplace<amari::nn::Linear<double>>(5, kC);
  Model<double> bn(net, 4);
  bn.train();
  const Tensor<double> Gt = per_example_gradients(bn, head, p.x, p.y_onehot);
  Tensor<double> gt = bn.zeros_like_parameters();
  amari::curvature::clipped_mean_gradient(bn, head, p.x, p.y_onehot, 0.1, gt);
  const Tensor<double> ref_t = clipped_mean_of_rows(Gt, 0.1);
  CHECK(max_abs_diff(gt, ref_t) <= 1e-13 * std::max(1.0, max_abs(ref_t)));
}

TEST_CASE("clipped mean gradient: bad thresholds and outputs are refused and nothing is written",
          "[per_example][errors]") {
  const amari::nn::SoftmaxCrossEntropy<double> head;
  Problem p;
  Tensor<double> g = p.model.zeros_like_parameters();
  g.fill(7.0);
  using amari::curvature::clipped_mean_gradient;
  CHECK_THROWS_MATCHES(clipped_mean_gradient(p.model, head, p.x, p.y_onehot, 0.0, g), amari::ValueError,
                       MessageContains({"clipped_mean_gradient", "max_norm"}));
  CHECK_THROWS_AS(clipped_mean_gradient(p.model, head, p.x, p.y_onehot, std::nan(""), g), amari::ValueError);
  Tensor<double> short_g(Shape{3});
  CHECK_THROWS_AS(clipped_mean_gradient(p.model, head, p.x, p.y_onehot, 1.0, short_g), amari::ShapeError);
  CHECK_THROWS_AS(clipped_mean_gradient(p.model, head, p.x, p.y_onehot, 1.0, p.model.parameters()), amari::ValueError);
  for (Index j = 0; j < g.size(); ++j) REQUIRE(g[j] == 7.0);
}

TEST_CASE("gradient noise without the matrix: the mean, variance, trace and noise scale of the matrix version",
          "[per_example]") {
  Problem p;
  const amari::nn::SoftmaxCrossEntropy<double> head;
  const auto dense = gradient_noise(per_example_gradients(p.model, head, p.x, p.y_onehot));
  const auto light = gradient_noise(p.model, head, p.x, p.y_onehot);
  CHECK(max_abs_diff(light.mean, dense.mean) <= 1e-13 * std::max(1.0, max_abs(dense.mean)));
  REQUIRE(light.variance.shape() == dense.variance.shape());
  CHECK(max_abs_diff(light.variance, dense.variance) <= 1e-12 * std::max(1.0, max_abs(dense.variance)));
  CHECK(light.trace_covariance == Approx(dense.trace_covariance).epsilon(1e-10));
  CHECK(light.mean_norm_squared == Approx(dense.mean_norm_squared).epsilon(1e-12));
  CHECK(light.noise_scale == Approx(dense.noise_scale).epsilon(1e-10));
  CHECK_THROWS_AS(gradient_noise(p.model, head, p.x.view(0, Shape{1, kD}), p.y_onehot.view(0, Shape{1, kC})),
                  amari::ValueError);
}

TEST_CASE("empirical Fisher diagonal: the mean of the squared per-example gradients, MLP, conv net, train-mode batch norm",
          "[per_example]") {
  // diag(EF) = (1/N) sum_n g_n o g_n from the rows of the per-example matrix, for every head on the
  // MLP; a conv net with untapped parameters; batch norm in train mode (every parameter swept).
  const auto check = [](const Model<double>& model, const amari::nn::Head<double>& head, const Tensor<double>& x,
                        const Tensor<double>& y) {
    INFO(head.name());
    const Tensor<double> G = per_example_gradients(model, head, x, y);
    const Index n = G.dim(0), P = G.dim(1);
    Tensor<double> want(Shape{P});
    for (Index e = 0; e < n; ++e)
      for (Index j = 0; j < P; ++j) want[j] += G[e * P + j] * G[e * P + j] / static_cast<double>(n);
    const Tensor<double> got = amari::curvature::diagonal_empirical_fisher(model, head, x, y);
    CHECK(max_abs_diff(got, want) <= 1e-12 * std::max(1.0, max_abs(want)));
  };
  on_every_case(check);
  Problem p;
  CHECK_THROWS_MATCHES(amari::curvature::diagonal_empirical_fisher(p.model, amari::nn::SoftmaxCrossEntropy<double>(),
                                                                   p.x, p.y_onehot.view(0, Shape{kN - 1, kC})),
                       amari::ShapeError, MessageContains({"diagonal_empirical_fisher", "(5, 3)"}));
}

namespace {

// Every row of for_each_per_example_gradient(chunk) against per_example_gradients, bitwise, and
// the chunks in order, each of min(chunk, N - first) rows.
template <class T>
void check_chunks(const Model<T>& model, const amari::nn::Head<T>& head, const Tensor<T>& x,
                  const Tensor<T>& y) {
  const Tensor<T> G = per_example_gradients(model, head, x, y);
  const Index n = G.dim(0), P = G.dim(1);
  for (const Index chunk : {Index{1}, Index{4}, n, n + 5}) {
    INFO("chunk " << chunk);
    Tensor<T> seen(Shape{n, P});
    Index expected_first = 0, calls = 0;
    amari::curvature::for_each_per_example_gradient<T>(
        model, head, x, y, chunk, [&](Index first, const Tensor<T>& rows) {
          CHECK(first == expected_first);
          CHECK(rows.shape() == Shape{std::min(chunk, n - first), P});
          std::copy(rows.data(), rows.data() + rows.size(), seen.data() + first * P);
          expected_first += rows.dim(0);
          ++calls;
        });
    CHECK(expected_first == n);
    CHECK(calls == (n + chunk - 1) / chunk);
    CHECK(max_abs_diff(seen, G) == 0.0);
  }
}

}  // namespace

TEST_CASE("per-example gradients in chunks: the rows of the matrix, bitwise, for MLPs and a conv net",
          "[per_example]") {
  const amari::nn::SoftmaxCrossEntropy<double> head;
  Problem p;
  check_chunks(p.model, head, p.x, p.y_onehot);
  // A conv net with tapped and untapped (LayerNorm, grouped convolution) parameters, eval mode.
  Model<double> conv = conv_net_with_untapped();
  conv.eval();
  Rng rng(9);
  const Tensor<double> x = normal_tensor<double>(Shape{kN, 4, 4, 2}, rng);
  check_chunks(conv, head, x, p.y_onehot);
  // Batch norm in train mode: every parameter swept per example.
  Model<double> bn = batch_norm_net();
  bn.train();
  check_chunks(bn, head, p.x, p.y_onehot);
  // Float.
  Model<float> f(amari::nn::mlp<float>({kD, 7, kC}, amari::nn::Act::tanh), 3);
  const amari::nn::SoftmaxCrossEntropy<float> head_f;
  Rng rng_f(4);
  const Tensor<float> xf = normal_tensor<float>(Shape{kN, kD}, rng_f);
  const Tensor<float> yf = amari::nn::one_hot<float>({0, 2, 1, 1, 0, 2}, kC);
  check_chunks(f, head_f, xf, yf);
}

TEST_CASE("per-example gradients in chunks: bad chunks, shapes and callbacks are refused before any call",
          "[per_example]") {
  const amari::nn::SoftmaxCrossEntropy<double> head;
  Problem p;
  int calls = 0;
  const auto count = [&](Index, const Tensor<double>&) { ++calls; };
  using amari::curvature::for_each_per_example_gradient;
  CHECK_THROWS_MATCHES(for_each_per_example_gradient<double>(p.model, head, p.x, p.y_onehot, 0, count),
                       amari::ValueError, MessageContains({"chunk must be at least 1"}));
  CHECK_THROWS_MATCHES(for_each_per_example_gradient<double>(p.model, head, p.x, p.y_onehot, 2, nullptr),
                       amari::ValueError, MessageContains({"for_each_per_example_gradient"}));
  CHECK_THROWS_MATCHES(
      for_each_per_example_gradient<double>(p.model, head, p.x, p.y_onehot.view(0, Shape{kN - 1, kC}), 2, count),
      amari::ShapeError, MessageContains({"for_each_per_example_gradient"}));
  CHECK(calls == 0);
  // An exception from the callback ends the loop and reaches the caller.
  CHECK_THROWS_AS(for_each_per_example_gradient<double>(p.model, head, p.x, p.y_onehot, 2,
                                                        [&](Index, const Tensor<double>&) {
                                                          ++calls;
                                                          throw std::runtime_error("stop");
                                                        }),
                  std::runtime_error);
  CHECK(calls == 1);
}

TEST_CASE("per-example gradient Gram matrix: G G^T of the per-example matrix, exactly symmetric",
          "[per_example]") {
  const auto check = [](const Model<double>& model, const amari::nn::Head<double>& head, const Tensor<double>& x,
                        const Tensor<double>& y) {
    INFO(head.name());
    const Tensor<double> G = per_example_gradients(model, head, x, y);
    const Index n = G.dim(0), P = G.dim(1);
    Tensor<double> want(Shape{n, n});
    for (Index i = 0; i < n; ++i)
      for (Index j = 0; j < n; ++j)
        for (Index k = 0; k < P; ++k) want[i * n + j] += G[i * P + k] * G[j * P + k];
    const Tensor<double> got = amari::curvature::per_example_gradient_gram(model, head, x, y);
    REQUIRE(got.shape() == Shape{n, n});
    CHECK(max_abs_diff(got, want) <= 1e-12 * std::max(1.0, max_abs(want)));
    for (Index i = 0; i < n; ++i)
      for (Index j = 0; j < n; ++j) CHECK(got[i * n + j] == got[j * n + i]);
  };
  on_every_case(check);
  Problem p;
  CHECK_THROWS_MATCHES(amari::curvature::per_example_gradient_gram(p.model, amari::nn::SoftmaxCrossEntropy<double>(),
                                                                   p.x, p.y_onehot.view(0, Shape{kN - 1, kC})),
                       amari::ShapeError, MessageContains({"per_example_gradient_gram"}));
}
