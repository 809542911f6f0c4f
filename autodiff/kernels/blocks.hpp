// Loops over independent work items and per-channel sums over rows (internal; used by the image
// and normalization primitives in autodiff/ops).
//
// Both follow the rules of elementwise.hpp: OpenMP only above kParallelElements (vector.hpp) of
// work, and a
// partition that does not depend on the thread count, so every result is bitwise the same at any
// number of threads.
#pragma once

#include <omp.h>

#include <algorithm>
#include <type_traits>
#include <utility>
#include <vector>

#include <amari/autodiff/kernels/elementwise.hpp>

namespace amari::kernels {

/// f(i) for i in [0, n), in parallel (static schedule) when `work` (elements touched in total) is
/// at least kParallelElements. The items must be independent.
template <class F>
void parallel_for(Index n, Index work, const F& f) {
  if (n < 2 || work < kParallelElements || omp_get_max_threads() == 1) {
    for (Index i = 0; i < n; ++i) f(i);
    return;
  }
#pragma omp parallel for schedule(static)
  for (Index i = 0; i < n; ++i) f(i);
}

/// f(std::integral_constant<int, n>) for a runtime n in [First, Last]: a register tile whose size
/// the shapes choose, compiled for each size it can take. Nothing is called for n outside.
template <int First, int Last, class F>
void with_constant(int n, const F& f) {
  [&]<int... I>(std::integer_sequence<int, I...>) {
    (void)((n == First + I ? (f(std::integral_constant<int, First + I>{}), true) : false) || ...);
  }(std::make_integer_sequence<int, Last - First + 1>{});
}

/// Rows per block of a row-blocked reduction over (rows, cols) data: about 1024 elements a block,
/// so a block stays in L1 and float partial sums stay short.
inline Index rows_per_block(Index cols) {
  return std::max<Index>(1, Index{1024} / std::max<Index>(cols, 1));
}

/// K per-column sums over the rows of (rows, cols) data: out[k * cols + c] = sum over rows of the
/// k-th term. `block(r0, r1, acc)` adds the terms of rows [r0, r1) to acc (K * cols entries of T,
/// zeroed, acc[k * cols + c]); its inner loop runs over the contiguous columns and vectorizes.
/// Blocks of rows_per_block(cols) rows are summed in T, in parallel, and their partials are added
/// in block order in double.
template <int K, class T, class F>
void column_sums(Index rows, Index cols, const F& block, double* out) {
  std::fill(out, out + K * cols, 0.0);
  if (rows == 0 || cols == 0) return;
  const Index per = rows_per_block(cols);
  const Index blocks = (rows + per - 1) / per;
  const Index width = K * cols;
  std::vector<T> partial(static_cast<std::size_t>(blocks * width), T(0));
  parallel_for(blocks, rows * cols * K, [&](Index b) {
    block(b * per, std::min(rows, (b + 1) * per), partial.data() + b * width);
  });
  for (Index b = 0; b < blocks; ++b) {
    const T* p = partial.data() + b * width;
    for (Index i = 0; i < width; ++i) out[i] += static_cast<double>(p[i]);
  }
}

}  // namespace amari::kernels
