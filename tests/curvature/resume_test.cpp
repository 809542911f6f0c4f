// Save and resume (nn/checkpoint.hpp): 10 steps, a checkpoint, a fresh model and optimizer loaded
// from it, 10 more steps equal 20 uninterrupted steps bitwise, for every optimizer that can save
// its state. The model has batch norm (state moved by training passes) and dropout (masks keyed by
// the model's step counter), so a resume that lost either would differ.
#include <amari/amari.hpp>

#include <catch2/catch.hpp>

#include "support/random.hpp"
#include "support/temp_dir.hpp"

namespace {

using namespace amari;
namespace curv = amari::curvature;

std::shared_ptr<const nn::Module<double>> net_of_width(Index hidden) {
  auto s = std::make_shared<nn::Sequential<double>>();
  s->emplace<nn::Linear<double>>(4, hidden);
  s->emplace<nn::BatchNorm<double>>(hidden);
  s->emplace<nn::Tanh<double>>();
  s->emplace<nn::Dropout<double>>(0.2);
  s->emplace<nn::Linear<double>>(hidden, 3);
  return s;
}

std::shared_ptr<const nn::Module<double>> net() { return net_of_width(8); }

struct Data {
  Tensor<double> x, y;
  Data() {
    amari::test::Rng rng(11);
    x = amari::test::normal_tensor<double>(Shape{40, 4}, rng);
    std::vector<int> labels;
    for (int i = 0; i < 40; ++i) labels.push_back((i * 7) % 3);
    y = nn::one_hot<double>(labels, 3);
  }
  // Batch k: 10 rows, cycling through the data.
  Tensor<double> xb(int k) const { return x.view((k % 4) * 10 * 4, Shape{10, 4}).clone(); }
  Tensor<double> yb(int k) const { return y.view((k % 4) * 10 * 3, Shape{10, 3}).clone(); }
};

// make(model) -> optimizer; step(opt, model, data, k) runs step k; arch() the network.
template <class Make, class Step>
void check_resume(Make make, Step step,
                  std::shared_ptr<const nn::Module<double>> (*arch)() = net) {
  const Data d;
  amari::test::TempDir dir;
  const std::string path = dir.file("run.safetensors");
  nn::Model<double> straight(arch(), 5);
  auto opt_straight = make(straight);
  for (int k = 0; k < 20; ++k) step(*opt_straight, straight, d, k);

  nn::Model<double> first(arch(), 5);
  auto opt_first = make(first);
  for (int k = 0; k < 10; ++k) step(*opt_first, first, d, k);
  nn::save_checkpoint(path, first, opt_first->save_state());

  nn::Model<double> resumed(arch(), 99);  // another initialization: everything must come from the file
  auto opt_resumed = make(resumed);
  nn::OptimizerState<double> state;
  nn::load_checkpoint(path, resumed, state);
  opt_resumed->load_state(state);
  for (int k = 10; k < 20; ++k) step(*opt_resumed, resumed, d, k);

  CHECK(resumed.step() == straight.step());
  CHECK(amari::test::max_abs_diff(resumed.parameters(), straight.parameters()) == 0.0);
  CHECK(amari::test::max_abs_diff(resumed.state(), straight.state()) == 0.0);
  // The run really moved: a resume that reset the model would be far off.
  CHECK(amari::test::max_abs_diff(straight.parameters(), nn::Model<double>(arch(), 5).parameters()) > 1e-3);
}

}  // namespace

TEST_CASE("resume: natural gradient, 10 steps + checkpoint + 10 steps equal 20 steps bitwise",
          "[resume][second_order]") {
  static const nn::SoftmaxCrossEntropy<double> head;
  curv::NaturalGradientOptions o;
  o.curvature = curv::Curvature::mc_fisher;  // sampled labels keyed by the step count
  check_resume([&](nn::Model<double>& m) { return std::make_unique<curv::NaturalGradient<double>>(m, head, o); },
               [](curv::NaturalGradient<double>& opt, nn::Model<double>&, const Data& d, int k) {
                 opt.step(d.xb(k), d.yb(k));
               });
}

TEST_CASE("resume: Hessian-free with warm start, 10 steps + checkpoint + 10 steps equal 20 steps bitwise",
          "[resume][second_order]") {
  static const nn::SoftmaxCrossEntropy<double> head;
  curv::HessianFreeOptions o;
  o.cg.max_iterations = 20;
  check_resume([&](nn::Model<double>& m) { return std::make_unique<curv::HessianFree<double>>(m, head, o); },
               [](curv::HessianFree<double>& opt, nn::Model<double>&, const Data& d, int k) {
                 opt.step(d.xb(k), d.yb(k));
               });
}

TEST_CASE("load_checkpoint: a checkpoint of another model or a state of another optimizer changes nothing",
          "[resume]") {
  static const nn::SoftmaxCrossEntropy<double> head;
  amari::test::TempDir dir;
  const std::string path = dir.file("run.safetensors");
  nn::Model<double> model(net(), 5);
  curv::NaturalGradient<double> ng(model, head);
  nn::save_checkpoint(path, model, ng.save_state());
  // Another architecture: refused, the model and the state untouched.
  auto small = std::make_shared<nn::Sequential<double>>();
  small->emplace<nn::Linear<double>>(4, 3);
  nn::Model<double> other(small, 1);
  const Tensor<double> before = other.parameters().clone();
  nn::OptimizerState<double> state;
  state.kind = "untouched";
  CHECK_THROWS(nn::load_checkpoint(path, other, state));
  CHECK(amari::test::max_abs_diff(other.parameters(), before) == 0.0);
  CHECK(state.kind == "untouched");
  // A natural-gradient state given to Hessian-free: refused with the kinds named.
  nn::load_checkpoint(path, model, state);
  curv::HessianFree<double> hf(model, head);
  const double lambda = hf.lambda();
  CHECK_THROWS_WITH(hf.load_state(state), Catch::Contains("natural_gradient") && Catch::Contains("hessian_free"));
  CHECK(hf.lambda() == lambda);
}

namespace {

// A first-order step k: the training gradient of batch k, then the optimizer's update; the learning
// rate is lowered at step 5, so a resume at step 10 must restore it from the state.
template <class Opt>
void first_order_step(Opt& opt, nn::Model<double>& model, const Data& d, int k) {
  static const nn::SoftmaxCrossEntropy<double> head;
  if (k == 5) opt.set_learning_rate(0.5 * opt.learning_rate());
  Tensor<double> g = model.zeros_like_parameters();
  nn::loss_and_gradient(model, head, d.xb(k), d.yb(k), g);
  opt.step(model.parameters(), g);
}

}  // namespace

TEST_CASE("resume: SGD with Nesterov momentum and Adam, 10 steps + checkpoint + 10 steps equal 20 steps bitwise",
          "[resume]") {
  check_resume(
      [](nn::Model<double>&) {
        return std::make_unique<nn::Sgd<double>>(nn::SgdOptions{.learning_rate = 0.1, .momentum = 0.9, .nesterov = true});
      },
      [](nn::Sgd<double>& opt, nn::Model<double>& m, const Data& d, int k) { first_order_step(opt, m, d, k); });
  check_resume([](nn::Model<double>&) { return std::make_unique<nn::Adam<double>>(nn::AdamOptions{.learning_rate = 0.01}); },
               [](nn::Adam<double>& opt, nn::Model<double>& m, const Data& d, int k) { first_order_step(opt, m, d, k); });
}

TEST_CASE("Sgd and Adam load_state: a bad state is refused, names the entry and changes nothing", "[resume]") {
  const Data d;
  nn::Model<double> model(net(), 5);
  nn::Adam<double> adam({.learning_rate = 0.01});
  for (int k = 0; k < 3; ++k) first_order_step(adam, model, d, k);
  const nn::OptimizerState<double> good = adam.save_state();
  REQUIRE(good.tensors.size() == 2);
  const auto unchanged = [&](const nn::Adam<double>& a) {
    const nn::OptimizerState<double> s = a.save_state();
    return s.counters == good.counters && s.numbers == good.numbers &&
           amari::test::max_abs_diff(s.tensors.at("first_moment"), good.tensors.at("first_moment")) == 0.0 &&
           amari::test::max_abs_diff(s.tensors.at("second_moment"), good.tensors.at("second_moment")) == 0.0;
  };
  nn::OptimizerState<double> bad = good;
  bad.tensors["first_moment"] = good.tensors.at("first_moment").clone();
  bad.tensors["first_moment"][3] = std::numeric_limits<double>::quiet_NaN();
  CHECK_THROWS_WITH(adam.load_state(bad), Catch::Contains("first_moment") && Catch::Contains("index 3"));
  bad = good;
  bad.tensors.erase("second_moment");
  CHECK_THROWS_WITH(adam.load_state(bad), Catch::Contains("moments"));
  bad = good;
  bad.tensors["second_moment"] = good.tensors.at("second_moment").clone();
  bad.tensors["second_moment"][0] = -1;
  CHECK_THROWS_WITH(adam.load_state(bad), Catch::Contains("second moment"));
  bad = good;
  bad.counters["steps"] = -2;
  CHECK_THROWS_WITH(adam.load_state(bad), Catch::Contains("negative step count"));
  bad = good;
  bad.numbers["learning_rate"] = std::numeric_limits<double>::infinity();
  CHECK_THROWS_AS(adam.load_state(bad), ValueError);
  bad = good;
  bad.numbers.erase("learning_rate");
  CHECK_THROWS_WITH(adam.load_state(bad), Catch::Contains("learning_rate"));
  bad = good;
  bad.kind = "sgd";
  CHECK_THROWS_WITH(adam.load_state(bad), Catch::Contains("sgd") && Catch::Contains("adam"));
  CHECK(unchanged(adam));
  // A loaded state is a copy: changing the caller's tensors afterwards does not reach the optimizer.
  nn::OptimizerState<double> copy = good;
  copy.tensors["first_moment"] = good.tensors.at("first_moment").clone();
  adam.load_state(copy);
  copy.tensors["first_moment"][0] += 1;
  CHECK(unchanged(adam));

  // SGD without momentum has no velocity to take.
  nn::Sgd<double> heavy({.learning_rate = 0.1, .momentum = 0.9});
  first_order_step(heavy, model, d, 0);
  nn::Sgd<double> plain({.learning_rate = 0.1});
  CHECK_THROWS_WITH(plain.load_state(heavy.save_state()), Catch::Contains("no momentum"));
  CHECK(plain.steps() == 0);
}

TEST_CASE("Optimizer: a user-written optimizer without save_state refuses checkpoints by name", "[resume]") {
  struct Halving final : nn::Optimizer<double> {
    void step(Tensor<double>& p, const Tensor<double>& g) override {
      for (Index i = 0; i < p.size(); ++i) p[i] -= 0.5 * g[i];
    }
    void reset() override {}
    std::string describe() const override { return "Halving"; }
    double learning_rate() const override { return 0.5; }
    void set_learning_rate(double) override {}
  };
  Halving h;
  CHECK_THROWS_WITH(h.save_state(), Catch::Contains("Halving") && Catch::Contains("does not save"));
  CHECK_THROWS_AS(h.load_state(nn::OptimizerState<double>{}), ValueError);
}

namespace {

curv::KfacOptions resume_kfac_options(curv::KfacApproximation approximation) {
  // Inverses (and EKFAC's eigenbases) are refreshed at steps 0, 4, 8, 12, 16: the checkpoint after
  // step 10 falls between two refreshes, so the resumed run must take the stored ones.
  return {.learning_rate = 0.05,
          .damping = 1e-2,
          .inverse_update_every = 4,
          .momentum = 0.5,
          .weight_decay = 1e-4,
          .approximation = approximation};
}

void kfac_step(curv::Kfac<double>& opt, nn::Model<double>&, const Data& d, int k) {
  if (k == 5) opt.set_step_multiplier(0.5);  // restored from the state, not from the options
  opt.step(d.xb(k), d.yb(k));
}

// Two states hold the same entries, bitwise.
bool same_state(const nn::OptimizerState<double>& a, const nn::OptimizerState<double>& b) {
  if (a.kind != b.kind || a.counters != b.counters || a.tensors.size() != b.tensors.size()) return false;
  // numbers bitwise (a NaN would compare unequal, but none is stored)
  if (a.numbers != b.numbers) return false;
  for (const auto& [name, t] : a.tensors) {
    if (!b.has_tensor(name) || !(b.tensors.at(name).shape() == t.shape())) return false;
    if (amari::test::max_abs_diff(t, b.tensors.at(name)) != 0.0) return false;
  }
  return true;
}

}  // namespace

TEST_CASE("resume: K-FAC with momentum, 10 steps + checkpoint + 10 steps equal 20 steps bitwise",
          "[resume][kfac]") {
  static const nn::SoftmaxCrossEntropy<double> head;
  const curv::KfacOptions o = resume_kfac_options(curv::KfacApproximation::kfac);
  check_resume([&](nn::Model<double>& m) { return std::make_unique<curv::Kfac<double>>(m, head, o); }, kfac_step);
}

// A network whose second Linear (24 -> 3, A 25 x 25) gets one statistics row per update: its
// inverse is in the Woodbury form (KfacOptions::low_rank_inverses) until 12 rows, so the checkpoint
// after step 10 holds the rows behind A and a Woodbury inverse, and the resumed run drops the rows
// at update 13 as the straight one does.
std::shared_ptr<const nn::Module<double>> wide_net() { return net_of_width(24); }

TEST_CASE("resume: K-FAC with low-rank (Woodbury) inverses, 10 steps + checkpoint + 10 steps equal 20 steps bitwise",
          "[resume][kfac]") {
  static const nn::SoftmaxCrossEntropy<double> head;
  curv::KfacOptions o = resume_kfac_options(curv::KfacApproximation::kfac);
  o.statistics_batch = 1;
  check_resume([&](nn::Model<double>& m) { return std::make_unique<curv::Kfac<double>>(m, head, o); }, kfac_step,
               wide_net);
  // The checkpoint of that run holds what the resume needed.
  const Data d;
  nn::Model<double> model(wide_net(), 5);
  curv::Kfac<double> kfac(model, head, o);
  for (int k = 0; k < 10; ++k) kfac_step(kfac, model, d, k);
  CHECK(kfac.factors().inverse_a_rank(1) == 9);  // the refresh at step 8, after its 9th update
  const nn::OptimizerState<double> good = kfac.save_state();
  CHECK(good.tensors.at("layer1/A_rows").shape() == Shape{10, 25});
  CHECK(good.tensors.at("layer1/A_rows_per_update").shape() == Shape{10});
  CHECK(good.tensors.at("layer1/A_inverse_woodbury_C").shape() == Shape{9, 25});
  CHECK(good.has_tensor("layer1/A_inverse") == false);
  CHECK(good.has_tensor("layer0/A_rows") == false);  // 5 x 5: dropped after the second update
  // Bad low-rank entries are refused by name and change nothing.
  nn::Model<double> target_model(wide_net(), 7);
  curv::Kfac<double> target(target_model, head, o);
  kfac_step(target, target_model, d, 0);
  const nn::OptimizerState<double> before = target.save_state();
  nn::OptimizerState<double> bad = good;
  bad.tensors["layer1/A_rows_per_update"] = good.tensors.at("layer1/A_rows_per_update").clone();
  bad.tensors["layer1/A_rows_per_update"][3] = 2;  // 11 rows counted, 10 stored
  CHECK_THROWS_WITH(target.load_state(bad), Catch::Contains("layer1/A_rows_per_update") &&
                                                Catch::Contains("11 rows"));
  bad = good;
  bad.tensors["layer1/A_rows_per_update"] = good.tensors.at("layer1/A_rows_per_update").clone();
  bad.tensors["layer1/A_rows_per_update"][0] = 0.5;
  CHECK_THROWS_WITH(target.load_state(bad), Catch::Contains("whole count"));
  bad = good;
  bad.tensors["layer1/A_rows"] = Tensor<double>(Shape{13, 25});  // more than 25 / 2 rows
  CHECK_THROWS_WITH(target.load_state(bad), Catch::Contains("layer1/A_rows") && Catch::Contains("r <= 12"));
  bad = good;
  bad.tensors.erase("layer1/A_inverse_woodbury_P");
  CHECK_THROWS_WITH(target.load_state(bad), Catch::Contains("layer1/A_inverse_woodbury_P"));
  bad = good;
  bad.numbers["layer1/A_inverse_woodbury_delta"] = 0;
  CHECK_THROWS_WITH(target.load_state(bad), Catch::Contains("A_inverse_woodbury_delta"));
  CHECK(same_state(target.save_state(), before));
}

TEST_CASE("resume: EKFAC with momentum, 10 steps + checkpoint + 10 steps equal 20 steps bitwise",
          "[resume][kfac]") {
  static const nn::SoftmaxCrossEntropy<double> head;
  const curv::KfacOptions o = resume_kfac_options(curv::KfacApproximation::ekfac);
  check_resume([&](nn::Model<double>& m) { return std::make_unique<curv::Kfac<double>>(m, head, o); }, kfac_step);
}

TEST_CASE("resume: adaptive K-FAC, 10 steps + checkpoint + 10 steps equal 20 steps bitwise (lambda, delta_0)",
          "[resume][kfac]") {
  static const nn::SoftmaxCrossEntropy<double> head;
  // lambda moves at steps 0, 3, 6, 9, 12, ... and delta_0 feeds every step's mu: the resumed run
  // must take both from the state.
  curv::KfacOptions o = resume_kfac_options(curv::KfacApproximation::kfac);
  o.momentum = 0;
  o.adaptive = true;
  o.damping_adaptation_every = 3;
  check_resume([&](nn::Model<double>& m) { return std::make_unique<curv::Kfac<double>>(m, head, o); }, kfac_step);
  nn::Model<double> model(net(), 5);
  curv::Kfac<double> kfac(model, head, o);
  const Data d;
  for (int k = 0; k < 4; ++k) kfac_step(kfac, model, d, k);
  const nn::OptimizerState<double> s = kfac.save_state();
  CHECK(s.numbers.at("adaptive_damping") == kfac.damping());
  CHECK(amari::test::max_abs_diff(s.tensors.at("previous_update"), kfac.previous_update()) == 0.0);
  curv::Kfac<double> fixed(model, head, resume_kfac_options(curv::KfacApproximation::kfac));
  CHECK_THROWS_WITH(fixed.load_state(s), Catch::Contains("adaptive"));
}

TEST_CASE("Kfac save_state: holds the factors, inverses, momentum and counters of the run", "[resume][kfac]") {
  static const nn::SoftmaxCrossEntropy<double> head;
  const Data d;
  nn::Model<double> model(net(), 5);
  curv::Kfac<double> kfac(model, head, resume_kfac_options(curv::KfacApproximation::kfac));
  CHECK(kfac.save_state().counters.at("layers") == 0);  // before the first step: nothing to store
  for (int k = 0; k < 6; ++k) kfac_step(kfac, model, d, k);
  const nn::OptimizerState<double> s = kfac.save_state();
  CHECK(s.kind == "kfac");
  CHECK(s.counters.at("layers") == 2);
  CHECK(s.counters.at("steps") == 6);
  CHECK(s.counters.at("updates") == 6);
  CHECK(s.numbers.at("step_multiplier") == 0.5);
  CHECK(amari::test::max_abs_diff(s.tensors.at("layer1/G"), kfac.factors().factor_g(1)) == 0.0);
  CHECK(amari::test::max_abs_diff(s.tensors.at("layer0/A_inverse"), kfac.factors().inverse_a(0)) == 0.0);
  CHECK(amari::test::max_abs_diff(s.tensors.at("velocity"), kfac.velocity()) == 0.0);
  CHECK(s.numbers.at("layer0/pi") == kfac.factors().pi(0));
}

TEST_CASE("Kfac load_state: another kind, another approximation, mismatched shapes or bad values are refused "
          "and change nothing",
          "[resume][kfac]") {
  static const nn::SoftmaxCrossEntropy<double> head;
  const Data d;
  nn::Model<double> model(net(), 5);
  curv::Kfac<double> kfac(model, head, resume_kfac_options(curv::KfacApproximation::kfac));
  for (int k = 0; k < 6; ++k) kfac_step(kfac, model, d, k);
  const nn::OptimizerState<double> good = kfac.save_state();

  // The optimizer under test has a state of its own that every refused load must leave alone.
  nn::Model<double> target_model(net(), 7);
  curv::Kfac<double> target(target_model, head, resume_kfac_options(curv::KfacApproximation::kfac));
  for (int k = 0; k < 3; ++k) kfac_step(target, target_model, d, k + 1);
  const nn::OptimizerState<double> before = target.save_state();
  const auto unchanged = [&] { return same_state(target.save_state(), before); };

  // A state of another optimizer.
  curv::NaturalGradient<double> ng(model, head);
  CHECK_THROWS_WITH(target.load_state(ng.save_state()),
                    Catch::Contains("natural_gradient") && Catch::Contains("kfac"));
  CHECK(unchanged());
  // An EKFAC state for K-FAC.
  nn::Model<double> ekfac_model(net(), 5);
  curv::Kfac<double> ekfac(ekfac_model, head, resume_kfac_options(curv::KfacApproximation::ekfac));
  kfac_step(ekfac, ekfac_model, d, 0);
  CHECK_THROWS_WITH(target.load_state(ekfac.save_state()), Catch::Contains("EKFAC"));
  CHECK(unchanged());
  // A state of a network whose hidden layer is 8 wide, for one whose is 6: G of the first layer
  // does not fit, and the error names that layer.
  auto narrow = std::make_shared<nn::Sequential<double>>();
  narrow->emplace<nn::Linear<double>>(4, 6);
  narrow->emplace<nn::BatchNorm<double>>(6);
  narrow->emplace<nn::Tanh<double>>();
  narrow->emplace<nn::Linear<double>>(6, 3);
  nn::Model<double> narrow_model(narrow, 3);
  curv::Kfac<double> narrow_kfac(narrow_model, head, resume_kfac_options(curv::KfacApproximation::kfac));
  kfac_step(narrow_kfac, narrow_model, d, 0);
  const nn::OptimizerState<double> narrow_before = narrow_kfac.save_state();
  CHECK_THROWS_AS(narrow_kfac.load_state(good), ValueError);
  CHECK_THROWS_WITH(narrow_kfac.load_state(good),
                    Catch::Contains("Linear(4 -> 6)") && Catch::Contains("layer0/G") && Catch::Contains("(8, 8)"));
  CHECK(same_state(narrow_kfac.save_state(), narrow_before));
  // A stored tap that names a parameter which is not a Linear weight here (the batch norm scale).
  nn::OptimizerState<double> bad = good;
  bad.counters["layer1/weight_index"] = 2;
  CHECK_THROWS_WITH(target.load_state(bad), Catch::Contains("stored layer 1") && Catch::Contains("1.weight"));
  CHECK(unchanged());
  // Missing or non-finite entries, negative counters, a momentum buffer without momentum.
  bad = good;
  bad.tensors.erase("layer1/A_inverse");
  CHECK_THROWS_WITH(target.load_state(bad), Catch::Contains("layer1/A_inverse"));
  bad = good;
  bad.tensors["layer0/A"] = good.tensors.at("layer0/A").clone();
  bad.tensors["layer0/A"][4] = std::numeric_limits<double>::quiet_NaN();
  CHECK_THROWS_WITH(target.load_state(bad), Catch::Contains("layer0/A") && Catch::Contains("index 4"));
  bad = good;
  bad.counters["steps"] = -1;
  CHECK_THROWS_WITH(target.load_state(bad), Catch::Contains("steps"));
  bad = good;
  bad.numbers.erase("step_multiplier");
  CHECK_THROWS_WITH(target.load_state(bad), Catch::Contains("step_multiplier"));
  bad = good;
  bad.numbers["layer1/pi"] = 0;
  CHECK_THROWS_WITH(target.load_state(bad), Catch::Contains("pi"));
  CHECK(unchanged());
  curv::KfacOptions plain = resume_kfac_options(curv::KfacApproximation::kfac);
  plain.momentum = 0;
  nn::Model<double> plain_model(net(), 5);
  curv::Kfac<double> no_momentum(plain_model, head, plain);
  CHECK_THROWS_WITH(no_momentum.load_state(good), Catch::Contains("momentum"));
  CHECK(no_momentum.steps() == 0);
  CHECK(no_momentum.factors().updates() == 0);

  // The good state is taken whole, as a copy: changing the caller's tensors afterwards does not
  // reach the optimizer.
  nn::OptimizerState<double> copy = good;
  copy.tensors["layer0/A"] = good.tensors.at("layer0/A").clone();
  target.load_state(copy);
  copy.tensors["layer0/A"][0] += 1;
  CHECK(same_state(target.save_state(), good));
}
