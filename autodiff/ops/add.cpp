// add: y = a + b, element-wise with broadcasting (ops.hpp). Linear: no residuals.
//   JVP   dy    = da + db                 (each broadcast to y's shape)
//   VJP   abar += unbroadcast(ybar),  bbar += unbroadcast(ybar)   (sum over broadcast axes)
#include <amari/autodiff/ops/primitive.hpp>

namespace amari {
namespace ops {

struct Add {
  static constexpr const char* name = "add";
  static constexpr int arity = 2;
  static constexpr unsigned saves = save::none;
  static constexpr bool linear = true;

  Shape output_shape(const Shape& a, const Shape& b) const { return kernels::broadcast_shapes(name, a, b); }
  template <Real T>
  void primal(const Tensor<T>& a, const Tensor<T>& b, Tensor<T>& y) const {
    detail::broadcast(y, []<class B>(B a, B b) { return a + b; }, a, b);
  }
  template <Real T>
  void jvp(const detail::Saved<T, 2>&, const Tensor<T>* da, const Tensor<T>* db, Tensor<T>& dy) const {
    if (da && db) {
      detail::broadcast(dy, []<class B>(B da, B db) { return da + db; }, *da, *db);
    } else {
      detail::broadcast(dy, []<class B>(B d) { return d; }, da ? *da : *db);
    }
  }
  template <Real T>
  void vjp(const detail::Saved<T, 2>&, const Tensor<T>& ybar, Tensor<T>* abar, Tensor<T>* bbar,
           detail::Overwrite ow) const {
    if (abar) detail::assign_or_accumulate_sum_to(ow[0], ybar, *abar);
    if (bbar) detail::assign_or_accumulate_sum_to(ow[1], ybar, *bbar);
  }
};

}  // namespace ops

template <Value V>
V add(const V& a, const V& b) {
  return detail::apply(ops::Add{}, a, b);
}
#define AMARI_INSTANTIATE(V) template V add<V>(const V&, const V&);
AMARI_FOR_EACH_VALUE_TYPE(AMARI_INSTANTIATE)
#undef AMARI_INSTANTIATE

}  // namespace amari
