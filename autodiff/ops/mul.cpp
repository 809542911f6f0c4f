// mul: y = a * b, element-wise with broadcasting (ops.hpp).
//   JVP   dy        = da b + a db
//   VJP   abar     += unbroadcast(ybar b),   bbar += unbroadcast(ybar a)
//   2nd   abar_dot += unbroadcast(ybar db),  bbar_dot += unbroadcast(ybar da)
#include <amari/autodiff/ops/primitive.hpp>

namespace amari {
namespace ops {

struct Mul {
  static constexpr const char* name = "mul";
  static constexpr int arity = 2;
  static constexpr unsigned saves = save::x0 | save::x1;

  Shape output_shape(const Shape& a, const Shape& b) const { return kernels::broadcast_shapes(name, a, b); }
  template <Real T>
  void primal(const Tensor<T>& a, const Tensor<T>& b, Tensor<T>& y) const {
    detail::broadcast(y, []<class B>(B a, B b) { return a * b; }, a, b);
  }
  template <Real T>
  void jvp(const detail::Saved<T, 2>& s, const Tensor<T>* da, const Tensor<T>* db, Tensor<T>& dy) const {
    const Tensor<T>&a = s.x[0], &b = s.x[1];
    if (da && db) {
      detail::broadcast(dy, []<class B>(B a, B b, B da, B db) { return da * b + a * db; }, a, b, *da, *db);
    } else if (da) {
      detail::broadcast(dy, []<class B>(B b, B da) { return da * b; }, b, *da);
    } else {
      detail::broadcast(dy, []<class B>(B a, B db) { return a * db; }, a, *db);
    }
  }
  template <Real T>
  void vjp(const detail::Saved<T, 2>& s, const Tensor<T>& ybar, Tensor<T>* abar, Tensor<T>* bbar) const {
    const auto times = []<class B>(B yb, B other) { return yb * other; };
    if (abar) detail::accumulate_unbroadcast(*abar, ybar.shape(), times, ybar, s.x[1]);
    if (bbar) detail::accumulate_unbroadcast(*bbar, ybar.shape(), times, ybar, s.x[0]);
  }
  template <Real T>
  void vjp_tangent(const detail::Saved<T, 2>&, const Tensor<T>* da, const Tensor<T>* db, const Tensor<T>&,
                   const Tensor<T>& ybar, Tensor<T>* abar_dot, Tensor<T>* bbar_dot) const {
    const auto times = []<class B>(B yb, B d) { return yb * d; };
    if (abar_dot && db) detail::accumulate_unbroadcast(*abar_dot, ybar.shape(), times, ybar, *db);
    if (bbar_dot && da) detail::accumulate_unbroadcast(*bbar_dot, ybar.shape(), times, ybar, *da);
  }
};

}  // namespace ops

template <Value V>
V mul(const V& a, const V& b) {
  return detail::apply(ops::Mul{}, a, b);
}
#define AMARI_INSTANTIATE(V) template V mul<V>(const V&, const V&);
AMARI_FOR_EACH_VALUE_TYPE(AMARI_INSTANTIATE)
#undef AMARI_INSTANTIATE

}  // namespace amari
