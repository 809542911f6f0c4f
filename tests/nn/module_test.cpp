// Tests of modules, layers and models (nn/module.hpp, nn/layers.hpp, nn/model.hpp) and of the
// training helpers (nn/training.hpp): the three forward modes, parameter-space JVP/VJP, the flat
// parameter layout, reproducible initialization, error paths, loss_and_gradient and evaluate.
#include <amari/nn/heads.hpp>
#include <amari/nn/layers.hpp>
#include <amari/nn/model.hpp>
#include <amari/nn/training.hpp>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <functional>
#include <limits>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include <catch2/catch.hpp>

#include "support/random.hpp"
#include "support/matchers.hpp"

namespace {

using amari::test::MessageContains;
using amari::test::rel_err;
using amari::Dual;
using amari::Index;
using amari::Real;
using amari::Shape;
using amari::Tape;
using amari::Tensor;
using amari::Var;
using amari::nn::Act;
using amari::nn::Init;
using amari::nn::Linear;
using amari::nn::Model;
using amari::nn::Sequential;
using amari::test::distance;
using amari::test::dot;
using amari::test::max_abs_diff;
using amari::test::norm;
using amari::test::Rng;

Tensor<double> axpy(const Tensor<double>& x, double h, const Tensor<double>& d) {
  Tensor<double> r = x.clone();
  for (Index k = 0; k < r.size(); ++k) r[k] += h * d[k];
  return r;
}

// Central difference of f along d, Richardson-extrapolated (error O(h^4)).
Tensor<double> fd(const std::function<Tensor<double>(const Tensor<double>&)>& f,
                  const Tensor<double>& x, const Tensor<double>& d, double h = 1e-3) {
  const Tensor<double> a1 = f(axpy(x, h, d)), b1 = f(axpy(x, -h, d));
  const Tensor<double> a2 = f(axpy(x, 2 * h, d)), b2 = f(axpy(x, -2 * h, d));
  Tensor<double> r = Tensor<double>::uninitialized(a1.shape());
  for (Index k = 0; k < r.size(); ++k) r[k] = (8 * (a1[k] - b1[k]) - (a2[k] - b2[k])) / (12 * h);
  return r;
}

// f(x; theta) at other parameters, leaving the model as it was.
template <class F>
auto at_parameters(Model<double>& model, const Tensor<double>& theta, F&& f) {
  const Tensor<double> saved = model.gather();
  model.scatter(theta);
  auto r = f();
  model.scatter(saved);
  return r;
}

const char* act_name(Act a) {
  switch (a) {
    case Act::tanh:
      return "tanh";
    case Act::relu:
      return "relu";
    case Act::sigmoid:
      return "sigmoid";
    case Act::softplus:
      return "softplus";
    case Act::gelu:
      return "gelu";
  }
  return "?";
}

// A layer that declares two parameters but uses only the first: a bug Model::forward must catch.
template <Real T>
class UsesOneOfTwo final : public amari::nn::Layer<T, UsesOneOfTwo<T>> {
 public:
  std::string describe() const override { return "UsesOneOfTwo"; }
  void declare(std::vector<amari::nn::ParamSpec>& out, const std::string& prefix) const override {
    out.push_back({prefix + "a", Shape{3}, Init::zeros, 3, 3});
    out.push_back({prefix + "b", Shape{3}, Init::zeros, 3, 3});
  }
  template <amari::Value V>
  V apply(const V& x, amari::nn::ForwardContext<V>& p) const {
    return x + p.next();
  }
};

}  // namespace

// ---- 1. three modes
// ----------------------------------------------------------------------------------

TEMPLATE_TEST_CASE("module forward: plain, dual and tape modes give bitwise identical outputs",
                   "[nn][module]", float, double) {
  using T = TestType;
  Rng rng(1);
  const Tensor<T> x = amari::test::uniform_tensor<T>(Shape{7, 6}, rng, -2, 2);
  std::vector<std::pair<std::string, std::shared_ptr<const amari::nn::Module<T>>>> nets;
  for (Act act : {Act::tanh, Act::relu, Act::gelu, Act::sigmoid, Act::softplus})
    nets.emplace_back(std::string("mlp {6, 5, 4, 3} ") + act_name(act),
                      amari::nn::mlp<T>({6, 5, 4, 3}, act));
  auto hand = std::make_shared<Sequential<T>>();
  hand->template emplace<Linear<T>>(6, 5, false);
  hand->template emplace<amari::nn::Tanh<T>>();
  hand->template emplace<Linear<T>>(5, 3, false);
  nets.emplace_back("Sequential(Linear no bias, Tanh, Linear no bias)", hand);
  for (const auto& [label, net] : nets) {
    DYNAMIC_SECTION(label) {
      const Model<T> model(net, 3);
      const Tensor<T> plain = model.forward(x);
      REQUIRE(plain.shape() == Shape{7, 3});
      const Tensor<T> v = amari::test::normal_tensor<T>(Shape{model.num_parameters()}, rng);
      const Dual<T> dual = model.forward_jvp(x, v);
      Tape<T> tape;
      const std::vector<Var<T>> params = model.variables(tape);
      const Var<T> var = model.forward(Var<T>(x), std::span<const Var<T>>(params));
      CHECK(max_abs_diff(dual.primal(), plain) == 0.0);
      CHECK(max_abs_diff(var.value(), plain) == 0.0);
      // Explicitly bound plain tensors are the same as forward(x).
      CHECK(max_abs_diff(model.forward(x, std::span<const Tensor<T>>(model.parameter_views())),
                         plain) == 0.0);
      CHECK(norm(plain) > 1e-3);
    }
  }
}

TEST_CASE("Linear computes x W + b with W stored (in, out) row-major then b", "[nn][module]") {
  Model<double> model(std::make_shared<Linear<double>>(2, 3));
  REQUIRE(model.num_parameters() == 9);
  model.scatter(Tensor<double>::from(Shape{9}, {1, 2, 3, 4, 5, 6, 0.1, 0.2, 0.3}));
  const Tensor<double> y = model.forward(Tensor<double>::from(Shape{2, 2}, {1, 1, 2, -1}));
  CHECK(max_abs_diff(y, Tensor<double>::from(Shape{2, 3}, {5.1, 7.2, 9.3, -1.9, -0.8, 0.3})) <
        1e-15);
}

// ---- 2. parameter-space JVP and VJP
// --------------------------------------------------------------------

TEST_CASE(
    "Model::forward_jvp equals finite differences of forward and the tape JVP, the tape VJP is its "
    "adjoint",
    "[nn][module]") {
  for (Act act : {Act::tanh, Act::softplus, Act::gelu}) {
    DYNAMIC_SECTION(act_name(act)) {
      Rng rng(2 + static_cast<std::uint64_t>(act));
      Model<double> model(amari::nn::mlp<double>({6, 5, 4, 3}, act), 17);
      const Tensor<double> x = amari::test::uniform_tensor<double>(Shape{7, 6}, rng, -2, 2);
      const Tensor<double> v =
          amari::test::normal_tensor<double>(Shape{model.num_parameters()}, rng);
      const Tensor<double> theta = model.gather();
      const Dual<double> d = model.forward_jvp(x, v);
      REQUIRE(d.has_tangent());
      const Tensor<double>& jv = d.tangent();
      const Tensor<double> ref = fd(
          [&](const Tensor<double>& th) {
            return at_parameters(model, th, [&] { return model.forward(x); });
          },
          theta, v);
      INFO("forward_jvp vs FD, relative error " << rel_err(jv, ref));
      CHECK(rel_err(jv, ref) < 1e-8);
      CHECK(max_abs_diff(model.parameters(), theta) == 0.0);  // FD left the model as it was

      Tape<double> tape;
      const std::vector<Var<double>> params = model.variables(tape);
      const Var<double> z = model.forward(Var<double>(x), std::span<const Var<double>>(params));
      const std::vector<Tensor<double>> tangents = model.split(v);
      const Tensor<double> tape_jv =
          tape.jvp(params, tangents, std::span<const Var<double>>(&z, 1))[0];
      INFO("forward_jvp vs Tape::jvp, relative error " << rel_err(jv, tape_jv));
      CHECK(rel_err(jv, tape_jv) < 1e-13);

      const Tensor<double> u = amari::test::normal_tensor<double>(z.shape(), rng);
      const std::vector<Tensor<double>> ju = tape.vjp(
          std::span<const Var<double>>(&z, 1), std::span<const Tensor<double>>(&u, 1), params);
      REQUIRE(ju.size() == tangents.size());
      double lhs = 0;
      for (std::size_t i = 0; i < ju.size(); ++i) lhs += dot(ju[i], tangents[i]);
      const double rhs = dot(u, jv);
      INFO("<J^T u, v> = " << lhs << ", <u, J v> = " << rhs);
      CHECK(std::fabs(lhs - rhs) <= 1e-12 * std::max(1.0, std::fabs(rhs)));
    }
  }
}

// ---- 3. flat parameter layout
// -----------------------------------------------------------------------------

TEST_CASE(
    "flat parameters: layout is contiguous in declaration order with names 0.weight, 0.bias, "
    "2.weight, ...",
    "[nn][module][layout]") {
  const Model<double> model(amari::nn::mlp<double>({6, 5, 4, 3}, Act::tanh), 1);
  struct Expected {
    const char* name;
    Shape shape;
    Init init;
    Index fan_in, fan_out;
  };
  const std::vector<Expected> expected = {{"0.weight", Shape{6, 5}, Init::xavier_uniform, 6, 5},
                                          {"0.bias", Shape{5}, Init::zeros, 6, 5},
                                          {"2.weight", Shape{5, 4}, Init::xavier_uniform, 5, 4},
                                          {"2.bias", Shape{4}, Init::zeros, 5, 4},
                                          {"4.weight", Shape{4, 3}, Init::xavier_uniform, 4, 3},
                                          {"4.bias", Shape{3}, Init::zeros, 4, 3}};
  const auto& layout = model.layout();
  REQUIRE(layout.size() == expected.size());
  Index offset = 0;
  for (std::size_t i = 0; i < layout.size(); ++i) {
    INFO("parameter " << i);
    CHECK(layout[i].name == expected[i].name);
    CHECK(layout[i].shape == expected[i].shape);
    CHECK(layout[i].offset == offset);
    CHECK(layout[i].init == expected[i].init);
    CHECK(layout[i].fan_in == expected[i].fan_in);
    CHECK(layout[i].fan_out == expected[i].fan_out);
    offset += expected[i].shape.numel();
  }
  CHECK(model.num_parameters() == 30 + 5 + 20 + 4 + 12 + 3);
  CHECK(model.num_parameters() == offset);
  CHECK(model.parameters().shape() == Shape{offset});
  const std::string summary = model.summary();
  CHECK_THAT(summary, Catch::Contains("0.weight (6, 5) at 0") &&
                          Catch::Contains("4.bias (3) at 71") &&
                          Catch::Contains("total 74 parameters"));

  // A hand-built Sequential with bias-free layers, and a nested one.
  auto inner = std::make_shared<Sequential<double>>();
  inner->emplace<Linear<double>>(3, 2, false);
  auto outer = std::make_shared<Sequential<double>>();
  outer->emplace<Linear<double>>(4, 3, false).emplace<amari::nn::ReLU<double>>().add(inner);
  const Model<double> nested(outer);
  REQUIRE(nested.layout().size() == 2);
  CHECK(nested.layout()[0].name == "0.weight");
  CHECK(nested.layout()[1].name == "2.0.weight");
  CHECK(nested.layout()[1].offset == 12);
  CHECK(nested.num_parameters() == 18);
  CHECK(outer->describe() ==
        "Sequential(Linear(4 -> 3, no bias), ReLU, Sequential(Linear(3 -> 2, no bias)))");
}

TEST_CASE(
    "flat parameters: views alias the flat vector, gather/scatter round-trip, split returns views",
    "[nn][module][layout]") {
  Model<double> model(amari::nn::mlp<double>({6, 5, 4, 3}, Act::tanh), 1);
  const Index p = model.num_parameters();
  const auto& views = model.parameter_views();
  REQUIRE(views.size() == model.layout().size());
  for (std::size_t i = 0; i < views.size(); ++i) {
    CHECK(views[i].data() == model.parameters().data() + model.layout()[i].offset);
    CHECK(views[i].shape() == model.layout()[i].shape);
  }
  // Writing through a view changes the flat vector, and the flat vector changes the model.
  Tensor<double> view = views[2];  // a handle copy shares the storage
  view[0] = 123.0;
  CHECK(model.parameters()[35] == 123.0);
  const Tensor<double> x = Tensor<double>::full(Shape{2, 6}, 0.5);
  const Tensor<double> before = model.forward(x);
  model.parameters()[71] += 1.0;  // first element of 4.bias: output column 0 moves by exactly 1
  const Tensor<double> after = model.forward(x);
  CHECK(after.at(0, 0) - before.at(0, 0) == Approx(1.0).epsilon(1e-12));
  CHECK(after.at(1, 1) == before.at(1, 1));

  // gather is a copy; scatter restores it.
  const Tensor<double> saved = model.gather();
  CHECK(!saved.same_storage(model.parameters()));
  CHECK(max_abs_diff(saved, model.parameters()) == 0.0);
  model.parameters().fill(0.0);
  CHECK(saved[35] == 123.0);
  model.scatter(saved);
  CHECK(max_abs_diff(model.parameters(), saved) == 0.0);
  CHECK(!model.parameters().same_storage(saved));
  CHECK(max_abs_diff(model.forward(x), after) == 0.0);

  // split: views into the argument, no copy.
  Tensor<double> g(Shape{p});
  const std::vector<Tensor<double>> parts = model.split(g);
  REQUIRE(parts.size() == views.size());
  for (std::size_t i = 0; i < parts.size(); ++i) {
    CHECK(parts[i].data() == g.data() + model.layout()[i].offset);
    CHECK(parts[i].shape() == model.layout()[i].shape);
  }
  Tensor<double> part = parts[3];
  part[1] = -7.0;
  CHECK(g[55 + 1] == -7.0);

  CHECK_THROWS_MATCHES(model.split(Tensor<double>(Shape{p + 1})), amari::ShapeError,
                       MessageContains({"split", "(74)", "(75)"}));
  CHECK_THROWS_AS(model.split(Tensor<double>(Shape{p - 1})), amari::ShapeError);
  CHECK_THROWS_AS(model.split(Tensor<double>(Shape{2, p / 2})), amari::ShapeError);
  CHECK_THROWS_MATCHES(model.scatter(Tensor<double>(Shape{p - 1})), amari::ShapeError,
                       MessageContains({"scatter", "(74)", "(73)"}));
  CHECK_THROWS_AS(model.scatter(Tensor<double>(Shape{p, 1})), amari::ShapeError);
  CHECK_THROWS_AS(model.forward_jvp(x, Tensor<double>(Shape{p + 1})), amari::ShapeError);
  CHECK(max_abs_diff(model.parameters(), saved) == 0.0);  // failed calls changed nothing
  CHECK(model.zeros_like_parameters().shape() == Shape{p});
  CHECK(norm(model.zeros_like_parameters()) == 0.0);
}

// ---- 4. initialization
// -------------------------------------------------------------------------------------

TEST_CASE(
    "initialization: same seed bitwise identical, other seed different, initialize(seed) "
    "reproduces it",
    "[nn][module][init]") {
  const auto net = amari::nn::mlp<double>({6, 5, 4, 3}, Act::tanh);
  Model<double> a(net, 42), b(net, 42), c(net, 43);
  CHECK(max_abs_diff(a.parameters(), b.parameters()) == 0.0);
  // Every weight differs under another seed; biases are zero under both.
  for (std::size_t i = 0; i < a.layout().size(); ++i) {
    const Tensor<double>& va = a.parameter_views()[i];
    const Tensor<double>& vc = c.parameter_views()[i];
    INFO(a.layout()[i].name);
    if (a.layout()[i].init == Init::zeros) {
      CHECK(norm(va) == 0.0);
      CHECK(norm(vc) == 0.0);
    } else {
      for (Index k = 0; k < va.size(); ++k) CHECK(va[k] != vc[k]);
    }
  }
  c.parameters().fill(5.0);
  c.initialize(42);
  CHECK(max_abs_diff(c.parameters(), a.parameters()) == 0.0);  // biases reset to zero too
  // The same numbers in float, rounded: the streams do not depend on the element type.
  const Model<float> f(amari::nn::mlp<float>({6, 5, 4, 3}, Act::tanh), 42);
  for (Index k = 0; k < a.num_parameters(); ++k)
    CHECK(f.parameters()[k] == static_cast<float>(a.parameters()[k]));
}

TEST_CASE(
    "initialization: a parameter's values depend only on (seed, its index), not on the layers "
    "before it",
    "[nn][module][init]") {
  auto make = [](Index in) {
    auto s = std::make_shared<Sequential<double>>();
    s->emplace<Linear<double>>(in, 5).emplace<amari::nn::Tanh<double>>().emplace<Linear<double>>(5,
                                                                                                 4);
    return s;
  };
  const Model<double> a(make(6), 9), b(make(9), 9);
  REQUIRE(a.layout()[2].name == "2.weight");
  REQUIRE(b.layout()[2].name == "2.weight");
  CHECK(a.layout()[2].offset != b.layout()[2].offset);
  CHECK(max_abs_diff(a.parameter_views()[2], b.parameter_views()[2]) == 0.0);
  CHECK(norm(a.parameter_views()[2]) > 0.1);
  // Two parameters of the same shape and fans at different indices draw from different streams.
  auto same = std::make_shared<Sequential<double>>();
  same->emplace<Linear<double>>(5, 5).emplace<amari::nn::Tanh<double>>().emplace<Linear<double>>(5,
                                                                                                 5);
  const Model<double> m(same, 9);
  CHECK(max_abs_diff(m.parameter_views()[0], m.parameter_views()[2]) > 0.0);
}

TEST_CASE(
    "initialization: Xavier uniform stays within sqrt(6 / (fan_in + fan_out)) with variance a^2 / "
    "3, "
    "biases zero",
    "[nn][module][init]") {
  const Model<double> model(std::make_shared<Linear<double>>(200, 100, true, Init::xavier_uniform),
                            5);
  const Tensor<double>& w = model.parameter_views()[0];
  const double a = std::sqrt(6.0 / 300.0);
  const double n = static_cast<double>(w.size());
  double max_abs = 0, s1 = 0, s2 = 0;
  for (double v : w) {
    max_abs = std::max(max_abs, std::fabs(v));
    s1 += v;
    s2 += v * v;
  }
  CHECK(max_abs <= a);
  CHECK(max_abs > 0.999 * a);  // the bound is the one used, not a smaller one
  // Mean 0 (sd a / sqrt(3 n)) and E[w^2] = a^2 / 3 (sd a^2 sqrt(4 / 45 / n)), 5 standard errors.
  CHECK(std::fabs(s1 / n) < 5 * a / std::sqrt(3 * n));
  CHECK(std::fabs(s2 / n - a * a / 3) < 5 * a * a * std::sqrt(4.0 / 45.0 / n));
  CHECK(norm(model.parameter_views()[1]) == 0.0);
  CHECK(model.parameter_views()[1].size() == 100);
}

TEST_CASE(
    "initialization: He normal has mean 0 and standard deviation sqrt(2 / fan_in) on a 512 x 512 "
    "layer",
    "[nn][module][init]") {
  const Model<double> model(std::make_shared<Linear<double>>(512, 512, true, Init::he_normal), 6);
  const Tensor<double>& w = model.parameter_views()[0];
  const double sd = std::sqrt(2.0 / 512.0);
  const double n = static_cast<double>(w.size());
  double s1 = 0, s2 = 0, within = 0;
  for (double v : w) {
    s1 += v;
    s2 += v * v;
    within += std::fabs(v) < sd;
  }
  const double mean = s1 / n, std_dev = std::sqrt(s2 / n - mean * mean);
  CHECK(std::fabs(mean) < 5 * sd / std::sqrt(n));
  CHECK(std::fabs(std_dev - sd) < 5 * sd / std::sqrt(2 * n));
  // Normal, not merely of the right variance: P(|w| < sd) = 0.6827.
  CHECK(std::fabs(within / n - 0.682689) < 5 * std::sqrt(0.682689 * 0.317311 / n));
  CHECK(norm(model.parameter_views()[1]) == 0.0);
  // mlp() picks He for relu/gelu and Xavier for the others.
  CHECK(Model<double>(amari::nn::mlp<double>({3, 2}, Act::relu)).layout()[0].init ==
        Init::he_normal);
  CHECK(Model<double>(amari::nn::mlp<double>({3, 2}, Act::gelu)).layout()[0].init ==
        Init::he_normal);
  CHECK(Model<double>(amari::nn::mlp<double>({3, 2}, Act::sigmoid)).layout()[0].init ==
        Init::xavier_uniform);
}

// ---- 5. errors
// ---------------------------------------------------------------------------------------------------

TEST_CASE(
    "Linear with a wrong input width raises ShapeError naming Linear(in -> out) and the input "
    "shape",
    "[nn][module][errors]") {
  const Model<double> model(amari::nn::mlp<double>({6, 5, 3}, Act::tanh), 1);
  const Tensor<double> x(Shape{3, 7});
  const MessageContains names({"Linear(6 -> 5)", "(3, 7)"});
  CHECK_THROWS_MATCHES(model.forward(x), amari::ShapeError, names);
  CHECK_THROWS_MATCHES(model.forward_jvp(x, model.zeros_like_parameters()), amari::ShapeError,
                       names);
  Tape<double> tape;
  const auto params = model.variables(tape);
  CHECK_THROWS_MATCHES(model.forward(Var<double>(x), std::span<const Var<double>>(params)),
                       amari::ShapeError, names);
  CHECK_THROWS_MATCHES(model.forward(Tensor<double>(Shape{6})), amari::ShapeError,
                       MessageContains({"Linear(6 -> 5)", "(6)"}));
  const Model<double> nobias(std::make_shared<Linear<double>>(4, 2, false));
  CHECK_THROWS_MATCHES(nobias.forward(Tensor<double>(Shape{1, 3})), amari::ShapeError,
                       MessageContains({"Linear(4 -> 2, no bias)", "(1, 3)"}));
}

TEST_CASE(
    "Model::forward with the wrong number of bound parameters raises ValueError, so do bad "
    "constructions",
    "[nn][module][errors]") {
  const Model<double> model(amari::nn::mlp<double>({6, 5, 3}, Act::tanh), 1);
  const Tensor<double> x(Shape{2, 6});
  std::vector<Tensor<double>> params = model.parameter_views();
  params.pop_back();
  CHECK_THROWS_MATCHES(model.forward(x, std::span<const Tensor<double>>(params)), amari::ValueError,
                       MessageContains({"Model::forward", "3", "4"}));
  params = model.parameter_views();
  params.push_back(params.back());
  CHECK_THROWS_MATCHES(model.forward(x, std::span<const Tensor<double>>(params)), amari::ValueError,
                       MessageContains({"Model::forward", "5", "4"}));
  CHECK_THROWS_AS(model.forward(Dual<double>(x), std::span<const Dual<double>>()),
                  amari::ValueError);

  // A module that declares two parameters and uses one.
  const Model<double> bad(std::make_shared<UsesOneOfTwo<double>>());
  CHECK_THROWS_MATCHES(bad.forward(Tensor<double>(Shape{2, 3})), amari::ValueError,
                       MessageContains({"used 1 of 2"}));
  // A module asking for more parameters than its cursor holds.
  amari::nn::ForwardContext<Tensor<double>> empty{std::span<const Tensor<double>>()};
  CHECK_THROWS_AS(Linear<double>(6, 5).forward(x, empty), amari::ValueError);

  CHECK_THROWS_AS(Linear<double>(0, 3), amari::ValueError);
  CHECK_THROWS_AS(Linear<double>(3, -1), amari::ValueError);
  CHECK_THROWS_AS(Sequential<double>().add(nullptr), amari::ValueError);
  CHECK_THROWS_AS(amari::nn::mlp<double>({4}), amari::ValueError);
  CHECK_THROWS_AS(Model<double>(nullptr), amari::ValueError);
}

// ---- 6. loss_and_gradient
// ---------------------------------------------------------------------------------------

TEST_CASE(
    "loss_and_gradient: the gradient matches finite differences of the loss for every head, "
    "written in place",
    "[nn][training]") {
  Rng rng(7);
  Model<double> model(amari::nn::mlp<double>({4, 6, 3}, Act::tanh), 5);
  const Index p = model.num_parameters();
  const Tensor<double> x = amari::test::uniform_tensor<double>(Shape{8, 4}, rng, -2, 2);
  const amari::nn::SoftmaxCrossEntropy<double> softmax;
  const amari::nn::SigmoidBernoulli<double> bernoulli;
  const amari::nn::Gaussian<double> gaussian(0.7);
  Tensor<double> bits(Shape{8, 3});
  for (double& v : bits) v = rng.uniform() < 0.5 ? 0 : 1;
  const std::vector<std::pair<const amari::nn::Head<double>*, Tensor<double>>> cases = {
      {&softmax, amari::nn::one_hot<double>({0, 2, 1, 1, 0, 2, 2, 0}, 3)},
      {&bernoulli, bits},
      {&gaussian, amari::test::normal_tensor<double>(Shape{8, 3}, rng)}};
  for (const auto& head_and_targets : cases) {
    // Plain references, not a structured binding: lambdas below capture them (clang 14 cannot
    // capture structured bindings).
    const amari::nn::Head<double>* head = head_and_targets.first;
    const Tensor<double>& y = head_and_targets.second;
    DYNAMIC_SECTION(head->name()) {
      const Tensor<double> theta = model.gather();
      Tensor<double> grad =
          Tensor<double>::full(Shape{p}, std::numeric_limits<double>::quiet_NaN());
      const Tensor<double> alias = grad;  // shares the storage
      const double* storage = grad.data();
      const double loss = amari::nn::loss_and_gradient(model, *head, x, y, grad);
      CHECK(grad.data() == storage);
      CHECK(alias.same_storage(grad));
      CHECK(std::all_of(alias.begin(), alias.end(), [](double v) { return std::isfinite(v); }));
      CHECK(loss == head->loss(model.forward(x), y).item());
      CHECK(max_abs_diff(model.parameters(), theta) == 0.0);
      CHECK(norm(grad) > 1e-3);
      for (int dir = 0; dir < 3; ++dir) {
        const Tensor<double> v = amari::test::normal_tensor<double>(Shape{p}, rng);
        const double fd_dir =
            fd(
                [&](const Tensor<double>& th) {
                  return at_parameters(model, th, [&] { return head->loss(model.forward(x), y); });
                },
                theta, v)
                .item();
        const double g_dir = dot(grad, v);
        INFO("direction " << dir << ": <grad, v> = " << g_dir << ", FD = " << fd_dir);
        CHECK(std::fabs(g_dir - fd_dir) <= 1e-8 * norm(grad) * norm(v));
        // The forward-mode oracle: the loss tangent along v.
        const double jvp = head->loss(model.forward_jvp(x, v), y).tangent().item();
        CHECK(std::fabs(g_dir - jvp) <= 1e-12 * norm(grad) * norm(v));
      }
      // Repeated calls give the same result; a wrong-length buffer is refused.
      Tensor<double> g1(Shape{p}), g2(Shape{p});
      amari::nn::loss_and_gradient(model, *head, x, y, g1);
      amari::nn::loss_and_gradient(model, *head, x, y, g2);
      CHECK(max_abs_diff(g1, grad) == 0.0);
      CHECK(max_abs_diff(g2, grad) == 0.0);
      Tensor<double> wrong(Shape{p - 1});
      CHECK_THROWS_AS(amari::nn::loss_and_gradient(model, *head, x, y, wrong), amari::ShapeError);
    }
  }
}

// ---- 7. evaluate
// --------------------------------------------------------------------------------------------------

TEST_CASE("evaluate: accuracy and mean loss on a hand-made set, for any batch size",
          "[nn][training]") {
  // Identity weights: the logits are the inputs.
  Model<double> model(std::make_shared<Linear<double>>(2, 2, false));
  model.scatter(Tensor<double>::from(Shape{4}, {1, 0, 0, 1}));
  const Tensor<double> inputs =
      Tensor<double>::from(Shape{5, 2}, {2, 1, 0, 3, 1, -1, 4, 5, -1, -2});
  // Predictions 0, 1, 0, 1, 0; labels hit rows 0, 1 and 4.
  const std::vector<int> labels = {0, 1, 1, 0, 0};
  const amari::nn::SoftmaxCrossEntropy<double> head;
  const double whole = head.loss(inputs, amari::nn::one_hot<double>(labels, 2)).item();
  // Independently: mean of log(1 + e^(other - own)).
  double by_hand = 0;
  for (Index i = 0; i < 5; ++i) {
    const double own = inputs.at(i, labels[static_cast<std::size_t>(i)]);
    const double other = inputs.at(i, 1 - labels[static_cast<std::size_t>(i)]);
    by_hand += std::log1p(std::exp(other - own)) / 5;
  }
  CHECK(whole == Approx(by_hand).epsilon(1e-14));
  for (Index batch : {1000, 5, 2, 1, 3}) {
    INFO("batch size " << batch);
    const amari::nn::Evaluation e = amari::nn::evaluate(model, head, inputs, labels, 2, batch);
    CHECK(e.accuracy == Approx(0.6).epsilon(1e-15));
    CHECK(e.loss == Approx(whole).epsilon(1e-14));
  }
  CHECK_THROWS_AS(amari::nn::evaluate(model, head, inputs, {0, 1}, 2), amari::ShapeError);
  CHECK_THROWS_AS(amari::nn::evaluate(model, head, inputs, labels, 2, 0), amari::ValueError);
  CHECK_THROWS_AS(amari::nn::evaluate(model, head, inputs, {0, 1, 2, 0, 0}, 2), amari::ValueError);
}

TEST_CASE("evaluate: batched results equal one pass over the whole set for a random MLP",
          "[nn][training]") {
  Rng rng(8);
  const Model<double> model(amari::nn::mlp<double>({5, 8, 4}, Act::relu), 3);
  const Tensor<double> inputs = amari::test::normal_tensor<double>(Shape{23, 5}, rng);
  std::vector<int> labels;
  for (int i = 0; i < 23; ++i) labels.push_back(static_cast<int>(rng.below(4)));
  const amari::nn::SoftmaxCrossEntropy<double> head;
  const Tensor<double> z = model.forward(inputs);
  const double whole_loss = head.loss(z, amari::nn::one_hot<double>(labels, 4)).item();
  const double whole_acc = amari::nn::accuracy(z, labels);
  const amari::nn::Evaluation e = amari::nn::evaluate(model, head, inputs, labels, 4, 7);
  CHECK(e.loss == Approx(whole_loss).epsilon(1e-13));
  CHECK(e.accuracy == Approx(whole_acc).epsilon(1e-14));
}
