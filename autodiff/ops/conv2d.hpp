// Internal: what the conv2d primitives (ops/conv2d.cpp) and conv2d_relu_max_pool2d
// (ops/conv2d_relu_max_pool2d.cpp) share: validation, geometry and the three bilinear maps of a
// convolution. The math and the kernels' design are in ops/conv2d.cpp.
#pragma once

#include <string>

#include <amari/autodiff/kernels/conv.hpp>
#include <amari/autodiff/ops/primitive.hpp>

namespace amari::ops {

// What conv2d with and without a bias share: validation, geometry and the three bilinear maps.
struct Conv2dBase {
  static constexpr const char* name = "conv2d";
  static constexpr unsigned saves = save::x0 | save::x1;
  Conv2dOptions options;
  const char* op = "conv2d";  // the primitive named in errors

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
      throw ShapeError(std::string(op) + ": " + what + describe(x, w, b));
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
      throw SizeError(std::string(op) + ": the output has more than 2^48 elements" + describe(x, w, b));
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

}  // namespace amari::ops
