#include <amari/autodiff/tensor.hpp>

#include <new>

namespace amari {
namespace detail {

namespace {
constexpr std::size_t kAlignment = 64;
}

void* aligned_allocate(Index count, std::size_t bytes_each) {
  if (count < 0 || static_cast<std::size_t>(count) > (std::size_t(-1) - kAlignment) / bytes_each) {
    throw SizeError("Tensor: " + std::to_string(count) + " elements of " +
                    std::to_string(bytes_each) + " bytes cannot be allocated");
  }
  // Round up to whole cache lines so SIMD kernels may read the last partial line safely and
  // zero-size tensors still get a unique, non-null pointer.
  std::size_t bytes = static_cast<std::size_t>(count) * bytes_each;
  bytes = (bytes + kAlignment - 1) / kAlignment * kAlignment;
  if (bytes == 0) bytes = kAlignment;
  return ::operator new(bytes, std::align_val_t{kAlignment});
}

void aligned_free(void* p) noexcept { ::operator delete(p, std::align_val_t{kAlignment}); }

}  // namespace detail

template class Tensor<float>;
template class Tensor<double>;

}  // namespace amari
