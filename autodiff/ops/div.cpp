// div: y = a / b, element-wise with broadcasting (ops.hpp).
//   JVP   dy        = (da - y db) / b
//   VJP   abar     += unbroadcast(ybar / b),          bbar += unbroadcast(-ybar y / b)
//   2nd   abar_dot += unbroadcast(-ybar db / b^2),
//         bbar_dot += unbroadcast(-ybar (da - 2 y db) / b^2)
#include <amari/autodiff/ops/primitive.hpp>

namespace amari {
namespace ops {

struct Div {
  static constexpr const char* name = "div";
  static constexpr int arity = 2;
  static constexpr unsigned saves = save::x1 | save::y;

  Shape output_shape(const Shape& a, const Shape& b) const { return kernels::broadcast_shapes(name, a, b); }
  template <Real T>
  void primal(const Tensor<T>& a, const Tensor<T>& b, Tensor<T>& y) const {
    detail::broadcast(y, []<class B>(B a, B b) { return a / b; }, a, b);
  }
  template <Real T>
  void jvp(const detail::Saved<T, 2>& s, const Tensor<T>* da, const Tensor<T>* db, Tensor<T>& dy) const {
    const Tensor<T>&b = s.x[1], &y = s.y;
    if (da && db) {
      detail::broadcast(dy, []<class B>(B b, B y, B da, B db) { return (da - y * db) / b; }, b, y, *da, *db);
    } else if (da) {
      detail::broadcast(dy, []<class B>(B b, B da) { return da / b; }, b, *da);
    } else {
      detail::broadcast(dy, []<class B>(B b, B y, B db) { return -y * db / b; }, b, y, *db);
    }
  }
  template <Real T>
  void vjp(const detail::Saved<T, 2>& s, const Tensor<T>& ybar, Tensor<T>* abar, Tensor<T>* bbar) const {
    if (abar) detail::accumulate_unbroadcast(*abar, ybar.shape(), []<class B>(B yb, B b) { return yb / b; }, ybar, s.x[1]);
    if (bbar)
      detail::accumulate_unbroadcast(*bbar, ybar.shape(), []<class B>(B yb, B b, B y) { return -yb * y / b; },
                                     ybar, s.x[1], s.y);
  }
  template <Real T>
  void vjp_tangent(const detail::Saved<T, 2>& s, const Tensor<T>* da, const Tensor<T>* db, const Tensor<T>&,
                   const Tensor<T>& ybar, Tensor<T>* abar_dot, Tensor<T>* bbar_dot) const {
    const Tensor<T>&b = s.x[1], &y = s.y;
    const Shape& full = ybar.shape();
    if (abar_dot && db)
      detail::accumulate_unbroadcast(*abar_dot, full, []<class B>(B yb, B b, B db) { return -yb * db / (b * b); },
                                     ybar, b, *db);
    if (!bbar_dot) return;
    if (da && db) {
      detail::accumulate_unbroadcast(
          *bbar_dot, full, []<class B>(B yb, B b, B y, B da, B db) { return -yb * (da - B(2) * y * db) / (b * b); },
          ybar, b, y, *da, *db);
    } else if (da) {
      detail::accumulate_unbroadcast(*bbar_dot, full, []<class B>(B yb, B b, B da) { return -yb * da / (b * b); },
                                     ybar, b, *da);
    } else if (db) {
      detail::accumulate_unbroadcast(
          *bbar_dot, full, []<class B>(B yb, B b, B y, B db) { return B(2) * yb * y * db / (b * b); }, ybar, b, y, *db);
    }
  }
};

}  // namespace ops

template <Value V>
V div(const V& a, const V& b) {
  return detail::apply(ops::Div{}, a, b);
}
#define AMARI_INSTANTIATE(V) template V div<V>(const V&, const V&);
AMARI_FOR_EACH_VALUE_TYPE(AMARI_INSTANTIATE)
#undef AMARI_INSTANTIATE

}  // namespace amari
