// K-FAC's training steps and batch norm's running statistics: a Kfac step in train mode moves them
// exactly as one plain training pass (Model::forward_updating_state) over the step's whole batch
// does, whether the step gathers statistics (its tapped record, which may read only the first
// statistics_batch rows) or not (its loss and gradient record), on one process and on each rank of
// a data-parallel run; and a step that throws leaves them as they were. The expected values come
// from a copy of the model taken before the step and moved by that plain pass.
#include <bit>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <memory>
#include <span>
#include <vector>

#include <catch2/catch.hpp>

#include <amari/autodiff/autodiff.hpp>
#include <amari/curvature/kfac.hpp>
#include <amari/nn/heads.hpp>
#include <amari/nn/layers.hpp>
#include <amari/nn/model.hpp>
#include <amari/nn/normalization.hpp>
#include <amari/nn/thread_ranks.hpp>
#include <amari/nn/training.hpp>

#include "support/random.hpp"

namespace {

using amari::Index;
using amari::Shape;
using amari::Tensor;
using amari::ValueError;
using amari::curvature::Kfac;
using amari::curvature::KfacOptions;
using amari::nn::Model;
using amari::nn::SoftmaxCrossEntropy;
using amari::test::normal_tensor;
using amari::test::Rng;

constexpr Index kD = 3, kH = 5, kC = 3, kN = 12;

// Linear -> BatchNorm -> tanh -> Linear -> BatchNorm: two state tensors per batch norm, one of
// them after the last tapped layer.
Model<double> batch_norm_net() {
  auto net = std::make_shared<amari::nn::Sequential<double>>();
  net->emplace<amari::nn::Linear<double>>(kD, kH)
      .emplace<amari::nn::BatchNorm<double>>(kH)
      .emplace<amari::nn::Tanh<double>>()
      .emplace<amari::nn::Linear<double>>(kH, kC)
      .emplace<amari::nn::BatchNorm<double>>(kC);
  return Model<double>(net, 4);
}

Tensor<double> one_hot_targets(Index n, Rng& rng) {
  Tensor<double> y(Shape{n, kC});
  for (Index i = 0; i < n; ++i) y[i * kC + static_cast<Index>(rng.below(kC))] = 1;
  return y;
}

bool same_bits(const Tensor<double>& a, const Tensor<double>& b) {
  if (a.size() != b.size()) return false;
  for (Index i = 0; i < a.size(); ++i) {
    if (std::bit_cast<std::uint64_t>(a[i]) != std::bit_cast<std::uint64_t>(b[i])) return false;
  }
  return true;
}

// The running statistics one plain training pass over `x` gives, from the model as it is now.
Tensor<double> state_after_plain_pass(const Model<double>& model, const Tensor<double>& x) {
  Model<double> copy = model;
  copy.forward_updating_state(x, std::span<const Tensor<double>>(copy.parameter_views()));
  return copy.state().clone();
}

// Rows [first, first + count) of a batch, as a copy.
Tensor<double> rows(const Tensor<double>& t, Index first, Index count) {
  const Index d = t.dim(1);
  return t.view(first * d, Shape{count, d}).clone();
}

struct Case {
  const char* name;
  KfacOptions options;
};

// Statistics at steps 0, 2, 4 (the tapped record) and none at 1, 3, 5 (the loss and gradient
// record), with all rows or the first 5 of 12 as statistics rows, plain and adaptive.
std::vector<Case> cases() {
  const KfacOptions base{.inverse_update_every = 2, .statistics_update_every = 2, .seed = 3};
  std::vector<Case> c;
  for (Index batch : {Index{0}, Index{5}}) {
    KfacOptions plain = base;
    plain.statistics_batch = batch;
    plain.momentum = 0.5;
    KfacOptions adaptive = base;
    adaptive.statistics_batch = batch;
    adaptive.adaptive = true;
    c.push_back({batch == 0 ? "all rows" : "statistics_batch 5", plain});
    c.push_back({batch == 0 ? "all rows, adaptive" : "statistics_batch 5, adaptive", adaptive});
  }
  return c;
}

}  // namespace

TEST_CASE(
    "Kfac in train mode moves batch norm's running statistics as one plain training pass over "
    "the whole batch per step, with and without statistics and for statistics_batch < N",
    "[kfac][batch_norm]") {
  const SoftmaxCrossEntropy<double> head;
  for (const Case& c : cases()) {
    INFO(c.name);
    Rng rng(17);
    Model<double> model = batch_norm_net();
    Kfac<double> kfac(model, head, c.options);
    for (int t = 0; t < 6; ++t) {
      INFO("step " << t);
      const Tensor<double> x = normal_tensor<double>(Shape{kN, kD}, rng);
      const Tensor<double> y = one_hot_targets(kN, rng);
      const Tensor<double> before = model.state().clone();
      const Tensor<double> expected = state_after_plain_pass(model, x);
      kfac.step(x, y);
      CHECK_FALSE(same_bits(model.state(), before));  // the statistics moved ...
      CHECK(same_bits(model.state(), expected));      // ... once, with all N rows
    }
  }
}

TEST_CASE(
    "Kfac: a step that throws after its record moved batch norm's running statistics leaves "
    "them as they were, with and without statistics",
    "[kfac][batch_norm]") {
  const SoftmaxCrossEntropy<double> head;
  Rng rng(23);
  Model<double> model = batch_norm_net();
  Kfac<double> kfac(model, head, KfacOptions{.statistics_update_every = 2, .seed = 3});
  for (int t = 0; t < 2; ++t) {
    INFO("step " << t << (t % 2 == 0 ? " (statistics)" : " (no statistics)"));
    const Tensor<double> x = normal_tensor<double>(Shape{kN, kD}, rng);
    const Tensor<double> y = one_hot_targets(kN, rng);
    // A NaN in one row: the record moves the running statistics to NaN, then the loss is NaN and
    // the step throws.
    Tensor<double> bad = x.clone();
    bad[4] = std::numeric_limits<double>::quiet_NaN();
    const Tensor<double> before = model.state().clone();
    CHECK_FALSE(same_bits(state_after_plain_pass(model, bad), before));  // the pass would move them
    CHECK_THROWS_AS(kfac.step(bad, y), ValueError);
    CHECK(same_bits(model.state(), before));
    CHECK(kfac.steps() == static_cast<std::uint64_t>(t));
    kfac.step(x, y);  // the step of this cadence position, for the next round
  }
}

TEST_CASE(
    "data-parallel Kfac in train mode moves each rank's running statistics as one plain training "
    "pass over that rank's rows per step",
    "[kfac][batch_norm][thread_ranks]") {
  const SoftmaxCrossEntropy<double> head;
  constexpr int kRanks = 2;
  for (Index batch : {Index{0}, Index{4}}) {
    INFO("statistics_batch " << batch);
    Rng rng(29);
    std::vector<Tensor<double>> xs, ys;
    for (int t = 0; t < 4; ++t) {
      xs.push_back(normal_tensor<double>(Shape{kN, kD}, rng));
      ys.push_back(one_hot_targets(kN, rng));
    }
    const KfacOptions o{.statistics_update_every = 2, .seed = 3, .statistics_batch = batch};
    std::vector<Model<double>> models(kRanks, batch_norm_net());
    // [rank][step]: the state after the step and the state the plain pass gave before it.
    std::vector<std::vector<Tensor<double>>> after(kRanks), expected(kRanks), before(kRanks);
    amari::nn::run_thread_ranks(kRanks, [&](amari::nn::Communicator& comm) {
      const auto r = static_cast<std::size_t>(comm.rank());
      Model<double>& model = models[r];
      Kfac<double> kfac(model, head, o, comm);
      const Index first = kN * comm.rank() / kRanks, count = kN / kRanks;
      for (std::size_t t = 0; t < xs.size(); ++t) {
        const Tensor<double> x = rows(xs[t], first, count), y = rows(ys[t], first, count);
        before[r].push_back(model.state().clone());
        expected[r].push_back(state_after_plain_pass(model, x));
        kfac.step(x, y);
        after[r].push_back(model.state().clone());
      }
    });
    for (std::size_t r = 0; r < kRanks; ++r) {
      for (std::size_t t = 0; t < xs.size(); ++t) {
        INFO("rank " << r << " step " << t);
        CHECK_FALSE(same_bits(after[r][t], before[r][t]));
        CHECK(same_bits(after[r][t], expected[r][t]));
      }
    }
  }
}
