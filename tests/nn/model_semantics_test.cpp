// Model's value semantics and the handles it gives out (issue "Hardening"): a copy is deep, and a
// rebound parameters()/state() handle can neither detach the model nor be silently ignored.
#include <amari/amari.hpp>

#include <catch2/catch.hpp>

#include "support/random.hpp"
#include "support/temp_dir.hpp"

namespace {

using namespace amari;

std::shared_ptr<const nn::Module<double>> bn_net() {
  auto net = std::make_shared<nn::Sequential<double>>();
  net->emplace<nn::Linear<double>>(3, 4);
  net->emplace<nn::BatchNorm<double>>(4);
  net->emplace<nn::Linear<double>>(4, 2);
  return net;
}

}  // namespace

TEST_CASE("Model: a copy owns its parameters and state, so a snapshot does not follow training",
          "[model][semantics]") {
  nn::Model<double> model(bn_net(), 1);
  const nn::Model<double> best = model;  // the "best model so far" snapshot
  const Tensor<double> theta = best.parameters().clone(), state = best.state().clone();
  CHECK(!best.parameters().same_storage(model.parameters()));
  for (Index i = 0; i < model.num_parameters(); ++i) model.parameters()[i] += 1.0;
  for (Index i = 0; i < model.state().size(); ++i) model.state()[i] += 1.0;
  CHECK(amari::test::max_abs_diff(best.parameters(), theta) == 0.0);
  CHECK(amari::test::max_abs_diff(best.state(), state) == 0.0);
  // The copy's views point into its own storage: its forward pass uses its own parameters.
  Tensor<double> x(Shape{2, 3});
  x.fill(0.5);
  nn::Model<double> again = best;
  CHECK(amari::test::max_abs_diff(again.forward(x, nn::Mode::eval), best.forward(x, nn::Mode::eval)) == 0.0);
  CHECK(amari::test::max_abs_diff(model.forward(x, nn::Mode::eval), best.forward(x, nn::Mode::eval)) > 0.1);
  // Copy assignment is deep too, and keeps the mode and step.
  model.eval();
  model.set_step(7);
  again = model;
  CHECK(again.mode() == nn::Mode::eval);
  CHECK(again.step() == 7);
  CHECK(amari::test::max_abs_diff(again.parameters(), model.parameters()) == 0.0);
  CHECK(!again.parameters().same_storage(model.parameters()));
}

TEST_CASE("Model: rebinding the parameters handle is reported and does not detach the model",
          "[model][semantics]") {
  nn::Model<double> model(bn_net(), 1);
  const Tensor<double> theta = model.parameters().clone();
  Tensor<double>& handle = model.parameters();
  handle = Tensor<double>(Shape{3});  // a user "sets" the parameters by rebinding: refused
  Tensor<double> x(Shape{2, 3});
  x.fill(0.5);
  CHECK_THROWS_WITH(model.forward(x), Catch::Contains("parameters()") && Catch::Contains("rebound"));
  // The handle is restored and the model still holds its own, unchanged parameters.
  CHECK(model.parameters().shape() == Shape{model.num_parameters()});
  CHECK(amari::test::max_abs_diff(model.parameters(), theta) == 0.0);
  CHECK_NOTHROW(model.forward(x));
  // Saving and loading go through the model's own storage (the old code overflowed the heap here).
  amari::test::TempDir dir;
  const std::string path = dir.file("m.amari");
  nn::save_parameters(model, path);
  Tensor<double>& state_handle = model.state();
  state_handle = Tensor<double>();
  CHECK_THROWS_AS(nn::load_parameters(model, path), ValueError);
  CHECK_NOTHROW(nn::load_parameters(model, path));
  CHECK(amari::test::max_abs_diff(model.parameters(), theta) == 0.0);
}

TEST_CASE("Sequential nested 100000 deep is refused with ValueError and destroyed without recursion",
          "[model][semantics]") {
  // Built bottom-up (each new container wraps the previous one) ...
  std::shared_ptr<nn::Sequential<double>> net = std::make_shared<nn::Sequential<double>>();
  net->emplace<nn::Linear<double>>(2, 2);
  for (int i = 0; i < 100000; ++i) {
    auto outer = std::make_shared<nn::Sequential<double>>();
    outer->add(net);
    net = outer;
  }
  CHECK_THROWS_WITH(nn::Model<double>(net, 1), Catch::Contains("nested more than 1000"));
  CHECK_THROWS_AS(net->describe(), ValueError);
  net.reset();  // the old destructor recursed 100000 frames deep here
  // ... and top-down (each container gets its child after being added to its parent), through
  // Residual blocks as well.
  auto root = std::make_shared<nn::Sequential<double>>();
  nn::Sequential<double>* cur = root.get();
  for (int i = 0; i < 100000; ++i) {
    auto inner = std::make_shared<nn::Sequential<double>>();
    nn::Sequential<double>* next = inner.get();
    if (i % 2 == 0) {
      cur->add(std::make_shared<nn::Residual<double>>(inner));
    } else {
      cur->add(inner);
    }
    cur = next;
  }
  CHECK_THROWS_AS(nn::Model<double>(root, 1), ValueError);
  root.reset();
  // A net within the limit works, and the depth counter is back at zero after the throws above.
  auto ok = std::make_shared<nn::Sequential<double>>();
  ok->emplace<nn::Linear<double>>(2, 2);
  for (int i = 0; i < 500; ++i) {
    auto outer = std::make_shared<nn::Sequential<double>>();
    outer->add(ok);
    ok = outer;
  }
  const nn::Model<double> model(ok, 1);
  Tensor<double> x(Shape{1, 2});
  x.fill(1.0);
  CHECK(model.forward(x).shape() == Shape{1, 2});
}

namespace {

// A layer whose parameter declaration is edited after its checked construction.
class EditedSpecLayer final : public nn::Layer<double, EditedSpecLayer> {
 public:
  std::string describe() const override { return "EditedSpecLayer"; }
  void declare(std::vector<nn::ParamSpec>& out, const std::string& prefix) const override {
    nn::ParamSpec spec(prefix + "weight", Shape{2, 2}, nn::Init::he_normal, 2, 2);
    spec.fan_in = 0;  // he_normal would divide by it
    out.push_back(spec);
  }
  template <Value V>
  V apply(const V& x, nn::ForwardContext<V>& c) const {
    return matmul(x, c.next());
  }
};

}  // namespace

TEST_CASE("Model: a parameter declaration whose initializer would divide by a zero fan is refused",
          "[model][semantics]") {
  CHECK_THROWS_WITH(nn::Model<double>(std::make_shared<EditedSpecLayer>(), 1),
                    Catch::Contains("weight") && Catch::Contains("he_normal"));
}
