// conv2d_relu_max_pool2d's rules at the selected pixels only, for layers whose input channels fill
// whole SIMD vectors (a later layer: train_cnn's second convolution, 32 -> 64 channels).
//
// After a ReLU and a 2 x 2 max pooling each pooled element e = (n, i, j) of channel o depends on
// one pixel of the convolution's output, the one k*[e, o] selects (none where k* = -1), and that
// pixel differs from channel to channel. Vectorized over output channels, as the kernels of
// conv.cpp and conv_pool.cpp are, a rule must compute at all four pixels of a window and select
// lane by lane: three quarters of the tangent's multiply-adds are thrown away and three quarters
// of the adjoints' multiply zeros. Here the vectors run over input channels instead, so every
// (element, channel) pair works at its own pixel and nowhere else (ops/conv2d_relu_max_pool2d.cpp
// has the rules; s = s(e, o) is the selected pixel's window origin in the zero-padded images, k
// runs over K = kh kw C_in in runs of W channels):
//   tangent  dy[e, o] = db[o] + sum_k dx[s + k] w[k, o] + x[s + k] dw[k, o]: a dot product over K,
//            W lanes summed per (e, o) and added across lanes at the end;
//   adjoint  xbar[s + k] += ybar[e, o] w[k, o]: the transposed convolution as a scatter; for each
//            window position q the channels selecting it are summed in registers, then added to
//            the padded xbar once;
//            wbar[k, o] += ybar[e, o] x[s + k], bbar[o] += ybar[e, o]: per channel, over the
//            elements of one image at a time (its padded windows stay in L1), in registers.
// A quarter of the full-size rules' multiply-adds, with the weights read transposed ((o, k) rows,
// so K is contiguous) and no full-size buffer. Each multiply-add reads its own window or weight
// vector (the direct convolution reuses each loaded vector across a register tile), so these run
// below the FMA rate; on train_cnn's second layer they take about 0.63x (tangent, weight and bias
// adjoints) and 0.87x (xbar) the full-size kernels' time (bench/RESULTS.md). Values equal the
// unfused rules' up to the order of the additions.
#include <amari/autodiff/kernels/conv_pool.hpp>

#include <algorithm>
#include <array>
#include <cstdint>
#include <type_traits>
#include <vector>

#if defined(__AVX512F__)
#include <immintrin.h>
#endif
#include <xsimd/xsimd.hpp>

#include <amari/autodiff/kernels/blocks.hpp>
#include <amari/autodiff/kernels/pad_images.hpp>
#include <amari/autodiff/kernels/thread_buffer.hpp>
#include <amari/autodiff/kernels/window_index.hpp>

namespace amari::kernels {
// Internal to this file (a named namespace: the exported templates below capture these types).
namespace selected {

// Padded images per chunk: about this many bytes of each padded source.
inline constexpr Index kChunkBytes = Index{128} << 10;
// Elements of one tangent block (independent sums per weight vector loaded).
inline constexpr int kBlockElements = 8;
// Most runs of W channels one register tile of the adjoints holds: one segment, several.
inline constexpr int kMaxRuns = 16;
inline constexpr int kMaxTile = 24;

// Where the windows of a chunk of images are: the padded images (the rows and columns some window
// reaches), the window origin of each pooled element's top-left pixel, the offsets of the other
// three pixels (k* order: top left, top right, bottom left, bottom right), and the K reduction as
// runs of W channels, each an offset from a window origin.
struct Windows {
  Index hp = 0, wp = 0, image = 0;  // a padded image: hp x wp x C_in, `image` values
  Index per_image = 0;              // pooled elements per image
  Index chunk = 1;                  // images per chunk: a function of the shapes only
  std::array<Index, 4> quad{};
  std::vector<Index> runs;     // run v: tap (a, b), channels [u W, u W + W)
  std::vector<Index> origins;  // element e of a chunk (image-major), position 0
  // The runs as segments of `segment` runs contiguous in the padded image (and in K): a tap row
  // (kw C_in channels) where the columns are not dilated, `segment_step` apart; else one tap
  // (segment_step 0: not evenly spaced).
  Index segment = 0, segment_step = 0;

  Windows(const ConvGeometry& g, Index W, Index element_bytes)
      : hp((g.oh - 1) * g.stride_h + (g.kh - 1) * g.dilation_h + 1),
        wp((g.ow - 1) * g.stride_w + (g.kw - 1) * g.dilation_w + 1),
        image(hp * wp * g.c_in),
        per_image((g.oh / 2) * (g.ow / 2)),
        chunk(std::clamp<Index>(kChunkBytes / std::max<Index>(1, image * element_bytes), 1,
                                std::max<Index>(1, g.n))) {
    const Index row = g.stride_h * wp * g.c_in, col = g.stride_w * g.c_in;
    quad = {0, col, row, row + col};
    for (Index a = 0; a < g.kh; ++a)
      for (Index b = 0; b < g.kw; ++b)
        for (Index u = 0; u < g.c_in; u += W)
          runs.push_back((a * g.dilation_h * wp + b * g.dilation_w) * g.c_in + u);
    segment = (g.dilation_w == 1 ? g.kw * g.c_in : g.c_in) / W;
    segment_step = g.dilation_w == 1 ? g.dilation_h * wp * g.c_in : 0;
    for (Index img = 0; img < chunk; ++img)
      for (Index i = 0; i < g.oh / 2; ++i)
        for (Index j = 0; j < g.ow / 2; ++j) origins.push_back(img * image + 2 * i * row + 2 * j * col);
  }
  Index chunks(Index n) const { return (n + chunk - 1) / chunk; }
  // Images [first, first + count) of chunk c.
  Index first(Index c) const { return c * chunk; }
  Index count(Index c, Index n) const { return std::min(chunk, n - c * chunk); }
  // The window origin of element e at position q (k*); position 0 for k* = -1, whose result the
  // callers discard or multiply by 0.
  Index at(Index e, std::int32_t q) const {
    return origins[static_cast<std::size_t>(e)] + quad[static_cast<std::size_t>(std::max(q, 0))];
  }
};

// (k, c_out) weights as (c_out, k) rows, in the calling thread's buffer `Slot` (64-byte aligned:
// the rows are whole vectors long, so every load of them is within one cache line).
template <class T, int Slot>
const T* transposed(const T* w, Index k, Index c_out) {
  T* t = thread_buffer<T, Slot>(k * c_out);
  for (Index r = 0; r < k; ++r)
    for (Index o = 0; o < c_out; ++o) t[o * k + r] = w[r * c_out + o];
  return t;
}

// The tangent of E consecutive elements [e0, e0 + E) of a chunk, for every output channel:
// sums[(e - e0) c_out + o] (W lanes) = dx[s + k] . w[:, o] + x[s + k] . dw[:, o] over the runs,
// lanes not yet added. Per run, one weight vector feeds E independent multiply-adds.
template <int E, class T>
void tangent_block(const Windows& win, const T* dxp, const T* xp, const T* wt, const T* dwt,
                   Index k, Index c_out, const std::int32_t* k_star, Index e0, T* sums) {
  using B = xsimd::batch<T>;
  constexpr Index W = B::size;
  const Index runs = static_cast<Index>(win.runs.size());
  for (Index o = 0; o < c_out; ++o) {
    Index at[E];
    for (int e = 0; e < E; ++e) at[e] = win.at(e0 + e, k_star[(e0 + e) * c_out + o]);
    B acc[E];
    for (int e = 0; e < E; ++e) acc[e] = B(T(0));
    auto add = [&](const T* src, const T* weights) {
      // One pointer per element: each load is then a base register plus the run's offset.
      const T* window[E];
      for (int e = 0; e < E; ++e) window[e] = src + at[e];
      const T* wo = weights + o * k;
      for (Index v = 0; v < runs; ++v) {
        const B wv = B::load_aligned(wo + v * W);
        const Index r = win.runs[static_cast<std::size_t>(v)];
#pragma GCC unroll 8
        for (int e = 0; e < E; ++e) acc[e] = xsimd::fma(B::load_aligned(window[e] + r), wv, acc[e]);
      }
    };
    if (dxp) add(dxp, wt);
    if (xp) add(xp, dwt);
    for (int e = 0; e < E; ++e) acc[e].store_aligned(sums + (e * c_out + o) * W);
  }
}

// Lane l of the result = the sum of the lanes of rows[l], for W rows. AVX-512 builds add them in a
// tree of shuffles (3 W - 3 operations); xsimd 8.1's haddp (Debian 12) returns the AVX-512 float
// sums in a permuted lane order, so it is not used. Other ISAs add each row's lanes.
template <class T>
xsimd::batch<T> lane_sums(const xsimd::batch<T>* rows) {
  using B = xsimd::batch<T>;
#if defined(__AVX512F__)
  if constexpr (std::is_same_v<T, float> && B::size == 16) {
    const __mmask16 all16 = 0xFFFF;
    __m512 t[8], u[4];
    for (int i = 0; i < 8; ++i) {  // per 128-bit lane: rows 2i, 2i + 1, 2i, 2i + 1
      const __m512 a = rows[2 * i], b = rows[2 * i + 1];
      t[i] = _mm512_add_ps(_mm512_maskz_unpacklo_ps(all16, a, b), _mm512_maskz_unpackhi_ps(all16, a, b));
    }
    for (int i = 0; i < 4; ++i)  // per 128-bit lane: rows 4i .. 4i + 3
      u[i] = _mm512_add_ps(_mm512_maskz_shuffle_ps(all16, t[2 * i], t[2 * i + 1], _MM_SHUFFLE(1, 0, 1, 0)),
                           _mm512_maskz_shuffle_ps(all16, t[2 * i], t[2 * i + 1], _MM_SHUFFLE(3, 2, 3, 2)));
    const __m512 s01 = _mm512_add_ps(_mm512_maskz_shuffle_f32x4(all16, u[0], u[1], _MM_SHUFFLE(1, 0, 1, 0)),
                                     _mm512_maskz_shuffle_f32x4(all16, u[0], u[1], _MM_SHUFFLE(3, 2, 3, 2)));
    const __m512 s23 = _mm512_add_ps(_mm512_maskz_shuffle_f32x4(all16, u[2], u[3], _MM_SHUFFLE(1, 0, 1, 0)),
                                     _mm512_maskz_shuffle_f32x4(all16, u[2], u[3], _MM_SHUFFLE(3, 2, 3, 2)));
    return B(_mm512_add_ps(_mm512_maskz_shuffle_f32x4(all16, s01, s23, _MM_SHUFFLE(2, 0, 2, 0)),
                           _mm512_maskz_shuffle_f32x4(all16, s01, s23, _MM_SHUFFLE(3, 1, 3, 1))));
  } else if constexpr (std::is_same_v<T, double> && B::size == 8) {
    const __mmask8 all8 = 0xFF;
    __m512d t[4];
    for (int i = 0; i < 4; ++i) {  // per 128-bit lane: rows 2i, 2i + 1
      const __m512d a = rows[2 * i], b = rows[2 * i + 1];
      t[i] = _mm512_add_pd(_mm512_maskz_unpacklo_pd(all8, a, b), _mm512_maskz_unpackhi_pd(all8, a, b));
    }
    const __m512d s01 = _mm512_add_pd(_mm512_maskz_shuffle_f64x2(all8, t[0], t[1], _MM_SHUFFLE(1, 0, 1, 0)),
                                      _mm512_maskz_shuffle_f64x2(all8, t[0], t[1], _MM_SHUFFLE(3, 2, 3, 2)));
    const __m512d s23 = _mm512_add_pd(_mm512_maskz_shuffle_f64x2(all8, t[2], t[3], _MM_SHUFFLE(1, 0, 1, 0)),
                                      _mm512_maskz_shuffle_f64x2(all8, t[2], t[3], _MM_SHUFFLE(3, 2, 3, 2)));
    return B(_mm512_add_pd(_mm512_maskz_shuffle_f64x2(all8, s01, s23, _MM_SHUFFLE(2, 0, 2, 0)),
                           _mm512_maskz_shuffle_f64x2(all8, s01, s23, _MM_SHUFFLE(3, 1, 3, 1))));
  } else
#endif
  {
    alignas(64) T lanes[B::size];
    for (std::size_t l = 0; l < B::size; ++l) lanes[l] = xsimd::hadd(rows[l]);
    return B::load_aligned(lanes);
  }
}

// dy for elements [e0, e0 + count): each W channels' lane sums reduced across lanes, db added,
// 0 where k* = -1.
template <class T>
void finish_tangent(const T* sums, Index count, Index c_out, const T* db,
                    const std::int32_t* k_star, Index e0, T* dy) {
  using B = xsimd::batch<T>;
  constexpr Index W = B::size;
  for (Index e = 0; e < count; ++e)
    for (Index o = 0; o < c_out; o += W) {
      B rows[W];
      for (Index l = 0; l < W; ++l) rows[l] = B::load_aligned(sums + (e * c_out + o + l) * W);
      B d = lane_sums(rows);
      if (db) d += B::load_unaligned(db + o);
      const Index at = (e0 + e) * c_out + o;
      const B kv = load_window_index<T>(k_star + at);
      xsimd::select(kv >= B(T(0)), d, B(T(0))).store_unaligned(dy + at);
    }
}

// The runs [v0, v0 + NV) of xbar's scatter for element e: for each window position q, the
// channels o whose k* is q (`selecting[q]`, `counts[q]` of them) summed in registers,
// sum_o ybar[e, o] w[run, o], then added to the padded xbar at q's window.
template <int NV, class T>
void scatter_runs(const Windows& win, const T* wt, Index k, Index v0, const Index* const* selecting,
                  const Index* counts, const T* ybar_e, Index e, T* xbar_padded) {
  using B = xsimd::batch<T>;
  constexpr Index W = B::size;
  for (std::int32_t q = 0; q < 4; ++q) {
    if (counts[q] == 0) continue;
    B acc[NV];
    for (int v = 0; v < NV; ++v) acc[v] = B(T(0));
    for (Index i = 0; i < counts[q]; ++i) {
      const Index o = selecting[q][i];
      const B y(ybar_e[o]);
      const T* wo = wt + o * k + v0 * W;
#pragma GCC unroll 16
      for (int v = 0; v < NV; ++v) acc[v] = xsimd::fma(y, B::load_unaligned(wo + v * W), acc[v]);
    }
    T* dst = xbar_padded + win.at(e, q);
#pragma GCC unroll 16
    for (int v = 0; v < NV; ++v) {
      T* p = dst + win.runs[static_cast<std::size_t>(v0 + v)];
      (B::load_unaligned(p) + acc[v]).store_unaligned(p);
    }
  }
}

// Channel o's weight adjoint for NS segments of NV runs each, the segments `step` apart in the
// window from `offset` (the runs of each contiguous), over the m elements of one padded image,
// added to out (the segments' NV W values each, `out_step` apart):
//   out[s][v] += sum_e ybar[e] x[s(e) + offset + s step + v W],
// with ybar and the window position of channel o one value per element, `stride` apart (ybar 0
// and position 0 where k* = -1). The NS NV sums are independent chains of multiply-adds; each
// load is a segment's base register and a constant; the image's windows stay in L1 while every
// channel passes over them.
template <int NS, int NV, class T>
void weight_runs(const Windows& win, const T* xp, const T* ybar_o, const std::int32_t* q_o,
                 Index m, Index stride, Index offset, Index step, T* out, Index out_step) {
  using B = xsimd::batch<T>;
  constexpr Index W = B::size;
  B acc[NS][NV];
  for (int r = 0; r < NS; ++r)
    for (int v = 0; v < NV; ++v) acc[r][v] = B::load_aligned(out + r * out_step + v * W);
  for (Index e = 0; e < m; ++e) {
    const B y(ybar_o[e * stride]);
    const T* src = xp + win.at(e, q_o[e * stride]) + offset;
#pragma GCC unroll 3
    for (int r = 0; r < NS; ++r) {
      const T* row = src + r * step;
#pragma GCC unroll 16
      for (int v = 0; v < NV; ++v) acc[r][v] = xsimd::fma(y, B::load_aligned(row + v * W), acc[r][v]);
    }
  }
  for (int r = 0; r < NS; ++r)
    for (int v = 0; v < NV; ++v) acc[r][v].store_aligned(out + r * out_step + v * W);
}

// Calls f(v0, NV) over the runs in register tiles of balanced sizes, at most kMaxRuns each.
template <class F>
void for_each_run_tile(Index runs, const F& f) {
  const Index tiles = (runs + kMaxRuns - 1) / kMaxRuns;
  Index v0 = 0;
  for (Index t = 0; t < tiles; ++t) {
    const Index v1 = (t + 1) * runs / tiles;
    with_constant<1, kMaxRuns>(static_cast<int>(v1 - v0), [&](auto nv) { f(v0, nv); });
    v0 = v1;
  }
}

// Calls f(run, NS, NV) over the runs in register tiles of NS segments of NV runs (segments
// `win.segment_step` apart in the window where there are several: the rows of an undilated
// kernel), at most kMaxTile runs a tile; runs [run, run + NV) of each segment are contiguous.
template <class F>
void for_each_segment_tile(const Windows& win, const F& f) {
  const Index segments = static_cast<Index>(win.runs.size()) / win.segment;
  if (win.segment_step > 0 && 3 * win.segment <= kMaxTile) {  // whole segments, up to 3 a tile
    with_constant<1, kMaxTile / 3>(static_cast<int>(win.segment), [&](auto nv) {
      Index sgm = 0;
      for (; sgm + 3 <= segments; sgm += 3) f(sgm * win.segment, std::integral_constant<int, 3>{}, nv);
      for (; sgm < segments; ++sgm) f(sgm * win.segment, std::integral_constant<int, 1>{}, nv);
    });
    return;
  }
  const Index tiles = (win.segment + kMaxRuns - 1) / kMaxRuns;  // one segment in tiles
  for (Index sgm = 0; sgm < segments; ++sgm) {
    Index j0 = 0;
    for (Index t = 0; t < tiles; ++t) {
      const Index j1 = (t + 1) * win.segment / tiles;
      with_constant<1, kMaxRuns>(static_cast<int>(j1 - j0), [&](auto nv) {
        f(sgm * win.segment + j0, std::integral_constant<int, 1>{}, nv);
      });
      j0 = j1;
    }
  }
}

}  // namespace selected

template <class T>
bool conv_pool_selected_applies(const ConvGeometry& g) {
  const Index W = static_cast<Index>(xsimd::batch<T>::size);
  return g.groups == 1 && g.c_in % W == 0 && g.c_out % W == 0 && g.oh % 2 == 0 &&
         g.ow % 2 == 0 && g.oh > 0 && g.ow > 0 && g.c_in > 0 && g.n > 0;
}

template <class T>
void conv_pool_selected_tangent(const ConvGeometry& g, const T* x, const T* w, const T* dx,
                                const T* dw, const T* db, const std::int32_t* k_star, T* dy) {
  using selected::kBlockElements;
  constexpr Index W = xsimd::batch<T>::size;
  const selected::Windows win(g, W, sizeof(T));
  const Index k = g.k(), c_out = g.c_out, per_chunk = win.chunk * win.image;
  const T* wt = dx ? selected::transposed<T, 10>(w, k, c_out) : nullptr;
  const T* dwt = dw ? selected::transposed<T, 11>(dw, k, c_out) : nullptr;
  const Index work = g.n * win.per_image * c_out * k * ((dx ? 1 : 0) + (dw ? 1 : 0));
  parallel_for(win.chunks(g.n), work, [&](Index c) {
    const Index n0 = win.first(c), nc = win.count(c, g.n), m = nc * win.per_image;
    T* dxp = dx ? thread_buffer<T, 6>(per_chunk) : nullptr;
    T* xp = dw ? thread_buffer<T, 7>(per_chunk) : nullptr;
    if (dxp) pad_images(dx + n0 * g.h * g.w * g.c_in, nc, g.h, g.w, g.c_in, g.pad_h, g.pad_w, win.hp, win.wp, dxp);
    if (xp) pad_images(x + n0 * g.h * g.w * g.c_in, nc, g.h, g.w, g.c_in, g.pad_h, g.pad_w, win.hp, win.wp, xp);
    T* sums = thread_buffer<T, 8>(kBlockElements * c_out * W);
    const std::int32_t* ks = k_star + n0 * win.per_image * c_out;
    T* out = dy + n0 * win.per_image * c_out;
    Index e0 = 0;
    for (; e0 + kBlockElements <= m; e0 += kBlockElements) {
      selected::tangent_block<kBlockElements>(win, dxp, xp, wt, dwt, k, c_out, ks, e0, sums);
      selected::finish_tangent(sums, kBlockElements, c_out, db, ks, e0, out);
    }
    if (e0 < m) {
      with_constant<1, kBlockElements - 1>(static_cast<int>(m - e0), [&](auto count) {
        selected::tangent_block<decltype(count)::value>(win, dxp, xp, wt, dwt, k, c_out, ks, e0, sums);
      });
      selected::finish_tangent(sums, m - e0, c_out, db, ks, e0, out);
    }
  });
}

template <class T>
void conv_pool_selected_input_adjoint(const ConvGeometry& g, const T* w, const T* ybar,
                                      const std::int32_t* k_star, T* xbar, bool accumulate) {
  constexpr Index W = xsimd::batch<T>::size;
  const selected::Windows win(g, W, sizeof(T));
  const Index k = g.k(), c_out = g.c_out, runs = static_cast<Index>(win.runs.size());
  const T* wt = selected::transposed<T, 10>(w, k, c_out);
  parallel_for(win.chunks(g.n), g.n * win.per_image * c_out * k, [&](Index c) {
    const Index n0 = win.first(c), nc = win.count(c, g.n), m = nc * win.per_image;
    T* padded = thread_buffer<T, 6>(nc * win.image);
    std::fill(padded, padded + nc * win.image, T(0));
    // The channels selecting each window position, for one element at a time.
    Index* lists = thread_buffer<Index, 3>(4 * c_out);
    const Index* selecting[4] = {lists, lists + c_out, lists + 2 * c_out, lists + 3 * c_out};
    for (Index e = 0; e < m; ++e) {
      const Index at = (n0 * win.per_image + e) * c_out;
      Index counts[4] = {0, 0, 0, 0};
      for (Index o = 0; o < c_out; ++o) {
        const std::int32_t q = k_star[at + o];
        if (q >= 0) lists[q * c_out + counts[q]++] = o;
      }
      selected::for_each_run_tile(runs, [&](Index v0, auto nv) {
        selected::scatter_runs<decltype(nv)::value>(win, wt, k, v0, selecting, counts, ybar + at, e,
                                                    padded);
      });
    }
    const Index image = g.h * g.w * g.c_in;
    unpad_images(padded, nc, g.h, g.w, g.c_in, g.pad_h, g.pad_w, win.hp, win.wp, xbar + n0 * image,
                 accumulate);
  });
}

template <class T>
void conv_pool_selected_weight_adjoint(const ConvGeometry& g, const T* x, const T* ybar,
                                       const std::int32_t* k_star, T* wbar, T* bbar,
                                       bool accumulate_w, bool accumulate_b) {
  using B = xsimd::batch<T>;
  constexpr Index W = B::size;
  const selected::Windows win(g, W, sizeof(T));
  const Index k = g.k(), c_out = g.c_out, m = win.per_image;
  const Index chunks = win.chunks(g.n), width = c_out * k + c_out;
  // Per-chunk partial sums, (c_out, k) then the c_out bias terms, added in chunk order: the same
  // bits for any thread count.
  T* partial = thread_buffer<T, 9>(chunks * width);
  parallel_for(chunks, g.n * m * c_out * k, [&](Index c) {
    T* part = partial + c * width;
    std::fill(part, part + width, T(0));
    T* xp = thread_buffer<T, 6>(win.image);
    // One image's cotangents and window positions, (m, c_out) as ybar: 0 and 0 where k* = -1.
    T* y_kept = thread_buffer<T, 7>(c_out * m);
    std::int32_t* position = thread_buffer<std::int32_t, 0>(c_out * m);
    for (Index img = win.first(c); img < win.first(c) + win.count(c, g.n); ++img) {
      const T* yb = ybar + img * m * c_out;
      const std::int32_t* ks = k_star + img * m * c_out;
      for (Index at = 0; at < m * c_out; at += W) {
        const B q = load_window_index<T>(ks + at);
        xsimd::select(q >= B(T(0)), B::load_unaligned(yb + at), B(T(0))).store_aligned(y_kept + at);
        store_window_index<T>(xsimd::max(q, B(T(0))), position + at);
      }
      if (bbar)
        for (Index e = 0; e < m; ++e)
          for (Index o = 0; o < c_out; o += W) {
            T* b = part + c_out * k + o;
            (B::load_unaligned(b) + B::load_aligned(y_kept + e * c_out + o)).store_unaligned(b);
          }
      if (!wbar) continue;
      pad_images(x + img * g.h * g.w * g.c_in, 1, g.h, g.w, g.c_in, g.pad_h, g.pad_w, win.hp, win.wp, xp);
      for (Index o = 0; o < c_out; ++o)
        selected::for_each_segment_tile(win, [&](Index v0, auto ns, auto nv) {
          selected::weight_runs<decltype(ns)::value, decltype(nv)::value>(
              win, xp, y_kept + o, position + o, m, c_out, win.runs[static_cast<std::size_t>(v0)],
              win.segment_step, part + o * k + v0 * W, win.segment * W);
        });
    }
  });
  if (wbar) {
    if (!accumulate_w) std::fill(wbar, wbar + k * c_out, T(0));
    // wbar (k, c_out) += the chunks' (c_out, k) sums, chunk by chunk.
    for (Index c = 0; c < chunks; ++c) {
      const T* part = partial + c * width;
      for (Index r = 0; r < k; ++r)
        for (Index o = 0; o < c_out; ++o) wbar[r * c_out + o] += part[o * k + r];
    }
  }
  if (bbar) {
    if (!accumulate_b) std::fill(bbar, bbar + c_out, T(0));
    for (Index c = 0; c < chunks; ++c)
      for (Index o = 0; o < c_out; ++o) bbar[o] += partial[c * width + c_out * k + o];
  }
}

#define AMARI_CONV_POOL_SELECTED_INSTANTIATE(T)                                                   \
  template bool conv_pool_selected_applies<T>(const ConvGeometry&);                               \
  template void conv_pool_selected_tangent<T>(const ConvGeometry&, const T*, const T*, const T*,  \
                                              const T*, const T*, const std::int32_t*, T*);       \
  template void conv_pool_selected_input_adjoint<T>(const ConvGeometry&, const T*, const T*,      \
                                                    const std::int32_t*, T*, bool);               \
  template void conv_pool_selected_weight_adjoint<T>(const ConvGeometry&, const T*, const T*,     \
                                                     const std::int32_t*, T*, T*, bool, bool);
AMARI_CONV_POOL_SELECTED_INSTANTIATE(float)
AMARI_CONV_POOL_SELECTED_INSTANTIATE(double)
#undef AMARI_CONV_POOL_SELECTED_INSTANTIATE

}  // namespace amari::kernels
