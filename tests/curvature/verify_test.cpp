// verify(): passes on correct curvature operators (GGN for the three heads, float and double; the
// score-outer-product Fishers; the indefinite Hessian without the positivity check), reports every
// check by name, and fails on deliberately broken operators, with readable PASS/FAIL lines.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include <catch2/catch.hpp>

#include <amari/curvature/fisher.hpp>
#include <amari/curvature/ggn.hpp>
#include <amari/curvature/hessian.hpp>
#include <amari/curvature/linear_operator.hpp>
#include <amari/curvature/verify.hpp>
#include <amari/nn/heads.hpp>
#include <amari/nn/layers.hpp>
#include <amari/nn/model.hpp>

#include "support/random.hpp"

namespace {

using amari::Index;
using amari::Real;
using amari::Shape;
using amari::Tensor;
using amari::curvature::DenseOperator;
using amari::curvature::EmpiricalFisherOperator;
using amari::curvature::GgnOperator;
using amari::curvature::HessianOperator;
using amari::curvature::LinearOperator;
using amari::curvature::MonteCarloFisherOperator;
using amari::curvature::verify;
using amari::curvature::VerifyOptions;
using amari::curvature::VerifyReport;
using amari::nn::Gaussian;
using amari::nn::Head;
using amari::nn::Model;
using amari::nn::SigmoidBernoulli;
using amari::nn::SoftmaxCrossEntropy;
using amari::test::Rng;

constexpr Index kN = 6, kD = 3, kH = 4, kC = 3;  // P = 3*4 + 4 + 4*3 + 3 = 31

const amari::curvature::VerifyCheck* find_check(const VerifyReport& r, const std::string& name) {
  for (const auto& c : r.checks)
    if (c.name == name) return &c;
  return nullptr;
}

std::vector<std::string> check_names(const VerifyReport& r) {
  std::vector<std::string> names;
  for (const auto& c : r.checks) names.push_back(c.name);
  return names;
}

enum class HeadKind { softmax, bernoulli, gaussian };

template <Real T>
std::unique_ptr<Head<T>> make_head(HeadKind k) {
  switch (k) {
    case HeadKind::softmax:
      return std::make_unique<SoftmaxCrossEntropy<T>>();
    case HeadKind::bernoulli:
      return std::make_unique<SigmoidBernoulli<T>>();
    case HeadKind::gaussian:
      return std::make_unique<Gaussian<T>>(0.7);
  }
  return nullptr;
}

const char* head_label(HeadKind k) {
  return k == HeadKind::softmax ? "softmax" : k == HeadKind::bernoulli ? "bernoulli" : "gaussian";
}

// A small tanh MLP, its batch and targets suited to the head.
template <Real T>
struct Problem {
  Model<T> model;
  std::unique_ptr<Head<T>> head;
  Tensor<T> x, y;
  Problem(HeadKind k, std::uint64_t seed)
      : model(amari::nn::mlp<T>({kD, kH, kC}), seed), head(make_head<T>(k)) {
    Rng rng(seed + 100);
    x = amari::test::normal_tensor<T>(Shape{kN, kD}, rng);
    y = Tensor<T>(Shape{kN, kC});
    for (Index i = 0; i < kN; ++i) {
      if (k == HeadKind::softmax) {
        y.at(i, static_cast<Index>(rng.below(kC))) = T(1);
      } else {
        for (Index c = 0; c < kC; ++c)
          y.at(i, c) = k == HeadKind::bernoulli ? static_cast<T>(rng.below(2))
                                                : static_cast<T>(rng.normal());
      }
    }
  }
};

// A GGN with an asymmetric perturbation: out = G v + eps * (e_0 v_1) (a single off-diagonal entry).
template <Real T>
class SkewedOperator final : public LinearOperator<T> {
 public:
  SkewedOperator(LinearOperator<T>& base, double eps) : base_(&base), eps_(eps) {}
  Index size() const override { return base_->size(); }
  void apply(const Tensor<T>& v, Tensor<T>& out) override {
    base_->apply(v, out);
    out[0] += static_cast<T>(eps_) * v[1];
  }
  std::string name() const override { return "skewed(" + base_->name() + ")"; }

 private:
  LinearOperator<T>* base_;
  double eps_;
};

// A negative definite n x n matrix: -(I + 0.1 * ones).
DenseOperator<double> negative_definite(Index n) {
  Tensor<double> m(Shape{n, n});
  for (Index i = 0; i < n; ++i)
    for (Index j = 0; j < n; ++j) m.at(i, j) = -(0.1 + (i == j ? 1.0 : 0.0));
  return DenseOperator<double>(m);
}

// True if `report` has a line "<status> <name> <value in %.3e> (tolerance <tol in %.1e>)" whose
// printed value is the check's value.
bool line_shows(const std::string& report, const std::string& status,
                const amari::curvature::VerifyCheck& c) {
  std::istringstream lines(report);
  for (std::string line; std::getline(lines, line);) {
    std::istringstream in(line);
    std::string st, name, value, tol_word, tol;
    in >> st >> name;
    if (st != status || name != c.name) continue;
    in >> value >> tol_word >> tol;
    // d.ddde[+-]dd: three decimals in scientific notation.
    const std::size_t e = value.find('e');
    const std::size_t dot = value.find('.');
    if (e == std::string::npos || dot == std::string::npos || e != dot + 4) return false;
    if (value[e + 1] != '-' && value[e + 1] != '+') return false;
    if (std::fabs(std::stod(value) - c.value) > 1e-3 * std::fabs(c.value)) return false;
    char want_tol[32];
    std::snprintf(want_tol, sizeof want_tol, "%.1e)", c.tolerance);
    return tol_word == "(tolerance" && tol == want_tol;
  }
  return false;
}

}  // namespace

TEMPLATE_TEST_CASE("verify: the GGN of small MLPs passes every check for the three heads",
                   "[verify]", float, double) {
  for (HeadKind k : {HeadKind::softmax, HeadKind::bernoulli, HeadKind::gaussian}) {
    INFO(head_label(k));
    Problem<TestType> p(k, 1);
    GgnOperator<TestType> ggn(p.model, *p.head, p.x);
    const VerifyReport r = verify(ggn);
    INFO(r.str());
    CHECK(r.ok());
    const std::vector<std::string> want = {
        "finite products",  "symmetry",           "positivity",     "dense symmetry",
        "adjoint identity", "finite differences", "dense J^T M J"};
    CHECK(check_names(r) == want);
    for (const auto& c : r.checks) {
      INFO(c.name);
      CHECK(c.passed);
      CHECK(std::isfinite(c.value));
    }
    // The default tolerance follows the element type.
    const double tol = std::is_same_v<TestType, double> ? 1e-9 : 2e-3;
    CHECK(find_check(r, "symmetry")->tolerance == tol);
    CHECK(find_check(r, "symmetry")->value <= tol);
    CHECK(find_check(r, "positivity")->value >= -tol);
    CHECK(r.subject == ggn.name());
  }
}

TEST_CASE("verify: the dense checks are skipped when P exceeds dense_limit", "[verify]") {
  Problem<double> p(HeadKind::softmax, 2);
  GgnOperator<double> ggn(p.model, *p.head, p.x);
  VerifyOptions o;
  o.dense_limit = 30;  // P = 31
  const VerifyReport r = verify(ggn, o);
  CHECK(r.ok());
  CHECK(find_check(r, "dense symmetry") == nullptr);
  CHECK(find_check(r, "dense J^T M J") == nullptr);
  CHECK(find_check(r, "adjoint identity") != nullptr);
  CHECK(find_check(r, "finite differences") != nullptr);
}

TEST_CASE("verify: an operator with an asymmetric perturbation fails the symmetry checks",
          "[verify]") {
  Problem<double> p(HeadKind::softmax, 3);
  GgnOperator<double> ggn(p.model, *p.head, p.x);
  SkewedOperator<double> skewed(ggn, 0.05);
  const VerifyReport r = verify(skewed);
  CHECK_FALSE(r.ok());
  REQUIRE(find_check(r, "symmetry") != nullptr);
  CHECK_FALSE(find_check(r, "symmetry")->passed);
  CHECK(find_check(r, "symmetry")->value > 1e-9);
  REQUIRE(find_check(r, "dense symmetry") != nullptr);
  CHECK_FALSE(find_check(r, "dense symmetry")->passed);
  CHECK(find_check(r, "finite products")->passed);
  CHECK(r.subject == "skewed(" + ggn.name() + ")");
  // A perturbation below the tolerance is not reported.
  SkewedOperator<double> tiny(ggn, 1e-14);
  CHECK(verify(tiny).ok());
}

TEST_CASE("verify: a negative definite operator fails positivity", "[verify]") {
  DenseOperator<double> neg = negative_definite(8);
  const VerifyReport r = verify(neg);
  CHECK_FALSE(r.ok());
  REQUIRE(find_check(r, "positivity") != nullptr);
  CHECK_FALSE(find_check(r, "positivity")->passed);
  CHECK(find_check(r, "positivity")->value < -0.5);  // a cosine: about -1 here
  CHECK(find_check(r, "symmetry")->passed);
  CHECK(find_check(r, "dense symmetry")->passed);
  // Without the PSD expectation the same operator passes: symmetry is all that is asked.
  VerifyOptions o;
  o.expect_psd = false;
  const VerifyReport r2 = verify(neg, o);
  CHECK(r2.ok());
  CHECK(find_check(r2, "positivity") == nullptr);
}

TEST_CASE("verify: str() has one PASS/FAIL line per check with its value and tolerance",
          "[verify]") {
  Problem<double> p(HeadKind::softmax, 4);
  GgnOperator<double> ggn(p.model, *p.head, p.x);
  SkewedOperator<double> skewed(ggn, 0.05);
  const VerifyReport bad = verify(skewed);
  const std::string s = bad.str();
  INFO(s);
  CHECK(s.find("FAILED") != std::string::npos);
  CHECK(s.find(skewed.name()) != std::string::npos);
  CHECK(line_shows(s, "FAIL", *find_check(bad, "symmetry")));
  CHECK(line_shows(s, "PASS", *find_check(bad, "positivity")));
  // One line per check after the title line.
  CHECK(static_cast<std::size_t>(std::count(s.begin(), s.end(), '\n')) == bad.checks.size() + 1);
  const std::string good = verify(ggn).str();
  CHECK(good.find("all checks passed") != std::string::npos);
  CHECK(good.find("FAIL") == std::string::npos);
  CHECK(good.find("PASS dense J^T M J") != std::string::npos);
}

TEMPLATE_TEST_CASE("verify: the Monte-Carlo and empirical Fisher operators pass", "[verify]", float,
                   double) {
  for (HeadKind k : {HeadKind::softmax, HeadKind::bernoulli, HeadKind::gaussian}) {
    INFO(head_label(k));
    Problem<TestType> p(k, 5);
    MonteCarloFisherOperator<TestType> mc(p.model, *p.head, p.x, 2, 9);
    EmpiricalFisherOperator<TestType> ef(p.model, *p.head, p.x, p.y);
    for (amari::curvature::ScoreOuterProductOperator<TestType>* op :
         {static_cast<amari::curvature::ScoreOuterProductOperator<TestType>*>(&mc),
          static_cast<amari::curvature::ScoreOuterProductOperator<TestType>*>(&ef)}) {
      const VerifyReport r = verify(*op);
      INFO(r.str());
      CHECK(r.ok());
      const std::vector<std::string> want = {"finite products",  "symmetry",
                                             "positivity",       "dense symmetry",
                                             "adjoint identity", "finite differences",
                                             "dense J^T M J"};
      CHECK(check_names(r) == want);
    }
  }
}

TEST_CASE("verify: the Hessian with expect_psd = false passes symmetry and has no positivity check",
          "[verify]") {
  Problem<double> p(HeadKind::softmax, 6);
  // Larger weights: a larger residual term, so the Hessian is far from the GGN.
  Rng rng(60);
  for (Index i = 0; i < p.model.num_parameters(); ++i)
    p.model.parameters()[i] = rng.uniform(-2.0, 2.0);
  HessianOperator<double> h(p.model, *p.head, p.x, p.y);
  VerifyOptions o;
  o.expect_psd = false;
  const VerifyReport r = verify(h, o);
  INFO(r.str());
  CHECK(r.ok());
  CHECK(find_check(r, "positivity") == nullptr);
  REQUIRE(find_check(r, "symmetry") != nullptr);
  CHECK(find_check(r, "symmetry")->passed);
  CHECK(find_check(r, "dense symmetry")->passed);
  // Operators over a recorded model get the linearization checks too.
  REQUIRE(find_check(r, "adjoint identity") != nullptr);
  CHECK(find_check(r, "adjoint identity")->passed);
}

TEST_CASE("verify: an operator held through a LinearOperator reference gets all of its checks",
          "[verify]") {
  // The checks are chosen from the object at run time, not from the static type of the argument.
  Problem<double> p(HeadKind::softmax, 5);
  GgnOperator<double> ggn(p.model, *p.head, p.x);
  amari::curvature::LinearOperator<double>& base = ggn;
  const VerifyReport by_type = verify(ggn), by_base = verify(base);
  CHECK(check_names(by_base) == check_names(by_type));
  REQUIRE(find_check(by_base, "dense J^T M J") != nullptr);
  CHECK(find_check(by_base, "dense J^T M J")->passed);
}

TEST_CASE("verify: an operator recorded before the model moved still passes every check",
          "[verify]") {
  // The record holds a snapshot of the parameters: moving the model afterwards must not make the
  // finite-difference or dense checks compare two different points.
  Problem<double> p(HeadKind::softmax, 5);
  GgnOperator<double> ggn(p.model, *p.head, p.x);
  for (Index i = 0; i < p.model.num_parameters(); ++i) p.model.parameters()[i] += 0.5;
  const VerifyReport r = verify(ggn);
  INFO(r.str());
  REQUIRE(find_check(r, "dense J^T M J") != nullptr);
  CHECK(find_check(r, "dense J^T M J")->passed);
}
