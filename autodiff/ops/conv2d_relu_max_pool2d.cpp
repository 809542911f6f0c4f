// conv2d_relu_max_pool2d: y = relu_max_pool2d(c, pool) with c = conv(x, w) + b (ops/conv2d.cpp,
// ops/max_pool2d.cpp). The pooling of relu is piecewise linear: with k* the stored selection (the
// window position of each pooled element's maximum, -1 where relu's derivative is 0), it is the
// linear map S that reads c at k*, and (SEED-NOTES' chain rule, conv2d's rules in between)
//   JVP   dy    = S (conv(dx, w) + conv(x, dw) + db)
//   VJP   cbar  = S^T ybar;  xbar += convT(cbar, w),  wbar += corr(x, cbar),  bbar += sum cbar
//   2nd   xbar_dot += convT(S^T ybar, dw),  wbar_dot += corr(dx, S^T ybar)   (S has no second
//         derivative: conv2d's bilinear term only)
// Why one primitive: in a curvature product the convolution's full-size tangent and cotangent are
// each written once and read once just to be pooled or to be unpooled; on train_cnn's first layer
// each is 12.8 MB (batch 128, 28 x 28 x 32 floats) against 3.2 MB pooled. And only one pixel of
// each window, per channel, carries a derivative through the pooling: the rules need the
// convolution there only. Where the pooling is 2 x 2 with stride 2 tiling the convolution's
// output, the convolution has one group and C_out fills whole SIMD vectors:
// - input channels in whole vectors too (a later layer; kernels/conv_pool_selected.cpp): the
//   tangent (with or without dx) is computed at the selected pixel of each (pooled element,
//   channel) only, as dot products over the input channels; xbar is the transposed convolution of
//   the selected pixels' cotangents only, scattered; wbar and bbar sum over the selected pixels
//   only, channel by channel; the second-order rule's two terms are those adjoints with dw and dx.
//   A quarter of the full-size rules' multiply-adds, and no full-size buffer;
// - otherwise, the rules that need neither dx nor xbar (a first layer, whose input is data) run at
//   the pooled resolution (kernels/conv_pool.hpp): the tangent computes the convolution at the four
//   pixels of each window in registers and keeps the one k* selects; the weight and bias adjoints
//   split each pooled cotangent by k* into its window's four pixels. A tangent with dx is one
//   direct convolution over dx and x together whose tiles hold whole windows and keep the selected
//   pixel (kernels/conv.cpp, conv2d_pool_tangent: C_out in whole register-tile slivers, an ISA with
//   32 vector registers).
// Everything else (the primal, which must pool the whole convolution anyway, and the rules not
// named above) goes through a full-size buffer and the unfused kernels. Values are those of conv2d
// followed by relu_max_pool2d, bit for bit; the fused rules add the same terms in another order
// (equal up to rounding; tests/autodiff checks both against the unfused pair).
// Residuals: x and w (conv2d's), and k* (relu_max_pool2d's, held by the op as there).
#include <amari/autodiff/kernels/conv_pool.hpp>
#include <amari/autodiff/ops/conv2d.hpp>
#include <amari/autodiff/ops/max_pool2d.hpp>

namespace amari {
namespace ops {

struct Conv2dReluMaxPool2d : Conv2dBase {
  static constexpr const char* name = "conv2d_relu_max_pool2d";
  static constexpr int arity = 3;
  ReluMaxPool2d pool;  // its geometry is over the convolution's output; its argmax holds k*

  Shape output_shape(const Shape& x, const Shape& w, const Shape& b) const {
    output(x, w, &b);  // validates the convolution
    return pool.g.output();
  }
  template <Real T>
  Tensor<T> convolution_buffer() const {
    return Tensor<T>::uninitialized(Shape{pool.g.n, pool.g.h, pool.g.w, pool.g.c});
  }
  // The fused rules apply (see the top of this file).
  template <Real T>
  bool fused(const kernels::ConvGeometry& g) const {
    return pool.quad<T>() && kernels::conv_pool_fusable<T>(g);
  }
  // The rules at the selected pixels apply: input channels in whole vectors (a later layer).
  template <Real T>
  bool selected(const kernels::ConvGeometry& g) const {
    return pool.quad<T>() && kernels::conv_pool_selected_applies<T>(g);
  }
  template <Real T>
  void primal(const Tensor<T>& x, const Tensor<T>& w, const Tensor<T>& b, Tensor<T>& y) const {
    Tensor<T> c = convolution_buffer<T>();
    forward(x, w, &b, c, false);
    pool.primal(c, y);
  }
  template <Real T>
  void jvp(const detail::Saved<T, 3>& s, const Tensor<T>* dx, const Tensor<T>* dw,
           const Tensor<T>* db, Tensor<T>& dy) const {
    const auto g = geometry_of(s.x[0], s.x[1]);
    if ((dx || dw) && selected<T>(g)) {
      kernels::conv_pool_selected_tangent(g, s.x[0].data(), s.x[1].data(),
                                          dx ? dx->data() : nullptr, dw ? dw->data() : nullptr,
                                          db ? db->data() : nullptr, pool.argmax->at.get(),
                                          dy.data());
      return;
    }
    if (!dx && fused<T>(g)) {
      kernels::conv_pool_tangent(g, s.x[0].data(), dw ? dw->data() : nullptr,
                                 db ? db->data() : nullptr, pool.argmax->at.get(), dy.data());
      return;
    }
    if ((dx || dw) && pool.quad<T>() && kernels::conv2d_pool_tangent_applies<T>(g)) {
      kernels::conv2d_pool_tangent(g, s.x[0].data(), s.x[1].data(), dx ? dx->data() : nullptr,
                                   dw ? dw->data() : nullptr, db ? db->data() : nullptr,
                                   pool.argmax->at.get(), dy.data());
      return;
    }
    Tensor<T> dc = convolution_buffer<T>();
    tangent(s.x[0], s.x[1], dx, dw, db, dc);
    pool.jvp(detail::Saved<T, 1>{}, dc, dy);
  }
  // cbar = S^T ybar, in a fresh full-size buffer.
  template <Real T>
  Tensor<T> unpooled(const Tensor<T>& ybar) const {
    Tensor<T> cbar = convolution_buffer<T>();
    pool.vjp(detail::Saved<T, 1>{}, ybar, cbar, detail::Overwrite{1});
    return cbar;
  }
  template <Real T>
  void vjp(const detail::Saved<T, 3>& s, const Tensor<T>& ybar, Tensor<T>* xbar, Tensor<T>* wbar,
           Tensor<T>* bbar, detail::Overwrite ow) const {
    if (!xbar && !wbar && !bbar) return;
    const auto g = geometry_of(s.x[0], s.x[1]);
    if (selected<T>(g)) {
      if (xbar)
        kernels::conv_pool_selected_input_adjoint(g, s.x[1].data(), ybar.data(),
                                                  pool.argmax->at.get(), xbar->data(), !ow[0]);
      if (wbar || bbar)
        kernels::conv_pool_selected_weight_adjoint(g, s.x[0].data(), ybar.data(),
                                                   pool.argmax->at.get(),
                                                   wbar ? wbar->data() : nullptr,
                                                   bbar ? bbar->data() : nullptr, !ow[1], !ow[2]);
      return;
    }
    if (!xbar && fused<T>(g)) {
      kernels::conv_pool_weight_adjoint(g, s.x[0].data(), ybar.data(), pool.argmax->at.get(),
                                        wbar ? wbar->data() : nullptr,
                                        bbar ? bbar->data() : nullptr, !ow[1], !ow[2]);
      return;
    }
    adjoints(&s.x[0], &s.x[1], unpooled(ybar), xbar, wbar, bbar, ow);
  }
  template <Real T>
  void vjp_tangent(const detail::Saved<T, 3>& s, const Tensor<T>* dx, const Tensor<T>* dw,
                   const Tensor<T>*, const Tensor<T>&, const Tensor<T>& ybar, Tensor<T>* xbar_dot,
                   Tensor<T>* wbar_dot, Tensor<T>*) const {
    Tensor<T>* x_dot = dw ? xbar_dot : nullptr;
    Tensor<T>* w_dot = dx ? wbar_dot : nullptr;
    if (!x_dot && !w_dot) return;
    const auto g = geometry_of(s.x[0], s.x[1]);
    if (selected<T>(g)) {  // conv2d's bilinear term, at the selected pixels
      const std::int32_t* k_star = pool.argmax->at.get();
      if (x_dot)
        kernels::conv_pool_selected_input_adjoint(g, dw->data(), ybar.data(), k_star, x_dot->data(), true);
      if (w_dot)
        kernels::conv_pool_selected_weight_adjoint(g, dx->data(), ybar.data(), k_star, w_dot->data(),
                                                   static_cast<T*>(nullptr), true, true);
      return;
    }
    adjoints(dx, dw, unpooled(ybar), x_dot, w_dot);
  }
};

}  // namespace ops

template <Value V>
V conv2d_relu_max_pool2d(const V& x, const V& w, const V& b, const Conv2dOptions& conv,
                         const Pool2dOptions& pool) {
  detail::require_defined<ops::Conv2dReluMaxPool2d>(x, w, b);
  ops::Conv2dReluMaxPool2d op{{.options = conv, .op = ops::Conv2dReluMaxPool2d::name}, {}};
  const Shape c = op.output(x.shape(), w.shape(), &b.shape());
  // The pooling's errors name the convolution's output; add the inputs it came from.
  const auto inputs = [&] {
    return " (the convolution's output, from x " + x.shape().str() + ", w " + w.shape().str() + ", b " +
           b.shape().str() + ")";
  };
  try {
    op.pool.g = detail::PoolGeometry::make(op.name, c, pool);
  } catch (const ShapeError& e) {
    throw ShapeError(e.what() + inputs());
  } catch (const ValueError& e) {
    throw ValueError(e.what() + inputs());
  }
  if constexpr (!std::is_same_v<V, Tensor<typename V::value_type>>) {
    op.pool.argmax = std::make_shared<ops::ReluMaxPool2d::Argmax>();
  }
  return detail::apply(op, x, w, b);
}
#define AMARI_INSTANTIATE(V)                                                                  \
  template V conv2d_relu_max_pool2d<V>(const V&, const V&, const V&, const Conv2dOptions&, \
                                       const Pool2dOptions&);
AMARI_FOR_EACH_VALUE_TYPE(AMARI_INSTANTIATE)
#undef AMARI_INSTANTIATE

}  // namespace amari
