#include <amari/nn/torch_layout.hpp>

#include <array>
#include <string>

namespace amari::nn {

namespace {

// out = x with its axes permuted: out axis a is x axis perm[a] (numpy.transpose's convention),
// for rank 4. One pass, in the output's row-major order (the writes are sequential).
template <Real T>
Tensor<T> permute4(const Tensor<T>& x, const std::array<int, 4>& perm, const char* op) {
  if (x.rank() != 4) {
    throw ShapeError(std::string(op) + ": expects a rank-4 tensor, got shape " + x.shape().str());
  }
  const Shape& s = x.shape();
  const Shape out_shape{s[perm[0]], s[perm[1]], s[perm[2]], s[perm[3]]};
  Tensor<T> out = Tensor<T>::uninitialized(out_shape);
  // Row-major strides of x, then the stride of x along each output axis.
  const std::array<Index, 4> in_stride{s[1] * s[2] * s[3], s[2] * s[3], s[3], 1};
  std::array<Index, 4> stride{};
  for (int a = 0; a < 4; ++a)
    stride[static_cast<std::size_t>(a)] = in_stride[static_cast<std::size_t>(perm[a])];
  const T* src = x.data();
  T* dst = out.data();
  for (Index i0 = 0; i0 < out_shape[0]; ++i0) {
    for (Index i1 = 0; i1 < out_shape[1]; ++i1) {
      for (Index i2 = 0; i2 < out_shape[2]; ++i2) {
        const T* row = src + i0 * stride[0] + i1 * stride[1] + i2 * stride[2];
        for (Index i3 = 0; i3 < out_shape[3]; ++i3) *dst++ = row[i3 * stride[3]];
      }
    }
  }
  return out;
}

template <Real T>
Tensor<T> transpose2(const Tensor<T>& x) {
  const Index rows = x.shape()[0], cols = x.shape()[1];
  Tensor<T> out = Tensor<T>::uninitialized(Shape{cols, rows});
  for (Index j = 0; j < cols; ++j) {
    for (Index i = 0; i < rows; ++i) out.data()[j * rows + i] = x.data()[i * cols + j];
  }
  return out;
}

void require_rank(const Shape& s, TorchLayout layout, const char* op) {
  const int rank = layout == TorchLayout::transposed ? 2 : layout == TorchLayout::hwio ? 4 : -1;
  if (rank >= 0 && s.rank() != rank) {
    throw ShapeError(std::string(op) + ": a parameter in layout \"" + torch_layout_name(layout) +
                     "\" has rank " + std::to_string(rank) + ", got shape " + s.str());
  }
}

}  // namespace

const char* torch_layout_name(TorchLayout layout) {
  switch (layout) {
    case TorchLayout::same:
      return "same";
    case TorchLayout::transposed:
      return "transposed";
    case TorchLayout::hwio:
      return "hwio";
  }
  return "unknown";
}

template <Real T>
Tensor<T> nchw_to_nhwc(const Tensor<T>& x) {
  return permute4(x, {0, 2, 3, 1}, "nchw_to_nhwc");
}
template <Real T>
Tensor<T> nhwc_to_nchw(const Tensor<T>& x) {
  return permute4(x, {0, 3, 1, 2}, "nhwc_to_nchw");
}
template <Real T>
Tensor<T> oihw_to_hwio(const Tensor<T>& w) {
  return permute4(w, {2, 3, 1, 0}, "oihw_to_hwio");
}
template <Real T>
Tensor<T> hwio_to_oihw(const Tensor<T>& w) {
  return permute4(w, {3, 2, 0, 1}, "hwio_to_oihw");
}

Shape torch_shape(const Shape& s, TorchLayout layout) {
  require_rank(s, layout, "torch_shape");
  switch (layout) {
    case TorchLayout::transposed:
      return Shape{s[1], s[0]};
    case TorchLayout::hwio:
      return Shape{s[3], s[2], s[0], s[1]};
    case TorchLayout::same:
      break;
  }
  return s;
}

template <Real T>
Tensor<T> to_torch_layout(const Tensor<T>& t, TorchLayout layout) {
  require_rank(t.shape(), layout, "to_torch_layout");
  switch (layout) {
    case TorchLayout::transposed:
      return transpose2(t);
    case TorchLayout::hwio:
      return hwio_to_oihw(t);
    case TorchLayout::same:
      break;
  }
  return t.clone();
}

template <Real T>
Tensor<T> from_torch_layout(const Tensor<T>& t, TorchLayout layout, const Shape& amari_shape) {
  const Shape expected = torch_shape(amari_shape, layout);
  if (!(t.shape() == expected)) {
    throw ShapeError("from_torch_layout: a parameter of amari shape " + amari_shape.str() +
                     " in layout \"" + torch_layout_name(layout) + "\" has PyTorch shape " +
                     expected.str() + ", got " + t.shape().str());
  }
  switch (layout) {
    case TorchLayout::transposed:
      return transpose2(t);
    case TorchLayout::hwio:
      return oihw_to_hwio(t);
    case TorchLayout::same:
      break;
  }
  return t.clone();
}

#define AMARI_TORCH_LAYOUT(T)                                           \
  template Tensor<T> nchw_to_nhwc<T>(const Tensor<T>&);                 \
  template Tensor<T> nhwc_to_nchw<T>(const Tensor<T>&);                 \
  template Tensor<T> oihw_to_hwio<T>(const Tensor<T>&);                 \
  template Tensor<T> hwio_to_oihw<T>(const Tensor<T>&);                 \
  template Tensor<T> to_torch_layout<T>(const Tensor<T>&, TorchLayout); \
  template Tensor<T> from_torch_layout<T>(const Tensor<T>&, TorchLayout, const Shape&);
AMARI_TORCH_LAYOUT(float)
AMARI_TORCH_LAYOUT(double)
#undef AMARI_TORCH_LAYOUT

}  // namespace amari::nn
