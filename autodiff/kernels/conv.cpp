// conv2d kernels: im2col + one GEMM per group, over chunks of images. The design and its
// measurements are in the opening comment of autodiff/ops/conv2d.cpp; this file is the mechanics.
//
// The column matrix of a chunk of nc images has one row per output pixel (nc * oh * ow rows) and
// groups * k columns, laid out (pixel, group, kh, kw, c) so that
//   - group g's block is the sub-matrix at column g * k with leading dimension groups * k, and
//   - its column index (kh * KW + kw) * C_in/groups + c is the row index of the HWIO weights seen
//     as a (k, C_out) matrix,
// hence y[pixels, g's outputs] = cols_g * w[:, g's outputs] is a plain GEMM on strided views, and
// it writes y in NHWC directly. With groups == 1 and dilation 1, the kw taps of one kernel row are
// one contiguous run of x (kw * C_in values): im2col copies runs, not single values.
#include <amari/autodiff/kernels/conv.hpp>

#include <algorithm>
#include <cstddef>
#include <new>

#include <omp.h>

#include <amari/autodiff/kernels/elementwise.hpp>
#include <amari/autodiff/kernels/gemm.hpp>

namespace amari::kernels {
namespace {

// Budget of one chunk's column matrix (see ops/conv2d.cpp for the measurement behind it).
inline constexpr Index kColumnBytes = Index{1} << 20;

// The calling thread's grow-only, 64-byte aligned column buffer (one per element type), so a
// convolution allocates nothing in steady state; private to its thread so concurrent calls from
// different threads never share it.
template <class T, int Slot = 0>
T* column_buffer(Index count) {
  struct Buffer {
    T* data = nullptr;
    Index capacity = 0;
    ~Buffer() { release(); }
    void release() {
      if (data != nullptr) ::operator delete (data, std::align_val_t{64});
      data = nullptr;
      capacity = 0;
    }
  };
  thread_local Buffer buffer;
  if (count > buffer.capacity) {
    buffer.release();
    buffer.data = static_cast<T*>(
        ::operator new (static_cast<std::size_t>(count) * sizeof(T), std::align_val_t{64}));
    buffer.capacity = count;
  }
  return buffer.data;
}

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

// xbar (images [0, nc) of the chunk) += col2im(cols); parallel over images, whose xbar regions are
// disjoint, so no two threads ever add to the same value.
template <class T>
void col2im(const ConvGeometry& g, const T* cols, Index nc, T* xbar) {
  const Index x_image = g.h * g.w * g.c_in, cols_image = g.oh * g.ow * g.groups * g.k();
  if (go_parallel(nc * cols_image, nc)) {
#pragma omp parallel for schedule(static)
    for (Index n = 0; n < nc; ++n) col2im_image(g, cols + n * cols_image, xbar + n * x_image);
  } else {
    for (Index n = 0; n < nc; ++n) col2im_image(g, cols + n * cols_image, xbar + n * x_image);
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
// region (each thread runs whole chunks: im2col, GEMMs and col2im on one thread, no barrier per
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
      T* cols = column_buffer<T>(count);
#pragma omp for schedule(static)
      for (Index c = 0; c < chunks; ++c) body(c, c * chunk, std::min(chunk, g.n - c * chunk), cols);
    }
  } else {
    T* cols = column_buffer<T>(count);
    for (Index c = 0; c < chunks; ++c) body(c, c * chunk, std::min(chunk, g.n - c * chunk), cols);
  }
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
  const Index ld_cols = g.groups * g.k();
  for_each_chunk<T>(g, [&](Index, Index n0, Index nc, T* cols) {
    const Index m = nc * pixels;
    T* yc = y + n0 * pixels * g.c_out;
    im2col(g, x + n0 * g.h * g.w * g.c_in, nc, cols);
    if (b != nullptr) bias_rows(b, m, g.c_out, accumulate, yc);
    forward_gemms(g, cols, ld_cols, m, w, beta, yc);
  });
}

template <class T>
void conv2d_backward(const ConvGeometry& g, const T* x, const T* w, const T* ybar, T* xbar,
                     T* wbar) {
  if (g.n == 0 || g.oh == 0 || g.ow == 0 || (xbar == nullptr && wbar == nullptr)) return;
  const Index pixels = g.oh * g.ow;
  if (g.pointwise()) {  // the columns are x itself, and the column adjoint is xbar itself
    const Index m = g.n * pixels;
    if (wbar != nullptr) weight_gemms(g, x, g.c_in, m, ybar, T(1), wbar);
    if (xbar != nullptr) input_gemms(g, ybar, m, w, T(1), xbar, g.c_in);
    return;
  }
  // wbar is a sum over chunks: each chunk's term goes to its own slice of a buffer, and the slices
  // are added in chunk order (a fixed order whatever thread computed them).
  const Index ld_cols = g.groups * g.k(), x_image = g.h * g.w * g.c_in, w_size = g.k() * g.c_out;
  const Index chunk = chunk_images(g, sizeof(T)), chunks = (g.n + chunk - 1) / chunk;
  T* partial = wbar != nullptr ? column_buffer<T, 1>(chunks * w_size) : nullptr;
  for_each_chunk<T>(g, [&](Index c, Index n0, Index nc, T* cols) {
    const Index m = nc * pixels;
    const T* yc = ybar + n0 * pixels * g.c_out;
    if (wbar != nullptr) {
      im2col(g, x + n0 * x_image, nc, cols);
      weight_gemms(g, cols, ld_cols, m, yc, T(0), partial + c * w_size);
    }
    if (xbar != nullptr) {  // the same buffer, now for the column adjoint
      input_gemms(g, yc, m, w, T(0), cols, ld_cols);
      col2im(g, cols, nc, xbar + n0 * x_image);
    }
  });
  if (wbar != nullptr) {
    for (Index c = 0; c < chunks; ++c) add_run(partial + c * w_size, w_size, wbar);
  }
}

template void conv2d_forward<float>(const ConvGeometry&, const float*, const float*, const float*,
                                    float*, bool);
template void conv2d_forward<double>(const ConvGeometry&, const double*, const double*,
                                     const double*, double*, bool);
template void conv2d_backward<float>(const ConvGeometry&, const float*, const float*, const float*,
                                     float*, float*);
template void conv2d_backward<double>(const ConvGeometry&, const double*, const double*,
                                      const double*, double*, double*);

}  // namespace amari::kernels
