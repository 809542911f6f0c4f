// Reproducible random numbers: the same seed gives the same numbers with any compiler, standard
// library, platform and thread count. amari never uses <random>'s distributions, whose outputs
// the standard does not specify bit for bit.
#pragma once

#include <cmath>
#include <cstdint>

namespace amari::nn {

/// splitmix64 (Steele, Lea, Flood 2014): a bijective 64-bit mixer; advances `state`.
inline std::uint64_t splitmix64(std::uint64_t& state) {
  std::uint64_t z = (state += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

/// Mixes a key of up to three counters into one 64-bit seed: distinct keys give unrelated seeds.
/// This is what makes sampling counter-based: the draw for (seed, example, sample) does not depend
/// on which thread or in which order it is made.
inline std::uint64_t mix_key(std::uint64_t seed, std::uint64_t a, std::uint64_t b = 0, std::uint64_t c = 0) {
  std::uint64_t s = seed;
  std::uint64_t h = splitmix64(s);
  for (std::uint64_t word : {a, b, c}) {
    s = h ^ word;
    h = splitmix64(s);
  }
  return h;
}

/// xoshiro256** (Blackman, Vigna 2018) seeded through splitmix64.
class Rng {
 public:
  /// A generator for `seed`; `stream` selects an independent sequence for the same seed.
  explicit Rng(std::uint64_t seed, std::uint64_t stream = 0) {
    std::uint64_t sm = seed;
    // Hash the seed first, then add the stream: every (seed, stream) pair gets a distinct state
    // (splitmix64 is a bijection).
    sm = splitmix64(sm) + stream;
    for (std::uint64_t& word : s_) word = splitmix64(sm);
  }
  /// The next 64 random bits.
  std::uint64_t next() {
    const std::uint64_t result = rotl(s_[1] * 5, 7) * 9;
    const std::uint64_t t = s_[1] << 17;
    s_[2] ^= s_[0];
    s_[3] ^= s_[1];
    s_[1] ^= s_[2];
    s_[0] ^= s_[3];
    s_[2] ^= t;
    s_[3] = rotl(s_[3], 45);
    return result;
  }
  /// Uniform in [0, 1), 53 random bits.
  double uniform() { return static_cast<double>(next() >> 11) * 0x1.0p-53; }
  /// Uniform in [lo, hi).
  double uniform(double lo, double hi) { return lo + (hi - lo) * uniform(); }
  /// Standard normal (Box-Muller; one value per call, the second is discarded for simplicity).
  double normal() {
    const double u1 = 1.0 - uniform();  // (0, 1]: log is finite
    const double u2 = uniform();
    return std::sqrt(-2.0 * std::log(u1)) * std::cos(6.283185307179586476925 * u2);
  }
  /// Uniform integer in [0, bound), bound >= 1, without modulo bias (draws below 2^64 mod bound
  /// are rejected so every residue is equally likely).
  std::uint64_t below(std::uint64_t bound) {
    const std::uint64_t threshold = (0 - bound) % bound;
    for (;;) {
      const std::uint64_t r = next();
      if (r >= threshold) return r % bound;
    }
  }

 private:
  static std::uint64_t rotl(std::uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }
  std::uint64_t s_[4];
};

}  // namespace amari::nn
