// Internal: the fused vector passes of one conjugate-gradient iteration (cg.cpp).
//
// On large operators such as the GGN of an MLP, CG's own vector work is memory traffic: each
// vector is about as large as a core's share of the last-level cache, so a pass costs what it
// reads and writes. Composed from the BLAS-1 ops of vector_ops.hpp an iteration made six passes
// (the damping term, p^T A p, the residual update and its norm, the iterate update and the model's
// two dot products, the direction update), 12 vector reads and 4 writes. These three passes make
// 9 reads and 3 writes, each vector read once per pass that needs it:
//   cg_curvature       p, B p          -> p^T A p
//   cg_residual_step   p, B p, r       -> r, r^T r
//   cg_direction_step  p, x, z, r, b   -> x, p, x^T b, x^T r
// A pass cannot be fused with the next because each needs a scalar reduced over all of the
// previous one (alpha from p^T A p, beta from r^T r).
//
// Reductions use the block partition and lane order of blocked.hpp, so every sum here is
// bit-identical to the corresponding dot() of vector_ops.hpp, for any thread count; element
// updates are the same expressions as axpy and xpby there (compiled alike, with a * b + c fused
// or not in both). The loops are written in explicit
// 8-wide vectors (GCC/Clang vector extensions, as in kernels/gemm.cpp) whose elements are the
// kLanes lanes of blocked.hpp: element i of a block goes to lane (i - block start) mod 8, and each
// lane adds its products in element order, as block_dot does, whatever the machine's vector width.
// Left to itself the compiler turned the multi-sum loops into scalar code (it vectorizes
// block_dot's single sum, not sums with stores in between), measured 2-3x slower.
//
// Header-only, included by cg.cpp alone: templates used in one place.
#pragma once

#include <omp.h>

#include <algorithm>
#include <cstring>

#include <amari/autodiff/tensor.hpp>
#include <amari/curvature/detail/blocked.hpp>

#if defined(__AVX512F__)
#include <immintrin.h>
#endif

namespace amari::curvature::detail {

namespace cg_lanes {

static_assert(kLanes == 8, "the vectors below hold one block's lanes");

template <class T>
struct VectorOf8 {
  typedef T type __attribute__((vector_size(8 * sizeof(T))));
};
// The kLanes lanes of a block, as elements of T and as the double partial sums.
template <class T>
using Lanes = typename VectorOf8<T>::type;
using Sums = Lanes<double>;

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
// passes (cg_curvature on 269k elements: 43 vs 33 us).
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

// The lane sums combined in block_dot's fixed pairwise order.
inline double combine(const Sums& s) {
  return ((s[0] + s[4]) + (s[2] + s[6])) + ((s[1] + s[5]) + (s[3] + s[7]));
}

struct Span {
  Index lo, hi;
};

// Block b of the partition (empty when b is past the last block).
inline Span block_span(Index n, const Blocks& blocks, Index b) {
  const Index lo = std::min(n, b * blocks.size);
  return {lo, std::min(n, lo + blocks.size)};
}

// body(c) for c in [0, groups), over OpenMP threads for long vectors as blocked.hpp's
// for_each_block, but with no parallel region when only one thread may run: entering one costs
// ~1.6 us even then, 3-5% of a pass.
template <class Body>
inline void for_each_group(Index n, Index groups, const Body& body) {
  if (n >= kParallelThreshold && omp_get_max_threads() > 1) {
#pragma omp parallel for schedule(static)
    for (Index c = 0; c < groups; ++c) body(c);
  } else {
    for (Index c = 0; c < groups; ++c) body(c);
  }
}

// Adds the elements [i, hi) of a block to its lanes (i is a whole number of lane groups past the
// block's start) and combines them. chunk(i, acc) handles the 8 elements from i; element(i)
// returns the term of element i.
template <class Chunk, class Element>
inline double finish_block(Index i, Index hi, Sums& acc, const Chunk& chunk,
                           const Element& element) {
  for (; i + kLanes <= hi; i += kLanes) chunk(i, acc);
  for (int k = 0; i < hi; ++i, ++k) acc[k] += element(i);
  return combine(acc);
}

// One sum per block of the partition of [0, n), combined in block order. With kPaired the blocks
// are taken two at a time: a block's lanes are one chain of dependent additions, so a lone block
// waits on the adder's latency, while two independent chains keep it busy. That pays in the
// passes that only read (p^T A p: 33 vs 41 us on 269k floats); in the residual update, which also
// writes, one block at a time was faster (47 vs 51 us).
template <bool kPaired, class Chunk, class Element>
inline double block_sums(Index n, const Chunk& chunk, const Element& element) {
  if (n == 0) return 0.0;
  constexpr Index kAtOnce = kPaired ? 2 : 1;
  const Blocks blocks = blocks_for(n);
  double partial[kMaxBlocks + 1];  // + 1: the empty partner of an odd last block
  for_each_group(n, (blocks.count + kAtOnce - 1) / kAtOnce, [&](Index c) {
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
  double s = 0.0;
  for (Index b = 0; b < blocks.count; ++b) s += partial[b];
  return s;
}

// x^T (y + lambda x), or x^T y without kDamped. y + lambda x is formed in T as DampedOperator's
// axpy forms it.
template <bool kDamped, Real T>
double damped_dot(const T* x, const T* y, T lambda, Index n) {
  const auto chunk = [=](Index i, Sums& acc) {
    Lanes<T> xv, yv;
    load(x + i, xv);
    load(y + i, yv);
    if constexpr (kDamped) yv = yv + lambda * xv;
    Sums xd, yd;
    widen(xv, xd);
    widen(yv, yd);
    acc += xd * yd;
  };
  const auto element = [=](Index i) {
    T yi = y[i];
    if constexpr (kDamped) yi = y[i] + lambda * x[i];
    return static_cast<double>(x[i]) * static_cast<double>(yi);
  };
  return block_sums<true>(n, chunk, element);
}

// r <- r - alpha (q + lambda p) (without kDamped: r - alpha q), returning r^T r of the new r.
template <bool kDamped, Real T>
double residual_update(T minus_alpha, const T* p, const T* q, T lambda, T* r, Index n) {
  const auto chunk = [=](Index i, Sums& acc) {
    Lanes<T> pv, qv, rv;
    load(q + i, qv);
    load(r + i, rv);
    if constexpr (kDamped) {
      load(p + i, pv);
      qv = qv + lambda * pv;
    }
    rv = rv + minus_alpha * qv;
    store(r + i, rv);
    Sums rd;
    widen(rv, rd);
    acc += rd * rd;
  };
  const auto element = [=](Index i) {
    T qi = q[i];
    if constexpr (kDamped) qi = q[i] + lambda * p[i];
    const T ri = r[i] + minus_alpha * qi;
    r[i] = ri;
    return static_cast<double>(ri) * static_cast<double>(ri);
  };
  return block_sums<false>(n, chunk, element);
}

// r <- b and p <- b, returning b^T b.
template <Real T>
double copy_twice_and_norm(const T* b, T* r, T* p, Index n) {
  const auto chunk = [=](Index i, Sums& acc) {
    Lanes<T> bv;
    load(b + i, bv);
    store(r + i, bv);
    store(p + i, bv);
    Sums bd;
    widen(bv, bd);
    acc += bd * bd;
  };
  const auto element = [=](Index i) {
    r[i] = b[i];
    p[i] = b[i];
    return static_cast<double>(b[i]) * static_cast<double>(b[i]);
  };
  return block_sums<false>(n, chunk, element);
}

}  // namespace cg_lanes

/// r <- b and p <- b, and returns b^T b (= dot(b, b)): the start of a cold solve without a
/// preconditioner (x_0 = 0, r_0 = p_0 = b) in one pass. Cost: n reads, 2n writes.
template <Real T>
double cg_start(const Tensor<T>& b, Tensor<T>& r, Tensor<T>& p) {
  return cg_lanes::copy_twice_and_norm(b.data(), r.data(), p.data(), b.size());
}

/// x^T y, equal to dot(x, y) of vector_ops.hpp and faster on long float vectors (see
/// block_sums). Same lengths required (not checked). Cost: 2n reads.
template <Real T>
double cg_dot(const Tensor<T>& x, const Tensor<T>& y) {
  return cg_lanes::damped_dot<false>(x.data(), y.data(), T(0), x.size());
}

/// p^T (q + lambda p) with q = B p: the curvature p^T A p of A = B + lambda I, with the damped
/// product formed element by element as DampedOperator::apply forms it (lambda rounded to T, no
/// term for lambda = 0) but never stored. Cost: 2n reads.
template <Real T>
double cg_curvature(const Tensor<T>& p, const Tensor<T>& q, double lambda) {
  const T l = static_cast<T>(lambda);
  return lambda != 0.0 ? cg_lanes::damped_dot<true>(p.data(), q.data(), l, p.size())
                       : cg_lanes::damped_dot<false>(p.data(), q.data(), l, p.size());
}

/// r <- r - alpha (q + lambda p), the recursive residual of A = B + lambda I with q = B p as in
/// cg_curvature, and returns r^T r of the new r. Cost: 3n reads (2n for lambda = 0), n writes.
template <Real T>
double cg_residual_step(double alpha, const Tensor<T>& p, const Tensor<T>& q, double lambda,
                        Tensor<T>& r) {
  const T minus_alpha = static_cast<T>(-alpha);
  const T l = static_cast<T>(lambda);
  return lambda != 0.0 ? cg_lanes::residual_update<true>(minus_alpha, p.data(), q.data(), l,
                                                         r.data(), p.size())
                       : cg_lanes::residual_update<false>(minus_alpha, p.data(), q.data(), l,
                                                          r.data(), p.size());
}

/// What cg_direction_step sums over the new iterate.
struct CgModelSums {
  double xb;  ///< x^T b
  double xr;  ///< x^T r
};

/// x <- x + alpha p and p <- z + beta p (z = M^{-1} r, or r itself without a preconditioner), and
/// returns x^T b and x^T r of the new x, the two terms of the quadratic model value
/// -0.5 x^T (b + r). Cost: 4n reads (5n when z is not r), 2n writes.
template <Real T>
CgModelSums cg_direction_step(double alpha, double beta, const Tensor<T>& z, const Tensor<T>& r,
                              const Tensor<T>& b, Tensor<T>& p, Tensor<T>& x) {
  using namespace cg_lanes;
  const Index n = p.size();
  if (n == 0) return {0.0, 0.0};
  const Blocks blocks = blocks_for(n);
  double partial[kMaxBlocks][2];
  // Two sums per block: two independent chains already, no pairing of blocks needed.
  for_each_group(n, blocks.count, [&](Index k) {
    // Pointers and scalars in locals, as in block_sums.
    const T a = static_cast<T>(alpha);
    const T c = static_cast<T>(beta);
    const T* zp = z.data();
    const T* rp = r.data();
    const T* bp = b.data();
    T* pp = p.data();
    T* xp = x.data();
    const Span s = block_span(n, blocks, k);
    Sums xb = {}, xr = {};
    Index i = s.lo;
    for (; i + kLanes <= s.hi; i += kLanes) {
      Lanes<T> pv, xv, zv, rv, bv;
      load(pp + i, pv);
      load(xp + i, xv);
      load(zp + i, zv);
      load(rp + i, rv);
      load(bp + i, bv);
      xv = xv + a * pv;
      store(xp + i, xv);
      pv = zv + c * pv;
      store(pp + i, pv);
      Sums xd, rd, bd;
      widen(xv, xd);
      widen(rv, rd);
      widen(bv, bd);
      xb += xd * bd;
      xr += xd * rd;
    }
    for (int l = 0; i < s.hi; ++i, ++l) {
      const T xi = xp[i] + a * pp[i];
      xp[i] = xi;
      pp[i] = zp[i] + c * pp[i];
      xb[l] += static_cast<double>(xi) * static_cast<double>(bp[i]);
      xr[l] += static_cast<double>(xi) * static_cast<double>(rp[i]);
    }
    partial[k][0] = combine(xb);
    partial[k][1] = combine(xr);
  });
  CgModelSums sums{0.0, 0.0};
  for (Index k = 0; k < blocks.count; ++k) {
    sums.xb += partial[k][0];
    sums.xr += partial[k][1];
  }
  return sums;
}

}  // namespace amari::curvature::detail
