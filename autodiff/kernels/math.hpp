// exp, tanh and erf over SIMD batches that are defined for every input (internal).
//
// xsimd 8.1's exp reduces x to k ln 2 + r and converts x / ln 2 to an integer with a plain
// float -> int cast. For NaN, +-inf and |x| beyond ~6e18 (double) that cast is undefined behaviour
// (clang's -fsanitize=float-cast-overflow reports it; found by the ops fuzzer, inputs kept in
// tests/reliability/crashes/ops/). tanh goes through the same code. Clamping to +-1000 changes no
// result, since exp already over/underflows to inf/0 there in float and double, and NaN is
// replaced by 0 before the call and put back after it, so NaN in gives NaN out as before.
// xsimd's erf evaluates exp(-x^2) as well; it is clamped to +-6, where erf is +-1 to the last bit
// in double (erfc(6) = 2e-17) and in float.
#pragma once

#include <xsimd/xsimd.hpp>

// GCC 12 reports the _mm512_undefined_* operands inside its own AVX-512 intrinsics as
// "used uninitialized" once exp is inlined here: a known false positive of that compiler.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"

namespace amari::kernels {

template <class B>
B exp(B x) {
  using T = typename B::value_type;
  const auto nan = xsimd::isnan(x);
  const B finite = xsimd::select(nan, B(T(0)), xsimd::clip(x, B(T(-1000)), B(T(1000))));
  return xsimd::select(nan, x, xsimd::exp(finite));
}

template <class B>
B tanh(B x) {
  using T = typename B::value_type;
  const auto nan = xsimd::isnan(x);
  const B finite = xsimd::select(nan, B(T(0)), xsimd::clip(x, B(T(-1000)), B(T(1000))));
  return xsimd::select(nan, x, xsimd::tanh(finite));
}

template <class B>
B erf(B x) {
  using T = typename B::value_type;
  const auto nan = xsimd::isnan(x);
  const B finite = xsimd::select(nan, B(T(0)), xsimd::clip(x, B(T(-6)), B(T(6))));
  return xsimd::select(nan, x, xsimd::erf(finite));
}

}  // namespace amari::kernels

#pragma GCC diagnostic pop
