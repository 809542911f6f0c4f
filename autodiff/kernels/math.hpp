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

// f(x) with x clamped to [-limit, limit] first; NaN lanes skip f (they see 0) and stay NaN.
template <class B, class F>
B clamped_call(B x, typename B::value_type limit, F f) {
  using T = typename B::value_type;
  const auto nan = xsimd::isnan(x);
  const B finite = xsimd::select(nan, B(T(0)), xsimd::clip(x, B(-limit), B(limit)));
  return xsimd::select(nan, x, f(finite));
}

template <class B>
B exp(B x) {
  return clamped_call(x, typename B::value_type(1000), [](B y) { return xsimd::exp(y); });
}

template <class B>
B tanh(B x) {
  return clamped_call(x, typename B::value_type(1000), [](B y) { return xsimd::tanh(y); });
}

template <class B>
B erf(B x) {
  return clamped_call(x, typename B::value_type(6), [](B y) { return xsimd::erf(y); });
}

}  // namespace amari::kernels

#pragma GCC diagnostic pop
