// Tests of the NLL heads (nn/heads.hpp): the closed-form logit-space pieces (gradient, score,
// H_L(z) a) against autodiff and finite differences, the Fisher identities of SEED-NOTES 1.1 and 3
// by exact enumeration (or Monte Carlo for the Gaussian), sampling, stability at extreme logits,
// hand-computed loss values, and the error paths.
#include <amari/nn/heads.hpp>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <functional>
#include <limits>
#include <memory>
#include <numbers>
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
using amari::Tensor;
using amari::Var;
using amari::nn::Gaussian;
using amari::nn::Head;
using amari::nn::SigmoidBernoulli;
using amari::nn::SoftmaxCrossEntropy;
using amari::test::distance;
using amari::test::dot;
using amari::test::max_abs_diff;
using amari::test::norm;
using amari::test::Rng;

constexpr double kSigma = 0.7;
constexpr Index kN = 5;
constexpr Index kC = 4;

bool all_finite(const Tensor<float>& t) {
  return std::all_of(t.begin(), t.end(), [](float v) { return std::isfinite(v); });
}
bool all_finite(const Tensor<double>& t) {
  return std::all_of(t.begin(), t.end(), [](double v) { return std::isfinite(v); });
}

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

// Independent reference probabilities (plain std::exp, no library code).
std::vector<double> softmax_row(const Tensor<double>& z, Index i) {
  const Index c = z.dim(1);
  double m = -std::numeric_limits<double>::infinity();
  for (Index j = 0; j < c; ++j) m = std::max(m, z[i * c + j]);
  std::vector<double> p(static_cast<std::size_t>(c));
  double s = 0;
  for (Index j = 0; j < c; ++j) s += p[static_cast<std::size_t>(j)] = std::exp(z[i * c + j] - m);
  for (double& v : p) v /= s;
  return p;
}
double sigmoid(double z) {
  return 1.0 / (1.0 + std::exp(-z));
}

Tensor<double> random_logits(const Shape& s, Rng& rng) {
  return amari::test::uniform_tensor<double>(s, rng, -3, 3);
}

// One head under test with a generator of targets it accepts.
struct HeadCase {
  std::string label;
  std::shared_ptr<const Head<double>> head;
  std::function<Tensor<double>(const Shape&, Rng&)> targets;
};

std::vector<HeadCase> head_cases() {
  return {
      {"softmax cross-entropy", std::make_shared<SoftmaxCrossEntropy<double>>(),
       [](const Shape& s, Rng& rng) {
         std::vector<int> labels;
         for (Index i = 0; i < s[0]; ++i)
           labels.push_back(static_cast<int>(rng.below(static_cast<std::uint64_t>(s[1]))));
         return amari::nn::one_hot<double>(labels, s[1]);
       }},
      {"sigmoid Bernoulli", std::make_shared<SigmoidBernoulli<double>>(),
       [](const Shape& s, Rng& rng) {
         Tensor<double> y(s);
         for (Index k = 0; k < y.size(); ++k) y[k] = rng.uniform() < 0.5 ? 0.0 : 1.0;
         return y;
       }},
      {"Gaussian sigma 0.7", std::make_shared<Gaussian<double>>(kSigma),
       [](const Shape& s, Rng& rng) { return amari::test::normal_tensor<double>(s, rng, 2.0); }},
  };
}

Tensor<double> hessian_product(const Head<double>& head, const Tensor<double>& z,
                               const Tensor<double>& a) {
  Tensor<double> out(z.shape());
  head.hessian_product(z, a, out);
  return out;
}
Tensor<double> gradient(const Head<double>& head, const Tensor<double>& z,
                        const Tensor<double>& y) {
  Tensor<double> out(z.shape());
  head.gradient(z, y, out);
  return out;
}
Tensor<double> score(const Head<double>& head, const Tensor<double>& z, const Tensor<double>& y) {
  Tensor<double> out(z.shape());
  head.score(z, y, out);
  return out;
}

// Row i of the batch tensor filled with `row` for every example.
Tensor<double> repeat_row(const std::vector<double>& row, Index n) {
  const Index c = static_cast<Index>(row.size());
  Tensor<double> t(Shape{n, c});
  for (Index i = 0; i < n; ++i)
    for (Index j = 0; j < c; ++j) t[i * c + j] = row[static_cast<std::size_t>(j)];
  return t;
}

}  // namespace

// ---- 1. H_L(z) a
// ----------------------------------------------------------------------------------

TEST_CASE(
    "every head: H_L(z) a equals N times the autodiff Hessian-vector product of the mean loss",
    "[nn][heads]") {
  std::uint64_t seed = 11;
  for (const auto& hc : head_cases()) {
    DYNAMIC_SECTION(hc.label) {
      Rng rng(seed);
      const Tensor<double> z = random_logits(Shape{kN, kC}, rng);
      const Tensor<double> y = hc.targets(Shape{kN, kC}, rng);
      const Tensor<double> a = amari::test::normal_tensor<double>(Shape{kN, kC}, rng);
      const Tensor<double> closed = hessian_product(*hc.head, z, a);
      // Both overloads the head exposes for tape variables: nll<Var> and the virtual loss(Var).
      const Head<double>& head = *hc.head;
      Tensor<double> hv = amari::hvp([&](const Var<double>& v) { return head.loss(v, y); }, z, a);
      for (double& v : hv) v *= kN;  // the loss is a mean over the batch, H_L is per example
      INFO("closed form vs tape hvp, relative error " << rel_err(closed, hv));
      CHECK(rel_err(closed, hv) < 1e-12);
      CHECK(norm(closed) > 1e-3);  // the comparison is not trivially between zeros
    }
    ++seed;
  }
}

TEST_CASE("every head: H_L(z) a equals central finite differences of N * gradient(z) along a",
          "[nn][heads]") {
  std::uint64_t seed = 21;
  for (const auto& hc : head_cases()) {
    DYNAMIC_SECTION(hc.label) {
      Rng rng(seed);
      const Tensor<double> z = random_logits(Shape{kN, kC}, rng);
      const Tensor<double> y = hc.targets(Shape{kN, kC}, rng);
      const Tensor<double> a = amari::test::normal_tensor<double>(Shape{kN, kC}, rng);
      const Tensor<double> closed = hessian_product(*hc.head, z, a);
      Tensor<double> ref =
          fd([&](const Tensor<double>& zz) { return gradient(*hc.head, zz, y); }, z, a);
      for (double& v : ref) v *= kN;
      INFO("closed form vs FD of the gradient, relative error " << rel_err(closed, ref));
      CHECK(rel_err(closed, ref) < 1e-7);
    }
    ++seed;
  }
}

TEST_CASE("every head: hessian_product may write its result over the direction (out aliases a)",
          "[nn][heads]") {
  Rng rng(31);
  for (const auto& hc : head_cases()) {
    DYNAMIC_SECTION(hc.label) {
      const Tensor<double> z = random_logits(Shape{kN, kC}, rng);
      const Tensor<double> a = amari::test::normal_tensor<double>(Shape{kN, kC}, rng);
      const Tensor<double> expected = hessian_product(*hc.head, z, a);
      Tensor<double> inout = a.clone();
      hc.head->hessian_product(z, inout, inout);
      CHECK(max_abs_diff(inout, expected) == 0.0);
    }
  }
}

// ---- 2. gradient
// ----------------------------------------------------------------------------------

TEST_CASE("every head: gradient(z, y) equals the tape gradient and finite differences of the loss, "
          "and residual(z, y) is each example's own loss gradient, N gradient() and -score()",
          "[nn][heads]") {
  std::uint64_t seed = 41;
  for (const auto& hc : head_cases()) {
    DYNAMIC_SECTION(hc.label) {
      Rng rng(seed);
      const Tensor<double> z = random_logits(Shape{kN, kC}, rng);
      const Tensor<double> y = hc.targets(Shape{kN, kC}, rng);
      const Head<double>& head = *hc.head;
      const Tensor<double> g = gradient(head, z, y);
      const Tensor<double> tape_g =
          amari::grad([&](const Var<double>& v) { return head.loss(v, y); }, z);
      INFO("closed form vs tape gradient, relative error " << rel_err(g, tape_g));
      CHECK(rel_err(g, tape_g) < 1e-13);
      // Finite differences along every coordinate.
      Tensor<double> fd_g(z.shape());
      for (Index k = 0; k < z.size(); ++k) {
        Tensor<double> e(z.shape());
        e[k] = 1;
        fd_g[k] = fd([&](const Tensor<double>& zz) { return head.loss(zz, y); }, z, e).item();
      }
      INFO("closed form vs FD of the loss, relative error " << rel_err(g, fd_g));
      CHECK(rel_err(g, fd_g) < 1e-8);
      CHECK(norm(g) > 1e-3);
      // The residual, row i against the tape gradient of example i's loss alone (a batch of one
      // row); gradient() is residual / N and score() is -residual.
      Tensor<double> r(z.shape()), s(z.shape());
      head.residual(z, y, r);
      head.score(z, y, s);
      for (Index i = 0; i < kN; ++i) {
        const Tensor<double> zi = z.view(i * kC, Shape{1, kC}).clone(), yi = y.view(i * kC, Shape{1, kC}).clone();
        const Tensor<double> gi = amari::grad([&](const Var<double>& v) { return head.loss(v, yi); }, zi);
        for (Index j = 0; j < kC; ++j) CHECK(r[i * kC + j] == Approx(gi[j]).epsilon(1e-13).margin(1e-15));
      }
      for (Index k = 0; k < z.size(); ++k) {
        CHECK(g[k] == Approx(r[k] / kN).epsilon(1e-15).margin(1e-300));
        CHECK(s[k] == -r[k]);
      }
    }
    ++seed;
  }
}

// ---- 3. Fisher identities
// ---------------------------------------------------------------------------

TEST_CASE("softmax head: exact enumeration gives E_y(s_z) = 0 and E_y(s_z s_z^T) a = H_L(z) a",
          "[nn][heads][fisher]") {
  Rng rng(51);
  const SoftmaxCrossEntropy<double> head;
  const Tensor<double> z = random_logits(Shape{kN, kC}, rng);
  const Tensor<double> a = amari::test::normal_tensor<double>(Shape{kN, kC}, rng);
  Tensor<double> mean_score(z.shape()), fisher_a(z.shape());
  for (Index k = 0; k < kC; ++k) {
    // Outcome y = e_k in every row, weighted per row by its probability p_ik.
    std::vector<double> row(static_cast<std::size_t>(kC), 0.0);
    row[static_cast<std::size_t>(k)] = 1;
    const Tensor<double> s = score(head, z, repeat_row(row, kN));
    for (Index i = 0; i < kN; ++i) {
      const double p = softmax_row(z, i)[static_cast<std::size_t>(k)];
      double sa = 0;
      for (Index j = 0; j < kC; ++j) sa += s[i * kC + j] * a[i * kC + j];
      for (Index j = 0; j < kC; ++j) {
        mean_score[i * kC + j] += p * s[i * kC + j];
        fisher_a[i * kC + j] += p * s[i * kC + j] * sa;
      }
    }
  }
  const Tensor<double> ha = hessian_product(head, z, a);
  CHECK(norm(mean_score) < 1e-12);
  CHECK(max_abs_diff(fisher_a, ha) < 1e-12);
}

TEST_CASE(
    "Bernoulli head: enumeration of all 2^C outcomes gives E_y(s_z) = 0 and E_y(s_z s_z^T) a = "
    "H_L(z) a",
    "[nn][heads][fisher]") {
  constexpr Index c = 3;
  Rng rng(52);
  const SigmoidBernoulli<double> head;
  const Tensor<double> z = random_logits(Shape{kN, c}, rng);
  const Tensor<double> a = amari::test::normal_tensor<double>(Shape{kN, c}, rng);
  Tensor<double> mean_score(z.shape()), fisher_a(z.shape());
  double total_probability = 0;
  for (unsigned bits = 0; bits < (1u << c); ++bits) {
    std::vector<double> row;
    for (Index j = 0; j < c; ++j) row.push_back(static_cast<double>((bits >> j) & 1u));
    const Tensor<double> s = score(head, z, repeat_row(row, kN));
    for (Index i = 0; i < kN; ++i) {
      double p = 1, sa = 0;
      for (Index j = 0; j < c; ++j) {
        const double q = sigmoid(z[i * c + j]);
        p *= row[static_cast<std::size_t>(j)] == 1 ? q : 1 - q;
        sa += s[i * c + j] * a[i * c + j];
      }
      if (i == 0) total_probability += p;
      for (Index j = 0; j < c; ++j) {
        mean_score[i * c + j] += p * s[i * c + j];
        fisher_a[i * c + j] += p * s[i * c + j] * sa;
      }
    }
  }
  CHECK(total_probability == Approx(1.0).epsilon(1e-14));
  const Tensor<double> ha = hessian_product(head, z, a);
  CHECK(norm(mean_score) < 1e-12);
  CHECK(max_abs_diff(fisher_a, ha) < 1e-12);
}

TEST_CASE(
    "Gaussian head: Monte Carlo over sample() gives E_y(s_z) = 0 and E_y(s_z s_z^T) a = H_L(z) a "
    "within 5 standard errors",
    "[nn][heads][fisher]") {
  constexpr int draws = 200000;
  Rng rng(53);
  const Gaussian<double> head(kSigma);
  const Tensor<double> z = random_logits(Shape{kN, kC}, rng);
  const Tensor<double> a = amari::test::normal_tensor<double>(Shape{kN, kC}, rng);
  // Running sums of s and of s (s . a), and of their squares for the standard errors.
  std::vector<double> s1(kN * kC), s2(kN * kC), f1(kN * kC), f2(kN * kC);
  Tensor<double> s(z.shape());
  for (int m = 0; m < draws; ++m) {
    const Tensor<double> y = head.sample(z, 7, static_cast<std::uint64_t>(m));
    head.score(z, y, s);
    for (Index i = 0; i < kN; ++i) {
      double sa = 0;
      for (Index j = 0; j < kC; ++j) sa += s[i * kC + j] * a[i * kC + j];
      for (Index j = 0; j < kC; ++j) {
        const auto k = static_cast<std::size_t>(i * kC + j);
        const double f = s[i * kC + j] * sa;
        s1[k] += s[i * kC + j];
        s2[k] += s[i * kC + j] * s[i * kC + j];
        f1[k] += f;
        f2[k] += f * f;
      }
    }
  }
  const Tensor<double> ha = hessian_product(head, z, a);
  for (std::size_t k = 0; k < s1.size(); ++k) {
    const double ms = s1[k] / draws, mf = f1[k] / draws;
    const double se_s = std::sqrt((s2[k] / draws - ms * ms) / draws);
    const double se_f = std::sqrt((f2[k] / draws - mf * mf) / draws);
    INFO("component " << k << ": E[s] ~ " << ms << " (se " << se_s << "), E[s s^T a] ~ " << mf
                      << " (se " << se_f << ") vs H_L a = " << ha[static_cast<Index>(k)]);
    // Sanity of the standard errors themselves: Var(s_j) = 1 / sigma^2.
    CHECK(se_s == Approx(1.0 / (kSigma * std::sqrt(double(draws)))).epsilon(0.02));
    CHECK(std::fabs(ms) < 5 * se_s);
    CHECK(std::fabs(mf - ha[static_cast<Index>(k)]) < 5 * se_f);
  }
}

// ---- 4. sampling
// ----------------------------------------------------------------------------------

TEST_CASE("softmax head: sample() draws each class with frequency p within 5 standard errors",
          "[nn][heads][sample]") {
  constexpr Index m = 100000;
  const std::vector<double> logits = {1.0, -1.0, 0.5, 2.0};
  const Tensor<double> z = repeat_row(logits, m);
  const Tensor<double> y = SoftmaxCrossEntropy<double>().sample(z, 3, 0);
  std::vector<double> count(4, 0.0);
  Index not_one_hot = 0;
  for (Index i = 0; i < m; ++i) {
    double row_sum = 0;
    for (Index j = 0; j < 4; ++j) {
      const double v = y[i * 4 + j];
      not_one_hot += v != 0.0 && v != 1.0;
      row_sum += v;
      count[static_cast<std::size_t>(j)] += v;
    }
    not_one_hot += row_sum != 1.0;
  }
  REQUIRE(not_one_hot == 0);
  const std::vector<double> p = softmax_row(z, 0);
  for (std::size_t j = 0; j < 4; ++j) {
    const double se = std::sqrt(p[j] * (1 - p[j]) / m);
    INFO("class " << j << ": frequency " << count[j] / m << ", p " << p[j] << ", se " << se);
    CHECK(std::fabs(count[j] / m - p[j]) < 5 * se);
  }
}

TEST_CASE(
    "Bernoulli head: sample() draws 1 with frequency sigmoid(z) per output within 5 standard "
    "errors",
    "[nn][heads][sample]") {
  constexpr Index m = 100000;
  const std::vector<double> logits = {-1.0, 0.3, 2.0};
  const Tensor<double> z = repeat_row(logits, m);
  const Tensor<double> y = SigmoidBernoulli<double>().sample(z, 3, 0);
  std::vector<double> count(3, 0.0);
  Index not_binary = 0;
  for (Index i = 0; i < m; ++i)
    for (Index j = 0; j < 3; ++j) {
      const double v = y[i * 3 + j];
      not_binary += v != 0.0 && v != 1.0;
      count[static_cast<std::size_t>(j)] += v;
    }
  REQUIRE(not_binary == 0);
  for (std::size_t j = 0; j < 3; ++j) {
    const double p = sigmoid(logits[j]), se = std::sqrt(p * (1 - p) / m);
    INFO("output " << j << ": frequency " << count[j] / m << ", p " << p << ", se " << se);
    CHECK(std::fabs(count[j] / m - p) < 5 * se);
  }
}

TEST_CASE(
    "Gaussian head: sample() has mean z and variance sigma^2 per output within 5 standard errors",
    "[nn][heads][sample]") {
  constexpr Index m = 100000;
  const std::vector<double> logits = {-1.5, 0.0, 2.5};
  const Tensor<double> z = repeat_row(logits, m);
  const Tensor<double> y = Gaussian<double>(kSigma).sample(z, 3, 0);
  for (Index j = 0; j < 3; ++j) {
    double s1 = 0, s2 = 0;
    for (Index i = 0; i < m; ++i) s1 += y[i * 3 + j];
    const double mean = s1 / m;
    for (Index i = 0; i < m; ++i) s2 += (y[i * 3 + j] - mean) * (y[i * 3 + j] - mean);
    const double var = s2 / (m - 1);
    const double se_mean = kSigma / std::sqrt(double(m));
    const double se_var = kSigma * kSigma * std::sqrt(2.0 / (m - 1));
    INFO("output " << j << ": mean " << mean << " (z " << logits[static_cast<std::size_t>(j)]
                   << "), variance " << var);
    CHECK(std::fabs(mean - logits[static_cast<std::size_t>(j)]) < 5 * se_mean);
    CHECK(std::fabs(var - kSigma * kSigma) < 5 * se_var);
  }
}

TEST_CASE(
    "every head: sample() is counter-based: same key same draw, other sample index or seed other "
    "draw, "
    "and a sub-batch with first_example reproduces the rows of the full batch",
    "[nn][heads][sample]") {
  Rng rng(61);
  const Shape shape{64, kC};
  for (const auto& hc : head_cases()) {
    DYNAMIC_SECTION(hc.label) {
      const Head<double>& head = *hc.head;
      const Tensor<double> z = random_logits(shape, rng);
      const Tensor<double> y1 = head.sample(z, 99, 4, 0);
      const Tensor<double> y2 = head.sample(z, 99, 4, 0);
      CHECK(max_abs_diff(y1, y2) == 0.0);
      CHECK(max_abs_diff(y1, head.sample(z, 99, 5, 0)) > 0.0);
      CHECK(max_abs_diff(y1, head.sample(z, 98, 4, 0)) > 0.0);
      CHECK(max_abs_diff(y1, head.sample(z, 99, 4, 1)) > 0.0);
      // Rows 10..19 sampled on their own, told they start at example 10.
      const Tensor<double> part = head.sample(z.view(10 * kC, Shape{10, kC}), 99, 4, 10);
      CHECK(max_abs_diff(part, y1.view(10 * kC, Shape{10, kC})) == 0.0);
      // ...and not merely because every row draws the same numbers.
      const Tensor<double> shifted = head.sample(z.view(10 * kC, Shape{10, kC}), 99, 4, 0);
      CHECK(max_abs_diff(shifted, y1.view(10 * kC, Shape{10, kC})) > 0.0);
    }
  }
}

// ---- 5. stability
// ---------------------------------------------------------------------------------

TEMPLATE_TEST_CASE("every head: logits of +-1e4 give a finite loss, gradient and H_L(z) a",
                   "[nn][heads][stability]", float, double) {
  using T = TestType;
  const Tensor<T> z = Tensor<T>::from(Shape{4, 3}, {T(1e4), T(-1e4), T(0),      //
                                                    T(-1e4), T(1e4), T(1e4),    //
                                                    T(-1e4), T(-1e4), T(-1e4),  //
                                                    T(1e4), T(1e4), T(1e4)});
  const Tensor<T> labels_onehot = amari::nn::one_hot<T>({1, 0, 2, 0}, 3);
  const Tensor<T> bits = Tensor<T>::from(Shape{4, 3}, {1, 0, 1, 1, 0, 1, 0, 1, 1, 0, 0, 1});
  const Tensor<T> reals = Tensor<T>::from(
      Shape{4, 3},
      {T(0.5), T(-1), T(2), T(0), T(1), T(-3), T(0.25), T(0.75), T(-0.5), T(1.5), T(-2), T(0)});
  const Tensor<T> a = Tensor<T>::from(Shape{4, 3}, {1, -2, 3, 0.5, 0.25, -1, 2, 1, 1, -1, 0, 1});
  const SoftmaxCrossEntropy<T> softmax;
  const SigmoidBernoulli<T> bernoulli;
  const Gaussian<T> gaussian(kSigma);
  const std::vector<std::pair<const Head<T>*, Tensor<T>>> cases = {
      {&softmax, labels_onehot}, {&bernoulli, bits}, {&gaussian, reals}};
  for (const auto& head_and_targets : cases) {
    // Plain references, not a structured binding: lambdas below capture them (clang 14 cannot
    // capture structured bindings).
    const Head<T>* head = head_and_targets.first;
    const Tensor<T>& y = head_and_targets.second;
    DYNAMIC_SECTION(head->name()) {
      const T loss = head->loss(z, y).item();
      CHECK(std::isfinite(loss));
      const auto [tape_loss, tape_g] =
          amari::value_and_grad([&](const Var<T>& v) { return head->loss(v, y); }, z);
      CHECK(std::isfinite(tape_loss));
      CHECK(all_finite(tape_g));
      Tensor<T> g(z.shape()), ha(z.shape()), s(z.shape());
      head->gradient(z, y, g);
      head->hessian_product(z, a, ha);
      head->score(z, y, s);
      CHECK(all_finite(g));
      CHECK(all_finite(ha));
      CHECK(all_finite(s));
      const Dual<T> d = head->loss(Dual<T>(z, a), y);
      CHECK(std::isfinite(d.primal().item()));
      CHECK(std::isfinite(d.tangent().item()));
      // The closed form and the tape agree even here (relative to the gradient's scale).
      CHECK(max_abs_diff(g, tape_g) <= 1e-5 * std::max(1.0, norm(g)));
    }
  }
}

TEMPLATE_TEST_CASE(
    "softmax and Bernoulli heads: loss is ~0 for the right class at +1e4 and ~2e4 (1e4) when wrong",
    "[nn][heads][stability]", float, double) {
  using T = TestType;
  const SoftmaxCrossEntropy<T> softmax;
  const Tensor<T> z = Tensor<T>::from(Shape{1, 3}, {T(1e4), T(-1e4), T(0)});
  const T right = softmax.loss(z, amari::nn::one_hot<T>({0}, 3)).item();
  const T wrong = softmax.loss(z, amari::nn::one_hot<T>({1}, 3)).item();
  const T middle = softmax.loss(z, amari::nn::one_hot<T>({2}, 3)).item();
  CHECK(std::fabs(right) <= 1e-3);
  CHECK(std::fabs(wrong - 2e4) <= 1e-3 * 2e4);
  CHECK(std::fabs(middle - 1e4) <= 1e-3 * 1e4);
  // The gradient is (p - y) / N with p = e_0: exact values, not merely finite.
  Tensor<T> g(z.shape());
  softmax.gradient(z, amari::nn::one_hot<T>({1}, 3), g);
  CHECK(max_abs_diff(g, Tensor<double>::from(Shape{1, 3}, {1, -1, 0})) <= 1e-6);
  const Tensor<T> tape_g = amari::grad(
      [&](const Var<T>& v) { return softmax.loss(v, amari::nn::one_hot<T>({1}, 3)); }, z);
  CHECK(max_abs_diff(tape_g, Tensor<double>::from(Shape{1, 3}, {1, -1, 0})) <= 1e-6);

  const SigmoidBernoulli<T> bernoulli;
  const Tensor<T> zb = Tensor<T>::from(Shape{1, 2}, {T(1e4), T(-1e4)});
  CHECK(std::fabs(bernoulli.loss(zb, Tensor<T>::from(Shape{1, 2}, {1, 0})).item()) <= 1e-3);
  CHECK(std::fabs(bernoulli.loss(zb, Tensor<T>::from(Shape{1, 2}, {0, 1})).item() - 2e4) <=
        1e-3 * 2e4);
  CHECK(std::fabs(bernoulli.loss(zb, Tensor<T>::from(Shape{1, 2}, {1, 1})).item() - 1e4) <=
        1e-3 * 1e4);
}

// ---- 6. loss values and modes
// ------------------------------------------------------------------------

TEST_CASE("every head: loss matches hand-computed values", "[nn][heads]") {
  SECTION("softmax: rows [1, 2, 3] label 2 and [0, ln 2, ln 3] label 0") {
    const Tensor<double> z =
        Tensor<double>::from(Shape{2, 3}, {1, 2, 3, 0, std::log(2.0), std::log(3.0)});
    const double row0 = std::log(std::exp(1.0) + std::exp(2.0) + std::exp(3.0)) - 3;
    const double row1 = std::log(6.0);  // p = (1, 2, 3) / 6
    const double loss =
        SoftmaxCrossEntropy<double>().loss(z, amari::nn::one_hot<double>({2, 0}, 3)).item();
    CHECK(loss == Approx((row0 + row1) / 2).epsilon(1e-14));
    // Soft targets: the cross-entropy -sum_c y_c log p_c.
    const Tensor<double> soft = Tensor<double>::from(Shape{1, 3}, {0.25, 0.25, 0.5});
    const Tensor<double> z1 = Tensor<double>::from(Shape{1, 3}, {0, std::log(2.0), std::log(3.0)});
    const double ce =
        -(0.25 * std::log(1.0 / 6) + 0.25 * std::log(2.0 / 6) + 0.5 * std::log(3.0 / 6));
    CHECK(SoftmaxCrossEntropy<double>().loss(z1, soft).item() == Approx(ce).epsilon(1e-14));
  }
  SECTION("Bernoulli: z = 0 costs log 2 per output; z = [2, -1] with y = [1, 0]") {
    const Tensor<double> z0(Shape{2, 3});
    const Tensor<double> y0 = Tensor<double>::from(Shape{2, 3}, {1, 0, 1, 0, 0, 1});
    CHECK(SigmoidBernoulli<double>().loss(z0, y0).item() ==
          Approx(3 * std::log(2.0)).epsilon(1e-14));
    const Tensor<double> z = Tensor<double>::from(Shape{1, 2}, {2, -1});
    const Tensor<double> y = Tensor<double>::from(Shape{1, 2}, {1, 0});
    const double expected = -std::log(sigmoid(2.0)) - std::log(1 - sigmoid(-1.0));
    CHECK(SigmoidBernoulli<double>().loss(z, y).item() == Approx(expected).epsilon(1e-14));
  }
  SECTION("Gaussian: ||z - y||^2 / (2 sigma^2 N), plus nll_constant for the full NLL") {
    Rng rng(71);
    const Tensor<double> z = random_logits(Shape{kN, kC}, rng);
    const Tensor<double> y = amari::test::normal_tensor<double>(Shape{kN, kC}, rng);
    double ss = 0;
    for (Index k = 0; k < z.size(); ++k) ss += (z[k] - y[k]) * (z[k] - y[k]);
    const Gaussian<double> head(kSigma);
    CHECK(head.loss(z, y).item() == Approx(ss / (2 * kSigma * kSigma * kN)).epsilon(1e-14));
    CHECK(head.nll_constant(kC) ==
          Approx(0.5 * kC * std::log(2 * std::numbers::pi * kSigma * kSigma)).epsilon(1e-14));
    CHECK(head.sigma() == kSigma);
  }
}

TEST_CASE(
    "every head: Tensor, Dual and Var modes give the same loss, and the Dual tangent is <gradient, "
    "tangent>",
    "[nn][heads]") {
  std::uint64_t seed = 81;
  for (const auto& hc : head_cases()) {
    DYNAMIC_SECTION(hc.label) {
      Rng rng(seed);
      const Head<double>& head = *hc.head;
      const Tensor<double> z = random_logits(Shape{kN, kC}, rng);
      const Tensor<double> y = hc.targets(Shape{kN, kC}, rng);
      const Tensor<double> v = amari::test::normal_tensor<double>(Shape{kN, kC}, rng);
      const double plain = head.loss(z, y).item();
      const Dual<double> dual = head.loss(Dual<double>(z, v), y);
      amari::Tape<double> tape;
      const Var<double> var = head.loss(tape.variable(z), y);
      CHECK(dual.primal().item() == plain);
      CHECK(var.value().item() == plain);
      // A constant dual (no tangent) gives the same primal and a zero tangent.
      const Dual<double> constant = head.loss(Dual<double>(z), y);
      CHECK(constant.primal().item() == plain);
      CHECK(constant.tangent_or_zeros().item() == 0.0);
      const double jvp = dual.tangent().item();
      const double expected = dot(gradient(head, z, y), v);
      CHECK(jvp == Approx(expected).epsilon(1e-12));
      CHECK(std::fabs(expected) > 1e-3);
    }
    ++seed;
  }
}

TEST_CASE("every head: float results agree with double to float precision", "[nn][heads]") {
  Rng rng(91);
  const Tensor<double> z = random_logits(Shape{kN, kC}, rng);
  const Tensor<double> a = amari::test::normal_tensor<double>(Shape{kN, kC}, rng);
  const Tensor<double> yd = amari::nn::one_hot<double>({0, 3, 1, 2, 3}, kC);
  const auto zf = amari::test::convert<float>(z), af = amari::test::convert<float>(a),
             yf = amari::test::convert<float>(yd);
  auto check = [&](const Head<double>& hd, const Head<float>& hf) {
    INFO(hd.name());
    CHECK(hf.loss(zf, yf).item() == Approx(hd.loss(z, yd).item()).epsilon(1e-5));
    Tensor<float> gf(zf.shape()), hf_a(zf.shape());
    hf.gradient(zf, yf, gf);
    hf.hessian_product(zf, af, hf_a);
    CHECK(rel_err(gf, gradient(hd, z, yd)) < 1e-5);
    CHECK(rel_err(hf_a, hessian_product(hd, z, a)) < 1e-5);
  };
  check(SoftmaxCrossEntropy<double>(), SoftmaxCrossEntropy<float>());
  check(SigmoidBernoulli<double>(), SigmoidBernoulli<float>());
  check(Gaussian<double>(kSigma), Gaussian<float>(kSigma));
}

// ---- 7. errors
// ----------------------------------------------------------------------------------------

TEST_CASE("every head: targets of another shape raise ShapeError naming the head and both shapes",
          "[nn][heads][errors]") {
  const Tensor<double> z(Shape{5, 4});
  const Tensor<double> y(Shape{5, 3});
  const std::vector<std::pair<std::shared_ptr<const Head<double>>, std::string>> heads = {
      {std::make_shared<SoftmaxCrossEntropy<double>>(), "softmax"},
      {std::make_shared<SigmoidBernoulli<double>>(), "bernoulli"},
      {std::make_shared<Gaussian<double>>(kSigma), "gaussian"}};
  for (const auto& [head, tag] : heads) {
    DYNAMIC_SECTION(tag) {
      const MessageContains names({tag, "(5, 4)", "(5, 3)"});
      Tensor<double> out(z.shape());
      amari::Tape<double> tape;
      CHECK_THROWS_MATCHES(head->loss(z, y), amari::ShapeError, names);
      CHECK_THROWS_MATCHES(head->loss(Dual<double>(z), y), amari::ShapeError, names);
      CHECK_THROWS_MATCHES(head->loss(tape.variable(z), y), amari::ShapeError, names);
      CHECK_THROWS_MATCHES(head->gradient(z, y, out), amari::ShapeError, names);
      CHECK_THROWS_MATCHES(head->score(z, y, out), amari::ShapeError, names);
      // A direction or output buffer of the wrong shape.
      Tensor<double> bad(Shape{5, 3});
      CHECK_THROWS_MATCHES(head->hessian_product(z, bad, out), amari::ShapeError, names);
      CHECK_THROWS_MATCHES(head->hessian_product(z, out, bad), amari::ShapeError, names);
      CHECK_THROWS_MATCHES(head->gradient(z, z, bad), amari::ShapeError, names);
    }
  }
}

TEST_CASE("every head: rank-1 logits raise ShapeError, an empty batch or zero outputs raise ValueError",
          "[nn][heads][errors]") {
  for (const auto& hc : head_cases()) {
    DYNAMIC_SECTION(hc.label) {
      const Head<double>& head = *hc.head;
      const Tensor<double> v(Shape{4});
      Tensor<double> out(Shape{4});
      CHECK_THROWS_MATCHES(head.loss(v, v), amari::ShapeError, MessageContains({"(4)"}));
      CHECK_THROWS_AS(head.gradient(v, v, out), amari::ShapeError);
      CHECK_THROWS_AS(head.hessian_product(v, v, out), amari::ShapeError);
      CHECK_THROWS_AS(head.sample(v, 1, 0), amari::ShapeError);
      CHECK_THROWS_AS(head.predict(v), amari::ShapeError);
      const Tensor<double> e(Shape{0, 4});
      Tensor<double> eout(Shape{0, 4});
      CHECK_THROWS_MATCHES(head.loss(e, e), amari::ValueError,
                           MessageContains({"empty batch", "(0, 4)"}));
      CHECK_THROWS_AS(head.loss(Dual<double>(e), e), amari::ValueError);
      CHECK_THROWS_AS(head.gradient(e, e, eout), amari::ValueError);
      CHECK_THROWS_AS(head.hessian_product(e, e, eout), amari::ValueError);
      CHECK_THROWS_AS(head.sample(e, 1, 0), amari::ValueError);
      const Tensor<double> c0(Shape{3, 0});
      Tensor<double> c0out(Shape{3, 0});
      CHECK_THROWS_MATCHES(head.loss(c0, c0), amari::ValueError,
                           MessageContains({"no outputs per example", "(3, 0)"}));
      CHECK_THROWS_AS(head.gradient(c0, c0, c0out), amari::ValueError);
      CHECK_THROWS_AS(head.hessian_product(c0, c0, c0out), amari::ValueError);
      CHECK_THROWS_AS(head.sample(c0, 1, 0), amari::ValueError);
      CHECK_THROWS_AS(head.predict(c0), amari::ValueError);
    }
  }
}

TEST_CASE(
    "one_hot: a label outside 0..C-1 raises ValueError naming the label, Gaussian rejects sigma <= "
    "0 or NaN",
    "[nn][heads][errors]") {
  CHECK_THROWS_MATCHES(amari::nn::one_hot<double>({0, 7, 1}, 4), amari::ValueError,
                       MessageContains({"label 7", "position 1", "[0, 4)"}));
  CHECK_THROWS_MATCHES(amari::nn::one_hot<double>({-1}, 4), amari::ValueError,
                       MessageContains({"label -1"}));
  CHECK_THROWS_MATCHES(amari::nn::one_hot<double>({4}, 4), amari::ValueError,
                       MessageContains({"label 4"}));
  CHECK_THROWS_AS(amari::nn::one_hot<double>({0}, 0), amari::ValueError);
  const Tensor<double> y = amari::nn::one_hot<double>({2, 0}, 3);
  CHECK(max_abs_diff(y, Tensor<double>::from(Shape{2, 3}, {0, 0, 1, 1, 0, 0})) == 0.0);

  CHECK_THROWS_MATCHES(Gaussian<double>(0.0), amari::ValueError, MessageContains({"sigma"}));
  CHECK_THROWS_AS(Gaussian<double>(-0.5), amari::ValueError);
  CHECK_THROWS_AS(Gaussian<double>(std::nan("")), amari::ValueError);
  CHECK_THROWS_AS(Gaussian<float>(std::numeric_limits<double>::infinity()), amari::ValueError);
  CHECK_NOTHROW(Gaussian<double>(1e-3));
}

// ---- 8. prediction helpers
// --------------------------------------------------------------------------

TEST_CASE(
    "prediction helpers: softmax predict() rows are probabilities, argmax_rows and accuracy on a "
    "hand case",
    "[nn][heads]") {
  Rng rng(101);
  const Tensor<double> z = random_logits(Shape{kN, kC}, rng);
  const Tensor<double> p = SoftmaxCrossEntropy<double>().predict(z);
  for (Index i = 0; i < kN; ++i) {
    double s = 0;
    const std::vector<double> ref = softmax_row(z, i);
    for (Index j = 0; j < kC; ++j) {
      s += p[i * kC + j];
      CHECK(p[i * kC + j] == Approx(ref[static_cast<std::size_t>(j)]).epsilon(1e-14));
    }
    CHECK(s == Approx(1.0).epsilon(1e-15));
  }
  // Bernoulli predicts sigmoid(z), the Gaussian predicts z itself.
  const Tensor<double> pb = SigmoidBernoulli<double>().predict(z);
  for (Index k = 0; k < z.size(); ++k) CHECK(pb[k] == Approx(sigmoid(z[k])).epsilon(1e-14));
  CHECK(max_abs_diff(Gaussian<double>(kSigma).predict(z), z) == 0.0);

  const Tensor<double> h = Tensor<double>::from(Shape{4, 3}, {0.1, 0.7, 0.2,    // 1
                                                              5, -1, 4.9,       // 0
                                                              -3, -2, -1,       // 2
                                                              0.5, 0.5, 0.1});  // tie: first, 0
  CHECK(amari::nn::argmax_rows(h) == std::vector<int>{1, 0, 2, 0});
  CHECK(amari::nn::accuracy(h, {1, 0, 2, 0}) == 1.0);
  CHECK(amari::nn::accuracy(h, {1, 2, 2, 1}) == 0.5);
  CHECK(amari::nn::accuracy(h, {0, 1, 0, 1}) == 0.0);
  CHECK_THROWS_AS(amari::nn::accuracy(h, {1, 0, 2}), amari::ShapeError);
  CHECK_THROWS_AS(amari::nn::argmax_rows(Tensor<double>(Shape{3})), amari::ShapeError);
}

TEST_CASE("every head: F_R(z) a and H_L(z, y) a equal the target-free H_L(z) a, which needs no targets",
          "[nn][heads]") {
  // SEED-NOTES 3: for an exponential family with natural parameter z, H_L does not depend on y and
  // equals the logit-space Fisher F_R; the default fisher_product and targeted hessian_product
  // must give exactly the target-free product.
  Rng rng(97);
  for (const auto& hc : head_cases()) {
    DYNAMIC_SECTION(hc.label) {
      const Tensor<double> z = random_logits(Shape{kN, kC}, rng);
      const Tensor<double> y = hc.targets(Shape{kN, kC}, rng);
      const Tensor<double> a = amari::test::normal_tensor<double>(Shape{kN, kC}, rng);
      const Tensor<double> expected = hessian_product(*hc.head, z, a);
      Tensor<double> fisher(z.shape()), targeted(z.shape());
      hc.head->fisher_product(z, a, fisher);
      hc.head->hessian_product(z, y, a, targeted);
      CHECK(max_abs_diff(fisher, expected) == 0.0);
      CHECK(max_abs_diff(targeted, expected) == 0.0);
      CHECK_FALSE(hc.head->hessian_depends_on_targets());
      CHECK(norm(expected) > 1e-3);
    }
  }
}
