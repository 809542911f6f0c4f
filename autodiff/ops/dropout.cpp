// dropout: y = x * m / (1 - p), m[i] = 0 with probability p, else 1 (inverted dropout). Linear in
// x, with the same mask in every rule:
//   JVP   dy    = dx * m / (1 - p)
//   VJP   xbar += ybar * m / (1 - p)
// The mask is recomputed, not stored: m[i] = [bits(first + i) >> 11 >= p 2^53] with bits(c) the
// counter hash of (seed, stream, counter c) (kernels/counter_hash.hpp), so the primal, the JVP, the
// VJP, every mode and every thread count see the same mask, and the tape keeps no residual. The
// counter of element i is first + i: a tensor holding elements [first, first + size) of a larger
// one (a data-parallel rank's rows of a batch, nn/normalization.hpp) draws exactly the larger
// tensor's mask for them; first = 0 is the mask of the tensor on its own. Dropped elements are set
// to 0 (a select, not a product with 0, so a NaN there is dropped too).
#include <cmath>

#include <amari/autodiff/kernels/blocks.hpp>
#include <amari/autodiff/kernels/counter_hash.hpp>
#include <amari/autodiff/ops/primitive.hpp>

namespace amari {
namespace ops {

struct Dropout {
  static constexpr const char* name = "dropout";
  static constexpr int arity = 1;
  static constexpr unsigned saves = save::none;
  static constexpr bool linear = true;
  double p = 0;
  std::uint64_t key = 0;    // kernels::counter_key(seed, stream)
  std::uint64_t first = 0;  // the counter of element 0

  Shape output_shape(const Shape& x) const { return x; }

  // out[i] (+)= in[i] * m[i] / (1 - p), in chunks of kChunk elements (the parallel split).
  template <bool kAccumulate, Real T>
  void apply_mask(const Tensor<T>& in, Tensor<T>& out) const {
    const Index n = in.size();
    if (p == 0) {
      if constexpr (kAccumulate) {
        detail::accumulate(
            out, []<class B>(B v) { return v; }, in);
      } else {
        kernels::copy(n, in.data(), out.data());
      }
      return;
    }
    const std::uint64_t threshold = static_cast<std::uint64_t>(std::ldexp(p, 53));
    const T scale = static_cast<T>(1.0 / (1.0 - p));
    const T* src = in.data();
    T* dst = out.data();
    const std::uint64_t k = key, c0 = first;
    const Index chunks = (n + kernels::kChunk - 1) / kernels::kChunk;
    // Per block of 256: the mask as scales (0 or 1/(1-p), branch-free so it vectorizes), then a
    // SIMD select. Locals are captured by value so that stores to dst cannot alias them.
    kernels::parallel_for(chunks, n, [=](Index c) {
      constexpr Index kBlock = 256;
      alignas(64) T m[kBlock];
      for (Index b = c * kernels::kChunk, e = std::min(n, b + kernels::kChunk); b < e;
           b += kBlock) {
        const Index len = std::min(kBlock, e - b);
        for (Index i = 0; i < len; ++i) {
          const std::uint64_t bits =
              kernels::counter_bits(k, c0 + static_cast<std::uint64_t>(b + i));
          m[i] = scale * static_cast<T>((bits >> 11) >= threshold);
        }
        const auto f = []<class B>(B v, B s) { return xsimd::select(s != B(0), v * s, B(0)); };
        if constexpr (kAccumulate) {
          kernels::map_accumulate(len, dst + b, f, src + b, static_cast<const T*>(m));
        } else {
          kernels::map(len, dst + b, f, src + b, static_cast<const T*>(m));
        }
      }
    });
  }
  template <Real T>
  void primal(const Tensor<T>& x, Tensor<T>& y) const {
    apply_mask<false>(x, y);
  }
  template <Real T>
  void jvp(const detail::Saved<T, 1>&, const Tensor<T>& dx, Tensor<T>& dy) const {
    apply_mask<false>(dx, dy);
  }
  template <Real T>
  void vjp(const detail::Saved<T, 1>&, const Tensor<T>& ybar, Tensor<T>& xbar) const {
    apply_mask<true>(ybar, xbar);
  }
};

}  // namespace ops

template <Value V>
V dropout(const V& x, double p, std::uint64_t seed, std::uint64_t stream, std::uint64_t first) {
  if (!(p >= 0 && p < 1)) {
    throw ValueError("dropout: the drop probability p must be in [0, 1), got " + std::to_string(p));
  }
  return detail::apply(
      ops::Dropout{.p = p, .key = kernels::counter_key(seed, stream), .first = first}, x);
}
#define AMARI_INSTANTIATE(V) \
  template V dropout<V>(const V&, double, std::uint64_t, std::uint64_t, std::uint64_t);
AMARI_FOR_EACH_VALUE_TYPE(AMARI_INSTANTIATE)
#undef AMARI_INSTANTIATE

}  // namespace amari
