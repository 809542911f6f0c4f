// The function transformations (jvp, vjp, grad, value_and_grad, hvp, Linearization) on functions
// whose derivatives are known in closed form, their error paths, and a 3-layer MLP with a
// softmax cross-entropy loss written from primitives, checked against finite differences.
#include <cmath>
#include <functional>
#include <limits>
#include <span>
#include <type_traits>
#include <vector>

#include <catch2/catch.hpp>

#include <amari/autodiff/autodiff.hpp>

#include "support/random.hpp"

namespace {

using amari::Index;
using amari::Shape;
using amari::ShapeError;
using amari::Tensor;
using amari::Var;
using amari::test::max_abs_diff;
using amari::test::normal_tensor;
using amari::test::Rng;
using TV = std::vector<Tensor<double>>;

// f(x) = x^3 element-wise: J v = 3 x^2 v, and for s(x) = sum(x^3): grad 3 x^2, H v = 6 x v.
const auto cube = [](const auto& x) { return x * x * x; };
const auto sum_cube = [](const auto& x) { return amari::sum(x * x * x); };

template <class F>
Tensor<double> map2(const Tensor<double>& a, const Tensor<double>& b, F f) {
  Tensor<double> out(a.shape());
  for (Index i = 0; i < a.size(); ++i) out[i] = f(a[i], b[i]);
  return out;
}

// g(x, y) = x * y + exp(x): dg = (y + e^x) dx + x dy.
const auto two_inputs = [](auto xs) { return xs[0] * xs[1] + amari::exp(xs[0]); };

// A 3-layer tanh MLP with a softmax cross-entropy loss, from primitives only.
// params: W1 (4, 6), b1 (6), W2 (6, 5), b2 (5), W3 (5, 3), b3 (3); data x (8, 4), one-hot y (8, 3).
const std::vector<Shape> kMlpShapes = {Shape{4, 6}, Shape{6},    Shape{6, 5},
                                       Shape{5},    Shape{5, 3}, Shape{3}};

template <class V>
V mlp_loss(std::span<const V> p, const Tensor<double>& x, const Tensor<double>& y) {
  const V xv(x), yv(y);
  const V h1 = amari::tanh(amari::matmul(xv, p[0]) + p[1]);
  const V h2 = amari::tanh(amari::matmul(h1, p[2]) + p[3]);
  const V z = amari::matmul(h2, p[4]) + p[5];
  return amari::mean(amari::logsumexp(z) - amari::sum(z * yv, 1));
}

}  // namespace

TEST_CASE("transforms: jvp and vjp of x^3 are 3 x^2 v and 3 x^2 u", "[transforms]") {
  Rng rng(1);
  const Tensor<double> x = normal_tensor<double>(Shape{3, 4}, rng);
  const Tensor<double> v = normal_tensor<double>(Shape{3, 4}, rng);
  const auto [y, jv] = amari::jvp(cube, x, v);
  const auto [y2, ju] = amari::vjp(cube, x, v);
  const Tensor<double> want = map2(x, v, [](double a, double b) { return 3 * a * a * b; });
  const Tensor<double> x3 = map2(x, x, [](double a, double) { return a * a * a; });
  CHECK(max_abs_diff(y, x3) <= 1e-15);
  CHECK(max_abs_diff(y2, x3) <= 1e-15);
  CHECK(max_abs_diff(jv, want) <= 1e-14);
  CHECK(max_abs_diff(ju, want) <= 1e-14);
  // A function that ignores its input has a zero (materialized) tangent.
  const auto [c, zero] = amari::jvp(
      [](const auto& in) {
        return amari::exp(std::remove_cvref_t<decltype(in)>(Tensor<double>(Shape{2})));
      },
      x, v);
  CHECK(zero.shape() == Shape{2});
  CHECK(amari::test::norm(zero) == 0.0);
}

TEST_CASE("transforms: grad, value_and_grad and hvp of sum(x^3) are 3 x^2 and 6 x v",
          "[transforms]") {
  Rng rng(2);
  const Tensor<double> x = normal_tensor<double>(Shape{7}, rng);
  const Tensor<double> v = normal_tensor<double>(Shape{7}, rng);
  const Tensor<double> g = amari::grad(sum_cube, x);
  const auto [value, g2] = amari::value_and_grad(sum_cube, x);
  double s = 0;
  for (Index i = 0; i < 7; ++i) s += x[i] * x[i] * x[i];
  CHECK(value == Approx(s).epsilon(1e-15));
  const Tensor<double> want_g = map2(x, x, [](double a, double) { return 3 * a * a; });
  CHECK(max_abs_diff(g, want_g) <= 1e-14);
  CHECK(max_abs_diff(g2, want_g) <= 1e-14);
  const Tensor<double> hv = amari::hvp(sum_cube, x, v);
  CHECK(max_abs_diff(hv, map2(x, v, [](double a, double b) { return 6 * a * b; })) <= 1e-14);
  // float: the same closed forms within float rounding.
  const Tensor<float> xf = amari::test::convert<float>(x), vf = amari::test::convert<float>(v);
  CHECK(max_abs_diff(amari::grad(sum_cube, xf), want_g) <= 1e-5);
  CHECK(max_abs_diff(amari::hvp(sum_cube, xf, vf),
                     map2(x, v, [](double a, double b) { return 6 * a * b; })) <= 1e-4);
}

TEST_CASE("transforms: grad and hvp need a single-element output (ShapeError otherwise)",
          "[transforms]") {
  const Tensor<double> x = Tensor<double>::full(Shape{3}, 0.5);
  CHECK_THROWS_AS(amari::grad(cube, x), ShapeError);
  CHECK_THROWS_WITH(amari::grad(cube, x),
                    Catch::Matchers::Contains("grad") && Catch::Matchers::Contains("(3)"));
  CHECK_THROWS_WITH(amari::hvp(cube, x, x),
                    Catch::Matchers::Contains("hvp") && Catch::Matchers::Contains("(3)"));
  CHECK_THROWS_AS(amari::value_and_grad(cube, x), ShapeError);
  CHECK_THROWS_AS(amari::hvp(cube, x, x), ShapeError);
  // Any one-element shape is a scalar for grad.
  const auto keep = [](const auto& in) { return amari::sum(in * in, 0, true); };  // shape (1)
  CHECK(max_abs_diff(amari::grad(keep, x), Tensor<double>::full(Shape{3}, 1.0)) <= 1e-15);
}

TEST_CASE("transforms: multi-input jvp and vjp of x * y + exp(x) match the closed form",
          "[transforms]") {
  Rng rng(3);
  const TV xs = {normal_tensor<double>(Shape{2, 3}, rng), normal_tensor<double>(Shape{2, 3}, rng)};
  const TV vs = {normal_tensor<double>(Shape{2, 3}, rng), normal_tensor<double>(Shape{2, 3}, rng)};
  const Tensor<double> u = normal_tensor<double>(Shape{2, 3}, rng);
  const auto [y, jv] = amari::jvp<double>(two_inputs, xs, vs);
  const auto [y2, g] = amari::vjp<double>(two_inputs, xs, u);
  Tensor<double> want_jv(Shape{2, 3}), want_y(Shape{2, 3});
  for (Index i = 0; i < 6; ++i) {
    const double a = xs[0][i], b = xs[1][i];
    want_y[i] = a * b + std::exp(a);
    want_jv[i] = (b + std::exp(a)) * vs[0][i] + a * vs[1][i];
  }
  CHECK(max_abs_diff(y, want_y) <= 1e-14);
  CHECK(max_abs_diff(y2, want_y) <= 1e-14);
  CHECK(max_abs_diff(jv, want_jv) <= 1e-14);
  REQUIRE(g.size() == 2);
  for (Index i = 0; i < 6; ++i) {
    CHECK(g[0][i] == Approx(u[i] * (xs[1][i] + std::exp(xs[0][i]))).epsilon(1e-14));
    CHECK(g[1][i] == Approx(u[i] * xs[0][i]).epsilon(1e-14));
  }
  CHECK_THROWS_AS(amari::jvp<double>(two_inputs, xs, std::span<const Tensor<double>>(vs).first(1)),
                  ShapeError);
}

TEST_CASE(
    "transforms: Linearization value, jvp, vjp and the *_into forms agree with the "
    "functional forms",
    "[transforms]") {
  Rng rng(4);
  const auto f = [](const auto& x) { return amari::tanh(x) * amari::exp(x); };
  const Tensor<double> x = normal_tensor<double>(Shape{4, 5}, rng);
  const Tensor<double> v = normal_tensor<double>(Shape{4, 5}, rng);
  const Tensor<double> u = normal_tensor<double>(Shape{4, 5}, rng);
  amari::Linearization<double> lin = amari::linearize(f, x);
  const auto [y, jv] = amari::jvp(f, x, v);
  const auto [y2, ju] = amari::vjp(f, x, u);
  CHECK(max_abs_diff(lin.value(), y) == 0.0);
  CHECK(max_abs_diff(lin.jvp(TV{v}), jv) <= 1e-15);
  CHECK(max_abs_diff(lin.vjp(u)[0], ju) <= 1e-15);
  const std::size_t records = lin.tape().size();
  Tensor<double> out = Tensor<double>::full(Shape{4, 5}, std::numeric_limits<double>::quiet_NaN());
  TV outs = {Tensor<double>::full(Shape{4, 5}, std::numeric_limits<double>::quiet_NaN())};
  for (int rep = 0; rep < 2; ++rep) {
    lin.jvp_into(TV{v}, out);
    lin.vjp_into(u, outs);
    CHECK(max_abs_diff(out, jv) <= 1e-15);
    CHECK(max_abs_diff(outs[0], ju) <= 1e-15);
  }
  CHECK(lin.tape().size() == records);  // products never re-record f
  // Multi-input linearization of x * y + exp(x).
  const TV xs = {x, normal_tensor<double>(Shape{4, 5}, rng)};
  amari::Linearization<double> lin2(two_inputs, std::span<const Tensor<double>>(xs));
  const TV vs = {v, normal_tensor<double>(Shape{4, 5}, rng)};
  CHECK(max_abs_diff(lin2.jvp(vs), amari::jvp<double>(two_inputs, xs, vs).second) <= 1e-14);
  const TV g = lin2.vjp(u);
  const TV want = amari::vjp<double>(two_inputs, xs, u).second;
  CHECK(max_abs_diff(g[0], want[0]) <= 1e-15);
  CHECK(max_abs_diff(g[1], want[1]) <= 1e-15);
  CHECK_THROWS_AS(lin2.jvp(TV{v}), ShapeError);
}

TEST_CASE(
    "transforms: a 3-layer MLP with softmax cross-entropy from primitives: gradient and "
    "JVP against finite differences",
    "[transforms]") {
  Rng rng(5);
  const Tensor<double> x = normal_tensor<double>(Shape{8, 4}, rng);
  Tensor<double> y(Shape{8, 3});
  for (Index i = 0; i < 8; ++i) y.at(i, static_cast<Index>(rng.below(3))) = 1.0;
  TV p;
  for (const auto& s : kMlpShapes) p.push_back(normal_tensor<double>(s, rng, 0.8));
  const auto loss = [&](auto ps) { return mlp_loss(ps, x, y); };
  const auto [value, g] = amari::vjp<double>(loss, p, Tensor<double>::scalar(1.0));
  // The loss value against a scalar evaluation.
  const double l0 = mlp_loss(std::span<const Tensor<double>>(p), x, y).item();
  CHECK(value.item() == Approx(l0).epsilon(1e-15));
  CHECK(l0 > 0.0);
  auto loss_at = [&](double s, const TV& dir) {
    TV q;
    for (std::size_t k = 0; k < p.size(); ++k) {
      Tensor<double> t = p[k].clone();
      for (Index i = 0; i < t.size(); ++i) t[i] += s * dir[k][i];
      q.push_back(t);
    }
    return mlp_loss(std::span<const Tensor<double>>(q), x, y).item();
  };
  for (int probe = 0; probe < 4; ++probe) {
    TV dir;
    for (const auto& s : kMlpShapes) dir.push_back(normal_tensor<double>(s, rng));
    const double h = 2e-4;  // Richardson error O(h^4): ~1e-10 here
    const double fd =
        (8 * (loss_at(h, dir) - loss_at(-h, dir)) - (loss_at(2 * h, dir) - loss_at(-2 * h, dir))) /
        (12 * h);
    double gd = 0;
    for (std::size_t k = 0; k < p.size(); ++k) gd += amari::test::dot(g[k], dir[k]);
    const double jv = amari::jvp<double>(loss, p, dir).second.item();
    CHECK(gd == Approx(fd).epsilon(1e-8));
    CHECK(jv == Approx(gd).epsilon(1e-12));
  }
  // One coordinate at a time for the biases (the smallest parameters): catches a bias gradient
  // summed over the wrong axis.
  for (std::size_t k : {std::size_t{1}, std::size_t{3}, std::size_t{5}}) {
    for (Index i = 0; i < p[k].size(); ++i) {
      TV dir;
      for (const auto& s : kMlpShapes) dir.push_back(Tensor<double>(s));
      dir[k][i] = 1.0;
      const double h = 1e-4;
      const double fd = (loss_at(h, dir) - loss_at(-h, dir)) / (2 * h);
      CHECK(g[k][i] == Approx(fd).margin(1e-9));
    }
  }
}
