// NaturalGradient::step and HessianFree::step are all-or-nothing (issue "Hardening"): a step that
// throws half-way (here: the head throws on its k-th loss evaluation, i.e. during the line search
// or CG backtracking, after the training pass moved batch norm's statistics and the step counter)
// leaves the model's parameters, state and step counter and the optimizer's lambda, warm start and
// step count as they were, and the next step gives what an untouched optimizer gives.
#include <amari/amari.hpp>

#include <catch2/catch.hpp>

#include "support/random.hpp"

namespace {

using namespace amari;
namespace curv = amari::curvature;

// Softmax cross-entropy that throws on the k-th evaluation of the plain loss (0: never).
class FailingHead final : public nn::Head<double> {
 public:
  mutable int calls = 0;
  int fail_at = 0;
  std::string name() const override { return "failing " + inner_.name(); }
  Tensor<double> loss(const Tensor<double>& z, const Tensor<double>& y) const override {
    if (++calls == fail_at) throw ValueError("FailingHead: injected failure");
    return inner_.loss(z, y);
  }
  Dual<double> loss(const Dual<double>& z, const Tensor<double>& y) const override { return inner_.loss(z, y); }
  Var<double> loss(const Var<double>& z, const Tensor<double>& y) const override { return inner_.loss(z, y); }
  void mean(const Tensor<double>& z, Tensor<double>& mu) const override { inner_.mean(z, mu); }
  void hessian_product(const Tensor<double>& z, const Tensor<double>& a, Tensor<double>& out) const override {
    inner_.hessian_product(z, a, out);
  }
  Tensor<double> sample(const Tensor<double>& z, std::uint64_t seed, std::uint64_t k, Index first) const override {
    return inner_.sample(z, seed, k, first);
  }

 protected:
  void compute_residual(const char*, const Tensor<double>& z, const Tensor<double>& y,
                        Tensor<double>& out) const override {
    inner_.residual(z, y, out);
  }

 private:
  nn::SoftmaxCrossEntropy<double> inner_;
};

std::shared_ptr<const nn::Module<double>> bn_net() {
  auto net = std::make_shared<nn::Sequential<double>>();
  net->emplace<nn::Linear<double>>(4, 6);
  net->emplace<nn::BatchNorm<double>>(6);
  net->emplace<nn::Tanh<double>>();
  net->emplace<nn::Linear<double>>(6, 3);
  return net;
}

struct Data {
  Tensor<double> x, y;
  Data() {
    amari::test::Rng rng(4);
    x = amari::test::normal_tensor<double>(Shape{12, 4}, rng);
    y = nn::one_hot<double>({0, 1, 2, 0, 1, 2, 0, 1, 2, 0, 1, 2}, 3);
  }
};

// Loss evaluations of the second step of a fresh optimizer (the step the failures are injected in).
template <class Optimizer, class Options>
int evaluations_of_second_step(const Options& options) {
  Data d;
  nn::Model<double> model(bn_net(), 3);
  FailingHead head;
  Optimizer opt(model, head, options);
  opt.step(d.x, d.y);
  head.calls = 0;
  opt.step(d.x, d.y);
  return head.calls;
}

template <class Optimizer, class Options>
void check_all_or_nothing(const Options& options, int fail_at) {
  Data d;
  nn::Model<double> model(bn_net(), 3), twin(bn_net(), 3);
  FailingHead head, twin_head;
  Optimizer opt(model, head, options), twin_opt(twin, twin_head, options);
  // One good step each, so lambda and the warm start are not at their initial values.
  opt.step(d.x, d.y);
  twin_opt.step(d.x, d.y);
  // A first-example index the step changes (a single-process step sets it to 0), so that the
  // check below can see whether it is put back.
  model.set_first_example(7);
  const Tensor<double> theta = model.gather(), state = model.state().clone();
  const std::uint64_t step = model.step();
  const double lambda = opt.lambda();
  head.calls = 0;
  head.fail_at = fail_at;
  REQUIRE_THROWS_WITH(opt.step(d.x, d.y), Catch::Contains("injected failure"));
  CHECK(amari::test::max_abs_diff(model.parameters(), theta) == 0.0);
  CHECK(amari::test::max_abs_diff(model.state(), state) == 0.0);
  CHECK(model.step() == step);
  CHECK(model.first_example() == 7);
  CHECK(opt.lambda() == lambda);
  // The next step is the one an optimizer that never saw the failure takes.
  head.fail_at = 0;
  const auto a = opt.step(d.x, d.y), b = twin_opt.step(d.x, d.y);
  CHECK(a.loss == b.loss);
  CHECK(a.loss_after == b.loss_after);
  CHECK(a.lambda == b.lambda);
  CHECK(a.cg_iterations == b.cg_iterations);
  CHECK(amari::test::max_abs_diff(model.parameters(), twin.parameters()) == 0.0);
  CHECK(amari::test::max_abs_diff(model.state(), twin.state()) == 0.0);
}

}  // namespace

TEST_CASE("NaturalGradient: a step that throws half-way leaves model and optimizer unchanged",
          "[second_order][strong]") {
  // Loss evaluation 1 is the proposed step's, the others the line search's.
  curv::NaturalGradientOptions o;
  o.learning_rate = 200.0;  // far too long a step: the line search shrinks it several times
  o.line_search = true;
  const int n = evaluations_of_second_step<curv::NaturalGradient<double>>(o);
  REQUIRE(n >= 2);
  for (int fail_at = 1; fail_at <= n; ++fail_at) {
    INFO("failure at loss evaluation " << fail_at << " of " << n);
    check_all_or_nothing<curv::NaturalGradient<double>>(o, fail_at);
  }
}

TEST_CASE("HessianFree: a step that throws half-way leaves model, lambda and warm start unchanged",
          "[second_order][strong]") {
  // Evaluations: CG backtracking over the kept iterates, then the line search; every one of them
  // comes after the training pass, CG and the warm-start update, which must all be undone.
  curv::HessianFreeOptions o;
  o.cg.max_iterations = 30;
  o.initial_damping = 1e-4;  // long CG steps: backtracking and the line search both evaluate
  const int n = evaluations_of_second_step<curv::HessianFree<double>>(o);
  REQUIRE(n >= 2);
  for (int fail_at = 1; fail_at <= n; ++fail_at) {
    INFO("failure at loss evaluation " << fail_at << " of " << n);
    check_all_or_nothing<curv::HessianFree<double>>(o, fail_at);
  }
}
