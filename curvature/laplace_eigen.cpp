#include <amari/curvature/laplace_eigen.hpp>

#include <cmath>
#include <string>

#include <amari/curvature/lanczos.hpp>

namespace amari::curvature {

namespace {

// The Householder reduction of the symmetric (n, n) row-major `a` to tridiagonal form: d (n) and
// e (n - 1). Only the lower triangle is read and updated (half the memory traffic of the full
// matrix; the reduction is memory bound). Serial: one parallel region per column costs more than
// it gains on a busy machine (measured 2.5x slower with 2 threads at n = 2570 under load). Reflection k, H_k = I - beta_k v_k v_k^T acting on
// indices k + 1..n-1, is stored as v_k in row k right of the diagonal (the unused upper triangle)
// and beta_k in betas[k]; A = Q T Q^T with Q = H_0 H_1 ... H_{n-3}.
void tridiagonalize(Tensor<double>& a, std::vector<double>& d, std::vector<double>& e,
                    std::vector<double>& betas) {
  const Index n = a.dim(0);
  double* p = a.data();
  std::vector<double> w(static_cast<std::size_t>(n));
  for (Index k = 0; k + 2 < n; ++k) {
    const Index m = n - k - 1;
    double* v = p + k * n + k + 1;  // v_k, from x = A[k+1:, k] (column k below the diagonal)
    for (Index i = 0; i < m; ++i) v[i] = p[(k + 1 + i) * n + k];
    double tail = 0;
    for (Index i = 1; i < m; ++i) tail += v[i] * v[i];
    d[static_cast<std::size_t>(k)] = p[k * n + k];
    if (tail == 0) {  // already tridiagonal in this column: H_k = I
      e[static_cast<std::size_t>(k)] = v[0];
      betas[static_cast<std::size_t>(k)] = 0;
      continue;
    }
    const double alpha = -std::copysign(std::sqrt(v[0] * v[0] + tail), v[0]);
    v[0] -= alpha;  // v = x - alpha e_1 (no cancellation: alpha has the sign opposite to x_0)
    const double beta = 2.0 / (v[0] * v[0] + tail);
    e[static_cast<std::size_t>(k)] = alpha;
    betas[static_cast<std::size_t>(k)] = beta;
    // B <- H B H for the trailing block B = A[k+1:, k+1:] (lower triangle): w = beta B v,
    // w -= (beta/2 w.v) v, B -= v w^T + w v^T.
    double* b = p + (k + 1) * n + (k + 1);
    std::fill(w.begin(), w.begin() + m, 0.0);
    for (Index i = 0; i < m; ++i) {  // B v from the lower triangle: row i and, by symmetry, column i
      const double* bi = b + i * n;
      const double vi = v[i];
      double s = bi[i] * vi;
      for (Index j = 0; j < i; ++j) {
        s += bi[j] * v[j];
        w[static_cast<std::size_t>(j)] += bi[j] * vi;
      }
      w[static_cast<std::size_t>(i)] += s;
    }
    double pv = 0;
    for (Index i = 0; i < m; ++i) pv += (w[static_cast<std::size_t>(i)] *= beta) * v[i];
    const double kk = 0.5 * beta * pv;
    for (Index i = 0; i < m; ++i) w[static_cast<std::size_t>(i)] -= kk * v[i];
    for (Index i = 0; i < m; ++i) {
      double* bi = b + i * n;
      const double vi = v[i], wi = w[static_cast<std::size_t>(i)];
      for (Index j = 0; j <= i; ++j) bi[j] -= vi * w[static_cast<std::size_t>(j)] + wi * v[j];
    }
  }
  if (n >= 2) {
    d[static_cast<std::size_t>(n - 2)] = p[(n - 2) * n + (n - 2)];
    e[static_cast<std::size_t>(n - 2)] = p[(n - 1) * n + (n - 2)];
  }
  d[static_cast<std::size_t>(n - 1)] = p[(n - 1) * n + (n - 1)];
}

// The symmetrized copy (A + A^T) / 2, checked square and finite (errors naming `op`).
Tensor<double> symmetrized(const char* op, const Tensor<double>& a) {
  if (!a.defined() || a.rank() != 2 || a.dim(0) != a.dim(1)) {
    throw ShapeError(std::string(op) + ": expects a square matrix (n, n), got " +
                     (a.defined() ? a.shape().str() : std::string("undefined")));
  }
  const Index n = a.dim(0);
  Tensor<double> s = Tensor<double>::uninitialized(Shape{n, n});
  for (Index i = 0; i < n; ++i) {
    for (Index j = 0; j < n; ++j) {
      const double x = a[i * n + j];
      if (!std::isfinite(x)) {
        throw ValueError(std::string(op) + ": entry (" + std::to_string(i) + ", " +
                         std::to_string(j) + ") is not finite");
      }
      s[i * n + j] = 0.5 * (x + a[j * n + i]);
    }
  }
  return s;
}

}  // namespace

SymmetricEigen symmetric_eigen(const Tensor<double>& a) {
  Tensor<double> s = symmetrized("symmetric_eigen", a);
  const Index n = a.dim(0);
  SymmetricEigen out;
  out.vectors = Tensor<double>(Shape{n, n});
  if (n == 0) return out;
  std::vector<double> d(static_cast<std::size_t>(n)), e(static_cast<std::size_t>(n - 1)),
      betas(static_cast<std::size_t>(n), 0.0);
  tridiagonalize(s, d, e, betas);
  TridiagonalEigen t = symmetric_tridiagonal_eigen(d, e, /*vectors=*/true);
  out.values = std::move(t.values);
  // V = H_0 (H_1 (... (H_{n-3} Z))): each reflection touches rows k + 1.. of V.
  double* v = out.vectors.data();
  std::copy(t.vectors.begin(), t.vectors.end(), v);
  std::vector<double> row(static_cast<std::size_t>(n));
  for (Index k = n - 3; k >= 0; --k) {
    const double beta = betas[static_cast<std::size_t>(k)];
    if (beta == 0) continue;
    const double* h = s.data() + k * n + k + 1;
    const Index m = n - k - 1;
    // row = v_k^T V[k+1:, :], then V[k+1:, :] -= beta v_k row.
    std::fill(row.begin(), row.end(), 0.0);
    for (Index i = 0; i < m; ++i) {
      const double* vi = v + (k + 1 + i) * n;
      const double hi = h[i];
      for (Index j = 0; j < n; ++j) row[static_cast<std::size_t>(j)] += hi * vi[j];
    }
    for (Index i = 0; i < m; ++i) {
      double* vi = v + (k + 1 + i) * n;
      const double f = beta * h[i];
      for (Index j = 0; j < n; ++j) vi[j] -= f * row[static_cast<std::size_t>(j)];
    }
  }
  return out;
}

std::vector<double> symmetric_eigenvalues(const Tensor<double>& a) {
  Tensor<double> s = symmetrized("symmetric_eigenvalues", a);
  const Index n = a.dim(0);
  if (n == 0) return {};
  std::vector<double> d(static_cast<std::size_t>(n)), e(static_cast<std::size_t>(n - 1)),
      betas(static_cast<std::size_t>(n), 0.0);
  tridiagonalize(s, d, e, betas);
  return symmetric_tridiagonal_eigen(d, e, /*vectors=*/false).values;
}

}  // namespace amari::curvature
