// The primitives, for every value type: plain tensors, duals (forward mode) and tape variables
// (reverse mode). Write a function once against a generic `V` and it evaluates, JVPs and VJPs:
//
//   template <amari::Value V> V layer(const V& x, const V& w, const V& b) {
//     return amari::tanh(amari::matmul(x, w) + b);
//   }
//
// Each primitive's primal, JVP and VJP rules are side by side in autodiff/ops/<name>.cpp.
// Shapes that do not fit raise ShapeError naming the primitive and the shapes.
#pragma once

#include <optional>

#include <amari/autodiff/value.hpp>

namespace amari {

// ---- element-wise, one input (any shape) ----------------------------------------------------------
/// e^x. ops/exp.cpp
template <Value V> V exp(const V& x);
/// Natural logarithm (log of a negative number is NaN, log 0 is -inf). ops/log.cpp
template <Value V> V log(const V& x);
/// Hyperbolic tangent. ops/tanh.cpp
template <Value V> V tanh(const V& x);
/// Logistic sigmoid 1 / (1 + e^-x), stable for large |x|. ops/sigmoid.cpp
template <Value V> V sigmoid(const V& x);
/// max(x, 0); the derivative at 0 is taken as 0 (as in PyTorch and JAX). NaN propagates. ops/relu.cpp
template <Value V> V relu(const V& x);
/// log(1 + e^x), computed as max(x, 0) + log1p(e^-|x|) so it is finite for any finite x. ops/softplus.cpp
template <Value V> V softplus(const V& x);
/// x^2. ops/square.cpp
template <Value V> V square(const V& x);
/// Square root (NaN for x < 0; the derivative at 0 is +inf). ops/sqrt.cpp
template <Value V> V sqrt(const V& x);
/// Gaussian error linear unit x * Phi(x), exact (erf) form. ops/gelu.cpp
template <Value V> V gelu(const V& x);
/// a * x + b for scalars a, b: the primitive behind neg, scale and add_scalar. ops/affine.cpp
template <Value V> V affine(const V& x, double a, double b);
/// -x.
template <Value V> V neg(const V& x) { return affine(x, -1.0, 0.0); }
/// s * x.
template <Value V> V scale(const V& x, double s) { return affine(x, s, 0.0); }
/// x + c.
template <Value V> V add_scalar(const V& x, double c) { return affine(x, 1.0, c); }

// ---- element-wise, two inputs, with NumPy broadcasting ------------------------------------------
// Shapes align on the right and dimensions of 1 stretch: (M, N) with (N) or (1, N) broadcasts a row
// (a bias), with (M, 1) a column (a per-example scale). The VJP sums over the broadcast axes.
/// a + b. ops/add.cpp
template <Value V> V add(const V& a, const V& b);
/// a - b. ops/sub.cpp
template <Value V> V sub(const V& a, const V& b);
/// a * b (element-wise). ops/mul.cpp
template <Value V> V mul(const V& a, const V& b);
/// a / b (element-wise). ops/div.cpp
template <Value V> V div(const V& a, const V& b);

// ---- linear algebra -----------------------------------------------------------------------------
/// Whether matmul uses an operand as stored or transposed.
enum class Trans : bool { no = false, yes = true };
/// op(a) * op(b) for rank-2 a, b, where op transposes when asked (no copy is made: the GEMM kernel
/// reads the transposed layout). (m, k) x (k, n) -> (m, n). Cost 2mnk flops. ops/matmul.cpp
template <Value V> V matmul(const V& a, const V& b, Trans trans_a = Trans::no, Trans trans_b = Trans::no);
/// x w + b for x (N, in), w (in, out), b (out): a dense layer in one primitive (the bias is
/// written first and the GEMM accumulates onto it). ops/linear.cpp
template <Value V> V linear(const V& x, const V& w, const V& b);
/// The transpose of a rank-2 tensor (copied). ops/transpose.cpp
template <Value V> V transpose(const V& x);
/// The same elements in another shape with the same element count. ops/reshape.cpp
template <Value V> V reshape(const V& x, const Shape& shape);

// ---- reductions -----------------------------------------------------------------------------------
/// Sum of all elements (rank-0 result), or along one axis (the axis is dropped unless keep_dims).
/// ops/sum.cpp
template <Value V> V sum(const V& x);
template <Value V> V sum(const V& x, int axis, bool keep_dims = false);
/// Mean of all elements, or along one axis. Mean of an empty tensor is NaN.
template <Value V> V mean(const V& x);
template <Value V> V mean(const V& x, int axis, bool keep_dims = false);
/// Maximum along an axis (default: the last, i.e. per row). The VJP routes the cotangent to the
/// first maximal element. NaN propagates. ops/max.cpp
template <Value V> V max(const V& x, int axis = -1, bool keep_dims = false);
/// log sum exp along an axis (default: per row), stable for logits of any magnitude. ops/logsumexp.cpp
template <Value V> V logsumexp(const V& x, int axis = -1, bool keep_dims = false);
/// Softmax along an axis (default: per row). ops/softmax.cpp
template <Value V> V softmax(const V& x, int axis = -1);
/// log softmax along an axis (default: per row), x - logsumexp(x). ops/log_softmax.cpp
template <Value V> V log_softmax(const V& x, int axis = -1);

// ---- operators ----------------------------------------------------------------------------------
template <Value V> V operator+(const V& a, const V& b) { return add(a, b); }
template <Value V> V operator-(const V& a, const V& b) { return sub(a, b); }
template <Value V> V operator*(const V& a, const V& b) { return mul(a, b); }
template <Value V> V operator/(const V& a, const V& b) { return div(a, b); }
template <Value V> V operator-(const V& x) { return neg(x); }
template <Value V> V operator+(const V& x, double c) { return add_scalar(x, c); }
template <Value V> V operator+(double c, const V& x) { return add_scalar(x, c); }
template <Value V> V operator-(const V& x, double c) { return add_scalar(x, -c); }
template <Value V> V operator-(double c, const V& x) { return affine(x, -1.0, c); }
template <Value V> V operator*(const V& x, double s) { return scale(x, s); }
template <Value V> V operator*(double s, const V& x) { return scale(x, s); }
template <Value V> V operator/(const V& x, double s) { return scale(x, 1.0 / s); }

}  // namespace amari
