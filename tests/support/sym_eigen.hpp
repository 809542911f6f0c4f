// Eigenvalues of a small dense symmetric matrix by the cyclic Jacobi method, in double: an
// independent reference for tests of curvature spectra (no library code involved).
#pragma once

#include <algorithm>
#include <cmath>
#include <vector>

#include "support/dense.hpp"

namespace amari::test {

/// Eigenvalues of the symmetric matrix m (its lower and upper triangles averaged), ascending.
/// Cyclic Jacobi rotations until the off-diagonal mass is below 1e-30 of the total. O(n^3) per
/// sweep; for the n <= ~100 matrices of tests.
inline std::vector<double> symmetric_eigenvalues(const Dense& m) {
  const Index n = m.n;
  Dense a(n);
  for (Index i = 0; i < n; ++i)
    for (Index j = 0; j < n; ++j) a(i, j) = 0.5 * (m(i, j) + m(j, i));
  for (int sweep = 0; sweep < 100; ++sweep) {
    double off = 0, total = 0;
    for (Index i = 0; i < n; ++i)
      for (Index j = 0; j < n; ++j) {
        total += a(i, j) * a(i, j);
        if (i != j) off += a(i, j) * a(i, j);
      }
    if (off <= 1e-30 * total) break;
    for (Index p = 0; p < n; ++p)
      for (Index q = p + 1; q < n; ++q) {
        if (a(p, q) == 0.0) continue;
        // The rotation that zeroes a(p, q) (Golub, Van Loan, sec. 8.5.2).
        const double tau = (a(q, q) - a(p, p)) / (2 * a(p, q));
        const double t = (tau >= 0 ? 1.0 : -1.0) / (std::fabs(tau) + std::sqrt(1 + tau * tau));
        const double c = 1 / std::sqrt(1 + t * t), s = t * c;
        for (Index k = 0; k < n; ++k) {  // columns p, q
          const double akp = a(k, p), akq = a(k, q);
          a(k, p) = c * akp - s * akq;
          a(k, q) = s * akp + c * akq;
        }
        for (Index k = 0; k < n; ++k) {  // rows p, q
          const double apk = a(p, k), aqk = a(q, k);
          a(p, k) = c * apk - s * aqk;
          a(q, k) = s * apk + c * aqk;
        }
      }
  }
  std::vector<double> values(static_cast<std::size_t>(n));
  for (Index i = 0; i < n; ++i) values[static_cast<std::size_t>(i)] = a(i, i);
  std::sort(values.begin(), values.end());
  return values;
}

}  // namespace amari::test
