// Kernels of the conv2d primitive (autodiff/ops/conv2d.cpp explains the math and the design):
// a channels-last direct (implicit-GEMM) kernel for the forward map; im2col + GEMM for the weight
// correlation and GEMM + col2im for the transposed convolution (the adjoints).
//
// Internal header: shapes are validated by the primitive (ops/conv2d.cpp); these functions trust
// the geometry they are given.
#pragma once

#include <cstdint>

#include <amari/autodiff/shape.hpp>

namespace amari::kernels {

/// The sizes of one 2-D convolution, channels-last: x (n, h, w, c_in), weights (kh, kw, c_in /
/// groups, c_out), y (n, oh, ow, c_out).
struct ConvGeometry {
  Index n = 0, h = 0, w = 0, c_in = 0;
  Index kh = 0, kw = 0, c_out = 0, groups = 1;
  Index stride_h = 1, stride_w = 1, pad_h = 0, pad_w = 0, dilation_h = 1, dilation_w = 1;
  Index oh = 0, ow = 0;  // output size, computed by the caller

  Index group_in() const { return c_in / groups; }    // C_in / groups
  Index group_out() const { return c_out / groups; }  // C_out / groups
  /// The reduction length of one output element: kh * kw * C_in / groups.
  Index k() const { return kh * kw * group_in(); }
  /// A 1x1, stride-1, unpadded convolution: x viewed as (n*h*w, c_in) already is the im2col matrix.
  bool pointwise() const {
    return kh == 1 && kw == 1 && stride_h == 1 && stride_w == 1 && pad_h == 0 && pad_w == 0;
  }
};

/// y = conv(x, w) (+ b broadcast over pixels if b is not null), written into y, or added to y
/// when `accumulate`. Cost: 2 n oh ow c_out k flops plus one zero-padded copy of x.
template <class T>
void conv2d_forward(const ConvGeometry& g, const T* x, const T* w, const T* b, T* y,
                    bool accumulate);

/// Where conv2d_backward writes: each adjoint only where its pointer is not null, added to the
/// buffer when its `accumulate_*` is true, else written (its old contents never read).
template <class T>
struct ConvAdjoints {
  T* x = nullptr;  ///< xbar += conv_transpose(ybar, w) (reads w)
  T* w = nullptr;  ///< wbar += corr(x, ybar) (reads x)
  T* b = nullptr;  ///< bbar += ybar summed over its pixels (the adjoint of the bias, c_out values)
  bool accumulate_x = false, accumulate_w = false, accumulate_b = false;
};

/// The adjoints of y = conv(x, w) + b for the cotangent ybar, those `out` asks for, in one pass
/// over image chunks (the bias adjoint, where the direct weight-adjoint kernel runs, inside it).
template <class T>
void conv2d_backward(const ConvGeometry& g, const T* x, const T* w, const T* ybar,
                     const ConvAdjoints<T>& out);

/// True when conv2d_pool_tangent serves this convolution: one group, an output of even height and
/// width, C_out in whole register-tile slivers, a padded copy no larger than the column matrix,
/// and a register tile of whole 2 x 2 windows (8 rows: ISAs with 32 vector registers).
template <class T>
bool conv2d_pool_tangent_applies(const ConvGeometry& g);

/// dy = the tangent t = conv(dx, w) + conv(x, dw) + db (dx, dw, db each possibly null; dx or dw
/// given) read at each 2 x 2 window's pixel k*: dy[n, i, j, o] = t[n, 2i + k*/2, 2j + k*%2, o]
/// where k*[n, i, j, o] >= 0, else 0 (conv2d_relu_max_pool2d's tangent). dy and k* are (n, oh/2,
/// ow/2, c_out). One direct convolution over dx and x together; t is never stored.
template <class T>
void conv2d_pool_tangent(const ConvGeometry& g, const T* x, const T* w, const T* dx, const T* dw,
                         const T* db, const std::int32_t* k_star, T* dy);

extern template void conv2d_forward<float>(const ConvGeometry&, const float*, const float*,
                                           const float*, float*, bool);
extern template void conv2d_forward<double>(const ConvGeometry&, const double*, const double*,
                                            const double*, double*, bool);
extern template bool conv2d_pool_tangent_applies<float>(const ConvGeometry&);
extern template bool conv2d_pool_tangent_applies<double>(const ConvGeometry&);
extern template void conv2d_pool_tangent<float>(const ConvGeometry&, const float*, const float*,
                                                const float*, const float*, const float*,
                                                const std::int32_t*, float*);
extern template void conv2d_pool_tangent<double>(const ConvGeometry&, const double*, const double*,
                                                 const double*, const double*, const double*,
                                                 const std::int32_t*, double*);
extern template void conv2d_backward<float>(const ConvGeometry&, const float*, const float*,
                                            const float*, const ConvAdjoints<float>&);
extern template void conv2d_backward<double>(const ConvGeometry&, const double*, const double*,
                                             const double*, const ConvAdjoints<double>&);

}  // namespace amari::kernels
