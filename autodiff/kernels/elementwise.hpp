// Vectorized element-wise kernels (internal; included only by the library's .cpp files).
//
// The derivative rules in autodiff/ops/*.cpp are written as small lambdas over SIMD batches, e.g.
//   map(n, dy, []<class B>(B y, B dx) { return (B(1) - y * y) * dx; }, y, dx);   // tanh JVP
// and these templates turn them into loops over xsimd batches (the default architecture of the
// build: AVX-512, AVX2 or SSE) with a padded tail, so the rule is written once and reads like the
// formula. The tail goes through the same batch code on a padded copy: results do not depend on
// where an element falls.
#pragma once

#include <omp.h>

#include <algorithm>
#include <array>
#include <cstring>
#include <tuple>
#include <utility>
#include <xsimd/xsimd.hpp>

#include <amari/autodiff/kernels/vector.hpp>
#include <amari/autodiff/shape.hpp>

namespace amari::kernels {

template <class T>
using Batch = xsimd::batch<T>;

// The passes below run on one thread under kParallelElements elements (vector.hpp).
/// Elements per OpenMP work item (static schedule: deterministic partition per thread count).
inline constexpr Index kChunk = Index{1} << 13;

namespace detail {

// One batch of `f` over inputs at element i, with inputs either contiguous (stride 1) or a
// broadcast scalar (stride 0).
template <class T, class F, class... P>
inline Batch<T> eval_batch(const F& f, Index i, const P&... in) {
  return f((in.second ? Batch<T>::load_unaligned(in.first + i) : Batch<T>(in.first[0]))...);
}

// Evaluates f on elements [begin, end) of contiguous/broadcast inputs and stores (or adds) into out.
template <bool kAccumulate, class T, class F, class... P>
void map_range(Index begin, Index end, T* out, const F& f, P... in) {
  constexpr Index W = static_cast<Index>(Batch<T>::size);
  Index i = begin;
  for (; i + W <= end; i += W) {
    Batch<T> r = eval_batch<T>(f, i, in...);
    if constexpr (kAccumulate) r += Batch<T>::load_unaligned(out + i);
    r.store_unaligned(out + i);
  }
  if (i == end) return;
  // Tail: copy the remaining elements into padded buffers (padding 1 keeps log/div/sqrt finite),
  // run the same batch code, and store only the valid lanes.
  const Index rest = end - i;
  auto pad = [&](const std::pair<const T*, Index>& p, std::array<T, W>& buf) {
    if (!p.second) return std::pair<const T*, Index>{p.first, 0};
    std::fill(buf.begin(), buf.end(), T(1));
    std::copy(p.first + i, p.first + i + rest, buf.begin());
    return std::pair<const T*, Index>{buf.data(), 1};
  };
  std::array<std::array<T, W>, sizeof...(P)> bufs;
  const auto padded = [&]<std::size_t... J>(std::index_sequence<J...>) {
    return std::tuple<P...>{pad(in, bufs[J])...};
  }(std::index_sequence_for<P...>{});
  Batch<T> r = std::apply([&](auto... p) { return eval_batch<T>(f, 0, p...); }, padded);
  alignas(64) std::array<T, W> res;
  r.store_unaligned(res.data());
  for (Index j = 0; j < rest; ++j) {
    if constexpr (kAccumulate) {
      out[i + j] += res[static_cast<std::size_t>(j)];
    } else {
      out[i + j] = res[static_cast<std::size_t>(j)];
    }
  }
}

template <bool kAccumulate, class T, class F, class... In>
void map_flat(Index n, T* out, const F& f, const In*... in) {
  if (n <= 0) return;
  if (n < kParallelElements || omp_get_max_threads() == 1) {
    map_range<kAccumulate>(Index{0}, n, out, f, std::pair<const T*, Index>{in, 1}...);
    return;
  }
  const Index chunks = (n + kChunk - 1) / kChunk;
#pragma omp parallel for schedule(static)
  for (Index c = 0; c < chunks; ++c) {
    const Index b = c * kChunk, e = std::min(n, b + kChunk);
    map_range<kAccumulate>(b, e, out, f, std::pair<const T*, Index>{in, 1}...);
  }
}

// Shapes padded on the left to rank 4, and element strides with 0 on broadcast axes. Only called
// for shapes with elements, whose partial products cannot overflow (at most kMaxElements).
struct Layout4 {
  std::array<Index, 4> dims{1, 1, 1, 1};
  std::array<Index, 4> strides{0, 0, 0, 0};
};

inline Layout4 layout_for(const Shape& shape, const Shape& out) {
  Layout4 l;
  const int off = 4 - out.rank();
  const int in_off = out.rank() - shape.rank();
  Index stride = 1;
  for (int a = shape.rank() - 1; a >= 0; --a) {
    const int oa = a + in_off + off;
    l.dims[static_cast<std::size_t>(oa)] = shape[a];
    l.strides[static_cast<std::size_t>(oa)] = (shape[a] == 1 && out[a + in_off] != 1) ? 0 : stride;
    stride *= shape[a];
  }
  for (int a = 0; a < 4; ++a) {
    if (l.dims[static_cast<std::size_t>(a)] == 1) l.strides[static_cast<std::size_t>(a)] = 0;
  }
  return l;
}

inline std::array<Index, 4> dims4(const Shape& out) {
  std::array<Index, 4> d{1, 1, 1, 1};
  for (int a = 0; a < out.rank(); ++a) d[static_cast<std::size_t>(4 - out.rank() + a)] = out[a];
  return d;
}

}  // namespace detail

/// out[i] = f(in[i]...) for i in [0, n); `f` takes and returns Batch<T>.
template <class T, class F, class... In>
void map(Index n, T* out, const F& f, const In*... in) {
  detail::map_flat<false>(n, out, f, in...);
}

/// out[i] += f(in[i]...) for i in [0, n).
template <class T, class F, class... In>
void map_accumulate(Index n, T* out, const F& f, const In*... in) {
  detail::map_flat<true>(n, out, f, in...);
}

/// NumPy-style broadcast of two shapes (aligned on the right; a dimension of 1 stretches).
/// Throws ShapeError naming `op` and both shapes when they are incompatible, SizeError naming them
/// when the result would have more than kMaxElements elements.
Shape broadcast_shapes(const char* op, const Shape& a, const Shape& b);

/// out = f(inputs...) with every input broadcast to `out_shape` (each input is a (pointer, shape)
/// pair). kAccumulate adds into out instead of overwriting. Returns at once when out_shape has no
/// elements, however large its other extents: no loop runs over them.
template <bool kAccumulate, class T, class F, class... P>
void broadcast_map(const Shape& out_shape, T* out, const F& f, const P&... in) {
  // An empty output has an empty input too (0 broadcasts only against 0 or 1), and its other
  // extents may be as large as Index allows: neither the rows nor the strides are computed then.
  if (out_shape.numel() == 0) return;
  const bool flat = ((in.second == out_shape) && ...);
  if (flat) {
    detail::map_flat<kAccumulate>(out_shape.numel(), out, f, in.first...);
    return;
  }
  const auto d = detail::dims4(out_shape);
  const std::array<detail::Layout4, sizeof...(P)> lay{detail::layout_for(in.second, out_shape)...};
  const Index rows = d[0] * d[1] * d[2];
  const Index n = d[3];
  auto row = [&](Index r) {
    const Index i0 = r / (d[1] * d[2]), i1 = (r / d[2]) % d[1], i2 = r % d[2];
    auto at = [&](const T* base, const detail::Layout4& l) {
      return std::pair<const T*, Index>{base + i0 * l.strides[0] + i1 * l.strides[1] + i2 * l.strides[2],
                                        l.strides[3]};
    };
    [&]<std::size_t... J>(std::index_sequence<J...>) {
      detail::map_range<kAccumulate>(Index{0}, n, out + r * n, f, at(in.first, lay[J])...);
    }(std::index_sequence_for<P...>{});
  };
  if (out_shape.numel() < kParallelElements || omp_get_max_threads() == 1) {
    for (Index r = 0; r < rows; ++r) row(r);
  } else {
#pragma omp parallel for schedule(static)
    for (Index r = 0; r < rows; ++r) row(r);
  }
}

/// dst += src summed over the axes along which dst's shape was broadcast to src's shape
/// (the adjoint of broadcasting). Deterministic: fixed summation order. Nothing to add when either
/// shape has no elements (an empty src sums to zero).
template <class T>
void sum_to_accumulate(const T* src, const Shape& src_shape, T* dst, const Shape& dst_shape);

}  // namespace amari::kernels
