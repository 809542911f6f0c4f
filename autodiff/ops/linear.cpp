// linear: y = x w + b, the affine map of a dense layer: x (N, in), w (in, out), b (out), y (N, out).
// One primitive instead of matmul followed by a broadcast add: the bias is written into y first and
// the GEMM accumulates onto it, so the layer costs one pass over y and one allocation, not two.
//   JVP   dy        = dx w + x dw + db                    (db added to every row)
//   VJP   xbar     += ybar w^T,   wbar += x^T ybar,   bbar += sum over rows of ybar
//   2nd   xbar_dot += ybar dw^T,  wbar_dot += dx^T ybar  (bilinear in (x, w); linear in b)
#include <amari/autodiff/kernels/gemm.hpp>
#include <amari/autodiff/ops/primitive.hpp>

namespace amari {
namespace ops {

using kernels::Trans;

struct Linear {
  static constexpr const char* name = "linear";
  static constexpr int arity = 3;
  static constexpr unsigned saves = save::x0 | save::x1;

  Shape output_shape(const Shape& x, const Shape& w, const Shape& b) const {
    if (x.rank() != 2 || w.rank() != 2 || b.rank() != 1 || x[1] != w[0] || b[0] != w[1]) {
      throw ShapeError("linear: expects x (N, in), w (in, out), b (out); got x " + x.str() + ", w " + w.str() +
                       ", b " + b.str());
    }
    return Shape{x[0], w[1]};
  }
  // c (m, n) = op(a) op(b) + beta c.
  template <Real T>
  static void gemm(Trans ta, const Tensor<T>& a, Trans tb, const Tensor<T>& b, Tensor<T>& c, T beta) {
    const Index m = ta == Trans::no ? a.shape()[0] : a.shape()[1];
    const Index k = ta == Trans::no ? a.shape()[1] : a.shape()[0];
    const Index n = tb == Trans::no ? b.shape()[1] : b.shape()[0];
    kernels::gemm<T>(ta, tb, m, n, k, T(1), a.data(), a.shape()[1], b.data(), b.shape()[1], beta, c.data(), n);
  }
  // Every row of y set to the vector b.
  template <Real T>
  static void fill_rows(Tensor<T>& y, const Tensor<T>& b) {
    detail::broadcast(y, []<class B>(B v) { return v; }, b);
  }
  template <Real T>
  void primal(const Tensor<T>& x, const Tensor<T>& w, const Tensor<T>& b, Tensor<T>& y) const {
    fill_rows(y, b);
    gemm(Trans::no, x, Trans::no, w, y, T(1));
  }
  template <Real T>
  void jvp(const detail::Saved<T, 3>& s, const Tensor<T>* dx, const Tensor<T>* dw, const Tensor<T>* db,
           Tensor<T>& dy) const {
    T beta = T(0);
    if (db) {
      fill_rows(dy, *db);
      beta = T(1);
    }
    if (dx) {
      gemm(Trans::no, *dx, Trans::no, s.x[1], dy, beta);
      beta = T(1);
    }
    if (dw) gemm(Trans::no, s.x[0], Trans::no, *dw, dy, beta);
  }
  template <Real T>
  void vjp(const detail::Saved<T, 3>& s, const Tensor<T>& ybar, Tensor<T>* xbar, Tensor<T>* wbar,
           Tensor<T>* bbar, detail::Overwrite ow) const {
    if (xbar) gemm(Trans::no, ybar, Trans::yes, s.x[1], *xbar, ow[0] ? T(0) : T(1));
    if (wbar) gemm(Trans::yes, s.x[0], Trans::no, ybar, *wbar, ow[1] ? T(0) : T(1));
    if (bbar) detail::assign_or_accumulate_sum_to(ow[2], ybar, *bbar);
  }
  template <Real T>
  void vjp_tangent(const detail::Saved<T, 3>&, const Tensor<T>* dx, const Tensor<T>* dw, const Tensor<T>*,
                   const Tensor<T>&, const Tensor<T>& ybar, Tensor<T>* xbar_dot, Tensor<T>* wbar_dot,
                   Tensor<T>*) const {
    if (xbar_dot && dw) gemm(Trans::no, ybar, Trans::yes, *dw, *xbar_dot, T(1));
    if (wbar_dot && dx) gemm(Trans::yes, *dx, Trans::no, ybar, *wbar_dot, T(1));
  }
};

}  // namespace ops

template <Value V>
V linear(const V& x, const V& w, const V& b) {
  return detail::apply(ops::Linear{}, x, w, b);
}
#define AMARI_INSTANTIATE(V) template V linear<V>(const V&, const V&, const V&);
AMARI_FOR_EACH_VALUE_TYPE(AMARI_INSTANTIATE)
#undef AMARI_INSTANTIATE

}  // namespace amari
