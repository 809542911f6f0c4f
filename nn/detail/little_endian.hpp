// Internal: little-endian integers in byte buffers, for the file formats of nn/ (serialize.cpp,
// safetensors.cpp). Not installed.
#pragma once

#include <cstdint>
#include <vector>

namespace amari::nn::detail {

/// Appends the low `bytes` bytes of v to out, least significant first.
inline void put_le(std::vector<std::uint8_t>& out, std::uint64_t v, int bytes) {
  for (int i = 0; i < bytes; ++i) out.push_back(static_cast<std::uint8_t>(v >> (8 * i)));
}

/// The unsigned integer stored in the `bytes` bytes at p, least significant first.
inline std::uint64_t get_le(const std::uint8_t* p, int bytes) {
  std::uint64_t v = 0;
  for (int i = bytes - 1; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}

}  // namespace amari::nn::detail
