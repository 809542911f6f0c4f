// conv2d kernels. The design and its measurements are in the opening comment of
// autodiff/ops/conv2d.cpp; this file is the mechanics:
//  - the forward map runs a direct ("implicit GEMM") kernel on a zero-padded copy of x (section
//    "direct convolution" below), or im2col + GEMM where that copy would be larger than the
//    column matrix (padding or strides far beyond the kernel);
//  - the adjoints are im2col + one GEMM per group over chunks of images (wbar = cols^T ybar), and a
//    GEMM into the column matrix followed by col2im (xbar), or direct kernels where those were
//    measured faster (conv2d_backward says where: wbar reducing over pixels in registers, xbar at
//    stride 1 as a forward convolution of ybar with the flipped kernel);
//  - a 1x1, stride-1, unpadded convolution is one GEMM per group on x itself.
//  - conv2d_relu_max_pool2d's tangent with dx (section "the tangent of a convolution read at a
//    2 x 2 pooling's selection") is one direct pass over dx and x interleaved, whose tiles keep
//    the pixel each window selects.
//
// The column matrix of a chunk of nc images has one row per output pixel (nc * oh * ow rows) and
// groups * k columns, laid out (pixel, group, kh, kw, c) so that
//   - group g's block is the sub-matrix at column g * k with leading dimension groups * k, and
//   - its column index (kh * KW + kw) * C_in/groups + c is the row index of the HWIO weights seen
//     as a (k, C_out) matrix,
// hence wbar[:, g's outputs] += cols_g^T ybar[pixels, g's outputs] is a plain GEMM on strided
// views. With groups == 1 and dilation 1, the kw taps of one kernel row are one contiguous run of x
// (kw * C_in values): im2col copies runs, not single values.
#include <amari/autodiff/kernels/conv.hpp>
#include <amari/autodiff/kernels/register_tile.hpp>

#include <algorithm>
#include <cstddef>
#include <utility>

#include <omp.h>
#include <xsimd/xsimd.hpp>

#include <amari/autodiff/kernels/elementwise.hpp>
#include <amari/autodiff/kernels/gemm.hpp>
#include <amari/autodiff/kernels/pad_images.hpp>
#include <amari/autodiff/kernels/thread_buffer.hpp>
#include <amari/autodiff/kernels/window_index.hpp>

namespace amari::kernels {
namespace {

// Budget of one chunk's column matrix (see ops/conv2d.cpp for the measurement behind it).
inline constexpr Index kColumnBytes = Index{1} << 20;

// Images per chunk: as many as fit kColumnBytes, at least one. A function of the shapes only, never
// of the thread count, so the chunk partial sums accumulate into wbar in the same order whatever
// the number of threads (results are bitwise reproducible across thread counts).
Index chunk_images(const ConvGeometry& g, Index element_bytes) {
  const Index per_image = std::max<Index>(1, g.oh * g.ow * g.groups * g.k() * element_bytes);
  return std::clamp<Index>(kColumnBytes / per_image, 1, std::max<Index>(1, g.n));
}

bool go_parallel(Index elements, Index items) {
  return elements >= kParallelElements && items > 1 && omp_get_max_threads() > 1 &&
         !omp_in_parallel();
}

// Short copies and fills: the runs are C_in/groups or kw * C_in values, often 1 to 3, where a call
// to memcpy/memset costs more than the copy.
template <class T>
inline void copy_run(const T* src, Index count, T* dst) {
  for (Index c = 0; c < count; ++c) dst[c] = src[c];
}
template <class T>
inline void zero_run(Index count, T* dst) {
  for (Index c = 0; c < count; ++c) dst[c] = T(0);
}
template <class T>
inline void add_run(const T* src, Index count, T* dst) {
  for (Index c = 0; c < count; ++c) dst[c] += src[c];
}

// The range of kernel taps j in [0, kw) whose input column iw0 + j * dilation lies inside [0, w).
struct TapRange {
  Index lo, hi;
};
inline TapRange valid_taps(Index i0, Index extent, Index taps, Index dilation) {
  // i0 + j d >= 0  <=>  j >= ceil(-i0 / d);   i0 + j d < extent  <=>  j < ceil((extent - i0) / d).
  const Index lo = i0 >= 0 ? 0 : (-i0 + dilation - 1) / dilation;
  const Index hi = extent - i0 <= 0 ? 0 : std::min(taps, (extent - i0 + dilation - 1) / dilation);
  return {std::min(lo, hi), hi};
}

// Row oh of one image's column matrix: ow rows of groups * k values (see the top of this file).
template <class T>
void im2col_row(const ConvGeometry& g, const T* x, Index oh, T* cols) {
  const Index cig = g.group_in(), k = g.k(), row_len = g.groups * k, run = g.kw * cig;
  const bool contiguous = g.groups == 1 && g.dilation_w == 1;
  const Index ih0 = oh * g.stride_h - g.pad_h;
  const TapRange rows = valid_taps(ih0, g.h, g.kh, g.dilation_h);
  for (Index ow = 0; ow < g.ow; ++ow, cols += row_len) {
    const Index iw0 = ow * g.stride_w - g.pad_w;
    const TapRange taps = valid_taps(iw0, g.w, g.kw, g.dilation_w);
    for (Index grp = 0; grp < g.groups; ++grp) {
      T* dst = cols + grp * k;
      zero_run(rows.lo * run, dst);
      for (Index i = rows.lo; i < rows.hi; ++i) {
        T* d = dst + i * run;
        const T* src = x + (ih0 + i * g.dilation_h) * g.w * g.c_in + grp * cig;
        zero_run(taps.lo * cig, d);
        if (taps.lo == taps.hi) {
          // No tap of this window is inside the row: nothing to copy (and no pointer to form:
          // iw0 can be far outside the image, up to -padding).
        } else if (contiguous) {
          copy_run(src + (iw0 + taps.lo) * g.c_in, (taps.hi - taps.lo) * cig, d + taps.lo * cig);
        } else {
          for (Index j = taps.lo; j < taps.hi; ++j)
            copy_run(src + (iw0 + j * g.dilation_w) * g.c_in, cig, d + j * cig);
        }
        zero_run((g.kw - taps.hi) * cig, d + taps.hi * cig);
      }
      zero_run((g.kh - rows.hi) * run, dst + rows.hi * run);
    }
  }
}

// Columns of images [0, nc) of x (already offset to the chunk) into cols; parallel over output rows
// of all images (each writes its own rows of cols).
template <class T>
void im2col(const ConvGeometry& g, const T* x, Index nc, T* cols) {
  const Index x_image = g.h * g.w * g.c_in, row_values = g.ow * g.groups * g.k();
  const Index rows = nc * g.oh;
  const auto one = [&](Index r) {
    const Index n = r / g.oh, oh = r % g.oh;
    im2col_row(g, x + n * x_image, oh, cols + r * row_values);
  };
  if (go_parallel(rows * row_values, rows)) {
#pragma omp parallel for schedule(static)
    for (Index r = 0; r < rows; ++r) one(r);
  } else {
    for (Index r = 0; r < rows; ++r) one(r);
  }
}

// xbar (one image) += the scatter of its column matrix: the transpose of im2col_row over all rows,
// in a fixed order (deterministic).
template <class T>
void col2im_image(const ConvGeometry& g, const T* cols, T* xbar) {
  const Index cig = g.group_in(), k = g.k(), row_len = g.groups * k, run = g.kw * cig;
  const bool contiguous = g.groups == 1 && g.dilation_w == 1;
  for (Index oh = 0; oh < g.oh; ++oh) {
    const Index ih0 = oh * g.stride_h - g.pad_h;
    const TapRange rows = valid_taps(ih0, g.h, g.kh, g.dilation_h);
    for (Index ow = 0; ow < g.ow; ++ow, cols += row_len) {
      const Index iw0 = ow * g.stride_w - g.pad_w;
      const TapRange taps = valid_taps(iw0, g.w, g.kw, g.dilation_w);
      if (taps.lo == taps.hi) continue;  // the window misses the image: nothing to add back
      for (Index grp = 0; grp < g.groups; ++grp) {
        const T* src = cols + grp * k;
        for (Index i = rows.lo; i < rows.hi; ++i) {
          const T* s = src + i * run;
          T* dst = xbar + (ih0 + i * g.dilation_h) * g.w * g.c_in + grp * cig;
          if (contiguous) {
            add_run(s + taps.lo * cig, (taps.hi - taps.lo) * cig, dst + (iw0 + taps.lo) * g.c_in);
          } else {
            for (Index j = taps.lo; j < taps.hi; ++j)
              add_run(s + j * cig, cig, dst + (iw0 + j * g.dilation_w) * g.c_in);
          }
        }
      }
    }
  }
}

// xbar (images [0, nc) of the chunk) += col2im(cols), or = when not `accumulate` (each image's
// region zeroed just before its sums, while it is in cache); parallel over images, whose xbar
// regions are disjoint, so no two threads ever add to the same value.
template <class T>
void col2im(const ConvGeometry& g, const T* cols, Index nc, T* xbar, bool accumulate) {
  const Index x_image = g.h * g.w * g.c_in, cols_image = g.oh * g.ow * g.groups * g.k();
  const auto image = [&](Index n) {
    T* xn = xbar + n * x_image;
    if (!accumulate) std::fill_n(xn, x_image, T(0));
    col2im_image(g, cols + n * cols_image, xn);
  };
  if (go_parallel(nc * cols_image, nc)) {
#pragma omp parallel for schedule(static)
    for (Index n = 0; n < nc; ++n) image(n);
  } else {
    for (Index n = 0; n < nc; ++n) image(n);
  }
}

// wbar += the chunks' terms in chunk order, or = when not `accumulate` (the first term copied:
// the same values as adding it to zeros).
template <class T>
void reduce_chunk_terms(const T* partial, Index chunks, Index w_size, T* wbar, bool accumulate) {
  for (Index c = 0; c < chunks; ++c) {
    if (c == 0 && !accumulate) {
      copy_run(partial, w_size, wbar);
    } else {
      add_run(partial + c * w_size, w_size, wbar);
    }
  }
}

// Each of the m rows of y (width c) set to b, or b added to it.
template <class T>
void bias_rows(const T* b, Index m, Index c, bool accumulate, T* y) {
  const auto row = [&](Index r) {
    T* yr = y + r * c;
    if (accumulate) {
      add_run(b, c, yr);
    } else {
      copy_run(b, c, yr);
    }
  };
  if (go_parallel(m * c, m)) {
#pragma omp parallel for schedule(static)
    for (Index r = 0; r < m; ++r) row(r);
  } else {
    for (Index r = 0; r < m; ++r) row(r);
  }
}

// y (m pixels, c_out) (+)= cols (m, groups * k) times w (k, c_out), group by group.
template <class T>
void forward_gemms(const ConvGeometry& g, const T* cols, Index ld_cols, Index m, const T* w, T beta,
                   T* y) {
  const Index k = g.k(), cog = g.group_out();
  for (Index grp = 0; grp < g.groups; ++grp) {
    gemm<T>(Trans::no, Trans::no, m, cog, k, T(1), cols + grp * k, ld_cols, w + grp * cog, g.c_out,
            beta, y + grp * cog, g.c_out);
  }
}
// wbar (k, c_out) (+)= cols^T ybar, group by group.
template <class T>
void weight_gemms(const ConvGeometry& g, const T* cols, Index ld_cols, Index m, const T* ybar,
                  T beta, T* wbar) {
  const Index k = g.k(), cog = g.group_out();
  for (Index grp = 0; grp < g.groups; ++grp) {
    gemm<T>(Trans::yes, Trans::no, k, cog, m, T(1), cols + grp * k, ld_cols, ybar + grp * cog,
            g.c_out, beta, wbar + grp * cog, g.c_out);
  }
}
// dcols (m, groups * k) (+)= ybar w^T, group by group.
template <class T>
void input_gemms(const ConvGeometry& g, const T* ybar, Index m, const T* w, T beta, T* dcols,
                 Index ld_cols) {
  const Index k = g.k(), cog = g.group_out();
  for (Index grp = 0; grp < g.groups; ++grp) {
    gemm<T>(Trans::no, Trans::yes, m, k, cog, T(1), ybar + grp * cog, g.c_out, w + grp * cog,
            g.c_out, beta, dcols + grp * k, ld_cols);
  }
}

// Calls body(c, n0, nc, cols) for chunk c = images [n0, n0 + nc), with a column buffer of the
// executing thread. With at least two chunks per thread, the chunks are spread over one parallel
// region (each thread runs whole chunks: GEMMs and col2im on one thread, no barrier per
// step; ops/conv2d.cpp has the measurement that made this the first choice); otherwise they run in
// order and each step uses the threads itself. Either way every chunk is computed by the same
// sequence of operations, so the results do not depend on the thread count.
template <class T, class Body>
void for_each_chunk(const ConvGeometry& g, Body body) {
  const Index pixels = g.oh * g.ow, chunk = chunk_images(g, sizeof(T));
  const Index chunks = (g.n + chunk - 1) / chunk, count = chunk * pixels * g.groups * g.k();
  const int threads = omp_in_parallel() ? 1 : omp_get_max_threads();
  if (threads > 1 && chunks >= 2 * threads &&
      g.n * pixels * g.groups * g.k() >= kParallelElements) {
#pragma omp parallel num_threads(threads)
    {
      T* cols = thread_buffer<T>(count);
#pragma omp for schedule(static)
      for (Index c = 0; c < chunks; ++c) body(c, c * chunk, std::min(chunk, g.n - c * chunk), cols);
    }
  } else {
    T* cols = thread_buffer<T>(count);
    for (Index c = 0; c < chunks; ++c) body(c, c * chunk, std::min(chunk, g.n - c * chunk), cols);
  }
}

// ---- direct convolution -------------------------------------------------------------------------
//
// The forward map as an implicit GEMM: the micro-kernel reads its A operand (one output pixel per
// tile row, one kernel tap per step of the reduction) straight from a zero-padded copy of the
// input, where tap (i, j, c) of the pixel whose window starts at `row` is row[i dh Wp C + j dw C +
// c], so neither the column matrix nor the GEMM's packed copy of it is ever written. The register
// tile is the GEMM's (kernels/gemm.cpp): MR pixels x NR = 2 SIMD widths of output channels.

template <class T>
using Tile = RegisterTile<T>;  // kernels/register_tile.hpp

// A convolution of zero-padded channels-last images: every tap of every output pixel is inside the
// source, so the kernel never tests bounds. Written for any source and output (the forward map
// uses source x padded, output y).
struct DirectConv {
  Index hp = 0, wp = 0, c_src = 0;  // padded source image; c_src = values per source pixel
  Index oh = 0, ow = 0, c_dst = 0;  // output image; c_dst = values per output pixel
  Index kh = 0, kw = 0, stride_h = 1, stride_w = 1, dilation_h = 1, dilation_w = 1;
  Index groups = 1, group_src = 0, group_dst = 0;  // channels per group in the source / output

  Index k() const { return kh * kw * group_src; }
  Index src_image() const { return hp * wp * c_src; }
  // origins[t] = offset in the source of output pixel t (counted over `count` images) to its
  // window's origin, for the count oh ow pixels. Incremental: computed from the pixel index, three
  // integer divisions per pixel were 2% of the CNN's gradient.
  void pixel_origins(Index count, Index* origins) const {
    // Steps in locals: read through `this` they would be reloaded after every store to origins.
    const Index image = src_image(), row = stride_h * wp * c_src, col = stride_w * c_src;
    const Index rows = oh, cols = ow;
    for (Index n = 0; n < count; ++n) {
      for (Index p = 0; p < rows; ++p) {
        Index o = n * image + p * row;
        for (Index q = 0; q < cols; ++q, o += col) *origins++ = o;
      }
    }
  }
};

template <class T>
Index slivers_of(Index columns) {
  return (columns + Tile<T>::kNR - 1) / Tile<T>::kNR;
}

// Runs of contiguous taps, as (offset from the window origin, length) pairs in the order of the
// reduction index p = (i kw + j) group_src + c: one run per kernel row when a row's taps are
// contiguous in the source (one group, no horizontal dilation), else one per (i, j).
Index tap_runs(const DirectConv& d, Index* runs) {
  Index count = 0;
  const bool rows = d.groups == 1 && d.dilation_w == 1;
  for (Index i = 0; i < d.kh; ++i) {
    for (Index j = 0; j < (rows ? 1 : d.kw); ++j, ++count) {
      runs[2 * count] = i * d.dilation_h * d.wp * d.c_src + j * d.dilation_w * d.c_src;
      runs[2 * count + 1] = rows ? d.kw * d.group_src : d.group_src;
    }
  }
  return count;
}

// The reduction of one tile: acc[r] = sum_p A(r, p) B(p, :) over the taps of the windows at rows[r]
// (acc zeroed first). Always inlined into its callers: as a call, the accumulators went through
// memory and every convolution took twice as long.
template <class T>
[[gnu::always_inline]] inline void direct_reduce(const T* const* rows, const Index* runs, Index run_count, const T* __restrict bp,
                   typename Tile<T>::Accumulators& acc) {
  using Batch = typename Tile<T>::Batch;
  constexpr int W = Tile<T>::kWidth, NV = Tile<T>::kNV, MR = Tile<T>::kMR, NR = Tile<T>::kNR;
  Tile<T>::zero(acc);
  for (Index s = 0; s < run_count; ++s) {
    const Index offset = runs[2 * s], length = runs[2 * s + 1];
    const T* a[MR];
#pragma GCC unroll 16
    for (int r = 0; r < MR; ++r) a[r] = rows[r] + offset;
#pragma GCC unroll 4
    for (Index q = 0; q < length; ++q) {
      Batch bv[NV];
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) bv[v] = Batch::load_aligned(bp + v * W);
#pragma GCC unroll 16
      for (int r = 0; r < MR; ++r) {
        const Batch av(a[r][q]);
#pragma GCC unroll 4
        for (int v = 0; v < NV; ++v) acc[r][v] = xsimd::fma(av, bv[v], acc[r][v]);
      }
      bp += NR;
    }
  }
}

// One MR x NR output tile: C[r, 0:nr] (+)= bias + sum_p A(r, p) B(p, :) for r < mr, where
// A(r, p) runs over the taps of the window at rows[r] and B is one packed weight sliver (k x NR,
// zero past nr). The full reduction stays in registers; C is written once.
template <class T>
void direct_tile(const T* const* rows, const Index* runs, Index run_count, const T* __restrict bp,
                 const T* bias, T* c, Index ldc, int mr, int nr, bool accumulate) {
  using Batch = typename Tile<T>::Batch;
  constexpr int W = Tile<T>::kWidth, NV = Tile<T>::kNV, MR = Tile<T>::kMR, NR = Tile<T>::kNR;
  typename Tile<T>::Accumulators acc;
  direct_reduce(rows, runs, run_count, bp, acc);
  if (mr == MR && nr == NR) {
    Batch b[NV];
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) b[v] = bias ? Batch::load_unaligned(bias + v * W) : Batch(T(0));
#pragma GCC unroll 16
    for (int r = 0; r < MR; ++r) {
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) {
        T* cp = c + r * ldc + v * W;
        const Batch base = accumulate ? Batch::load_unaligned(cp) + b[v] : b[v];
        (base + acc[r][v]).store_unaligned(cp);
      }
    }
    return;
  }
  alignas(64) T tile[MR * NR];
  Tile<T>::spill(acc, tile);
  for (int r = 0; r < mr; ++r) {
    for (int j = 0; j < nr; ++j) {
      const T base = (accumulate ? c[r * ldc + j] : T(0)) + (bias ? bias[j] : T(0));
      c[r * ldc + j] = base + tile[r * NR + j];
    }
  }
}

// Packs the weights into NR-wide slivers, group by group: sliver s of group g holds, for each
// reduction index p < k, the NR values weight(g, p, s NR + col) (zero past group_dst).
template <class T, class Weight>
void pack_weights(const DirectConv& d, Weight weight, T* packed) {
  constexpr int NR = Tile<T>::kNR;
  const Index k = d.k(), slivers = slivers_of<T>(d.group_dst);
  for (Index g = 0; g < d.groups; ++g) {
    for (Index s = 0; s < slivers; ++s) {
      T* dst = packed + (g * slivers + s) * k * NR;
      const int nr = static_cast<int>(std::min<Index>(NR, d.group_dst - s * NR));
      for (Index p = 0; p < k; ++p) {
        for (int col = 0; col < nr; ++col) dst[p * NR + col] = weight(g, p, s * NR + col);
        for (int col = nr; col < NR; ++col) dst[p * NR + col] = T(0);
      }
    }
  }
}

// dst (count images of oh x ow pixels, c_dst values each) (+)= bias + conv(src, packed weights),
// src being `count` padded images. Tiles of MR consecutive output pixels may straddle image rows
// and images: each tile row has its own window origin.
template <class T>
void direct_images(const DirectConv& d, const T* src, Index count, const T* packed,
                   const Index* runs, Index run_count, const T* bias, T* dst, bool accumulate) {
  constexpr int MR = Tile<T>::kMR, NR = Tile<T>::kNR;
  const Index m = count * d.oh * d.ow, k = d.k(), slivers = slivers_of<T>(d.group_dst);
  Index* origins = thread_buffer<Index, 2>(m);
  d.pixel_origins(count, origins);
  for (Index g = 0; g < d.groups; ++g) {
    for (Index s = 0; s < slivers; ++s) {
      const T* bp = packed + (g * slivers + s) * k * NR;
      const Index col = g * d.group_dst + s * NR;
      const int nr = static_cast<int>(std::min<Index>(NR, d.group_dst - s * NR));
      for (Index t = 0; t < m; t += MR) {
        const int mr = static_cast<int>(std::min<Index>(MR, m - t));
        const T* rows[MR];
        const T* base = src + g * d.group_src;
        const Index* at = origins + t;
        if (mr == MR) {
#pragma GCC unroll 16
          for (int r = 0; r < MR; ++r) rows[r] = base + at[r];
        } else {
          for (int r = 0; r < MR; ++r) rows[r] = base + at[std::min(r, mr - 1)];  // tails repeat
        }
        direct_tile(rows, runs, run_count, bp, bias ? bias + col : nullptr, dst + t * d.c_dst + col,
                    d.c_dst, mr, nr, accumulate);
      }
    }
  }
}

// Budget of one chunk's padded source images (L2-resident while its tiles read them).
inline constexpr Index kPaddedBytes = Index{256} << 10;

// Images per chunk of a direct pass: as many padded source images as fit kPaddedBytes, at least
// one. A function of the shapes only.
Index direct_chunk(const DirectConv& d, Index n, Index element_bytes) {
  const Index per_image = std::max<Index>(1, d.src_image() * element_bytes);
  return std::clamp<Index>(kPaddedBytes / per_image, 1, std::max<Index>(1, n));
}

// Calls body(c, n0, nc) for the chunks of images [n0, n0 + nc), spread over one parallel region
// when the work is large enough (each thread runs whole chunks, no barrier inside).
template <class Body>
void for_each_direct_chunk(Index n, Index chunk, Index work, Body body) {
  const Index chunks = (n + chunk - 1) / chunk;
  if (go_parallel(work, chunks)) {
#pragma omp parallel for schedule(static)
    for (Index c = 0; c < chunks; ++c) body(c, c * chunk, std::min(chunk, n - c * chunk));
  } else {
    for (Index c = 0; c < chunks; ++c) body(c, c * chunk, std::min(chunk, n - c * chunk));
  }
}

// The forward map's source: x padded by (pad_h, pad_w), cut to the rows and columns some window
// reaches.
DirectConv forward_source(const ConvGeometry& g) {
  DirectConv d;
  d.hp = (g.oh - 1) * g.stride_h + (g.kh - 1) * g.dilation_h + 1;
  d.wp = (g.ow - 1) * g.stride_w + (g.kw - 1) * g.dilation_w + 1;
  d.c_src = g.c_in, d.oh = g.oh, d.ow = g.ow, d.c_dst = g.c_out;
  d.kh = g.kh, d.kw = g.kw, d.stride_h = g.stride_h, d.stride_w = g.stride_w;
  d.dilation_h = g.dilation_h, d.dilation_w = g.dilation_w;
  d.groups = g.groups, d.group_src = g.group_in(), d.group_dst = g.group_out();
  return d;
}

// y (+)= conv(x, w) (+ b) by the direct kernel.
template <class T>
void forward_direct(const ConvGeometry& g, const T* x, const T* w, const T* b, T* y,
                    bool accumulate) {
  const DirectConv d = forward_source(g);
  const Index k = d.k(), cog = g.group_out(), x_image = g.h * g.w * g.c_in;
  T* packed = thread_buffer<T, 3>(g.groups * slivers_of<T>(cog) * k * Tile<T>::kNR);
  pack_weights<T>(
      d, [&](Index grp, Index p, Index col) { return w[p * g.c_out + grp * cog + col]; }, packed);
  Index* runs = thread_buffer<Index, 0>(2 * g.kh * g.kw);
  const Index run_count = tap_runs(d, runs);
  const Index chunk = direct_chunk(d, g.n, sizeof(T));
  for_each_direct_chunk(
      g.n, chunk, g.n * g.oh * g.ow * g.c_out * k, [&](Index, Index n0, Index nc) {
        T* src = thread_buffer<T, 2>(chunk * d.src_image());
        pad_images(x + n0 * x_image, nc, g.h, g.w, g.c_in, g.pad_h, g.pad_w, d.hp, d.wp, src);
        direct_images(d, src, nc, packed, runs, run_count, b, y + n0 * g.oh * g.ow * g.c_out,
                      accumulate);
      });
}

// ---- the tangent of a convolution read at a 2 x 2 pooling's selection -------------------------
//
// conv2d_relu_max_pool2d's tangent when x has one too (ops/conv2d_relu_max_pool2d.cpp): dy = S t,
// t = conv(dx, w) + conv(x, dw) + db, S reading t at each 2 x 2 window's pixel k*. Unfused, t is
// two direct convolutions (the second adding to the first's output) and a pass of the pooling's
// JVP: t is written, read and written again, and read once more. Here one direct convolution
// computes t: its source interleaves dx and x pixel by pixel (2 C_in values per pixel in the padded
// copy) and its packed weights interleave w and dw likewise, so one reduction covers both terms; its
// tiles take the output pixels window by window (MR = 8 rows: two windows of four pixels), and
// their epilogue adds db and keeps, lane by lane, the row k* selects. t is never stored.

// Pixel origins in window order: for each image, each pooled (i, j), the four pixels (2i, 2j),
// (2i, 2j + 1), (2i + 1, 2j), (2i + 1, 2j + 1), in k* order.
void window_origins(const DirectConv& d, Index count, Index* origins) {
  const Index image = d.src_image(), row = d.stride_h * d.wp * d.c_src, col = d.stride_w * d.c_src;
  for (Index n = 0; n < count; ++n)
    for (Index i = 0; i < d.oh / 2; ++i)
      for (Index j = 0; j < d.ow / 2; ++j) {
        const Index o = n * image + 2 * i * row + 2 * j * col;
        *origins++ = o;
        *origins++ = o + col;
        *origins++ = o + row;
        *origins++ = o + row + col;
      }
}

// Images [0, count) of a and b (h, w, c each), interleaved pixel by pixel into dst (hp, wp, 2c) at
// row offset `top` and column offset `left`, zero elsewhere (as pad_images).
template <class T>
void pad_image_pairs(const T* a, const T* b, Index count, Index h, Index w, Index c, Index top,
                     Index left, Index hp, Index wp, T* dst) {
  const Index col_lo = std::max<Index>(0, left), col_hi = std::min(wp, left + w);
  for (Index n = 0; n < count; ++n, a += h * w * c, b += h * w * c) {
    for (Index r = 0; r < hp; ++r, dst += wp * 2 * c) {
      const Index sr = r - top;
      if (sr < 0 || sr >= h || col_lo >= col_hi) {
        std::fill(dst, dst + wp * 2 * c, T(0));
        continue;
      }
      std::fill(dst, dst + col_lo * 2 * c, T(0));
      for (Index q = col_lo; q < col_hi; ++q) {
        const Index at = (sr * w + q - left) * c;
        copy_run(a + at, c, dst + q * 2 * c);
        copy_run(b + at, c, dst + q * 2 * c + c);
      }
      std::fill(dst + col_hi * 2 * c, dst + wp * 2 * c, T(0));
    }
  }
}

// The tiles of images [0, count) of the padded source, window by window: dy (pooled, c_out values
// per element) = the selected row of each window's four, plus bias.
template <class T>
void selected_images(const DirectConv& d, const T* src, Index count, const T* packed,
                     const Index* runs, Index run_count, const T* bias, const std::int32_t* k_star,
                     T* dy) {
  using Batch = typename Tile<T>::Batch;
  constexpr int W = Tile<T>::kWidth, NV = Tile<T>::kNV, MR = Tile<T>::kMR, NR = Tile<T>::kNR;
  static_assert(MR % 4 == 0, "tiles of whole windows");
  const Index m = count * d.oh * d.ow, k = d.k(), slivers = d.c_dst / NR;
  Index* origins = thread_buffer<Index, 2>(m);
  window_origins(d, count, origins);
  for (Index s = 0; s < slivers; ++s) {
    const T* bp = packed + s * k * NR;
    const Index col = s * NR;
    Batch b[NV];
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) b[v] = bias ? Batch::load_unaligned(bias + col + v * W) : Batch(T(0));
    for (Index t = 0; t < m; t += MR) {
      const int windows = static_cast<int>(std::min<Index>(MR, m - t)) / 4;
      const T* rows[MR];
#pragma GCC unroll 16
      for (int r = 0; r < MR; ++r) rows[r] = src + origins[t + std::min(r, 4 * windows - 1)];
      typename Tile<T>::Accumulators acc;
      direct_reduce(rows, runs, run_count, bp, acc);
      for (int w = 0; w < windows; ++w) {
        const Index at = (t / 4 + w) * d.c_dst + col;  // the pooled element's first channel
#pragma GCC unroll 4
        for (int v = 0; v < NV; ++v) {
          const Batch kv = load_window_index<T>(k_star + at + v * W);
          Batch out(T(0));  // k* = -1: derivative 0
#pragma GCC unroll 4
          for (int q = 0; q < 4; ++q) out = xsimd::select(kv == Batch(T(q)), acc[4 * w + q][v] + b[v], out);
          out.store_unaligned(dy + at + v * W);
        }
      }
    }
  }
}

// The selected tangent by the direct kernel: dx and dw either may be null (not both).
template <class T>
void pool_tangent_direct(const ConvGeometry& g, const T* x, const T* w, const T* dx, const T* dw,
                         const T* db, const std::int32_t* k_star, T* dy) {
  const bool pair = dx && dw;
  DirectConv d = forward_source(g);
  d.c_src = d.group_src = pair ? 2 * g.c_in : g.c_in;
  const Index k = d.k(), x_image = g.h * g.w * g.c_in, per_image = (g.oh / 2) * (g.ow / 2) * g.c_out;
  T* packed = thread_buffer<T, 3>(slivers_of<T>(g.c_out) * k * Tile<T>::kNR);
  // Reduction index p = (i kw + j) c_src + c: w's tap (i, j, c) for the dx half, dw's for the x half.
  pack_weights<T>(
      d,
      [&](Index, Index p, Index col) {
        const Index tap = p / d.c_src, c = p % d.c_src;
        const T* weights = pair ? (c < g.c_in ? w : dw) : (dx ? w : dw);
        return weights[(tap * g.c_in + c % g.c_in) * g.c_out + col];
      },
      packed);
  Index* runs = thread_buffer<Index, 0>(2 * g.kh * g.kw);
  const Index run_count = tap_runs(d, runs);
  const Index chunk = direct_chunk(d, g.n, sizeof(T));
  for_each_direct_chunk(g.n, chunk, g.n * g.oh * g.ow * g.c_out * k, [&](Index, Index n0, Index nc) {
    T* src = thread_buffer<T, 2>(chunk * d.src_image());
    if (pair) {
      pad_image_pairs(dx + n0 * x_image, x + n0 * x_image, nc, g.h, g.w, g.c_in, g.pad_h, g.pad_w,
                      d.hp, d.wp, src);
    } else {
      pad_images(dx ? dx + n0 * x_image : x + n0 * x_image, nc, g.h, g.w, g.c_in, g.pad_h, g.pad_w,
                 d.hp, d.wp, src);
    }
    selected_images(d, src, nc, packed, runs, run_count, db, k_star + n0 * per_image, dy + n0 * per_image);
  });
}

// The adjoint in x at stride 1, convT(ybar, w), as a forward convolution: xbar[ih, iw] gathers
// ybar[ih + ph - i dh, iw + pw - j dw] w[i, j], which is the direct kernel run over ybar padded by
// (KH - 1) dh - ph rows on top ((KW - 1) dw - pw columns on the left; cut where that is negative)
// with the kernel flipped in (i, j) and its channel roles swapped (C_out/G in, C_in/G out).
DirectConv input_adjoint_source(const ConvGeometry& g) {
  DirectConv d;
  d.hp = g.h + (g.kh - 1) * g.dilation_h;
  d.wp = g.w + (g.kw - 1) * g.dilation_w;
  d.c_src = g.c_out, d.oh = g.h, d.ow = g.w, d.c_dst = g.c_in;
  d.kh = g.kh, d.kw = g.kw, d.dilation_h = g.dilation_h, d.dilation_w = g.dilation_w;
  d.groups = g.groups, d.group_src = g.group_out(), d.group_dst = g.group_in();
  return d;
}

// Whether `channels` fill at least the fraction num / den of the NR-wide slivers a direct kernel
// spreads them over (columns past them are computed and dropped).
template <class T>
bool fills_slivers(Index channels, Index num, Index den) {
  return den * channels >= num * slivers_of<T>(channels) * Tile<T>::kNR;
}

// xbar += convT(ybar, w) by the direct kernel (stride 1 only: see input_adjoint_source).
template <class T>
void input_adjoint_direct(const ConvGeometry& g, const T* w, const T* ybar, T* xbar, bool accumulate) {
  const DirectConv d = input_adjoint_source(g);
  const Index k = d.k(), cig = g.group_in(), cog = g.group_out();
  const Index x_image = g.h * g.w * g.c_in, y_image = g.oh * g.ow * g.c_out;
  T* packed = thread_buffer<T, 3>(g.groups * slivers_of<T>(cig) * k * Tile<T>::kNR);
  // Reduction index p = (i KW + j) C_out/G + c of the flipped kernel; output column = x channel.
  pack_weights<T>(
      d,
      [&](Index grp, Index p, Index col) {
        const Index tap = p / cog, c = p % cog, i = tap / g.kw, j = tap % g.kw;
        return w[(((g.kh - 1 - i) * g.kw + (g.kw - 1 - j)) * cig + col) * g.c_out + grp * cog + c];
      },
      packed);
  Index* runs = thread_buffer<Index, 0>(2 * g.kh * g.kw);
  const Index run_count = tap_runs(d, runs);
  const Index chunk = direct_chunk(d, g.n, sizeof(T));
  const Index top = (g.kh - 1) * g.dilation_h - g.pad_h, left = (g.kw - 1) * g.dilation_w - g.pad_w;
  for_each_direct_chunk(
      g.n, chunk, g.n * g.h * g.w * g.c_in * k, [&](Index, Index n0, Index nc) {
        T* src = thread_buffer<T, 2>(chunk * d.src_image());
        pad_images(ybar + n0 * y_image, nc, g.oh, g.ow, g.c_out, top, left, d.hp, d.wp, src);
        direct_images(d, src, nc, packed, runs, run_count, static_cast<const T*>(nullptr),
                      xbar + n0 * x_image, accumulate);
      });
}

// The register tile of the wbar kernel, MR taps x NV batches of output channels: the GEMM's 8 x 2
// (6 x 2 with 16 registers) in general, and 6 x 4 where the output channels of a group come in
// whole 4-batch slivers and the machine has 32 vector registers (24 accumulators, 4 batches of
// ybar, 1 broadcast). Per pixel the wide tile loads 4 batches and broadcasts 6 taps for 24 FMAs,
// against 2 and 8 for 16, and reads each pixel's 4 W channels of ybar as one contiguous run.
// Measured on conv2 of train_cnn (32 -> 64 channels, 14 x 14, batch 128, float, 1 thread, AMD
// Zen 5): wbar 5.9-6.2 -> 5.0-5.2 ms (150-158 -> 180-185 GFLOP/s). 5 x 4 gave 174, 12 x 2 and
// 10 x 2 no gain, 4 x 4 half the speed. Each value is the same sequence of FMAs over the pixels
// whichever tile computes it: the results are bitwise the same.
// Layers with few taps (k = KH KW C_in/G, plus one row for the bias adjoint, at most 10: a 3 x 3
// kernel over one input channel) take all of them in one 10 x 2 tile, so that ybar is read once:
// the 8-row tile read it twice for 9 taps, computing the second time 8 rows for 1. On conv1 of
// train_cnn (1 -> 32, 28 x 28, batch 128; its chunks of ybar, 7 MB, do not stay in cache) wbar
// 0.87-0.94 -> 0.49-0.51 ms (scratch program, same process; 9 rows exactly 0.49, 12 rows 0.56).
template <class T, int MR, int NV>
struct WeightTileShape {
  static constexpr int kMR = MR, kNV = NV, kNR = NV * static_cast<int>(xsimd::batch<T>::size);
};
template <class T>
using NarrowWeightTile = WeightTileShape<T, Tile<T>::kMR, Tile<T>::kNV>;
template <class T>
using WideWeightTile = WeightTileShape<T, 6, 4>;
template <class T>
using FewTapsWeightTile = WeightTileShape<T, 10, Tile<T>::kNV>;
// The wide and the few-taps tiles need 32 vector registers (AVX-512); with 16 they would spill.
inline constexpr bool kLargeWeightTiles = kVectorRegisters == 32;

// One MR x NR tile of a chunk's wbar term, MR taps x NR output channels: out[r, 0:nr] =
// sum over the chunk's m pixels t of src[origins[t] + taps[r]] * yp[t, 0:NR], for r < mr, with
// row t of the chunk's ybar columns at yp + t ldy (NR readable values each). The reduction over
// pixels stays in registers. With kBias the last row sums ybar itself (the bias adjoint's term,
// bias[0:nr]) and the taps take the others (mr < MR).
template <class T, class Shape, bool kBias = false>
void weight_tile(const T* src, const Index* origins, Index m, const Index* taps, int mr,
                 const T* __restrict yp, Index ldy, T* out, Index ldo, int nr, T* bias = nullptr) {
  using Batch = xsimd::batch<T>;
  constexpr int W = static_cast<int>(Batch::size), NV = Shape::kNV, MR = Shape::kMR;
  constexpr int NR = Shape::kNR, kTapRows = kBias ? MR - 1 : MR;
  Batch acc[MR][NV];
#pragma GCC unroll 16
  for (int r = 0; r < MR; ++r) {
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) acc[r][v] = Batch(T(0));
  }
  Index off[kTapRows];
#pragma GCC unroll 16
  for (int r = 0; r < kTapRows; ++r) off[r] = taps[std::min(r, mr - 1)];  // tails repeat
  for (Index t = 0; t < m; ++t) {
    const T* a = src + origins[t];
    Batch bv[NV];
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) bv[v] = Batch::load_unaligned(yp + t * ldy + v * W);
#pragma GCC unroll 16
    for (int r = 0; r < kTapRows; ++r) {
      const Batch av(a[off[r]]);
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) acc[r][v] = xsimd::fma(av, bv[v], acc[r][v]);
    }
    if constexpr (kBias) {
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) acc[MR - 1][v] += bv[v];
    }
  }
  alignas(64) T tile[MR * NR];
#pragma GCC unroll 16
  for (int r = 0; r < MR; ++r) {
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) acc[r][v].store_aligned(tile + r * NR + v * W);
  }
  for (int r = 0; r < mr; ++r) copy_run(tile + r * NR, nr, out + r * ldo);
  if constexpr (kBias) copy_run(tile + (MR - 1) * NR, nr, bias);
}

// wbar += corr(x, ybar) by the direct kernel: per chunk of images the padded copy of x the forward
// map reads, and per NR-wide sliver of output channels ybar's columns; every tile of MR taps x NR
// channels then reduces over the chunk's pixels. When every sliver is full (C_out / G a multiple of
// NR) the tiles read the slivers inside ybar itself, row stride C_out; otherwise each sliver is
// packed NR wide with zeros after its last channel (a partial sliver must not read past ybar). The
// packed copy was a pass over ybar per sliver: for conv1 of train_cnn (32 channels, 12.8 MB) 4% of
// its gradient. Chunk terms go to slices of a buffer that are added in chunk order, as on the GEMM
// path. With bbar, the bias adjoint is summed in the same pass: in the last tile of taps when it
// has a row to spare (conv1: 9 taps + the bias in the 10-row tile), else over the sliver while
// the chunk's ybar is in cache; a separate pass over the whole of ybar (12.8 MB for conv1) was
// 2.3% of the CNN's G v. Its chunk terms are added in chunk order too.
template <class T>
void weight_adjoint_direct(const ConvGeometry& g, const T* x, const T* ybar, T* wbar,
                           bool accumulate, T* bbar, bool accumulate_b) {
  const DirectConv d = forward_source(g);
  const Index k = d.k(), cig = g.group_in(), cog = g.group_out();
  const Index x_image = g.h * g.w * g.c_in, pixels = g.oh * g.ow, w_size = k * g.c_out;
  // Offset of reduction index p = (i KW + j) C_in/G + c from a window's origin.
  Index* taps = thread_buffer<Index, 1>(k);
  for (Index i = 0; i < g.kh; ++i)
    for (Index j = 0; j < g.kw; ++j)
      for (Index c = 0; c < cig; ++c)
        taps[(i * g.kw + j) * cig + c] = i * g.dilation_h * d.wp * g.c_in + j * g.dilation_w * g.c_in + c;
  const Index chunk = direct_chunk(d, g.n, sizeof(T)), chunks = (g.n + chunk - 1) / chunk;
  T* partial = thread_buffer<T, 1>(chunks * w_size);
  T* partial_b = bbar ? thread_buffer<T, 5>(chunks * g.c_out) : nullptr;
  constexpr int NR = NarrowWeightTile<T>::kNR;
  const bool in_place = cog % NR == 0;  // every sliver full: the tiles read ybar itself
  const bool wide = kLargeWeightTiles && cog % WideWeightTile<T>::kNR == 0;
  const bool few_taps = kLargeWeightTiles && k + (bbar ? 1 : 0) <= FewTapsWeightTile<T>::kMR;
  // The tiles of one chunk and group: for each sliver of Shape::kNR output channels (from column
  // `first` of wbar), sliver(col, nr) gives the sliver's ybar columns and their row stride, then
  // its tiles run over the taps (and the bias, into bias_out[col...], when bias_out is not null).
  const auto chunk_tiles = [&]<class Shape>(Shape, const T* xs, Index m, const Index* origins,
                                            Index first, T* out, T* bias_out, const auto& sliver) {
    for (Index s = 0; s * Shape::kNR < cog; ++s) {
      const Index col = first + s * Shape::kNR;
      const int nr = static_cast<int>(std::min<Index>(Shape::kNR, cog - s * Shape::kNR));
      const auto [ys, ldy] = sliver(col, nr);
      bool bias_done = bias_out == nullptr;
      for (Index p = 0; p < k; p += Shape::kMR) {
        const int mr = static_cast<int>(std::min<Index>(Shape::kMR, k - p));
        if (!bias_done && mr < Shape::kMR) {  // the last tile, with a row to spare: the bias too
          weight_tile<T, Shape, true>(xs, origins, m, taps + p, mr, ys, ldy,
                                      out + p * g.c_out + col, g.c_out, nr, bias_out + col);
          bias_done = true;
        } else {
          weight_tile<T, Shape>(xs, origins, m, taps + p, mr, ys, ldy, out + p * g.c_out + col,
                                g.c_out, nr);
        }
      }
      if (!bias_done) {  // no row to spare: the sum over the sliver's rows, in cache
        std::fill_n(bias_out + col, nr, T(0));
        for (Index t = 0; t < m; ++t) add_run(ys + t * ldy, nr, bias_out + col);
      }
    }
  };
  for_each_direct_chunk(
      g.n, chunk, g.n * pixels * g.c_out * k, [&](Index c, Index n0, Index nc) {
        T* src = thread_buffer<T, 2>(chunk * d.src_image());
        pad_images(x + n0 * x_image, nc, g.h, g.w, g.c_in, g.pad_h, g.pad_w, d.hp, d.wp, src);
        const Index m = nc * pixels;
        Index* origins = thread_buffer<Index, 2>(chunk * pixels);
        d.pixel_origins(nc, origins);
        const T* yc = ybar + n0 * pixels * g.c_out;
        T* out = partial + c * w_size;
        T* out_b = partial_b ? partial_b + c * g.c_out : nullptr;
        const auto inside = [&](Index col, int) { return std::pair{yc + col, g.c_out}; };
        T* yp = in_place ? nullptr : thread_buffer<T, 4>(chunk * pixels * NR);
        const auto packed = [&](Index col, int nr) {
          for (Index t = 0; t < m; ++t) {
            copy_run(yc + t * g.c_out + col, nr, yp + t * NR);
            zero_run(NR - nr, yp + t * NR + nr);
          }
          return std::pair{static_cast<const T*>(yp), Index{NR}};
        };
        for (Index grp = 0; grp < g.groups; ++grp) {
          const T* xs = src + grp * cig;
          const Index first = grp * cog;
          if constexpr (kLargeWeightTiles) {  // not compiled where they would spill registers
            if (few_taps) {
              if (in_place) {
                chunk_tiles(FewTapsWeightTile<T>{}, xs, m, origins, first, out, out_b, inside);
              } else {
                chunk_tiles(FewTapsWeightTile<T>{}, xs, m, origins, first, out, out_b, packed);
              }
              continue;
            }
            if (wide) {
              chunk_tiles(WideWeightTile<T>{}, xs, m, origins, first, out, out_b, inside);
              continue;
            }
          }
          if (in_place) {
            chunk_tiles(NarrowWeightTile<T>{}, xs, m, origins, first, out, out_b, inside);
          } else {
            chunk_tiles(NarrowWeightTile<T>{}, xs, m, origins, first, out, out_b, packed);
          }
        }
      });
  reduce_chunk_terms(partial, chunks, w_size, wbar, accumulate);
  if (bbar) reduce_chunk_terms(partial_b, chunks, g.c_out, bbar, accumulate_b);
}

// bbar (+)= the sum of ybar's m rows of c values, row after row (where the direct weight adjoint
// does not compute it).
template <class T>
void bias_adjoint(const T* ybar, Index m, Index c, T* bbar, bool accumulate) {
  if (!accumulate) std::fill_n(bbar, c, T(0));
  for (Index t = 0; t < m; ++t) add_run(ybar + t * c, c, bbar);
}

}  // namespace

template <class T>
void conv2d_forward(const ConvGeometry& g, const T* x, const T* w, const T* b, T* y,
                    bool accumulate) {
  if (g.n == 0 || g.oh == 0 || g.ow == 0) return;
  const Index pixels = g.oh * g.ow;
  const T beta = b != nullptr || accumulate ? T(1) : T(0);
  if (g.pointwise()) {  // x seen as (n h w, c_in) is the column matrix
    const Index m = g.n * pixels;
    if (b != nullptr) bias_rows(b, m, g.c_out, accumulate, y);
    forward_gemms(g, x, g.c_in, m, w, beta, y);
    return;
  }
  // The direct kernel copies each image padded to the extent its windows span, which grows with
  // the padding and the stride, while the column matrix of im2col grows with the output only.
  // Where the padded copy would be the larger (padding or strides far beyond the kernel, e.g.
  // padding 2^48 around a few pixels, where the copy could not even be allocated), the columns
  // are formed instead: im2col + GEMM, as the adjoints do. Compared in double: the padded extent
  // can overflow Index.
  const DirectConv d = forward_source(g);
  const double padded = static_cast<double>(d.hp) * static_cast<double>(d.wp) * static_cast<double>(g.c_in);
  const double columns = static_cast<double>(pixels) * static_cast<double>(g.groups * g.k());
  if (padded > columns) {
    const Index ld_cols = g.groups * g.k();
    for_each_chunk<T>(g, [&](Index, Index n0, Index nc, T* cols) {
      const Index m = nc * pixels;
      T* yc = y + n0 * pixels * g.c_out;
      im2col(g, x + n0 * g.h * g.w * g.c_in, nc, cols);
      if (b != nullptr) bias_rows(b, m, g.c_out, accumulate, yc);
      forward_gemms(g, cols, ld_cols, m, w, beta, yc);
    });
    return;
  }
  forward_direct(g, x, w, b, y, accumulate);
}

template <class T>
bool conv2d_pool_tangent_applies(const ConvGeometry& g) {
  if (Tile<T>::kMR % 4 != 0 || g.groups != 1 || g.oh % 2 != 0 || g.ow % 2 != 0 || g.oh == 0 ||
      g.ow == 0 || g.c_out % Tile<T>::kNR != 0) {
    return false;
  }
  // As conv2d_forward: the direct kernel only where its padded copy is not larger than the column
  // matrix (here twice the channels, counted in double).
  const DirectConv d = forward_source(g);
  const double padded = static_cast<double>(d.hp) * static_cast<double>(d.wp) * static_cast<double>(g.c_in);
  return padded <= static_cast<double>(g.oh * g.ow) * static_cast<double>(g.k());
}

template <class T>
void conv2d_pool_tangent(const ConvGeometry& g, const T* x, const T* w, const T* dx, const T* dw,
                         const T* db, const std::int32_t* k_star, T* dy) {
  if (g.n == 0) return;
  if constexpr (Tile<T>::kMR % 4 == 0) {
    pool_tangent_direct(g, x, w, dx, dw, db, k_star, dy);
  } else {  // conv2d_pool_tangent_applies is false: never called
    (void)x, (void)w, (void)dx, (void)dw, (void)db, (void)k_star, (void)dy;
  }
}

template <class T>
void conv2d_backward(const ConvGeometry& g, const T* x, const T* w, const T* ybar,
                     const ConvAdjoints<T>& out) {
  T *xbar = out.x, *wbar = out.w, *bbar = out.b;
  if (xbar == nullptr && wbar == nullptr && bbar == nullptr) return;
  if (g.n == 0 || g.oh == 0 || g.ow == 0) {  // no term: the adjoints are zero
    if (xbar != nullptr && !out.accumulate_x) std::fill_n(xbar, g.n * g.h * g.w * g.c_in, T(0));
    if (wbar != nullptr && !out.accumulate_w) std::fill_n(wbar, g.k() * g.c_out, T(0));
    if (bbar != nullptr && !out.accumulate_b) std::fill_n(bbar, g.c_out, T(0));
    return;
  }
  const Index pixels = g.oh * g.ow;
  if (g.pointwise()) {  // the columns are x itself, and the column adjoint is xbar itself
    const Index m = g.n * pixels;
    if (wbar != nullptr) weight_gemms(g, x, g.c_in, m, ybar, out.accumulate_w ? T(1) : T(0), wbar);
    if (xbar != nullptr) input_gemms(g, ybar, m, w, out.accumulate_x ? T(1) : T(0), xbar, g.c_in);
    if (bbar != nullptr) bias_adjoint(ybar, m, g.c_out, bbar, out.accumulate_b);
    return;
  }
  // The direct kernels where they were measured faster than the GEMM path (float, 1 thread, batch
  // 128, 3x3 kernels, the Intel machine of 2026-12-02; bench/RESULTS.md): at stride 1 xbar as a
  // forward convolution of ybar when the input channels fill 3/4 of the register tiles (32 -> 64
  // on 14 x 14: 6.95 -> 5.77 ms, but 16 -> 32 on 28 x 28: 10.8 -> 13.0 ms), and wbar when the output
  // channels fill half of them (1, 3, 8, 16 -> 32 on 28 x 28: 3.3-11.6 -> 2.5-9.0 ms; 32 -> 64 on
  // 14 x 14 about even). Neither where the padded copy would be larger than the column matrix (as
  // in conv2d_forward).
  if (xbar != nullptr && g.stride_h == 1 && g.stride_w == 1 && fills_slivers<T>(g.group_in(), 3, 4)) {
    const DirectConv d = input_adjoint_source(g);
    const double padded = static_cast<double>(d.hp) * static_cast<double>(d.wp) * static_cast<double>(g.c_out);
    const double columns = static_cast<double>(pixels) * static_cast<double>(g.groups * g.k());
    if (padded <= columns) {
      input_adjoint_direct(g, w, ybar, xbar, out.accumulate_x);
      xbar = nullptr;
    }
  }
  if (wbar != nullptr && fills_slivers<T>(g.group_out(), 1, 2)) {
    const DirectConv d = forward_source(g);
    const double padded = static_cast<double>(d.hp) * static_cast<double>(d.wp) * static_cast<double>(g.c_in);
    const double columns = static_cast<double>(pixels) * static_cast<double>(g.groups * g.k());
    if (padded <= columns) {
      weight_adjoint_direct(g, x, ybar, wbar, out.accumulate_w, bbar, out.accumulate_b);
      wbar = bbar = nullptr;
    }
  }
  if (xbar != nullptr || wbar != nullptr) {
    // wbar is a sum over chunks: each chunk's term goes to its own slice of a buffer, and the
    // slices are added in chunk order (a fixed order whatever thread computed them).
    const Index ld_cols = g.groups * g.k(), x_image = g.h * g.w * g.c_in, w_size = g.k() * g.c_out;
    const Index chunk = chunk_images(g, sizeof(T)), chunks = (g.n + chunk - 1) / chunk;
    T* partial = wbar != nullptr ? thread_buffer<T, 1>(chunks * w_size) : nullptr;
    for_each_chunk<T>(g, [&](Index c, Index n0, Index nc, T* cols) {
      const Index m = nc * pixels;
      const T* yc = ybar + n0 * pixels * g.c_out;
      if (wbar != nullptr) {
        im2col(g, x + n0 * x_image, nc, cols);
        weight_gemms(g, cols, ld_cols, m, yc, T(0), partial + c * w_size);
      }
      if (xbar != nullptr) {  // the same buffer, now for the column adjoint
        input_gemms(g, yc, m, w, T(0), cols, ld_cols);
        col2im(g, cols, nc, xbar + n0 * x_image, out.accumulate_x);
      }
    });
    if (wbar != nullptr) reduce_chunk_terms(partial, chunks, w_size, wbar, out.accumulate_w);
  }
  if (bbar != nullptr) bias_adjoint(ybar, g.n * pixels, g.c_out, bbar, out.accumulate_b);
}

template void conv2d_forward<float>(const ConvGeometry&, const float*, const float*, const float*,
                                    float*, bool);
template void conv2d_forward<double>(const ConvGeometry&, const double*, const double*,
                                     const double*, double*, bool);
template bool conv2d_pool_tangent_applies<float>(const ConvGeometry&);
template bool conv2d_pool_tangent_applies<double>(const ConvGeometry&);
template void conv2d_pool_tangent<float>(const ConvGeometry&, const float*, const float*, const float*,
                                         const float*, const float*, const std::int32_t*, float*);
template void conv2d_pool_tangent<double>(const ConvGeometry&, const double*, const double*,
                                          const double*, const double*, const double*,
                                          const std::int32_t*, double*);
template void conv2d_backward<float>(const ConvGeometry&, const float*, const float*, const float*,
                                     const ConvAdjoints<float>&);
template void conv2d_backward<double>(const ConvGeometry&, const double*, const double*,
                                      const double*, const ConvAdjoints<double>&);

}  // namespace amari::kernels
