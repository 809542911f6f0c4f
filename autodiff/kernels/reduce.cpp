#include <amari/autodiff/kernels/reduce.hpp>

#include <cmath>
#include <limits>
#include <vector>

namespace amari::kernels {

AxisView axis_view(const Shape& shape, int axis) {
  AxisView v;
  // Saturating products: an empty shape may have other extents whose product overflows Index.
  v.outer = shape.partial_numel(0, axis);
  v.n = shape[axis];
  v.inner = shape.partial_numel(axis + 1, shape.rank());
  // No slice at all when an axis other than the reduced one is empty: every kernel then loops
  // over nothing, whatever the other extents are.
  if (v.outer == 0 || v.inner == 0) v.outer = v.inner = 0;
  return v;
}

Shape reduced_shape(const Shape& shape, int axis, bool keep_dims) {
  std::array<Index, Shape::kMaxRank> dims{};
  int r = 0;
  for (int a = 0; a < shape.rank(); ++a) {
    if (a == axis) {
      if (keep_dims) dims[static_cast<std::size_t>(r++)] = 1;
    } else {
      dims[static_cast<std::size_t>(r++)] = shape[a];
    }
  }
  return Shape(std::span<const Index>(dims.data(), static_cast<std::size_t>(r)));
}

// The slices are short (class counts, feature widths) and these kernels are a small share of any
// network's time, so they are plain loops: the compiler vectorizes the inner (contiguous) axis.
// Accumulation is in double for float too, so reductions stay accurate over long axes.

template <class T>
void reduce_sum(AxisView v, const T* x, T* y) {
  if (v.outer == 0) return;  // no output element
  std::vector<double> acc(static_cast<std::size_t>(v.inner));
  for (Index o = 0; o < v.outer; ++o) {
    std::fill(acc.begin(), acc.end(), 0.0);
    const T* xo = x + o * v.n * v.inner;
    for (Index j = 0; j < v.n; ++j)
      for (Index i = 0; i < v.inner; ++i) acc[static_cast<std::size_t>(i)] += xo[j * v.inner + i];
    for (Index i = 0; i < v.inner; ++i) y[o * v.inner + i] = static_cast<T>(acc[static_cast<std::size_t>(i)]);
  }
}

template <class T>
void reduce_dot(AxisView v, const T* a, const T* b, T* y) {
  if (v.outer == 0) return;  // no output element
  std::vector<double> acc(static_cast<std::size_t>(v.inner));
  for (Index o = 0; o < v.outer; ++o) {
    std::fill(acc.begin(), acc.end(), 0.0);
    const Index base = o * v.n * v.inner;
    for (Index j = 0; j < v.n; ++j)
      for (Index i = 0; i < v.inner; ++i) {
        const Index k = base + j * v.inner + i;
        acc[static_cast<std::size_t>(i)] += static_cast<double>(a[k]) * b[k];
      }
    for (Index i = 0; i < v.inner; ++i) y[o * v.inner + i] = static_cast<T>(acc[static_cast<std::size_t>(i)]);
  }
}

template <class T>
void reduce_max(AxisView v, const T* x, T* y) {
  if (v.outer == 0) return;  // no output element
  for (Index o = 0; o < v.outer; ++o) {
    for (Index i = 0; i < v.inner; ++i) {
      T m = -std::numeric_limits<T>::infinity();
      for (Index j = 0; j < v.n; ++j) {
        const T e = x[(o * v.n + j) * v.inner + i];
        if (std::isnan(e)) {  // NaN propagates, as in NumPy and PyTorch
          m = e;
          break;
        }
        m = e > m ? e : m;
      }
      y[o * v.inner + i] = m;
    }
  }
}

template <class T>
void argmax_of(AxisView v, const T* x, const T* max, Index* idx) {
  if (v.outer == 0) return;  // no output element
  for (Index o = 0; o < v.outer; ++o) {
    for (Index i = 0; i < v.inner; ++i) {
      const T m = max[o * v.inner + i];
      Index best = 0;
      for (Index j = 0; j < v.n; ++j) {
        const T e = x[(o * v.n + j) * v.inner + i];
        if (e == m || std::isnan(e)) {
          best = j;
          break;
        }
      }
      idx[o * v.inner + i] = best;
    }
  }
}

namespace {
// Calls f(o, i, m, lse) for every slice: m its max, lse its log-sum-exp.
template <class T, class F>
void for_each_slice_lse(AxisView v, const T* x, F f) {
  if (v.outer == 0) return;  // no slice
  for (Index o = 0; o < v.outer; ++o) {
    for (Index i = 0; i < v.inner; ++i) {
      const T* s = x + o * v.n * v.inner + i;
      T m = -std::numeric_limits<T>::infinity();
      bool nan = false;
      for (Index j = 0; j < v.n; ++j) {
        const T e = s[j * v.inner];
        nan = nan || std::isnan(e);
        m = e > m ? e : m;
      }
      T lse;
      if (nan) {
        lse = std::numeric_limits<T>::quiet_NaN();
      } else if (std::isinf(m)) {
        lse = m;  // all -inf gives -inf; any +inf gives +inf
      } else {
        double acc = 0;
        // exp in T (float exp is much cheaper than double), the sum in double.
        for (Index j = 0; j < v.n; ++j) acc += static_cast<double>(std::exp(s[j * v.inner] - m));
        lse = static_cast<T>(m + std::log(acc));
      }
      f(o, i, lse);
    }
  }
}
}  // namespace

template <class T>
void reduce_logsumexp(AxisView v, const T* x, T* y) {
  for_each_slice_lse(v, x, [&](Index o, Index i, T lse) { y[o * v.inner + i] = lse; });
}

template <class T>
void softmax(AxisView v, const T* x, T* y) {
  if (v.outer == 0 || v.n == 0) return;  // no element to write
  for_each_slice_lse(v, x, [&](Index o, Index i, T lse) {
    for (Index j = 0; j < v.n; ++j) {
      const Index k = (o * v.n + j) * v.inner + i;
      y[k] = std::exp(x[k] - lse);
    }
  });
}

template <class T>
void log_softmax(AxisView v, const T* x, T* y) {
  if (v.outer == 0 || v.n == 0) return;  // no element to write
  for_each_slice_lse(v, x, [&](Index o, Index i, T lse) {
    for (Index j = 0; j < v.n; ++j) {
      const Index k = (o * v.n + j) * v.inner + i;
      y[k] = x[k] - lse;
    }
  });
}

#define AMARI_INSTANTIATE(T)                                               \
  template void reduce_sum<T>(AxisView, const T*, T*);                     \
  template void reduce_dot<T>(AxisView, const T*, const T*, T*);           \
  template void reduce_max<T>(AxisView, const T*, T*);                     \
  template void argmax_of<T>(AxisView, const T*, const T*, Index*);        \
  template void reduce_logsumexp<T>(AxisView, const T*, T*);               \
  template void softmax<T>(AxisView, const T*, T*);                        \
  template void log_softmax<T>(AxisView, const T*, T*);
AMARI_INSTANTIATE(float)
AMARI_INSTANTIATE(double)
#undef AMARI_INSTANTIATE

}  // namespace amari::kernels
