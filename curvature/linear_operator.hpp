// Matrix-free linear operators and preconditioners: the interface conjugate gradient solves with
// (SEED-NOTES 4 and 5). Curvature products (Fisher, GGN, Hessian) implement LinearOperator; the
// composites here build the damped system F + lambda I of SEED-NOTES 5 without forming a matrix.
//
// Ownership: a composite holds each operand as an Operand, which either shares ownership (built
// from a std::shared_ptr: the composite keeps it alive, and one operand may serve several
// composites) or borrows (built from a reference to an operator the caller owns, on the stack or
// as a member: the caller keeps it alive while the composite is used). Which one is visible at the
// call site: DampedOperator<T>(ggn, lambda) or DampedOperator<T>(borrowed(ggn), lambda) borrows
// ggn, DampedOperator<T>(ptr, lambda) or damped(ptr, lambda) shares *ptr. A temporary cannot be borrowed (it does not bind).
//
// Thread safety: apply() is non-const because products may keep scratch buffers (SumOperator does,
// curvature products cache forward passes), so one operator must not be applied from two threads
// at once.
#pragma once

#include <concepts>
#include <memory>
#include <string>
#include <utility>

#include <amari/autodiff/tensor.hpp>
#include <amari/curvature/vector_ops.hpp>

namespace amari::curvature {

/// A square linear map R^n -> R^n applied matrix-free: out = A v for rank-1 v, out of shape (n).
/// Implementations: Fisher/GGN/Hessian products, DenseOperator (tests, small problems),
/// DiagonalOperator, and the composites below.
template <Real T>
class LinearOperator {
 public:
  using value_type = T;

  virtual ~LinearOperator() = default;
  /// n, the dimension of the domain and of the range.
  virtual Index size() const = 0;
  /// out = A v. v and out must be rank-1 of length n and must not share storage; out is
  /// preallocated by the caller and overwritten. Non-const: products may cache buffers.
  virtual void apply(const Tensor<T>& v, Tensor<T>& out) = 0;
  /// out = A v as apply() gives it, and returns the quadratic form v^T A v, summed in double.
  /// This default applies and then reads v and out once more (dot()); an operator that knows
  /// the form more cheaply overrides it (the J^T M J operators take it from their logit-space
  /// tangents: jtmj_operator.hpp). Conjugate gradient asks for p^T A p this way.
  virtual double apply_quadratic_form(const Tensor<T>& v, Tensor<T>& out) {
    apply(v, out);
    return dot(v, out);
  }
  /// Human-readable description, e.g. "GGN(softmax-CE, N=128)", used in reports and errors.
  virtual std::string name() const = 0;
};

/// A symmetric positive definite M, applied as z = M^{-1} r (preconditioned CG, Martens 2010,
/// sec. 4.7). Implementations: DiagonalPreconditioner; later block or Kronecker-factored ones.
template <Real T>
class Preconditioner {
 public:
  using value_type = T;

  virtual ~Preconditioner() = default;
  /// n: r and z have shape (n).
  virtual Index size() const = 0;
  /// z = M^{-1} r; z preallocated with shape (n), not sharing storage with r.
  virtual void apply(const Tensor<T>& r, Tensor<T>& z) = 0;
  /// Human-readable description for reports and errors.
  virtual std::string name() const = 0;
};

/// Checks the arguments of op.apply(v, out): both rank-1 of length op.size() (ShapeError naming
/// the operator and both shapes), out not sharing storage with v (ValueError). For implementers of
/// LinearOperator. Cost O(1); formats the name only when it throws, so it never allocates.
template <Real T>
void check_apply_arguments(const LinearOperator<T>& op, const Tensor<T>& v, const Tensor<T>& out);
/// The same check for Preconditioner::apply(r, z).
template <Real T>
void check_apply_arguments(const Preconditioner<T>& m, const Tensor<T>& r, const Tensor<T>& z);

/// An operand of a composite operator: shared (from a shared_ptr; ValueError naming the composite
/// at its construction if null) or borrowed (from a reference; the caller guarantees the lifetime).
/// See the ownership paragraph at the top of this file. Copies share or borrow the same operator.
template <Real T>
class Operand {
 public:
  /// Shares ownership of *op.
  template <class Op>
  requires std::derived_from<Op, LinearOperator<T>>
  Operand(std::shared_ptr<Op> op) : owned_(std::move(op)), op_(owned_.get()) {}  // NOLINT: implicit
  /// Borrows op: it must outlive every composite that holds this operand.
  Operand(LinearOperator<T>& op) : op_(&op) {}  // NOLINT: implicit on purpose (see above)
  /// The operator (null only for a null shared_ptr, which the composites refuse).
  LinearOperator<T>* get() const { return op_; }
  LinearOperator<T>* operator->() const { return op_; }
  LinearOperator<T>& operator*() const { return *op_; }
  /// True when the operand shares ownership, false when it borrows.
  bool owns() const { return owned_ != nullptr; }

 private:
  std::shared_ptr<LinearOperator<T>> owned_;
  LinearOperator<T>* op_ = nullptr;
};

/// Operand(op) spelled out: borrows `op`, which must outlive every composite holding it.
template <Real T>
Operand<T> borrowed(LinearOperator<T>& op) {
  return Operand<T>(op);
}

/// (A + lambda I) v = A v + lambda v: the Tikhonov-damped curvature of SEED-NOTES 5. lambda is
/// settable between solves (Levenberg-Marquardt, see damping.hpp). Cost: one product of A plus n.
template <Real T>
class DampedOperator final : public LinearOperator<T> {
 public:
  /// Throws ValueError if `base` is null or lambda is negative or not finite.
  DampedOperator(Operand<T> base, double lambda);
  Index size() const override { return base_->size(); }
  void apply(const Tensor<T>& v, Tensor<T>& out) override;
  /// "<base name> + <lambda> I".
  std::string name() const override;
  /// The damping lambda >= 0.
  double lambda() const { return lambda_; }
  /// Sets lambda; ValueError if negative or not finite (lambda is then unchanged).
  void set_lambda(double lambda);
  /// The undamped operator A.
  LinearOperator<T>& base() const { return *base_; }

 private:
  Operand<T> base_;
  double lambda_;
};

/// (c A) v. c may be any finite number (ValueError otherwise). Cost: one product of A plus n.
template <Real T>
class ScaledOperator final : public LinearOperator<T> {
 public:
  /// Throws ValueError if `base` is null or c is not finite.
  ScaledOperator(Operand<T> base, double c);
  Index size() const override { return base_->size(); }
  void apply(const Tensor<T>& v, Tensor<T>& out) override;
  /// "<c> * (<base name>)".
  std::string name() const override;
  /// The factor c.
  double scale() const { return c_; }
  /// The unscaled operator A.
  LinearOperator<T>& base() const { return *base_; }

 private:
  Operand<T> base_;
  double c_;
};

/// (A + B) v. Sizes must agree (ShapeError naming both operators and sizes). Cost: one product of
/// each plus n; keeps one n-vector of scratch, allocated at the first apply.
template <Real T>
class SumOperator final : public LinearOperator<T> {
 public:
  /// Throws ValueError if an operand is null, ShapeError if their sizes differ.
  SumOperator(Operand<T> a, Operand<T> b);
  Index size() const override { return a_->size(); }
  void apply(const Tensor<T>& v, Tensor<T>& out) override;
  /// "(<A name>) + (<B name>)".
  std::string name() const override;

 private:
  Operand<T> a_;
  Operand<T> b_;
  Tensor<T> scratch_;
};

/// An explicit n x n matrix M, out = M v with row dot products accumulated in double. For tests and
/// small problems: cost O(n^2) per product and O(n^2) memory.
template <Real T>
class DenseOperator final : public LinearOperator<T> {
 public:
  /// Copies `matrix` (shape (n, n)); ShapeError if not square rank 2, ValueError if an entry is
  /// not finite. Symmetry is not required (CG itself needs it; tests build indefinite ones).
  explicit DenseOperator(const Tensor<T>& matrix);
  Index size() const override { return n_; }
  void apply(const Tensor<T>& v, Tensor<T>& out) override;
  /// "Dense(n x n)".
  std::string name() const override;
  /// The stored matrix, shape (n, n).
  const Tensor<T>& matrix() const { return matrix_; }

 private:
  Tensor<T> matrix_;
  Index n_;
};

/// diag(d) v = d * v elementwise. d may hold any finite values (negative ones make it indefinite).
/// Cost: n per product.
template <Real T>
class DiagonalOperator final : public LinearOperator<T> {
 public:
  /// Copies `diagonal` (rank 1, shape (n)); ShapeError otherwise, ValueError on non-finite entries.
  explicit DiagonalOperator(const Tensor<T>& diagonal);
  Index size() const override { return d_.size(); }
  void apply(const Tensor<T>& v, Tensor<T>& out) override;
  /// "Diagonal(n)".
  std::string name() const override;
  /// The stored diagonal d, shape (n).
  const Tensor<T>& diagonal() const { return d_; }

 private:
  Tensor<T> d_;
};

/// Any std::shared_ptr<Op> whose Op is a LinearOperator: lets the factories below accept
/// shared_ptr<DenseOperator<double>> etc. without an explicit conversion.
template <class Op>
concept LinearOperatorType = std::derived_from<Op, LinearOperator<typename Op::value_type>>;

/// A + lambda I, sharing ownership of A. ValueError on a null A or lambda < 0 / non-finite.
template <LinearOperatorType Op>
std::shared_ptr<DampedOperator<typename Op::value_type>> damped(std::shared_ptr<Op> a,
                                                                double lambda) {
  return std::make_shared<DampedOperator<typename Op::value_type>>(std::move(a), lambda);
}

/// c A, sharing ownership of A. ValueError on a null A or non-finite c.
template <LinearOperatorType Op>
std::shared_ptr<ScaledOperator<typename Op::value_type>> scaled(std::shared_ptr<Op> a, double c) {
  return std::make_shared<ScaledOperator<typename Op::value_type>>(std::move(a), c);
}

/// A + B, sharing ownership of both. ValueError on null, ShapeError on different sizes.
template <LinearOperatorType OpA, LinearOperatorType OpB>
requires std::same_as<typename OpA::value_type, typename OpB::value_type>
    std::shared_ptr<SumOperator<typename OpA::value_type>> sum_of(std::shared_ptr<OpA> a,
                                                                  std::shared_ptr<OpB> b) {
  return std::make_shared<SumOperator<typename OpA::value_type>>(std::move(a), std::move(b));
}

// ---- preconditioners
// ------------------------------------------------------------------------------

/// M = diag(m), z = r / m elementwise. Cost: n per application.
template <Real T>
class DiagonalPreconditioner final : public Preconditioner<T> {
 public:
  /// Copies m (rank 1); ShapeError if not rank 1, ValueError unless every entry is finite and > 0.
  explicit DiagonalPreconditioner(const Tensor<T>& m);
  Index size() const override { return m_.size(); }
  void apply(const Tensor<T>& r, Tensor<T>& z) override;
  /// "DiagonalPreconditioner(n)".
  std::string name() const override;
  /// The stored diagonal m, shape (n).
  const Tensor<T>& diagonal() const { return m_; }

 private:
  Tensor<T> m_;
};

/// Martens 2010, sec. 4.7: M = (diag(sum_i g_i * g_i) + lambda I)^alpha, with g_i the per-example
/// gradients (the diagonal of the empirical Fisher, unnormalized: pass sums or means consistently
/// with the scale of the curvature), damping lambda and exponent alpha (0.75 in the paper; 0 gives
/// M = I, 1 the full diagonal). Computed in double, rounded to T.
/// ValueError if an entry of squared_gradient_sums is negative or not finite, lambda < 0 or not
/// finite, alpha < 0 or not finite, or a resulting entry is not a positive finite T (e.g. a zero
/// squared-gradient sum with lambda = 0). ShapeError if squared_gradient_sums is not rank 1.
template <Real T>
DiagonalPreconditioner<T> martens_preconditioner(const Tensor<T>& squared_gradient_sums,
                                                 double lambda, double alpha = 0.75);

extern template class DampedOperator<float>;
extern template class DampedOperator<double>;
extern template class ScaledOperator<float>;
extern template class ScaledOperator<double>;
extern template class SumOperator<float>;
extern template class SumOperator<double>;
extern template class DenseOperator<float>;
extern template class DenseOperator<double>;
extern template class DiagonalOperator<float>;
extern template class DiagonalOperator<double>;
extern template class DiagonalPreconditioner<float>;
extern template class DiagonalPreconditioner<double>;
extern template void check_apply_arguments<float>(const LinearOperator<float>&,
                                                  const Tensor<float>&, const Tensor<float>&);
extern template void check_apply_arguments<double>(const LinearOperator<double>&,
                                                   const Tensor<double>&, const Tensor<double>&);
extern template void check_apply_arguments<float>(const Preconditioner<float>&,
                                                  const Tensor<float>&, const Tensor<float>&);
extern template void check_apply_arguments<double>(const Preconditioner<double>&,
                                                   const Tensor<double>&, const Tensor<double>&);
extern template DiagonalPreconditioner<float> martens_preconditioner<float>(const Tensor<float>&,
                                                                            double, double);
extern template DiagonalPreconditioner<double> martens_preconditioner<double>(const Tensor<double>&,
                                                                              double, double);

}  // namespace amari::curvature
