// Conjugate gradient: accuracy against a dense Cholesky solve, every stopping status, warm starts,
// monotone model value, kept iterates for backtracking, preconditioning (Martens 2010,
// sec. 4.4-4.7).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <memory>
#include <random>
#include <vector>

#include <catch2/catch.hpp>

#include <amari/curvature/cg.hpp>
#include <amari/curvature/linear_operator.hpp>

namespace {

using amari::Index;
using amari::Shape;
using amari::Tensor;
using namespace amari::curvature;

// Fixed-seed generator with its own uniform conversion: the same numbers on every platform.
struct Rng {
  std::mt19937_64 engine;
  explicit Rng(std::uint64_t seed) : engine(seed) {}
  double uniform() { return static_cast<double>(engine() >> 11) * 0x1.0p-53; }  // [0, 1)
  double symmetric() { return 2.0 * uniform() - 1.0; }                          // [-1, 1)
};

Tensor<double> random_vector(Index n, Rng& rng) {
  Tensor<double> v(Shape{n});
  for (Index i = 0; i < n; ++i) v[i] = rng.symmetric();
  return v;
}

// B^T B + n I with B uniform in [-1, 1]: eigenvalues in [n, ~2.4 n], condition number below 3.
Tensor<double> well_conditioned_spd(Index n, Rng& rng) {
  Tensor<double> b(Shape{n, n});
  for (Index i = 0; i < n * n; ++i) b[i] = rng.symmetric();
  Tensor<double> a(Shape{n, n});
  for (Index i = 0; i < n; ++i) {
    for (Index j = 0; j < n; ++j) {
      double s = 0.0;
      for (Index k = 0; k < n; ++k) s += b[k * n + i] * b[k * n + j];
      a[i * n + j] = s + (i == j ? static_cast<double>(n) : 0.0);
    }
  }
  return a;
}

// Dense Cholesky solve of A x = b, the reference solution.
std::vector<double> cholesky_solve(const Tensor<double>& a, const Tensor<double>& b) {
  const Index n = b.size();
  std::vector<double> l(static_cast<std::size_t>(n * n), 0.0);
  auto L = [&](Index i, Index j) -> double& { return l[static_cast<std::size_t>(i * n + j)]; };
  for (Index j = 0; j < n; ++j) {
    double d = a[j * n + j];
    for (Index k = 0; k < j; ++k) d -= L(j, k) * L(j, k);
    REQUIRE(d > 0.0);
    L(j, j) = std::sqrt(d);
    for (Index i = j + 1; i < n; ++i) {
      double s = a[i * n + j];
      for (Index k = 0; k < j; ++k) s -= L(i, k) * L(j, k);
      L(i, j) = s / L(j, j);
    }
  }
  std::vector<double> y(static_cast<std::size_t>(n));
  for (Index i = 0; i < n; ++i) {
    double s = b[i];
    for (Index k = 0; k < i; ++k) s -= L(i, k) * y[static_cast<std::size_t>(k)];
    y[static_cast<std::size_t>(i)] = s / L(i, i);
  }
  std::vector<double> x(static_cast<std::size_t>(n));
  for (Index i = n - 1; i >= 0; --i) {
    double s = y[static_cast<std::size_t>(i)];
    for (Index k = i + 1; k < n; ++k) s -= L(k, i) * x[static_cast<std::size_t>(k)];
    x[static_cast<std::size_t>(i)] = s / L(i, i);
  }
  return x;
}

// ||b - A x|| / ||b|| recomputed with plain loops (not the solver's recursive residual).
template <class T>
double true_relative_residual(const Tensor<double>& a, const Tensor<T>& x, const Tensor<T>& b) {
  const Index n = b.size();
  double rr = 0.0, bb = 0.0;
  for (Index i = 0; i < n; ++i) {
    double s = static_cast<double>(b[i]);
    for (Index j = 0; j < n; ++j) s -= a[i * n + j] * static_cast<double>(x[j]);
    rr += s * s;
    bb += static_cast<double>(b[i]) * static_cast<double>(b[i]);
  }
  return std::sqrt(rr / bb);
}

template <class T>
double relative_error(const Tensor<T>& x, const std::vector<double>& reference) {
  double num = 0.0, den = 0.0;
  for (std::size_t i = 0; i < reference.size(); ++i) {
    const double d = static_cast<double>(x[static_cast<Index>(i)]) - reference[i];
    num += d * d;
    den += reference[i] * reference[i];
  }
  return std::sqrt(num / den);
}

template <class T>
bool all_finite_values(const Tensor<T>& x) {
  return std::all_of(x.begin(), x.end(), [](T v) { return std::isfinite(v); });
}

template <class T>
bool same_values(const Tensor<T>& a, const Tensor<T>& b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin());
}

// diag(d) with d_i = 10^(-decades * i / (n - 1)): condition number 10^decades.
std::shared_ptr<DiagonalOperator<double>> log_spaced_diagonal(Index n, double decades) {
  Tensor<double> d(Shape{n});
  for (Index i = 0; i < n; ++i) {
    d[i] = std::pow(10.0, -decades * static_cast<double>(i) / static_cast<double>(n - 1));
  }
  return std::make_shared<DiagonalOperator<double>>(d);
}

CgOptions exact_options(int iterations) {
  CgOptions o;
  o.max_iterations = iterations;
  o.relative_tolerance = 0.0;
  o.progress_stopping = false;
  return o;
}

// Wraps an operator and returns NaN (or +inf) in every product from the `bad_product`-th on.
class FailingOperator final : public LinearOperator<double> {
 public:
  FailingOperator(std::shared_ptr<LinearOperator<double>> inner, int bad_product, double bad_value)
      : inner_(std::move(inner)), bad_product_(bad_product), bad_value_(bad_value) {}
  Index size() const override { return inner_->size(); }
  void apply(const Tensor<double>& v, Tensor<double>& out) override {
    inner_->apply(v, out);
    if (++calls_ >= bad_product_) out[out.size() / 2] = bad_value_;
  }
  std::string name() const override { return "Failing"; }
  int calls() const { return calls_; }

 private:
  std::shared_ptr<LinearOperator<double>> inner_;
  int bad_product_;
  double bad_value_;
  int calls_ = 0;
};

}  // namespace

TEST_CASE(
    "conjugate_gradient: on a well-conditioned n x n SPD system, n iterations reach a "
    "relative residual below 1e-10 and agree with a Cholesky solve") {
  for (Index n : {5, 20, 50}) {
    CAPTURE(n);
    Rng rng(1000 + static_cast<std::uint64_t>(n));
    const Tensor<double> a = well_conditioned_spd(n, rng);
    const Tensor<double> b = random_vector(n, rng);
    DenseOperator<double> A(a);
    const CgResult<double> res = conjugate_gradient(A, b, exact_options(static_cast<int>(n)));
    CHECK(res.iterations <= n);
    CHECK(res.products == res.iterations);
    CHECK(res.relative_residual < 1e-10);
    CHECK(true_relative_residual(a, res.x, b) < 1e-10);
    CHECK(relative_error(res.x, cholesky_solve(a, b)) < 1e-10);
  }
}

TEST_CASE("conjugate_gradient: float systems are solved to float accuracy (dots in double)") {
  const Index n = 20;
  Rng rng(7);
  const Tensor<double> a = well_conditioned_spd(n, rng);
  const Tensor<double> b = random_vector(n, rng);
  Tensor<float> af(Shape{n, n}), bf(Shape{n});
  for (Index i = 0; i < n * n; ++i) af[i] = static_cast<float>(a[i]);
  for (Index i = 0; i < n; ++i) bf[i] = static_cast<float>(b[i]);
  DenseOperator<float> A(af);
  CgOptions options;
  options.relative_tolerance = 1e-5;
  const CgResult<float> res = conjugate_gradient(A, bf, options);
  CHECK(res.status == CgStatus::converged);
  CHECK(res.relative_residual <= 1e-5);
  CHECK(relative_error(res.x, cholesky_solve(a, b)) < 1e-4);
}

TEST_CASE("conjugate_gradient: status converged once the residual is below the tolerance") {
  const Index n = 30;
  Rng rng(11);
  const Tensor<double> a = well_conditioned_spd(n, rng);
  const Tensor<double> b = random_vector(n, rng);
  DenseOperator<double> A(a);
  CgOptions options;
  options.relative_tolerance = 1e-8;
  const CgResult<double> res = conjugate_gradient(A, b, options);
  CHECK(res.status == CgStatus::converged);
  CHECK(std::string(to_string(res.status)) == "converged");
  CHECK(res.iterations < n);  // condition number < 3: far fewer than n steps
  CHECK(res.relative_residual <= 1e-8);
  // The recursive residual has not drifted from the true one.
  CHECK(true_relative_residual(a, res.x, b) < 1e-7);
}

TEST_CASE("conjugate_gradient: b = 0 returns x = 0 in 0 iterations, even from a warm start") {
  Rng rng(12);
  DenseOperator<double> A(well_conditioned_spd(6, rng));
  const Tensor<double> b(Shape{6});
  const Tensor<double> x0 = random_vector(6, rng);
  const CgResult<double> res = conjugate_gradient(A, b, {}, &x0);
  CHECK(res.status == CgStatus::converged);
  CHECK(res.iterations == 0);
  CHECK(res.products == 0);
  CHECK(same_values(res.x, Tensor<double>(Shape{6})));
  CHECK(res.model_value == 0.0);
}

TEST_CASE("conjugate_gradient: status max_iterations after exactly max_iterations products") {
  auto A = log_spaced_diagonal(200, 4.0);
  Rng rng(13);
  const Tensor<double> b = random_vector(200, rng);
  CgOptions options = exact_options(5);
  options.relative_tolerance = 1e-6;
  const CgResult<double> res = conjugate_gradient(*A, b, options);
  CHECK(res.status == CgStatus::max_iterations);
  CHECK(res.iterations == 5);
  CHECK(res.products == 5);
  CHECK(res.relative_residual > 1e-6);
  CHECK(res.model_values.size() == 6);
}

TEST_CASE(
    "conjugate_gradient: on a large ill-conditioned problem Martens' progress rule fires "
    "at its first eligible iteration i > 10, with phi decreasing") {
  const Index n = 2000;
  auto A = log_spaced_diagonal(n, 6.0);
  Rng rng(14);
  const Tensor<double> b = random_vector(n, rng);
  CgOptions options;
  options.max_iterations = 1000;
  options.relative_tolerance = 1e-12;
  const CgResult<double> res = conjugate_gradient(*A, b, options);
  REQUIRE(res.status == CgStatus::progress_stalled);
  const int i = res.iterations;
  CHECK(i > 10);
  CHECK(i < options.max_iterations);
  const std::vector<double>& phi = res.model_values;
  REQUIRE(phi.size() == static_cast<std::size_t>(i) + 1);
  for (std::size_t t = 1; t < phi.size(); ++t) CHECK(phi[t] <= phi[t - 1]);
  // The rule, evaluated here independently: it holds at i and at no earlier eligible iteration.
  auto rule = [&](int t) {
    const int k = std::max(10, static_cast<int>(std::ceil(0.1 * t)));
    if (t <= k) return false;
    const double now = phi[static_cast<std::size_t>(t)];
    const double before = phi[static_cast<std::size_t>(t - k)];
    return now < 0.0 && (now - before) / now < k * options.progress_epsilon;
  };
  CHECK(rule(i));
  for (int t = 0; t < i; ++t) CHECK_FALSE(rule(t));
  // Switching the rule off lets the same solve run on.
  options.progress_stopping = false;
  CHECK(conjugate_gradient(*A, b, options).iterations > i);
}

TEST_CASE("conjugate_gradient: non-positive curvature stops with the previous iterate") {
  // Indefinite diag(3, 2, 1, -1, -2): the first direction b has positive curvature, a later one
  // not.
  Tensor<double> d = Tensor<double>::from(Shape{5}, {3.0, 2.0, 1.0, -1.0, -2.0});
  DiagonalOperator<double> A(d);
  const Tensor<double> b = Tensor<double>::from(Shape{5}, {1.0, 1.0, 1.0, 1.0, 1.0});
  const CgResult<double> res = conjugate_gradient(A, b, exact_options(20));
  REQUIRE(res.status == CgStatus::non_positive_curvature);
  CHECK(res.iterations >= 1);
  CHECK(res.products == res.iterations + 1);
  CHECK(all_finite_values(res.x));
  // x is exactly the iterate x_i reached before the bad direction.
  const CgResult<double> before = conjugate_gradient(A, b, exact_options(res.iterations));
  CHECK(before.status == CgStatus::max_iterations);
  CHECK(same_values(res.x, before.x));
  CHECK(res.model_value == before.model_value);
}

TEST_CASE("conjugate_gradient: non-positive curvature in the first direction returns x0") {
  DiagonalOperator<double> A(Tensor<double>::from(Shape{2}, {1.0, -2.0}));
  const Tensor<double> b = Tensor<double>::from(Shape{2}, {1.0, 1.0});  // b^T A b = -1
  const CgResult<double> cold = conjugate_gradient(A, b);
  CHECK(cold.status == CgStatus::non_positive_curvature);
  CHECK(cold.iterations == 0);
  CHECK(same_values(cold.x, Tensor<double>(Shape{2})));
  // From x0 = (0.5, 0): r0 = (0.5, 1), r0^T A r0 = 0.25 - 2 < 0.
  const Tensor<double> x0 = Tensor<double>::from(Shape{2}, {0.5, 0.0});
  const CgResult<double> warm = conjugate_gradient(A, b, {}, &x0);
  CHECK(warm.status == CgStatus::non_positive_curvature);
  CHECK(same_values(warm.x, x0));
  CHECK_FALSE(warm.x.same_storage(x0));
  // Zero curvature counts as non-positive: diag(1, -1) with b = (1, 1) has b^T A b = 0 exactly.
  DiagonalOperator<double> flat(Tensor<double>::from(Shape{2}, {1.0, -1.0}));
  const CgResult<double> zero = conjugate_gradient(flat, b);
  CHECK(zero.status == CgStatus::non_positive_curvature);
  CHECK(same_values(zero.x, Tensor<double>(Shape{2})));
}

TEST_CASE(
    "conjugate_gradient: a NaN or inf from the 3rd product stops at once with the last "
    "finite iterate") {
  Rng rng(15);
  auto dense = std::make_shared<DenseOperator<double>>(well_conditioned_spd(20, rng));
  const Tensor<double> b = random_vector(20, rng);
  const CgResult<double> two_steps = conjugate_gradient(*dense, b, exact_options(2));
  for (double bad :
       {std::numeric_limits<double>::quiet_NaN(), std::numeric_limits<double>::infinity()}) {
    CAPTURE(bad);
    FailingOperator A(dense, 3, bad);
    const CgResult<double> res = conjugate_gradient(A, b, exact_options(100));
    CHECK(res.status == CgStatus::non_finite);
    CHECK(A.calls() == 3);  // promptly: no product after the failing one
    CHECK(res.products == 3);
    CHECK(res.iterations == 2);
    CHECK(all_finite_values(res.x));
    CHECK(same_values(res.x, two_steps.x));
    CHECK(std::isfinite(res.model_value));
    CHECK(std::isfinite(res.residual_norm));
  }
}

TEST_CASE("conjugate_gradient: non-finite b or x0 gives status non_finite and x = 0, no throw") {
  Rng rng(16);
  DenseOperator<double> A(well_conditioned_spd(8, rng));
  Tensor<double> b = random_vector(8, rng);
  const Tensor<double> zeros(Shape{8});

  Tensor<double> bad_b = b.clone();
  bad_b[3] = std::numeric_limits<double>::quiet_NaN();
  const CgResult<double> r1 = conjugate_gradient(A, bad_b);
  CHECK(r1.status == CgStatus::non_finite);
  CHECK(r1.products == 0);
  CHECK(same_values(r1.x, zeros));

  Tensor<double> bad_x0 = random_vector(8, rng);
  bad_x0[0] = -std::numeric_limits<double>::infinity();
  const CgResult<double> r2 = conjugate_gradient(A, b, {}, &bad_x0);
  CHECK(r2.status == CgStatus::non_finite);
  CHECK(same_values(r2.x, zeros));

  // A failing warm-start product: the only finite start left is x = 0.
  FailingOperator failing(std::make_shared<DenseOperator<double>>(A), 1,
                          std::numeric_limits<double>::quiet_NaN());
  const Tensor<double> x0 = random_vector(8, rng);
  const CgResult<double> r3 = conjugate_gradient(failing, b, {}, &x0);
  CHECK(r3.status == CgStatus::non_finite);
  CHECK(failing.calls() == 1);
  CHECK(same_values(r3.x, zeros));
}

TEST_CASE("conjugate_gradient: a step that overflows float returns a finite x, status non_finite") {
  // diag(1e-10) x = 1e30: the first step is 1e40, beyond the largest float.
  DiagonalOperator<float> A(Tensor<float>::full(Shape{4}, 1e-10f));
  const Tensor<float> b = Tensor<float>::full(Shape{4}, 1e30f);
  const CgResult<float> res = conjugate_gradient(A, b);
  CHECK(res.status == CgStatus::non_finite);
  CHECK(all_finite_values(res.x));
  CHECK(res.iterations == 0);
}

TEST_CASE(
    "conjugate_gradient: a warm start at the solution converges in 0 iterations, one near "
    "it in fewer iterations than from 0") {
  const Index n = 50;
  Rng rng(17);
  auto A = log_spaced_diagonal(n, 2.0);
  const Tensor<double> b = random_vector(n, rng);
  Tensor<double> solution(Shape{n});
  for (Index i = 0; i < n; ++i) solution[i] = b[i] / A->diagonal()[i];
  CgOptions options;
  options.relative_tolerance = 1e-10;
  options.progress_stopping = false;

  const CgResult<double> exact = conjugate_gradient(*A, b, options, &solution);
  CHECK(exact.status == CgStatus::converged);
  CHECK(exact.iterations == 0);
  CHECK(exact.products == 1);
  CHECK(same_values(exact.x, solution));

  Tensor<double> nearby = solution.clone();
  for (Index i = 0; i < n; ++i) nearby[i] += 1e-4 * rng.symmetric();
  const CgResult<double> cold = conjugate_gradient(*A, b, options);
  const CgResult<double> warm = conjugate_gradient(*A, b, options, &nearby);
  CHECK(cold.status == CgStatus::converged);
  CHECK(warm.status == CgStatus::converged);
  CHECK(warm.iterations < cold.iterations);
  CHECK(warm.products == warm.iterations + 1);
}

TEST_CASE(
    "conjugate_gradient: phi(x_i) is non-increasing and matches the directly computed "
    "0.5 x^T A x - b^T x") {
  const Index n = 50;
  Rng rng(18);
  // B^T B + 0.01 I: SPD with condition number ~1e4, so rounding makes CG need more than n steps.
  Tensor<double> bm(Shape{n, n});
  for (Index i = 0; i < n * n; ++i) bm[i] = rng.symmetric();
  Tensor<double> a(Shape{n, n});
  for (Index i = 0; i < n; ++i)
    for (Index j = 0; j < n; ++j) {
      double s = i == j ? 0.01 : 0.0;
      for (Index k = 0; k < n; ++k) s += bm[k * n + i] * bm[k * n + j];
      a[i * n + j] = s;
    }
  DenseOperator<double> A(a);
  const Tensor<double> b = random_vector(n, rng);
  const CgResult<double> res = conjugate_gradient(A, b, exact_options(static_cast<int>(4 * n)));
  const std::vector<double>& phi = res.model_values;
  REQUIRE(phi.size() == static_cast<std::size_t>(res.iterations) + 1);
  CHECK(res.iterations > n);
  CHECK(phi[0] == 0.0);
  for (std::size_t t = 1; t < phi.size(); ++t) {
    CAPTURE(t);
    CHECK(phi[t] <= phi[t - 1] + 1e-12 * std::abs(phi[t - 1]));
  }
  CHECK(phi.back() < phi[1]);
  const double direct = quadratic_model_value(A, b, res.x);
  CHECK(res.model_value == Approx(direct).epsilon(1e-8));
  // At the minimizer phi = -0.5 b^T A^{-1} b.
  const std::vector<double> xs = cholesky_solve(a, b);
  double btx = 0.0;
  for (Index i = 0; i < n; ++i) btx += b[i] * xs[static_cast<std::size_t>(i)];
  CHECK(res.model_value == Approx(-0.5 * btx).epsilon(1e-8));
}

TEST_CASE(
    "conjugate_gradient: kept iterates are x_i at i = ceil(5 * 1.3^j) and the final one, "
    "each reproducing its phi") {
  auto A = log_spaced_diagonal(300, 5.0);
  Rng rng(19);
  const Tensor<double> b = random_vector(300, rng);
  CgOptions options = exact_options(60);
  options.keep_iterates = true;
  const CgResult<double> res = conjugate_gradient(*A, b, options);
  REQUIRE(res.iterations == 60);
  CHECK(res.iterate_steps == std::vector<int>{5, 7, 9, 11, 15, 19, 25, 32, 41, 54, 60});
  REQUIRE(res.iterates.size() == res.iterate_steps.size());
  CHECK(same_values(res.iterates.back(), res.x));
  for (std::size_t j = 0; j < res.iterates.size(); ++j) {
    const int step = res.iterate_steps[j];
    CAPTURE(step);
    const double phi = res.model_values[static_cast<std::size_t>(step)];
    CHECK(quadratic_model_value(*A, b, res.iterates[j]) == Approx(phi).epsilon(1e-9));
    // Bit-identical to stopping the solve at that step (the copy is of x_step, not a later x).
    CHECK(same_values(res.iterates[j], conjugate_gradient(*A, b, exact_options(step)).x));
  }
  // Without the option nothing is stored.
  const CgResult<double> plain = conjugate_gradient(*A, b, exact_options(60));
  CHECK(plain.iterates.empty());
  CHECK(plain.iterate_steps.empty());
}

TEST_CASE(
    "conjugate_gradient: the exact diagonal preconditioner solves a badly scaled, diagonally "
    "dominant system in far fewer iterations") {
  const Index n = 100;
  Rng rng(20);
  // A = D^1/2 (I + S / (2n)) D^1/2 with D spanning 1 .. 1e6 and S symmetric in [-1, 1].
  Tensor<double> a(Shape{n, n});
  Tensor<double> diag(Shape{n});
  for (Index i = 0; i < n; ++i) diag[i] = std::pow(10.0, 6.0 * static_cast<double>(i) / (n - 1));
  for (Index i = 0; i < n; ++i) {
    a[i * n + i] = diag[i];
    for (Index j = 0; j < i; ++j) {
      const double v = rng.symmetric() / (2.0 * n) * std::sqrt(diag[i] * diag[j]);
      a[i * n + j] = v;
      a[j * n + i] = v;
    }
  }
  DenseOperator<double> A(a);
  const Tensor<double> b = random_vector(n, rng);
  CgOptions options;
  options.relative_tolerance = 1e-10;
  options.progress_stopping = false;
  options.max_iterations = 1000;
  DiagonalPreconditioner<double> M(diag);
  const CgResult<double> pre = conjugate_gradient(A, b, options, nullptr, &M);
  const CgResult<double> plain = conjugate_gradient(A, b, options);
  CHECK(pre.status == CgStatus::converged);
  CHECK(pre.iterations <= 20);
  CHECK(plain.iterations > 5 * pre.iterations);
  CHECK(relative_error(pre.x, cholesky_solve(a, b)) < 1e-8);
}

TEST_CASE(
    "conjugate_gradient: shape mismatches throw ShapeError naming the solver, operator and "
    "shapes, bad options throw ValueError") {
  Rng rng(21);
  DenseOperator<double> A(well_conditioned_spd(4, rng));
  const Tensor<double> b = random_vector(4, rng);
  const Tensor<double> short_b = random_vector(3, rng);
  using Catch::Matchers::Contains;
  CHECK_THROWS_MATCHES(
      conjugate_gradient(A, short_b), amari::ShapeError,
      Catch::Matchers::Predicate<amari::ShapeError>([](const amari::ShapeError& e) {
        const std::string m = e.what();
        return m.find("conjugate_gradient") != std::string::npos &&
               m.find("Dense(4 x 4)") != std::string::npos && m.find("(3)") != std::string::npos;
      }));
  CHECK_THROWS_AS(conjugate_gradient(A, b, {}, &short_b), amari::ShapeError);
  const Tensor<double> matrix_b(Shape{2, 2});
  CHECK_THROWS_AS(conjugate_gradient(A, matrix_b), amari::ShapeError);
  DiagonalPreconditioner<double> M(Tensor<double>::full(Shape{5}, 1.0));
  CHECK_THROWS_AS(conjugate_gradient(A, b, {}, nullptr, &M), amari::ShapeError);

  CgOptions negative_iterations;
  negative_iterations.max_iterations = -1;
  CHECK_THROWS_AS(conjugate_gradient(A, b, negative_iterations), amari::ValueError);
  CgOptions negative_tolerance;
  negative_tolerance.relative_tolerance = -1e-6;
  CHECK_THROWS_AS(conjugate_gradient(A, b, negative_tolerance), amari::ValueError);
  CgOptions nan_tolerance;
  nan_tolerance.relative_tolerance = std::numeric_limits<double>::quiet_NaN();
  CHECK_THROWS_AS(conjugate_gradient(A, b, nan_tolerance), amari::ValueError);
  CgOptions negative_epsilon;
  negative_epsilon.progress_epsilon = -1.0;
  CHECK_THROWS_AS(conjugate_gradient(A, b, negative_epsilon), amari::ValueError);
  // max_iterations = 0 is valid: x = 0 with status max_iterations.
  CgOptions zero;
  zero.max_iterations = 0;
  const CgResult<double> res = conjugate_gradient(A, b, zero);
  CHECK(res.status == CgStatus::max_iterations);
  CHECK(res.products == 0);
}
