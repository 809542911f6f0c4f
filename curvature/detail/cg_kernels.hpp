// Internal: the fused vector passes of one conjugate-gradient iteration (cg.cpp).
//
// On large operators such as the GGN of an MLP, CG's own vector work is memory traffic: each
// vector is about as large as a core's share of the last-level cache, so a pass costs what it
// reads and writes. Composed from the BLAS-1 ops of vector_ops.hpp an iteration made six passes
// (the damping term, p^T A p, the residual update and its norm, the iterate update and the model's
// two dot products, the direction update), 12 vector reads and 4 writes. Now the curvature
// p^T A p = p^T B p + lambda p^T p comes without a pass of its own: p^T B p with the product
// (LinearOperator::apply_quadratic_form; the J^T M J operators form it from their logit-space
// vectors) and p^T p from the pass that wrote p. Two passes remain, 7 reads and 3 writes, each
// vector read once per pass that needs it:
//   cg_residual_step   p, B p, r       -> r, r^T r
//   cg_direction_step  p, x, z, r, b   -> x, p, x^T b, x^T r, p^T p
// The two cannot be fused: the second needs beta = r^T r / r_old^T r_old, a scalar reduced over
// all of the first.
//
// Reductions are the one reduction of the vector kernels (autodiff/kernels/vector.hpp:
// block_sums over its block partition, in its 8 double lanes), so every sum here is bit-identical
// to the corresponding dot() there, for any thread count; element updates are the same
// expressions as axpy and xpby there (compiled alike, with a * b + c fused or not in both). The
// passes only say what a chunk of 8 elements reads, writes and adds to the lanes.
//
// Header-only, included by cg.cpp alone: templates used in one place.
#pragma once

#include <algorithm>

#include <amari/autodiff/kernels/vector.hpp>
#include <amari/autodiff/tensor.hpp>

namespace amari::curvature::detail {

namespace cg_lanes {

using kernels::block_span;
using kernels::block_sums;
using kernels::Blocks;
using kernels::blocks_for;
using kernels::combine_lanes;
using kernels::for_each_block;
using kernels::kLanes;
using kernels::kMaxBlocks;
using kernels::Lanes;
using kernels::load;
using kernels::Span;
using kernels::store;
using kernels::Sums;
using kernels::widen;

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

/// r <- r - alpha (q + lambda p), the recursive residual of A = B + lambda I with q = B p, the
/// damped product formed element by element as DampedOperator::apply forms it (lambda rounded to T,
/// no term for lambda = 0) but never stored, and returns r^T r of the new r. Cost: 3n reads (2n for lambda = 0), n writes.
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

/// What cg_direction_step sums over the new iterate and direction.
struct CgDirectionSums {
  double xb;  ///< x^T b
  double xr;  ///< x^T r
  double pp;  ///< p^T p of the new p: the damping term lambda p^T p of the next p^T A p
};

/// x <- x + alpha p and p <- z + beta p (z = M^{-1} r, or r itself without a preconditioner), and
/// returns x^T b and x^T r of the new x, the two terms of the quadratic model value
/// -0.5 x^T (b + r), and p^T p of the new p. Cost: 4n reads (5n when z is not r), 2n writes.
template <Real T>
CgDirectionSums cg_direction_step(double alpha, double beta, const Tensor<T>& z, const Tensor<T>& r,
                              const Tensor<T>& b, Tensor<T>& p, Tensor<T>& x) {
  using namespace cg_lanes;
  const Index n = p.size();
  if (n == 0) return {0.0, 0.0, 0.0};
  const Blocks blocks = blocks_for(n);
  double partial[kMaxBlocks][3];
  // Three sums per block: independent chains already, no pairing of blocks needed.
  for_each_block(n, blocks.count, [&](Index k) {
    // Pointers and scalars in locals, as in block_sums.
    const T a = static_cast<T>(alpha);
    const T c = static_cast<T>(beta);
    const T* zp = z.data();
    const T* rp = r.data();
    const T* bp = b.data();
    T* pp = p.data();
    T* xp = x.data();
    const Span s = block_span(n, blocks, k);
    Sums xb = {}, xr = {}, pp2 = {};
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
      Sums xd, rd, bd, pd;
      widen(xv, xd);
      widen(rv, rd);
      widen(bv, bd);
      widen(pv, pd);
      xb += xd * bd;
      xr += xd * rd;
      pp2 += pd * pd;
    }
    for (int l = 0; i < s.hi; ++i, ++l) {
      const T xi = xp[i] + a * pp[i];
      xp[i] = xi;
      const T pi = zp[i] + c * pp[i];
      pp[i] = pi;
      xb[l] += static_cast<double>(xi) * static_cast<double>(bp[i]);
      xr[l] += static_cast<double>(xi) * static_cast<double>(rp[i]);
      pp2[l] += static_cast<double>(pi) * static_cast<double>(pi);
    }
    partial[k][0] = combine_lanes(xb);
    partial[k][1] = combine_lanes(xr);
    partial[k][2] = combine_lanes(pp2);
  });
  CgDirectionSums sums{0.0, 0.0, 0.0};
  for (Index k = 0; k < blocks.count; ++k) {
    sums.xb += partial[k][0];
    sums.xr += partial[k][1];
    sums.pp += partial[k][2];
  }
  return sums;
}

}  // namespace amari::curvature::detail
