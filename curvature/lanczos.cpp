// Lanczos with full reorthogonalization, the tridiagonal eigensolver it needs, and power iteration
// (see lanczos.hpp for the math).
#include <amari/curvature/lanczos.hpp>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <utility>

#include <amari/autodiff/kernels/vector.hpp>
#include <amari/curvature/detail/format.hpp>
#include <amari/curvature/detail/tridiagonal_ql.hpp>
#include <amari/curvature/vector_ops.hpp>
#include <amari/nn/random.hpp>

namespace amari::curvature {
namespace {

// ---- kernels on a set of flat vectors -----------------------------------------------------------
// They extend vector_ops' single-vector kernels (dot, norm, axpy, all_finite, used as they are) to
// a set of vectors, on the block partition and lanes of the vector kernels
// (autodiff/kernels/vector.hpp), so results do not depend on the thread count and each entry of
// Q^T w is bitwise dot(q_i, w).
using kernels::block_dot;
using kernels::block_span;
using kernels::Blocks;
using kernels::blocks_for;
using kernels::for_each_block;
using kernels::Span;

// Linear combinations accumulate kChunk elements at a time in a double buffer on the stack.
constexpr Index kChunk = 256;
// The DGKS criterion for a second Gram-Schmidt pass: the first left less than 1/sqrt(2) of ||w||.
constexpr double kSecondPassRatio = 0.70710678118654752;

// out[lo, hi) = scale * out[lo, hi) + sum_i c[i] q_i[lo, hi), accumulated in double.
template <Real T>
void combine_range(const std::vector<Tensor<T>>& q, const double* c, int k, double scale, T* out,
                   Index lo, Index hi) {
  double acc[kChunk];
  for (Index c0 = lo; c0 < hi; c0 += kChunk) {
    const Index len = std::min(kChunk, hi - c0);
    if (scale == 0.0) {
      for (Index t = 0; t < len; ++t) acc[t] = 0.0;
    } else {
      for (Index t = 0; t < len; ++t) acc[t] = scale * static_cast<double>(out[c0 + t]);
    }
    for (int i = 0; i < k; ++i) {
      const T* qi = q[static_cast<std::size_t>(i)].data() + c0;
      const double ci = c[i];
      for (Index t = 0; t < len; ++t) acc[t] += ci * static_cast<double>(qi[t]);
    }
    for (Index t = 0; t < len; ++t) out[c0 + t] = static_cast<T>(acc[t]);
  }
}

}  // namespace

using detail::format_number;

namespace {


void require_non_negative(const char* fn, const char* what, double x) {
  if (!(x >= 0.0)) {  // also refuses NaN
    throw ValueError(std::string(fn) + ": " + what + " = " + format_number(x) + ", expected >= 0");
  }
}

// The rotations of detail::tridiagonal_ql applied at once to Z^T restricted to `cols` columns
// (row-major (m, cols)): all columns of Z^T for the eigenvectors, or only columns 0 and m - 1 (the
// first and last components of every eigenvector, which is all Lanczos quadrature and the residual
// bounds need).
class ImmediateRotations {
 public:
  ImmediateRotations(double* zt, Index cols) : zt_(zt), cols_(cols) {}
  void begin_sweep(Index top) { i_ = top; }
  void add(double c, double s) {
    double* x = zt_ + i_ * cols_;
    double* y = x + cols_;
    for (Index k = 0; k < cols_; ++k) {
      const double a = x[k], b = y[k];
      y[k] = s * a + c * b;
      x[k] = c * a - s * b;
    }
    --i_;
  }
  void end_sweep() {}

 private:
  double* zt_;
  Index cols_;
  Index i_ = 0;
};

}  // namespace

const char* to_string(SpectrumStatus status) {
  switch (status) {
    case SpectrumStatus::converged:
      return "converged";
    case SpectrumStatus::max_iterations:
      return "max_iterations";
    case SpectrumStatus::invariant_subspace:
      return "invariant_subspace";
    case SpectrumStatus::non_finite:
      return "non_finite";
  }
  return "unknown";
}

const char* to_string(ProbeDistribution distribution) {
  return distribution == ProbeDistribution::rademacher ? "rademacher" : "gaussian";
}

template <Real T>
void fill_probe(Tensor<T>& v, ProbeDistribution distribution, std::uint64_t seed,
                std::uint64_t index) {
  nn::Rng rng(seed, index);
  T* p = v.data();
  const Index n = v.size();
  if (distribution == ProbeDistribution::gaussian) {
    for (Index i = 0; i < n; ++i) p[i] = static_cast<T>(rng.normal());
    return;
  }
  // 64 signs per draw.
  for (Index i = 0; i < n; i += 64) {
    std::uint64_t bits = rng.next();
    for (Index k = i; k < std::min(n, i + 64); ++k, bits >>= 1) p[k] = (bits & 1U) ? T(1) : T(-1);
  }
}

TridiagonalEigen symmetric_tridiagonal_eigen(const std::vector<double>& diagonal,
                                             const std::vector<double>& off_diagonal,
                                             bool vectors) {
  const Index m = static_cast<Index>(diagonal.size());
  if (static_cast<Index>(off_diagonal.size()) != std::max<Index>(m - 1, 0)) {
    throw ShapeError("symmetric_tridiagonal_eigen: " + std::to_string(off_diagonal.size()) +
                     " off-diagonal entries for a diagonal of " + std::to_string(m) +
                     ", expected " + std::to_string(std::max<Index>(m - 1, 0)));
  }
  for (double x : diagonal)
    if (!std::isfinite(x)) throw ValueError("symmetric_tridiagonal_eigen: non-finite diagonal");
  for (double x : off_diagonal)
    if (!std::isfinite(x)) throw ValueError("symmetric_tridiagonal_eigen: non-finite off-diagonal");
  TridiagonalEigen out;
  if (m == 0) return out;
  std::vector<double> d = diagonal;
  // Z^T, (m, cols): all of it, or the columns of the first and last rows of Z.
  const Index cols = vectors ? m : 2;
  std::vector<double> zt(static_cast<std::size_t>(m * cols), 0.0);
  if (vectors) {
    for (Index i = 0; i < m; ++i) zt[static_cast<std::size_t>(i * m + i)] = 1.0;
  } else {
    zt[0] = 1.0;
    zt[static_cast<std::size_t>((m - 1) * cols + 1)] = 1.0;
  }
  ImmediateRotations rotations(zt.data(), cols);
  detail::tridiagonal_ql("symmetric_tridiagonal_eigen", d, off_diagonal, &rotations);
  const std::vector<Index> order = detail::ascending_order(d);
  out.values.resize(static_cast<std::size_t>(m));
  out.first.resize(static_cast<std::size_t>(m));
  out.last.resize(static_cast<std::size_t>(m));
  if (vectors) out.vectors.resize(static_cast<std::size_t>(m * m));
  for (Index i = 0; i < m; ++i) {
    const double* row = zt.data() + order[static_cast<std::size_t>(i)] * cols;  // eigenvector i of T
    out.values[static_cast<std::size_t>(i)] = d[static_cast<std::size_t>(order[static_cast<std::size_t>(i)])];
    out.first[static_cast<std::size_t>(i)] = row[0];
    out.last[static_cast<std::size_t>(i)] = row[cols - 1];
    if (vectors) {
      for (Index r = 0; r < m; ++r) out.vectors[static_cast<std::size_t>(r * m + i)] = row[r];
    }
  }
  return out;
}

// ---- OrthonormalBasis ---------------------------------------------------------------------------

template <Real T>
OrthonormalBasis<T>::OrthonormalBasis(Index n) : n_(n) {
  if (n < 0) throw ValueError("OrthonormalBasis: length " + std::to_string(n) + ", expected >= 0");
}

template <Real T>
void OrthonormalBasis<T>::project_out(Tensor<T>& w, std::vector<double>* coefficients) {
  const int k = size_;
  const Blocks blocks = blocks_for(n_);
  partial_.resize(static_cast<std::size_t>(blocks.count * k));
  projection_.resize(static_cast<std::size_t>(k));
  T* wp = w.data();
  // projection = Q^T w: per block, all k partial dots while the block of w is in cache.
  for_each_block(n_, blocks.count, [&](Index b) {
    const Span s = block_span(n_, blocks, b);
    for (int i = 0; i < k; ++i) {
      partial_[static_cast<std::size_t>(b * k + i)] =
          block_dot(vectors_[static_cast<std::size_t>(i)].data(), wp, s.lo, s.hi);
    }
  });
  for (int i = 0; i < k; ++i) {
    double s = 0.0;
    for (Index b = 0; b < blocks.count; ++b) s += partial_[static_cast<std::size_t>(b * k + i)];
    projection_[static_cast<std::size_t>(i)] = -s;
    if (coefficients) (*coefficients)[static_cast<std::size_t>(i)] += s;
  }
  // w <- w - Q (Q^T w).
  for_each_block(n_, blocks.count, [&](Index b) {
    const Span s = block_span(n_, blocks, b);
    combine_range(vectors_, projection_.data(), k, 1.0, wp, s.lo, s.hi);
  });
  ++passes_;
}

template <Real T>
double OrthonormalBasis<T>::orthogonalize(Tensor<T>& w, std::vector<double>* coefficients) {
  if (coefficients) coefficients->assign(static_cast<std::size_t>(size_), 0.0);
  passes_ = 0;
  const double before = norm(w);
  if (size_ == 0 || n_ == 0) return before;
  project_out(w, coefficients);
  double after = norm(w);
  // Daniel, Gragg, Kaufman, Stewart (1976): a second pass only if the first removed more than
  // 1 - 1/sqrt(2) of the norm, i.e. if cancellation may have left a component along Q of relative
  // size eps * before / after. Twice is enough (Parlett 1980, sec. 6.9).
  if (after < kSecondPassRatio * before) {
    project_out(w, coefficients);
    after = norm(w);
  }
  return after;
}

template <Real T>
void OrthonormalBasis<T>::append(const Tensor<T>& w, double norm_of_w) {
  if (!(norm_of_w > 0.0) || !std::isfinite(norm_of_w)) {
    throw ValueError("OrthonormalBasis::append: norm " + format_number(norm_of_w) +
                     ", expected positive and finite");
  }
  if (w.size() != n_) {
    throw ShapeError("OrthonormalBasis::append: vector of " + std::to_string(w.size()) +
                     " elements, expected " + std::to_string(n_));
  }
  if (static_cast<std::size_t>(size_) == vectors_.size()) {
    vectors_.push_back(Tensor<T>::uninitialized(Shape{n_}));
  }
  Tensor<T>& q = vectors_[static_cast<std::size_t>(size_)];
  const double inv = 1.0 / norm_of_w;
  const T* src = w.data();
  T* dst = q.data();
  for (Index i = 0; i < n_; ++i) dst[i] = static_cast<T>(static_cast<double>(src[i]) * inv);
  ++size_;
}

template <Real T>
void OrthonormalBasis<T>::combine(const std::vector<double>& c, Tensor<T>& out) const {
  const int k = static_cast<int>(c.size());
  if (k > size_ || out.size() != n_) {
    throw ShapeError("OrthonormalBasis::combine: " + std::to_string(k) + " coefficients for " +
                     std::to_string(size_) + " vectors, output of " + std::to_string(out.size()) +
                     " elements for length " + std::to_string(n_));
  }
  if (n_ == 0) return;
  const Blocks blocks = blocks_for(n_);
  T* op = out.data();
  for_each_block(n_, blocks.count, [&](Index b) {
    const Span s = block_span(n_, blocks, b);
    combine_range(vectors_, c.data(), k, 0.0, op, s.lo, s.hi);
  });
}

// ---- LanczosProcess -----------------------------------------------------------------------------

template <Real T>
LanczosProcess<T>::LanczosProcess(LinearOperator<T>& A, double breakdown_tolerance)
    : a_(&A), breakdown_(breakdown_tolerance), basis_(A.size()) {
  require_non_negative("LanczosProcess", "breakdown_tolerance", breakdown_tolerance);
  if (breakdown_ == 0.0) {
    breakdown_ = 10.0 * std::sqrt(static_cast<double>(std::max<Index>(A.size(), 1))) *
                 std::numeric_limits<T>::epsilon();
  }
}

template <Real T>
void LanczosProcess<T>::end(SpectrumStatus status, std::string message) {
  status_ = status;
  message_ = std::move(message);
  ended_ = true;
}

template <Real T>
void LanczosProcess<T>::restart(const Tensor<T>& start) {
  const Index n = a_->size();
  if (!start.defined() || start.rank() != 1 || start.size() != n) {
    throw ShapeError("LanczosProcess: start vector of shape " +
                     (start.defined() ? start.shape().str() : std::string("(undefined)")) +
                     ", expected (" + std::to_string(n) + ") for " + a_->name());
  }
  if (!all_finite(start)) throw ValueError("LanczosProcess: start vector is not finite");
  basis_.clear();
  alpha_.clear();
  beta_.clear();
  norm_estimate_ = 0.0;
  products_ = 0;
  status_ = SpectrumStatus::converged;
  message_.clear();
  ended_ = false;
  if (n == 0) {
    end(SpectrumStatus::converged, "empty operator (n = 0)");
    return;
  }
  const double s = norm(start);
  if (!(s > 0.0) || !std::isfinite(s)) {
    throw ValueError("LanczosProcess: start vector has norm " + format_number(s) +
                     ", expected positive and finite");
  }
  basis_.append(start, s);
  if (!w_.defined()) w_ = Tensor<T>::uninitialized(Shape{n});
}

template <Real T>
bool LanczosProcess<T>::step() {
  if (ended_) return false;
  const int j = steps();  // 0-based index of q_j in the basis
  const Index n = a_->size();
  a_->apply(basis_[j], w_);
  ++products_;
  const std::string at = " at Lanczos iteration " + std::to_string(j + 1) + " (" + a_->name() + ")";
  if (!all_finite(w_)) {
    end(SpectrumStatus::non_finite, "the product A q was not finite" + at);
    return false;
  }
  // The three-term recurrence w = A q_j - beta_{j-1} q_{j-1} - alpha_j q_j removes the large
  // components; the full pass against Q_j then only cleans up rounding (so it rarely needs its
  // second pass): together the "twice" of twice-is-enough at half the cost of CGS2 from scratch.
  if (j > 0) axpy(-beta_.back(), basis_[j - 1], w_);
  double alpha = dot(basis_[j], w_);
  axpy(-alpha, basis_[j], w_);
  const double beta = basis_.orthogonalize(w_, &coefficients_);
  alpha += coefficients_[static_cast<std::size_t>(j)];
  if (!std::isfinite(alpha) || !std::isfinite(beta)) {
    end(SpectrumStatus::non_finite, "a Lanczos coefficient was not finite" + at);
    return false;
  }
  const double previous = j > 0 ? beta_.back() : 0.0;
  alpha_.push_back(alpha);
  beta_.push_back(beta);
  // ||A q_j||^2 = beta_{j-1}^2 + alpha_j^2 + beta_j^2 up to the (tiny) reorthogonalization terms.
  norm_estimate_ =
      std::max(norm_estimate_, std::sqrt(previous * previous + alpha * alpha + beta * beta));
  if (j + 1 == n) {
    end(SpectrumStatus::converged,
        "the Krylov space is the whole space (n = " + std::to_string(n) + ")");
    return false;
  }
  if (beta <= breakdown_ * norm_estimate_) {
    end(SpectrumStatus::invariant_subspace,
        "invariant subspace" + at + ": beta = " + format_number(beta) + " <= " +
            format_number(breakdown_) + " * ||T|| = " + format_number(breakdown_ * norm_estimate_));
    return false;
  }
  basis_.append(w_, beta);
  return true;
}

// ---- lanczos ------------------------------------------------------------------------------------
namespace {

void validate(int k, const LanczosOptions& o) {
  if (k <= 0) throw ValueError("lanczos: k = " + std::to_string(k) + ", expected >= 1");
  if (o.max_iterations < 1) {
    throw ValueError("lanczos: max_iterations = " + std::to_string(o.max_iterations) +
                     ", expected >= 1");
  }
  require_non_negative("lanczos", "tolerance", o.tolerance);
  require_non_negative("lanczos", "breakdown_tolerance", o.breakdown_tolerance);
}

// Indices (into the ascending eigenvalues of T_j) of the wanted pairs, in reporting order.
std::vector<Index> wanted_indices(Index m, Index k, bool largest) {
  std::vector<Index> idx;
  for (Index t = 0; t < std::min(k, m); ++t) idx.push_back(largest ? m - 1 - t : t);
  return idx;
}

bool wanted_converged(const TridiagonalEigen& eig, double beta, double bound, Index k,
                      SpectrumEnd which) {
  const Index m = static_cast<Index>(eig.values.size());
  if (m < k) return false;
  for (int end = 0; end < 2; ++end) {
    const bool largest = end == 0;
    if (largest && which == SpectrumEnd::smallest) continue;
    if (!largest && which == SpectrumEnd::largest) continue;
    for (Index i : wanted_indices(m, k, largest)) {
      if (beta * std::abs(eig.last[static_cast<std::size_t>(i)]) > bound) return false;
    }
  }
  return true;
}

template <Real T>
RitzPairs<T> ritz_pairs(const LanczosProcess<T>& process, const TridiagonalEigen& eig, Index k,
                        bool largest) {
  RitzPairs<T> out;
  const Index m = static_cast<Index>(eig.values.size());
  const double beta = process.beta().empty() ? 0.0 : process.beta().back();
  const Index n = process.basis().length();
  std::vector<double> s(static_cast<std::size_t>(m));
  for (Index i : wanted_indices(m, k, largest)) {
    for (Index r = 0; r < m; ++r) {
      s[static_cast<std::size_t>(r)] = eig.vectors[static_cast<std::size_t>(r * m + i)];
    }
    Tensor<T> y = Tensor<T>::uninitialized(Shape{n});
    process.basis().combine(s, y);
    // ||y|| = ||s|| = 1 up to rounding; normalize so that the residual refers to a unit vector.
    const double ny = norm(y);
    for (Index t = 0; t < n; ++t) y[t] = static_cast<T>(static_cast<double>(y[t]) / ny);
    out.eigenvalues.push_back(eig.values[static_cast<std::size_t>(i)]);
    out.eigenvectors.push_back(std::move(y));
    out.residual_estimates.push_back(beta * std::abs(eig.last[static_cast<std::size_t>(i)]));
  }
  return out;
}

// ||A y - theta y|| for each pair, one product each; +inf (and a note) for a failed product.
template <Real T>
void verify_residuals(LinearOperator<T>& A, RitzPairs<T>& pairs, LanczosResult<T>& result) {
  if (pairs.eigenvectors.empty()) return;
  Tensor<T> ay = Tensor<T>::uninitialized(Shape{A.size()});
  for (std::size_t i = 0; i < pairs.eigenvectors.size(); ++i) {
    const Tensor<T>& y = pairs.eigenvectors[i];
    A.apply(y, ay);
    ++result.products;
    if (!all_finite(ay)) {
      pairs.residuals.push_back(std::numeric_limits<double>::infinity());
      result.status = SpectrumStatus::non_finite;
      result.message +=
          "; the product A y for verifying Ritz pair " + std::to_string(i) + " was not finite";
      continue;
    }
    const double theta = pairs.eigenvalues[i];
    double s = 0.0;
    for (Index t = 0; t < y.size(); ++t) {
      const double r = static_cast<double>(ay[t]) - theta * static_cast<double>(y[t]);
      s += r * r;
    }
    pairs.residuals.push_back(std::sqrt(s));
  }
}

}  // namespace

template <Real T>
LanczosResult<T> lanczos(LinearOperator<T>& A, int k, const LanczosOptions& options,
                         const std::type_identity_t<Tensor<T>>* start) {
  validate(k, options);
  const Index n = A.size();
  LanczosProcess<T> process(A, options.breakdown_tolerance);
  if (start) {
    process.restart(*start);
  } else {
    Tensor<T> q = Tensor<T>::uninitialized(Shape{n});
    fill_probe(q, ProbeDistribution::rademacher, options.seed, 0);
    process.restart(q);
  }
  const Index wanted = std::min<Index>(k, n);
  const int cap = static_cast<int>(std::min<Index>(options.max_iterations, n));
  bool converged = n == 0;
  while (!process.ended() && process.steps() < cap) {
    if (!process.step()) break;
    if (options.tolerance > 0.0 && process.steps() >= wanted) {
      const std::vector<double> off(process.beta().begin(), process.beta().end() - 1);
      const TridiagonalEigen eig = symmetric_tridiagonal_eigen(process.alpha(), off, false);
      if (wanted_converged(eig, process.beta().back(), options.tolerance * process.norm_estimate(),
                           wanted, options.which)) {
        converged = true;
        break;
      }
    }
  }

  LanczosResult<T> result;
  result.iterations = process.steps();
  result.products = process.products();
  result.norm_estimate = process.norm_estimate();
  result.alpha = process.alpha();
  result.beta = process.beta();
  if (process.ended()) {
    result.status = process.status();
    result.message = process.message();
  } else if (converged) {
    result.status = SpectrumStatus::converged;
    result.message = "all " + std::to_string(wanted) +
                     " wanted Ritz pairs have residual <= " + format_number(options.tolerance) +
                     " * ||T|| after " + std::to_string(result.iterations) + " iterations";
  } else {
    result.status = SpectrumStatus::max_iterations;
    result.message = "max_iterations = " + std::to_string(options.max_iterations) +
                     " reached before the wanted Ritz pairs met the tolerance";
  }
  if (result.iterations == 0) return result;

  const std::vector<double> off(result.beta.begin(), result.beta.end() - 1);
  const TridiagonalEigen eig = symmetric_tridiagonal_eigen(result.alpha, off, true);
  if (options.which != SpectrumEnd::smallest) result.largest = ritz_pairs(process, eig, k, true);
  if (options.which != SpectrumEnd::largest) result.smallest = ritz_pairs(process, eig, k, false);
  if (options.verify_residuals) {
    verify_residuals(A, result.largest, result);
    verify_residuals(A, result.smallest, result);
  }
  return result;
}

// ---- power iteration ----------------------------------------------------------------------------

template <Real T>
PowerIterationResult<T> power_iteration(LinearOperator<T>& A, const PowerIterationOptions& o) {
  if (o.max_iterations < 1) {
    throw ValueError("power_iteration: max_iterations = " + std::to_string(o.max_iterations) +
                     ", expected >= 1");
  }
  if (!(o.tolerance > 0.0)) {
    throw ValueError("power_iteration: tolerance = " + format_number(o.tolerance) +
                     ", expected > 0");
  }
  const Index n = A.size();
  PowerIterationResult<T> r;
  if (n == 0) {
    r.eigenvector = Tensor<T>(Shape{0});
    r.message = "empty operator (n = 0)";
    return r;
  }
  // v: the current unit vector; w: A v; next: the following unit vector, written while the
  // previous one (whose eigenvalue and residual are recorded) is still held, so that a failed
  // product leaves a consistent (vector, eigenvalue, residual) triple to return.
  Tensor<T> v = Tensor<T>::uninitialized(Shape{n});
  Tensor<T> w = Tensor<T>::uninitialized(Shape{n});
  Tensor<T> next = Tensor<T>::uninitialized(Shape{n});
  fill_probe(v, ProbeDistribution::rademacher, o.seed, 0);
  const double inv = 1.0 / std::sqrt(static_cast<double>(n));
  for (Index i = 0; i < n; ++i) v[i] = static_cast<T>(static_cast<double>(v[i]) * inv);
  r.eigenvector = v.clone();
  r.residual = std::numeric_limits<double>::infinity();
  r.status = SpectrumStatus::max_iterations;
  for (int it = 1; it <= o.max_iterations; ++it) {
    A.apply(v, w);
    ++r.products;
    if (!all_finite(w)) {
      r.status = SpectrumStatus::non_finite;
      r.message = "the product A v was not finite at power iteration " + std::to_string(it) + " (" +
                  A.name() + ")" +
                  (it == 1 ? std::string("; no estimate")
                           : "; returning the pair of iteration " + std::to_string(it - 1));
      if (it > 1) r.eigenvector = next;  // holds the vector of iteration it - 1
      return r;
    }
    const double lambda = dot(v, w);
    double s = 0.0;
    for (Index i = 0; i < n; ++i) {
      const double d = static_cast<double>(w[i]) - lambda * static_cast<double>(v[i]);
      s += d * d;
    }
    r.eigenvalue = lambda;
    r.residual = std::sqrt(s);
    r.iterations = it;
    const double wn = norm(w);
    if (r.residual <= o.tolerance * std::abs(lambda) || wn == 0.0) {
      r.status = SpectrumStatus::converged;
      r.message = "residual " + format_number(r.residual) + " <= " + format_number(o.tolerance) +
                  " * |lambda| after " + std::to_string(it) + " iterations";
      r.eigenvector = v;
      return r;
    }
    if (it == o.max_iterations) break;
    for (Index i = 0; i < n; ++i) next[i] = static_cast<T>(static_cast<double>(w[i]) / wn);
    std::swap(v, next);  // next now holds the vector whose pair is recorded in r
  }
  r.eigenvector = v;
  r.message = "max_iterations = " + std::to_string(o.max_iterations) + " reached; residual " +
              format_number(r.residual) + " > " + format_number(o.tolerance) + " * |lambda|";
  return r;
}

template void fill_probe<float>(Tensor<float>&, ProbeDistribution, std::uint64_t, std::uint64_t);
template void fill_probe<double>(Tensor<double>&, ProbeDistribution, std::uint64_t, std::uint64_t);
template class OrthonormalBasis<float>;
template class OrthonormalBasis<double>;
template class LanczosProcess<float>;
template class LanczosProcess<double>;
template LanczosResult<float> lanczos<float>(LinearOperator<float>&, int, const LanczosOptions&,
                                             const Tensor<float>*);
template LanczosResult<double> lanczos<double>(LinearOperator<double>&, int, const LanczosOptions&,
                                               const Tensor<double>*);
template PowerIterationResult<float> power_iteration<float>(LinearOperator<float>&,
                                                            const PowerIterationOptions&);
template PowerIterationResult<double> power_iteration<double>(LinearOperator<double>&,
                                                              const PowerIterationOptions&);

}  // namespace amari::curvature
