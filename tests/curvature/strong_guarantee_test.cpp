// Every mutating call of the curvature operators either succeeds or leaves the operator as it was
// (issue "Hardening"): a relinearize that throws half-way must not leave a record of the new inputs
// next to scores or targets of the old ones. Each test makes a call fail, then checks that the
// operator's matrix is bitwise the one it had before, and that the next successful call gives what
// a fresh operator gives.
#include <string_view>

#include <amari/amari.hpp>

#include <catch2/catch.hpp>

#include "support/dense.hpp"
#include "support/random.hpp"

namespace {

using namespace amari;
using amari::test::Rng;
namespace curv = amari::curvature;

struct Problem {
  nn::Model<double> model{nn::mlp<double>({4, 5, 3}, nn::Act::tanh), 2};
  nn::SoftmaxCrossEntropy<double> head;
  Tensor<double> x, y, x2, y2;
  Problem() {
    Rng rng(3);
    x = amari::test::normal_tensor<double>(Shape{6, 4}, rng);
    y = nn::one_hot<double>({0, 1, 2, 2, 1, 0}, 3);
    x2 = amari::test::normal_tensor<double>(Shape{4, 4}, rng);
    y2 = nn::one_hot<double>({2, 1, 0, 1}, 3);
  }
};

bool same(const amari::test::Dense& a, const amari::test::Dense& b) { return amari::test::rel_frobenius(a, b) == 0.0; }

}  // namespace

TEST_CASE("EmpiricalFisherOperator: a relinearize with mismatched targets throws and changes nothing",
          "[curvature][strong]") {
  Problem p;
  curv::EmpiricalFisherOperator<double> ef(p.model, p.head, p.x, p.y);
  const auto before = amari::test::dense_of(ef);
  // New inputs of 4 rows with the old 6-row targets: the old code recorded the inputs, then threw,
  // and the next product read past the scores.
  CHECK_THROWS_AS(ef.relinearize(p.x2, p.y), ShapeError);
  CHECK(ef.linearization().batch_size() == 6);
  CHECK(same(amari::test::dense_of(ef), before));
  // The next successful call gives what a fresh operator gives.
  ef.relinearize(p.x2, p.y2);
  curv::EmpiricalFisherOperator<double> fresh(p.model, p.head, p.x2, p.y2);
  CHECK(same(amari::test::dense_of(ef), amari::test::dense_of(fresh)));
}

TEST_CASE("GgnOperator and HessianOperator: a failed relinearize keeps the previous record usable",
          "[curvature][strong]") {
  Problem p;
  curv::GgnOperator<double> ggn(p.model, p.head, p.x);
  curv::HessianOperator<double> hessian(p.model, p.head, p.x, p.y);
  const auto g0 = amari::test::dense_of(ggn), h0 = amari::test::dense_of(hessian);
  const Tensor<double> wrong_width = Tensor<double>(Shape{3, 7});  // the first layer takes 4 features
  CHECK_THROWS_AS(ggn.relinearize(wrong_width), ShapeError);
  CHECK_THROWS_AS(hessian.relinearize(wrong_width, p.y2), ShapeError);
  CHECK_THROWS_AS(hessian.relinearize(p.x2, p.y), ShapeError);  // targets of another batch
  CHECK(same(amari::test::dense_of(ggn), g0));
  CHECK(same(amari::test::dense_of(hessian), h0));
  ggn.relinearize(p.x2);
  hessian.relinearize(p.x2, p.y2);
  curv::GgnOperator<double> fresh_g(p.model, p.head, p.x2);
  curv::HessianOperator<double> fresh_h(p.model, p.head, p.x2, p.y2);
  CHECK(same(amari::test::dense_of(ggn), amari::test::dense_of(fresh_g)));
  CHECK(same(amari::test::dense_of(hessian), amari::test::dense_of(fresh_h)));
}

TEST_CASE("MonteCarloFisherOperator: a relinearize with the wrong number of example ids changes nothing",
          "[curvature][strong]") {
  Problem p;
  curv::MonteCarloFisherOperator<double> mc(p.model, p.head, p.x, 2, 5);
  const auto before = amari::test::dense_of(mc);
  CHECK_THROWS_AS(mc.relinearize(p.x2, 9, {0, 1, 2}), ShapeError);
  CHECK_THROWS_AS(mc.relinearize(Tensor<double>(Shape{3, 7}), 9), ShapeError);
  CHECK(same(amari::test::dense_of(mc), before));
  mc.relinearize(p.x2, 9, {10, 11, 12, 13});
  curv::MonteCarloFisherOperator<double> fresh(p.model, p.head, p.x2, 2, 9, {10, 11, 12, 13});
  CHECK(same(amari::test::dense_of(mc), amari::test::dense_of(fresh)));
}

TEST_CASE("RecordedModel: the record is a snapshot and a value that survives moves",
          "[curvature][strong]") {
  Problem p;
  nn::RecordedModel<double> a(p.model, p.x, {.head = &p.head, .targets = p.y});
  const Tensor<double> z0 = a.logits().clone();
  const double loss0 = a.loss();
  Tensor<double> g0(Shape{p.model.num_parameters()});
  a.gradient(g0);
  // Moving the record (its tape goes with it) keeps every variable valid.
  nn::RecordedModel<double> b = std::move(a);
  Tensor<double> g1(Shape{p.model.num_parameters()});
  for (Index i = 0; i < p.model.num_parameters(); ++i) p.model.parameters()[i] += 1.0;  // the model moves on
  b.gradient(g1);
  CHECK(amari::test::max_abs_diff(g0, g1) == 0.0);
  CHECK(amari::test::max_abs_diff(b.logits(), z0) == 0.0);
  CHECK(b.loss() == loss0);
  // A record without a loss refuses loss sweeps with a message naming the call.
  nn::RecordedModel<double> plain(p.model, p.x);
  CHECK_THROWS_WITH(plain.gradient(g1), Catch::Contains("RecordedModel::gradient"));
  CHECK_THROWS_AS(nn::RecordedModel<double>(p.model, p.x, {.head = &p.head, .targets = {}}), ValueError);
}

namespace {

// Softmax cross-entropy whose k-th score() call throws (0: never): the empirical Fisher computes
// one score matrix per batch operator, so this fails the k-th batch of a data-set relinearize.
class FailingScoreHead final : public nn::Head<double> {
 public:
  mutable int calls = 0;
  int fail_at = 0;
  std::string name() const override { return "failing " + inner_.name(); }
  Tensor<double> loss(const Tensor<double>& z, const Tensor<double>& y) const override { return inner_.loss(z, y); }
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
  // score() is -residual: only the residuals computed for score() count.
  void compute_residual(const char* op, const Tensor<double>& z, const Tensor<double>& y,
                        Tensor<double>& out) const override {
    if (std::string_view(op) == "score" && ++calls == fail_at) throw ValueError("FailingScoreHead: injected failure");
    inner_.residual(z, y, out);
  }

 private:
  nn::SoftmaxCrossEntropy<double> inner_;
};

}  // namespace

TEST_CASE("DatasetOperator: a relinearize that fails in a later batch keeps every old batch record",
          "[curvature][strong][dataset]") {
  Problem p;
  FailingScoreHead head;
  // 6 examples in batches of 2: three batch operators, each computing its scores once.
  curv::DatasetOperator<double> op(curv::Curvature::empirical_fisher, p.model, head, p.x, p.y, 2);
  const auto before = amari::test::dense_of(op);
  // The model moves on, so a completed relinearize would change the matrix.
  for (Index i = 0; i < p.model.num_parameters(); ++i) p.model.parameters()[i] += 0.05 * static_cast<double>(i % 7);
  for (int batch = 1; batch <= 3; ++batch) {
    INFO("failure in batch " << batch << " of 3");
    head.calls = 0;
    head.fail_at = batch;
    REQUIRE_THROWS_WITH(op.relinearize(), Catch::Contains("injected failure"));
    head.fail_at = 0;
    CHECK(same(amari::test::dense_of(op), before));  // all three old records, none of the new ones
  }
  // The next successful call gives what a fresh operator at the new parameters gives.
  op.relinearize();
  curv::DatasetOperator<double> fresh(curv::Curvature::empirical_fisher, p.model, head, p.x, p.y, 2);
  const auto after = amari::test::dense_of(op);
  CHECK(same(after, amari::test::dense_of(fresh)));
  CHECK_FALSE(same(after, before));
}
