// Tests of the learned-variance Gaussian head (nn/gaussian_variance_head.hpp), the head of
// SEED-NOTES 3 whose logits are not the natural parameter: loss and gradient against hand values,
// the tape and finite differences; F_R against E_y[s s^T] computed exactly by Gauss-Hermite
// quadrature (the moments of a Gaussian up to degree 5); H_L(z, y) against the autodiff Hessian of
// the loss; the indefiniteness of H_L at a large residual (a negative eigenvalue of the dense
// matrix); the log-variance clamp; counter-based sampling; the error paths.
#include <amari/nn/gaussian_variance_head.hpp>

#include <cmath>
#include <functional>
#include <limits>
#include <numbers>
#include <string>
#include <vector>

#include <catch2/catch.hpp>

#include "support/dense.hpp"
#include "support/matchers.hpp"
#include "support/random.hpp"
#include "support/sym_eigen.hpp"

namespace {

using amari::Index;
using amari::Shape;
using amari::Tensor;
using amari::Var;
using amari::nn::GaussianLearnedVariance;
using amari::test::Dense;
using amari::test::max_abs_diff;
using amari::test::MessageContains;
using amari::test::norm;
using amari::test::rel_err;
using amari::test::Rng;

constexpr Index kN = 4;
constexpr Index kC = 3;  // outputs; logits have 2 kC columns

using Head = GaussianLearnedVariance<double>;

// Logits (mu, s) with means in [-2, 2] and log-variances in [-1.5, 1.5]; targets near the means.
Tensor<double> random_logits(Rng& rng, Index n = kN) {
  Tensor<double> z(Shape{n, 2 * kC});
  for (Index i = 0; i < n; ++i)
    for (Index j = 0; j < kC; ++j) {
      z[i * 2 * kC + j] = rng.uniform(-2, 2);
      z[i * 2 * kC + kC + j] = rng.uniform(-1.5, 1.5);
    }
  return z;
}
Tensor<double> random_targets(Rng& rng, Index n = kN) {
  return amari::test::normal_tensor<double>(Shape{n, kC}, rng, 1.5);
}

Tensor<double> call(const std::function<void(Tensor<double>&)>& f, const Shape& shape) {
  Tensor<double> out(shape);
  f(out);
  return out;
}

// d/dt f(x + t d) at t = 0, central differences with one Richardson step.
double fd(const std::function<double(const Tensor<double>&)>& f, const Tensor<double>& x,
          const Tensor<double>& d, double h = 1e-3) {
  auto at = [&](double t) {
    Tensor<double> y = x.clone();
    for (Index k = 0; k < y.size(); ++k) y[k] += t * d[k];
    return f(y);
  };
  return (8 * (at(h) - at(-h)) - (at(2 * h) - at(-2 * h))) / (12 * h);
}

// The loss of example i alone written out with std::exp (no library code), clamp included.
double reference_nll_row(const Tensor<double>& z, const Tensor<double>& y, Index i, double lo,
                         double hi) {
  double l = 0;
  for (Index j = 0; j < kC; ++j) {
    const double s = std::min(std::max(z[i * 2 * kC + kC + j], lo), hi);
    const double r = y[i * kC + j] - z[i * 2 * kC + j];
    l += 0.5 * (s + r * r * std::exp(-s));
  }
  return l;
}

// The dense 2C x 2C Hessian of example i's loss in z_i, column by column from tape
// Hessian-vector products (the autodiff reference, independent of the closed form).
Dense tape_logit_hessian(const Head& head, const Tensor<double>& z1, const Tensor<double>& y1) {
  Dense h(2 * kC);
  for (Index k = 0; k < 2 * kC; ++k) {
    Tensor<double> e(z1.shape());
    e[k] = 1;
    const Tensor<double> col =
        amari::hvp([&](const Var<double>& v) { return head.loss(v, y1); }, z1, e);
    for (Index r = 0; r < 2 * kC; ++r) h(r, k) = col[r];
  }
  return h;
}

}  // namespace

TEST_CASE("learned-variance head: loss equals the hand-written NLL and leaves out (C/2) log 2 pi",
          "[nn][heads][variance]") {
  Rng rng(1);
  const Head head;
  const Tensor<double> z = random_logits(rng), y = random_targets(rng);
  double expected = 0;
  for (Index i = 0; i < kN; ++i) expected += reference_nll_row(z, y, i, -20, 20) / kN;
  CHECK(head.loss(z, y).item() == Approx(expected).epsilon(1e-14));
  CHECK(Head::nll_constant(kC) == Approx(1.5 * std::log(2 * std::numbers::pi)).epsilon(1e-15));
}

TEST_CASE("learned-variance head: residual is each example's own loss gradient and -score",
          "[nn][heads][variance]") {
  Rng rng(12);
  const Head head;
  const Tensor<double> z = random_logits(rng), y = random_targets(rng);
  const Tensor<double> r = call([&](Tensor<double>& o) { head.residual(z, y, o); }, z.shape());
  const Tensor<double> s = call([&](Tensor<double>& o) { head.score(z, y, o); }, z.shape());
  const Index zc = z.dim(1), yc = y.dim(1);
  for (Index i = 0; i < kN; ++i) {
    const Tensor<double> zi = z.view(i * zc, Shape{1, zc}).clone(), yi = y.view(i * yc, Shape{1, yc}).clone();
    const Tensor<double> gi = amari::grad([&](const Var<double>& v) { return head.loss(v, yi); }, zi);
    for (Index j = 0; j < zc; ++j) CHECK(r[i * zc + j] == Approx(gi[j]).epsilon(1e-13).margin(1e-15));
  }
  for (Index k = 0; k < z.size(); ++k) CHECK(s[k] == -r[k]);
}

TEST_CASE(
    "learned-variance head: gradient equals the tape gradient and finite differences of the loss",
    "[nn][heads][variance]") {
  Rng rng(2);
  const Head head;
  const Tensor<double> z = random_logits(rng), y = random_targets(rng);
  const Tensor<double> g = call([&](Tensor<double>& o) { head.gradient(z, y, o); }, z.shape());
  const Tensor<double> tape_g =
      amari::grad([&](const Var<double>& v) { return head.loss(v, y); }, z);
  CHECK(rel_err(g, tape_g) < 1e-13);
  Tensor<double> fd_g(z.shape());
  for (Index k = 0; k < z.size(); ++k) {
    Tensor<double> e(z.shape());
    e[k] = 1;
    fd_g[k] = fd([&](const Tensor<double>& zz) { return head.loss(zz, y).item(); }, z, e);
  }
  INFO("closed form vs finite differences, relative error " << rel_err(g, fd_g));
  CHECK(rel_err(g, fd_g) < 1e-8);
  CHECK(norm(g) > 1e-2);
  // The score is minus the per-example gradient.
  const Tensor<double> s = call([&](Tensor<double>& o) { head.score(z, y, o); }, z.shape());
  for (Index k = 0; k < z.size(); ++k) CHECK(s[k] == Approx(-kN * g[k]).epsilon(1e-14));
}

TEST_CASE("learned-variance head: H_L(z, y) a equals the autodiff Hessian of the loss in z",
          "[nn][heads][variance]") {
  Rng rng(3);
  const Head head;
  const Tensor<double> z = random_logits(rng), y = random_targets(rng);
  const Tensor<double> a = amari::test::normal_tensor<double>(z.shape(), rng);
  const Tensor<double> closed =
      call([&](Tensor<double>& o) { head.hessian_product(z, y, a, o); }, z.shape());
  Tensor<double> hv = amari::hvp([&](const Var<double>& v) { return head.loss(v, y); }, z, a);
  for (double& v : hv) v *= kN;  // the loss is a mean, H_L is per example
  INFO("closed form vs tape hvp, relative error " << rel_err(closed, hv));
  CHECK(rel_err(closed, hv) < 1e-12);
  CHECK(norm(closed) > 1e-2);
  // In place (out aliases a) gives the same numbers.
  Tensor<double> inout = a.clone();
  head.hessian_product(z, y, inout, inout);
  CHECK(max_abs_diff(inout, closed) == 0.0);
  CHECK(head.hessian_depends_on_targets());
}

TEST_CASE(
    "learned-variance head: F_R(z) a equals E_y[s s^T] a and E_y[H_L(z, y)] a, exactly by "
    "quadrature",
    "[nn][heads][variance]") {
  // y_c = mu_c + sigma_c t with t on the 3-point Gauss-Hermite rule (0 with weight 2/3, +-sqrt(3)
  // with weight 1/6), independently per output: exact for polynomials of degree <= 5 in t, and
  // s s^T and H_L are of degree <= 4. Each example of the batch is one (1, 2C) row.
  Rng rng(4);
  const Head head;
  const Tensor<double> z = random_logits(rng, 1);
  const Tensor<double> a = amari::test::normal_tensor<double>(z.shape(), rng);
  const double nodes[3] = {0.0, std::sqrt(3.0), -std::sqrt(3.0)};
  const double weights[3] = {2.0 / 3, 1.0 / 6, 1.0 / 6};
  Tensor<double> mean_score(z.shape()), ess_a(z.shape()), eh_a(z.shape());
  int combos = 1;
  for (Index j = 0; j < kC; ++j) combos *= 3;
  for (int code = 0; code < combos; ++code) {
    Tensor<double> y(Shape{1, kC});
    double w = 1;
    for (Index j = 0, c = code; j < kC; ++j, c /= 3) {
      const double sigma = std::exp(0.5 * z[kC + j]);
      y[j] = z[j] + sigma * nodes[c % 3];
      w *= weights[c % 3];
    }
    const Tensor<double> s = call([&](Tensor<double>& o) { head.score(z, y, o); }, z.shape());
    const Tensor<double> ha =
        call([&](Tensor<double>& o) { head.hessian_product(z, y, a, o); }, z.shape());
    double sa = 0;
    for (Index k = 0; k < s.size(); ++k) sa += s[k] * a[k];
    for (Index k = 0; k < s.size(); ++k) {
      mean_score[k] += w * s[k];
      ess_a[k] += w * s[k] * sa;
      eh_a[k] += w * ha[k];
    }
  }
  const Tensor<double> fa =
      call([&](Tensor<double>& o) { head.fisher_product(z, a, o); }, z.shape());
  CHECK(norm(mean_score) < 1e-13);  // SEED-NOTES 1.1 (a)
  INFO("F_R a vs E[s s^T] a: " << rel_err(fa, ess_a) << ", vs E[H_L] a: " << rel_err(fa, eh_a));
  CHECK(rel_err(fa, ess_a) < 1e-13);
  CHECK(rel_err(fa, eh_a) < 1e-13);  // SEED-NOTES 1.1 (b)
  // ... and F_R differs from H_L at any one target off the mean.
  const Tensor<double> y_far = Tensor<double>::full(Shape{1, kC}, 3.0);
  const Tensor<double> ha =
      call([&](Tensor<double>& o) { head.hessian_product(z, y_far, a, o); }, z.shape());
  CHECK(rel_err(ha, fa) > 0.1);
}

TEST_CASE(
    "learned-variance head: the dense H_L has a negative eigenvalue at a large residual, none at "
    "zero residual",
    "[nn][heads][variance]") {
  const Head head;
  Tensor<double> z(Shape{1, 2 * kC});
  for (Index j = 0; j < kC; ++j) {
    z[j] = 0.3 * static_cast<double>(j);
    z[kC + j] = -0.5 + 0.4 * static_cast<double>(j);
  }
  Tensor<double> y_far(Shape{1, kC}), y_fit(Shape{1, kC});
  for (Index j = 0; j < kC; ++j) {
    y_far[j] = z[j] + 10.0;  // residual 10 against sigma <= 1.4
    y_fit[j] = z[j];
  }
  const Dense h_far = tape_logit_hessian(head, z, y_far),
              h_fit = tape_logit_hessian(head, z, y_fit);
  // The closed form agrees with the dense autodiff matrix column by column.
  for (Index k = 0; k < 2 * kC; ++k) {
    Tensor<double> e(z.shape());
    e[k] = 1;
    const Tensor<double> col =
        call([&](Tensor<double>& o) { head.hessian_product(z, y_far, e, o); }, z.shape());
    for (Index r = 0; r < 2 * kC; ++r)
      CHECK(col[r] == Approx(h_far(r, k)).epsilon(1e-12).margin(1e-12));
  }
  const std::vector<double> far = amari::test::symmetric_eigenvalues(h_far);
  const std::vector<double> fit = amari::test::symmetric_eigenvalues(h_fit);
  INFO("smallest eigenvalue at residual 10: " << far.front() << ", at residual 0: " << fit.front());
  // Per output the 2 x 2 block [[w, r w], [r w, r^2 w / 2]] has determinant -r^2 w^2 / 2 < 0.
  CHECK(far.front() < -1.0);
  CHECK(fit.front() > -1e-14);  // diag(w, 0): semi-definite at a perfect fit
  // The Fisher block diag(w, 1/2) is positive definite everywhere.
  Dense f(2 * kC);
  for (Index k = 0; k < 2 * kC; ++k) {
    Tensor<double> e(z.shape());
    e[k] = 1;
    const Tensor<double> col =
        call([&](Tensor<double>& o) { head.fisher_product(z, e, o); }, z.shape());
    for (Index r = 0; r < 2 * kC; ++r) f(r, k) = col[r];
  }
  CHECK(amari::test::symmetric_eigenvalues(f).front() > 0.0);
}

TEST_CASE(
    "learned-variance head: clamped log-variances stay finite and get zero gradient, H_L and F_R "
    "rows",
    "[nn][heads][variance]") {
  const Head head(-5.0, 5.0);
  Tensor<double> z(Shape{1, 2 * kC});
  z[0] = 0.5;
  z[kC + 0] = -1e4;  // far below the clamp: without it exp(-s) overflows
  z[1] = -0.5;
  z[kC + 1] = 1e4;  // far above
  z[2] = 0.1;
  z[kC + 2] = 0.7;  // inside
  Tensor<double> y(Shape{1, kC});
  y[0] = 3;
  y[1] = -2;
  y[2] = 1;
  const double loss = head.loss(z, y).item();
  CHECK(std::isfinite(loss));
  CHECK(loss == Approx(reference_nll_row(z, y, 0, -5, 5)).epsilon(1e-14));
  const Tensor<double> g = call([&](Tensor<double>& o) { head.gradient(z, y, o); }, z.shape());
  const Tensor<double> tape_g =
      amari::grad([&](const Var<double>& v) { return head.loss(v, y); }, z);
  CHECK(rel_err(g, tape_g) < 1e-13);
  CHECK(g[kC + 0] == 0.0);
  CHECK(g[kC + 1] == 0.0);
  CHECK(g[kC + 2] != 0.0);
  const Tensor<double> a = Tensor<double>::full(z.shape(), 1.0);
  const Tensor<double> ha =
      call([&](Tensor<double>& o) { head.hessian_product(z, y, a, o); }, z.shape());
  const Tensor<double> hv = amari::hvp([&](const Var<double>& v) { return head.loss(v, y); }, z, a);
  CHECK(rel_err(ha, hv) < 1e-13);
  const Tensor<double> fa =
      call([&](Tensor<double>& o) { head.fisher_product(z, a, o); }, z.shape());
  CHECK(ha[kC + 0] == 0.0);
  CHECK(fa[kC + 0] == 0.0);
  CHECK(fa[kC + 1] == 0.0);
  CHECK(fa[kC + 2] == 0.5);
  CHECK(fa[0] == Approx(std::exp(5.0)).epsilon(1e-14));  // the precision of the clamped variance
  // mean() reports the clamped variance.
  const Tensor<double> mv = head.predict(z);
  CHECK(mv[kC + 0] == Approx(std::exp(-5.0)).epsilon(1e-14));
  CHECK(mv[kC + 2] == Approx(std::exp(0.7)).epsilon(1e-14));
  CHECK(mv[0] == 0.5);
}

TEST_CASE("learned-variance head: float logits of +-1e4 give a finite loss, gradient and products",
          "[nn][heads][variance]") {
  const GaussianLearnedVariance<float> head;
  Tensor<float> z(Shape{2, 2});
  z[0] = 1e4f;
  z[1] = -1e4f;
  z[2] = -1e4f;
  z[3] = 1e4f;
  Tensor<float> y(Shape{2, 1});
  y[0] = -1e4f;
  y[1] = 1e4f;
  CHECK(std::isfinite(head.loss(z, y).item()));
  Tensor<float> g(z.shape()), h(z.shape()), f(z.shape());
  head.gradient(z, y, g);
  head.hessian_product(z, y, g, h);
  head.fisher_product(z, g, f);
  for (Index k = 0; k < 4; ++k) {
    CHECK(std::isfinite(g[k]));
    CHECK(std::isfinite(h[k]));
    CHECK(std::isfinite(f[k]));
  }
}

TEST_CASE(
    "learned-variance head: sample() draws N(mu, sigma^2) within 5 standard errors, keyed per "
    "example",
    "[nn][heads][variance]") {
  const Head head;
  Tensor<double> z(Shape{1, 2});
  z[0] = 1.5;
  z[1] = std::log(0.49);  // sigma = 0.7
  const int k = 4000;
  double sum = 0, sum2 = 0;
  for (int s = 0; s < k; ++s) {
    const double v = head.sample(z, 9, static_cast<std::uint64_t>(s)).item();
    sum += v;
    sum2 += v * v;
  }
  const double mean = sum / k, var = sum2 / k - mean * mean;
  CHECK(std::fabs(mean - 1.5) < 5 * 0.7 / std::sqrt(k));
  // Var of the sample variance of a Gaussian: 2 sigma^4 / k.
  CHECK(std::fabs(var - 0.49) < 5 * std::sqrt(2.0 / k) * 0.49);
  // Counter-based: row i of a batch equals a batch of one keyed by first_example = i.
  Rng rng(5);
  const Tensor<double> zb = random_logits(rng, 6);
  const Tensor<double> yb = head.sample(zb, 3, 2);
  REQUIRE(yb.shape() == Shape{6, kC});
  for (Index i = 0; i < 6; ++i) {
    const Tensor<double> yi = head.sample(zb.view(i * 2 * kC, Shape{1, 2 * kC}).clone(), 3, 2, i);
    for (Index j = 0; j < kC; ++j) CHECK(yi[j] == yb[i * kC + j]);
  }
}

TEST_CASE(
    "learned-variance head: bad shapes, the target-free H_L product and bad clamp ranges raise "
    "typed errors",
    "[nn][heads][variance]") {
  const Head head;
  Rng rng(6);
  const Tensor<double> z = random_logits(rng), y = random_targets(rng);
  Tensor<double> out(z.shape());
  CHECK_THROWS_MATCHES(head.hessian_product(z, z, out), amari::ValueError,
                       MessageContains({"hessian_product", "depends on the targets"}));
  CHECK_THROWS_MATCHES(head.loss(z, z), amari::ShapeError,
                       MessageContains({"targets of shape (4, 6)", "(4, 3)"}));
  CHECK_THROWS_MATCHES(head.gradient(Tensor<double>(Shape{4, 5}), y, out), amari::ValueError,
                       MessageContains({"even", "(4, 5)"}));
  CHECK_THROWS_AS(GaussianLearnedVariance<double>(1.0, -1.0), amari::ValueError);
  CHECK_THROWS_AS(GaussianLearnedVariance<float>(-200.0, 0.0),
                  amari::ValueError);  // exp(200) overflows float
  CHECK_THROWS_AS(GaussianLearnedVariance<double>(-std::numeric_limits<double>::infinity(), 0.0),
                  amari::ValueError);
}
