// Preconditioned conjugate gradient (Martens 2010, sec. 4.4-4.7; SEED-NOTES 5).
#include <amari/curvature/cg.hpp>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>

#include <amari/curvature/detail/cg_kernels.hpp>
#include <amari/curvature/detail/format.hpp>
#include <amari/curvature/vector_ops.hpp>

namespace amari::curvature {
namespace {

using detail::format_number;

void validate(const CgOptions& o) {
  if (o.max_iterations < 0) {
    throw ValueError("conjugate_gradient: max_iterations = " + std::to_string(o.max_iterations) +
                     ", expected >= 0");
  }
  // Written as !(x >= 0) so that NaN is refused too.
  if (!(o.relative_tolerance >= 0.0)) {
    throw ValueError("conjugate_gradient: relative_tolerance = " +
                     format_number(o.relative_tolerance) + ", expected >= 0");
  }
  if (!(o.progress_epsilon >= 0.0)) {
    throw ValueError("conjugate_gradient: progress_epsilon = " + format_number(o.progress_epsilon) +
                     ", expected >= 0");
  }
}

template <Real T>
void check_vector(const char* what, const Tensor<T>& v, const LinearOperator<T>& A) {
  const Index n = A.size();
  if (!v.defined() || v.rank() != 1 || v.size() != n) {
    throw ShapeError(std::string("conjugate_gradient: ") + what + " has shape " +
                     (v.defined() ? v.shape().str() : std::string("undefined")) +
                     " but operator '" + A.name() + "' has size " + std::to_string(n) +
                     ", expected shape (" + std::to_string(n) + ")");
  }
}

// Martens 2010, sec. 4.4: stop at iteration i when i > k, phi_i < 0 and
// (phi_i - phi_{i-k}) / phi_i < k * epsilon, k = max(10, ceil(0.1 i)). The window grows with i so
// that late, slow but steady progress is not cut off by a fixed-length look-back.
bool progress_stalled(const std::vector<double>& phi, int i, double epsilon) {
  const int k = std::max(10, static_cast<int>(std::ceil(0.1 * i)));
  if (i <= k) return false;
  const double now = phi[static_cast<std::size_t>(i)];
  const double before = phi[static_cast<std::size_t>(i - k)];
  return now < 0.0 && (now - before) / now < k * epsilon;
}

// Steps at which iterates are kept for backtracking: ceil(5 * 1.3^j) (Martens 2010, sec. 4.6).
int keep_step(int j) {
  return static_cast<int>(std::ceil(5.0 * std::pow(1.3, j)));
}

// The system A = B + lambda I split into its parts when A is a DampedOperator (lambda = 0 and
// B = A otherwise). CG then applies B and adds lambda p inside its own residual pass (see
// detail/cg_kernels.hpp), with the values DampedOperator::apply gives (the class is final, so that
// is its whole product): the damped product is never stored, which saves a pass over three
// vectors per iteration; the curvature is p^T B p + lambda p^T p.
template <Real T>
struct DampingSplit {
  LinearOperator<T>& undamped;
  double lambda;
};

template <Real T>
DampingSplit<T> split_damping(LinearOperator<T>& A) {
  if (auto* damped = dynamic_cast<DampedOperator<T>*>(&A)) {
    return {damped->base(), damped->lambda()};
  }
  return {A, 0.0};
}

}  // namespace

const char* to_string(CgStatus status) {
  switch (status) {
    case CgStatus::converged:
      return "converged";
    case CgStatus::max_iterations:
      return "max_iterations";
    case CgStatus::progress_stalled:
      return "progress_stalled";
    case CgStatus::non_positive_curvature:
      return "non_positive_curvature";
    case CgStatus::non_finite:
      return "non_finite";
  }
  return "unknown";
}

template <Real T>
CgResult<T> conjugate_gradient(LinearOperator<T>& A, const Tensor<T>& b, const CgOptions& options,
                               const std::type_identity_t<Tensor<T>>* x0,
                               std::type_identity_t<Preconditioner<T>>* M) {
  validate(options);
  const Index n = A.size();
  check_vector("b", b, A);
  if (x0) check_vector("x0", *x0, A);
  if (M && M->size() != n) {
    throw ShapeError("conjugate_gradient: preconditioner '" + M->name() + "' has size " +
                     std::to_string(M->size()) + " but operator '" + A.name() + "' has size " +
                     std::to_string(n) + ", expected equal sizes");
  }

  CgResult<T> res;
  res.x = Tensor<T>(Shape{n});  // zeros; never aliases b or x0
  Tensor<T>& x = res.x;
  res.model_values.reserve(static_cast<std::size_t>(std::min(options.max_iterations, 1000)) + 1);

  // Ends the solve at x = 0 (or its current content) with phi = 0: the cases where no iterate
  // could be formed. Stores the final iterate like the main exit does.
  auto stop_at_start = [&](CgStatus status, double residual, double relative) {
    res.status = status;
    res.residual_norm = residual;
    res.relative_residual = relative;
    res.model_value = 0.0;
    res.model_values.assign(1, 0.0);
    if (options.keep_iterates) {
      res.iterate_steps.assign(1, 0);
      res.iterates.assign(1, x.clone());
    }
    return res;
  };

  // Work vectors, allocated once (no allocation inside the loop). Without a preconditioner z is
  // r itself (z = M^{-1} r with M = I), sharing storage. Bp receives the products: B p in the
  // iterations (B = A without its damping, see split_damping), A x0 for a warm start.
  Tensor<T> r = Tensor<T>::uninitialized(Shape{n});
  Tensor<T> p = Tensor<T>::uninitialized(Shape{n});
  Tensor<T> Bp = Tensor<T>::uninitialized(Shape{n});
  Tensor<T> z = M ? Tensor<T>::uninitialized(Shape{n}) : r;
  const DampingSplit<T> system = split_damping(A);

  constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
  // r = b and p = b (the first direction of a cold start without M) in the pass that sums b^T b.
  const double bb = detail::cg_start(b, r, p);
  const double bnorm = std::sqrt(bb);
  // A non-finite right-hand side (a NaN gradient) has no meaningful solution: x = 0 is "no step".
  if (!std::isfinite(bnorm)) return stop_at_start(CgStatus::non_finite, kNaN, kNaN);
  if (x0 && !all_finite(*x0)) return stop_at_start(CgStatus::non_finite, bnorm, 1.0);
  // b = 0: the solution of an SPD system is x = 0, whatever the warm start.
  if (bnorm == 0.0) return stop_at_start(CgStatus::converged, 0.0, 0.0);

  double rr = bb;
  if (x0) {
    // Warm start (Martens 2010, sec. 4.5): r_0 = b - A x0, one product.
    copy(*x0, x);
    A.apply(x, Bp);
    ++res.products;
    axpy(-1.0, Bp, r);
    rr = dot(r, r);
  }
  // phi(x) = 0.5 x^T A x - b^T x = -0.5 x^T (b + r) since A x = b - r: no product needed.
  const double phi0 = x0 ? -0.5 * (dot(x, b) + dot(x, r)) : 0.0;
  if (!std::isfinite(rr) || !std::isfinite(phi0)) {
    // The warm-start product failed; x = 0 is the only start whose residual (b) is known.
    x.fill(T(0));
    return stop_at_start(CgStatus::non_finite, bnorm, 1.0);
  }
  double rnorm = std::sqrt(rr);
  const double rnorm0 = rnorm;
  double rz = rr;
  double pp = bb;  // p^T p of the current direction, for the damping term of p^T A p
  res.model_values.push_back(phi0);

  int i = 0;
  CgStatus status = CgStatus::converged;
  auto first_direction = [&]() -> bool {
    if (M) {
      M->apply(r, z);
      rz = dot(r, z);
      if (!std::isfinite(rz)) {
        status = CgStatus::non_finite;
        return false;
      }
      // r^T M^{-1} r <= 0 for r != 0 means M is not positive definite.
      if (rz <= 0.0 && rr > 0.0) {
        status = CgStatus::non_positive_curvature;
        return false;
      }
    }
    if (M || x0) {  // else p = r = b already, and p^T p = b^T b
      copy(z, p);
      pp = dot(p, p);
    }
    return true;
  };

  int keep_j = 0;
  int next_keep = keep_step(0);
  if (first_direction()) {
    for (;;) {
      if (rnorm <= options.relative_tolerance * bnorm) {
        status = CgStatus::converged;
        break;
      }
      if (options.progress_stopping &&
          progress_stalled(res.model_values, i, options.progress_epsilon)) {
        status = CgStatus::progress_stalled;
        break;
      }
      if (i >= options.max_iterations) {
        status = CgStatus::max_iterations;
        break;
      }
      // Besides the product, which also gives p^T B p, an iteration makes two passes over the
      // vectors (the residual step, the direction step: detail/cg_kernels.hpp).
      const double pBp = system.undamped.apply_quadratic_form(p, Bp);
      ++res.products;
      const double pAp = pBp + system.lambda * pp;
      // A NaN or inf in B p that p^T B p does not show (an operator taking the form from fewer
      // numbers than B p) makes r^T r below non-finite, which stops the solve before x moves.
      if (!std::isfinite(pAp)) {
        status = CgStatus::non_finite;
        break;
      }
      // CG requires SPD A; along a direction of non-positive curvature the quadratic model is
      // unbounded below, so return x_i rather than a meaningless step (Martens 2010, sec. 4.4).
      if (pAp <= 0.0) {
        status = CgStatus::non_positive_curvature;
        break;
      }
      const double alpha = rz / pAp;
      if (!std::isfinite(alpha)) {
        status = CgStatus::non_finite;
        break;
      }
      // Recursive residual r_{i+1} = r_i - alpha A p_i: saves the product b - A x_{i+1}; it drifts
      // from the true residual by rounding only. Updated before x so that a non-finite residual
      // leaves x = x_i intact.
      const double rr_new = detail::cg_residual_step(alpha, p, Bp, system.lambda, r);
      double rz_new = rr_new;
      if (M && std::isfinite(rr_new)) {
        M->apply(r, z);
        rz_new = dot(r, z);
      }
      if (!std::isfinite(rr_new) || !std::isfinite(rz_new)) {
        status = CgStatus::non_finite;
        break;
      }
      if (rz_new <= 0.0 && rr_new > 0.0) {
        status = CgStatus::non_positive_curvature;  // M stopped being positive definite
        break;
      }
      const double beta = rz_new / rz;  // Fletcher-Reeves form, exact for CG on SPD A
      // x_{i+1} = x_i + alpha p_i and p_{i+1} = z_{i+1} + beta p_i in one pass, which also sums
      // phi(x) = 0.5 x^T A x - b^T x = -0.5 x^T (b + r) at x_{i+1} (A x = b - r: no product).
      const detail::CgDirectionSums sums = detail::cg_direction_step(alpha, beta, z, r, b, p, x);
      const double phi = -0.5 * (sums.xb + sums.xr);
      if (!std::isfinite(phi)) {
        // The step overflowed T. p_i is overwritten, so x_i cannot be recovered: fall back to the
        // starting point as if no step had been taken.
        status = CgStatus::non_finite;
        if (x0) {
          copy(*x0, x);
        } else {
          x.fill(T(0));
        }
        i = 0;
        res.model_values.resize(1);
        res.iterate_steps.clear();
        res.iterates.clear();
        rnorm = rnorm0;
        break;
      }
      ++i;
      rnorm = std::sqrt(rr_new);
      rr = rr_new;
      rz = rz_new;
      pp = sums.pp;
      res.model_values.push_back(phi);
      if (options.keep_iterates && i == next_keep) {
        res.iterate_steps.push_back(i);
        res.iterates.push_back(x.clone());
        while (next_keep <= i) next_keep = keep_step(++keep_j);
      }
    }
  }

  res.status = status;
  res.iterations = i;
  res.residual_norm = rnorm;
  res.relative_residual = rnorm / bnorm;
  res.model_value = res.model_values.back();
  if (options.keep_iterates && (res.iterate_steps.empty() || res.iterate_steps.back() != i)) {
    res.iterate_steps.push_back(i);
    res.iterates.push_back(x.clone());
  }
  return res;
}

template <Real T>
double quadratic_model_value(LinearOperator<T>& A, const Tensor<T>& b, const Tensor<T>& x) {
  const Index n = A.size();
  if (!b.defined() || b.rank() != 1 || b.size() != n || !x.defined() || x.rank() != 1 ||
      x.size() != n) {
    throw ShapeError(
        "quadratic_model_value: b has shape " +
        (b.defined() ? b.shape().str() : std::string("undefined")) + " and x has shape " +
        (x.defined() ? x.shape().str() : std::string("undefined")) + " but operator '" + A.name() +
        "' has size " + std::to_string(n) + ", expected shape (" + std::to_string(n) + ")");
  }
  Tensor<T> Ax = Tensor<T>::uninitialized(Shape{n});
  A.apply(x, Ax);
  return 0.5 * dot(x, Ax) - dot(b, x);
}

template CgResult<float> conjugate_gradient<float>(LinearOperator<float>&, const Tensor<float>&,
                                                   const CgOptions&, const Tensor<float>*,
                                                   Preconditioner<float>*);
template CgResult<double> conjugate_gradient<double>(LinearOperator<double>&, const Tensor<double>&,
                                                     const CgOptions&, const Tensor<double>*,
                                                     Preconditioner<double>*);
template double quadratic_model_value<float>(LinearOperator<float>&, const Tensor<float>&,
                                             const Tensor<float>&);
template double quadratic_model_value<double>(LinearOperator<double>&, const Tensor<double>&,
                                              const Tensor<double>&);

}  // namespace amari::curvature
