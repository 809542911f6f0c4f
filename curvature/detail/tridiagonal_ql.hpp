// Internal: the implicit QL iteration on a symmetric tridiagonal matrix, shared by the dense
// symmetric eigensolver (dense_solve.cpp) and Lanczos (lanczos.cpp), so both get the same
// convergence tests. Not part of the public API.
#pragma once

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include <amari/autodiff/error.hpp>
#include <amari/autodiff/shape.hpp>

namespace amari::curvature::detail {

// sqrt(f^2 + g^2), through std::hypot (several times slower) only where the squares could
// overflow or lose precision to underflow.
inline double radius(double f, double g) {
  const double r = std::sqrt(f * f + g * g);
  return r > 1e-150 && r < 1e150 ? r : std::hypot(f, g);
}

// Implicit QL with Wilkinson shifts on the tridiagonal (d, e) (Golub, Van Loan, sec. 8.3.3;
// "tqli" of Numerical Recipes). d (m) is overwritten by the eigenvalues (unsorted); e (m - 1 or m
// entries, e[i] couples i and i + 1) is read. Every rotation goes to `rotations` (may be null):
//   begin_sweep(top)  a sweep starts; its k-th rotation mixes rows top - k and top - k + 1 of Z^T
//   add(c, s)         the next rotation: row i + 1 <- s row_i + c row_{i+1}, row i <- c row_i - s row_{i+1}
//   end_sweep()
// so rows of Z^T starting as the identity end as the eigenvectors of T (row i for d[i]).
// `op` names the caller in the error thrown when an eigenvalue needs more than 60 sweeps.
template <class Rotations>
void tridiagonal_ql(const char* op, std::vector<double>& d, const std::vector<double>& e_in,
                    Rotations* rotations) {
  const Index m = static_cast<Index>(d.size());
  std::vector<double> e(static_cast<std::size_t>(m), 0.0);
  std::copy_n(e_in.begin(), std::min(e_in.size(), e.size()), e.begin());
  const double eps = std::numeric_limits<double>::epsilon();
  // An off-diagonal element is negligible relative to its neighbours on the diagonal or to ||T||
  // (max row sum): a reduction to T has already committed errors of eps ||A||, and without the
  // second test a cluster of eigenvalues near 0 (|d| and |e| both at rounding level) can fail to
  // split and exhaust the iterations (found on repeated zero eigenvalues).
  double norm = 0;
  for (Index i = 0; i < m; ++i)
    norm = std::max(norm, std::abs(d[i]) + std::abs(e[i]) + (i > 0 ? std::abs(e[i - 1]) : 0.0));
  const double floor = eps * norm;
  for (Index l = 0; l < m; ++l) {
    int iterations = 0;
    Index mm;
    do {
      // Look for a negligible off-diagonal element to split the matrix.
      for (mm = l; mm < m - 1; ++mm) {
        const double dd = std::abs(d[mm]) + std::abs(d[mm + 1]);
        if (std::abs(e[mm]) <= std::max(eps * dd, floor)) break;
      }
      if (mm == l) break;
      if (++iterations > 60) {
        throw Error(std::string(op) + ": implicit QL did not converge for eigenvalue " + std::to_string(l) +
                    " of " + std::to_string(m));
      }
      // Wilkinson shift from the leading 2 x 2 block.
      double g = (d[l + 1] - d[l]) / (2.0 * e[l]);
      double r = std::hypot(g, 1.0);
      g = d[mm] - d[l] + e[l] / (g + std::copysign(r, g));
      double s = 1.0, c = 1.0, p = 0.0;
      bool deflated = false;
      if (rotations) rotations->begin_sweep(mm - 1);
      for (Index i = mm - 1; i >= l; --i) {
        const double f = s * e[i];
        const double b = c * e[i];
        r = radius(f, g);
        e[i + 1] = r;
        if (r == 0.0) {  // underflow: deflate and start over
          d[i + 1] -= p;
          e[mm] = 0.0;
          deflated = true;
          break;
        }
        s = f / r;
        c = g / r;
        g = d[i + 1] - p;
        r = (d[i] - g) * s + 2.0 * c * b;
        p = s * r;
        d[i + 1] = g + p;
        g = c * r - b;
        if (rotations) rotations->add(c, s);
      }
      if (rotations) rotations->end_sweep();
      if (deflated) continue;
      d[l] -= p;
      e[l] = g;
      e[mm] = 0.0;
    } while (true);
  }
}

// The permutation that sorts d ascending (stable, so equal eigenvalues keep the QL's order).
inline std::vector<Index> ascending_order(const std::vector<double>& d) {
  std::vector<Index> order(d.size());
  for (std::size_t i = 0; i < d.size(); ++i) order[i] = static_cast<Index>(i);
  std::stable_sort(order.begin(), order.end(), [&](Index a, Index b) {
    return d[static_cast<std::size_t>(a)] < d[static_cast<std::size_t>(b)];
  });
  return order;
}

}  // namespace amari::curvature::detail
