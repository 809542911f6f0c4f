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

std::shared_ptr<const nn::Module<double>> net() {
  auto s = std::make_shared<nn::Sequential<double>>();
  s->emplace<nn::Linear<double>>(4, 8);
  s->emplace<nn::BatchNorm<double>>(8);
  s->emplace<nn::Tanh<double>>();
  s->emplace<nn::Dropout<double>>(0.2);
  s->emplace<nn::Linear<double>>(8, 3);
  return s;
}

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

// make(model) -> optimizer; step(opt, model, data, k) runs step k.
template <class Make, class Step>
void check_resume(Make make, Step step) {
  const Data d;
  amari::test::TempDir dir;
  const std::string path = dir.file("run.safetensors");
  nn::Model<double> straight(net(), 5);
  auto opt_straight = make(straight);
  for (int k = 0; k < 20; ++k) step(*opt_straight, straight, d, k);

  nn::Model<double> first(net(), 5);
  auto opt_first = make(first);
  for (int k = 0; k < 10; ++k) step(*opt_first, first, d, k);
  nn::save_checkpoint(path, first, opt_first->save_state());

  nn::Model<double> resumed(net(), 99);  // another initialization: everything must come from the file
  auto opt_resumed = make(resumed);
  nn::OptimizerState<double> state;
  nn::load_checkpoint(path, resumed, state);
  opt_resumed->load_state(state);
  for (int k = 10; k < 20; ++k) step(*opt_resumed, resumed, d, k);

  CHECK(resumed.step() == straight.step());
  CHECK(amari::test::max_abs_diff(resumed.parameters(), straight.parameters()) == 0.0);
  CHECK(amari::test::max_abs_diff(resumed.state(), straight.state()) == 0.0);
  // The run really moved: a resume that reset the model would be far off.
  CHECK(amari::test::max_abs_diff(straight.parameters(), nn::Model<double>(net(), 5).parameters()) > 1e-3);
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
