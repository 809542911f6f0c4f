// permute: output axis i is input axis perm[i] (numpy.transpose), for any rank. Linear:
//   JVP   dy    = permute(dx, perm)
//   VJP   xbar += permute(ybar, inverse(perm))
// Both run over y in row-major order and read (JVP) or add into (VJP) x at the permuted offset:
// every element of x is touched exactly once, so output rows run in parallel with no conflicts.
#include <algorithm>

#include <amari/autodiff/kernels/blocks.hpp>
#include <amari/autodiff/ops/primitive.hpp>

namespace amari {
namespace ops {

struct Permute {
  static constexpr const char* name = "permute";
  static constexpr int arity = 1;
  static constexpr unsigned saves = save::none;
  static constexpr bool linear = true;
  std::vector<int> perm;

  std::string perm_str() const {
    std::string s = "{";
    for (std::size_t i = 0; i < perm.size(); ++i) s += (i ? ", " : "") + std::to_string(perm[i]);
    return s + "}";
  }
  Shape output_shape(const Shape& x) const {
    std::vector<int> sorted = perm;
    std::sort(sorted.begin(), sorted.end());
    bool ok = static_cast<int>(perm.size()) == x.rank();
    for (std::size_t i = 0; ok && i < sorted.size(); ++i) ok = sorted[i] == static_cast<int>(i);
    if (!ok) {
      throw ShapeError("permute: perm " + perm_str() + " is not a permutation of the " +
                       std::to_string(x.rank()) + " axes of shape " + x.str());
    }
    std::array<Index, Shape::kMaxRank> dims{};
    for (int a = 0; a < x.rank(); ++a)
      dims[static_cast<std::size_t>(a)] = x[perm[static_cast<std::size_t>(a)]];
    return Shape(std::span<const Index>(dims.data(), static_cast<std::size_t>(x.rank())));
  }
  // For y in row-major order: f(y offset, x offset of its first element, x stride of y's last axis,
  // run length) per row of y's last axis (rank padded to 4 with leading axes of extent 1).
  template <class F>
  void for_each_row(const Shape& x, const F& f) const {
    const int rank = x.rank();
    std::array<Index, 4> ydims{1, 1, 1, 1}, xstride{0, 0, 0, 0};
    std::array<Index, Shape::kMaxRank> stride{};
    Index s = 1;
    for (int a = rank - 1; a >= 0; --a) stride[static_cast<std::size_t>(a)] = s, s *= x[a];
    for (int a = 0; a < rank; ++a) {
      const auto p = static_cast<std::size_t>(perm[static_cast<std::size_t>(a)]);
      ydims[static_cast<std::size_t>(4 - rank + a)] = x[static_cast<int>(p)];
      xstride[static_cast<std::size_t>(4 - rank + a)] = stride[p];
    }
    const Index rows = ydims[0] * ydims[1] * ydims[2], n = ydims[3];
    kernels::parallel_for(rows, rows * n, [&](Index r) {
      const Index i0 = r / (ydims[1] * ydims[2]), i1 = (r / ydims[2]) % ydims[1], i2 = r % ydims[2];
      f(r * n, i0 * xstride[0] + i1 * xstride[1] + i2 * xstride[2], xstride[3], n);
    });
  }
  template <Real T>
  void gather(const Tensor<T>& x, Tensor<T>& y) const {
    for_each_row(x.shape(), [&](Index yo, Index xo, Index step, Index n) {
      const T* src = x.data() + xo;
      T* dst = y.data() + yo;
      if (step == 1) {
        std::copy_n(src, n, dst);
      } else {
        for (Index i = 0; i < n; ++i) dst[i] = src[i * step];
      }
    });
  }
  template <Real T>
  void primal(const Tensor<T>& x, Tensor<T>& y) const {
    gather(x, y);
  }
  template <Real T>
  void jvp(const detail::Saved<T, 1>&, const Tensor<T>& dx, Tensor<T>& dy) const {
    gather(dx, dy);
  }
  template <Real T>
  void vjp(const detail::Saved<T, 1>&, const Tensor<T>& ybar, Tensor<T>& xbar, detail::Overwrite ow) const {
    // A permutation reaches every element of xbar once: a fresh xbar is written, not added to.
    for_each_row(xbar.shape(), [&](Index yo, Index xo, Index step, Index n) {
      T* dst = xbar.data() + xo;
      const T* src = ybar.data() + yo;
      if (ow[0]) {
        for (Index i = 0; i < n; ++i) dst[i * step] = src[i];
      } else {
        for (Index i = 0; i < n; ++i) dst[i * step] += src[i];
      }
    });
  }
};

}  // namespace ops

template <Value V>
V permute(const V& x, const std::vector<int>& perm) {
  return detail::apply(ops::Permute{.perm = perm}, x);
}
#define AMARI_INSTANTIATE(V) template V permute<V>(const V&, const std::vector<int>&);
AMARI_FOR_EACH_VALUE_TYPE(AMARI_INSTANTIATE)
#undef AMARI_INSTANTIATE

}  // namespace amari
