// Internal to the spectral tools (lanczos.cpp, spectral_density.cpp, trace_estimators.cpp), not
// part of amari's API: the few single-vector kernels they share. Same determinism contract as
// vector_ops.hpp (block partition fixed by the length, sums in double, bit-identical for any
// thread count); kept separate only so the spectral tools depend on nothing in curvature/ but
// linear_operator.hpp while that module is being restructured.
#pragma once

#include <string>

#include <amari/autodiff/tensor.hpp>

namespace amari::curvature::spectrum_detail {

/// sum_i x_i y_i over the elements of x (y has at least as many), accumulated in double.
/// Cost: 2n reads.
template <Real T>
double dot(const Tensor<T>& x, const Tensor<T>& y);

/// sqrt(dot(x, x)). Cost: n reads.
template <Real T>
double norm(const Tensor<T>& x);

/// True if no element is NaN or +-inf. Cost: n reads.
template <Real T>
bool all_finite(const Tensor<T>& x);

/// "%.3g" of x, for messages.
std::string format_number(double x);

extern template double dot<float>(const Tensor<float>&, const Tensor<float>&);
extern template double dot<double>(const Tensor<double>&, const Tensor<double>&);
extern template double norm<float>(const Tensor<float>&);
extern template double norm<double>(const Tensor<double>&);
extern template bool all_finite<float>(const Tensor<float>&);
extern template bool all_finite<double>(const Tensor<double>&);

}  // namespace amari::curvature::spectrum_detail
