// Looking inside the curvature (issue 11): Lanczos eigenpairs, power iteration, stochastic Lanczos
// quadrature, and the Hutchinson / Hutch++ / diagonal / Frobenius estimators, on small operators
// built here. The references are independent of the code under test: a cyclic Jacobi eigensolver
// written below, dense matrices formed column by column from products, and traces / moments
// computed from the dense matrices.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <memory>
#include <numeric>
#include <string>
#include <vector>

#include <catch2/catch.hpp>

#include <amari/curvature/ggn.hpp>
#include <amari/curvature/lanczos.hpp>
#include <amari/curvature/linear_operator.hpp>
#include <amari/curvature/spectral_density.hpp>
#include <amari/curvature/trace_estimators.hpp>
#include <amari/nn/heads.hpp>
#include <amari/nn/layers.hpp>
#include <amari/nn/model.hpp>

#include "support/dense.hpp"
#include "support/matchers.hpp"
#include "support/random.hpp"

namespace {

using amari::Index;
using amari::Shape;
using amari::Tensor;
using amari::ValueError;
using amari::test::Dense;
using amari::test::dense_of;
using amari::test::MessageContains;
using amari::test::Rng;
using namespace amari::curvature;

// ---- reference: cyclic Jacobi eigensolver
// ---------------------------------------------------------

struct Eigen {
  std::vector<double> values;                // ascending
  std::vector<std::vector<double>> vectors;  // vectors[i] is the unit eigenvector of values[i]
};

// Cyclic Jacobi rotations (Golub, Van Loan, sec. 8.5) until the off-diagonal part is below 1e-15
// of the Frobenius norm. Slow (O(n^3) per sweep) and simple: the independent reference.
Eigen jacobi_eigen(const Dense& m) {
  const Index n = m.n;
  Dense a = m;
  Dense v(n);
  for (Index i = 0; i < n; ++i) v(i, i) = 1.0;
  const double fro = amari::test::frobenius(m);
  for (int sweep = 0; sweep < 100; ++sweep) {
    double off = 0.0;
    for (Index p = 0; p < n; ++p)
      for (Index q = p + 1; q < n; ++q) off += 2.0 * a(p, q) * a(p, q);
    if (std::sqrt(off) <= 1e-15 * fro) break;
    for (Index p = 0; p < n; ++p) {
      for (Index q = p + 1; q < n; ++q) {
        if (a(p, q) == 0.0) continue;
        const double theta = (a(q, q) - a(p, p)) / (2.0 * a(p, q));
        const double t = std::copysign(1.0, theta) / (std::abs(theta) + std::hypot(theta, 1.0));
        const double c = 1.0 / std::hypot(t, 1.0), s = t * c;
        for (Index k = 0; k < n; ++k) {  // A <- A J (columns p, q)
          const double akp = a(k, p), akq = a(k, q);
          a(k, p) = c * akp - s * akq;
          a(k, q) = s * akp + c * akq;
        }
        for (Index k = 0; k < n; ++k) {  // A <- J^T A (rows p, q)
          const double apk = a(p, k), aqk = a(q, k);
          a(p, k) = c * apk - s * aqk;
          a(q, k) = s * apk + c * aqk;
        }
        for (Index k = 0; k < n; ++k) {
          const double vkp = v(k, p), vkq = v(k, q);
          v(k, p) = c * vkp - s * vkq;
          v(k, q) = s * vkp + c * vkq;
        }
      }
    }
  }
  std::vector<Index> order(static_cast<std::size_t>(n));
  for (Index i = 0; i < n; ++i) order[static_cast<std::size_t>(i)] = i;
  std::sort(order.begin(), order.end(), [&](Index x, Index y) { return a(x, x) < a(y, y); });
  Eigen e;
  for (Index i : order) {
    e.values.push_back(a(i, i));
    std::vector<double> col(static_cast<std::size_t>(n));
    for (Index k = 0; k < n; ++k) col[static_cast<std::size_t>(k)] = v(k, i);
    e.vectors.push_back(col);
  }
  return e;
}

// ---- test matrices
// --------------------------------------------------------------------------------

// U diag(lambda) U^T with U a random orthogonal matrix (Gram-Schmidt of a Gaussian matrix).
Dense with_spectrum(const std::vector<double>& lambda, std::uint64_t seed) {
  const Index n = static_cast<Index>(lambda.size());
  Rng rng(seed);
  std::vector<std::vector<double>> u;
  while (static_cast<Index>(u.size()) < n) {
    std::vector<double> x(static_cast<std::size_t>(n));
    for (double& xi : x) xi = rng.normal();
    for (int pass = 0; pass < 2; ++pass) {
      for (const auto& q : u) {
        double d = 0.0;
        for (Index k = 0; k < n; ++k)
          d += q[static_cast<std::size_t>(k)] * x[static_cast<std::size_t>(k)];
        for (Index k = 0; k < n; ++k)
          x[static_cast<std::size_t>(k)] -= d * q[static_cast<std::size_t>(k)];
      }
    }
    double s = 0.0;
    for (double xi : x) s += xi * xi;
    for (double& xi : x) xi /= std::sqrt(s);
    u.push_back(x);
  }
  Dense a(n);
  for (Index i = 0; i < n; ++i)
    for (Index j = 0; j < n; ++j)
      for (Index k = 0; k < n; ++k)
        a(i, j) += u[static_cast<std::size_t>(k)][static_cast<std::size_t>(i)] *
                   lambda[static_cast<std::size_t>(k)] *
                   u[static_cast<std::size_t>(k)][static_cast<std::size_t>(j)];
  for (Index i = 0; i < n; ++i)
    for (Index j = 0; j < i; ++j) a(i, j) = a(j, i) = 0.5 * (a(i, j) + a(j, i));
  return a;
}

// A random symmetric matrix with N(0, 1) entries.
Dense random_symmetric(Index n, std::uint64_t seed) {
  Rng rng(seed);
  Dense a(n);
  for (Index i = 0; i < n; ++i)
    for (Index j = 0; j <= i; ++j) a(i, j) = a(j, i) = rng.normal();
  return a;
}

template <class T = double>
std::shared_ptr<DenseOperator<T>> op_of(const Dense& a) {
  Tensor<T> m(Shape{a.n, a.n});
  for (Index k = 0; k < a.n * a.n; ++k) m[k] = static_cast<T>(a.a[static_cast<std::size_t>(k)]);
  return std::make_shared<DenseOperator<T>>(m);
}

Dense product(const Dense& a, const Dense& b) {
  Dense c(a.n);
  for (Index i = 0; i < a.n; ++i)
    for (Index k = 0; k < a.n; ++k)
      for (Index j = 0; j < a.n; ++j) c(i, j) += a(i, k) * b(k, j);
  return c;
}

double trace(const Dense& a) {
  double t = 0.0;
  for (Index i = 0; i < a.n; ++i) t += a(i, i);
  return t;
}

double spectral_norm(const Dense& a) {
  const Eigen e = jacobi_eigen(a);
  return std::max(std::abs(e.values.front()), std::abs(e.values.back()));
}

// ||A y - theta y|| with the dense matrix, in double.
double true_residual(const Dense& a, const Tensor<double>& y, double theta) {
  const Tensor<double> ay = a.times(y);
  double s = 0.0;
  for (Index i = 0; i < a.n; ++i) s += (ay[i] - theta * y[i]) * (ay[i] - theta * y[i]);
  return std::sqrt(s);
}

// min over the sign of ||y -+ u||: the distance between two unit eigenvectors.
double vector_distance(const Tensor<double>& y, const std::vector<double>& u) {
  double plus = 0.0, minus = 0.0;
  for (Index i = 0; i < y.size(); ++i) {
    plus += (y[i] - u[static_cast<std::size_t>(i)]) * (y[i] - u[static_cast<std::size_t>(i)]);
    minus += (y[i] + u[static_cast<std::size_t>(i)]) * (y[i] + u[static_cast<std::size_t>(i)]);
  }
  return std::sqrt(std::min(plus, minus));
}

template <class T>
bool all_finite(const Tensor<T>& t) {
  for (Index i = 0; i < t.size(); ++i)
    if (!std::isfinite(static_cast<double>(t[i]))) return false;
  return true;
}

// A wrapped operator whose product number `bad` (1-based) and every later one is NaN in one entry.
class NanAfter final : public LinearOperator<double> {
 public:
  NanAfter(std::shared_ptr<LinearOperator<double>> base, int bad)
      : base_(std::move(base)), bad_(bad) {}
  Index size() const override { return base_->size(); }
  void apply(const Tensor<double>& v, Tensor<double>& out) override {
    base_->apply(v, out);
    if (++calls_ >= bad_) out[out.size() / 2] = std::numeric_limits<double>::quiet_NaN();
  }
  std::string name() const override { return "NanAfter(" + std::to_string(bad_) + ")"; }
  int calls() const { return calls_; }

 private:
  std::shared_ptr<LinearOperator<double>> base_;
  int bad_;
  int calls_ = 0;
};

// A spectrum with well-separated ends: 3 isolated eigenvalues at each end, a bulk in between.
std::vector<double> separated_spectrum(Index n) {
  std::vector<double> lambda = {-30.0, -20.0, -12.0, 40.0, 28.0, 20.0};
  for (Index i = 0; i < n - 6; ++i)
    lambda.push_back(-5.0 + 10.0 * static_cast<double>(i) / static_cast<double>(n - 7));
  return lambda;
}

// ---- tridiagonal eigensolver
// ----------------------------------------------------------------------

TEST_CASE("symmetric_tridiagonal_eigen: eigenvalues and vectors match the Jacobi reference") {
  for (Index m : {1, 2, 3, 7, 40}) {
    CAPTURE(m);
    Rng rng(static_cast<std::uint64_t>(m));
    std::vector<double> d(static_cast<std::size_t>(m)), e(static_cast<std::size_t>(m - 1));
    Dense t(m);
    for (Index i = 0; i < m; ++i) t(i, i) = d[static_cast<std::size_t>(i)] = rng.normal();
    for (Index i = 0; i + 1 < m; ++i)
      t(i, i + 1) = t(i + 1, i) = e[static_cast<std::size_t>(i)] = rng.normal();
    const TridiagonalEigen got = symmetric_tridiagonal_eigen(d, e, true);
    const TridiagonalEigen rows = symmetric_tridiagonal_eigen(d, e, false);
    const Eigen want = jacobi_eigen(t);
    for (Index i = 0; i < m; ++i) {
      const auto ui = static_cast<std::size_t>(i);
      CHECK(got.values[ui] == Approx(want.values[ui]).margin(1e-12));
      CHECK(rows.values[ui] == Approx(want.values[ui]).margin(1e-12));
      // Columns of `vectors` are the eigenvectors; first / last rows agree with them.
      Tensor<double> col(Shape{m});
      for (Index r = 0; r < m; ++r) col[r] = got.vectors[static_cast<std::size_t>(r * m + i)];
      CHECK(vector_distance(col, want.vectors[ui]) < 1e-10);
      CHECK(std::abs(rows.first[ui]) == Approx(std::abs(col[0])).margin(1e-12));
      CHECK(std::abs(rows.last[ui]) == Approx(std::abs(col[m - 1])).margin(1e-12));
    }
  }
  CHECK(symmetric_tridiagonal_eigen({}, {}, true).values.empty());
  CHECK_THROWS_MATCHES(symmetric_tridiagonal_eigen({1.0, 2.0}, {}, false), amari::ShapeError,
                       MessageContains({"symmetric_tridiagonal_eigen", "off-diagonal"}));
}

// ---- orthonormal basis
// ----------------------------------------------------------------------------

// max |q_i^T q_j - delta_ij| over the basis.
double orthogonality_loss(const OrthonormalBasis<double>& q) {
  double worst = 0.0;
  for (int i = 0; i < q.size(); ++i) {
    for (int j = 0; j <= i; ++j) {
      double d = 0.0;
      for (Index k = 0; k < q.length(); ++k) d += q[i][k] * q[j][k];
      worst = std::max(worst, std::abs(d - (i == j ? 1.0 : 0.0)));
    }
  }
  return worst;
}

TEST_CASE(
    "OrthonormalBasis: CGS2 keeps nearly dependent vectors orthonormal to working precision") {
  // w_k = e + 1e-7 r_k: one Gram-Schmidt pass would leave an error of about eps / 1e-7 ~ 1e-9
  // (classical Gram-Schmidt loses orthogonality like eps * cond^2); twice is enough.
  const Index n = 300;
  Rng rng(12);
  Tensor<double> e(Shape{n});
  for (Index i = 0; i < n; ++i) e[i] = rng.normal();
  OrthonormalBasis<double> q(n);
  std::vector<double> h;
  for (int k = 0; k < 20; ++k) {
    Tensor<double> w = e.clone();
    for (Index i = 0; i < n; ++i) w[i] += 1e-7 * rng.normal();
    const double before = std::sqrt(std::inner_product(w.begin(), w.end(), w.begin(), 0.0));
    const double after = q.orthogonalize(w, &h);
    CHECK(static_cast<int>(h.size()) == k);
    REQUIRE(after > 1e-9 * before);
    q.append(w, after);
  }
  CHECK(orthogonality_loss(q) < 1e-14);
  // combine: sum_i c_i q_i, checked against a plain loop.
  std::vector<double> c = {0.5, -1.0, 2.0};
  Tensor<double> out(Shape{n});
  q.combine(c, out);
  for (Index i = 0; i < n; ++i)
    CHECK(out[i] == Approx(0.5 * q[0][i] - q[1][i] + 2.0 * q[2][i]).margin(1e-14));
  // clear() keeps storage, append() reuses it.
  q.clear();
  CHECK(q.size() == 0);
  CHECK_THROWS_AS(q.append(e, 0.0), ValueError);
}

TEST_CASE("LanczosProcess: the basis stays orthonormal and no ghost eigenvalues appear") {
  // A spread spectrum with a few well-separated large eigenvalues: plain Lanczos loses
  // orthogonality as soon as they converge and then repeats them ("ghosts").
  const Index n = 120;
  std::vector<double> lambda;
  for (Index i = 0; i < n; ++i)
    lambda.push_back(
        std::pow(10.0, -4.0 + 4.0 * static_cast<double>(i) / static_cast<double>(n - 1)));
  lambda[0] = 100.0;
  lambda[1] = 50.0;
  const Dense a = with_spectrum(lambda, 13);
  auto op = op_of(a);
  LanczosProcess<double> process(*op);
  Tensor<double> start(Shape{n});
  fill_probe(start, ProbeDistribution::gaussian, 1, 0);
  process.restart(start);
  while (process.steps() < 80 && process.step()) {
  }
  REQUIRE(process.steps() == 80);
  CHECK(orthogonality_loss(process.basis()) < 1e-13);
  const std::vector<double> off(process.beta().begin(), process.beta().end() - 1);
  const TridiagonalEigen eig = symmetric_tridiagonal_eigen(process.alpha(), off, false);
  // Exactly one Ritz value near 100 and one near 50.
  int near100 = 0, near50 = 0;
  for (double theta : eig.values) {
    near100 += std::abs(theta - 100.0) < 1e-6;
    near50 += std::abs(theta - 50.0) < 1e-6;
  }
  CHECK(near100 == 1);
  CHECK(near50 == 1);
}

// ---- Lanczos
// --------------------------------------------------------------------------------------

TEST_CASE("lanczos: Ritz pairs at both ends of a well-separated spectrum match Jacobi to 1e-8") {
  const Index n = 80;
  const Dense a = with_spectrum(separated_spectrum(n), 7);
  auto op = op_of(a);
  const Eigen want = jacobi_eigen(a);
  LanczosOptions o;
  o.which = SpectrumEnd::both;
  o.tolerance = 1e-12;
  o.verify_residuals = true;
  const LanczosResult<double> r = lanczos(*op, 3, o);
  INFO(r.message);
  CHECK(r.status == SpectrumStatus::converged);
  CHECK(r.iterations < n);  // converged before the Krylov space filled the whole space
  REQUIRE(r.largest.eigenvalues.size() == 3);
  REQUIRE(r.smallest.eigenvalues.size() == 3);
  for (std::size_t i = 0; i < 3; ++i) {
    CAPTURE(i);
    const std::size_t top = static_cast<std::size_t>(n) - 1 - i;
    CHECK(r.largest.eigenvalues[i] == Approx(want.values[top]).margin(1e-8));
    CHECK(r.smallest.eigenvalues[i] == Approx(want.values[i]).margin(1e-8));
    CHECK(vector_distance(r.largest.eigenvectors[i], want.vectors[top]) < 1e-8);
    CHECK(vector_distance(r.smallest.eigenvectors[i], want.vectors[i]) < 1e-8);
    CHECK(r.largest.residual_estimates[i] <= 1e-12 * r.norm_estimate);
    CHECK(r.largest.residuals[i] <= 1e-10);  // measured with one more product each
    CHECK(r.smallest.residuals[i] <= 1e-10);
  }
  CHECK(r.products == r.iterations + 6);
  // Descending for the largest end, ascending for the smallest.
  CHECK(r.largest.eigenvalues[0] > r.largest.eigenvalues[1]);
  CHECK(r.smallest.eigenvalues[0] < r.smallest.eigenvalues[1]);
  CHECK(r.norm_estimate <= spectral_norm(a) * (1 + 1e-12));
}

TEST_CASE("lanczos: reported residuals are honest on clustered spectra") {
  // Clusters of nearly equal eigenvalues at the top: Lanczos cannot resolve them in few steps, so
  // the residuals are large; what is reported must bound what is true.
  const Index n = 60;
  std::vector<double> lambda;
  for (int i = 0; i < 5; ++i) lambda.push_back(10.0 + 1e-4 * i);
  for (int i = 0; i < 5; ++i) lambda.push_back(9.0 + 1e-3 * i);
  for (Index i = 10; i < n; ++i) lambda.push_back(std::sin(static_cast<double>(i)));
  const Dense a = with_spectrum(lambda, 11);
  auto op = op_of(a);
  for (int steps : {6, 12, 25, 40}) {
    CAPTURE(steps);
    LanczosOptions o;
    o.which = SpectrumEnd::both;
    o.max_iterations = steps;
    o.tolerance = 0.0;
    o.verify_residuals = true;
    const LanczosResult<double> r = lanczos(*op, 4, o);
    CHECK(r.status == SpectrumStatus::max_iterations);
    CHECK(r.iterations == steps);
    for (const RitzPairs<double>* pairs : {&r.largest, &r.smallest}) {
      REQUIRE(pairs->eigenvalues.size() == 4);
      for (std::size_t i = 0; i < 4; ++i) {
        CAPTURE(i);
        const double truth = true_residual(a, pairs->eigenvectors[i], pairs->eigenvalues[i]);
        CHECK(truth <= pairs->residual_estimates[i] * (1 + 1e-6) + 1e-12);
        CHECK(pairs->residuals[i] == Approx(truth).margin(1e-12));
        // Not vacuous: the estimate is also close to the truth from above.
        CHECK(pairs->residual_estimates[i] <= truth * (1 + 1e-6) + 1e-12);
      }
    }
  }
}

TEST_CASE("lanczos: a near-zero cluster at the bottom (a rank-deficient GGN) is reported honestly") {
  // A GGN has rank at most N * C, so most of its spectrum sits at zero up to rounding. Here 30 of
  // 60 eigenvalues lie in [0, 1e-12]: the smallest Ritz values must stay inside the spectrum (no
  // negative eigenvalue of a positive semi-definite operator beyond rounding), their residual
  // estimates must bound the true residuals, and with the whole Krylov space they reach the cluster.
  const Index n = 60;
  std::vector<double> lambda;
  for (int i = 0; i < 30; ++i) lambda.push_back(1e-12 * static_cast<double>(i % 7) / 6.0);
  for (Index i = 30; i < n; ++i) lambda.push_back(1e-2 * std::pow(1e3, static_cast<double>(i - 30) / 29.0));
  const Dense a = with_spectrum(lambda, 17);
  auto op = op_of(a);
  const double rounding = 1e-12;  // ~ sqrt(n) eps ||A|| with ||A|| = 10, with room
  for (int steps : {8, 20, 40, 60}) {
    CAPTURE(steps);
    LanczosOptions o;
    o.which = SpectrumEnd::smallest;
    o.max_iterations = steps;
    o.tolerance = 0.0;
    o.verify_residuals = true;
    const LanczosResult<double> r = lanczos(*op, 4, o);
    const RitzPairs<double>& low = r.smallest;
    REQUIRE(low.eigenvalues.size() == 4);
    for (std::size_t i = 0; i < 4; ++i) {
      CAPTURE(i, low.eigenvalues[i]);
      CHECK(low.eigenvalues[i] >= -rounding);
      CHECK(low.eigenvalues[i] <= 10.0 + rounding);
      const double truth = true_residual(a, low.eigenvectors[i], low.eigenvalues[i]);
      CHECK(truth <= low.residual_estimates[i] * (1 + 1e-6) + rounding);
      CHECK(low.residuals[i] == Approx(truth).margin(1e-12));
    }
    if (steps == n) {
      // The cluster has 7 distinct values, so the Krylov space of any start vector has at most
      // 37 dimensions and becomes invariant: its Ritz values are the distinct eigenvalues, and
      // the bottom ones lie in the cluster, to rounding.
      CHECK(r.status == SpectrumStatus::invariant_subspace);
      CHECK(r.iterations <= 37);
      for (std::size_t i = 0; i < 4; ++i) CHECK(std::abs(low.eigenvalues[i]) <= rounding);
    }
  }
}

TEST_CASE("lanczos: an invariant subspace stops cleanly and is reported") {
  SECTION("identity: every vector is an eigenvector") {
    Dense id(6);
    for (Index i = 0; i < 6; ++i) id(i, i) = 1.0;
    auto op = op_of(id);
    const LanczosResult<double> r = lanczos(*op, 3);
    INFO(r.message);
    CHECK(r.status == SpectrumStatus::invariant_subspace);
    CHECK(r.iterations == 1);
    CHECK_THAT(r.message, Catch::Contains("iteration 1"));
    REQUIRE(r.largest.eigenvalues.size() == 1);
    CHECK(r.largest.eigenvalues[0] == Approx(1.0).margin(1e-14));
    CHECK(r.largest.residual_estimates[0] <= 1e-14);
  }
  SECTION("rank 2: the Krylov space of a generic start has dimension 3") {
    const Index n = 12;
    std::vector<double> lambda(static_cast<std::size_t>(n), 0.0);
    lambda[0] = 5.0;
    lambda[1] = -2.0;
    const Dense a = with_spectrum(lambda, 3);
    auto op = op_of(a);
    LanczosOptions o;
    o.which = SpectrumEnd::both;
    o.verify_residuals = true;
    const LanczosResult<double> r = lanczos(*op, 2, o);
    INFO(r.message);
    CHECK(r.status == SpectrumStatus::invariant_subspace);
    CHECK(r.iterations == 3);
    REQUIRE(r.largest.eigenvalues.size() == 2);
    CHECK(r.largest.eigenvalues[0] == Approx(5.0).margin(1e-12));
    CHECK(r.largest.eigenvalues[1] == Approx(0.0).margin(1e-12));
    CHECK(r.smallest.eigenvalues[0] == Approx(-2.0).margin(1e-12));
    for (double res : r.largest.residuals) CHECK(res <= 1e-12);
  }
  SECTION("zero operator") {
    auto op = op_of(Dense(5));
    const LanczosResult<double> r = lanczos(*op, 2);
    CHECK(r.status == SpectrumStatus::invariant_subspace);
    CHECK(r.iterations == 1);
    CHECK(r.largest.eigenvalues == std::vector<double>{0.0});
  }
}

TEST_CASE("lanczos: k > n and n = 0 1 2 give all n pairs and a start vector is honoured") {
  SECTION("n = 0") {
    Tensor<double> empty(Shape{0, 0});
    DenseOperator<double> op(empty);
    const LanczosResult<double> r = lanczos(op, 3);
    CHECK(r.status == SpectrumStatus::converged);
    CHECK(r.iterations == 0);
    CHECK(r.largest.eigenvalues.empty());
    const PowerIterationResult<double> p = power_iteration(op);
    CHECK(p.status == SpectrumStatus::converged);
    CHECK(p.eigenvector.size() == 0);
  }
  for (Index n : {1, 2, 5}) {
    CAPTURE(n);
    const Dense a = random_symmetric(n, 100 + static_cast<std::uint64_t>(n));
    auto op = op_of(a);
    const Eigen want = jacobi_eigen(a);
    LanczosOptions o;
    o.which = SpectrumEnd::both;
    const LanczosResult<double> r = lanczos(*op, 10, o);  // k > n: all n pairs
    INFO(r.message);
    CHECK(r.status == SpectrumStatus::converged);
    CHECK(r.iterations == n);
    REQUIRE(static_cast<Index>(r.largest.eigenvalues.size()) == n);
    REQUIRE(static_cast<Index>(r.smallest.eigenvalues.size()) == n);
    for (Index i = 0; i < n; ++i) {
      CHECK(r.smallest.eigenvalues[static_cast<std::size_t>(i)] ==
            Approx(want.values[static_cast<std::size_t>(i)]).margin(1e-12));
      CHECK(r.largest.eigenvalues[static_cast<std::size_t>(i)] ==
            Approx(want.values[static_cast<std::size_t>(n - 1 - i)]).margin(1e-12));
    }
  }
  SECTION("start vector = an eigenvector: invariant at once") {
    const Dense a = with_spectrum({3.0, 1.0, -1.0, 2.0}, 5);
    const Eigen want = jacobi_eigen(a);
    Tensor<double> start(Shape{4});
    for (Index i = 0; i < 4; ++i) start[i] = 2.0 * want.vectors[3][static_cast<std::size_t>(i)];
    auto op = op_of(a);
    const LanczosResult<double> r = lanczos(*op, 1, {}, &start);
    CHECK(r.status == SpectrumStatus::invariant_subspace);
    CHECK(r.largest.eigenvalues[0] == Approx(3.0).margin(1e-12));
  }
}

TEST_CASE("lanczos: a NaN product gives status non_finite naming the iteration and no garbage") {
  const Dense a = with_spectrum(separated_spectrum(30), 2);
  NanAfter op(op_of(a), 5);
  LanczosOptions o;
  o.which = SpectrumEnd::both;
  o.tolerance = 0.0;
  const LanczosResult<double> r = lanczos(op, 2, o);
  INFO(r.message);
  CHECK(r.status == SpectrumStatus::non_finite);
  CHECK_THAT(r.message, Catch::Contains("iteration 5"));
  CHECK(r.iterations == 4);
  CHECK(r.products == 5);
  CHECK(op.calls() == 5);  // stopped at once
  REQUIRE(r.largest.eigenvalues.size() == 2);
  for (const RitzPairs<double>* pairs : {&r.largest, &r.smallest}) {
    for (std::size_t i = 0; i < pairs->eigenvalues.size(); ++i) {
      CHECK(std::isfinite(pairs->eigenvalues[i]));
      CHECK(std::isfinite(pairs->residual_estimates[i]));
      CHECK(all_finite(pairs->eigenvectors[i]));
      // The pairs of the 4 good steps keep honest residuals.
      CHECK(true_residual(a, pairs->eigenvectors[i], pairs->eigenvalues[i]) <=
            pairs->residual_estimates[i] * (1 + 1e-6) + 1e-12);
    }
  }
  SECTION("first product") {
    NanAfter first(op_of(a), 1);
    const LanczosResult<double> r1 = lanczos(first, 2);
    CHECK(r1.status == SpectrumStatus::non_finite);
    CHECK(r1.iterations == 0);
    CHECK(r1.largest.eigenvalues.empty());
  }
}

TEST_CASE("lanczos: bad arguments throw ValueError naming lanczos and the value") {
  auto op = op_of(random_symmetric(4, 1));
  CHECK_THROWS_MATCHES(lanczos(*op, 0), ValueError, MessageContains({"lanczos", "k = 0"}));
  CHECK_THROWS_MATCHES(lanczos(*op, -2), ValueError, MessageContains({"lanczos", "k = -2"}));
  LanczosOptions o;
  o.max_iterations = 0;
  CHECK_THROWS_MATCHES(lanczos(*op, 1, o), ValueError,
                       MessageContains({"lanczos", "max_iterations = 0"}));
  o = {};
  o.tolerance = -1.0;
  CHECK_THROWS_MATCHES(lanczos(*op, 1, o), ValueError, MessageContains({"lanczos", "tolerance"}));
  o.tolerance = std::numeric_limits<double>::quiet_NaN();
  CHECK_THROWS_AS(lanczos(*op, 1, o), ValueError);
  Tensor<double> zero(Shape{4});
  CHECK_THROWS_MATCHES(lanczos(*op, 1, {}, &zero), ValueError, MessageContains({"start", "norm"}));
  Tensor<double> wrong(Shape{3});
  CHECK_THROWS_AS(lanczos(*op, 1, {}, &wrong), amari::ShapeError);
  PowerIterationOptions p;
  p.max_iterations = 0;
  CHECK_THROWS_MATCHES(power_iteration(*op, p), ValueError,
                       MessageContains({"power_iteration", "max_iterations = 0"}));
}

TEST_CASE("lanczos: float operators give the top eigenvalues to float accuracy") {
  const Dense a = with_spectrum(separated_spectrum(50), 9);
  auto op = op_of<float>(a);
  const Eigen want = jacobi_eigen(a);
  LanczosOptions o;
  o.tolerance = 1e-6;
  o.verify_residuals = true;
  const LanczosResult<float> r = lanczos(*op, 3, o);
  INFO(r.message);
  CHECK(r.status == SpectrumStatus::converged);
  for (std::size_t i = 0; i < 3; ++i) {
    CHECK(r.largest.eigenvalues[i] == Approx(want.values[49 - i]).margin(1e-4));
    CHECK(r.largest.residuals[i] <= 1e-4);
  }
}

TEST_CASE("lanczos: top-3 eigenvalues of a tanh MLP's GGN equal those of its dense matrix") {
  amari::nn::Model<double> model(amari::nn::mlp<double>({5, 6, 3}), 1);
  amari::nn::SoftmaxCrossEntropy<double> head;
  Rng rng(21);
  Tensor<double> x(Shape{8, 5});
  for (Index i = 0; i < x.size(); ++i) x[i] = rng.normal();
  GgnOperator<double> ggn(model, head, x);
  const Index p = ggn.size();
  REQUIRE(p == 5 * 6 + 6 + 6 * 3 + 3);
  const Dense g = dense_of(ggn);
  const Eigen want = jacobi_eigen(g);
  LanczosOptions o;
  o.tolerance = 1e-12;
  const LanczosResult<double> r = lanczos(ggn, 3, o);
  INFO(r.message);
  CHECK(r.status != SpectrumStatus::non_finite);
  REQUIRE(r.largest.eigenvalues.size() == 3);
  const double scale = want.values.back();
  for (std::size_t i = 0; i < 3; ++i) {
    CAPTURE(i);
    CHECK(r.largest.eigenvalues[i] ==
          Approx(want.values[static_cast<std::size_t>(p) - 1 - i]).margin(1e-8 * scale));
  }
  // The GGN has rank <= N (C - 1) = 16 < P = 57: the Krylov space closes early.
  CHECK(r.iterations <= 17);
}

// ---- power iteration
// ------------------------------------------------------------------------------

TEST_CASE(
    "power_iteration: converges to the eigenvalue of largest magnitude and reports its status") {
  SECTION("dominant negative eigenvalue") {
    const Dense a = with_spectrum({-4.0, 2.0, 1.0, 0.5, -1.0, 0.1}, 4);
    auto op = op_of(a);
    PowerIterationOptions o;
    o.tolerance = 1e-10;
    const PowerIterationResult<double> r = power_iteration(*op, o);
    INFO(r.message);
    CHECK(r.status == SpectrumStatus::converged);
    CHECK(r.eigenvalue == Approx(-4.0).margin(1e-9));
    CHECK(true_residual(a, r.eigenvector, r.eigenvalue) == Approx(r.residual).margin(1e-13));
    CHECK(r.residual <= 1e-10 * 4.0);
  }
  SECTION("+-lambda both dominant: no convergence, reported") {
    const Dense a = with_spectrum({3.0, -3.0, 1.0, 0.5}, 8);
    auto op = op_of(a);
    PowerIterationOptions o;
    o.max_iterations = 200;
    const PowerIterationResult<double> r = power_iteration(*op, o);
    CHECK(r.status == SpectrumStatus::max_iterations);
    CHECK(r.iterations == 200);
    CHECK(true_residual(a, r.eigenvector, r.eigenvalue) == Approx(r.residual).margin(1e-12));
  }
  SECTION("NaN product: the previous pair, consistent") {
    const Dense a = with_spectrum({5.0, 4.0, 1.0, 0.5}, 8);
    NanAfter op(op_of(a), 4);
    const PowerIterationResult<double> r = power_iteration(op);
    CHECK(r.status == SpectrumStatus::non_finite);
    CHECK_THAT(r.message, Catch::Contains("iteration 4"));
    CHECK(r.iterations == 3);
    CHECK(std::isfinite(r.eigenvalue));
    CHECK(all_finite(r.eigenvector));
    CHECK(true_residual(a, r.eigenvector, r.eigenvalue) == Approx(r.residual).margin(1e-12));
  }
}

// ---- stochastic Lanczos quadrature
// ----------------------------------------------------------------

double trapezoid(const DensityCurve& c) {
  double s = 0.0;
  for (std::size_t i = 0; i + 1 < c.density.size(); ++i)
    s += 0.5 * (c.density[i] + c.density[i + 1]);
  return s * c.spacing;
}

TEST_CASE("spectral_density: weights sum to 1 and the broadened density integrates to 1") {
  const Dense a = random_symmetric(40, 5);
  auto op = op_of(a);
  for (ProbeDistribution dist : {ProbeDistribution::rademacher, ProbeDistribution::gaussian}) {
    SpectralDensityOptions o;
    o.probes = 6;
    o.steps = 15;
    o.distribution = dist;
    const SpectralDensity d = spectral_density(*op, o);
    INFO(d.message);
    CHECK(d.status == SpectrumStatus::converged);
    CHECK(d.probes == 6);
    CHECK(d.products == 6 * 15);
    CHECK(d.nodes.size() == 6 * 15);
    CHECK(d.probe_offsets.size() == 7);
    double w = 0.0;
    for (double x : d.weights) w += x;
    CHECK(w == Approx(1.0).margin(1e-12));
    CHECK(spectral_moment(d, 0) == Approx(1.0).margin(1e-12));
    for (double sigma : {0.05, 0.5, 3.0}) {
      const DensityCurve c = broadened_density(d, sigma, 4000);
      CHECK(trapezoid(c) == Approx(1.0).margin(1e-6));
    }
  }
  CHECK_THROWS_MATCHES(broadened_density(spectral_density(*op), 0.0), ValueError,
                       MessageContains({"broadened_density", "sigma"}));
  SpectralDensityOptions bad;
  bad.probes = 0;
  CHECK_THROWS_MATCHES(spectral_density(*op, bad), ValueError,
                       MessageContains({"spectral_density", "probes = 0"}));
  bad = {};
  bad.steps = -1;
  CHECK_THROWS_MATCHES(spectral_density(*op, bad), ValueError,
                       MessageContains({"spectral_density", "steps = -1"}));
}

TEST_CASE("spectral_density: full-rank steps put every eigenvalue among each probe's nodes") {
  const Index n = 25;
  const Dense a = random_symmetric(n, 6);
  const Eigen want = jacobi_eigen(a);
  auto op = op_of(a);
  SpectralDensityOptions o;
  o.probes = 3;
  o.steps = 1000;  // clamped to n
  const SpectralDensity d = spectral_density(*op, o);
  CHECK(d.products == 3 * n);
  for (int l = 0; l < 3; ++l) {
    const auto lo = static_cast<std::size_t>(d.probe_offsets[static_cast<std::size_t>(l)]);
    REQUIRE(d.probe_offsets[static_cast<std::size_t>(l) + 1] -
                d.probe_offsets[static_cast<std::size_t>(l)] ==
            n);
    for (Index i = 0; i < n; ++i) {
      CHECK(d.nodes[lo + static_cast<std::size_t>(i)] ==
            Approx(want.values[static_cast<std::size_t>(i)]).margin(1e-9));
    }
  }
}

TEST_CASE(
    "spectral_density: moments match tr(A^p)/n exactly for a diagonal A and within the "
    "probe error for a dense A") {
  SECTION("diagonal A, Rademacher probes: u^T A^p u = tr(A^p)/n for every probe") {
    const Index n = 30;
    Tensor<double> diag(Shape{n});
    Rng rng(2);
    for (Index i = 0; i < n; ++i) diag[i] = rng.uniform(-3.0, 5.0);
    DiagonalOperator<double> op(diag);
    SpectralDensityOptions o;
    o.probes = 4;
    o.steps = 3;  // exact for degrees <= 5
    const SpectralDensity d = spectral_density(op, o);
    for (int p : {1, 2, 3, 4, 5}) {
      double want = 0.0;
      for (Index i = 0; i < n; ++i) want += std::pow(diag[i], p);
      want /= static_cast<double>(n);
      CAPTURE(p);
      CHECK(spectral_moment(d, p) == Approx(want).epsilon(1e-10));
    }
  }
  SECTION("dense A: within 4 standard errors of the Rademacher quadratic form") {
    const Index n = 50;
    const Dense a = random_symmetric(n, 8);
    auto op = op_of(a);
    const Dense a2 = product(a, a);
    SpectralDensityOptions o;
    o.probes = 200;
    o.steps = 4;
    const SpectralDensity d = spectral_density(*op, o);
    for (int p : {1, 2}) {
      const Dense& b = p == 1 ? a : a2;
      // Var[v^T B v] = 2 sum_{i != j} b_ij^2 for Rademacher v; u = v / sqrt(n).
      double off = 0.0;
      for (Index i = 0; i < n; ++i)
        for (Index j = 0; j < n; ++j)
          if (i != j) off += b(i, j) * b(i, j);
      const double se = std::sqrt(2.0 * off / o.probes) / static_cast<double>(n);
      const double want = trace(b) / static_cast<double>(n);
      CAPTURE(p, want, se);
      CHECK(std::abs(spectral_moment(d, p) - want) <= 4.0 * se);
      // ... and not trivially: the error is not zero (the test can see a wrong moment).
      CHECK(std::abs(spectral_moment(d, p) - want) > 1e-6 * se);
    }
  }
}

TEST_CASE("spectral_density: a NaN product ends the run with the probes before it") {
  const Dense a = random_symmetric(20, 3);
  NanAfter op(op_of(a), 25);  // inside the third probe of 10 steps
  SpectralDensityOptions o;
  o.probes = 5;
  o.steps = 10;
  const SpectralDensity d = spectral_density(op, o);
  INFO(d.message);
  CHECK(d.status == SpectrumStatus::non_finite);
  CHECK_THAT(d.message, Catch::Contains("probe 2"));
  CHECK(d.probes == 2);
  double w = 0.0;
  for (std::size_t k = 0; k < d.nodes.size(); ++k) {
    CHECK(std::isfinite(d.nodes[k]));
    w += d.weights[k];
  }
  CHECK(w == Approx(1.0).margin(1e-12));
}

// ---- trace, diagonal and Frobenius estimators
// -----------------------------------------------------

struct NamedMatrix {
  const char* name;
  Dense a;
};

std::vector<NamedMatrix> trace_test_matrices() {
  std::vector<double> decaying, indefinite;
  for (int i = 1; i <= 60; ++i) decaying.push_back(1.0 / (i * i));
  for (int i = 1; i <= 60; ++i) indefinite.push_back((i % 3 == 0 ? -1.0 : 1.0) * (1.0 + 0.1 * i));
  return {{"dense N(0,1)", random_symmetric(60, 17)},
          {"decaying PSD", with_spectrum(decaying, 18)},
          {"indefinite", with_spectrum(indefinite, 19)}};
}

// The per-probe values are skewed (for the decaying spectrum v^T A v is nearly lambda_1 chi^2_1)
// and the standard error comes from their sample variance, so z = error / standard_error follows a
// skewed t-like law rather than N(0, 1). Over many seeds the checks are: at least 95% of the
// estimates within 4 standard errors, and a mean z^2 in [0.5, 2.5]. A standard error off by the
// usual mistakes (no 1/sqrt(probes), variance instead of standard deviation) lands far outside.
struct Calibration {
  int trials = 0, within4 = 0;
  double z2 = 0.0;
  void add(double error, double standard_error) {
    ++trials;
    within4 += std::abs(error) <= 4.0 * standard_error + 1e-12;
    z2 += error * error / (standard_error * standard_error);
  }
  void check() const {
    CHECK(within4 >= 0.95 * trials);
    CHECK(z2 / trials >= 0.5);
    CHECK(z2 / trials <= 2.5);
  }
};

TEST_CASE("hutchinson and hutch++: within 4 reported standard errors of the trace and calibrated") {
  for (const NamedMatrix& m : trace_test_matrices()) {
    CAPTURE(m.name);
    auto op = op_of(m.a);
    const double tr = trace(m.a);
    for (ProbeDistribution dist : {ProbeDistribution::rademacher, ProbeDistribution::gaussian}) {
      CAPTURE(to_string(dist));
      Calibration hutch, pp_cal;
      for (int seed = 0; seed < 100; ++seed) {
        TraceEstimatorOptions o;
        o.probes = 60;
        o.distribution = dist;
        o.seed = static_cast<std::uint64_t>(seed);
        const StochasticEstimate h = hutchinson_trace(*op, o);
        const StochasticEstimate pp = hutch_plus_plus_trace(*op, o);
        CHECK(h.products == 60);
        CHECK(pp.products == 60);
        CHECK(h.status == SpectrumStatus::converged);
        hutch.add(h.value - tr, h.standard_error);
        pp_cal.add(pp.value - tr, pp.standard_error);
      }
      INFO("Hutchinson: " << hutch.within4 << "/100 within 4 SE, mean z^2 " << hutch.z2 / 100);
      INFO("Hutch++: " << pp_cal.within4 << "/100 within 4 SE, mean z^2 " << pp_cal.z2 / 100);
      hutch.check();
      pp_cal.check();
    }
  }
}

TEST_CASE("hutchinson: a diagonal operator's trace is exact with Rademacher probes") {
  Tensor<double> diag = Tensor<double>::from(Shape{4}, {1.0, -2.0, 3.5, 0.25});
  DiagonalOperator<double> op(diag);
  const StochasticEstimate h = hutchinson_trace(op);
  CHECK(h.value == Approx(2.75).margin(1e-14));
  CHECK(h.standard_error == Approx(0.0).margin(1e-14));
  const DiagonalEstimate d = diagonal_estimate(op);
  for (Index i = 0; i < 4; ++i) {
    CHECK(d.values[static_cast<std::size_t>(i)] == Approx(diag[i]).margin(1e-14));
    CHECK(d.standard_errors[static_cast<std::size_t>(i)] == Approx(0.0).margin(1e-14));
  }
}

TEST_CASE("hutch++: smaller error than Hutchinson at equal products on a decaying spectrum") {
  std::vector<double> lambda;
  for (int i = 1; i <= 100; ++i) lambda.push_back(1.0 / (static_cast<double>(i) * i));
  const Dense a = with_spectrum(lambda, 23);
  auto op = op_of(a);
  const double tr = trace(a);
  double mse_hutch = 0.0, mse_pp = 0.0;
  const int seeds = 40;
  for (int seed = 0; seed < seeds; ++seed) {
    TraceEstimatorOptions o;
    o.probes = 30;
    o.seed = 1000 + static_cast<std::uint64_t>(seed);
    const StochasticEstimate h = hutchinson_trace(*op, o);
    const StochasticEstimate pp = hutch_plus_plus_trace(*op, o);
    CHECK(pp.sketch_rank == 10);
    mse_hutch += (h.value - tr) * (h.value - tr) / seeds;
    mse_pp += (pp.value - tr) * (pp.value - tr) / seeds;
  }
  INFO("rms error Hutchinson " << std::sqrt(mse_hutch) << ", Hutch++ " << std::sqrt(mse_pp));
  CHECK(mse_pp < 0.1 * mse_hutch);
}

TEST_CASE("hutch++: a sketch that captures the whole range makes the estimate exact") {
  // Rank 3, budget 12: s = 4 sketch columns span the range; the residual part is zero.
  std::vector<double> lambda(20, 0.0);
  lambda[0] = 3.0;
  lambda[1] = -1.0;
  lambda[2] = 0.5;
  const Dense a = with_spectrum(lambda, 4);
  auto op = op_of(a);
  TraceEstimatorOptions o;
  o.probes = 12;
  const StochasticEstimate pp = hutch_plus_plus_trace(*op, o);
  INFO(pp.message);
  CHECK(pp.sketch_rank == 3);
  CHECK(pp.value == Approx(2.5).margin(1e-12));
  CHECK(pp.low_rank_part == Approx(2.5).margin(1e-12));
  CHECK(pp.standard_error <= 1e-12);
  CHECK(pp.products == 12);
}

TEST_CASE("diagonal_estimate: entries within 4 standard errors which are calibrated") {
  const Index n = 40;
  const Dense a = random_symmetric(n, 31);
  auto op = op_of(a);
  TraceEstimatorOptions o;
  o.probes = 200;
  const DiagonalEstimate d = diagonal_estimate(*op, o);
  CHECK(d.probes == 200);
  double z2 = 0.0;
  for (Index i = 0; i < n; ++i) {
    const auto ui = static_cast<std::size_t>(i);
    CAPTURE(i);
    const double z = (d.values[ui] - a(i, i)) / d.standard_errors[ui];
    CHECK(std::abs(z) <= 4.0);
    z2 += z * z / static_cast<double>(n);
    // The standard error of entry i is sqrt(sum_{j != i} a_ij^2 / probes) for Rademacher probes.
    double off = 0.0;
    for (Index j = 0; j < n; ++j)
      if (j != i) off += a(i, j) * a(i, j);
    CHECK(d.standard_errors[ui] == Approx(std::sqrt(off / o.probes)).epsilon(0.25));
  }
  CHECK(z2 == Approx(1.0).margin(0.5));
}

TEST_CASE("frobenius_norm_squared_estimate: within 4 standard errors of ||A||_F^2 and calibrated") {
  for (const NamedMatrix& m : trace_test_matrices()) {
    CAPTURE(m.name);
    auto op = op_of(m.a);
    const double want = amari::test::frobenius(m.a) * amari::test::frobenius(m.a);
    Calibration cal;
    for (int seed = 0; seed < 100; ++seed) {
      TraceEstimatorOptions o;
      o.probes = 60;
      o.distribution = seed % 2 ? ProbeDistribution::gaussian : ProbeDistribution::rademacher;
      o.seed = static_cast<std::uint64_t>(seed);
      const StochasticEstimate f = frobenius_norm_squared_estimate(*op, o);
      cal.add(f.value - want, f.standard_error);
    }
    INFO(cal.within4 << "/100 within 4 SE, mean z^2 " << cal.z2 / 100);
    cal.check();
  }
}

TEST_CASE("trace estimators: bad arguments throw and n = 0 and NaN products are handled") {
  auto op = op_of(random_symmetric(6, 2));
  TraceEstimatorOptions o;
  o.probes = 0;
  CHECK_THROWS_MATCHES(hutchinson_trace(*op, o), ValueError,
                       MessageContains({"hutchinson_trace", "probes = 0"}));
  CHECK_THROWS_MATCHES(diagonal_estimate(*op, o), ValueError,
                       MessageContains({"diagonal_estimate", "probes = 0"}));
  CHECK_THROWS_MATCHES(frobenius_norm_squared_estimate(*op, o), ValueError,
                       MessageContains({"frobenius_norm_squared_estimate", "probes = 0"}));
  o.probes = 2;
  CHECK_THROWS_MATCHES(hutch_plus_plus_trace(*op, o), ValueError,
                       MessageContains({"hutch_plus_plus_trace", "probes = 2", ">= 3"}));

  Tensor<double> empty(Shape{0, 0});
  DenseOperator<double> none(empty);
  CHECK(hutchinson_trace(none).value == 0.0);
  CHECK(hutch_plus_plus_trace(none).value == 0.0);
  CHECK(diagonal_estimate(none).values.empty());

  const Dense a = random_symmetric(10, 9);
  {
    NanAfter bad(op_of(a), 4);
    const StochasticEstimate h = hutchinson_trace(bad);
    CHECK(h.status == SpectrumStatus::non_finite);
    CHECK_THAT(h.message, Catch::Contains("probe 3"));
    CHECK(h.samples.size() == 3);
    CHECK(std::isfinite(h.value));
  }
  {
    NanAfter bad(op_of(a), 1);
    const StochasticEstimate h = hutchinson_trace(bad);
    CHECK(h.status == SpectrumStatus::non_finite);
    CHECK(h.value == 0.0);
    CHECK(std::isinf(h.standard_error));
  }
  {
    NanAfter bad(op_of(a), 2);  // in the sketch
    const StochasticEstimate pp = hutch_plus_plus_trace(bad);
    CHECK(pp.status == SpectrumStatus::non_finite);
    CHECK(pp.value == 0.0);
    CHECK(std::isinf(pp.standard_error));
  }
  {
    NanAfter bad(op_of(a), 3);
    const DiagonalEstimate d = diagonal_estimate(bad);
    CHECK(d.status == SpectrumStatus::non_finite);
    CHECK(d.probes == 2);
    for (double v : d.values) CHECK(std::isfinite(v));
  }
}

TEST_CASE("fill_probe: counter-based and reproducible with the right distribution") {
  Tensor<double> a(Shape{1000}), b(Shape{1000});
  fill_probe(a, ProbeDistribution::rademacher, 5, 3);
  fill_probe(b, ProbeDistribution::rademacher, 5, 3);
  double sum = 0.0;
  for (Index i = 0; i < a.size(); ++i) {
    CHECK(std::abs(a[i]) == 1.0);
    CHECK(a[i] == b[i]);
    sum += a[i];
  }
  CHECK(std::abs(sum) < 4.0 * std::sqrt(1000.0));
  fill_probe(b, ProbeDistribution::rademacher, 5, 4);
  int same = 0;
  for (Index i = 0; i < a.size(); ++i) same += a[i] == b[i];
  CHECK(same > 400);
  CHECK(same < 600);
  fill_probe(a, ProbeDistribution::gaussian, 1, 0);
  double s2 = 0.0;
  for (Index i = 0; i < a.size(); ++i) s2 += a[i] * a[i];
  CHECK(s2 / 1000.0 == Approx(1.0).margin(0.15));
}

}  // namespace

namespace {

// A dense operator whose products throw while `fail` is set (an exception, not a NaN).
class ThrowingOperator final : public LinearOperator<double> {
 public:
  explicit ThrowingOperator(std::shared_ptr<DenseOperator<double>> inner) : inner_(std::move(inner)) {}
  Index size() const override { return inner_->size(); }
  void apply(const Tensor<double>& v, Tensor<double>& out) override {
    if (fail) throw amari::Error("ThrowingOperator: injected failure");
    inner_->apply(v, out);
  }
  std::string name() const override { return "throwing"; }
  bool fail = false;

 private:
  std::shared_ptr<DenseOperator<double>> inner_;
};

}  // namespace

TEST_CASE("LanczosProcess: a copy is deep, and a product that throws leaves the process as it was",
          "[spectrum][strong]") {
  const Index n = 30;
  std::vector<double> lambda;
  for (Index i = 0; i < n; ++i) lambda.push_back(1.0 + static_cast<double>(i));
  ThrowingOperator op(op_of(with_spectrum(lambda, 3)));
  LanczosProcess<double> process(op);
  Tensor<double> start(Shape{n});
  fill_probe(start, ProbeDistribution::gaussian, 2, 0);
  process.restart(start);
  for (int i = 0; i < 5; ++i) REQUIRE(process.step());
  // A copy taken now, then the original restarts elsewhere, reusing its basis storage: the copy's
  // basis must not move with it.
  LanczosProcess<double> copy = process;
  const Tensor<double> q5 = copy.basis()[5].clone();
  Tensor<double> elsewhere(Shape{n});
  fill_probe(elsewhere, ProbeDistribution::gaussian, 9, 0);
  process.restart(elsewhere);
  for (int i = 0; i < 8; ++i) REQUIRE(process.step());
  CHECK(amari::test::max_abs_diff(copy.basis()[5], q5) == 0.0);
  CHECK(copy.steps() == 5);
  // A failing product: the exception propagates, nothing changes, and the next step is the one
  // the untouched copy takes.
  op.fail = true;
  CHECK_THROWS_WITH(copy.step(), Catch::Contains("injected failure"));
  CHECK(copy.steps() == 5);
  CHECK(copy.products() == 5);
  CHECK_FALSE(copy.ended());
  op.fail = false;
  REQUIRE(copy.step());
  LanczosProcess<double> twin(op);
  twin.restart(start);
  for (int i = 0; i < 6; ++i) REQUIRE(twin.step());
  CHECK(copy.alpha() == twin.alpha());
  CHECK(copy.beta() == twin.beta());
}
