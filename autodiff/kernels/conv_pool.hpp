// Kernels of conv2d_relu_max_pool2d (autodiff/ops/conv2d_relu_max_pool2d.cpp explains the math):
// the tangent and the weight/bias adjoints of a convolution whose output goes straight into a
// ReLU and a 2 x 2, stride-2 max pooling, computed at the pooled resolution, so that the
// convolution's full-size tangent and adjoint are never written.
//
// Internal header: the primitive validates the shapes and decides when these apply.
#pragma once

#include <cstdint>

#include <amari/autodiff/kernels/conv.hpp>

namespace amari::kernels {

/// True when the fused rules below serve this convolution: one group, an output of even height
/// and width (the 2 x 2 windows tile it), and output channels in whole SIMD vectors of T.
template <class T>
bool conv_pool_fusable(const ConvGeometry& g);

/// dy = the tangent conv(x, dw) + db of the convolution, read at each pooled element's k*:
///   dy[n, i, j, o] = t[n, 2i + k*/2, 2j + k*%2, o] where k*[n, i, j, o] >= 0, else 0,
/// t = conv(x, dw) + db (either may be null: a zero tangent). dy and k* are (n, oh/2, ow/2, c_out).
template <class T>
void conv_pool_tangent(const ConvGeometry& g, const T* x, const T* dw, const T* db,
                       const std::int32_t* k_star, T* dy);

/// The weight and bias adjoints for the pooled cotangent ybar: with cbar the convolution
/// output's cotangent (ybar[n, i, j, o] at the pixel k* selects, 0 elsewhere),
///   wbar = or += corr(x, cbar),  bbar = or += cbar summed over pixels,
/// each only where not null, added when its accumulate flag is set. Per-chunk partial sums added
/// in chunk order: the same bits for any thread count.
template <class T>
void conv_pool_weight_adjoint(const ConvGeometry& g, const T* x, const T* ybar,
                              const std::int32_t* k_star, T* wbar, T* bbar, bool accumulate_w,
                              bool accumulate_b);

/// True when the rules at the selected pixels below serve this convolution: one group, an output
/// of even height and width, input and output channels in whole SIMD vectors of T
/// (kernels/conv_pool_selected.cpp: they vectorize over input channels).
template <class T>
bool conv_pool_selected_applies(const ConvGeometry& g);

/// As conv_pool_tangent, with the input's tangent too: dy = t = conv(dx, w) + conv(x, dw) + db
/// read at k* (dx and w, dw and x, db: each pair or db possibly null), computed at the selected
/// pixel of each (pooled element, channel) only.
template <class T>
void conv_pool_selected_tangent(const ConvGeometry& g, const T* x, const T* w, const T* dx,
                                const T* dw, const T* db, const std::int32_t* k_star, T* dy);

/// xbar = or += convT(cbar, w), cbar = ybar at the pixel k* selects (0 elsewhere), as a scatter
/// of the selected pixels only.
template <class T>
void conv_pool_selected_input_adjoint(const ConvGeometry& g, const T* w, const T* ybar,
                                      const std::int32_t* k_star, T* xbar, bool accumulate);

/// As conv_pool_weight_adjoint (the same contract), summing over the selected pixels only, per
/// chunk of images in chunk order (the same bits for any thread count).
template <class T>
void conv_pool_selected_weight_adjoint(const ConvGeometry& g, const T* x, const T* ybar,
                                       const std::int32_t* k_star, T* wbar, T* bbar,
                                       bool accumulate_w, bool accumulate_b);

#define AMARI_CONV_POOL_DECLARE(T)                                                                  \
  extern template bool conv_pool_fusable<T>(const ConvGeometry&);                                   \
  extern template void conv_pool_tangent<T>(const ConvGeometry&, const T*, const T*, const T*,      \
                                            const std::int32_t*, T*);                               \
  extern template void conv_pool_weight_adjoint<T>(const ConvGeometry&, const T*, const T*,         \
                                                   const std::int32_t*, T*, T*, bool, bool);   \
  extern template bool conv_pool_selected_applies<T>(const ConvGeometry&);                          \
  extern template void conv_pool_selected_tangent<T>(const ConvGeometry&, const T*, const T*,       \
                                                     const T*, const T*, const T*,                  \
                                                     const std::int32_t*, T*);                      \
  extern template void conv_pool_selected_input_adjoint<T>(const ConvGeometry&, const T*,           \
                                                           const T*, const std::int32_t*, T*, bool); \
  extern template void conv_pool_selected_weight_adjoint<T>(                                        \
      const ConvGeometry&, const T*, const T*, const std::int32_t*, T*, T*, bool, bool);
AMARI_CONV_POOL_DECLARE(float)
AMARI_CONV_POOL_DECLARE(double)
#undef AMARI_CONV_POOL_DECLARE

}  // namespace amari::kernels
