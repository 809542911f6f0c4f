// Natural gradient and Hessian-free steps on a small classification problem: they reduce the loss,
// every field of the step reports is what it claims (recomputed by hand from the model before and
// after the step), lambda follows the Levenberg-Marquardt rule of SEED-NOTES 5, failed steps leave
// the model untouched, HF warm-starts CG from 0.95 * the previous solution, and the helpers
// (make_curvature, empirical_fisher_diagonal) agree with independent computations.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include <catch2/catch.hpp>

#include <amari/curvature/cg.hpp>
#include <amari/curvature/ggn.hpp>
#include <amari/curvature/linear_operator.hpp>
#include <amari/curvature/second_order.hpp>
#include <amari/curvature/vector_ops.hpp>
#include <amari/nn/heads.hpp>
#include <amari/nn/layers.hpp>
#include <amari/nn/model.hpp>
#include <amari/nn/training.hpp>

#include "support/random.hpp"

namespace {

using amari::Index;
using amari::Shape;
using amari::Tensor;
using amari::curvature::CgOptions;
using amari::curvature::CgStatus;
using amari::curvature::Curvature;
using amari::curvature::HessianFree;
using amari::curvature::HessianFreeOptions;
using amari::curvature::NaturalGradient;
using amari::curvature::NaturalGradientOptions;
using amari::curvature::CgStepReport;
using amari::nn::Gaussian;
using amari::nn::Head;
using amari::nn::Model;
using amari::nn::SigmoidBernoulli;
using amari::nn::SoftmaxCrossEntropy;
using amari::test::Rng;

constexpr Index kN = 64, kD = 4, kHidden = 8, kC = 3;
constexpr double kInf = std::numeric_limits<double>::infinity();

enum class Task { classes, binary, regression };

// 64 fixed points and targets from a fixed teacher: a random linear map A (D x C) followed by
// argmax (classes), sign (binary outputs) or tanh (regression).
struct Data {
  Tensor<double> x, y;
};

Data teacher_data(Task task, std::uint64_t seed = 7) {
  Rng rng(seed);
  const Tensor<double> a = amari::test::normal_tensor<double>(Shape{kD, kC}, rng);
  Data d{amari::test::normal_tensor<double>(Shape{kN, kD}, rng), Tensor<double>(Shape{kN, kC})};
  for (Index i = 0; i < kN; ++i) {
    double s[kC] = {};
    for (Index c = 0; c < kC; ++c)
      for (Index k = 0; k < kD; ++k) s[c] += d.x.at(i, k) * a.at(k, c);
    if (task == Task::classes) {
      d.y.at(i, static_cast<Index>(std::max_element(s, s + kC) - s)) = 1.0;
    } else {
      for (Index c = 0; c < kC; ++c)
        d.y.at(i, c) = task == Task::binary ? (s[c] > 0) : std::tanh(s[c]);
    }
  }
  return d;
}

Model<double> make_model(std::uint64_t seed = 3) {
  return Model<double>(amari::nn::mlp<double>({kD, kHidden, kC}), seed);
}

double loss_of(const Model<double>& model, const Head<double>& head, const Data& d) {
  return head.loss(model.forward(d.x), d.y).item();
}

// The loss at theta (the model is restored afterwards); +inf if not finite, as the optimizers count
// a non-finite trial loss.
double loss_at(Model<double>& model, const Head<double>& head, const Data& d,
               const Tensor<double>& theta) {
  const Tensor<double> saved = model.gather();
  model.scatter(theta);
  const double l = loss_of(model, head, d);
  model.scatter(saved);
  return std::isfinite(l) ? l : kInf;
}

Tensor<double> combine(const Tensor<double>& a, double s, const Tensor<double>& b) {  // a + s b
  Tensor<double> out = a.clone();
  amari::curvature::axpy(s, b, out);
  return out;
}

double lm_rule(double lambda, double rho) {
  const double next = rho < 0.25 ? lambda * 1.5 : rho > 0.75 ? lambda * (2.0 / 3.0) : lambda;
  return std::clamp(next, 1e-8, 1e8);
}

// How the step that produced a report was configured.
struct StepSetup {
  Curvature kind = Curvature::ggn;
  double learning_rate = 1.0;  // the step length rho is measured at (1 for HF)
  int mc_samples = 1;
  std::uint64_t curvature_seed = 0;  // options.seed + step index
  int max_cg_iterations = 0;
  bool adapt_damping = true;
};

// Checks every field of a report against the model before (theta_old, lambda_before) and after
// the step (the model's current parameters, lambda_after).
void check_report(Model<double>& model, const Head<double>& head, const Data& d,
                  const Tensor<double>& theta_old, double lambda_before, double lambda_after,
                  const CgStepReport& r, const StepSetup& s) {
  INFO(r.str());
  const Tensor<double> theta_new = model.gather();
  const Tensor<double> diff = combine(theta_new, -1.0, theta_old);
  CHECK(r.lambda == lambda_before);
  CHECK(r.cg_iterations <= s.max_cg_iterations);
  CHECK(r.cg_iterations >= 0);
  CHECK(r.cg_products >= r.cg_iterations);
  // loss_after is the loss at the model's new parameters; step_norm their distance to the old ones.
  CHECK(r.loss_after == Approx(loss_of(model, head, d)).epsilon(1e-13));
  CHECK(r.step_norm == Approx(amari::curvature::norm(diff)).epsilon(1e-9).margin(1e-15));
  // loss and gradient norm at the old parameters.
  const Tensor<double> saved = model.gather();
  model.scatter(theta_old);
  Tensor<double> g = model.zeros_like_parameters();
  const double loss = amari::nn::loss_and_gradient(model, head, d.x, d.y, g);
  CHECK(r.loss == Approx(loss).epsilon(1e-14));
  CHECK(r.gradient_norm == Approx(amari::curvature::norm(g)).epsilon(1e-12));
  if (s.adapt_damping) CHECK(lambda_after == Approx(lm_rule(r.lambda, r.rho)).epsilon(1e-15));
  if (r.step_scale == 0) {
    // A rejected step: nothing moved.
    CHECK(amari::curvature::norm(diff) == 0.0);
    CHECK(r.step_norm == 0.0);
    if (!std::isnan(r.loss)) CHECK(r.loss_after == r.loss);
    model.scatter(saved);
    return;
  }
  CHECK(r.step_scale > 0.0);
  CHECK(r.step_scale <= s.learning_rate);
  // The CG direction d, and the quadratic model's decrease for learning_rate * d on the undamped
  // curvature at theta_old: -(a g.d + a^2/2 d'Gd).
  const Tensor<double> dir = combine(Tensor<double>(diff.shape()), 1.0 / r.step_scale, diff);
  auto curvature = amari::curvature::make_curvature<double>(s.kind, model, head, d.x, d.y,
                                                            s.mc_samples, s.curvature_seed);
  Tensor<double> gd_vec(dir.shape());
  curvature->apply(dir, gd_vec);
  const double a = s.learning_rate;
  const double predicted =
      -(a * amari::curvature::dot(g, dir) + 0.5 * a * a * amari::curvature::dot(dir, gd_vec));
  CHECK(r.predicted_reduction == Approx(predicted).epsilon(1e-7).margin(1e-14));
  // rho = actual / predicted at the proposed step learning_rate * d.
  const double proposed =
      r.step_scale == a ? r.loss_after : loss_at(model, head, d, combine(theta_old, a, dir));
  const double rho = !std::isfinite(r.loss - proposed) || !(r.predicted_reduction > 0)
                         ? -kInf
                         : (r.loss - proposed) / r.predicted_reduction;
  if (std::isinf(rho)) {
    CHECK(r.rho == rho);
  } else {
    CHECK(r.rho == Approx(rho).epsilon(1e-9).margin(1e-12));
  }
  model.scatter(saved);
}

template <class Opt>
auto run(Opt& opt, Model<double>& model, const Head<double>& head, const Data& d, int steps,
         StepSetup setup, std::uint64_t seed0) {
  std::vector<decltype(opt.step(d.x, d.y))> reports;  // each optimizer's own report type
  for (int k = 0; k < steps; ++k) {
    INFO("step " << k);
    const Tensor<double> theta_old = model.gather();
    const double lambda_before = opt.lambda();
    reports.push_back(opt.step(d.x, d.y));
    setup.curvature_seed = seed0 + static_cast<std::uint64_t>(k);
    check_report(model, head, d, theta_old, lambda_before, opt.lambda(), reports.back(), setup);
  }
  return reports;
}

const char* kind_name(Curvature c) {
  return amari::curvature::to_string(c);
}

}  // namespace

TEST_CASE(
    "second order: natural gradient with each curvature, with and without line search, "
    "reduces the loss and reports consistently",
    "[second_order]") {
  const Data d = teacher_data(Task::classes);
  SoftmaxCrossEntropy<double> head;
  for (Curvature kind : {Curvature::ggn, Curvature::mc_fisher, Curvature::empirical_fisher}) {
    for (bool line_search : {false, true}) {
      INFO(kind_name(kind) << (line_search ? " with line search" : ""));
      Model<double> model = make_model();
      NaturalGradientOptions o;
      o.curvature = kind;
      o.line_search = line_search;
      o.seed = 11;
      o.mc_samples = 2;
      NaturalGradient<double> opt(model, head, o);
      const double start = loss_of(model, head, d);
      const StepSetup setup{.kind = kind,
                            .learning_rate = o.learning_rate,
                            .mc_samples = 2,
                            .max_cg_iterations = o.cg.max_iterations};
      const auto reports = run(opt, model, head, d, 20, setup, o.seed);
      const double end = loss_of(model, head, d);
      INFO("loss " << start << " -> " << end);
      CHECK(end < 0.1 * start);  // about 0.06 for the empirical Fisher, 4e-4 for the GGN
      CHECK(reports.back().loss_after == Approx(end).epsilon(1e-13));
      // The loss never goes up by more than rounding with the line search on.
      if (line_search)
        for (const auto& r : reports) CHECK(r.loss_after <= r.loss + 1e-12);
    }
  }
}

TEST_CASE("second order: natural gradient in float reduces the loss", "[second_order]") {
  const Data dd = teacher_data(Task::classes);
  const Tensor<float> x = amari::test::convert<float>(dd.x), y = amari::test::convert<float>(dd.y);
  Model<float> model(amari::nn::mlp<float>({kD, kHidden, kC}), 3);
  SoftmaxCrossEntropy<float> head;
  NaturalGradient<float> opt(model, head, {});
  const double start = head.loss(model.forward(x), y).item();
  for (int k = 0; k < 20; ++k) opt.step(x, y);
  const double end = head.loss(model.forward(x), y).item();
  CHECK(end < 0.01 * start);
}

TEST_CASE("second order: natural gradient also trains with the Bernoulli and Gaussian heads",
          "[second_order]") {
  SigmoidBernoulli<double> bernoulli;
  Gaussian<double> gaussian(0.5);
  const std::vector<std::pair<const Head<double>*, Task>> cases = {{&bernoulli, Task::binary},
                                                                   {&gaussian, Task::regression}};
  for (const auto& [head, task] : cases) {
    INFO(head->name());
    const Data d = teacher_data(task);
    Model<double> model = make_model();
    NaturalGradientOptions o;
    NaturalGradient<double> opt(model, *head, o);
    const double start = loss_of(model, *head, d);
    const StepSetup setup{.max_cg_iterations = o.cg.max_iterations};
    run(opt, model, *head, d, 20, setup, 0);
    const double end = loss_of(model, *head, d);
    INFO("loss " << start << " -> " << end);
    CHECK(end < 0.05 * start);
  }
}

TEST_CASE(
    "second order: Hessian-free with and without preconditioner and backtracking reduces "
    "the loss and reports consistently",
    "[second_order]") {
  const Data d = teacher_data(Task::classes);
  SoftmaxCrossEntropy<double> head;
  struct Config {
    const char* label;
    bool preconditioner, backtracking, line_search;
  };
  for (const Config& c :
       {Config{"default", false, true, true}, Config{"preconditioned", true, true, true},
        Config{"plain", false, false, false},
        Config{"preconditioned, no backtracking", true, false, true}}) {
    INFO(c.label);
    Model<double> model = make_model();
    HessianFreeOptions o;
    o.preconditioner = c.preconditioner;
    o.backtracking = c.backtracking;
    o.line_search = c.line_search;
    o.cg.max_iterations = 40;
    HessianFree<double> opt(model, head, o);
    const double start = loss_of(model, head, d);
    const StepSetup setup{.max_cg_iterations = o.cg.max_iterations};
    const auto reports = run(opt, model, head, d, 15, setup, 0);
    const double end = loss_of(model, head, d);
    INFO("loss " << start << " -> " << end);
    CHECK(end < 0.02 * start);
    for (const auto& r : reports) {
      CHECK(r.backtrack_iterate >= 0);
      CHECK(r.backtrack_iterate <= r.cg_iterations);
      if (!c.backtracking) CHECK(r.backtrack_iterate == r.cg_iterations);
    }
  }
}

TEST_CASE("second order: lambda shrinks by 2/3 after a step with rho > 3/4", "[second_order]") {
  // A short step (learning rate 0.01, strong damping): the quadratic model is accurate, rho ~ 1.
  const Data d = teacher_data(Task::classes);
  SoftmaxCrossEntropy<double> head;
  Model<double> model = make_model();
  NaturalGradientOptions o;
  o.learning_rate = 0.01;
  o.initial_damping = 10.0;
  NaturalGradient<double> opt(model, head, o);
  const auto r = opt.step(d.x, d.y);
  INFO(r.str());
  CHECK(r.rho > 0.75);
  CHECK(r.rho < 1.25);
  CHECK(opt.lambda() == Approx(10.0 * 2.0 / 3.0).epsilon(1e-15));
  CHECK(r.loss_after < r.loss);
}

TEST_CASE("second order: lambda grows by 3/2 after a step with rho < 1/4", "[second_order]") {
  // Nearly undamped steps on a strongly nonlinear net (large weights): the quadratic model
  // promises far more than the step delivers.
  const Data d = teacher_data(Task::classes);
  SoftmaxCrossEntropy<double> head;
  Model<double> model = make_model();
  Rng rng(5);
  for (Index i = 0; i < model.num_parameters(); ++i) model.parameters()[i] = rng.uniform(-4.0, 4.0);
  NaturalGradientOptions o;
  o.initial_damping = 1e-6;
  o.learning_rate = 1.0;
  o.cg.max_iterations = 200;
  o.cg.relative_tolerance = 1e-10;
  NaturalGradient<double> opt(model, head, o);
  const Tensor<double> theta_old = model.gather();
  const auto r = opt.step(d.x, d.y);
  INFO(r.str());
  CHECK(r.predicted_reduction > 0.0);
  CHECK(std::isfinite(r.rho));
  CHECK(r.rho < 0.25);
  CHECK(opt.lambda() == Approx(1.5e-6).epsilon(1e-15));
  check_report(model, head, d, theta_old, 1e-6, opt.lambda(), r,
               StepSetup{.max_cg_iterations = o.cg.max_iterations});
}

TEST_CASE(
    "second order: a non-finite trial loss rejects the step and raises lambda, a NaN loss at "
    "the start rejects it and keeps lambda",
    "[second_order]") {
  const Data d = teacher_data(Task::classes);
  SoftmaxCrossEntropy<double> head;
  SECTION("overflowing step: learning rate 1e308 without line search") {
    Model<double> model = make_model();
    NaturalGradientOptions o;
    o.learning_rate = 1e308;
    NaturalGradient<double> opt(model, head, o);
    const Tensor<double> theta_old = model.gather();
    // The same CG solve by hand, to confirm that the trial point really has a non-finite loss.
    auto ggn = amari::curvature::make_curvature<double>(Curvature::ggn, model, head, d.x, d.y);
    amari::curvature::DampedOperator<double> a(*ggn, o.initial_damping);
    Tensor<double> g = model.zeros_like_parameters();
    amari::nn::loss_and_gradient(model, head, d.x, d.y, g);
    amari::curvature::scal(-1.0, g);
    const auto cg = amari::curvature::conjugate_gradient(a, g, o.cg);
    REQUIRE(loss_at(model, head, d, combine(theta_old, o.learning_rate, cg.x)) == kInf);

    const auto r = opt.step(d.x, d.y);
    INFO(r.str());
    CHECK(amari::test::max_abs_diff(model.parameters(), theta_old) == 0.0);
    CHECK(r.step_scale == 0.0);
    CHECK(r.step_norm == 0.0);
    CHECK(r.loss_after == r.loss);
    CHECK(std::isfinite(r.loss));
    CHECK(r.rho == -kInf);
    CHECK(opt.lambda() == Approx(1.5 * o.initial_damping).epsilon(1e-15));
  }
  SECTION("NaN targets: natural gradient") {
    Data bad{d.x, d.y.clone()};
    bad.y.at(5, 1) = std::numeric_limits<double>::quiet_NaN();
    Model<double> model = make_model();
    NaturalGradient<double> opt(model, head, {});
    const Tensor<double> theta_old = model.gather();
    const auto r = opt.step(bad.x, bad.y);
    INFO(r.str());
    CHECK(std::isnan(r.loss));
    CHECK(r.cg_status == CgStatus::non_finite);
    CHECK(amari::test::max_abs_diff(model.parameters(), theta_old) == 0.0);
    CHECK(r.step_scale == 0.0);
    CHECK(r.step_norm == 0.0);
    // Bad data says nothing about how far the quadratic model can be trusted.
    CHECK(opt.lambda() == NaturalGradientOptions{}.initial_damping);
    // Clean data afterwards: training proceeds from the untouched model.
    const auto ok = opt.step(d.x, d.y);
    CHECK(ok.loss_after < ok.loss);
  }
  SECTION("NaN targets: Hessian-free") {
    Data bad{d.x, d.y.clone()};
    bad.y.at(0, 0) = std::numeric_limits<double>::quiet_NaN();
    Model<double> model = make_model();
    HessianFreeOptions o;
    o.cg.max_iterations = 20;
    HessianFree<double> opt(model, head, o);
    const Tensor<double> theta_old = model.gather();
    const auto r = opt.step(bad.x, bad.y);
    INFO(r.str());
    CHECK(amari::test::max_abs_diff(model.parameters(), theta_old) == 0.0);
    CHECK(r.step_norm == 0.0);
    CHECK(r.cg_status == CgStatus::non_finite);
    CHECK(opt.lambda() == o.initial_damping);
  }
}

TEST_CASE("second order: Hessian-free warm-starts CG from 0.95 * the previous solution",
          "[second_order]") {
  const Data d = teacher_data(Task::classes);
  SoftmaxCrossEntropy<double> head;
  HessianFreeOptions o;
  o.backtracking = false;
  o.line_search = false;
  o.cg.max_iterations = 3;  // few iterations: the starting point shows in the result
  o.cg.progress_stopping = false;
  Model<double> model = make_model();
  HessianFree<double> opt(model, head, o);
  const Tensor<double> theta0 = model.gather();
  const auto r1 = opt.step(d.x, d.y);
  REQUIRE(r1.step_scale == 1.0);
  const Tensor<double> theta1 = model.gather();
  const Tensor<double> d1 = combine(theta1, -1.0, theta0);  // = the first CG solution
  const auto r2 = opt.step(d.x, d.y);
  REQUIRE(r2.step_scale == 1.0);
  const Tensor<double> d2 = combine(model.gather(), -1.0, theta1);
  CHECK(r2.cg_products == r2.cg_iterations + 1);  // one product for the warm start's residual

  // The second solve by hand at theta1, from x0 = 0.95 d1 and from 0.
  model.scatter(theta1);
  auto ggn = amari::curvature::make_curvature<double>(Curvature::ggn, model, head, d.x, d.y);
  amari::curvature::DampedOperator<double> a(*ggn, r2.lambda);
  Tensor<double> b = model.zeros_like_parameters();
  amari::nn::loss_and_gradient(model, head, d.x, d.y, b);
  amari::curvature::scal(-1.0, b);
  const Tensor<double> x0 = combine(Tensor<double>(d1.shape()), 0.95, d1);
  const auto warm = amari::curvature::conjugate_gradient(a, b, o.cg, &x0);
  const auto cold = amari::curvature::conjugate_gradient(a, b, o.cg);
  const double scale = amari::curvature::norm(d2);
  CHECK(amari::test::distance(d2, warm.x) <= 1e-9 * scale);
  // The check has teeth: a cold start or an undecayed warm start gives a clearly different step.
  const Tensor<double> x1 = d1.clone();
  const auto undecayed = amari::curvature::conjugate_gradient(a, b, o.cg, &x1);
  CHECK(amari::test::distance(d2, cold.x) > 1e-4 * scale);
  CHECK(amari::test::distance(d2, undecayed.x) > 1e-4 * scale);

  // warm_start_decay = 0 switches the warm start off: the second step is the cold solution.
  Model<double> model_b = make_model();
  HessianFreeOptions ob = o;
  ob.warm_start_decay = 0.0;
  HessianFree<double> opt_b(model_b, head, ob);
  opt_b.step(d.x, d.y);
  REQUIRE(amari::test::max_abs_diff(model_b.parameters(), theta1) == 0.0);
  const auto rb = opt_b.step(d.x, d.y);
  CHECK(rb.cg_products == rb.cg_iterations);
  CHECK(amari::test::distance(combine(model_b.gather(), -1.0, theta1), cold.x) <= 1e-9 * scale);
}

TEST_CASE("second order: empirical_fisher_diagonal is the mean of squared per-example gradients",
          "[second_order]") {
  SoftmaxCrossEntropy<double> softmax;
  Gaussian<double> gaussian(0.8);
  for (const auto& [head, task] : std::vector<std::pair<const Head<double>*, Task>>{
           {&softmax, Task::classes}, {&gaussian, Task::regression}}) {
    INFO(head->name());
    const Data d = teacher_data(task);
    Model<double> model = make_model();
    for (Index limit : {Index{0}, Index{10}, Index{1000}}) {
      INFO("max_examples " << limit);
      const Index n = limit == 0 || limit > kN ? kN : limit;
      Tensor<double> want = model.zeros_like_parameters();
      Tensor<double> gi = model.zeros_like_parameters();
      for (Index i = 0; i < n; ++i) {
        const Tensor<double> xi = d.x.view(i * kD, Shape{1, kD}).clone();
        const Tensor<double> yi = d.y.view(i * kC, Shape{1, kC}).clone();
        amari::nn::loss_and_gradient(model, *head, xi, yi, gi);
        for (Index k = 0; k < gi.size(); ++k) want[k] += gi[k] * gi[k] / static_cast<double>(n);
      }
      const Tensor<double> got =
          amari::curvature::empirical_fisher_diagonal(model, *head, d.x, d.y, limit);
      REQUIRE(got.shape() == Shape{model.num_parameters()});
      double worst = 0, top = 0;
      for (Index k = 0; k < got.size(); ++k) {
        worst = std::max(worst, std::fabs(got[k] - want[k]));
        top = std::max(top, want[k]);
      }
      CHECK(top > 0.0);
      CHECK(worst <= 1e-12 * top);
    }
  }
}

TEST_CASE("second order: make_curvature returns the operator of each kind, by name",
          "[second_order]") {
  const Data d = teacher_data(Task::classes);
  SoftmaxCrossEntropy<double> head;
  const Model<double> model = make_model();
  const Index p = model.num_parameters();
  struct Want {
    Curvature kind;
    const char* to_string;
    std::string name;
  };
  const std::string tail = "softmax cross-entropy, N=64";
  for (const Want& w :
       {Want{Curvature::ggn, "ggn", "GGN(" + tail + ")"},
        Want{Curvature::mc_fisher, "mc_fisher", "MC-Fisher(" + tail + ", k=3)"},
        Want{Curvature::empirical_fisher, "empirical_fisher", "EmpiricalFisher(" + tail + ")"},
        Want{Curvature::hessian, "hessian", "Hessian(" + tail + ")"}}) {
    INFO(w.to_string);
    CHECK(std::string(amari::curvature::to_string(w.kind)) == w.to_string);
    auto op = amari::curvature::make_curvature<double>(w.kind, model, head, d.x, d.y, 3, 1);
    CHECK(op->name() == w.name);
    CHECK(op->size() == p);
  }
  // The GGN from make_curvature is the GGN: same product as a directly built operator.
  auto ggn = amari::curvature::make_curvature<double>(Curvature::ggn, model, head, d.x, d.y);
  amari::curvature::GgnOperator<double> direct(model, head, d.x);
  Rng rng(3);
  const Tensor<double> v = amari::test::normal_tensor<double>(Shape{p}, rng);
  Tensor<double> a(Shape{p}), b(Shape{p});
  ggn->apply(v, a);
  direct.apply(v, b);
  CHECK(amari::test::max_abs_diff(a, b) == 0.0);
}

TEST_CASE("second order: invalid options and batches are rejected", "[second_order]") {
  const Data d = teacher_data(Task::classes);
  SoftmaxCrossEntropy<double> head;
  Model<double> model = make_model();
  for (double lr : {0.0, -1.0, kInf, std::numeric_limits<double>::quiet_NaN()}) {
    NaturalGradientOptions o;
    o.learning_rate = lr;
    CHECK_THROWS_AS(NaturalGradient<double>(model, head, o), amari::ValueError);
  }
  NaturalGradientOptions neg;
  neg.initial_damping = -1.0;
  CHECK_THROWS_AS(NaturalGradient<double>(model, head, neg), amari::ValueError);
  for (double decay : {-0.1, 1.5}) {
    HessianFreeOptions o;
    o.warm_start_decay = decay;
    CHECK_THROWS_AS(HessianFree<double>(model, head, o), amari::ValueError);
  }
  NaturalGradient<double> opt(model, head, {});
  const Tensor<double> theta = model.gather();
  CHECK_THROWS_AS(opt.step(d.x, d.y.view(0, Shape{10, kC})), amari::ShapeError);
  CHECK_THROWS_AS(opt.step(d.x.view(0, Shape{0, kD}), d.y.view(0, Shape{0, kC})),
                  amari::ShapeError);
  CHECK(amari::test::max_abs_diff(model.parameters(), theta) == 0.0);
}
