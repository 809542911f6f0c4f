// max_pool2d: y[n, i, j, c] = max over the window (a, b) of x[n, i sh - ph + a, j sw - pw + b, c],
// x (N, H, W, C) channels-last, padding as -inf (only the part of a window inside x is read).
// Piecewise linear: with k* the first maximal window position (row-major; the first NaN if any),
//   JVP   dy[n, i, j, c]         = dx[n, at k*, c]
//   VJP   xbar[n, at k*, c]     += ybar[n, i, j, c]
//   2nd   nothing (zero second derivative wherever the max is unique)
// relu_max_pool2d(x) = max_pool2d(relu(x)) in one pass: since relu is monotone,
// max_k relu(x_k) = relu(max_k x_k), so y = relu(m) for the window maximum m, and the derivative is
// max_pool2d's where m > 0 and 0 elsewhere (relu's [x > 0] at the maximum; 0 at the kink, as relu).
// Encoded as k* = -1, which no window position matches, so both use the same JVP and VJP loops. The
// values and derivatives are those of relu followed by max_pool2d, bit for bit: a NaN in a window
// gives NaN (relu passes it, the max picks it) with derivative 0 (relu's [y > 0] is false), and a
// window of non-positive values gives +0 with derivative 0. It saves relu's pass over the (larger)
// input and its VJP's pass, and never stores relu's output (nn::Sequential uses it for a ReLU
// followed by a MaxPool2d).
// Residual: k* for every output element (int32, one per element of y), written by the primal when
// the result is a Dual or a Var (the op struct holds it; the tape's copy shares it). Plain
// evaluation skips it. So the primal is one pass over the windows, and the rules one pass over the
// windows selecting k*: no rule reads x again. Channels are contiguous: every inner loop runs over
// c. 2 x 2 windows that tile the input, with whole SIMD vectors of channels, have their own paths
// (primal_quad, jvp_quad, vjp_quad: the same bits, measured 4x faster).
#include <amari/autodiff/ops/max_pool2d.hpp>

namespace amari {

namespace {
template <class Op, Value V>
V apply_max_pool(const V& x, const Pool2dOptions& options) {
  detail::require_defined<Op>(x);
  Op op;
  op.g = detail::PoolGeometry::make(Op::name, x.shape(), options);
  if constexpr (!std::is_same_v<V, Tensor<typename V::value_type>>) {
    op.argmax = std::make_shared<typename Op::Argmax>();
  }
  return detail::apply(op, x);
}
}  // namespace

template <Value V>
V max_pool2d(const V& x, const Pool2dOptions& options) {
  return apply_max_pool<ops::MaxPool2d>(x, options);
}
template <Value V>
V relu_max_pool2d(const V& x, const Pool2dOptions& options) {
  return apply_max_pool<ops::ReluMaxPool2d>(x, options);
}
#define AMARI_INSTANTIATE(V)                              \
  template V max_pool2d<V>(const V&, const Pool2dOptions&); \
  template V relu_max_pool2d<V>(const V&, const Pool2dOptions&);
AMARI_FOR_EACH_VALUE_TYPE(AMARI_INSTANTIATE)
#undef AMARI_INSTANTIATE

}  // namespace amari
