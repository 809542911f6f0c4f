// Tests of the optimizers: each update rule against the formula computed by hand, convergence on a
// small classification problem, and the error paths (bad options, bad gradients, wrong sizes),
// after which nothing may have changed.
#include <amari/nn/optim.hpp>

#include <cmath>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include <catch2/catch.hpp>

#include <amari/nn/heads.hpp>
#include <amari/nn/layers.hpp>
#include <amari/nn/model.hpp>
#include <amari/nn/training.hpp>
#include "support/random.hpp"

namespace {

using amari::Index;
using amari::Shape;
using amari::Tensor;
using amari::nn::Adam;
using amari::nn::AdamOptions;
using amari::nn::Sgd;
using amari::nn::SgdOptions;
using Catch::Matchers::Contains;

// Sizes that exercise a full SIMD body with a tail (37), only a tail (3) and a single element.
const Index kSizes[] = {37, 3, 1};

template <class E, class F>
std::string error_message(F&& f) {
  try {
    f();
  } catch (const E& e) {
    return e.what();
  } catch (const std::exception& e) {
    FAIL("expected a different exception type, got: " << e.what());
  }
  FAIL("expected an exception, none was thrown");
  return {};
}

template <amari::Real T>
bool bitwise_equal(const Tensor<T>& a, const Tensor<T>& b) {
  return a.size() == b.size() &&
         std::memcmp(a.data(), b.data(), static_cast<std::size_t>(a.size()) * sizeof(T)) == 0;
}

// |actual_i - expected_i| <= tol (1 + |expected_i|) for every i.
template <amari::Real T>
void check_close(const Tensor<T>& actual, const std::vector<double>& expected, double tol) {
  REQUIRE(static_cast<std::size_t>(actual.size()) == expected.size());
  for (Index i = 0; i < actual.size(); ++i) {
    const double e = expected[static_cast<std::size_t>(i)];
    INFO("element " << i << ": " << actual[i] << " vs expected " << e);
    CHECK(std::fabs(static_cast<double>(actual[i]) - e) <= tol * (1 + std::fabs(e)));
  }
}

template <amari::Real T>
std::vector<double> to_double(const Tensor<T>& t) {
  return std::vector<double>(t.begin(), t.end());
}

// torch.optim.SGD (dampening 0), written directly from the formula, in double.
struct SgdReference {
  SgdOptions o;
  std::vector<double> v;
  void step(std::vector<double>& p, const std::vector<double>& grad) {
    if (v.empty() && o.momentum != 0) v.assign(p.size(), 0.0);
    for (std::size_t i = 0; i < p.size(); ++i) {
      double g = grad[i] + o.weight_decay * p[i];
      if (o.momentum != 0) {
        v[i] = o.momentum * v[i] + g;
        g = o.nesterov ? g + o.momentum * v[i] : v[i];
      }
      p[i] -= o.learning_rate * g;
    }
  }
};

// Kingma & Ba 2015, Algorithm 1, with bias-corrected moments spelled out; AdamW as in Loshchilov
// & Hutter 2019 (decay scaled by the learning rate, applied before the step).
struct AdamReference {
  AdamOptions o;
  std::vector<double> m, v;
  int t = 0;
  void step(std::vector<double>& p, const std::vector<double>& grad) {
    if (m.empty()) m.assign(p.size(), 0.0), v.assign(p.size(), 0.0);
    ++t;
    for (std::size_t i = 0; i < p.size(); ++i) {
      double g = grad[i];
      if (o.decoupled_weight_decay) {
        p[i] -= o.learning_rate * o.weight_decay * p[i];
      } else {
        g += o.weight_decay * p[i];
      }
      m[i] = o.beta1 * m[i] + (1 - o.beta1) * g;
      v[i] = o.beta2 * v[i] + (1 - o.beta2) * g * g;
      const double m_hat = m[i] / (1 - std::pow(o.beta1, t));
      const double v_hat = v[i] / (1 - std::pow(o.beta2, t));
      p[i] -= o.learning_rate * m_hat / (std::sqrt(v_hat) + o.epsilon);
    }
  }
};

// Runs `steps` steps of optimizer and reference from the same start on different random
// gradients, and compares after each step.
template <amari::Real T, class Opt, class Ref>
void compare_with_reference(Opt& opt, Ref& ref, Index n, int steps, double tol) {
  amari::test::Rng rng(static_cast<std::uint64_t>(n) + 11);
  Tensor<T> p = amari::test::normal_tensor<T>(Shape{n}, rng);
  std::vector<double> p_ref = to_double(p);
  for (int s = 0; s < steps; ++s) {
    INFO("step " << s + 1 << ", size " << n);
    const Tensor<T> g = amari::test::normal_tensor<T>(Shape{n}, rng, 0.5);
    opt.step(p, g);
    ref.step(p_ref, to_double(g));
    check_close(p, p_ref, tol);
  }
}

const SgdOptions kSgdVariants[] = {
    {.learning_rate = 0.1},
    {.learning_rate = 0.1, .weight_decay = 0.05},
    {.learning_rate = 0.05, .momentum = 0.9},
    {.learning_rate = 0.05, .momentum = 0.9, .nesterov = true},
    {.learning_rate = 0.05, .momentum = 0.5, .weight_decay = 0.1},
    {.learning_rate = 0.05, .momentum = 0.9, .nesterov = true, .weight_decay = 0.01},
};

const AdamOptions kAdamVariants[] = {
    {},
    {.learning_rate = 0.01, .beta1 = 0.8, .beta2 = 0.99, .epsilon = 1e-6},
    {.learning_rate = 0.01, .weight_decay = 0.1},
    {.learning_rate = 0.01, .weight_decay = 0.1, .decoupled_weight_decay = true},
    {.learning_rate = 0.01, .beta1 = 0},
};

}  // namespace

TEST_CASE("Sgd: a plain step is p - lr g", "[optim]") {
  Sgd<double> sgd({.learning_rate = 0.25});
  Tensor<double> p = Tensor<double>::from(Shape{3}, {1.0, -2.0, 0.5});
  const Tensor<double> g = Tensor<double>::from(Shape{3}, {0.5, 4.0, -1.0});
  sgd.step(p, g);
  CHECK(p.to_vector() == std::vector<double>{0.875, -3.0, 0.75});  // exact in binary
  CHECK(sgd.steps() == 1);
  CHECK_FALSE(sgd.velocity().defined());
}

TEST_CASE("Sgd: the first momentum step equals a plain step (v starts as g)", "[optim]") {
  Sgd<double> plain({.learning_rate = 0.25});
  Sgd<double> heavy({.learning_rate = 0.25, .momentum = 0.9});
  Tensor<double> p1 = Tensor<double>::from(Shape{3}, {1.0, -2.0, 0.5});
  Tensor<double> p2 = p1.clone();
  const Tensor<double> g = Tensor<double>::from(Shape{3}, {0.5, 4.0, -1.0});
  plain.step(p1, g);
  heavy.step(p2, g);
  CHECK(bitwise_equal(p1, p2));
  CHECK(bitwise_equal(heavy.velocity(), g));
}

TEMPLATE_TEST_CASE(
    "Sgd: every variant follows v = mu v + g + wd p, p -= lr (nesterov ? g + mu v : v)", "[optim]",
    float, double) {
  const double tol = std::is_same_v<TestType, float> ? 2e-6 : 1e-14;
  for (const SgdOptions& o : kSgdVariants) {
    for (Index n : kSizes) {
      Sgd<TestType> sgd(o);
      SgdReference ref{o, {}};
      INFO(sgd.describe());
      compare_with_reference<TestType>(sgd, ref, n, 5, tol);
    }
  }
}

TEMPLATE_TEST_CASE("Adam: the first step moves each parameter by lr sign(g), up to epsilon",
                   "[optim]", float, double) {
  const double lr = 0.01;
  Adam<TestType> adam({.learning_rate = lr});
  const Tensor<TestType> g = Tensor<TestType>::from(
      Shape{5}, {TestType(0.3), TestType(-2), TestType(1e-3), TestType(0), TestType(7)});
  Tensor<TestType> p = Tensor<TestType>::from(Shape{5}, {1, 2, 3, 4, 5});
  const Tensor<TestType> p0 = p.clone();
  adam.step(p, g);
  // m_hat = g and v_hat = g^2 after one step, so the move is lr g / (|g| + eps).
  for (Index i = 0; i < 5; ++i) {
    const double sign = g[i] > 0 ? 1 : (g[i] < 0 ? -1 : 0);
    CHECK(static_cast<double>(p0[i] - p[i]) == Approx(lr * sign).margin(1e-6));
  }
  CHECK(p[3] == p0[3]);  // a zero gradient does not move the parameter
  CHECK(adam.steps() == 1);
}

TEMPLATE_TEST_CASE("Adam: every variant matches Kingma & Ba's Algorithm 1 step by step", "[optim]",
                   float, double) {
  const double tol = std::is_same_v<TestType, float> ? 1e-5 : 1e-12;
  for (const AdamOptions& o : kAdamVariants) {
    for (Index n : kSizes) {
      Adam<TestType> adam(o);
      AdamReference ref{o, {}, {}, 0};
      INFO(adam.describe());
      compare_with_reference<TestType>(adam, ref, n, 6, tol);
    }
  }
}

TEST_CASE("optimizers: per-parameter optimizers on Model::split views equal one on the flat vector",
          "[optim]") {
  amari::nn::Model<double> a(amari::nn::mlp<double>({3, 5, 2}), 4);
  amari::nn::Model<double> b(amari::nn::mlp<double>({3, 5, 2}), 4);
  amari::test::Rng rng(5);
  Adam<double> flat;
  std::vector<Adam<double>> each(b.layout().size());
  std::vector<Tensor<double>> views = b.split(b.parameters());
  for (int s = 0; s < 3; ++s) {
    const Tensor<double> g = amari::test::normal_tensor<double>(Shape{a.num_parameters()}, rng);
    flat.step(a.parameters(), g);
    const std::vector<Tensor<double>> grads = b.split(g);
    for (std::size_t i = 0; i < each.size(); ++i) each[i].step(views[i], grads[i]);
  }
  // Adam is element-wise and the SIMD tail runs the same instructions, so splitting changes no bit.
  CHECK(bitwise_equal(b.parameters(), a.parameters()));
}

TEST_CASE("optimizers: 200 steps of SGD-momentum or Adam halve an MLP's cross-entropy", "[optim]") {
  amari::test::Rng rng(2024);
  const Index n = 64;
  const Tensor<double> x = amari::test::normal_tensor<double>(Shape{n, 4}, rng);
  // Labels from a fixed random linear rule, so the problem is learnable.
  const Tensor<double> w = amari::test::normal_tensor<double>(Shape{4, 3}, rng);
  std::vector<int> labels(static_cast<std::size_t>(n));
  for (Index i = 0; i < n; ++i) {
    double best = -1e300;
    for (int c = 0; c < 3; ++c) {
      double s = 0;
      for (Index k = 0; k < 4; ++k) s += x.at(i, k) * w.at(k, c);
      if (s > best) best = s, labels[static_cast<std::size_t>(i)] = c;
    }
  }
  const Tensor<double> y = amari::nn::one_hot<double>(labels, 3);
  const amari::nn::SoftmaxCrossEntropy<double> head;

  Sgd<double> sgd({.learning_rate = 0.1, .momentum = 0.9});
  Adam<double> adam({.learning_rate = 0.01});
  for (amari::nn::Optimizer<double>* opt : {static_cast<amari::nn::Optimizer<double>*>(&sgd),
                                            static_cast<amari::nn::Optimizer<double>*>(&adam)}) {
    INFO(opt->describe());
    amari::nn::Model<double> model(amari::nn::mlp<double>({4, 8, 3}), 1);
    Tensor<double> grad = model.zeros_like_parameters();
    const double start = amari::nn::loss_and_gradient(model, head, x, y, grad);
    double loss = start;
    for (int s = 0; s < 200; ++s) {
      loss = amari::nn::loss_and_gradient(model, head, x, y, grad);
      opt->step(model.parameters(), grad);
    }
    loss = amari::nn::loss_and_gradient(model, head, x, y, grad);
    INFO("loss " << start << " -> " << loss);
    CHECK(loss < 0.5 * start);
  }
}

TEMPLATE_TEST_CASE("optimizers: a NaN or infinite gradient is a ValueError and changes nothing",
                   "[optim]", float, double) {
  const TestType bad_values[] = {std::numeric_limits<TestType>::quiet_NaN(),
                                 std::numeric_limits<TestType>::infinity(),
                                 -std::numeric_limits<TestType>::infinity()};
  const char* names[] = {"NaN", "+inf", "-inf"};
  for (int k = 0; k < 3; ++k) {
    amari::test::Rng rng(3);
    Sgd<TestType> sgd({.learning_rate = 0.1, .momentum = 0.9});
    Adam<TestType> adam;
    for (amari::nn::Optimizer<TestType>* opt :
         {static_cast<amari::nn::Optimizer<TestType>*>(&sgd),
          static_cast<amari::nn::Optimizer<TestType>*>(&adam)}) {
      Tensor<TestType> p = amari::test::normal_tensor<TestType>(Shape{40}, rng);
      Tensor<TestType> g = amari::test::normal_tensor<TestType>(Shape{40}, rng);
      opt->step(p, g);  // the state exists and is non-zero
      const Tensor<TestType> p_before = p.clone();
      const Tensor<TestType> state_before =
          opt == &sgd ? sgd.velocity().clone() : adam.second_moment().clone();
      g[17] = bad_values[k];
      g[30] = bad_values[k];
      const std::string msg = error_message<amari::ValueError>([&] { opt->step(p, g); });
      CHECK_THAT(msg, Contains(opt == &sgd ? "Sgd::step" : "Adam::step") && Contains(names[k]) &&
                          Contains("index 17"));
      CHECK(bitwise_equal(p, p_before));
      CHECK(bitwise_equal(opt == &sgd ? sgd.velocity() : adam.second_moment(), state_before));
      CHECK((opt == &sgd ? sgd.steps() : adam.steps()) == 1);
      // The caller can lower the learning rate and carry on.
      opt->set_learning_rate(opt->learning_rate() / 10);
      g[17] = g[30] = 0;
      opt->step(p, g);
    }
  }
}

TEST_CASE("optimizers: options out of range are ValueErrors naming the option and the value",
          "[optim]") {
  using E = amari::ValueError;
  const double nan = std::numeric_limits<double>::quiet_NaN();
  CHECK_THAT(error_message<E>([] { Sgd<float>({.learning_rate = -0.5}); }),
             Contains("learning_rate") && Contains("-0.5"));
  CHECK_THAT(error_message<E>([&] { Sgd<float>({.learning_rate = nan}); }), Contains("nan"));
  CHECK_THAT(error_message<E>([] { Sgd<float>({.momentum = 1}); }),
             Contains("momentum") && Contains("1"));
  CHECK_THAT(error_message<E>([] { Sgd<float>({.momentum = -0.1}); }), Contains("-0.1"));
  CHECK_THAT(error_message<E>([] { Sgd<float>({.nesterov = true}); }), Contains("nesterov"));
  CHECK_THAT(error_message<E>([] { Sgd<float>({.weight_decay = -1}); }), Contains("weight_decay"));
  CHECK_THAT(error_message<E>([] { Adam<float>({.learning_rate = -1e-3}); }), Contains("-0.001"));
  CHECK_THAT(error_message<E>([] { Adam<float>({.beta1 = 1}); }), Contains("beta1"));
  CHECK_THAT(error_message<E>([] { Adam<float>({.beta2 = -0.1}); }),
             Contains("beta2") && Contains("-0.1"));
  CHECK_THAT(error_message<E>([] { Adam<float>({.epsilon = 0}); }),
             Contains("epsilon") && Contains("0"));
  CHECK_THAT(error_message<E>([] { Adam<float>({.weight_decay = -0.1}); }),
             Contains("weight_decay"));
  Adam<float> adam;
  CHECK_THAT(error_message<E>([&] { adam.set_learning_rate(-2); }), Contains("-2"));
  CHECK(adam.learning_rate() == 1e-3);
}

TEST_CASE("optimizers: mismatched shapes and a size change between steps are ShapeErrors",
          "[optim]") {
  Sgd<double> sgd({.momentum = 0.5});
  Adam<double> adam;
  for (amari::nn::Optimizer<double>* opt : {static_cast<amari::nn::Optimizer<double>*>(&sgd),
                                            static_cast<amari::nn::Optimizer<double>*>(&adam)}) {
    INFO(opt->describe());
    Tensor<double> p(Shape{6});
    CHECK_THAT(error_message<amari::ShapeError>([&] { opt->step(p, Tensor<double>(Shape{5})); }),
               Contains("(6)") && Contains("(5)"));
    CHECK_THAT(error_message<amari::ShapeError>([&] {
                 opt->step(p, Tensor<double>(Shape{2, 3}));
               }),
               Contains("(2, 3)"));
    opt->step(p, Tensor<double>::full(Shape{6}, 1.0));
    Tensor<double> q(Shape{7});
    CHECK_THAT(error_message<amari::ShapeError>(
                   [&] { opt->step(q, Tensor<double>::full(Shape{7}, 1.0)); }),
               Contains("6 elements") && Contains("reset()"));
    opt->reset();
    opt->step(q, Tensor<double>::full(Shape{7}, 1.0));  // after reset() any size is accepted
  }
}

TEST_CASE("optimizers: describe() names the rule and its options", "[optim]") {
  CHECK(Sgd<float>({.learning_rate = 0.1, .momentum = 0.9, .nesterov = true}).describe() ==
        "Sgd(lr=0.1, momentum=0.9, nesterov, weight_decay=0)");
  CHECK(Adam<double>().describe() ==
        "Adam(lr=0.001, beta1=0.9, beta2=0.999, epsilon=1e-08, weight_decay=0)");
  CHECK_THAT(Adam<double>({.weight_decay = 0.01, .decoupled_weight_decay = true}).describe(),
             Contains("AdamW") && Contains("weight_decay=0.01"));
}
