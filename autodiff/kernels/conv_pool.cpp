// conv2d_relu_max_pool2d's fused rules. Both walk the pooled output: for each pooled element and
// each vector of output channels they compute the convolution at the four pixels of its window
// (the same multiply-adds as the full-size convolution: the windows tile the output) and keep, lane
// by lane, the one k* selects. What they save is memory traffic: the unfused tangent writes the
// convolution's full-size tangent and the pooling's JVP reads it back; the unfused adjoint writes
// the full-size cotangent (the pooling's VJP) and the weight adjoint reads it back. On train_cnn's
// first layer (128 x 28 x 28 x 32 floats) each of those is 12.8 MB.
//
// Taps are read from a zero-padded copy of one image (as the direct convolution of conv.cpp), at
// offset (a dh Wp + b dw) C_in + c from a pixel's window origin for tap (a, b, c), in the order of
// the HWIO weight rows.
#include <amari/autodiff/kernels/conv_pool.hpp>

#include <algorithm>
#include <utility>
#include <vector>

#include <xsimd/xsimd.hpp>

#include <amari/autodiff/kernels/blocks.hpp>
#include <amari/autodiff/kernels/pad_images.hpp>
#include <amari/autodiff/kernels/thread_buffer.hpp>
#include <amari/autodiff/kernels/window_index.hpp>

namespace amari::kernels {
// Internal to this file (a named namespace: the exported templates below capture these types).
namespace fused {

// The four pixels of pooled element (i, j), in k* order (0: top left, 1: top right, 2: bottom
// left, 3: bottom right), and the taps, as offsets into the padded image.
struct PaddedImage {
  Index hp = 0, wp = 0, c = 0;
  Index row_step = 0, col_step = 0;  // padded-image offset of one output row / column
  std::vector<Index> taps;           // offset of tap t from a pixel's window origin

  explicit PaddedImage(const ConvGeometry& g)
      : hp(g.h + 2 * g.pad_h),
        wp(g.w + 2 * g.pad_w),
        c(g.c_in),
        row_step(g.stride_h * wp * g.c_in),
        col_step(g.stride_w * g.c_in),
        taps(static_cast<std::size_t>(g.k())) {
    std::size_t t = 0;
    for (Index a = 0; a < g.kh; ++a)
      for (Index b = 0; b < g.kw; ++b)
        for (Index ch = 0; ch < g.c_in; ++ch) taps[t++] = (a * g.dilation_h * wp + b * g.dilation_w) * c + ch;
  }
  Index size() const { return hp * wp * c; }
  // Window origins of the four pixels of pooled element (i, j).
  std::array<Index, 4> quad(Index i, Index j) const {
    const Index o = 2 * i * row_step + 2 * j * col_step;
    return {o, o + col_step, o + row_step, o + row_step + col_step};
  }
};

// Image img of x, zero-padded, into the calling thread's buffer.
template <class T>
const T* pad_image(const ConvGeometry& g, const PaddedImage& p, const T* x, Index img) {
  T* padded = thread_buffer<T, 6>(p.size());
  pad_images(x + img * g.h * g.w * g.c_in, 1, g.h, g.w, g.c_in, g.pad_h, g.pad_w, p.hp, p.wp, padded);
  return padded;
}

// Most taps one register tile holds.
inline constexpr int kMaxTapTile = 20;

// The weight and bias adjoint terms of one image for output channels [o, o + NV W) and taps
// [t0, t0 + NT), added to wbar_part (k x c_out) and, if bbar_part, to bbar_part. The NT x NV tap
// sums stay in registers over the image's pooled pixels, which are read once, in order; each
// pooled cotangent is split by k* into the four pixels' cotangents, and each tap adds four
// products.
template <int NT, int NV, class T>
void adjoint_tile(const ConvGeometry& g, const PaddedImage& p, const T* xp, const T* ybar,
                  const std::int32_t* k_star, Index o, Index t0, T* wbar_part, T* bbar_part) {
  using B = xsimd::batch<T>;
  constexpr Index W = B::size;
  const Index ph = g.oh / 2, pw = g.ow / 2;
  B acc[NT][NV];
  B bias[NV];
  for (int v = 0; v < NV; ++v) {
    bias[v] = B(T(0));
    for (int t = 0; t < NT; ++t) acc[t][v] = B(T(0));
  }
  Index tap[NT];
  for (int t = 0; t < NT; ++t) tap[t] = p.taps[static_cast<std::size_t>(t0 + t)];
  for (Index i = 0; i < ph; ++i)
    for (Index j = 0; j < pw; ++j) {
      const Index at = (i * pw + j) * g.c_out + o;
      const auto q = p.quad(i, j);
      const T* x0 = xp + q[0];
      const T* x1 = xp + q[1];
      const T* x2 = xp + q[2];
      const T* x3 = xp + q[3];
      B y[4][NV];
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) {
        const B yb = B::load_unaligned(ybar + at + v * W);
        const B k = load_window_index<T>(k_star + at + v * W);
        const B zero(T(0));
        y[0][v] = xsimd::select(k == B(T(0)), yb, zero);
        y[1][v] = xsimd::select(k == B(T(1)), yb, zero);
        y[2][v] = xsimd::select(k == B(T(2)), yb, zero);
        y[3][v] = xsimd::select(k == B(T(3)), yb, zero);
        // Summed whether or not bbar_part wants it: GCC 12.2 at -O3 (its vectorizers) dropped all
        // lanes but the first of this sum when it was conditional (double, two tap tiles; the
        // exact-data test of tests/autodiff/conv2d_relu_max_pool2d_test.cpp catches it).
        bias[v] += (y[0][v] + y[1][v]) + (y[2][v] + y[3][v]);
      }
#pragma GCC unroll 16
      for (int t = 0; t < NT; ++t) {
        const B b0(x0[tap[t]]), b1(x1[tap[t]]), b2(x2[tap[t]]), b3(x3[tap[t]]);
#pragma GCC unroll 4
        for (int v = 0; v < NV; ++v) {
          B a = xsimd::fma(b0, y[0][v], acc[t][v]);
          a = xsimd::fma(b1, y[1][v], a);
          a = xsimd::fma(b2, y[2][v], a);
          acc[t][v] = xsimd::fma(b3, y[3][v], a);
        }
      }
    }
  for (int v = 0; v < NV; ++v) {
    for (int t = 0; t < NT; ++t) {
      T* w = wbar_part + (t0 + t) * g.c_out + o + v * W;
      (B::load_unaligned(w) + acc[t][v]).store_unaligned(w);
    }
    if (bbar_part) {
      T* b = bbar_part + o + v * W;
      (B::load_unaligned(b) + bias[v]).store_unaligned(b);
    }
  }
}

// The tangent of one image for output channels [o, o + W): at each pooled element the
// convolution conv(x, dw) + db at the window's four pixels, kept lane by lane where k* selects
// it. With NT >= 0 taps known at compile time their weights stay in registers for the whole
// image, and the four sums of an element are independent chains the core overlaps with the next
// element's (first layers: 9 taps x 4 pixels, 36 multiply-adds per element); NT = -1 reads the
// weights of g.k() taps from memory (layers with many taps).
template <int NT, class T>
void tangent_channels(const ConvGeometry& g, const PaddedImage& p, const T* xp, const T* dw,
                      const T* db, const std::int32_t* k_star, T* out, Index o) {
  using B = xsimd::batch<T>;
  const Index ph = g.oh / 2, pw = g.ow / 2;
  const Index k = NT >= 0 ? NT : g.k();
  constexpr int R = NT > 0 ? NT : 1;
  B w[R];
  Index tap[R];
  if constexpr (NT > 0)
    for (int t = 0; t < NT; ++t) {
      w[t] = B::load_unaligned(dw + t * g.c_out + o);
      tap[t] = p.taps[static_cast<std::size_t>(t)];
    }
  const B start = db ? B::load_unaligned(db + o) : B(T(0));
  // Pooled element (i, j) into out, or (with `both`) (i, j) and (i, j + 1): eight sums at once.
  auto elements = [&](Index i, Index j, auto both) {
    constexpr int E = decltype(both)::value ? 2 : 1;
    const T* xq[E][4];
    B a[E][4];
    for (int e = 0; e < E; ++e) {
      const auto q = p.quad(i, j + e);
      for (int c = 0; c < 4; ++c) {
        xq[e][c] = xp + q[static_cast<std::size_t>(c)];
        a[e][c] = start;
      }
    }
    if constexpr (NT >= 0) {
#pragma GCC unroll 20
      for (int t = 0; t < NT; ++t)
#pragma GCC unroll 2
        for (int e = 0; e < E; ++e)
#pragma GCC unroll 4
          for (int c = 0; c < 4; ++c) a[e][c] = xsimd::fma(B(xq[e][c][tap[t]]), w[t], a[e][c]);
    } else {
      for (Index t = 0; t < k; ++t) {
        const B wv = B::load_unaligned(dw + t * g.c_out + o);
        const Index off = p.taps[static_cast<std::size_t>(t)];
#pragma GCC unroll 2
        for (int e = 0; e < E; ++e)
#pragma GCC unroll 4
          for (int c = 0; c < 4; ++c) a[e][c] = xsimd::fma(B(xq[e][c][off]), wv, a[e][c]);
      }
    }
#pragma GCC unroll 2
    for (int e = 0; e < E; ++e) {
      const Index at = (i * pw + j + e) * g.c_out + o;
      const B kv = load_window_index<T>(k_star + at);
      B d(T(0));  // k* = -1: derivative 0
#pragma GCC unroll 4
      for (int c = 0; c < 4; ++c) d = xsimd::select(kv == B(T(c)), a[e][c], d);
      d.store_unaligned(out + at);
    }
  };
  for (Index i = 0; i < ph; ++i) {
    Index j = 0;
    for (; j + 2 <= pw; j += 2) elements(i, j, std::true_type{});
    if (j < pw) elements(i, j, std::false_type{});
  }
}

}  // namespace fused

template <class T>
bool conv_pool_fusable(const ConvGeometry& g) {
  return g.groups == 1 && g.oh % 2 == 0 && g.ow % 2 == 0 && g.oh > 0 && g.ow > 0 &&
         g.c_out % static_cast<Index>(xsimd::batch<T>::size) == 0;
}

template <class T>
void conv_pool_tangent(const ConvGeometry& g, const T* x, const T* dw, const T* db,
                       const std::int32_t* k_star, T* dy) {
  constexpr Index W = xsimd::batch<T>::size;
  const fused::PaddedImage p(g);
  const Index k = dw ? g.k() : 0, per_image = (g.oh / 2) * (g.ow / 2) * g.c_out;
  parallel_for(g.n, g.n * per_image * 4 * std::max<Index>(k, 1), [&](Index img) {
    const T* xp = fused::pad_image(g, p, x, img);
    T* out = dy + img * per_image;
    const std::int32_t* ks = k_star + img * per_image;
    for (Index o = 0; o < g.c_out; o += W) {
      if (k <= fused::kMaxTapTile) {
        with_constant<0, fused::kMaxTapTile>(static_cast<int>(k), [&](auto taps) {
          fused::tangent_channels<decltype(taps)::value>(g, p, xp, dw, db, ks, out, o);
        });
      } else {
        fused::tangent_channels<-1>(g, p, xp, dw, db, ks, out, o);
      }
    }
  });
}

template <class T>
void conv_pool_weight_adjoint(const ConvGeometry& g, const T* x, const T* ybar,
                              const std::int32_t* k_star, T* wbar, T* bbar, bool accumulate_w,
                              bool accumulate_b) {
  constexpr Index W = xsimd::batch<T>::size;
  const fused::PaddedImage p(g);
  const Index k = g.k(), per_image = (g.oh / 2) * (g.ow / 2) * g.c_out;
  // Chunks of images: their number depends on the shapes only, so the partial sums are added in
  // the same order for any thread count.
  const Index chunks = std::min<Index>(g.n, 32), w_size = k * g.c_out, width = w_size + g.c_out;
  T* partial = thread_buffer<T, 9>(chunks * width);
  std::fill(partial, partial + chunks * width, T(0));
  // Two vectors of channels per tile where the taps fit half the tile (train_cnn's first layer: 9
  // taps x 2 vectors), else one: the pooled cotangents are then read once, in order.
  const Index nv = g.c_out % (2 * W) == 0 && k <= fused::kMaxTapTile / 2 ? 2 : 1;
  const Index max_taps = fused::kMaxTapTile / nv;
  const Index tiles = (k + max_taps - 1) / max_taps;
  parallel_for(chunks, g.n * per_image * 4 * k, [&](Index c) {
    T* wp = partial + c * width;
    for (Index img = c * g.n / chunks; img < (c + 1) * g.n / chunks; ++img) {
      const T* yb = ybar + img * per_image;
      if (!wbar) {  // the bias adjoint alone: the pooled cotangents where k* >= 0
        const std::int32_t* ks = k_star + img * per_image;
        for (Index at = 0; at < per_image; ++at) wp[w_size + at % g.c_out] += ks[at] >= 0 ? yb[at] : T(0);
        continue;
      }
      const T* xp = fused::pad_image(g, p, x, img);
      for (Index o = 0; o < g.c_out; o += nv * W) {
        Index t0 = 0;
        for (Index tile = 0; tile < tiles; ++tile) {
          // Tiles of balanced sizes, at most max_taps taps each.
          const Index t1 = (tile + 1) * k / tiles;
          T* bp = tile == 0 && bbar ? wp + w_size : nullptr;
          const std::int32_t* ks = k_star + img * per_image;
          with_constant<1, fused::kMaxTapTile>(static_cast<int>(t1 - t0), [&](auto taps) {
            constexpr int NT = decltype(taps)::value;
            if constexpr (NT <= fused::kMaxTapTile / 2) {
              if (nv == 2) return fused::adjoint_tile<NT, 2>(g, p, xp, yb, ks, o, t0, wp, bp);
            }
            fused::adjoint_tile<NT, 1>(g, p, xp, yb, ks, o, t0, wp, bp);
          });
          t0 = t1;
        }
      }
    }
  });
  if (wbar && !accumulate_w) std::fill(wbar, wbar + w_size, T(0));
  if (bbar && !accumulate_b) std::fill(bbar, bbar + g.c_out, T(0));
  for (Index c = 0; c < chunks; ++c) {
    const T* part = partial + c * width;
    if (wbar)
      for (Index i = 0; i < w_size; ++i) wbar[i] += part[i];
    if (bbar)
      for (Index i = 0; i < g.c_out; ++i) bbar[i] += part[w_size + i];
  }
}

#define AMARI_CONV_POOL_INSTANTIATE(T)                                                        \
  template bool conv_pool_fusable<T>(const ConvGeometry&);                                    \
  template void conv_pool_tangent<T>(const ConvGeometry&, const T*, const T*, const T*,       \
                                     const std::int32_t*, T*);                                \
  template void conv_pool_weight_adjoint<T>(const ConvGeometry&, const T*, const T*,          \
                                            const std::int32_t*, T*, T*, bool, bool);
AMARI_CONV_POOL_INSTANTIATE(float)
AMARI_CONV_POOL_INSTANTIATE(double)
#undef AMARI_CONV_POOL_INSTANTIATE

}  // namespace amari::kernels
