// The training gradient on nn::RecordedModel (nn/training.hpp, nn/recorded_model.hpp): with batch
// norm and dropout in train mode, nn::loss_and_gradient gives bitwise what a hand-made taped
// training step gives (the step counter moved first, Model::forward_updating_state on a Tape, one
// reverse sweep) and what RecordedModel's own gradient and loss give at the same step; running
// statistics move exactly once per step; a recording that moves the state and then throws leaves
// the state as it was.
#include <amari/amari.hpp>

#include <cstring>
#include <memory>
#include <vector>

#include <catch2/catch.hpp>

#include "support/random.hpp"

namespace {

using namespace amari;

/// Linear 6 -> 12, batch norm, tanh, dropout 0.3, Linear 12 -> 3: state (running statistics) and
/// step-keyed dropout masks in one small model.
std::shared_ptr<nn::Sequential<double>> tg_batch_norm_dropout_net() {
  auto net = std::make_shared<nn::Sequential<double>>();
  net->emplace<nn::Linear<double>>(6, 12);
  net->emplace<nn::BatchNorm<double>>(12);
  net->emplace<nn::Tanh<double>>();
  net->emplace<nn::Dropout<double>>(0.3);
  net->emplace<nn::Linear<double>>(12, 3);
  return net;
}

bool tg_same_bits(const Tensor<double>& a, const Tensor<double>& b) {
  return a.size() == b.size() &&
         std::memcmp(a.data(), b.data(), static_cast<std::size_t>(a.size()) * sizeof(double)) == 0;
}

/// A training step made by hand, as nn::loss_and_gradient made it on a caller's tape before it
/// used RecordedModel: a new step in train mode, first example 0, the state-updating taped pass
/// and one reverse sweep into views of `gradient`.
double tg_step_by_hand(nn::Model<double>& model, const nn::Head<double>& head,
                       const Tensor<double>& x, const Tensor<double>& y, Tensor<double>& gradient) {
  if (model.mode() == nn::Mode::train) model.set_step(model.step() + 1);
  model.set_first_example(0);
  std::vector<Tensor<double>> grads = model.split(gradient);
  Tape<double> tape;
  const std::vector<Var<double>> params = model.variables(tape);
  const Var<double> z =
      model.forward_updating_state(Var<double>(x), std::span<const Var<double>>(params));
  const Var<double> loss = head.loss(z, y);
  const Tensor<double> one = Tensor<double>::scalar(1.0);
  tape.vjp_into(std::span<const Var<double>>(&loss, 1), std::span<const Tensor<double>>(&one, 1),
                params, grads);
  return loss.value().item();
}

}  // namespace

TEST_CASE(
    "loss_and_gradient: with batch norm and dropout in train mode, the loss and gradient equal a "
    "hand-made taped step and RecordedModel's bitwise, and the running statistics move once per "
    "step",
    "[nn][training][recorded_model]") {
  nn::Model<double> model(tg_batch_norm_dropout_net(), 3);
  nn::Model<double> by_hand = model;        // the old code path
  nn::Model<double> data_parallel = model;  // the (Communicator, Shard) overload on one process
  REQUIRE(model.state().size() == 24);
  const nn::SoftmaxCrossEntropy<double> head;
  amari::test::Rng rng(11);
  const Tensor<double> x = amari::test::normal_tensor<double>(Shape{10, 6}, rng);
  const Tensor<double> y = nn::one_hot<double>({0, 1, 2, 0, 1, 2, 0, 1, 2, 0}, 3);
  nn::SingleProcess one;

  Tensor<double> g = model.zeros_like_parameters(), g_hand = model.zeros_like_parameters();
  Tensor<double> g_dp = model.zeros_like_parameters(), g_record = model.zeros_like_parameters();
  Tensor<double> previous_gradient;
  for (int step = 0; step < 3; ++step) {
    INFO("step " << step);
    const Tensor<double> state_before = model.state().clone();
    const double loss = nn::loss_and_gradient(model, head, x, y, g);
    const double loss_hand = tg_step_by_hand(by_hand, head, x, y, g_hand);
    const double loss_dp =
        nn::loss_and_gradient(data_parallel, head, x, y, g_dp, one, nn::shard_of(one, 10));

    // The same step counter (so the same dropout masks), loss, gradient and state as by hand.
    CHECK(model.step() == static_cast<std::uint64_t>(step + 1));
    CHECK(by_hand.step() == model.step());
    CHECK(data_parallel.step() == model.step());
    CHECK(loss == loss_hand);
    CHECK(loss_dp == loss_hand);
    CHECK(tg_same_bits(g, g_hand));
    CHECK(tg_same_bits(g_dp, g_hand));
    // Exactly one state update per step: the same bits as the hand-made step's one update.
    CHECK_FALSE(tg_same_bits(model.state(), state_before));
    CHECK(tg_same_bits(model.state(), by_hand.state()));
    CHECK(tg_same_bits(data_parallel.state(), by_hand.state()));

    // A record at the same step (same masks; batch norm uses the batch's statistics in train mode)
    // gives the same loss and gradient and leaves the state alone; so does gradient_at.
    const Tensor<double> state_after = model.state().clone();
    {
      nn::RecordedModel<double> record(model, x, {.head = &head, .targets = y});
      record.gradient(g_record);
      CHECK(record.loss() == loss);
      CHECK(tg_same_bits(g_record, g));
    }
    Tensor<double> g_at = model.zeros_like_parameters();
    CHECK(nn::gradient_at(model, head, x, y, g_at) == loss);
    CHECK(tg_same_bits(g_at, g));
    CHECK(tg_same_bits(model.state(), state_after));
    CHECK(model.step() == static_cast<std::uint64_t>(step + 1));

    // A new step draws new masks: the gradient at the same parameters changes (not vacuous).
    if (previous_gradient.defined()) CHECK_FALSE(tg_same_bits(g, previous_gradient));
    previous_gradient = g.clone();
  }
}

TEST_CASE(
    "RecordedModel with update_state: a recording that throws leaves the running statistics as "
    "they were, and update_state must be the recorded model",
    "[nn][training][recorded_model]") {
  nn::Model<double> model(tg_batch_norm_dropout_net(), 4);
  nn::Model<double> other = model;
  const nn::SoftmaxCrossEntropy<double> head;
  amari::test::Rng rng(12);
  const Tensor<double> x = amari::test::normal_tensor<double>(Shape{8, 6}, rng);
  const Tensor<double> wrong_targets(Shape{8, 5});  // the model has 3 outputs: the head throws
  const Tensor<double> before = model.state().clone();
  const nn::RecordOptions<double> throwing{
      .head = &head, .targets = wrong_targets, .update_state = &model};
  CHECK_THROWS_AS(nn::RecordedModel<double>(model, x, throwing), ShapeError);
  CHECK(tg_same_bits(model.state(), before));

  // The same recording with valid targets moves the state; one pointing to another model is
  // refused.
  const Tensor<double> y = nn::one_hot<double>({0, 1, 2, 0, 1, 2, 0, 1}, 3);
  nn::RecordedModel<double> moved(model, x, {.head = &head, .targets = y, .update_state = &model});
  CHECK_FALSE(tg_same_bits(model.state(), before));
  const nn::RecordOptions<double> elsewhere{.head = &head, .targets = y, .update_state = &other};
  CHECK_THROWS_AS(nn::RecordedModel<double>(model, x, elsewhere), ValueError);
  CHECK(tg_same_bits(other.state(), before));
}
