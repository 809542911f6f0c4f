// Internal: the library's one layer of vector kernels (BLAS-1 style, on raw pointers), with its one
// parallel threshold and its one deterministic reduction. Autodiff's sums (the sum op, layer norm's
// moments) and curvature's vector arithmetic (vector_ops.hpp, CG's fused passes in
// detail/cg_kernels.hpp, Lanczos' kernels over a set of vectors) use the kernels; the element-wise
// passes of autodiff (elementwise.hpp, blocks.hpp, conv.cpp), nn's Adam step and curvature's
// diagonal and dense operators use the threshold.
//
// Threshold: loops over fewer than kParallelElements elements run on the calling thread.
//
// Reduction: a sum over [0, n) cuts it into at most kMaxBlocks blocks of at least kMinBlock
// elements. Both numbers are fixed, so the block boundaries (and thus the summation order) depend
// on n only. Each block sums into kLanes = 8 accumulators in double (products formed in double also
// for T = float): element i of a block goes to lane (i - block start) mod 8, each lane adds its
// terms in element order, and the lanes are combined in a fixed pairwise order (combine_lanes).
// Block sums are combined in block order, whatever thread produced them. A result is therefore
// bit-identical for any number of threads, with or without OpenMP, and for any start address of
// the data; every sum written with block_sums (dot here, CG's fused passes) gives the same bits as
// dot() on the same terms. sum() is the one exception (vector.cpp says why): fixed blocks too,
// so as deterministic, but summed in SIMD lanes of T.
//
// The lanes are explicit 8-wide vectors (GCC/Clang vector extensions, as in gemm.cpp), so the
// lane order holds whatever the machine's vector width. Left to itself the compiler turned sums
// with stores in between (CG's fused passes) into scalar code, measured 2-3x slower.
#pragma once

#include <omp.h>

#include <algorithm>
#include <cstring>

#include <amari/autodiff/shape.hpp>

#if defined(__AVX512F__)
#include <immintrin.h>
#endif

namespace amari::kernels {

/// Loops over fewer elements than this run on the calling thread alone: waking the OpenMP team
/// costs a few microseconds, more than a cheap pass over 64k elements saves. The threshold of every
/// element-wise and vector pass (GEMM and the dense solvers size their parallel work themselves).
inline constexpr Index kParallelElements = Index{1} << 16;

// ---- the block partition ------------------------------------------------------------------------

inline constexpr Index kMinBlock = Index{1} << 12;
inline constexpr Index kMaxBlocks = 256;
inline constexpr int kLanes = 8;

/// The partition of [0, n): `count` blocks of `size` elements (the last one shorter).
struct Blocks {
  Index count;
  Index size;
};

inline Blocks blocks_for(Index n) {
  const Index count = std::clamp<Index>((n + kMinBlock - 1) / kMinBlock, 1, kMaxBlocks);
  return {count, (n + count - 1) / count};
}

struct Span {
  Index lo, hi;
};

/// Block b of the partition (empty when b is past the last block).
inline Span block_span(Index n, const Blocks& blocks, Index b) {
  const Index lo = std::min(n, b * blocks.size);
  return {lo, std::min(n, lo + blocks.size)};
}

/// body(c) for c in [0, count), over OpenMP threads (static schedule) when the vector has at least
/// kParallelElements elements, with no parallel region when only one thread may run: entering one
/// costs ~1.6 us even then, 3-5% of a CG pass. The items must be independent.
template <class Body>
inline void for_each_block(Index n, Index count, const Body& body) {
  if (n >= kParallelElements && omp_get_max_threads() > 1) {
#pragma omp parallel for schedule(static)
    for (Index c = 0; c < count; ++c) body(c);
  } else {
    for (Index c = 0; c < count; ++c) body(c);
  }
}

/// Block sums combined in block order.
inline double combine_blocks(const double* partial, Index count) {
  double s = 0.0;
  for (Index b = 0; b < count; ++b) s += partial[b];
  return s;
}

// ---- the lanes of a block -----------------------------------------------------------------------

template <class T>
struct VectorOf8 {
  typedef T type __attribute__((vector_size(8 * sizeof(T))));
};
/// The kLanes lanes of a block, as elements of T and as the double partial sums.
template <class T>
using Lanes = typename VectorOf8<T>::type;
using Sums = Lanes<double>;
static_assert(kLanes == 8, "Lanes holds one block's lanes");

template <class T>
inline void load(const T* p, Lanes<T>& v) {
  std::memcpy(&v, p, sizeof v);
}
template <class T>
inline void store(T* p, const Lanes<T>& v) {
  std::memcpy(p, &v, sizeof v);
}

// Exact widening to double: one vcvtps2pd with AVX-512. GCC 12 lowers __builtin_convertvector of
// 8 floats to four half-width conversions and two inserts; the conversions then limited the float
// passes (a dot over 269k floats: 43 vs 33 us).
inline void widen(const Lanes<float>& v, Sums& out) {
#if defined(__AVX512F__)
  __m256 f;
  std::memcpy(&f, &v, sizeof f);
  const __m512d d = _mm512_cvtps_pd(f);
  std::memcpy(&out, &d, sizeof out);
#else
  out = __builtin_convertvector(v, Sums);
#endif
}
inline void widen(const Lanes<double>& v, Sums& out) {
  out = v;
}

/// The lane sums of a block combined in the one fixed pairwise order.
inline double combine_lanes(const Sums& s) {
  return ((s[0] + s[4]) + (s[2] + s[6])) + ((s[1] + s[5]) + (s[3] + s[7]));
}

/// Adds the elements [i, hi) of a block to its lanes (i is a whole number of lane groups past the
/// block's start) and combines them. chunk(i, acc) handles the 8 elements from i; element(i)
/// returns the term of element i.
template <class Chunk, class Element>
inline double finish_block(Index i, Index hi, Sums& acc, const Chunk& chunk,
                           const Element& element) {
  for (; i + kLanes <= hi; i += kLanes) chunk(i, acc);
  for (int k = 0; i < hi; ++i, ++k) acc[k] += element(i);
  return combine_lanes(acc);
}

/// The reduction: one sum per block of the partition of [0, n), combined in block order.
/// With kPaired the blocks are taken two at a time: a block's lanes are one chain of dependent
/// additions, so a lone block waits on the adder's latency, while two independent chains keep it
/// busy. That pays in passes that only read (a dot: 33 vs 41 us on 269k floats); in a pass that
/// also writes (CG's residual update) one block at a time was faster (47 vs 51 us). Either way
/// the arithmetic, and so the result, is the same.
template <bool kPaired, class Chunk, class Element>
inline double block_sums(Index n, const Chunk& chunk, const Element& element) {
  if (n <= 0) return 0.0;
  constexpr Index kAtOnce = kPaired ? 2 : 1;
  const Blocks blocks = blocks_for(n);
  double partial[kMaxBlocks + 1];  // + 1: the empty partner of an odd last block
  for_each_block(n, (blocks.count + kAtOnce - 1) / kAtOnce, [&](Index c) {
    // Local copies: the kernels' pointers then live in registers. Read through the shared
    // closures they would be reloaded after every store, which might alias them.
    const Chunk local_chunk = chunk;
    const Element local_element = element;
    const Span a = block_span(n, blocks, kAtOnce * c);
    Sums acc_a = {};
    if constexpr (kPaired) {
      const Span b = block_span(n, blocks, 2 * c + 1);
      Sums acc_b = {};
      Index m = std::min(a.hi - a.lo, b.hi - b.lo);
      m -= m % kLanes;
      for (Index j = 0; j < m; j += kLanes) {
        local_chunk(a.lo + j, acc_a);
        local_chunk(b.lo + j, acc_b);
      }
      partial[2 * c] = finish_block(a.lo + m, a.hi, acc_a, local_chunk, local_element);
      partial[2 * c + 1] = finish_block(b.lo + m, b.hi, acc_b, local_chunk, local_element);
    } else {
      partial[c] = finish_block(a.lo, a.hi, acc_a, local_chunk, local_element);
    }
  });
  return combine_blocks(partial, blocks.count);
}

// The terms of x^T y: 8 products per chunk, one per element.
template <class T>
inline auto dot_chunk(const T* x, const T* y) {
  return [=](Index i, Sums& acc) {
    Lanes<T> xv, yv;
    load(x + i, xv);
    load(y + i, yv);
    Sums xd, yd;
    widen(xv, xd);
    widen(yv, yd);
    acc += xd * yd;
  };
}
template <class T>
inline auto dot_element(const T* x, const T* y) {
  return [=](Index i) { return static_cast<double>(x[i]) * static_cast<double>(y[i]); };
}

/// sum_{j in [lo, hi)} x_j y_j of one block [lo, hi) of the partition, in its lanes: the block
/// sums of dot(), for kernels that reduce several vectors per block (Lanczos' Q^T w).
template <class T>
inline double block_dot(const T* x, const T* y, Index lo, Index hi) {
  Sums acc = {};
  return finish_block(lo, hi, acc, dot_chunk(x, y), dot_element(x, y));
}

// ---- the kernels --------------------------------------------------------------------------------

/// sum_i x_i y_i over [0, n), accumulated in double (products in double also for T = float), by
/// the reduction above: bit-identical for any thread count. Cost: 2n reads.
template <class T>
double dot(Index n, const T* x, const T* y);

/// sum_i x_i over [0, n): blocks of 1024 elements summed in SIMD lanes of T, block sums added in
/// double in block order; bit-identical for any thread count. Cost: n reads.
template <class T>
double sum(Index n, const T* x);

/// y <- alpha x + y over [0, n). Cost: 2n reads, n writes.
template <class T>
void axpy(Index n, T alpha, const T* x, T* y);

/// y <- x + beta y over [0, n) (a CG direction update p = z + beta p). Cost: 2n reads, n writes.
template <class T>
void xpby(Index n, const T* x, T beta, T* y);

/// x <- alpha x over [0, n). Cost: n reads, n writes.
template <class T>
void scal(Index n, T alpha, T* x);

/// dst <- src over [0, n) (memcpy, split over threads for long vectors; nothing when src == dst).
template <class T>
void copy(Index n, const T* src, T* dst);

/// True if none of x[0, n) is NaN or +-inf. Cost: n reads.
template <class T>
bool all_finite(Index n, const T* x);

#define AMARI_KERNELS_VECTOR_EXTERN(T)                      \
  extern template double dot<T>(Index, const T*, const T*); \
  extern template double sum<T>(Index, const T*);           \
  extern template void axpy<T>(Index, T, const T*, T*);     \
  extern template void xpby<T>(Index, const T*, T, T*);     \
  extern template void scal<T>(Index, T, T*);               \
  extern template void copy<T>(Index, const T*, T*);        \
  extern template bool all_finite<T>(Index, const T*);
AMARI_KERNELS_VECTOR_EXTERN(float)
AMARI_KERNELS_VECTOR_EXTERN(double)
#undef AMARI_KERNELS_VECTOR_EXTERN

}  // namespace amari::kernels
