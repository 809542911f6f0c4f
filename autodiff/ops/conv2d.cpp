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
#include <amari/autodiff/kernels/conv.hpp>
#include <amari/autodiff/ops/primitive.hpp>

namespace amari {
namespace ops {

// What conv2d with and without a bias share: validation, geometry and the three bilinear maps.
struct Conv2dBase {
  static constexpr const char* name = "conv2d";
  static constexpr unsigned saves = save::x0 | save::x1;
  Conv2dOptions options;

  static std::string pair(const std::array<Index, 2>& v) {
    return "{" + std::to_string(v[0]) + ", " + std::to_string(v[1]) + "}";
  }
  std::string describe(const Shape& x, const Shape& w, const Shape* b) const {
    return "; got x " + x.str() + ", w " + w.str() +
           (b ? ", b " + b->str() : std::string(" (no bias)")) + ", stride " +
           pair(options.stride) + ", padding " + pair(options.padding) + ", dilation " +
           pair(options.dilation) + ", groups " + std::to_string(options.groups);
  }

  // Validates the shapes and options (ShapeError naming conv2d, the shapes and the options) and
  // returns the geometry, output size included.
  kernels::ConvGeometry geometry(const Shape& x, const Shape& w, const Shape* b) const {
    const auto fail = [&](const std::string& what) -> void {
      throw ShapeError("conv2d: " + what + describe(x, w, b));
    };
    if (x.rank() != 4 || w.rank() != 4 || (b && b->rank() != 1)) {
      fail("expects x (N, H, W, C_in), w (KH, KW, C_in / groups, C_out)" +
           std::string(b ? ", b (C_out)" : ""));
    }
    const auto& [sh, sw] = options.stride;
    const auto& [ph, pw] = options.padding;
    const auto& [dh, dw] = options.dilation;
    const Index groups = options.groups;
    if (sh < 1 || sw < 1 || dh < 1 || dw < 1 || sh > kMaxElements || sw > kMaxElements ||
        dh > kMaxElements || dw > kMaxElements) {
      fail("stride and dilation must be positive (and at most 2^48)");
    }
    if (ph < 0 || pw < 0 || ph > kMaxElements || pw > kMaxElements)
      fail("padding must be in [0, 2^48]");
    if (groups < 1) fail("groups must be positive");
    const Index c_in = x[3], c_out = w[3];
    if (c_in == 0 || c_out == 0)
      fail("zero channels (C_in = x.shape[3], C_out = w.shape[3] must be positive)");
    if (w[0] == 0 || w[1] == 0)
      fail("empty kernel (KH = w.shape[0], KW = w.shape[1] must be positive)");
    if (c_in % groups != 0 || c_out % groups != 0) {
      fail("groups " + std::to_string(groups) + " must divide C_in = " + std::to_string(c_in) +
           " and C_out = " + std::to_string(c_out));
    }
    if (w[2] != c_in / groups) {
      fail("mismatched channels: x has C_in = " + std::to_string(c_in) +
           ", so w.shape[2] must be C_in / groups = " + std::to_string(c_in / groups));
    }
    if (b && (*b)[0] != c_out)
      fail("b must have C_out = w.shape[3] = " + std::to_string(c_out) + " entries");
    // Extent of the dilated kernel, d (k - 1) + 1, against the padded input, without overflow.
    const auto extent = [&](Index k, Index d) {
      return k - 1 > kMaxElements / d ? kMaxElements + 1 : d * (k - 1) + 1;
    };
    const Index eh = extent(w[0], dh), ew = extent(w[1], dw);
    if (eh > x[1] + 2 * ph || ew > x[2] + 2 * pw) {
      fail("the dilated kernel (" + std::to_string(eh) + " x " + std::to_string(ew) +
           ") is larger than the padded input (" + std::to_string(x[1] + 2 * ph) + " x " +
           std::to_string(x[2] + 2 * pw) + ")");
    }
    kernels::ConvGeometry g{.n = x[0],
                            .h = x[1],
                            .w = x[2],
                            .c_in = c_in,
                            .kh = w[0],
                            .kw = w[1],
                            .c_out = c_out,
                            .groups = groups,
                            .stride_h = sh,
                            .stride_w = sw,
                            .pad_h = ph,
                            .pad_w = pw,
                            .dilation_h = dh,
                            .dilation_w = dw};
    g.oh = (x[1] + 2 * ph - eh) / sh + 1;
    g.ow = (x[2] + 2 * pw - ew) / sw + 1;
    if (static_cast<double>(g.n) * static_cast<double>(g.oh) * static_cast<double>(g.ow) *
            static_cast<double>(c_out) >
        static_cast<double>(kMaxElements)) {
      throw SizeError("conv2d: the output has more than 2^48 elements" + describe(x, w, b));
    }
    return g;
  }
  Shape output(const Shape& x, const Shape& w, const Shape* b) const {
    const auto g = geometry(x, w, b);
    return Shape{g.n, g.oh, g.ow, g.c_out};
  }
  template <Real T>
  kernels::ConvGeometry geometry_of(const Tensor<T>& x, const Tensor<T>& w) const {
    return geometry(x.shape(), w.shape(), nullptr);  // validated at recording: cannot throw here
  }
  // y = conv(x, w) (+ b), or y += that when `accumulate`.
  template <Real T>
  void forward(const Tensor<T>& x, const Tensor<T>& w, const Tensor<T>* b, Tensor<T>& y,
               bool accumulate) const {
    kernels::conv2d_forward(geometry_of(x, w), x.data(), w.data(), b ? b->data() : nullptr,
                            y.data(), accumulate);
  }
  // dy = conv(dx, w) + conv(x, dw) + db, any of the three tangents possibly absent (at least one
  // given).
  template <Real T>
  void tangent(const Tensor<T>& x, const Tensor<T>& w, const Tensor<T>* dx, const Tensor<T>* dw,
               const Tensor<T>* db, Tensor<T>& dy) const {
    bool written = false;
    if (dx) {
      forward(*dx, w, db, dy, false);
      written = true, db = nullptr;
    }
    if (dw) {
      forward(x, *dw, db, dy, written);
      written = true, db = nullptr;
    }
    if (db) {  // the bias alone: every pixel of dy is db
      detail::broadcast(
          dy, []<class B>(B v) { return v; }, *db);
    }
  }
  // xbar += convT(ybar, w), wbar += corr(x, ybar) and bbar += ybar summed over pixels, each only
  // if wanted (non-null); written instead of added where ow says the buffer is fresh (ow[0] for
  // xbar, ow[1] for wbar, ow[2] for bbar).
  template <Real T>
  void adjoints(const Tensor<T>* x, const Tensor<T>* w, const Tensor<T>& ybar, Tensor<T>* xbar,
                Tensor<T>* wbar, Tensor<T>* bbar = nullptr, detail::Overwrite ow = {}) const {
    if (!xbar && !wbar && !bbar) return;
    const Tensor<T>& xs = x ? *x : *xbar;  // shapes only: the geometry is the same
    const Tensor<T>& ws = w ? *w : *wbar;
    kernels::conv2d_backward(geometry_of(xs, ws), x ? x->data() : nullptr, w ? w->data() : nullptr,
                             ybar.data(),
                             kernels::ConvAdjoints<T>{.x = xbar ? xbar->data() : nullptr,
                                                      .w = wbar ? wbar->data() : nullptr,
                                                      .b = bbar ? bbar->data() : nullptr,
                                                      .accumulate_x = !ow[0],
                                                      .accumulate_w = !ow[1],
                                                      .accumulate_b = !ow[2]});
  }
};

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
