// (Preconditioned) conjugate gradient for A x = b with A symmetric positive definite, using only
// products A v (SEED-NOTES 5; Martens 2010, "Deep learning via Hessian-free optimization",
// sec. 4.4-4.7). In Hessian-free / natural-gradient training A = F + lambda I (or G + lambda I) and
// b = -g, so x is the step and phi(x) below is the quadratic model's predicted change of the loss.
#pragma once

#include <string>
#include <type_traits>
#include <vector>

#include <amari/autodiff/tensor.hpp>
#include <amari/curvature/linear_operator.hpp>

namespace amari::curvature {

/// Stopping rules and diagnostics of conjugate_gradient. Rules are checked before each iteration
/// in this order: converged, progress_stalled, max_iterations.
struct CgOptions {
  /// Upper bound on iterations (= products A p, plus one for a warm start). Must be >= 0.
  int max_iterations = 250;
  /// Stop when ||r|| <= relative_tolerance * ||b|| (r the recursive residual). Must be >= 0;
  /// 0 disables the rule except for an exactly zero residual.
  double relative_tolerance = 1e-6;
  /// Martens 2010, sec. 4.4: on phi(x) = 0.5 x^T A x - b^T x, stop at iteration i when i > k,
  /// phi(x_i) < 0 and (phi(x_i) - phi(x_{i-k})) / phi(x_i) < k * progress_epsilon, with
  /// k = max(10, ceil(0.1 i)): the last k iterations improved phi by less than k * epsilon
  /// relative.
  bool progress_stopping = true;
  /// The epsilon of the progress rule (5e-4 in the paper). Must be >= 0.
  double progress_epsilon = 5e-4;
  /// Store copies of x_i at i = ceil(5 * 1.3^j), j = 0, 1, ... (5, 7, 9, 11, 15, 19, 25, ...) and
  /// the returned x, for CG backtracking (Martens 2010, sec. 4.6). Each copy costs n elements.
  bool keep_iterates = false;
};

/// Why conjugate_gradient stopped.
enum class CgStatus {
  converged,               ///< ||r|| <= relative_tolerance * ||b|| (also b == 0: x = 0).
  max_iterations,          ///< options.max_iterations iterations done.
  progress_stalled,        ///< Martens' relative-progress rule fired: the normal HF stop.
  non_positive_curvature,  ///< p^T A p <= 0 (or r^T M^{-1} r <= 0): A (or M) is not SPD; x is the
                           ///< last iterate before that direction.
  non_finite,  ///< NaN or inf met; x is the last finite iterate (see conjugate_gradient).
};

/// "converged", "max_iterations", "progress_stalled", "non_positive_curvature", "non_finite".
const char* to_string(CgStatus status);

/// What conjugate_gradient returns: a plain value (copies are deep, Tensor's copies aside: clone()
/// x to keep it apart from a copy). As returned it holds: x is finite, has shape (n) and never
/// shares storage with b, x0 or a kept iterate; model_values.size() == iterations + 1;
/// iterate_steps and iterates have one entry each per kept iterate, iterate_steps increases and
/// ends at `iterations` (both empty without keep_iterates); iterations <= products <= iterations
/// + 2, except after a step that overflowed (status non_finite, iterations = 0, see
/// conjugate_gradient). The fields are public for reading; a caller who changes them owns the
/// result.
template <Real T>
struct CgResult {
  /// The solution estimate, shape (n).
  Tensor<T> x;
  CgStatus status = CgStatus::converged;
  /// CG steps taken to reach x (the i of x_i).
  int iterations = 0;
  /// ||r|| of x from the recursive residual r_{i+1} = r_i - alpha_i A p_i (not re-computed as
  /// b - A x, which would cost a product; the two drift apart by rounding only). NaN if b is not
  /// finite.
  double residual_norm = 0.0;
  /// residual_norm / ||b|| (0 when b == 0).
  double relative_residual = 0.0;
  /// phi(x) = 0.5 x^T A x - b^T x, evaluated as -0.5 x^T (b + r) from the recursive residual.
  double model_value = 0.0;
  /// With keep_iterates: the steps i of the stored iterates, increasing; the last is `iterations`.
  std::vector<int> iterate_steps;
  /// With keep_iterates: copies of x_i for each entry of iterate_steps.
  std::vector<Tensor<T>> iterates;
  /// phi(x_i) for i = 0 .. iterations (phi(x_0) = 0 for a cold start), for diagnostics.
  std::vector<double> model_values;
  /// Number of A v products made: iterations, + 1 for a warm start, + 1 if the solve stopped
  /// inside an iteration (non-positive curvature or a non-finite value found after the product).
  /// A step that overflowed resets iterations to 0 but not this count.
  int products = 0;
};

/// Solves A x = b for symmetric positive definite A by (preconditioned) conjugate gradient
/// (Martens 2010, sec. 4.4-4.7; SEED-NOTES 5). Callers of HF / natural gradient pass b = -g.
///  - x0: warm start (Martens 2010, sec. 4.5, e.g. the decayed previous step); costs one product
///    for r_0 = b - A x0. Default x0 = 0 with r_0 = b and no product.
///  - M: optional SPD preconditioner, applied as z = M^{-1} r once per iteration.
/// Dot products are accumulated in double for T = float too, deterministically (the same result
/// for any thread count, see vector_ops.hpp); step scalars are double.
/// Memory: x, r, p, A p (and z with M) are allocated once; no allocation per iteration besides
/// kept iterates and the model_values history. Cost per iteration: one product, one M^{-1} r,
/// and three passes over the vectors: p^T A p; the residual update fused with ||r||^2; the
/// iterate and direction updates fused with the quadratic model's x^T b and x^T r (plus r^T z
/// with M). When A is a DampedOperator B + lambda I, CG applies B and adds lambda p within its
/// first two passes, with the values DampedOperator::apply gives (the damped product is not
/// stored): A.base() is applied, not A.
/// Non-finite values never throw and never reach x (status non_finite):
///  - b or x0 not finite, or the warm-start product A x0 not finite: x = 0, 0 iterations;
///  - A p, a step scalar or the new residual not finite: x = x_i, the last finite iterate (x0 if
///    the first product fails); the solve stops at once, with no further products;
///  - the step x_i + alpha p overflows T: x is reset to the starting point (x0, or 0) with
///    iterations = 0, as if no step had been taken.
/// Throws ShapeError (naming conjugate_gradient, the operator and the shapes) if b, x0 or M do not
/// have size A.size(); ValueError if max_iterations < 0 or a tolerance is negative or NaN. b and x0
/// are only read; A and M are only applied. An exception thrown by A or M (e.g. a failed product)
/// propagates and nothing but A's and M's own state was touched.
template <Real T>
CgResult<T> conjugate_gradient(LinearOperator<T>& A, const Tensor<T>& b,
                               const CgOptions& options = {},
                               const std::type_identity_t<Tensor<T>>* x0 = nullptr,
                               std::type_identity_t<Preconditioner<T>>* M = nullptr);

/// phi(x) = 0.5 x^T A x - b^T x computed directly (one product, dots in double): the exact model
/// value, for checking CgResult::model_value or evaluating candidate steps (Martens 2010,
/// sec. 4.6). ShapeError if b or x do not have shape (A.size()).
template <Real T>
double quadratic_model_value(LinearOperator<T>& A, const Tensor<T>& b, const Tensor<T>& x);

extern template CgResult<float> conjugate_gradient<float>(LinearOperator<float>&,
                                                          const Tensor<float>&, const CgOptions&,
                                                          const Tensor<float>*,
                                                          Preconditioner<float>*);
extern template CgResult<double> conjugate_gradient<double>(LinearOperator<double>&,
                                                            const Tensor<double>&, const CgOptions&,
                                                            const Tensor<double>*,
                                                            Preconditioner<double>*);
extern template double quadratic_model_value<float>(LinearOperator<float>&, const Tensor<float>&,
                                                    const Tensor<float>&);
extern template double quadratic_model_value<double>(LinearOperator<double>&, const Tensor<double>&,
                                                     const Tensor<double>&);

}  // namespace amari::curvature
