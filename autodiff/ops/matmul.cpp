// matmul: y = op(a) op(b) for rank-2 a, b; op transposes when asked (the GEMM reads the transposed
// layout, nothing is copied). Bilinear, so each rule is one or two GEMMs:
//   JVP   dy        = op(da) op(b) + op(a) op(db)
//   VJP   with ybar of shape (m, n), writing A' = op(a), B' = op(b):
//         A'bar += ybar B'^T        B'bar += A'^T ybar
//         (for a stored transposed, abar = (A'bar)^T = B' ybar^T; likewise for b)
//   2nd   abar_dot += the VJP formula for a with db in place of b; bbar_dot likewise with da.
// Counting GEMMs for a layer y = x W with a constant x: forward 1, JVP 1 (x dW), VJP 1 (x^T ybar);
// with an active x, JVP and VJP are 2 each. SEED-NOTES 4 counts these for an MLP.
#include <amari/autodiff/kernels/gemm.hpp>
#include <amari/autodiff/ops/primitive.hpp>

namespace amari {
namespace ops {

using kernels::Trans;

inline Trans flip(Trans t) { return t == Trans::no ? Trans::yes : Trans::no; }

// c = op(a) op(b) + beta c, with the extents read off the shapes.
template <Real T>
void gemm_into(Trans ta, const Tensor<T>& a, Trans tb, const Tensor<T>& b, Tensor<T>& c, T beta) {
  const Index m = ta == Trans::no ? a.shape()[0] : a.shape()[1];
  const Index k = ta == Trans::no ? a.shape()[1] : a.shape()[0];
  const Index n = tb == Trans::no ? b.shape()[1] : b.shape()[0];
  kernels::gemm<T>(ta, tb, m, n, k, T(1), a.data(), a.shape()[1], b.data(), b.shape()[1], beta,
                   c.data(), n);
}

struct MatMul {
  static constexpr const char* name = "matmul";
  static constexpr int arity = 2;
  static constexpr unsigned saves = save::x0 | save::x1;
  Trans ta = Trans::no, tb = Trans::no;

  Shape output_shape(const Shape& a, const Shape& b) const {
    auto describe = [&] {
      return "a " + a.str() + (ta == Trans::yes ? " transposed" : "") + ", b " + b.str() +
             (tb == Trans::yes ? " transposed" : "");
    };
    if (a.rank() != 2 || b.rank() != 2) {
      throw ShapeError(std::string("matmul: operands must have rank 2, got ") + describe());
    }
    const Index m = ta == Trans::no ? a[0] : a[1], k = ta == Trans::no ? a[1] : a[0];
    const Index kb = tb == Trans::no ? b[0] : b[1], n = tb == Trans::no ? b[1] : b[0];
    if (k != kb) {
      throw ShapeError("matmul: inner dimensions differ (" + std::to_string(k) + " vs " +
                       std::to_string(kb) + "): " + describe());
    }
    return Shape{m, n};
  }
  template <Real T>
  void primal(const Tensor<T>& a, const Tensor<T>& b, Tensor<T>& y) const {
    gemm_into(ta, a, tb, b, y, T(0));
  }
  template <Real T>
  void jvp(const detail::Saved<T, 2>& s, const Tensor<T>* da, const Tensor<T>* db, Tensor<T>& dy) const {
    if (da) gemm_into(ta, *da, tb, s.x[1], dy, T(0));
    if (db) gemm_into(ta, s.x[0], tb, *db, dy, da ? T(1) : T(0));
  }
  // abar += d<ybar, op(a) op(b)>/da, for the given b.
  template <Real T>
  void adjoint_a(const Tensor<T>& ybar, const Tensor<T>& b, Tensor<T>& abar) const {
    if (ta == Trans::no) {
      gemm_into(Trans::no, ybar, flip(tb), b, abar, T(1));
    } else {
      gemm_into(tb, b, Trans::yes, ybar, abar, T(1));
    }
  }
  // bbar += d<ybar, op(a) op(b)>/db, for the given a.
  template <Real T>
  void adjoint_b(const Tensor<T>& ybar, const Tensor<T>& a, Tensor<T>& bbar) const {
    if (tb == Trans::no) {
      gemm_into(flip(ta), a, Trans::no, ybar, bbar, T(1));
    } else {
      gemm_into(Trans::yes, ybar, ta, a, bbar, T(1));
    }
  }
  template <Real T>
  void vjp(const detail::Saved<T, 2>& s, const Tensor<T>& ybar, Tensor<T>* abar, Tensor<T>* bbar) const {
    if (abar) adjoint_a(ybar, s.x[1], *abar);
    if (bbar) adjoint_b(ybar, s.x[0], *bbar);
  }
  template <Real T>
  void vjp_tangent(const detail::Saved<T, 2>&, const Tensor<T>* da, const Tensor<T>* db, const Tensor<T>&,
                   const Tensor<T>& ybar, Tensor<T>* abar_dot, Tensor<T>* bbar_dot) const {
    if (abar_dot && db) adjoint_a(ybar, *db, *abar_dot);
    if (bbar_dot && da) adjoint_b(ybar, *da, *bbar_dot);
  }
};

}  // namespace ops

template <Value V>
V matmul(const V& a, const V& b, Trans trans_a, Trans trans_b) {
  return detail::apply(ops::MatMul{.ta = static_cast<kernels::Trans>(trans_a),
                                   .tb = static_cast<kernels::Trans>(trans_b)},
                       a, b);
}
#define AMARI_INSTANTIATE(V) template V matmul<V>(const V&, const V&, Trans, Trans);
AMARI_FOR_EACH_VALUE_TYPE(AMARI_INSTANTIATE)
#undef AMARI_INSTANTIATE

}  // namespace amari
