// Internal: the one block partition behind every deterministic vector reduction in curvature/
// (vector_ops.cpp's single-vector kernels and lanczos.cpp's kernels over a set of vectors).
//
// A reduction cuts n into at most kMaxBlocks blocks of at least kMinBlock elements. Both numbers
// are fixed, so the block boundaries (and thus the summation order) depend on n only; each block
// sums into kLanes independent accumulators (lane = offset in block mod kLanes), which the
// compiler maps onto SIMD registers without needing permission to reassociate; block sums are
// combined in block order, whatever thread produced them. The result is bit-identical for any
// thread count. Long vectors (>= kParallelThreshold, vector_ops.hpp) are split over OpenMP threads.
#pragma once

#include <algorithm>

#include <amari/curvature/vector_ops.hpp>

namespace amari::curvature::detail {

inline constexpr Index kMinBlock = Index{1} << 12;
inline constexpr Index kMaxBlocks = 256;
inline constexpr int kLanes = 8;

struct Blocks {
  Index count;
  Index size;
};

inline Blocks blocks_for(Index n) {
  const Index count = std::clamp<Index>((n + kMinBlock - 1) / kMinBlock, 1, kMaxBlocks);
  return {count, (n + count - 1) / count};
}

/// sum_{j in [lo, hi)} x_j y_j in double, in kLanes lanes combined in a fixed pairwise order.
template <Real T>
double block_dot(const T* x, const T* y, Index lo, Index hi) {
  double acc[kLanes] = {};
  Index j = lo;
  for (; j + kLanes <= hi; j += kLanes) {
    for (int k = 0; k < kLanes; ++k) {
      acc[k] += static_cast<double>(x[j + k]) * static_cast<double>(y[j + k]);
    }
  }
  for (int k = 0; j < hi; ++j, ++k) acc[k] += static_cast<double>(x[j]) * static_cast<double>(y[j]);
  return ((acc[0] + acc[4]) + (acc[2] + acc[6])) + ((acc[1] + acc[5]) + (acc[3] + acc[7]));
}

/// Calls body(b) for every block b; in parallel (static schedule) only for long vectors.
template <class Body>
void for_each_block(Index n, const Blocks& blocks, Body body) {
  if (n >= kParallelThreshold) {
#pragma omp parallel for schedule(static)
    for (Index b = 0; b < blocks.count; ++b) body(b);
  } else {
    for (Index b = 0; b < blocks.count; ++b) body(b);
  }
}

}  // namespace amari::curvature::detail
