// Tensor<T>: a dense, contiguous, row-major array of float or double with rank 0..4.
//
// A Tensor is a handle to reference-counted storage, like a NumPy array or a torch.Tensor:
// copying or moving a Tensor is cheap and shares the elements; a deep copy is always explicit
// (clone()). Storage is 64-byte aligned; views made by reshaped()/view() share it.
#pragma once

#include <concepts>
#include <cstring>
#include <initializer_list>
#include <memory>
#include <string>
#include <type_traits>
#include <vector>

#include <amari/autodiff/error.hpp>
#include <amari/autodiff/shape.hpp>

namespace amari {

/// The element types amari computes with.
template <class T>
concept Real = std::same_as<T, float> || std::same_as<T, double>;

/// Run-time tag of an element type, for file formats and error messages.
enum class DType : std::uint8_t { f32 = 1, f64 = 2 };

/// DType of a compile-time element type.
template <Real T>
inline constexpr DType dtype_of = std::is_same_v<T, float> ? DType::f32 : DType::f64;

/// "float32" or "float64".
inline const char* dtype_name(DType d) { return d == DType::f32 ? "float32" : "float64"; }

/// Returns the calling thread's cached tensor blocks to the system. Tensor storage of 4 KiB or
/// more is recycled through a per-thread cache (at most 512 MiB, oldest evicted first) because
/// re-mapping fresh pages for every large buffer of a training step or curvature product costs
/// page faults; the cache never changes a value and is emptied when the thread ends.
void release_cached_memory();

/// Tensor storage allocated on the calling thread: bytes currently live and the peak since the
/// last reset_peak_memory(). Used by the benchmarks to compare the memory of a curvature product
/// with that of a gradient (no hidden P x P storage). Blocks freed on another thread are counted
/// there.
struct MemoryStats {
  std::size_t live_bytes = 0;
  std::size_t peak_bytes = 0;
};
MemoryStats memory_stats();
/// Sets the peak to the current live bytes.
void reset_peak_memory();

namespace detail {
/// Allocates `count` elements of `bytes_each` bytes, 64-byte aligned; throws SizeError if the byte
/// count overflows, std::bad_alloc if memory is exhausted. Never returns null for count > 0.
void* aligned_allocate(Index count, std::size_t bytes_each);
void aligned_free(void* p) noexcept;
}  // namespace detail

/// Dense row-major tensor of float or double, rank 0..4, 64-byte aligned storage.
/// Copies share storage (cheap); clone() copies the elements.
template <Real T>
class Tensor {
 public:
  using value_type = T;

  /// An undefined tensor: no storage, no shape. defined() is false. Used for "absent" values
  /// (e.g. a zero tangent).
  Tensor() = default;
  /// Zero-filled tensor of the given shape.
  explicit Tensor(const Shape& shape) : Tensor(uninitialized(shape)) { fill(T(0)); }

  /// Tensor whose elements are not initialized; for kernels that overwrite every element.
  static Tensor uninitialized(const Shape& shape) {
    Tensor t;
    t.shape_ = shape;
    T* p = static_cast<T*>(detail::aligned_allocate(shape.numel(), sizeof(T)));
    t.data_ = std::shared_ptr<T>(p, [](T* q) { detail::aligned_free(q); });
    return t;
  }
  /// Zero-filled tensor.
  static Tensor zeros(const Shape& shape) { return Tensor(shape); }
  /// Tensor with every element equal to `value`.
  static Tensor full(const Shape& shape, T value) {
    Tensor t = uninitialized(shape);
    t.fill(value);
    return t;
  }
  /// Rank-0 tensor holding `value`.
  static Tensor scalar(T value) { return full(Shape{}, value); }
  /// Tensor of the given shape from row-major values; throws ShapeError if the count differs.
  static Tensor from(const Shape& shape, std::initializer_list<T> values) {
    return from(shape, std::vector<T>(values));
  }
  /// Tensor of the given shape from row-major values; throws ShapeError if the count differs.
  static Tensor from(const Shape& shape, const std::vector<T>& values) {
    if (static_cast<Index>(values.size()) != shape.numel()) {
      throw ShapeError("Tensor::from: shape " + shape.str() + " needs " +
                       std::to_string(shape.numel()) + " values, got " +
                       std::to_string(values.size()));
    }
    Tensor t = uninitialized(shape);
    if (!values.empty()) std::memcpy(t.data(), values.data(), values.size() * sizeof(T));
    return t;
  }

  /// True if the tensor has storage (was not default-constructed).
  bool defined() const { return data_ != nullptr; }
  const Shape& shape() const { return shape_; }
  int rank() const { return shape_.rank(); }
  /// Extent of an axis (negative counts from the end).
  Index dim(int axis) const { return shape_.dim(axis); }
  /// Number of elements.
  Index size() const { return shape_.numel(); }

  T* data() { return data_.get(); }
  const T* data() const { return data_.get(); }
  T* begin() { return data(); }
  T* end() { return data() + size(); }
  const T* begin() const { return data(); }
  const T* end() const { return data() + size(); }

  /// Element at a flat (row-major) index, unchecked.
  T& operator[](Index i) { return data_.get()[i]; }
  const T& operator[](Index i) const { return data_.get()[i]; }
  /// Element at a multi-index, bounds-checked (throws ShapeError). For tests and examples,
  /// not hot loops.
  template <std::integral... I>
  T& at(I... idx) { return data_.get()[offset_of({static_cast<Index>(idx)...})]; }
  template <std::integral... I>
  const T& at(I... idx) const { return data_.get()[offset_of({static_cast<Index>(idx)...})]; }
  /// The single element of a tensor with one element (any rank); ShapeError otherwise.
  T item() const {
    if (size() != 1) {
      throw ShapeError("Tensor::item: tensor of shape " + shape_.str() + " has " +
                       std::to_string(size()) + " elements, expected 1");
    }
    return data_.get()[0];
  }

  /// Deep copy with fresh storage.
  Tensor clone() const {
    Tensor t = uninitialized(shape_);
    if (size()) std::memcpy(t.data(), data(), static_cast<std::size_t>(size()) * sizeof(T));
    return t;
  }
  /// The same elements under another shape with the same element count; shares storage.
  Tensor reshaped(const Shape& shape) const {
    if (shape.numel() != size()) {
      throw ShapeError("reshape: cannot view " + shape_.str() + " (" + std::to_string(size()) +
                       " elements) as " + shape.str() + " (" + std::to_string(shape.numel()) +
                       " elements)");
    }
    Tensor t = *this;
    t.shape_ = shape;
    return t;
  }
  /// A view of `shape.numel()` consecutive elements starting at flat `offset`; shares storage.
  /// Used for flat parameter vectors. Throws ShapeError if the range does not fit.
  Tensor view(Index offset, const Shape& shape) const {
    if (offset < 0 || offset > size() || shape.numel() > size() - offset) {
      throw ShapeError("Tensor::view: " + std::to_string(shape.numel()) + " elements at offset " +
                       std::to_string(offset) + " do not fit in a tensor of " +
                       std::to_string(size()) + " elements");
    }
    Tensor t;
    t.shape_ = shape;
    t.data_ = std::shared_ptr<T>(data_, data_.get() + offset);
    return t;
  }
  /// True if both handles refer to the same first element (shared storage).
  bool same_storage(const Tensor& other) const { return data_.get() == other.data_.get(); }

  /// Sets every element to `value`.
  void fill(T value) {
    T* p = data();
    for (Index i = 0, n = size(); i < n; ++i) p[i] = value;
  }
  /// Copies the elements of `src` (same shape required, ShapeError otherwise).
  void copy_from(const Tensor& src) {
    if (!(src.shape() == shape_)) {
      throw ShapeError("Tensor::copy_from: source shape " + src.shape().str() +
                       " differs from destination shape " + shape_.str());
    }
    if (size() && src.data() != data())
      std::memmove(data(), src.data(), static_cast<std::size_t>(size()) * sizeof(T));
  }
  /// Copies the elements into a std::vector (row-major).
  std::vector<T> to_vector() const { return std::vector<T>(begin(), end()); }

 private:
  Index offset_of(std::initializer_list<Index> idx) const {
    if (static_cast<int>(idx.size()) != shape_.rank()) {
      throw ShapeError("Tensor::at: " + std::to_string(idx.size()) +
                       " indices for a tensor of shape " + shape_.str());
    }
    Index off = 0;
    int axis = 0;
    for (Index i : idx) {
      if (i < 0 || i >= shape_[axis]) {
        throw ShapeError("Tensor::at: index " + std::to_string(i) + " out of range on axis " +
                         std::to_string(axis) + " of shape " + shape_.str());
      }
      off = off * shape_[axis] + i;
      ++axis;
    }
    return off;
  }

  Shape shape_;
  std::shared_ptr<T> data_;
};

extern template class Tensor<float>;
extern template class Tensor<double>;

}  // namespace amari
