// A stateless counter-based hash for random masks (internal; dropout).
//
// The bits for element i of the stream keyed by (seed, stream) are the i-th output of splitmix64
// (Steele, Lea, Flood 2014) started from a key that mixes seed and stream: a pure function of
// (seed, stream, i), so any thread computes any element in any order and gets the same bits.
// nn/random.hpp has the same mixer for the training-side Rng; autodiff cannot include nn headers,
// so this is the autodiff copy of the two constants-and-shifts function (nn may use it instead).
#pragma once

#include <cstdint>

namespace amari::kernels {

/// splitmix64's output function: a bijective 64-bit mixer.
inline std::uint64_t mix64(std::uint64_t z) {
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

inline constexpr std::uint64_t kGolden = 0x9e3779b97f4a7c15ULL;

/// The key of the stream (seed, stream): distinct pairs give unrelated keys.
inline std::uint64_t counter_key(std::uint64_t seed, std::uint64_t stream) {
  return mix64(mix64(seed + kGolden) ^ (stream + 2 * kGolden));
}

/// 64 random bits for element i of the stream with key `key` (splitmix64 jumped to position i).
inline std::uint64_t counter_bits(std::uint64_t key, std::uint64_t i) {
  return mix64(key + (i + 1) * kGolden);
}

}  // namespace amari::kernels
