// Composite, dense and diagonal operators; diagonal preconditioners (Martens 2010, sec. 4.7).
#include <amari/curvature/linear_operator.hpp>

#include <cmath>
#include <cstdio>
#include <utility>

#include <amari/autodiff/kernels/vector.hpp>
#include <amari/curvature/detail/format.hpp>
#include <amari/curvature/vector_ops.hpp>

namespace amari::curvature {
namespace {

using detail::format_number;

template <Real T>
std::string describe(const Tensor<T>& t) {
  return t.defined() ? t.shape().str() : std::string("undefined");
}

template <Real T>
Operand<T> require_operand(Operand<T> p, const char* who) {
  if (p.get() == nullptr) throw ValueError(std::string(who) + ": operator is null, expected a LinearOperator");
  return p;
}

// Finiteness checks compare the stored T, so a double that overflows float is caught too.
template <Real T>
void require_finite(const Tensor<T>& t, const std::string& who, const char* what) {
  const T* p = t.data();
  for (Index i = 0; i < t.size(); ++i) {
    if (!std::isfinite(p[i])) {
      throw ValueError(who + ": " + what + " entry " + std::to_string(i) + " is " +
                       format_number(static_cast<double>(p[i])) + ", expected a finite value");
    }
  }
}

}  // namespace

namespace {

// Shared by both overloads; `owner` is only asked for its name when the check fails.
template <Real T, class Owner>
void check_vectors(const Owner& owner, const char* kind, const Tensor<T>& in,
                   const Tensor<T>& out) {
  const Index n = owner.size();
  const bool in_ok = in.defined() && in.rank() == 1 && in.size() == n;
  const bool out_ok = out.defined() && out.rank() == 1 && out.size() == n;
  if (!in_ok || !out_ok) {
    throw ShapeError(std::string(kind) + " '" + owner.name() + "' apply: input has shape " +
                     describe(in) + " and output has shape " + describe(out) +
                     ", expected rank-1 vectors of shape (" + std::to_string(n) + ")");
  }
  // In-place products would read elements of v after overwriting them (dense rows, A v + lambda v).
  if (n > 0 && in.same_storage(out)) {
    throw ValueError(std::string(kind) + " '" + owner.name() +
                     "' apply: output shares storage with the input, expected distinct vectors");
  }
}

}  // namespace

template <Real T>
void check_apply_arguments(const LinearOperator<T>& op, const Tensor<T>& v, const Tensor<T>& out) {
  check_vectors(op, "operator", v, out);
}

template <Real T>
void check_apply_arguments(const Preconditioner<T>& m, const Tensor<T>& r, const Tensor<T>& z) {
  check_vectors(m, "preconditioner", r, z);
}

// ---- DampedOperator
// -------------------------------------------------------------------------------

template <Real T>
DampedOperator<T>::DampedOperator(Operand<T> base, double lambda)
    : base_(require_operand(std::move(base), "DampedOperator")), lambda_(0.0) {
  set_lambda(lambda);
}

template <Real T>
void DampedOperator<T>::set_lambda(double lambda) {
  // lambda < 0 could make A + lambda I indefinite and break CG (SEED-NOTES 5 needs lambda >= 0).
  if (!(lambda >= 0.0) || !std::isfinite(lambda)) {
    throw ValueError("DampedOperator(" + base_->name() + "): damping lambda = " +
                     format_number(lambda) + ", expected a finite value >= 0");
  }
  lambda_ = lambda;
}

template <Real T>
void DampedOperator<T>::apply(const Tensor<T>& v, Tensor<T>& out) {
  check_apply_arguments(*this, v, out);
  base_->apply(v, out);
  if (lambda_ != 0.0) axpy(lambda_, v, out);
}

template <Real T>
std::string DampedOperator<T>::name() const {
  return base_->name() + " + " + format_number(lambda_) + " I";
}

// ---- ScaledOperator
// -------------------------------------------------------------------------------

template <Real T>
ScaledOperator<T>::ScaledOperator(Operand<T> base, double c)
    : base_(require_operand(std::move(base), "ScaledOperator")), c_(c) {
  if (!std::isfinite(c)) {
    throw ValueError("ScaledOperator(" + base_->name() + "): scale c = " + format_number(c) +
                     ", expected a finite value");
  }
}

template <Real T>
void ScaledOperator<T>::apply(const Tensor<T>& v, Tensor<T>& out) {
  check_apply_arguments(*this, v, out);
  base_->apply(v, out);
  scal(c_, out);
}

template <Real T>
std::string ScaledOperator<T>::name() const {
  return format_number(c_) + " * (" + base_->name() + ")";
}

// ---- SumOperator
// ----------------------------------------------------------------------------------

template <Real T>
SumOperator<T>::SumOperator(Operand<T> a, Operand<T> b)
    : a_(require_operand(std::move(a), "SumOperator")),
      b_(require_operand(std::move(b), "SumOperator")) {
  if (a_->size() != b_->size()) {
    throw ShapeError("SumOperator: '" + a_->name() + "' has size " + std::to_string(a_->size()) +
                     " but '" + b_->name() + "' has size " + std::to_string(b_->size()) +
                     ", expected equal sizes");
  }
}

template <Real T>
void SumOperator<T>::apply(const Tensor<T>& v, Tensor<T>& out) {
  check_apply_arguments(*this, v, out);
  // Allocated once; CG calls apply every iteration and must not allocate per iteration.
  if (!scratch_.defined()) scratch_ = Tensor<T>::uninitialized(Shape{size()});
  a_->apply(v, out);
  b_->apply(v, scratch_);
  axpy(1.0, scratch_, out);
}

template <Real T>
std::string SumOperator<T>::name() const {
  // Appended piecewise: GCC 12 reports a false -Wrestrict on chained operator+ here.
  std::string s = "(";
  s += a_->name();
  s += ") + (";
  s += b_->name();
  s += ")";
  return s;
}

// ---- DenseOperator
// --------------------------------------------------------------------------------

template <Real T>
DenseOperator<T>::DenseOperator(const Tensor<T>& matrix) : n_(0) {
  if (!matrix.defined() || matrix.rank() != 2 || matrix.dim(0) != matrix.dim(1)) {
    throw ShapeError("DenseOperator: matrix has shape " + describe(matrix) +
                     ", expected a square (n, n) matrix");
  }
  n_ = matrix.dim(0);
  require_finite(matrix, "DenseOperator", "matrix");
  matrix_ = matrix.clone();
}

template <Real T>
void DenseOperator<T>::apply(const Tensor<T>& v, Tensor<T>& out) {
  check_apply_arguments(*this, v, out);
  const Index n = n_;
  const T* m = matrix_.data();
  const T* x = v.data();
  T* y = out.data();
#pragma omp parallel for schedule(static) if (n * n >= kernels::kParallelElements)
  for (Index i = 0; i < n; ++i) {
    const T* row = m + i * n;
    double s = 0.0;
#pragma omp simd reduction(+ : s)
    for (Index j = 0; j < n; ++j) s += static_cast<double>(row[j]) * static_cast<double>(x[j]);
    y[i] = static_cast<T>(s);
  }
}

template <Real T>
std::string DenseOperator<T>::name() const {
  return "Dense(" + std::to_string(n_) + " x " + std::to_string(n_) + ")";
}

// ---- DiagonalOperator
// -----------------------------------------------------------------------------

template <Real T>
DiagonalOperator<T>::DiagonalOperator(const Tensor<T>& diagonal) {
  if (!diagonal.defined() || diagonal.rank() != 1) {
    throw ShapeError("DiagonalOperator: diagonal has shape " + describe(diagonal) +
                     ", expected a rank-1 vector");
  }
  require_finite(diagonal, "DiagonalOperator", "diagonal");
  d_ = diagonal.clone();
}

template <Real T>
void DiagonalOperator<T>::apply(const Tensor<T>& v, Tensor<T>& out) {
  const Index n = d_.size();
  check_apply_arguments(*this, v, out);
  const T* d = d_.data();
  const T* x = v.data();
  T* y = out.data();
#pragma omp parallel for simd schedule(static) if (n >= kernels::kParallelElements)
  for (Index i = 0; i < n; ++i) y[i] = d[i] * x[i];
}

template <Real T>
std::string DiagonalOperator<T>::name() const {
  return "Diagonal(" + std::to_string(d_.size()) + ")";
}

// ---- DiagonalPreconditioner
// -----------------------------------------------------------------------

template <Real T>
DiagonalPreconditioner<T>::DiagonalPreconditioner(const Tensor<T>& m) {
  if (!m.defined() || m.rank() != 1) {
    throw ShapeError("DiagonalPreconditioner: diagonal has shape " + describe(m) +
                     ", expected a rank-1 vector");
  }
  // M must be SPD for preconditioned CG: a zero or negative entry breaks z = r / m.
  const T* p = m.data();
  for (Index i = 0; i < m.size(); ++i) {
    if (!(p[i] > T(0)) || !std::isfinite(p[i])) {
      throw ValueError("DiagonalPreconditioner: entry " + std::to_string(i) + " is " +
                       format_number(static_cast<double>(p[i])) + ", expected a finite value > 0");
    }
  }
  m_ = m.clone();
}

template <Real T>
void DiagonalPreconditioner<T>::apply(const Tensor<T>& r, Tensor<T>& z) {
  const Index n = m_.size();
  check_apply_arguments(*this, r, z);
  const T* m = m_.data();
  const T* x = r.data();
  T* y = z.data();
#pragma omp parallel for simd schedule(static) if (n >= kernels::kParallelElements)
  for (Index i = 0; i < n; ++i) y[i] = x[i] / m[i];
}

template <Real T>
std::string DiagonalPreconditioner<T>::name() const {
  return "DiagonalPreconditioner(" + std::to_string(m_.size()) + ")";
}

template <Real T>
DiagonalPreconditioner<T> martens_preconditioner(const Tensor<T>& squared_gradient_sums,
                                                 double lambda, double alpha) {
  const std::string who = "martens_preconditioner";
  if (!squared_gradient_sums.defined() || squared_gradient_sums.rank() != 1) {
    throw ShapeError(who + ": squared_gradient_sums has shape " + describe(squared_gradient_sums) +
                     ", expected a rank-1 vector");
  }
  if (!(lambda >= 0.0) || !std::isfinite(lambda)) {
    throw ValueError(who + ": lambda = " + format_number(lambda) +
                     ", expected a finite value >= 0");
  }
  if (!(alpha >= 0.0) || !std::isfinite(alpha)) {
    throw ValueError(who + ": alpha = " + format_number(alpha) + ", expected a finite value >= 0");
  }
  const Index n = squared_gradient_sums.size();
  Tensor<T> m = Tensor<T>::uninitialized(Shape{n});
  const T* s = squared_gradient_sums.data();
  for (Index i = 0; i < n; ++i) {
    const double si = static_cast<double>(s[i]);
    if (!(si >= 0.0) || !std::isfinite(si)) {
      throw ValueError(who + ": squared-gradient sum " + std::to_string(i) + " is " +
                       format_number(si) + ", expected a finite value >= 0");
    }
    // Martens 2010, sec. 4.7: M = (diag(sum_i g_i^2) + lambda I)^alpha.
    const T mi = static_cast<T>(std::pow(si + lambda, alpha));
    if (!(mi > T(0)) || !std::isfinite(mi)) {
      throw ValueError(who + ": entry " + std::to_string(i) + " = (" + format_number(si) + " + " +
                       format_number(lambda) + ")^" + format_number(alpha) + " is " +
                       format_number(static_cast<double>(mi)) +
                       " in this precision, expected a finite value > 0 (increase lambda)");
    }
    m[i] = mi;
  }
  return DiagonalPreconditioner<T>(m);
}

template class DampedOperator<float>;
template class DampedOperator<double>;
template class ScaledOperator<float>;
template class ScaledOperator<double>;
template class SumOperator<float>;
template class SumOperator<double>;
template class DenseOperator<float>;
template class DenseOperator<double>;
template class DiagonalOperator<float>;
template class DiagonalOperator<double>;
template class DiagonalPreconditioner<float>;
template class DiagonalPreconditioner<double>;
template void check_apply_arguments<float>(const LinearOperator<float>&, const Tensor<float>&,
                                           const Tensor<float>&);
template void check_apply_arguments<double>(const LinearOperator<double>&, const Tensor<double>&,
                                            const Tensor<double>&);
template void check_apply_arguments<float>(const Preconditioner<float>&, const Tensor<float>&,
                                           const Tensor<float>&);
template void check_apply_arguments<double>(const Preconditioner<double>&, const Tensor<double>&,
                                            const Tensor<double>&);
template DiagonalPreconditioner<float> martens_preconditioner<float>(const Tensor<float>&, double,
                                                                     double);
template DiagonalPreconditioner<double> martens_preconditioner<double>(const Tensor<double>&,
                                                                       double, double);

}  // namespace amari::curvature
