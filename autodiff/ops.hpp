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

#include <array>
#include <cstdint>
#include <optional>
#include <vector>

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

// ---- images: convolution and pooling, channels-last (NHWC) ---------------------------------------
// Images are (N, H, W, C): batch, height, width, channels, with channels contiguous (the layout of
// TensorFlow and flax; PyTorch's default is NCHW). Convolution weights are (KH, KW, C_in / groups,
// C_out) ("HWIO"); PyTorch's are (C_out, C_in / groups, KH, KW). nn/torch_layout.hpp converts both.
// Why channels-last: a convolution becomes one large GEMM over all N*OH*OW output pixels
// (ops/conv2d.cpp explains the choice and its measurements).

/// Geometry of a 2-D convolution. Output size per spatial axis:
/// out = (in + 2 padding - dilation (k - 1) - 1) / stride + 1 (floor), as in PyTorch.
struct Conv2dOptions {
  std::array<Index, 2> stride{1, 1};
  std::array<Index, 2> padding{0, 0};   ///< zeros added on both sides of H and W
  std::array<Index, 2> dilation{1, 1};
  Index groups = 1;                     ///< C_in and C_out must both be divisible by groups
};
/// 2-D convolution (cross-correlation, as in every DL framework): x (N, H, W, C_in),
/// w (KH, KW, C_in / groups, C_out), b (C_out) -> (N, OH, OW, C_out). ops/conv2d.cpp
template <Value V> V conv2d(const V& x, const V& w, const V& b, const Conv2dOptions& options = {});
/// The same without a bias.
template <Value V> V conv2d(const V& x, const V& w, const Conv2dOptions& options = {});

/// Geometry of a 2-D pooling window. stride {0, 0} means "equal to the kernel" (PyTorch's default).
/// Output size per axis: (in + 2 padding - kernel) / stride + 1 (floor); padding <= kernel / 2,
/// 1 <= kernel <= 2^15 and stride <= 2^31 per axis (ValueError otherwise).
struct Pool2dOptions {
  std::array<Index, 2> kernel{2, 2};
  std::array<Index, 2> stride{0, 0};
  std::array<Index, 2> padding{0, 0};
  /// avg_pool2d only: divide by the full window size including padded zeros (PyTorch's default
  /// count_include_pad = true) rather than by the number of real elements in the window.
  bool count_include_pad = true;
};
/// Maximum over each window of x (N, H, W, C) -> (N, OH, OW, C); padding counts as -inf. The VJP
/// routes the cotangent to the first maximal element of a window (row-major order). ops/max_pool2d.cpp
template <Value V> V max_pool2d(const V& x, const Pool2dOptions& options);
/// max_pool2d(relu(x)) in one pass (equal to it bit for bit, derivatives included): relu of each
/// window's maximum, derivative 0 where that maximum is <= 0. nn::Sequential uses it for a ReLU
/// followed by a MaxPool2d. ops/max_pool2d.cpp
template <Value V> V relu_max_pool2d(const V& x, const Pool2dOptions& options);
/// relu_max_pool2d(conv2d(x, w, b, conv), pool) as one primitive: the same values; derivatives
/// equal up to rounding (the fused rules sum in another order). Where the pooling is 2 x 2 with
/// stride 2 over an output of even size, the convolution has one group and C_out fills whole SIMD
/// vectors, the tangent with no tangent of x and the weight and bias adjoints without x's are
/// computed at the pooled resolution, and the tangent with one (C_out in whole 32-float or
/// 16-double slivers, AVX-512) in one pass over dx and x that stores only the selected pixels: the
/// convolution's full-size tangent is never written, nor, in the first two, its cotangent.
/// nn::Sequential uses it for a Conv2d (with bias) followed by a ReLU and a MaxPool2d.
/// ops/conv2d_relu_max_pool2d.cpp
template <Value V>
V conv2d_relu_max_pool2d(const V& x, const V& w, const V& b, const Conv2dOptions& conv,
                         const Pool2dOptions& pool);
/// Mean over each window of x (N, H, W, C) -> (N, OH, OW, C). ops/avg_pool2d.cpp
template <Value V> V avg_pool2d(const V& x, const Pool2dOptions& options);
/// Mean over H and W: (N, H, W, C) -> (N, C). ops/global_avg_pool2d.cpp
template <Value V> V global_avg_pool2d(const V& x);

// ---- normalization and regularization --------------------------------------------------------------
/// Layer normalization over the last axis: y = (x - mean) / sqrt(var + eps) * gamma + beta, with the
/// biased variance of each row; x (..., D), gamma and beta (D). ops/layer_norm.cpp
template <Value V> V layer_norm(const V& x, const V& gamma, const V& beta, double eps = 1e-5);

/// Batch statistics a batch_norm call computed (biased variance), for running averages.
template <Real T>
struct BatchStats {
  Tensor<T> mean;      ///< (C)
  Tensor<T> variance;  ///< (C), biased (divides by the count M)
  Index count = 0;     ///< M: the number of values per channel (N, or N*H*W)
};
/// Batch normalization with batch statistics (training mode), per channel = per last-axis entry:
/// x (N, C) or (N, H, W, C), statistics over all other axes; y = (x - mean) / sqrt(var + eps) *
/// gamma + beta with gamma and beta (C). The statistics depend on every example, and so do the
/// derivatives (the JVP, VJP and second-order rules are exact, batch coupling included). If `stats`
/// is given, the primal writes the batch mean and biased variance there. Evaluation mode needs no
/// primitive: it is an affine map per channel with the running statistics as constants.
/// ops/batch_norm.cpp
template <Value V>
V batch_norm(const V& x, const V& gamma, const V& beta, double eps = 1e-5,
             BatchStats<typename V::value_type>* stats = nullptr);

/// Inverted dropout: y = x * m / (1 - p) with m = 0 with probability p, else 1. The mask is a pure
/// function of (seed, stream, first + element index), counter-based, so a forward pass, its JVP,
/// its VJP and a re-run with the same key see the same mask, independent of threads. `first`
/// places x's elements at counters [first, first + size) of a larger tensor: a block of rows of a
/// batch, passed with first = its first row times the values per row, draws the batch's mask for
/// those rows (0: x on its own). p in [0, 1). ops/dropout.cpp
template <Value V>
V dropout(const V& x, double p, std::uint64_t seed, std::uint64_t stream, std::uint64_t first = 0);

// ---- indexing and rearranging ------------------------------------------------------------------------
/// Rows of `weight` (V, D) picked by integer indices: the result has shape index_shape + (D), e.g.
/// indices of shape (N) -> (N, D), (N, L) -> (N, L, D). Indices outside [0, V) raise ValueError.
/// The VJP scatter-adds into the picked rows. ops/embedding.cpp
template <Value V> V embedding(const V& weight, const std::vector<Index>& indices, const Shape& index_shape);
/// Axes rearranged: output axis i is input axis perm[i] (perm has rank(x) entries), as
/// numpy.transpose / torch.permute. E.g. NCHW -> NHWC is perm {0, 2, 3, 1}. ops/permute.cpp
template <Value V> V permute(const V& x, const std::vector<int>& perm);
/// a and b joined along `axis` (all other extents equal). ops/concat.cpp
template <Value V> V concat(const V& a, const V& b, int axis);
/// Any number (>= 1) of tensors joined along `axis`, as a balanced tree of 3-way concats (a tape
/// record takes at most 3 inputs): each element is copied ceil(log3 n) times (a list of one is
/// returned as it is). ops/concat.cpp
template <Value V> V concat(const std::vector<V>& xs, int axis);
/// Elements start <= i < stop along `axis` (0 <= start <= stop <= extent). ops/slice.cpp
template <Value V> V slice(const V& x, int axis, Index start, Index stop);

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
