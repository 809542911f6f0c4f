#include <amari/curvature/dense_solve.hpp>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <string>
#include <utility>
#include <vector>

#include <omp.h>

#include <amari/autodiff/kernels/gemm.hpp>
#include <amari/curvature/detail/tridiagonal_ql.hpp>

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
  // Steps 2 and 3 split over rows and block columns, whose results are independent, when there is
  // enough work (each GEMM then on one thread: the factor does not depend on the thread count).
  const bool parallel = n >= 512 && omp_get_max_threads() > 1 && !omp_in_parallel();
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
#pragma omp parallel for schedule(static) if (parallel)
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
#pragma omp parallel for schedule(dynamic) if (parallel)
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
  const Index blocks = (n + kDenseBlock - 1) / kDenseBlock;
  // Both phases skip the zero triangles (LAPACK's potri count, 2n^3/3 flops in all): each is a set
  // of independent block GEMMs, run in parallel (each GEMM then on one thread, so the result does
  // not depend on the thread count) when there is enough work.
  const bool parallel = n >= 512 && omp_get_max_threads() > 1 && !omp_in_parallel();
  // X = L^{-1}, lower triangular, by block rows I: X[I, :] = L_II^{-1} (E_I - L[I, 0:i0] X[0:i0,
  // :]). Block column J of X[0:i0, :] is zero above row j0, so X[I, J] starts from
  // -L[I, j0:i0] X[j0:i0, J] (n^3/6 multiply-adds over all I, J).
  Tensor<double> xt = Tensor<double>::uninitialized(Shape{n, n});
  double* x = xt.data();
  for (Index bi = 0; bi < blocks; ++bi) {
    const Index i0 = bi * kDenseBlock, i1 = std::min(i0 + kDenseBlock, n), ib = i1 - i0;
#pragma omp parallel for schedule(dynamic) if (parallel)
    for (Index bj = 0; bj < bi; ++bj) {
      const Index j0 = bj * kDenseBlock;
      kernels::gemm<double>(Trans::no, Trans::no, ib, kDenseBlock, i0 - j0, -1.0, lp + i0 * n + j0, n,
                            x + j0 * n + j0, n, 0.0, x + i0 * n + j0, n);
    }
    for (Index r = i0; r < i1; ++r) std::fill(x + r * n + i0, x + r * n + i1, 0.0);
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
  // A^{-1} = X^T X, lower blocks I >= J: X[k, I] is zero for k < i0, so C[I, J] =
  // X[i0:n, I]^T X[i0:n, J] (n^3/6 multiply-adds). Only the lower triangle of X (and the zeroed
  // upper triangles of its diagonal blocks) is read.
  double* c = l.data();
  std::vector<std::pair<Index, Index>> lower;  // (bi, bj) with bj <= bi
  for (Index bi = 0; bi < blocks; ++bi)
    for (Index bj = 0; bj <= bi; ++bj) lower.emplace_back(bi, bj);
  const auto pairs = static_cast<Index>(lower.size());
#pragma omp parallel for schedule(dynamic) if (parallel)
  for (Index p = 0; p < pairs; ++p) {
    const auto [bi, bj] = lower[static_cast<std::size_t>(p)];
    const Index i0 = bi * kDenseBlock, j0 = bj * kDenseBlock;
    const Index ib = std::min(kDenseBlock, n - i0), jb = std::min(kDenseBlock, n - j0);
    kernels::gemm<double>(Trans::yes, Trans::no, ib, jb, n - i0, 1.0, x + i0 * n + i0, n,
                          x + i0 * n + j0, n, 0.0, c + i0 * n + j0, n);
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

// ---- symmetric eigendecomposition ---------------------------------------------------------------

namespace {

// Panel width of the tridiagonal reduction (LAPACK's dsytrd default): the in-panel corrections
// cost O(n^2 nb), the trailing GEMM gets k = 2 nb.
constexpr Index kTridiagonalBlock = 32;
// Block columns of the reduction's trailing update: wider than kDenseBlock, so fewer GEMM calls
// (each a parallel region), for about 1.5 kTrailingBlock / n more GEMM flops there (the upper
// halves of the diagonal blocks; 24% at n = 785).
constexpr Index kTrailingBlock = 128;
// Column chunk of the delayed QL rotations: 64 doubles of every row of Z^T, so one chunk of a
// 1000-row matrix (512 KB) stays in L2 while a batch of sweeps runs over it, and the 16 4-wide
// vectors of the carried row stay in registers. Measured at n = 785 (one thread, CPU time of the
// whole QL): 16 columns 168 ms, 32 columns 155 ms, 64 columns 140 ms.
constexpr Index kRotationChunk = 64;
// Rotations are applied once this many per row are pending (a batch of several QL sweeps).
constexpr Index kRotationBatchPerRow = 8;
// Below this order the rotations run on one thread (a parallel region costs more than it saves).
constexpr Index kRotationParallelMin = 192;

// Sum of x[i] y[i] in kLanes independent partial sums (fixed order, so the compiler can vectorize
// without reassociating and the result does not depend on the machine's vector width).
constexpr Index kLanes = 8;
double dot_lanes(const double* __restrict x, const double* __restrict y, Index m) {
  double acc[kLanes] = {};
  Index i = 0;
  for (; i + kLanes <= m; i += kLanes)
    for (Index t = 0; t < kLanes; ++t) acc[t] += x[i + t] * y[i + t];
  for (; i < m; ++i) acc[0] += x[i] * y[i];
  double s = 0;
  for (Index t = 0; t < kLanes; ++t) s += acc[t];
  return s;
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

// The result of the reduction: T = Q^T A Q with diagonal d (n) and off-diagonal e (n - 1);
// Q = H_0 H_1 ... H_{n-3}, H_c = I - tau_c v_c v_c^T, where v_c is zero above index c + 1,
// v_c[c + 1] = 1, and v_c[c + 1:] is stored in row c of the work matrix from column c + 1 on.
struct Tridiagonal {
  std::vector<double> d, e, tau;
};

// One column of the panel: the Householder vector of x = a[c + 1:, c] (x[0] = a[c + 1, c]) in the
// convention of LAPACK's dlarfg: v[0] = 1, H x = beta e_1. Writes v over x, returns tau; beta
// goes to `beta_out`. tau = 0 (H = I) when x[1:] is already zero.
double householder(double* x, Index m, double& beta_out) {
  const double tail = dot_lanes(x + 1, x + 1, m - 1);
  const double alpha = x[0];
  if (tail == 0) {
    beta_out = alpha;
    for (Index i = 1; i < m; ++i) x[i] = 0;
    x[0] = 1;
    return 0;
  }
  const double beta = -std::copysign(std::sqrt(alpha * alpha + tail), alpha);
  const double scale = 1.0 / (alpha - beta);  // no cancellation: beta has the sign opposite alpha
  for (Index i = 1; i < m; ++i) x[i] *= scale;
  x[0] = 1;
  beta_out = beta;
  return (beta - alpha) / beta;
}

// w = B v for the symmetric (m, m) block B (row stride ld), reading its lower triangle only
// (half the memory traffic: this product is memory bound): row r gives sum_{j <= r} B[r][j] v[j]
// to w[r] and B[r][j] v[r] to w[j] for j < r.
void symmetric_block_times(const double* __restrict b, Index ld, Index m,
                           const double* __restrict v, double* __restrict w) {
  std::fill(w, w + m, 0.0);
  for (Index r = 0; r < m; ++r) {
    const double* br = b + r * ld;
    const double vr = v[r];
    double acc[kLanes] = {};
    Index j = 0;
    for (; j + kLanes <= r; j += kLanes)
      for (Index t = 0; t < kLanes; ++t) {
        acc[t] += br[j + t] * v[j + t];
        w[j + t] += br[j + t] * vr;
      }
    double s = br[r] * vr;
    for (; j < r; ++j) {
      s += br[j] * v[j];
      w[j] += br[j] * vr;
    }
    for (Index t = 0; t < kLanes; ++t) s += acc[t];
    w[r] += s;
  }
}

// Blocked Householder tridiagonalization of the symmetric row-major (n, n) matrix `a`, of which
// only the lower triangle is read and updated (LAPACK's dsytrd with dlatrd, lower variant). A
// panel of nb columns is reduced with the trailing block kept as it was at the panel's start:
// column c is first corrected by the panel's earlier reflections, x -= V W[c, :]^T + W V[c, :]^T,
// its reflector is formed, and w = tau (A v - V (W^T v) - W (V^T v)), w -= (tau/2 w.v) v. After
// the panel the trailing block gets A -= V W^T + W V^T by GEMMs on its lower block columns. So
// half of the 4/3 n^3 flops are GEMM and half the memory-bound products A v. V and W are stored
// transposed (rows of length n, contiguous). Reflector c ends in row c of `a` (columns c + 1..,
// the unused upper triangle), its tau in t.tau[c].
Tridiagonal tridiagonalize(Tensor<double>& a) {
  const Index n = a.dim(0);
  double* p = a.data();
  Tridiagonal t;
  t.d.assign(static_cast<std::size_t>(n), 0.0);
  t.e.assign(static_cast<std::size_t>(std::max<Index>(n - 1, 0)), 0.0);
  t.tau.assign(static_cast<std::size_t>(n), 0.0);
  const Index nb = kTridiagonalBlock;
  // [V^T; W^T; V^T] (3 nb rows of length n): rows 0..2nb-1 and nb..3nb-1 are the two operands
  // of one GEMM with k = 2 nb for the trailing update, [V W] [W V]^T = V W^T + W V^T.
  std::vector<double> vwv(static_cast<std::size_t>(3 * nb * n));
  double* const vt = vwv.data();
  double* const wt = vwv.data() + nb * n;
  std::vector<double> x(static_cast<std::size_t>(n)), y1(static_cast<std::size_t>(nb)),
      y2(static_cast<std::size_t>(nb));
  for (Index k0 = 0; k0 < n; k0 += nb) {
    const Index jb = std::min(nb, n - k0);
    std::fill(vwv.begin(), vwv.begin() + 2 * nb * n, 0.0);  // rows of a short last panel stay 0
    for (Index j = 0; j < jb; ++j) {
      const Index c = k0 + j;
      double* vj = vt + j * n;
      double* wj = wt + j * n;
      // x = column c from row c on (lower triangle), corrected by the panel's earlier
      // reflections.
      double* xs = x.data();
      for (Index r = c; r < n; ++r) xs[r] = p[r * n + c];
      for (Index q = 0; q < j; ++q) {
        const double* vq = vt + q * n;
        const double* wq = wt + q * n;
        const double fw = wq[c], fv = vq[c];
        for (Index r = c; r < n; ++r) xs[r] -= fw * vq[r] + fv * wq[r];
      }
      t.d[static_cast<std::size_t>(c)] = xs[c];
      if (c + 1 >= n) continue;
      const Index m = n - c - 1;
      double beta = 0;
      const double tau = c + 2 < n ? householder(xs + c + 1, m, beta) : 0.0;
      if (c + 2 >= n) beta = xs[c + 1];
      t.e[static_cast<std::size_t>(c)] = beta;
      t.tau[static_cast<std::size_t>(c)] = tau;
      if (tau == 0) continue;  // H = I: v and w stay zero, row c keeps nothing of use
      const double* v = xs + c + 1;
      std::copy(v, v + m, vj + c + 1);
      std::copy(v, v + m, p + c * n + c + 1);  // kept for the back-transformation
      // w = A v over the trailing block (rows c + 1.. as they were at the panel's start).
      symmetric_block_times(p + (c + 1) * n + c + 1, n, m, v, wj + c + 1);
      // y1 = W^T v, y2 = V^T v (earlier columns of the panel), then w -= V y1 + W y2.
      for (Index q = 0; q < j; ++q) {
        const double* vq = vt + q * n + c + 1;
        const double* wq = wt + q * n + c + 1;
        y1[static_cast<std::size_t>(q)] = dot_lanes(wq, v, m);
        y2[static_cast<std::size_t>(q)] = dot_lanes(vq, v, m);
      }
      double* w = wj + c + 1;
      for (Index q = 0; q < j; ++q) {
        const double* vq = vt + q * n + c + 1;
        const double* wq = wt + q * n + c + 1;
        const double f1 = y1[static_cast<std::size_t>(q)], f2 = y2[static_cast<std::size_t>(q)];
        for (Index i = 0; i < m; ++i) w[i] -= vq[i] * f1 + wq[i] * f2;
      }
      for (Index i = 0; i < m; ++i) w[i] *= tau;
      const double wv = dot_lanes(w, v, m);
      const double alpha = -0.5 * tau * wv;
      for (Index i = 0; i < m; ++i) w[i] += alpha * v[i];
    }
    // Trailing update of the lower triangle, A[k1:, k1:] -= V W^T + W V^T, by block columns
    // of kTrailingBlock (as symmetric_gram): block column J gets rows j0.. only. One GEMM per
    // block column (k = 2 nb), so few parallel regions.
    if (k0 + jb < n) std::copy(vt, vt + nb * n, vwv.data() + 2 * nb * n);
    for (Index j0 = k0 + jb; j0 < n; j0 += kTrailingBlock) {
      const Index cols = std::min(kTrailingBlock, n - j0), rows = n - j0;
      kernels::gemm<double>(Trans::yes, Trans::no, rows, cols, 2 * nb, -1.0, vt + j0, n, wt + j0, n,
                            1.0, p + j0 * n + j0, n);
    }
  }
  return t;
}

// The QL rotations of one sweep: rotation k of the sweep mixes rows top - k and top - k + 1 of
// Z^T with (c, s) = (cs[offset + k], sn[offset + k]).
struct Sweep {
  Index top, count, offset;
};

// The rotations of the QL sweeps (the Rotations of detail::tridiagonal_ql), recorded as the QL
// runs and applied to Z^T (n rows of length n) in batches: for each chunk of kRotationChunk
// columns, every pending sweep in order, the row that two consecutive rotations share carried in
// registers. Every column is independent, so
// chunks split over threads and the result does not depend on the thread count.
class RotationBatch {
 public:
  RotationBatch(double* zt, Index n) : zt_(zt), n_(n) {}

  void begin_sweep(Index top) { sweeps_.push_back(Sweep{top, 0, static_cast<Index>(cs_.size())}); }
  void add(double c, double s) {
    cs_.push_back(c);
    sn_.push_back(s);
    ++sweeps_.back().count;
  }
  void end_sweep() {
    if (static_cast<Index>(cs_.size()) >= kRotationBatchPerRow * n_) flush();
  }
  void flush() {
    if (cs_.empty()) {
      sweeps_.clear();
      return;
    }
    const Index chunks = (n_ + kRotationChunk - 1) / kRotationChunk;
#pragma omp parallel for schedule(static) if (n_ >= kRotationParallelMin)
    for (Index ch = 0; ch < chunks; ++ch) {
      const Index j0 = ch * kRotationChunk;
      if (j0 + kRotationChunk <= n_) {
        apply_full(j0);
      } else {
        apply_partial(j0, n_ - j0);
      }
    }
    sweeps_.clear();
    cs_.clear();
    sn_.clear();
  }

 private:
  using Vec4 = double __attribute__((vector_size(32)));
  static Vec4 load4(const double* p) {
    Vec4 v;
    std::memcpy(&v, p, sizeof v);
    return v;
  }
  static void store4(double* p, Vec4 v) {
    std::memcpy(p, &v, sizeof v);
  }

  // A full chunk of kRotationChunk columns, in explicit 4-wide vectors (left to itself the
  // compiler vectorizes across rotations instead of along the row, measured 2x slower). Within a
  // sweep, rotation k mixes rows i = top - k and i + 1; row i + 1 is final after it and row i is
  // mixed again by rotation k + 1, so row i is carried in registers: one load and one store per
  // element and rotation.
  void apply_full(Index j0) const {
    constexpr int kVecs = static_cast<int>(kRotationChunk / 4);
    for (const Sweep& sw : sweeps_) {
      if (sw.count == 0) continue;
      const double* cs = cs_.data() + sw.offset;
      const double* sn = sn_.data() + sw.offset;
      Vec4 carry[kVecs];
      const double* first = zt_ + (sw.top + 1) * n_ + j0;
      for (int u = 0; u < kVecs; ++u) carry[u] = load4(first + 4 * u);
      for (Index k = 0; k < sw.count; ++k) {
        const Index i = sw.top - k;
        const double c = cs[k], s = sn[k];
        const double* x = zt_ + i * n_ + j0;
        double* y = zt_ + (i + 1) * n_ + j0;
        for (int u = 0; u < kVecs; ++u) {
          const Vec4 a = load4(x + 4 * u), b = carry[u];
          store4(y + 4 * u, s * a + c * b);
          carry[u] = c * a - s * b;
        }
      }
      double* last = zt_ + (sw.top - sw.count + 1) * n_ + j0;
      for (int u = 0; u < kVecs; ++u) store4(last + 4 * u, carry[u]);
    }
  }

  // The last, narrower chunk (w < kRotationChunk columns), row by row in memory.
  void apply_partial(Index j0, Index w) const {
    for (const Sweep& sw : sweeps_) {
      const double* cs = cs_.data() + sw.offset;
      const double* sn = sn_.data() + sw.offset;
      for (Index k = 0; k < sw.count; ++k) {
        const Index i = sw.top - k;
        const double c = cs[k], s = sn[k];
        double* x = zt_ + i * n_ + j0;
        double* y = zt_ + (i + 1) * n_ + j0;
        for (Index t = 0; t < w; ++t) {
          const double a = x[t], b = y[t];
          y[t] = s * a + c * b;
          x[t] = c * a - s * b;
        }
      }
    }
  }

  double* zt_;
  Index n_;
  std::vector<Sweep> sweeps_;
  std::vector<double> cs_, sn_;
};

// V = Q Z = H_0 (H_1 (... H_{n-3} Z)) in place on z (n, n), by blocks of kDenseBlock reflections
// from the last block to the first (LAPACK's dormtr/dlarfb): a block H_k0 ... H_k1-1 is
// I - V T V^T with T upper triangular (dlarft, forward), so Z[k0 + 1:, :] -= V (T (V^T Z)) is
// three GEMMs.
void back_transform(const Tensor<double>& reflectors, const std::vector<double>& tau, double* z,
                    Index n) {
  const Index count = std::max<Index>(n - 2, 0);  // reflectors 0..n-3
  if (count == 0) return;
  const double* p = reflectors.data();
  const Index nb = kDenseBlock;
  std::vector<double> vbt(static_cast<std::size_t>(nb * n)), g(static_cast<std::size_t>(nb * nb)),
      tm(static_cast<std::size_t>(nb * nb)), w1(static_cast<std::size_t>(nb * n)),
      w2(static_cast<std::size_t>(nb * n));
  const Index last_start = ((count - 1) / nb) * nb;
  for (Index k0 = last_start; k0 >= 0; k0 -= nb) {
    const Index kb = std::min(nb, count - k0);
    const Index m = n - k0 - 1;  // rows k0 + 1..n-1
    // V^T (kb, m): row q is v_{k0+q} from global row k0 + 1 on (zero before its start).
    for (Index q = 0; q < kb; ++q) {
      const Index c = k0 + q;
      double* row = vbt.data() + q * m;
      std::fill(row, row + q, 0.0);
      const double t = tau[static_cast<std::size_t>(c)];
      if (t == 0) {
        std::fill(row + q, row + m, 0.0);
      } else {
        std::copy(p + c * n + c + 1, p + c * n + n, row + q);
      }
    }
    // T (kb, kb) upper: T[i][i] = tau_i, T[0:i, i] = -tau_i T[0:i, 0:i] (V^T V)[0:i, i].
    kernels::gemm<double>(Trans::no, Trans::yes, kb, kb, m, 1.0, vbt.data(), m, vbt.data(), m, 0.0,
                          g.data(), kb);
    std::fill(tm.begin(), tm.end(), 0.0);
    for (Index i = 0; i < kb; ++i) {
      const double ti = tau[static_cast<std::size_t>(k0 + i)];
      tm[static_cast<std::size_t>(i * kb + i)] = ti;
      for (Index q = 0; q < i; ++q) {
        double s = 0;
        for (Index r = q; r < i; ++r)
          s += tm[static_cast<std::size_t>(q * kb + r)] * g[static_cast<std::size_t>(r * kb + i)];
        tm[static_cast<std::size_t>(q * kb + i)] = -ti * s;
      }
    }
    double* zs = z + (k0 + 1) * n;
    kernels::gemm<double>(Trans::no, Trans::no, kb, n, m, 1.0, vbt.data(), m, zs, n, 0.0, w1.data(),
                          n);
    kernels::gemm<double>(Trans::no, Trans::no, kb, n, kb, 1.0, tm.data(), kb, w1.data(), n, 0.0,
                          w2.data(), n);
    kernels::gemm<double>(Trans::yes, Trans::no, m, n, kb, -1.0, vbt.data(), m, w2.data(), n, 1.0,
                          zs, n);
  }
}

}  // namespace

SymmetricEigen symmetric_eigen(const Tensor<double>& a) {
  Tensor<double> s = symmetrized("symmetric_eigen", a);
  const Index n = a.dim(0);
  SymmetricEigen out;
  out.vectors = Tensor<double>(Shape{n, n});
  if (n == 0) return out;
  Tridiagonal t = tridiagonalize(s);
  // Z^T starts as the identity; the QL rotates its rows (contiguous), so row i ends as the
  // eigenvector of T for d[i].
  Tensor<double> zt(Shape{n, n});
  double* ztp = zt.data();
  for (Index i = 0; i < n; ++i) ztp[i * n + i] = 1.0;
  RotationBatch rotations(ztp, n);
  detail::tridiagonal_ql("symmetric_eigen", t.d, t.e, &rotations);
  rotations.flush();
  const std::vector<Index> order = detail::ascending_order(t.d);
  out.values.resize(static_cast<std::size_t>(n));
  for (Index i = 0; i < n; ++i)
    out.values[static_cast<std::size_t>(i)] = t.d[static_cast<std::size_t>(order[i])];
  // Z[r][i] = Z^T[order[i]][r], by tiles so that both sides stay in cache.
  double* z = out.vectors.data();
  constexpr Index tile = 32;
  for (Index i0 = 0; i0 < n; i0 += tile)
    for (Index r0 = 0; r0 < n; r0 += tile)
      for (Index i = i0; i < std::min(i0 + tile, n); ++i) {
        const double* src = ztp + order[static_cast<std::size_t>(i)] * n;
        for (Index r = r0; r < std::min(r0 + tile, n); ++r) z[r * n + i] = src[r];
      }
  back_transform(s, t.tau, z, n);
  return out;
}

std::vector<double> symmetric_eigenvalues(const Tensor<double>& a) {
  Tensor<double> s = symmetrized("symmetric_eigenvalues", a);
  const Index n = a.dim(0);
  if (n == 0) return {};
  Tridiagonal t = tridiagonalize(s);
  detail::tridiagonal_ql("symmetric_eigenvalues", t.d, t.e, static_cast<RotationBatch*>(nullptr));
  const std::vector<Index> order = detail::ascending_order(t.d);
  std::vector<double> values(static_cast<std::size_t>(n));
  for (Index i = 0; i < n; ++i)
    values[static_cast<std::size_t>(i)] = t.d[static_cast<std::size_t>(order[i])];
  return values;
}

}  // namespace amari::curvature
