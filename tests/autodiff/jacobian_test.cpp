// Dense Jacobians (jacfwd, jacrev), Hessians and multi-tangent JVPs (autodiff/jacobian.hpp):
// both Jacobians agree with each other and with central finite differences, the Hessian with
// finite differences of the gradient, and jvp_multi with one dual-number JVP per tangent.
#include <algorithm>
#include <cmath>
#include <functional>
#include <string>
#include <type_traits>

#include <catch2/catch.hpp>

#include <amari/autodiff/autodiff.hpp>

#include "support/matchers.hpp"
#include "support/random.hpp"

namespace {

using amari::Index;
using amari::Shape;
using amari::ShapeError;
using amari::Tensor;
using amari::test::MessageContains;
using amari::test::normal_tensor;
using amari::test::Rng;

// A constant of the caller's value type (Tensor, Dual or Var).
template <class V>
V constant(const V&, const Tensor<double>& t) {
  return V(t);
}

// Central differences of f (flattened output) in every input coordinate: (m, n).
template <class F>
Tensor<double> finite_difference_jacobian(F f, const Tensor<double>& x, double h) {
  const Index n = x.size();
  const Index m = f(x).size();
  Tensor<double> J(Shape{m, n});
  for (Index j = 0; j < n; ++j) {
    Tensor<double> xp = x.clone(), xm = x.clone();
    xp[j] += h;
    xm[j] -= h;
    const Tensor<double> fp = f(xp), fm = f(xm);
    for (Index i = 0; i < m; ++i) J[i * n + j] = (fp[i] - fm[i]) / (2 * h);
  }
  return J;
}

double max_abs(const Tensor<double>& a) {
  double m = 0;
  for (Index i = 0; i < a.size(); ++i) m = std::max(m, std::fabs(a[i]));
  return m;
}

// max |a - b| relative to max |b| (floored at 1).
double rel_max_diff(const Tensor<double>& a, const Tensor<double>& b) {
  REQUIRE(a.shape() == b.shape());
  return amari::test::max_abs_diff(a, b) / std::max(1.0, max_abs(b));
}

struct Case {
  std::string name;
  Shape input;
  std::function<Tensor<double>(const Tensor<double>&)> plain;  // f on tensors (for FD)
};

// The functions under test, each written once for any value type.
Rng g_rng(7);
const Tensor<double> kW = normal_tensor<double>(Shape{3, 4}, g_rng, 0.5);
const Tensor<double> kB = normal_tensor<double>(Shape{2, 4}, g_rng, 0.5);

// (6) -> (2, 4): tanh(reshape(x) W + b), a non-square Jacobian (8 x 6).
const auto matmul_tanh = [](const auto& x) {
  using V = std::decay_t<decltype(x)>;
  return amari::tanh(amari::matmul(amari::reshape(x, Shape{2, 3}), V(kW)) + V(kB));
};
// (3, 2) -> (3, 2): element-wise exp(x) * sigmoid(x) + x^2 (a diagonal Jacobian).
const auto elementwise = [](const auto& x) { return amari::exp(x) * amari::sigmoid(x) + x * x; };
// (5) -> (5): softmax, a dense square Jacobian.
const auto softmax_fn = [](const auto& x) {
  return amari::softmax(amari::reshape(x, Shape{1, 5}));
};
// (4) -> scalar: sum(tanh(x) * x^3) + logsumexp(x).
const auto scalar_fn = [](const auto& x) {
  return amari::sum(amari::tanh(x) * x * x * x) +
         amari::sum(amari::logsumexp(amari::reshape(x, Shape{1, 4})));
};

template <class F>
void check_jacobians(const char* name, F f, const Shape& shape) {
  INFO(name);
  Rng rng(11);
  const Tensor<double> x = normal_tensor<double>(shape, rng, 0.8);
  const Tensor<double> jf = amari::jacfwd(f, x);
  const Tensor<double> jr = amari::jacrev(f, x);
  const Tensor<double> fd =
      finite_difference_jacobian([&](const Tensor<double>& t) { return f(t); }, x, 1e-6);
  const Index m = f(x).size();
  REQUIRE(jf.shape() == Shape{m, x.size()});
  REQUIRE(jr.shape() == jf.shape());
  CHECK(rel_max_diff(jf, jr) <= 1e-14);
  CHECK(rel_max_diff(jf, fd) <= 1e-8);
  CHECK(rel_max_diff(jr, fd) <= 1e-8);
}

}  // namespace

TEST_CASE("jacobian: jacfwd equals jacrev equals central finite differences, shape (m, n)",
          "[jacobian]") {
  check_jacobians("matmul_tanh", matmul_tanh, Shape{6});
  check_jacobians("elementwise", elementwise, Shape{3, 2});
  check_jacobians("softmax", softmax_fn, Shape{5});
  check_jacobians("scalar", scalar_fn, Shape{4});
}

TEST_CASE("jacobian: a non-square Jacobian has one row per output and one column per input",
          "[jacobian]") {
  Rng rng(3);
  const Tensor<double> x = normal_tensor<double>(Shape{6}, rng);
  const Tensor<double> J = amari::jacrev(matmul_tanh, x);
  REQUIRE(J.shape() == Shape{8, 6});
  // Row i is the gradient of output i: compare with grad of <e_i, f>.
  for (Index i = 0; i < 8; ++i) {
    const auto fi = [i](const auto& t) {
      using V = std::decay_t<decltype(t)>;
      Tensor<double> e(Shape{2, 4});
      e[i] = 1;
      return amari::sum(matmul_tanh(t) * V(e));
    };
    const Tensor<double> g = amari::grad(fi, x);
    for (Index j = 0; j < 6; ++j) CHECK(J.at(i, j) == Approx(g[j]).epsilon(1e-14).margin(1e-15));
  }
}

TEST_CASE("jacobian: the Hessian equals finite differences of the gradient and is symmetric",
          "[jacobian]") {
  Rng rng(5);
  const Tensor<double> x = normal_tensor<double>(Shape{4}, rng, 0.8);
  const Tensor<double> H = amari::hessian(scalar_fn, x);
  REQUIRE(H.shape() == Shape{4, 4});
  const Tensor<double> fd = finite_difference_jacobian(
      [&](const Tensor<double>& t) { return amari::grad(scalar_fn, t); }, x, 1e-5);
  CHECK(rel_max_diff(H, fd) <= 1e-8);
  for (Index i = 0; i < 4; ++i)
    for (Index j = 0; j < i; ++j)
      CHECK(std::fabs(H.at(i, j) - H.at(j, i)) <= 1e-13 * std::max(1.0, max_abs(H)));
  // A quadratic form: the Hessian of 1/2 x^T A x is (A + A^T) / 2, exactly representable here.
  const Tensor<double> A = Tensor<double>::from(Shape{2, 2}, {2, 1, 3, 4});
  const auto quad = [&](const auto& t) {
    using V = std::decay_t<decltype(t)>;
    const V col = amari::reshape(t, Shape{2, 1});
    return amari::sum(col * amari::matmul(V(A), col)) * 0.5;
  };
  const Tensor<double> Hq = amari::hessian(quad, Tensor<double>::from(Shape{2}, {0.3, -1.2}));
  CHECK(Hq.at(0, 0) == Approx(2));
  CHECK(Hq.at(0, 1) == Approx(2));
  CHECK(Hq.at(1, 0) == Approx(2));
  CHECK(Hq.at(1, 1) == Approx(4));
}

TEST_CASE("jacobian: hessian of a non-scalar function is a ShapeError naming hessian and the shape",
          "[jacobian][errors]") {
  const Tensor<double> x = Tensor<double>::from(Shape{3}, {1, 2, 3});
  REQUIRE_THROWS_AS(amari::hessian(elementwise, x), ShapeError);
  REQUIRE_THROWS_MATCHES(amari::hessian(elementwise, x), ShapeError,
                         MessageContains({"hessian", "(3)"}));
}

TEST_CASE("jacobian: jvp_multi equals one dual-number JVP per tangent", "[jacobian]") {
  Rng rng(9);
  const Tensor<double> x = normal_tensor<double>(Shape{6}, rng);
  for (Index K : {1, 3, 7}) {
    const Tensor<double> V = normal_tensor<double>(Shape{6, K}, rng);
    const Tensor<double> JV = amari::jvp_multi(matmul_tanh, x, V);
    REQUIRE(JV.shape() == Shape{8, K});
    for (Index k = 0; k < K; ++k) {
      Tensor<double> v(Shape{6});
      for (Index j = 0; j < 6; ++j) v[j] = V.at(j, k);
      const auto [y, jv] = amari::jvp(matmul_tanh, x, v);
      REQUIRE(jv.size() == 8);
      for (Index i = 0; i < 8; ++i)
        CHECK(std::fabs(JV.at(i, k) - jv[i]) <= 1e-14 * std::max(1.0, std::fabs(jv[i])));
    }
    // And J V is the Jacobian times V.
    const Tensor<double> J = amari::jacfwd(matmul_tanh, x);
    for (Index i = 0; i < 8; ++i)
      for (Index k = 0; k < K; ++k) {
        double s = 0;
        for (Index j = 0; j < 6; ++j) s += J.at(i, j) * V.at(j, k);
        CHECK(JV.at(i, k) == Approx(s).epsilon(1e-13).margin(1e-14));
      }
  }
}

TEST_CASE("jacobian: jvp_multi refuses tangents whose first dimension is not x.size()",
          "[jacobian][errors]") {
  const Tensor<double> x(Shape{6});
  REQUIRE_THROWS_AS(amari::jvp_multi(matmul_tanh, x, Tensor<double>(Shape{5, 2})), ShapeError);
  REQUIRE_THROWS_MATCHES(amari::jvp_multi(matmul_tanh, x, Tensor<double>(Shape{6})), ShapeError,
                         MessageContains({"jvp_multi", "(6, K)"}));
}
