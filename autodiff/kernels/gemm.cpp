// Packed, cache-blocked GEMM in the GotoBLAS/BLIS structure (Goto & van de Geijn 2008, "Anatomy of
// high-performance matrix multiplication"; Van Zee & van de Geijn 2015, "BLIS"):
//
//   for jc in n step NC:                 B panel  KC x NC  -> packed once, lives in L3
//     for pc in k step KC:               packed into NR-wide slivers
//       for ic in m step MC:             A block  MC x KC  -> packed into MR-tall slivers, in L2
//         for jr in nc step NR:          one B sliver (KC x NR) stays in L1
//           for ir in mc step MR:        MR x NR register tile: kc rank-1 updates of FMAs
//
// Packing does the transposes, so a single micro-kernel serves all four op(A)/op(B) variants, and
// zero-pads partial slivers, so the micro-kernel always runs full tiles and only the write-back
// looks at the valid part of an edge tile.
//
// Around that core (gemm_dispatch): m == 1 or n == 1 goes to dot/axpy loops (nothing to reuse, so
// nothing worth packing); a narrow C is computed as C^T = op(B)^T op(A)^T to waste less of the
// MR x NR tiles; large problems split C's rows (or columns) over OpenMP threads.
#include <amari/autodiff/kernels/gemm.hpp>
#include <amari/autodiff/kernels/register_tile.hpp>

#include <algorithm>
#include <cstddef>
#include <cstring>
#include <new>
#include <string>
#include <utility>

#include <omp.h>
#include <xsimd/xsimd.hpp>

namespace amari::kernels {
namespace {

// Register and cache blocking. Measured on the development machine (AMD EPYC Zen 5, AVX-512: L1d
// 48 KiB, L2 1 MiB per core), single-thread sgemm, sizes 256..1024 and the MLP shapes:
//  - MR x NR = 8 x 32 floats (8 x 16 doubles): 16 accumulators + 2 B registers + a broadcast. MR
//    = 10, 12 and 14 (up to 28 accumulators) were 2-13% slower, 6 x 64 and 8 x 48 no better, 4 x 64
//    20% slower. Per k step: 2 aligned loads of B, MR broadcasts of A, 2 * MR FMAs.
//  - KC = 256: the B sliver (KC x NR) is 32 KiB, resident in L1 while the A block streams from
//    L2; 128..512 were within noise except 128 (C write-back traffic doubles).
//  - MC = 168 (21 slivers of 8): the A block (MC x KC) is 168 KiB float / 336 KiB double, in L2;
//    96..384 were within noise.
//  - NC = 2048: the B panel (KC x NC) lives in L3; n <= 2048 then packs A only once.
// With 16 vector registers (AVX2, SSE) MR = 6: 12 accumulators, the classic 6 x 16 AVX2 tile.
// The register tile is in kernels/register_tile.hpp (shared with the direct convolution).
template <class T>
struct Blocking : RegisterTile<T> {
  using RegisterTile<T>::kMR;
  static constexpr Index kKC = 256;
  static constexpr Index kMC = 168 / kMR * kMR;
  static constexpr Index kNC = 2048;
};

// ---- scratch ------------------------------------------------------------------------------------

// A grow-only, 64-byte aligned packing buffer. One per thread and element type (thread_local
// below): reused across calls so a GEMM never mallocs megabytes, and private to its thread so
// concurrent GEMMs from different threads cannot collide. Freed when the thread exits.
template <class T>
class Scratch {
 public:
  Scratch() = default;
  Scratch(const Scratch&) = delete;
  Scratch& operator=(const Scratch&) = delete;
  ~Scratch() { release(); }

  T* get(std::size_t count) {
    if (count > capacity_) {
      release();
      data_ = static_cast<T*>(::operator new (count * sizeof(T), std::align_val_t{64}));
      capacity_ = count;
    }
    return data_;
  }

 private:
  void release() {
    if (data_ != nullptr) ::operator delete (data_, std::align_val_t{64});
    data_ = nullptr;
    capacity_ = 0;
  }
  T* data_ = nullptr;
  std::size_t capacity_ = 0;
};

template <class T>
Scratch<T>& scratch_a() {
  thread_local Scratch<T> s;
  return s;
}
template <class T>
Scratch<T>& scratch_b() {
  thread_local Scratch<T> s;
  return s;
}

// ---- the problem --------------------------------------------------------------------------------

template <class T>
struct Problem {
  Trans trans_a, trans_b;
  Index m, n, k;
  T alpha;
  const T* a;
  Index lda;
  const T* b;
  Index ldb;
  T beta;
  T* c;
  Index ldc;
  // The problem was swapped to C^T = op(B)^T op(A)^T (see gemm_dispatch): this problem's C(i, j)
  // is the caller's C(j, i).
  bool c_transposed = false;

  Index c_row_stride() const { return c_transposed ? 1 : ldc; }
  Index c_col_stride() const { return c_transposed ? ldc : 1; }
  T* c_at(Index i, Index j) const { return c + i * c_row_stride() + j * c_col_stride(); }
};

Index ceil_div(Index x, Index y) {
  return (x + y - 1) / y;
}

// Splits `extent` into ceil(extent / block) nearly equal blocks, rounded up to a multiple of
// `unit`, so the last block is not a sliver (e.g. k = 300 runs as 2 x 150, not 256 + 44).
Index balanced_block(Index extent, Index block, Index unit) {
  const Index blocks = ceil_div(extent, block);
  return ceil_div(ceil_div(extent, blocks), unit) * unit;
}

// ---- register transpose -------------------------------------------------------------------------

// GCC/Clang vector of W (a power of two) elements of T, for the shuffles xsimd 8 does not offer
// portably (its zip_lo/zip_hi work within 128-bit lanes on AVX and AVX-512).
template <class T, int W>
struct VectorOf {
  typedef T type __attribute__((vector_size(W * sizeof(T))));
};
template <class T, int W>
using Vector = typename VectorOf<T, W>::type;

// Interleaves half H (0 = low, 1 = high) of a and b: {a[h], b[h], a[h+1], b[h+1], ...}, where
// h = H * W / 2. One vpermt2ps/vpermt2pd on AVX-512, unpcklps/unpckhps on SSE. (Output by
// reference: returning a vector wider than the target's registers by value is an ABI warning.)
template <int W, int H, class V, std::size_t... I>
inline void zip_half(const V& a, const V& b, V& out, std::index_sequence<I...>) {
  out = __builtin_shufflevector(
      a, b, (I % 2 == 0 ? int(H * W / 2 + I / 2) : int(W + H * W / 2 + I / 2))...);
}

// dst[i * ldd + j] = src[j * lds + i] for a W x W block. log2(W) rounds of zipping row r with
// row r + W/2 (a perfect shuffle) transpose the block: W*log2(W) shuffles instead of W*W scalar
// moves.
template <class T, int W>
inline void transpose_block(const T* src, Index lds, T* dst, Index ldd) {
  using V = Vector<T, W>;
  V rows[W];
#pragma GCC unroll 16
  for (int i = 0; i < W; ++i) std::memcpy(&rows[i], src + i * lds, sizeof(V));
#pragma GCC unroll 4
  for (int round = 1; round < W; round *= 2) {
    V next[W];
#pragma GCC unroll 16
    for (int i = 0; i < W / 2; ++i) {
      zip_half<W, 0>(rows[i], rows[i + W / 2], next[2 * i], std::make_index_sequence<W>{});
      zip_half<W, 1>(rows[i], rows[i + W / 2], next[2 * i + 1], std::make_index_sequence<W>{});
    }
#pragma GCC unroll 16
    for (int i = 0; i < W; ++i) rows[i] = next[i];
  }
#pragma GCC unroll 16
  for (int i = 0; i < W; ++i) std::memcpy(dst + i * ldd, &rows[i], sizeof(V));
}

// ---- packing ------------------------------------------------------------------------------------

// Packs rows [i0, i0 + mc) x columns [p0, p0 + kc) of op(A) into MR-tall slivers: sliver s holds,
// for each p, the MR values op(A)(i0 + s*MR + r, p0 + p), rows past mc zero.
template <class T>
void pack_a(const Problem<T>& pr, Index i0, Index mc, Index p0, Index kc, T* dst) {
  constexpr int MR = Blocking<T>::kMR;
  for (Index s = 0; s < mc; s += MR, dst += MR * kc) {
    const int mr = static_cast<int>(std::min<Index>(MR, mc - s));
    if (pr.trans_a == Trans::yes) {
      // op(A)(i, p) = a[p*lda + i]: each p is a contiguous run of mr values.
      const T* src = pr.a + p0 * pr.lda + i0 + s;
      for (Index p = 0; p < kc; ++p, src += pr.lda) {
        T* d = dst + p * MR;
        for (int r = 0; r < mr; ++r) d[r] = src[r];
        for (int r = mr; r < MR; ++r) d[r] = T(0);
      }
    } else {
      // op(A)(i, p) = a[i*lda + p]: full slivers go through MR x MR register transposes when MR
      // is a power of two; the rest walks the mr rows side by side, each read sequentially.
      const T* src = pr.a + (i0 + s) * pr.lda + p0;
      Index p = 0;
      if constexpr ((MR & (MR - 1)) == 0) {
        if (mr == MR) {
          for (; p + MR <= kc; p += MR) transpose_block<T, MR>(src + p, pr.lda, dst + p * MR, MR);
        }
      }
      for (; p < kc; ++p) {
        for (int r = 0; r < mr; ++r) dst[p * MR + r] = src[r * pr.lda + p];
        for (int r = mr; r < MR; ++r) dst[p * MR + r] = T(0);
      }
    }
  }
}

// Packs rows [p0, p0 + kc) x columns [j0, j0 + nc) of op(B) into NR-wide slivers: sliver s
// holds, for each p, the NR values op(B)(p0 + p, j0 + s*NR + c), columns past nc zero.
template <class T>
void pack_b(const Problem<T>& pr, Index p0, Index kc, Index j0, Index nc, T* packed) {
  using Batch = typename Blocking<T>::Batch;
  constexpr int W = Blocking<T>::kWidth;
  constexpr int NV = Blocking<T>::kNV;
  constexpr int NR = Blocking<T>::kNR;
  for (Index s = 0; s * NR < nc; ++s) {
    T* dst = packed + s * NR * kc;
    const Index j = j0 + s * NR;
    const int nr = static_cast<int>(std::min<Index>(NR, nc - s * NR));
    if (pr.trans_b == Trans::no) {
      // op(B)(p, j) = b[p*ldb + j]: each p is a contiguous run of nr values.
      const T* src = pr.b + p0 * pr.ldb + j;
      if (nr == NR) {
        for (Index p = 0; p < kc; ++p, src += pr.ldb) {
#pragma GCC unroll 4
          for (int v = 0; v < NV; ++v) {
            Batch::load_unaligned(src + v * W).store_aligned(dst + p * NR + v * W);
          }
        }
      } else {
        for (Index p = 0; p < kc; ++p, src += pr.ldb) {
          T* d = dst + p * NR;
          for (int c = 0; c < nr; ++c) d[c] = src[c];
          for (int c = nr; c < NR; ++c) d[c] = T(0);
        }
      }
    } else {
      // op(B)(p, j) = b[j*ldb + p]: full slivers go through W x W register transposes, the
      // rest element by element.
      Index p = 0;
      if (nr == NR) {
        for (; p + W <= kc; p += W) {
#pragma GCC unroll 4
          for (int v = 0; v < NV; ++v) {
            transpose_block<T, W>(pr.b + (j + v * W) * pr.ldb + p0 + p, pr.ldb,
                                  dst + p * NR + v * W, NR);
          }
        }
      }
      for (int c = 0; c < nr; ++c) {
        const T* src = pr.b + (j + c) * pr.ldb + p0;
        for (Index q = p; q < kc; ++q) dst[q * NR + c] = src[q];
      }
      for (int c = nr; c < NR; ++c) {
        for (Index q = p; q < kc; ++q) dst[q * NR + c] = T(0);
      }
    }
  }
}

// ---- micro-kernel -------------------------------------------------------------------------------

// C[0:mr, 0:nr] = alpha * Ap * Bp + beta * C[0:mr, 0:nr] for one MR x NR tile, where Ap is an
// MR-tall packed sliver and Bp an NR-wide packed sliver, both kc long, and C(r, j) is at
// c[r * rs_c + j * cs_c]. beta == 0 never reads C.
template <class T>
void micro_kernel(Index kc, const T* __restrict ap, const T* __restrict bp, T* c, Index rs_c,
                  Index cs_c, T alpha, T beta, int mr, int nr) {
  using Batch = typename Blocking<T>::Batch;
  constexpr int W = Blocking<T>::kWidth;
  constexpr int NV = Blocking<T>::kNV;
  constexpr int MR = Blocking<T>::kMR;
  constexpr int NR = Blocking<T>::kNR;

  typename Blocking<T>::Accumulators acc;
  Blocking<T>::zero(acc);
  // Unrolled so the loop counter and pointer bumps are amortized over 4 * MR * NV FMAs.
#pragma GCC unroll 4
  for (Index p = 0; p < kc; ++p) {
    Batch bv[NV];
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) bv[v] = Batch::load_aligned(bp + v * W);
#pragma GCC unroll 16
    for (int r = 0; r < MR; ++r) {
      const Batch av(ap[r]);
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) acc[r][v] = xsimd::fma(av, bv[v], acc[r][v]);
    }
    ap += MR;
    bp += NR;
  }

  const Batch alpha_v(alpha);
  if (mr == MR && nr == NR && cs_c == 1) {
    if (beta == T(0)) {
#pragma GCC unroll 16
      for (int r = 0; r < MR; ++r) {
#pragma GCC unroll 4
        for (int v = 0; v < NV; ++v) (alpha_v * acc[r][v]).store_unaligned(c + r * rs_c + v * W);
      }
    } else {
      const Batch beta_v(beta);
#pragma GCC unroll 16
      for (int r = 0; r < MR; ++r) {
#pragma GCC unroll 4
        for (int v = 0; v < NV; ++v) {
          T* cp = c + r * rs_c + v * W;
          xsimd::fma(beta_v, Batch::load_unaligned(cp), alpha_v * acc[r][v]).store_unaligned(cp);
        }
      }
    }
    return;
  }
  // Edge tile or transposed C: spill the accumulators and write back the valid mr x nr corner.
  alignas(64) T tile[MR * NR];
  Blocking<T>::spill(acc, tile);
  for (int r = 0; r < mr; ++r) {
    T* cr = c + r * rs_c;
    const T* tr = tile + r * NR;
    if (beta == T(0)) {
      for (int j = 0; j < nr; ++j) cr[j * cs_c] = alpha * tr[j];
    } else {
      for (int j = 0; j < nr; ++j) cr[j * cs_c] = beta * cr[j * cs_c] + alpha * tr[j];
    }
  }
}

// ---- driver -------------------------------------------------------------------------------------

// The blocked loops over the whole of `pr`, on the calling thread, with its packing buffers.
template <class T>
void gemm_blocked(const Problem<T>& pr) {
  constexpr int MR = Blocking<T>::kMR;
  constexpr int NR = Blocking<T>::kNR;
  const Index kc_block = balanced_block(pr.k, Blocking<T>::kKC, 1);
  const Index nc_block = balanced_block(pr.n, Blocking<T>::kNC, NR);
  const Index mc_block = balanced_block(pr.m, Blocking<T>::kMC, MR);
  T* packed_a = scratch_a<T>().get(static_cast<std::size_t>(mc_block * kc_block));
  T* packed_b = scratch_b<T>().get(static_cast<std::size_t>(kc_block * nc_block));
  const Index rs_c = pr.c_row_stride();
  const Index cs_c = pr.c_col_stride();

  for (Index jc = 0; jc < pr.n; jc += nc_block) {
    const Index nc = std::min(nc_block, pr.n - jc);
    for (Index pc = 0; pc < pr.k; pc += kc_block) {
      const Index kc = std::min(kc_block, pr.k - pc);
      // Later k blocks accumulate onto what the first one wrote.
      const T beta = pc == 0 ? pr.beta : T(1);
      pack_b(pr, pc, kc, jc, nc, packed_b);
      for (Index ic = 0; ic < pr.m; ic += mc_block) {
        const Index mc = std::min(mc_block, pr.m - ic);
        pack_a(pr, ic, mc, pc, kc, packed_a);
        for (Index jr = 0; jr < nc; jr += NR) {
          const int nr = static_cast<int>(std::min<Index>(NR, nc - jr));
          const T* bp = packed_b + jr * kc;
          for (Index ir = 0; ir < mc; ir += MR) {
            const int mr = static_cast<int>(std::min<Index>(MR, mc - ir));
            micro_kernel(kc, packed_a + ir * kc, bp, pr.c_at(ic + ir, jc + jr), rs_c, cs_c,
                         pr.alpha, beta, mr, nr);
          }
        }
      }
    }
  }
}

// Splits C into `threads` independent GEMMs, by rows (in MR slivers) or by columns (in NR
// slivers), each run by gemm_blocked on its own thread with its own packing buffers. Independent
// parts need no barrier, only the fork/join: on a shared or oversubscribed machine one
// descheduled thread then cannot stall the others at every k block (measured: 1.1-2x faster than
// sharing one packed B panel between barriers). The price is packing the other operand once per
// thread, so the split goes along the bigger of m and n. The parts' tiles are the serial run's
// tiles (split points are multiples of MR or NR) and each C element is accumulated by one thread
// in the same order, so the result is bitwise independent of the thread count.
template <class T>
void gemm_parallel(const Problem<T>& pr, int threads, bool split_rows) {
  constexpr int MR = Blocking<T>::kMR;
  constexpr int NR = Blocking<T>::kNR;
  const Index unit = split_rows ? MR : NR;
  const Index extent = split_rows ? pr.m : pr.n;
  const Index slivers = ceil_div(extent, unit);
#pragma omp parallel num_threads(threads)
  {
    const int tid = omp_get_thread_num();
    const int team = omp_get_num_threads();
    const Index begin = std::min(extent, slivers * tid / team * unit);
    const Index end = std::min(extent, slivers * (tid + 1) / team * unit);
    if (begin < end) {
      Problem<T> part = pr;
      if (split_rows) {
        part.m = end - begin;
        part.a += pr.trans_a == Trans::no ? begin * pr.lda : begin;
        part.c = pr.c_at(begin, 0);
      } else {
        part.n = end - begin;
        part.b += pr.trans_b == Trans::no ? begin : begin * pr.ldb;
        part.c = pr.c_at(0, begin);
      }
      gemm_blocked(part);
    }
  }
}

// ---- matrix-vector shapes -----------------------------------------------------------------------

// The dot and axpy of the matrix-vector shapes. Not the vector kernels of vector.hpp, whose job is
// a reduction that is bit-identical for any thread count, in double lanes: these are GEMM's
// arithmetic on one row, single-threaded inside gemv and called once per output on rows that are
// often short, so they accumulate in T with fused multiply-adds like the micro-kernel (a result in
// T, as BLAS gives it) at full SIMD width, four independent accumulators deep.

// y[0:len] += s * x[0:len].
template <class T>
void gemv_axpy(Index len, T s, const T* __restrict x, T* __restrict y) {
  using Batch = xsimd::batch<T>;
  constexpr Index W = Batch::size;
  const Batch sv(s);
  Index i = 0;
  for (; i + W <= len; i += W) {
    xsimd::fma(sv, Batch::load_unaligned(x + i), Batch::load_unaligned(y + i))
        .store_unaligned(y + i);
  }
  for (; i < len; ++i) y[i] += s * x[i];
}

// sum_i x[i] * y[i], with four independent accumulators to hide the FMA latency.
template <class T>
T gemv_dot(Index len, const T* x, const T* y) {
  using Batch = xsimd::batch<T>;
  constexpr Index W = Batch::size;
  Batch acc[4] = {Batch(T(0)), Batch(T(0)), Batch(T(0)), Batch(T(0))};
  Index i = 0;
  for (; i + 4 * W <= len; i += 4 * W) {
#pragma GCC unroll 4
    for (int u = 0; u < 4; ++u) {
      acc[u] = xsimd::fma(Batch::load_unaligned(x + i + u * W),
                          Batch::load_unaligned(y + i + u * W), acc[u]);
    }
  }
  for (; i + W <= len; i += W) {
    acc[0] = xsimd::fma(Batch::load_unaligned(x + i), Batch::load_unaligned(y + i), acc[0]);
  }
  // A fixed-order horizontal sum (xsimd::hadd trips -Wuninitialized in GCC 12's AVX-512 header).
  alignas(64) T lanes[W];
  ((acc[0] + acc[1]) + (acc[2] + acc[3])).store_aligned(lanes);
  T sum = T(0);
  for (Index lane = 0; lane < W; ++lane) sum += lanes[lane];
  for (; i < len; ++i) sum += x[i] * y[i];
  return sum;
}

// Copies len values at stride `stride` into `dst` (contiguous).
template <class T>
const T* gather(Index len, const T* src, Index stride, T* dst) {
  for (Index i = 0; i < len; ++i) dst[i] = src[i * stride];
  return dst;
}

// C = beta * C (0 if beta == 0, without reading C), for alpha == 0 or k == 0 (BLAS semantics: A
// and B are not read), and as the first step of the axpy forms below.
template <class T>
void scale_c(const Problem<T>& pr) {
  for (Index i = 0; i < pr.m; ++i) {
    T* cr = pr.c + i * pr.ldc;
    if (pr.beta == T(0)) {
      std::fill(cr, cr + pr.n, T(0));
    } else if (pr.beta != T(1)) {
      for (Index j = 0; j < pr.n; ++j) cr[j] *= pr.beta;
    }
  }
}

// m == 1 or n == 1: every element of A or B is used once, so packing (which copies the bigger
// operand) would cost as much as the product. Memory-bound: a dot or an axpy per output, single
// threaded. Strided vectors are gathered into the thread's scratch first.
template <class T>
void gemv(const Problem<T>& pr) {
  Scratch<T>& scratch = scratch_a<T>();
  if (pr.m == 1) {
    if (pr.trans_b == Trans::no) {
      // C row += (alpha * op(A)(0, p)) * B row p: B is streamed once, row by row.
      scale_c(pr);
      for (Index p = 0; p < pr.k; ++p) {
        const T ap = pr.trans_a == Trans::no ? pr.a[p] : pr.a[p * pr.lda];
        gemv_axpy(pr.n, pr.alpha * ap, pr.b + p * pr.ldb, pr.c);
      }
    } else {
      // C(0, j) = op(A) row . B row j, both contiguous once A's row is.
      const T* x = pr.trans_a == Trans::no
                       ? pr.a
                       : gather(pr.k, pr.a, pr.lda, scratch.get(static_cast<std::size_t>(pr.k)));
      for (Index j = 0; j < pr.n; ++j) {
        const T d = pr.alpha * gemv_dot(pr.k, x, pr.b + j * pr.ldb);
        pr.c[j] = pr.beta == T(0) ? d : pr.beta * pr.c[j] + d;
      }
    }
    return;
  }
  // n == 1: C(i, 0) = op(A) row i . op(B) column 0. Scratch: [0, k) the gathered column of
  // op(B) if strided, [k, k + m) the accumulated column for the axpy form.
  T* buffer = scratch.get(static_cast<std::size_t>(pr.k + pr.m));
  const T* y = pr.trans_b == Trans::yes ? pr.b : gather(pr.k, pr.b, pr.ldb, buffer);
  if (pr.trans_a == Trans::no) {
    for (Index i = 0; i < pr.m; ++i) {
      const T d = pr.alpha * gemv_dot(pr.k, pr.a + i * pr.lda, y);
      T& ci = pr.c[i * pr.ldc];
      ci = pr.beta == T(0) ? d : pr.beta * ci + d;
    }
  } else {
    // A is stored k x m: accumulate y[p] * (row p of A) into a contiguous column.
    T* column = buffer + pr.k;
    std::fill(column, column + pr.m, T(0));
    for (Index p = 0; p < pr.k; ++p) gemv_axpy(pr.m, y[p], pr.a + p * pr.lda, column);
    for (Index i = 0; i < pr.m; ++i) {
      const T d = pr.alpha * column[i];
      T& ci = pr.c[i * pr.ldc];
      ci = pr.beta == T(0) ? d : pr.beta * ci + d;
    }
  }
}

// ---- dispatch -----------------------------------------------------------------------------------

// Each extra thread must get at least this many multiply-adds (m*n*k), or the parallel region's
// fork/join and barriers cost more than the thread saves. Measured (2 threads, sgemm n^3): 0.4x at
// 64^3, 0.85x at 96^3, 1.2x at 128^3, 1.55x at 160^3; so 2 threads from about 120^3 on.
inline constexpr Index kWorkPerThread = 96 * 96 * 96;

Index round_up(Index x, Index unit) {
  return ceil_div(x, unit) * unit;
}

template <class T>
void gemm_dispatch(Problem<T> pr) {
  constexpr int MR = Blocking<T>::kMR;
  constexpr int NR = Blocking<T>::kNR;
  if (pr.m == 0 || pr.n == 0) return;
  if (pr.k == 0 || pr.alpha == T(0)) {
    scale_c(pr);
    return;
  }
  if (pr.m == 1 || pr.n == 1) {
    gemv(pr);
    return;
  }
  // Tiles are MR x NR with NR = 2 * SIMD width > MR, so a narrow C (small n, e.g. 10 classes)
  // wastes most of every tile on zero padding. Computing C^T = op(B)^T op(A)^T instead puts the
  // narrow side on MR; the write-back then goes through the (scalar) edge path.
  const Index padded = round_up(pr.m, MR) * round_up(pr.n, NR);
  const Index padded_swapped = round_up(pr.n, MR) * round_up(pr.m, NR);
  if (4 * padded_swapped < 3 * padded) {
    pr = Problem<T>{pr.trans_b == Trans::no ? Trans::yes : Trans::no,
                    pr.trans_a == Trans::no ? Trans::yes : Trans::no,
                    pr.n,
                    pr.m,
                    pr.k,
                    pr.alpha,
                    pr.b,
                    pr.ldb,
                    pr.a,
                    pr.lda,
                    pr.beta,
                    pr.c,
                    pr.ldc,
                    true};
  }

  const Index work = pr.m * pr.n * pr.k;
  int threads = 1;
  if (!omp_in_parallel()) {
    threads = static_cast<int>(
        std::min<Index>(omp_get_max_threads(), std::max<Index>(1, work / kWorkPerThread)));
  }
  // Split along the longer side of C (ties: columns, which also halves each thread's B panel),
  // unless it has too few slivers to give every thread one.
  const bool rows_fit = ceil_div(pr.m, MR) >= threads;
  const bool columns_fit = ceil_div(pr.n, NR) >= threads;
  if (threads > 1 && rows_fit && (pr.m > pr.n || !columns_fit)) {
    gemm_parallel(pr, threads, true);
  } else if (threads > 1 && columns_fit) {
    gemm_parallel(pr, threads, false);
  } else {
    gemm_blocked(pr);
  }
}

void check_arguments(Trans trans_a, Trans trans_b, Index m, Index n, Index k, Index lda, Index ldb,
                     Index ldc) {
  const Index min_lda = trans_a == Trans::no ? k : m;
  const Index min_ldb = trans_b == Trans::no ? n : k;
  const Index min_ldc = n;
  if (m < 0 || n < 0 || k < 0 || lda < min_lda || ldb < min_ldb || ldc < min_ldc) {
    throw ShapeError("gemm: m = " + std::to_string(m) + ", n = " + std::to_string(n) +
                     ", k = " + std::to_string(k) + ", lda = " + std::to_string(lda) +
                     ", ldb = " + std::to_string(ldb) + ", ldc = " + std::to_string(ldc) +
                     "; expected non-negative extents and lda >= " + std::to_string(min_lda) +
                     ", ldb >= " + std::to_string(min_ldb) + ", ldc >= " + std::to_string(min_ldc));
  }
}

}  // namespace

template <class T>
void gemm(Trans trans_a, Trans trans_b, Index m, Index n, Index k, T alpha, const T* a, Index lda,
          const T* b, Index ldb, T beta, T* c, Index ldc) {
  check_arguments(trans_a, trans_b, m, n, k, lda, ldb, ldc);
  gemm_dispatch(Problem<T>{trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc});
}

template void gemm<float>(Trans, Trans, Index, Index, Index, float, const float*, Index,
                          const float*, Index, float, float*, Index);
template void gemm<double>(Trans, Trans, Index, Index, Index, double, const double*, Index,
                           const double*, Index, double, double*, Index);

}  // namespace amari::kernels
