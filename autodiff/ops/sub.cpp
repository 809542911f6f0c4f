// sub: y = a - b, element-wise with broadcasting (ops.hpp). Linear: no residuals.
//   JVP   dy    = da - db
//   VJP   abar += unbroadcast(ybar),  bbar += unbroadcast(-ybar)
#include <amari/autodiff/ops/primitive.hpp>

namespace amari {
namespace ops {

struct Sub {
  static constexpr const char* name = "sub";
  static constexpr int arity = 2;
  static constexpr unsigned saves = save::none;
  static constexpr bool linear = true;

  Shape output_shape(const Shape& a, const Shape& b) const { return kernels::broadcast_shapes(name, a, b); }
  template <Real T>
  void primal(const Tensor<T>& a, const Tensor<T>& b, Tensor<T>& y) const {
    detail::broadcast(y, []<class B>(B a, B b) { return a - b; }, a, b);
  }
  template <Real T>
  void jvp(const detail::Saved<T, 2>&, const Tensor<T>* da, const Tensor<T>* db, Tensor<T>& dy) const {
    if (da && db) {
      detail::broadcast(dy, []<class B>(B da, B db) { return da - db; }, *da, *db);
    } else if (da) {
      detail::broadcast(dy, []<class B>(B da) { return da; }, *da);
    } else {
      detail::broadcast(dy, []<class B>(B db) { return -db; }, *db);
    }
  }
  template <Real T>
  void vjp(const detail::Saved<T, 2>&, const Tensor<T>& ybar, Tensor<T>* abar, Tensor<T>* bbar) const {
    if (abar) kernels::sum_to_accumulate(ybar.data(), ybar.shape(), abar->data(), abar->shape());
    if (bbar) detail::accumulate_unbroadcast(*bbar, ybar.shape(), []<class B>(B yb) { return -yb; }, ybar);
  }
};

}  // namespace ops

template <Value V>
V sub(const V& a, const V& b) {
  return detail::apply(ops::Sub{}, a, b);
}
#define AMARI_INSTANTIATE(V) template V sub<V>(const V&, const V&);
AMARI_FOR_EACH_VALUE_TYPE(AMARI_INSTANTIATE)
#undef AMARI_INSTANTIATE

}  // namespace amari
