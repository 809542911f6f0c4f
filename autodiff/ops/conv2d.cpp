// conv2d: y = conv(x, w) + b, channels-last. x (N, H, W, C_in), w (KH, KW, C_in/G, C_out) ("HWIO"),
// b (C_out), y (N, OH, OW, C_out), G groups, OH = (H + 2 ph - dh (KH - 1) - 1) / sh + 1 (likewise
// OW):
//   y[n, p, q, o] = b[o] + sum_{i, j, c} x[n, p sh - ph + i dh, q sw - pw + j dw, g(o) C_in/G + c]
//                                         * w[i, j, c, o]
// with g(o) = o / (C_out/G) the group of output channel o, and x read as 0 outside the image
// (cross-correlation, as in every DL framework). Bilinear in (x, w), linear in b, exactly like
// linear.cpp; write conv(x, w) for the bilinear part, convT(ybar, w) for its adjoint in x (the
// "transposed convolution") and corr(x, ybar) for its adjoint in w:
//   JVP   dy        = conv(dx, w) + conv(x, dw) + db      (db added at every pixel)
//   VJP   xbar     += convT(ybar, w),  wbar += corr(x, ybar),  bbar += sum over n, p, q of ybar
//   2nd   xbar_dot += convT(ybar, dw), wbar_dot += corr(dx, ybar)   (no term from b: linear)
//
// Algorithm (kernels/conv.cpp), channels last. Seen as matrices,
//   conv:  y (N OH OW, C_out) = cols (N OH OW, KH KW C_in) * w (KH KW C_in, C_out)
//   corr:  wbar += cols^T ybar                 convT: dcols = ybar w^T, then col2im (scatter-add)
// where cols, the im2col matrix, has one row per output pixel and its (kh, kw, c) taps in the
// order of the HWIO weights; with channels last each kernel row's taps are one contiguous run of x
// (KW C_in values). conv does not form cols (except where the padded copy below would be larger
// than cols: padding or strides far beyond the kernel): a direct ("implicit GEMM") micro-kernel with the GEMM's
// MR x NR register tile (kernels/gemm.cpp) reads tap (i, j, c) of output pixel (p, q) straight
// from a zero-padded copy of x, at offset i dh Wp C + j dw C + c from the pixel's window origin,
// keeps MR pixels x NR output channels in registers over the whole reduction and writes y (bias
// included) once. With im2col + GEMM, the column matrix was written by im2col and copied again by
// the GEMM's packing: for conv2 below those two copies took 25-31% of the forward time, and y was
// written twice (bias, then GEMM). corr and convT are GEMMs per group on strided views of w and
// ybar over chunks of images whose column matrix fits kColumnBytes = 1 MiB: corr after im2col,
// convT followed by col2im. Where they were measured faster (kernels/conv.cpp, conv2d_backward, has
// the figures and the rules), the adjoints use direct kernels instead: corr reducing over a chunk's
// pixels with a tile of taps x channels in registers (from the padded copy of x and NR-wide
// columns of ybar, read in place when C_out/G is a multiple of NR; 6 taps x 4 vectors when it is a
// multiple of 4 vectors, all taps in one 10-row tile when there are few, both where the ISA has 32
// registers), which also sums bbar while it reads ybar, and convT at stride 1 as a forward
// convolution of padded ybar with the flipped kernel. On the AMD machine of an earlier measurement the two together were ~15% slower than the
// GEMM path on conv2's backward (20.5 against 17.9 ms, separate runs); on the Intel machine of
// 2026-12-02 convT alone gains 17% there and corr gains on the layers with few taps. A 1x1,
// stride-1, unpadded convolution needs no im2col: x seen as (N H W, C_in) is the column matrix, and
// all three maps are GEMMs.
//
// Chunks and threads: the direct forward runs over chunks of images whose padded copies fit
// kPaddedBytes = 256 KiB (L2); the adjoints over chunks whose column matrix fits kColumnBytes (a
// thread-local grow-only buffer, so a step allocates nothing; measured on conv2 forward+backward
// with the earlier im2col forward, 1 thread: 256 KiB 34 ms, 1 MiB 29, 2 MiB 30, 4 MiB 34, 8 MiB 38,
// the whole batch at once 46 ms). Both depend on the shapes only, never on the thread count. With
// enough chunks they are spread over ONE parallel region, each thread running whole chunks (pad
// and tiles; or im2col, single-threaded GEMMs and col2im) with no barrier inside; otherwise the
// adjoint chunks run in order and the GEMMs (bitwise identical for any thread count), im2col and
// col2im (over images: disjoint regions of xbar) use the threads. The first design was the second
// mode only: on the shared 2-core machine (load ~9) its ~100 parallel regions per call cost
// 1272 ms for conv2's forward at 2 threads against 25 ms at 1 thread (a descheduled thread stalls
// every barrier); one region per call: 30 ms. An output value of conv is the same sequence of
// operations whichever chunk or thread computes it, and wbar sums per-chunk terms in chunk order,
// so every result is bitwise identical for any thread count (tests/autodiff/conv2d_test.cpp checks
// 1 against 2).
//
// Measured against PyTorch 1.13 (Debian, NCHW through oneDNN): see "conv2d layers against
// PyTorch" in bench/RESULTS.md.
#include <amari/autodiff/ops/conv2d.hpp>

namespace amari {
namespace ops {

struct Conv2d : Conv2dBase {
  static constexpr int arity = 3;

  Shape output_shape(const Shape& x, const Shape& w, const Shape& b) const {
    return output(x, w, &b);
  }
  template <Real T>
  void primal(const Tensor<T>& x, const Tensor<T>& w, const Tensor<T>& b, Tensor<T>& y) const {
    forward(x, w, &b, y, false);
  }
  template <Real T>
  void jvp(const detail::Saved<T, 3>& s, const Tensor<T>* dx, const Tensor<T>* dw,
           const Tensor<T>* db, Tensor<T>& dy) const {
    tangent(s.x[0], s.x[1], dx, dw, db, dy);
  }
  template <Real T>
  void vjp(const detail::Saved<T, 3>& s, const Tensor<T>& ybar, Tensor<T>* xbar, Tensor<T>* wbar,
           Tensor<T>* bbar, detail::Overwrite ow) const {
    adjoints(&s.x[0], &s.x[1], ybar, xbar, wbar, bbar, ow);
  }
  template <Real T>
  void vjp_tangent(const detail::Saved<T, 3>&, const Tensor<T>* dx, const Tensor<T>* dw,
                   const Tensor<T>*, const Tensor<T>&, const Tensor<T>& ybar, Tensor<T>* xbar_dot,
                   Tensor<T>* wbar_dot, Tensor<T>*) const {
    adjoints(dx, dw, ybar, dw ? xbar_dot : nullptr, dx ? wbar_dot : nullptr);
  }
};

struct Conv2dNoBias : Conv2dBase {
  static constexpr int arity = 2;

  Shape output_shape(const Shape& x, const Shape& w) const { return output(x, w, nullptr); }
  template <Real T>
  void primal(const Tensor<T>& x, const Tensor<T>& w, Tensor<T>& y) const {
    forward(x, w, static_cast<const Tensor<T>*>(nullptr), y, false);
  }
  template <Real T>
  void jvp(const detail::Saved<T, 2>& s, const Tensor<T>* dx, const Tensor<T>* dw,
           Tensor<T>& dy) const {
    tangent(s.x[0], s.x[1], dx, dw, static_cast<const Tensor<T>*>(nullptr), dy);
  }
  template <Real T>
  void vjp(const detail::Saved<T, 2>& s, const Tensor<T>& ybar, Tensor<T>* xbar,
           Tensor<T>* wbar, detail::Overwrite ow) const {
    adjoints(&s.x[0], &s.x[1], ybar, xbar, wbar, static_cast<Tensor<T>*>(nullptr), ow);
  }
  template <Real T>
  void vjp_tangent(const detail::Saved<T, 2>&, const Tensor<T>* dx, const Tensor<T>* dw,
                   const Tensor<T>&, const Tensor<T>& ybar, Tensor<T>* xbar_dot,
                   Tensor<T>* wbar_dot) const {
    adjoints(dx, dw, ybar, dw ? xbar_dot : nullptr, dx ? wbar_dot : nullptr);
  }
};

}  // namespace ops

template <Value V>
V conv2d(const V& x, const V& w, const V& b, const Conv2dOptions& options) {
  return detail::apply(ops::Conv2d{{.options = options}}, x, w, b);
}
template <Value V>
V conv2d(const V& x, const V& w, const Conv2dOptions& options) {
  return detail::apply(ops::Conv2dNoBias{{.options = options}}, x, w);
}
#define AMARI_INSTANTIATE(V)                                                \
  template V conv2d<V>(const V&, const V&, const V&, const Conv2dOptions&); \
  template V conv2d<V>(const V&, const V&, const Conv2dOptions&);
AMARI_FOR_EACH_VALUE_TYPE(AMARI_INSTANTIATE)
#undef AMARI_INSTANTIATE

}  // namespace amari
