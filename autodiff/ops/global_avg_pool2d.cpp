// global_avg_pool2d: y[n, c] = 1/(H W) sum_{h, w} x[n, h, w, c], x (N, H, W, C) -> (N, C). Linear:
//   JVP   dy             = the same mean of dx
//   VJP   xbar[n, h, w, c] += ybar[n, c] / (H W)
// One pass over x per rule; the inner loop runs over the contiguous channels. One image per work
// item, so the sums have a fixed order at any thread count.
#include <amari/autodiff/kernels/blocks.hpp>
#include <amari/autodiff/ops/primitive.hpp>

namespace amari {
namespace ops {

struct GlobalAvgPool2d {
  static constexpr const char* name = "global_avg_pool2d";
  static constexpr int arity = 1;
  static constexpr unsigned saves = save::none;
  static constexpr bool linear = true;

  Shape output_shape(const Shape& x) const {
    if (x.rank() != 4) {
      throw ShapeError("global_avg_pool2d: expects x (N, H, W, C), got shape " + x.str());
    }
    if (x[1] == 0 || x[2] == 0 || x[3] == 0) {
      throw ShapeError("global_avg_pool2d: x " + x.str() +
                       " has an empty spatial or channel axis (H, W and C must be >= 1)");
    }
    return Shape{x[0], x[3]};
  }
  template <Real T>
  static void pool(const Tensor<T>& x, Tensor<T>& y) {
    const Index n = x.shape()[0], hw = x.shape()[1] * x.shape()[2], c = x.shape()[3];
    const T inv = T(1) / static_cast<T>(hw);
    kernels::parallel_for(n, x.size(), [&](Index i) {
      const T* xi = x.data() + i * hw * c;
      T* yi = y.data() + i * c;
      std::fill(yi, yi + c, T(0));
      for (Index p = 0; p < hw; ++p)
        for (Index ch = 0; ch < c; ++ch) yi[ch] += xi[p * c + ch];
      for (Index ch = 0; ch < c; ++ch) yi[ch] *= inv;
    });
  }
  template <Real T>
  void primal(const Tensor<T>& x, Tensor<T>& y) const {
    pool(x, y);
  }
  template <Real T>
  void jvp(const detail::Saved<T, 1>&, const Tensor<T>& dx, Tensor<T>& dy) const {
    pool(dx, dy);
  }
  template <Real T>
  void vjp(const detail::Saved<T, 1>&, const Tensor<T>& ybar, Tensor<T>& xbar, detail::Overwrite ow) const {
    const Index n = xbar.shape()[0], hw = xbar.shape()[1] * xbar.shape()[2], c = xbar.shape()[3];
    const T inv = T(1) / static_cast<T>(hw);
    const bool fresh = ow[0];  // every element of xbar gets one term: written, or added to
    kernels::parallel_for(n, xbar.size(), [&](Index i) {
      const T* yi = ybar.data() + i * c;
      T* xi = xbar.data() + i * hw * c;
      for (Index p = 0; p < hw; ++p) {
        if (fresh) {
          for (Index ch = 0; ch < c; ++ch) xi[p * c + ch] = yi[ch] * inv;
        } else {
          for (Index ch = 0; ch < c; ++ch) xi[p * c + ch] += yi[ch] * inv;
        }
      }
    });
  }
};

}  // namespace ops

template <Value V>
V global_avg_pool2d(const V& x) {
  return detail::apply(ops::GlobalAvgPool2d{}, x);
}
#define AMARI_INSTANTIATE(V) template V global_avg_pool2d<V>(const V&);
AMARI_FOR_EACH_VALUE_TYPE(AMARI_INSTANTIATE)
#undef AMARI_INSTANTIATE

}  // namespace amari
