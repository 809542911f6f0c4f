// Looking inside a curvature matrix (issue 11): extreme eigenpairs of any symmetric
// LinearOperator (GGN, Fisher, empirical Fisher, Hessian, damped or not) by the Lanczos process
// with full reorthogonalization, and the dominant eigenvalue by power iteration. Everything here
// uses only products A v; nothing of size n x n is formed.
//
// Lanczos (Golub, Van Loan, "Matrix Computations", 4th ed., sec. 10.1): from a unit q_1 the
// process builds an orthonormal basis Q_j = [q_1 .. q_j] of the Krylov space
// span{q_1, A q_1, .., A^{j-1} q_1} and a symmetric tridiagonal T_j = Q_j^T A Q_j with
//   A Q_j = Q_j T_j + beta_j q_{j+1} e_j^T.                                  (Lanczos relation)
// If T_j s = theta s (||s|| = 1), the Ritz pair (theta, y = Q_j s) has the residual
//   ||A y - theta y|| = beta_j |e_j^T s|,
// which is what RitzPairs::residual_estimates reports (Parlett, "The Symmetric Eigenvalue
// Problem", sec. 13.2). In floating point the relation holds up to about eps(T) ||A||; with
// LanczosOptions::verify_residuals the true residual is measured with one more product per pair.
//
// Full reorthogonalization: after the three-term recurrence, each new vector is orthogonalized
// against the whole basis by classical Gram-Schmidt, with a second pass when the first cancelled
// most of it (the DGKS criterion, Daniel, Gragg, Kaufman, Stewart 1976). "Twice is enough"
// (Parlett 1980, sec. 6.9; Giraud, Langou, Rozloznik 2005): Q_j stays orthonormal to working
// precision, so no spurious copies of converged eigenvalues ("ghosts") appear. Cost: 2 j n
// multiply-adds per step (4 j n when the second pass runs) on top of the product; the pass is
// memory bound (it streams the j basis vectors twice).
#pragma once

#include <cstdint>
#include <string>
#include <type_traits>
#include <vector>

#include <amari/autodiff/tensor.hpp>
#include <amari/curvature/linear_operator.hpp>

namespace amari::curvature {

/// How an iterative spectral method (Lanczos, power iteration, stochastic Lanczos quadrature,
/// the trace estimators) ended. Results are always finite; the status says how far to trust them.
enum class SpectrumStatus {
  converged,           ///< Every requested quantity was computed to the requested tolerance
                       ///< (for the stochastic estimators: every probe was used).
  max_iterations,      ///< The iteration cap came first; results are the best so far, with their
                       ///< honest residuals.
  invariant_subspace,  ///< beta_j ~ 0 before n steps: the Krylov space of the start vector is
                       ///< invariant. Its Ritz pairs are eigenpairs, but eigenvalues whose
                       ///< eigenvectors are orthogonal to the start vector are missing.
  non_finite,          ///< A product held NaN or inf (the message names the iteration); results
                       ///< are from the products before it.
};

/// "converged", "max_iterations", "invariant_subspace", "non_finite".
const char* to_string(SpectrumStatus status);

/// Distribution of the entries of random probe vectors.
enum class ProbeDistribution {
  rademacher,  ///< +1 or -1 with probability 1/2 each.
  gaussian,    ///< Standard normal.
};

/// "rademacher" or "gaussian".
const char* to_string(ProbeDistribution distribution);

/// Overwrites v (any shape) with random probe number `index` for `seed`: iid entries of the given
/// distribution, drawn from nn::Rng(seed, index), so probe `index` is the same whatever other
/// probes were drawn, on any platform and thread count. Cost: n draws.
template <Real T>
void fill_probe(Tensor<T>& v, ProbeDistribution distribution, std::uint64_t seed,
                std::uint64_t index);

/// The eigendecomposition of a symmetric tridiagonal matrix (what Lanczos needs of T_j).
struct TridiagonalEigen {
  /// Eigenvalues theta_1 <= .. <= theta_m.
  std::vector<double> values;
  /// first[i] = first component of the unit eigenvector of values[i] (SLQ weights are its
  /// square).
  std::vector<double> first;
  /// last[i] = last component of the unit eigenvector of values[i] (Lanczos residuals).
  std::vector<double> last;
  /// With vectors requested: m x m row-major, vectors[r * m + i] = component r of eigenvector i;
  /// empty otherwise.
  std::vector<double> vectors;
};

/// Eigenvalues (and the first and last rows of the eigenvector matrix, or all of it) of the
/// symmetric tridiagonal matrix with the given diagonal (m) and off-diagonal (m - 1), by the
/// implicit QL algorithm with Wilkinson shifts, in double (Golub, Van Loan, sec. 8.3; "tqli" of
/// Numerical Recipes). Cost: about 30 m^2 flops for values with first and last rows, plus
/// about 3 m^3 for all vectors. ShapeError if off_diagonal does not have m - 1 entries (none for
/// m = 0); ValueError if an entry is not finite.
TridiagonalEigen symmetric_tridiagonal_eigen(const std::vector<double>& diagonal,
                                             const std::vector<double>& off_diagonal, bool vectors);

/// An orthonormal set q_0 .. q_{k-1} of rank-1 vectors of length n, grown one vector at a time
/// (the Lanczos basis, the range finder of Hutch++). Vectors are stored in T; all dot products and
/// linear combinations are accumulated in double. Reductions split n into blocks that depend on n
/// only, so results are bit-identical for any thread count; long vectors (>= 2^16) are processed
/// by OpenMP threads.
///
/// Invariants: size() <= the vectors held; each of the first size() vectors has shape (n) and is
/// unit-norm and orthogonal to the others to working precision (append() is the only way in, and
/// it refuses a zero or non-finite norm). A copy is deep (its own vectors), so two copies grow
/// apart without touching each other's storage; operator[] hands out read-only tensors.
template <Real T>
class OrthonormalBasis {
 public:
  /// An empty basis of vectors of length n >= 0 (ValueError otherwise).
  explicit OrthonormalBasis(Index n);
  /// Deep copy: the vectors are cloned (Tensor copies alone would share them).
  OrthonormalBasis(const OrthonormalBasis& other)
      : n_(other.n_), size_(other.size_), partial_(other.partial_), projection_(other.projection_),
        passes_(other.passes_) {
    vectors_.reserve(other.vectors_.size());
    for (const Tensor<T>& v : other.vectors_) vectors_.push_back(v.clone());
  }
  OrthonormalBasis& operator=(const OrthonormalBasis& other) {
    if (this != &other) *this = OrthonormalBasis(other);
    return *this;
  }
  OrthonormalBasis(OrthonormalBasis&&) noexcept = default;
  OrthonormalBasis& operator=(OrthonormalBasis&&) noexcept = default;
  /// n, the length of the vectors.
  Index length() const { return n_; }
  /// The number of vectors k.
  int size() const { return size_; }
  /// Vector i, shape (n).
  const Tensor<T>& operator[](int i) const { return vectors_[static_cast<std::size_t>(i)]; }
  /// w <- (I - Q Q^T) w by classical Gram-Schmidt, repeated once more when the first pass left
  /// less than 1/sqrt(2) of ||w|| (DGKS criterion; twice is enough: the result is orthogonal to
  /// the basis to working precision). If `coefficients` is given it receives the k projections
  /// Q^T w summed over the passes (the Arnoldi column). Returns ||w|| after the projection.
  /// Cost: 2 k n multiply-adds per pass (1 or 2 passes, see passes()) and 2 passes over w for
  /// norms.
  double orthogonalize(Tensor<T>& w, std::vector<double>* coefficients = nullptr);
  /// Gram-Schmidt passes made by the last orthogonalize() (0, 1 or 2), for diagnostics.
  int passes() const { return passes_; }
  /// Appends w / norm as q_k (norm > 0 and finite, ValueError otherwise; the caller has made w
  /// orthogonal to the basis). Reuses storage released by clear().
  void append(const Tensor<T>& w, double norm);
  /// out = sum_i c_i q_i over the first c.size() <= k vectors (ShapeError otherwise), accumulated
  /// in double. Cost: 2 c.size() n flops.
  void combine(const std::vector<double>& c, Tensor<T>& out) const;
  /// Removes every vector, keeping their storage for the next append().
  void clear() { size_ = 0; }

 private:
  Index n_;
  int size_ = 0;
  std::vector<Tensor<T>> vectors_;  // the first size_ are the basis; the rest is spare storage
  std::vector<double> partial_;     // per-block partial dot products, reused
  std::vector<double> projection_;  // Q^T w of one pass, reused
  int passes_ = 0;

  // One Gram-Schmidt pass: w <- w - Q (Q^T w), adding Q^T w to *coefficients if given.
  void project_out(Tensor<T>& w, std::vector<double>* coefficients);
};

/// The end(s) of the spectrum Lanczos reports.
enum class SpectrumEnd {
  largest,   ///< The k algebraically largest eigenvalues.
  smallest,  ///< The k algebraically smallest eigenvalues.
  both,      ///< Both: k largest and k smallest.
};

/// Options of lanczos().
struct LanczosOptions {
  /// Which end(s) of the spectrum to return.
  SpectrumEnd which = SpectrumEnd::largest;
  /// Upper bound m on the Lanczos steps (= operator products, Krylov dimension); >= 1. Clamped to
  /// n. Memory: m + 1 vectors of n elements.
  int max_iterations = 100;
  /// Stop once every wanted Ritz pair has beta_j |e_j^T s| <= tolerance * ||T_j||_est, where
  /// ||T_j||_est = max_i ||A q_i|| (a lower bound on ||A||_2). >= 0; 0 runs to max_iterations.
  double tolerance = 1e-8;
  /// Declare an invariant subspace when beta_j <= breakdown_tolerance * ||T_j||_est; >= 0.
  /// 0 means 10 sqrt(n) eps(T), the size of the rounding error of one product.
  double breakdown_tolerance = 0.0;
  /// Also compute ||A y - theta y|| for every returned pair: one more product per pair.
  bool verify_residuals = false;
  /// Seed of the Rademacher start vector (used when no start vector is passed).
  std::uint64_t seed = 0;
};

/// Ritz approximations to eigenpairs of A from one end of its spectrum.
template <Real T>
struct RitzPairs {
  /// Ritz values theta_i: descending for the largest end, ascending for the smallest.
  std::vector<double> eigenvalues;
  /// Ritz vectors y_i = Q_j s_i, unit norm, flat (n).
  std::vector<Tensor<T>> eigenvectors;
  /// beta_j |e_j^T s_i| from the Lanczos relation: ||A y_i - theta_i y_i|| in exact arithmetic
  /// (rounding adds about eps(T) ||A||; beta_j is itself of that size once the Krylov space is
  /// the whole space or invariant).
  std::vector<double> residual_estimates;
  /// With verify_residuals: ||A y_i - theta_i y_i|| measured with one product (in double);
  /// empty otherwise.
  std::vector<double> residuals;
};

/// What lanczos() returns. All numbers are finite.
template <Real T>
struct LanczosResult {
  /// The k largest Ritz pairs (with which = largest or both; empty otherwise).
  RitzPairs<T> largest;
  /// The k smallest Ritz pairs (with which = smallest or both; empty otherwise). With both, a
  /// pair may appear in both lists when 2k exceeds the Krylov dimension.
  RitzPairs<T> smallest;
  /// converged: all wanted pairs met the tolerance, or the Krylov space is the whole space (j = n).
  SpectrumStatus status = SpectrumStatus::converged;
  /// What happened, e.g. "invariant subspace at iteration 2 (beta = 1e-17)".
  std::string message;
  /// Lanczos steps j taken (the dimension of the Krylov space, the size of T_j).
  int iterations = 0;
  /// Operator products made (j, + 1 for a failed product, + one per pair verified).
  int products = 0;
  /// ||T_j||_est = max_i ||A q_i||, a lower bound on ||A||_2 (0 if no step completed).
  double norm_estimate = 0.0;
  /// T_j: diagonal alpha_1..alpha_j and beta_1..beta_j (beta_i couples q_i and q_{i+1}; the last
  /// one, beta_j, is the norm of the residual of the Lanczos relation).
  std::vector<double> alpha, beta;
};

/// The k largest and/or smallest eigenpairs of a symmetric A by Lanczos with full
/// reorthogonalization (see the top of this file). Starts from `start` (any nonzero finite vector
/// of shape (n)) or from a Rademacher vector drawn from options.seed. Checks convergence after
/// every step from the eigenvalues of T_j (O(j^2), negligible). k > n is allowed and returns n
/// pairs; n = 0 returns no pairs with status converged.
/// Cost: j products, about j^2 n multiply-adds of reorthogonalization (memory bound: step i
/// streams the i basis vectors twice), (j + 1) n elements of memory, plus k products with
/// verify_residuals.
/// Never throws for a misbehaving operator: a NaN/inf product ends the run with status non_finite
/// (message naming the iteration) and returns the Ritz pairs of the steps before it.
/// ValueError (naming lanczos and the value) if k <= 0, max_iterations < 1, a tolerance is
/// negative or NaN, or the start vector is zero or not finite; ShapeError if start is not (n).
/// A must be symmetric; this is not checked (curvature::verify does).
template <Real T>
LanczosResult<T> lanczos(LinearOperator<T>& A, int k, const LanczosOptions& options = {},
                         const std::type_identity_t<Tensor<T>>* start = nullptr);

/// The Lanczos process one step at a time, for methods built on it (lanczos(), stochastic
/// Lanczos quadrature). Holds the basis Q (n x (j + 1), in T) and T_j. Borrows A, which must
/// outlive it.
///
/// Invariants: alpha() and beta() have steps() = j entries each, all finite; the basis holds j + 1
/// vectors while the process can continue and j or j + 1 once it ended (the last step may end it
/// before q_{j+1} is appended); once ended(), step() does nothing until restart(). A step whose
/// product throws (an exception from A, not a NaN) leaves the process as it was before the call,
/// and products() unchanged. A copy is deep (its own basis) and borrows the same A.
template <Real T>
class LanczosProcess {
 public:
  /// breakdown_tolerance as in LanczosOptions (0: 10 sqrt(n) eps(T)); ValueError if negative/NaN.
  LanczosProcess(LinearOperator<T>& A, double breakdown_tolerance = 0.0);
  /// Deep copy (the basis and scratch are cloned); both copies borrow the same operator.
  LanczosProcess(const LanczosProcess& other)
      : a_(other.a_), breakdown_(other.breakdown_), basis_(other.basis_), w_(other.w_.clone()),
        alpha_(other.alpha_), beta_(other.beta_), coefficients_(other.coefficients_),
        norm_estimate_(other.norm_estimate_), products_(other.products_), status_(other.status_),
        message_(other.message_), ended_(other.ended_) {}
  LanczosProcess& operator=(const LanczosProcess& other) {
    if (this != &other) *this = LanczosProcess(other);
    return *this;
  }
  LanczosProcess(LanczosProcess&&) noexcept = default;
  LanczosProcess& operator=(LanczosProcess&&) noexcept = default;
  /// (Re)starts from q_1 = start / ||start||, keeping the basis storage. ShapeError if start is
  /// not (n); ValueError if it is zero or not finite. For n = 0 the process is over at once.
  void restart(const Tensor<T>& start);
  /// One step j -> j + 1: w = A q_j - beta_{j-1} q_{j-1} - alpha_j q_j, then Gram-Schmidt
  /// against Q_j (OrthonormalBasis::orthogonalize), beta_j = ||w||, q_{j+1} = w / beta_j. Returns
  /// true if the process can continue. It ends (returns false, and further calls do nothing) when j
  /// = n (status converged), beta_j is below the breakdown tolerance (invariant_subspace), or the
  /// product or a coefficient is not finite (non_finite: alpha and beta keep the steps before).
  /// Cost: one product and 2 j n multiply-adds.
  bool step();
  /// Steps completed j (= size of T_j).
  int steps() const { return static_cast<int>(alpha_.size()); }
  /// Products made since the last restart (steps, + 1 if a product failed).
  int products() const { return products_; }
  /// Diagonal of T_j (j entries).
  const std::vector<double>& alpha() const { return alpha_; }
  /// beta_1 .. beta_j (j entries): the first j - 1 are the off-diagonal of T_j, the last is the
  /// norm of the residual of the Lanczos relation.
  const std::vector<double>& beta() const { return beta_; }
  /// The Lanczos vectors q_1 .. (j or j + 1 of them).
  const OrthonormalBasis<T>& basis() const { return basis_; }
  /// max_i ||A q_i||, from the coefficients (a lower bound on ||A||_2).
  double norm_estimate() const { return norm_estimate_; }
  /// converged while running or after reaching j = n; see step() for the others.
  SpectrumStatus status() const { return status_; }
  /// Why the process ended ("" while it can continue).
  const std::string& message() const { return message_; }
  /// True once step() has returned false (or n = 0).
  bool ended() const { return ended_; }

 private:
  void end(SpectrumStatus status, std::string message);

  LinearOperator<T>* a_;
  double breakdown_;
  OrthonormalBasis<T> basis_;
  Tensor<T> w_;
  std::vector<double> alpha_, beta_, coefficients_;
  double norm_estimate_ = 0.0;
  int products_ = 0;
  SpectrumStatus status_ = SpectrumStatus::converged;
  std::string message_;
  bool ended_ = true;
};

/// Options of power_iteration().
struct PowerIterationOptions {
  /// Upper bound on iterations (= products); >= 1.
  int max_iterations = 1000;
  /// Stop when ||A v - lambda v|| <= tolerance * |lambda| for the current unit v and its Rayleigh
  /// quotient lambda. > 0.
  double tolerance = 1e-6;
  /// Seed of the Rademacher start vector.
  std::uint64_t seed = 0;
};

/// What power_iteration() returns: an approximate eigenpair of largest |eigenvalue|.
template <Real T>
struct PowerIterationResult {
  /// lambda = v^T A v, the Rayleigh quotient of `eigenvector` (0 if no product succeeded).
  double eigenvalue = 0.0;
  /// The unit vector v, shape (n).
  Tensor<T> eigenvector;
  /// ||A v - lambda v|| for this v, from the same product (+inf if no product succeeded).
  double residual = 0.0;
  /// Iterations done (= successful products).
  int iterations = 0;
  /// Products made (iterations, + 1 for a failed product).
  int products = 0;
  /// converged, max_iterations (e.g. two dominant eigenvalues +-lambda, or a small gap), or
  /// non_finite (the message names the iteration; the result is from the iteration before).
  SpectrumStatus status = SpectrumStatus::converged;
  /// What happened.
  std::string message;
};

/// The eigenvalue of largest magnitude of A and its eigenvector by power iteration
/// (v <- A v / ||A v||) from a Rademacher start. Converges at rate |lambda_2 / lambda_1| per
/// product; Lanczos is faster for the same products, power iteration needs 2 vectors of memory.
/// A v = 0 ends with eigenvalue 0, converged. n = 0: eigenvalue 0, empty eigenvector, converged.
/// Cost: one product and 4 passes over n per iteration. ValueError if max_iterations < 1 or
/// tolerance <= 0 or NaN.
template <Real T>
PowerIterationResult<T> power_iteration(LinearOperator<T>& A,
                                        const PowerIterationOptions& options = {});

extern template void fill_probe<float>(Tensor<float>&, ProbeDistribution, std::uint64_t,
                                       std::uint64_t);
extern template void fill_probe<double>(Tensor<double>&, ProbeDistribution, std::uint64_t,
                                        std::uint64_t);
extern template class OrthonormalBasis<float>;
extern template class OrthonormalBasis<double>;
extern template class LanczosProcess<float>;
extern template class LanczosProcess<double>;
extern template LanczosResult<float> lanczos<float>(LinearOperator<float>&, int,
                                                    const LanczosOptions&, const Tensor<float>*);
extern template LanczosResult<double> lanczos<double>(LinearOperator<double>&, int,
                                                      const LanczosOptions&, const Tensor<double>*);
extern template PowerIterationResult<float> power_iteration<float>(LinearOperator<float>&,
                                                                   const PowerIterationOptions&);
extern template PowerIterationResult<double> power_iteration<double>(LinearOperator<double>&,
                                                                     const PowerIterationOptions&);

}  // namespace amari::curvature
