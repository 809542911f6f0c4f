// Internal: the register tile of the GEMM micro-kernel (kernels/gemm.cpp), which the direct
// convolution kernel (kernels/conv.cpp) reuses, so both stay the same tile.
#pragma once

#include <xsimd/xsimd.hpp>

namespace amari::kernels {

// The micro-tile is MR rows x NV batches. Accumulators take MR*NV registers; the B sliver row
// takes NV more and the broadcast of A one more. AVX-512 (and NEON) have 32 vector registers,
// AVX/SSE 16.
#if defined(__AVX512F__) || defined(__aarch64__)
inline constexpr int kVectorRegisters = 32;
#else
inline constexpr int kVectorRegisters = 16;
#endif

// MR x NR = 8 x 32 floats (8 x 16 doubles) with 32 registers, 6 x 16 floats with 16 (gemm.cpp has
// the measurements).
template <class T>
struct RegisterTile {
  using Batch = xsimd::batch<T>;
  static constexpr int kWidth = static_cast<int>(Batch::size);
  static constexpr int kNV = 2;  // batches per tile row
  static constexpr int kNR = kNV * kWidth;
  static constexpr int kMR = kVectorRegisters == 32 ? 8 : 6;
  /// The accumulators of one tile, meant to live in registers.
  using Accumulators = Batch[kMR][kNV];

  /// Every accumulator set to 0.
  static inline void zero(Accumulators& acc) {
#pragma GCC unroll 16
    for (int r = 0; r < kMR; ++r) {
#pragma GCC unroll 4
      for (int v = 0; v < kNV; ++v) acc[r][v] = Batch(T(0));
    }
  }
  /// The accumulators stored row by row into an aligned kMR x kNR buffer, for edge tiles whose
  /// valid corner is then copied out element by element.
  static inline void spill(const Accumulators& acc, T* tile) {
#pragma GCC unroll 16
    for (int r = 0; r < kMR; ++r) {
#pragma GCC unroll 4
      for (int v = 0; v < kNV; ++v) acc[r][v].store_aligned(tile + r * kNR + v * kWidth);
    }
  }
};

}  // namespace amari::kernels
