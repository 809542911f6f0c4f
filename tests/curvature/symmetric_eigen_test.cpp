// The dense symmetric eigensolver (curvature/dense_solve.hpp: symmetric_eigen,
// symmetric_eigenvalues). Every matrix is built here with a known spectrum, A = Q diag(d) Q^T, with
// Q from Gram-Schmidt on a Gaussian matrix (or, at n = 785, a product of random reflections, to
// keep the test short), or with Gaussian entries. The checks are the backward-error properties:
// A V = V diag(values) and the eigenvalues against d to 1e-12 * n * ||A||_2 (for the Gaussian
// matrix, ||A||_inf >= ||A||_2 in place of ||A||_2), and V^T V = I to 1e-12 * n.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include <omp.h>
#include <catch2/catch.hpp>

#include <amari/curvature/dense_solve.hpp>

#include "support/random.hpp"

namespace {

using amari::Index;
using amari::Shape;
using amari::Tensor;
using amari::curvature::symmetric_eigen;
using amari::curvature::symmetric_eigenvalues;
using amari::curvature::SymmetricEigen;
using amari::test::Rng;

// An orthogonal (n, n) matrix: modified Gram-Schmidt, twice, on the rows of a Gaussian matrix.
std::vector<double> random_orthogonal(Index n, Rng& rng) {
  std::vector<double> q(static_cast<std::size_t>(n * n));
  for (double& x : q) x = rng.normal();
  for (int pass = 0; pass < 2; ++pass) {
    for (Index i = 0; i < n; ++i) {
      double* qi = q.data() + i * n;
      for (Index j = 0; j < i; ++j) {
        const double* qj = q.data() + j * n;
        double s = 0;
        for (Index k = 0; k < n; ++k) s += qi[k] * qj[k];
        for (Index k = 0; k < n; ++k) qi[k] -= s * qj[k];
      }
      double s = 0;
      for (Index k = 0; k < n; ++k) s += qi[k] * qi[k];
      s = 1.0 / std::sqrt(s);
      for (Index k = 0; k < n; ++k) qi[k] *= s;
    }
  }
  return q;
}

// A = Q diag(d) Q^T (rows of q are the eigenvectors), exactly symmetric.
Tensor<double> with_spectrum_dense(const std::vector<double>& d, Rng& rng) {
  const Index n = static_cast<Index>(d.size());
  const std::vector<double> q = random_orthogonal(n, rng);
  Tensor<double> a(Shape{n, n});
  for (Index k = 0; k < n; ++k) {
    const double* qk = q.data() + k * n;
    const double dk = d[static_cast<std::size_t>(k)];
    for (Index i = 0; i < n; ++i) {
      const double f = dk * qk[i];
      for (Index j = 0; j <= i; ++j) a[i * n + j] += f * qk[j];
    }
  }
  for (Index i = 0; i < n; ++i)
    for (Index j = 0; j < i; ++j) a[j * n + i] = a[i * n + j];
  return a;
}

// A = H diag(d) H with H the product of `count` random reflections I - 2 u u^T / u^T u:
// O(count n^2), for the largest size.
Tensor<double> with_spectrum_reflected(const std::vector<double>& d, Rng& rng, int count) {
  const Index n = static_cast<Index>(d.size());
  Tensor<double> a(Shape{n, n});
  for (Index i = 0; i < n; ++i) a[i * n + i] = d[static_cast<std::size_t>(i)];
  std::vector<double> u(static_cast<std::size_t>(n)), w(static_cast<std::size_t>(n));
  for (int r = 0; r < count; ++r) {
    double uu = 0;
    for (double& x : u) {
      x = rng.normal();
      uu += x * x;
    }
    // H A H = A - u w^T - w u^T with w = (2/uu) A u - (2/uu)^2 (u^T A u / 2) u.
    const double f = 2.0 / uu;
    double uau = 0;
    for (Index i = 0; i < n; ++i) {
      double s = 0;
      for (Index j = 0; j < n; ++j) s += a[i * n + j] * u[static_cast<std::size_t>(j)];
      w[static_cast<std::size_t>(i)] = f * s;
      uau += u[static_cast<std::size_t>(i)] * s;
    }
    const double g = 0.5 * f * f * uau;
    for (Index i = 0; i < n; ++i)
      w[static_cast<std::size_t>(i)] -= g * u[static_cast<std::size_t>(i)];
    for (Index i = 0; i < n; ++i)
      for (Index j = 0; j < n; ++j)
        a[i * n + j] -= u[static_cast<std::size_t>(i)] * w[static_cast<std::size_t>(j)] +
                        w[static_cast<std::size_t>(i)] * u[static_cast<std::size_t>(j)];
  }
  for (Index i = 0; i < n; ++i)  // exactly symmetric
    for (Index j = 0; j < i; ++j) a[j * n + i] = a[i * n + j];
  return a;
}

// Spectra of n values with ||d||_inf = 1 (the largest is +-1).
std::vector<double> spectrum(const std::string& kind, Index n, Rng& rng) {
  std::vector<double> d(static_cast<std::size_t>(n));
  for (Index i = 0; i < n; ++i) {
    double& x = d[static_cast<std::size_t>(i)];
    if (kind == "random") {
      x = rng.uniform(-1.0, 1.0);
    } else if (kind == "clustered") {  // three clusters 1e-10 wide
      const double centre[3] = {-0.5, 0.25, 1.0};
      x = centre[i % 3] * (1.0 + 1e-10 * rng.uniform());
    } else if (kind == "repeated") {  // -1, 0 and 0.5, each exactly repeated
      const double value[3] = {-1.0, 0.0, 0.5};
      x = value[i % 3];
    } else {  // graded: magnitudes from 1 down to 1e-15, random signs
      x = std::pow(10.0,
                   -15.0 * static_cast<double>(i) / static_cast<double>(std::max<Index>(n - 1, 1)));
      if (rng.uniform() < 0.5) x = -x;
    }
  }
  if (n > 0) d[0] = kind == "graded" ? d[0] : 1.0;  // ||A||_2 = 1 for every kind
  return d;
}

struct Errors {
  double residual = 0;    // max_i ||A v_i - lambda_i v_i||_inf
  double orthogonal = 0;  // max |V^T V - I|
};

Errors errors_of(const Tensor<double>& a, const SymmetricEigen& e) {
  const Index n = a.dim(0);
  std::vector<double> av(static_cast<std::size_t>(n * n), 0.0),
      g(static_cast<std::size_t>(n * n), 0.0);
  const double* v = e.vectors.data();
  for (Index i = 0; i < n; ++i)  // A V, row by row
    for (Index k = 0; k < n; ++k) {
      const double aik = a[i * n + k];
      const double* vk = v + k * n;
      double* out = av.data() + i * n;
      for (Index j = 0; j < n; ++j) out[j] += aik * vk[j];
    }
  for (Index r = 0; r < n; ++r)  // V^T V as a sum of outer products of the rows of V
    for (Index i = 0; i < n; ++i) {
      const double vri = v[r * n + i];
      const double* vr = v + r * n;
      double* out = g.data() + i * n;
      for (Index j = 0; j < n; ++j) out[j] += vri * vr[j];
    }
  Errors err;
  for (Index i = 0; i < n; ++i)
    for (Index j = 0; j < n; ++j) {
      const double lambda = e.values[static_cast<std::size_t>(j)];
      err.residual = std::max(
          err.residual, std::fabs(av[static_cast<std::size_t>(i * n + j)] - v[i * n + j] * lambda));
      err.orthogonal = std::max(
          err.orthogonal, std::fabs(g[static_cast<std::size_t>(i * n + j)] - (i == j ? 1.0 : 0.0)));
    }
  return err;
}

// The properties every decomposition must have, for A with ||A||_2 = norm and spectrum d.
void check_decomposition(const Tensor<double>& a, const std::vector<double>& d, double norm) {
  const Index n = a.dim(0);
  const SymmetricEigen e = symmetric_eigen(a);
  REQUIRE(static_cast<Index>(e.values.size()) == n);
  REQUIRE(e.vectors.shape() == Shape{n, n});
  CHECK(std::is_sorted(e.values.begin(), e.values.end()));
  const double tol = 1e-12 * static_cast<double>(std::max<Index>(n, 1)) * norm;
  const Errors err = errors_of(a, e);
  INFO("residual " << err.residual << ", orthogonality " << err.orthogonal << ", tol " << tol);
  CHECK(err.residual <= tol);
  CHECK(err.orthogonal <= 1e-12 * static_cast<double>(std::max<Index>(n, 1)));
  if (!d.empty()) {
    std::vector<double> sorted = d;
    std::sort(sorted.begin(), sorted.end());
    double worst = 0;
    for (Index i = 0; i < n; ++i)
      worst = std::max(worst, std::fabs(sorted[static_cast<std::size_t>(i)] -
                                        e.values[static_cast<std::size_t>(i)]));
    INFO("eigenvalue error " << worst);
    CHECK(worst <= tol);
  }
  // The values-only path runs the same reduction and QL: the same values, bitwise.
  CHECK(symmetric_eigenvalues(a) == e.values);
}

}  // namespace

TEST_CASE(
    "symmetric_eigen: A V = V diag(values), V^T V = I and the known spectrum, for every kind of "
    "spectrum",
    "[curvature][dense][eigen]") {
  for (const char* kind : {"random", "clustered", "repeated", "graded"}) {
    for (Index n : {2, 3, 33, 37, 65, 200}) {
      INFO(kind << " spectrum, n = " << n);
      Rng rng(static_cast<std::uint64_t>(1000 + n));
      const std::vector<double> d = spectrum(kind, n, rng);
      check_decomposition(with_spectrum_dense(d, rng), d, 1.0);
    }
  }
}

TEST_CASE(
    "symmetric_eigen: 785 x 785 (a K-FAC input factor), a clustered spectrum and a Gaussian matrix",
    "[curvature][dense][eigen]") {
  const Index n = 785;
  {
    INFO("clustered spectrum");
    Rng rng(7);
    const std::vector<double> d = spectrum("clustered", n, rng);
    check_decomposition(with_spectrum_reflected(d, rng, 12), d, 1.0);
  }
  {
    INFO("Gaussian entries");
    Rng rng(8);
    Tensor<double> a(Shape{n, n});
    for (Index i = 0; i < n; ++i)
      for (Index j = 0; j <= i; ++j) a[i * n + j] = a[j * n + i] = rng.normal();
    double inf_norm = 0;  // >= ||A||_2
    for (Index i = 0; i < n; ++i) {
      double s = 0;
      for (Index j = 0; j < n; ++j) s += std::fabs(a[i * n + j]);
      inf_norm = std::max(inf_norm, s);
    }
    check_decomposition(a, {}, inf_norm);
  }
}

TEST_CASE("symmetric_eigen: n = 0, 1 and 2 have the closed-form results",
          "[curvature][dense][eigen]") {
  const SymmetricEigen e0 = symmetric_eigen(Tensor<double>(Shape{0, 0}));
  CHECK(e0.values.empty());
  CHECK(e0.vectors.shape() == Shape{0, 0});
  CHECK(symmetric_eigenvalues(Tensor<double>(Shape{0, 0})).empty());

  Tensor<double> a1(Shape{1, 1});
  a1[0] = -3.5;
  const SymmetricEigen e1 = symmetric_eigen(a1);
  REQUIRE(e1.values.size() == 1);
  CHECK(e1.values[0] == -3.5);
  CHECK(std::fabs(e1.vectors[0]) == 1.0);

  Tensor<double> a2(Shape{2, 2});  // [[2, 1], [1, 2]]: 1 with (1, -1)/sqrt 2, 3 with (1, 1)/sqrt 2
  a2[0] = a2[3] = 2.0;
  a2[1] = a2[2] = 1.0;
  const SymmetricEigen e2 = symmetric_eigen(a2);
  REQUIRE(e2.values.size() == 2);
  CHECK(e2.values[0] == Approx(1.0).epsilon(1e-15));
  CHECK(e2.values[1] == Approx(3.0).epsilon(1e-15));
  const double r = std::sqrt(0.5);
  CHECK(std::fabs(e2.vectors[0]) == Approx(r).epsilon(1e-15));          // V[0][0]
  CHECK(e2.vectors[0] * e2.vectors[2] == Approx(-0.5).epsilon(1e-15));  // V[0][0] V[1][0]
  CHECK(e2.vectors[1] * e2.vectors[3] == Approx(0.5).epsilon(1e-15));   // V[0][1] V[1][1]
}

TEST_CASE("symmetric_eigen: a non-symmetric matrix is read as (A + A^T) / 2",
          "[curvature][dense][eigen]") {
  const Index n = 40;
  Rng rng(3);
  const Tensor<double> b = amari::test::normal_tensor<double>(Shape{n, n}, rng);
  Tensor<double> s(Shape{n, n});
  for (Index i = 0; i < n; ++i)
    for (Index j = 0; j < n; ++j) s[i * n + j] = 0.5 * (b[i * n + j] + b[j * n + i]);
  const SymmetricEigen from_b = symmetric_eigen(b), from_s = symmetric_eigen(s);
  CHECK(from_b.values == from_s.values);
  CHECK(std::equal(from_b.vectors.data(), from_b.vectors.data() + n * n, from_s.vectors.data()));
}

TEST_CASE("symmetric_eigen: the result is bitwise the same on 1 and 2 threads",
          "[curvature][dense][eigen]") {
  const Index n = 300;  // above the thresholds of the parallel rotations and of the GEMM
  Rng rng(11);
  Tensor<double> a(Shape{n, n});
  for (Index i = 0; i < n; ++i)
    for (Index j = 0; j <= i; ++j) a[i * n + j] = a[j * n + i] = rng.normal();
  const int saved = omp_get_max_threads();
  omp_set_num_threads(1);
  const SymmetricEigen one = symmetric_eigen(a);
  omp_set_num_threads(2);
  const SymmetricEigen two = symmetric_eigen(a);
  omp_set_num_threads(saved);
  CHECK(one.values == two.values);
  CHECK(std::equal(one.vectors.data(), one.vectors.data() + n * n, two.vectors.data()));
}
