// Explicit matrices for curvature tests: a P x P matrix is formed here, in the tests only, column
// by column from an operator's products, and compared with references built independently.
#pragma once

#include <cmath>
#include <limits>
#include <vector>

#include <amari/autodiff/tensor.hpp>
#include <amari/curvature/linear_operator.hpp>

namespace amari::test {

/// An explicit n x n matrix, row-major, in double.
struct Dense {
  Index n = 0;
  std::vector<double> a;
  explicit Dense(Index size) : n(size), a(static_cast<std::size_t>(size * size), 0.0) {}
  double& operator()(Index i, Index j) { return a[static_cast<std::size_t>(i * n + j)]; }
  double operator()(Index i, Index j) const { return a[static_cast<std::size_t>(i * n + j)]; }
  /// += w s s^T
  void add_outer(double w, const Tensor<double>& s) {
    for (Index i = 0; i < n; ++i)
      for (Index j = 0; j < n; ++j) (*this)(i, j) += w * s[i] * s[j];
  }
  /// M v
  Tensor<double> times(const Tensor<double>& v) const {
    Tensor<double> out(Shape{n});
    for (Index i = 0; i < n; ++i)
      for (Index j = 0; j < n; ++j) out[i] += (*this)(i, j) * v[j];
    return out;
  }
};

inline double frobenius(const Dense& m) {
  double s = 0;
  for (double v : m.a) s += v * v;
  return std::sqrt(s);
}

/// ||a - b||_F / ||b||_F.
inline double rel_frobenius(const Dense& a, const Dense& b) {
  double s = 0;
  for (std::size_t k = 0; k < a.a.size(); ++k) s += (a.a[k] - b.a[k]) * (a.a[k] - b.a[k]);
  return std::sqrt(s) / frobenius(b);
}

/// ||M - M^T||_F / ||M||_F.
inline double asymmetry(const Dense& m) {
  double s = 0;
  for (Index i = 0; i < m.n; ++i)
    for (Index j = 0; j < m.n; ++j) s += (m(i, j) - m(j, i)) * (m(i, j) - m(j, i));
  return std::sqrt(s) / frobenius(m);
}

/// Column j is op.apply(e_j). The output is NaN-filled before each product, so a product that
/// accumulates into `out` instead of overwriting it poisons the matrix.
template <Real T>
Dense dense_of(curvature::LinearOperator<T>& op) {
  const Index n = op.size();
  Dense m(n);
  Tensor<T> e(Shape{n}), col(Shape{n});
  for (Index j = 0; j < n; ++j) {
    e.fill(T(0));
    e[j] = T(1);
    col.fill(std::numeric_limits<T>::quiet_NaN());
    op.apply(e, col);
    for (Index i = 0; i < n; ++i) m(i, j) = static_cast<double>(col[i]);
  }
  return m;
}

/// The parts laid end to end as one flat vector.
inline Tensor<double> concat(const std::vector<Tensor<double>>& parts) {
  Index total = 0;
  for (const auto& p : parts) total += p.size();
  Tensor<double> flat(Shape{total});
  Index k = 0;
  for (const auto& p : parts)
    for (Index i = 0; i < p.size(); ++i) flat[k++] = p[i];
  return flat;
}

/// Row i of an (N, C) tensor as a batch of one, (1, C).
inline Tensor<double> row(const Tensor<double>& x, Index i) {
  const Index d = x.dim(1);
  return x.view(i * d, Shape{1, d}).clone();
}

}  // namespace amari::test
