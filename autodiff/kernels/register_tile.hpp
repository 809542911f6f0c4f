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
};

}  // namespace amari::kernels
