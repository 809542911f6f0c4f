// BLAS-1 vector operations on Tensors: the element counts checked here, the arithmetic in the
// vector kernels (autodiff/kernels/vector.hpp, which also states the determinism contract).
#include <amari/curvature/vector_ops.hpp>

#include <amari/autodiff/kernels/vector.hpp>

#include <cmath>
#include <string>

namespace amari::curvature {

namespace {

void check_vector_lengths(const char* op, Index a, Index b) {
  if (a != b) {
    throw ShapeError(std::string(op) + ": vectors of " + std::to_string(a) + " and " +
                     std::to_string(b) + " elements, expected equal lengths");
  }
}

}  // namespace

template <Real T>
double dot(const Tensor<T>& x, const Tensor<T>& y) {
  check_vector_lengths("dot", x.size(), y.size());
  return kernels::dot(x.size(), x.data(), y.data());
}

template <Real T>
double norm(const Tensor<T>& x) {
  return std::sqrt(kernels::dot(x.size(), x.data(), x.data()));
}

template <Real T>
void axpy(double alpha, const Tensor<T>& x, Tensor<T>& y) {
  check_vector_lengths("axpy", x.size(), y.size());
  kernels::axpy(x.size(), static_cast<T>(alpha), x.data(), y.data());
}

template <Real T>
void xpby(const Tensor<T>& x, double beta, Tensor<T>& y) {
  check_vector_lengths("xpby", x.size(), y.size());
  kernels::xpby(x.size(), x.data(), static_cast<T>(beta), y.data());
}

template <Real T>
void scal(double alpha, Tensor<T>& x) {
  kernels::scal(x.size(), static_cast<T>(alpha), x.data());
}

template <Real T>
void copy(const Tensor<T>& src, Tensor<T>& dst) {
  check_vector_lengths("copy", src.size(), dst.size());
  kernels::copy(src.size(), src.data(), dst.data());
}

template <Real T>
bool all_finite(const Tensor<T>& x) {
  return kernels::all_finite(x.size(), x.data());
}

#define AMARI_VECTOR_OPS_INSTANTIATE(T)                        \
  template double dot<T>(const Tensor<T>&, const Tensor<T>&);  \
  template double norm<T>(const Tensor<T>&);                   \
  template void axpy<T>(double, const Tensor<T>&, Tensor<T>&); \
  template void xpby<T>(const Tensor<T>&, double, Tensor<T>&); \
  template void scal<T>(double, Tensor<T>&);                   \
  template void copy<T>(const Tensor<T>&, Tensor<T>&);         \
  template bool all_finite<T>(const Tensor<T>&);
AMARI_VECTOR_OPS_INSTANTIATE(float)
AMARI_VECTOR_OPS_INSTANTIATE(double)
#undef AMARI_VECTOR_OPS_INSTANTIATE

}  // namespace amari::curvature
