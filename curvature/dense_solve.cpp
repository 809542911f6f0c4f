#include <amari/curvature/dense_solve.hpp>

#include <algorithm>
#include <cmath>
#include <string>

#include <amari/autodiff/kernels/gemm.hpp>

namespace amari::curvature {

namespace {

using kernels::Trans;

Index check_square(const char* op, const Tensor<double>& a) {
  if (a.rank() != 2 || a.dim(0) != a.dim(1)) {
    throw ShapeError(std::string(op) + ": expects a square matrix (n, n), got " + a.shape().str());
  }
  return a.dim(0);
}

// c[i][j] = c[j][i] for i < j: the upper triangle from the lower one.
template <Real T>
void mirror_lower(Index n, T* c, Index ldc) {
  for (Index i = 0; i < n; ++i)
    for (Index j = i + 1; j < n; ++j) c[i * ldc + j] = c[j * ldc + i];
}

}  // namespace

Index cholesky_in_place(Tensor<double>& a) {
  const Index n = check_square("cholesky_in_place", a);
  double* p = a.data();
  for (Index k0 = 0; k0 < n; k0 += kDenseBlock) {
    const Index kb = std::min(kDenseBlock, n - k0), k1 = k0 + kb;
    // 1. The diagonal block, whose earlier columns' contributions are already subtracted.
    for (Index j = k0; j < k1; ++j) {
      double* rj = p + j * n;
      double d = rj[j];
      for (Index q = k0; q < j; ++q) d -= rj[q] * rj[q];
      if (!(d > 0) || !std::isfinite(d)) return j;
      const double l = std::sqrt(d);
      rj[j] = l;
      for (Index i = j + 1; i < k1; ++i) {
        double* ri = p + i * n;
        double s = ri[j];
        for (Index q = k0; q < j; ++q) s -= ri[q] * rj[q];
        ri[j] = s / l;
      }
    }
    // 2. The panel below it: L21 = A21 L11^{-T}, one forward substitution per row (contiguous).
    for (Index i = k1; i < n; ++i) {
      double* ri = p + i * n;
      for (Index j = k0; j < k1; ++j) {
        const double* rj = p + j * n;
        double s = ri[j];
        for (Index q = k0; q < j; ++q) s -= ri[q] * rj[q];
        ri[j] = s / rj[j];
      }
    }
    // 3. Trailing update A22 -= L21 L21^T, lower block columns only (n^3/3 flops in total).
    for (Index j0 = k1; j0 < n; j0 += kDenseBlock) {
      const Index jb = std::min(kDenseBlock, n - j0);
      const double* l21 = p + j0 * n + k0;
      kernels::gemm<double>(Trans::no, Trans::yes, n - j0, jb, kb, -1.0, l21, n, l21, n, 1.0,
                            p + j0 * n + j0, n);
    }
  }
  for (Index i = 0; i < n; ++i)
    for (Index j = i + 1; j < n; ++j) p[i * n + j] = 0.0;
  return -1;
}

void cholesky_inverse_in_place(Tensor<double>& l) {
  const Index n = check_square("cholesky_inverse_in_place", l);
  if (n == 0) return;
  const double* lp = l.data();
  // X = L^{-1}, lower triangular, by block rows I: X[I, :] = L_II^{-1} (E_I - L[I, 0:i0] X[0:i0,
  // :]).
  Tensor<double> xt(Shape{n, n});
  double* x = xt.data();
  for (Index i0 = 0; i0 < n; i0 += kDenseBlock) {
    const Index i1 = std::min(i0 + kDenseBlock, n);
    if (i0 > 0) {
      kernels::gemm<double>(Trans::no, Trans::no, i1 - i0, i0, i0, -1.0, lp + i0 * n, n, x, n, 0.0,
                            x + i0 * n, n);
    }
    for (Index r = i0; r < i1; ++r) {
      double* xr = x + r * n;
      const double* lr = lp + r * n;
      for (Index q = i0; q < r; ++q) {
        const double c = lr[q];
        const double* xq = x + q * n;
        for (Index j = 0; j <= q; ++j) xr[j] -= c * xq[j];
      }
      xr[r] = 1.0;
      const double inv = 1.0 / lr[r];
      for (Index j = 0; j <= r; ++j) xr[j] *= inv;
    }
  }
  // A^{-1} = X^T X; block column J needs rows k >= j0 of X only (X[k, j] = 0 for k < j).
  double* c = l.data();
  for (Index j0 = 0; j0 < n; j0 += kDenseBlock) {
    const Index jb = std::min(kDenseBlock, n - j0);
    const double* xs = x + j0 * n + j0;
    kernels::gemm<double>(Trans::yes, Trans::no, n - j0, jb, n - j0, 1.0, xs, n, xs, n, 0.0,
                          c + j0 * n + j0, n);
  }
  mirror_lower(n, c, n);
}

void cholesky_solve_in_place(const Tensor<double>& l, Tensor<double>& b) {
  const Index n = check_square("cholesky_solve_in_place", l);
  if (b.rank() < 1 || b.rank() > 2 || b.dim(0) != n) {
    throw ShapeError("cholesky_solve_in_place: right-hand side " + b.shape().str() +
                     " does not fit a factor of shape " + l.shape().str());
  }
  const Index k = b.rank() == 2 ? b.dim(1) : 1;
  const double* lp = l.data();
  double* bp = b.data();
  for (Index i = 0; i < n; ++i) {  // L Y = B
    double* bi = bp + i * k;
    for (Index q = 0; q < i; ++q) {
      const double c = lp[i * n + q];
      const double* bq = bp + q * k;
      for (Index j = 0; j < k; ++j) bi[j] -= c * bq[j];
    }
    const double inv = 1.0 / lp[i * n + i];
    for (Index j = 0; j < k; ++j) bi[j] *= inv;
  }
  for (Index i = n - 1; i >= 0; --i) {  // L^T X = Y
    double* bi = bp + i * k;
    for (Index q = i + 1; q < n; ++q) {
      const double c = lp[q * n + i];
      const double* bq = bp + q * k;
      for (Index j = 0; j < k; ++j) bi[j] -= c * bq[j];
    }
    const double inv = 1.0 / lp[i * n + i];
    for (Index j = 0; j < k; ++j) bi[j] *= inv;
  }
}

Tensor<double> spd_inverse(const Tensor<double>& a) {
  check_square("spd_inverse", a);
  Tensor<double> l = a.clone();
  const Index pivot = cholesky_in_place(l);
  if (pivot >= 0) {
    throw ValueError("spd_inverse: the " + a.shape().str() +
                     " matrix is not positive definite (Cholesky pivot " + std::to_string(pivot) +
                     " is not positive and finite)");
  }
  cholesky_inverse_in_place(l);
  return l;
}

template <Real T>
void symmetric_gram(Index m, Index n, double alpha, const T* x, Index ldx, double beta, T* c,
                    Index ldc) {
  if (m < 0 || n < 0 || ldx < n || ldc < n) {
    throw ShapeError("symmetric_gram: bad extents m=" + std::to_string(m) +
                     ", n=" + std::to_string(n) + ", ldx=" + std::to_string(ldx) +
                     ", ldc=" + std::to_string(ldc));
  }
  for (Index j0 = 0; j0 < n; j0 += kDenseBlock) {
    const Index jb = std::min(kDenseBlock, n - j0);
    kernels::gemm<T>(Trans::yes, Trans::no, n - j0, jb, m, static_cast<T>(alpha), x + j0, ldx,
                     x + j0, ldx, static_cast<T>(beta), c + j0 * ldc + j0, ldc);
  }
  mirror_lower(n, c, ldc);
}

template void symmetric_gram<float>(Index, Index, double, const float*, Index, double, float*,
                                    Index);
template void symmetric_gram<double>(Index, Index, double, const double*, Index, double, double*,
                                     Index);

}  // namespace amari::curvature
