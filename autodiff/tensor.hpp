// Tensor<T>: a dense, contiguous, row-major array of float or double with rank 0..4.
//
// A Tensor is a handle to reference-counted storage, like a NumPy array or a torch.Tensor:
// copying a Tensor is cheap and shares the elements; a deep copy is always explicit (clone()).
// Storage is 64-byte aligned; views made by reshaped()/view() share it. The class comment of
// Tensor below states its invariants and exactly what copy, move and assignment do.
#pragma once

#include <concepts>
#include <cstdint>
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
///
/// Value semantics: a Tensor is a *shared handle*, not a value. The copy constructor and copy
/// assignment make another handle to the same elements (O(1), no element is copied; a write
/// through one handle is seen through every other) and copy the shape; assigning to a handle
/// rebinds that handle only, never the elements of others. A deep copy is always explicit:
/// clone() (fresh storage) or copy_from() (into existing storage). The move constructor and move
/// assignment transfer the handle and leave the source undefined, exactly like Tensor().
///
/// Invariants, true after every public operation (also one that throws, which changes nothing):
///   1. defined() == (data() != nullptr).
///   2. size() == shape().numel() >= 0.
///   3. An undefined tensor (default-constructed, moved-from or reset()) has shape
///      Shape::empty_vector() = (0) and size() 0: code that only reads shapes and sizes sees
///      nothing to read or write. Members that need storage (at, item, reshaped, view,
///      copy_from) throw ValueError naming the member for it; the others (size, fill, clone,
///      to_vector, begin/end) work and treat it as having no elements.
///   4. A defined tensor owns (shares) at least size() elements at data(), kept alive by this
///      handle; data() is non-null also for size() 0. Fresh storage is 64-byte aligned; a view at
///      an offset is aligned as its offset allows.
/// operator[] and data() are unchecked for speed: valid indices are [0, size()).
template <Real T>
class Tensor {
 public:
  using value_type = T;

  /// An undefined tensor: no storage, shape (0), size 0. defined() is false. Used for "absent"
  /// values (e.g. a zero tangent).
  Tensor() = default;
  /// Zero-filled tensor of the given shape.
  explicit Tensor(const Shape& shape) : Tensor(uninitialized(shape)) { fill(T(0)); }
  /// Another handle to `other`'s storage (no element is copied).
  Tensor(const Tensor& other) = default;
  /// Rebinds this handle to `other`'s storage (no element is copied).
  Tensor& operator=(const Tensor& other) = default;
  /// Takes over `other`'s handle; `other` becomes undefined (as Tensor()).
  Tensor(Tensor&& other) noexcept : shape_(other.shape_), data_(std::move(other.data_)) {
    other.shape_ = Shape::empty_vector();
  }
  /// Takes over `other`'s handle; `other` becomes undefined (self-move leaves this unchanged).
  Tensor& operator=(Tensor&& other) noexcept {
    if (this != &other) {
      shape_ = other.shape_;
      data_ = std::move(other.data_);
      other.shape_ = Shape::empty_vector();
    }
    return *this;
  }
  ~Tensor() = default;

  /// Tensor whose elements are not initialized; for kernels that overwrite every element.
  static Tensor uninitialized(const Shape& shape) {
    T* p = static_cast<T*>(detail::aligned_allocate(shape.numel(), sizeof(T)));
    Tensor t;
    t.data_ = std::shared_ptr<T>(p, [](T* q) { detail::aligned_free(q); });
    t.shape_ = shape;
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

  /// True if the tensor has storage (was not default-constructed, moved from or reset()).
  bool defined() const { return data_ != nullptr; }
  /// Makes this handle undefined (as Tensor()); other handles to the storage keep it alive.
  void reset() noexcept {
    data_.reset();
    shape_ = Shape::empty_vector();
  }
  /// The shape; (0) for an undefined tensor.
  const Shape& shape() const { return shape_; }
  int rank() const { return shape_.rank(); }
  /// Extent of an axis (negative counts from the end).
  Index dim(int axis) const { return shape_.dim(axis); }
  /// Number of elements (0 for an undefined tensor).
  Index size() const { return shape_.numel(); }

  /// The first element; null for an undefined tensor.
  T* data() { return data_.get(); }
  const T* data() const { return data_.get(); }
  T* begin() { return data(); }
  T* end() { return data() + size(); }
  const T* begin() const { return data(); }
  const T* end() const { return data() + size(); }

  /// Element at a flat (row-major) index, unchecked: 0 <= i < size() is the caller's promise.
  T& operator[](Index i) { return data_.get()[i]; }
  const T& operator[](Index i) const { return data_.get()[i]; }
  /// Element at a multi-index, bounds-checked (throws ShapeError; ValueError if undefined). For
  /// tests and examples, not hot loops.
  template <std::integral... I>
  T& at(I... idx) {
    return data_.get()[offset_of({static_cast<Index>(idx)...})];
  }
  template <std::integral... I>
  const T& at(I... idx) const {
    return data_.get()[offset_of({static_cast<Index>(idx)...})];
  }
  /// The single element of a tensor with one element (any rank); ShapeError otherwise,
  /// ValueError if undefined.
  T item() const {
    require_defined("Tensor::item");
    if (size() != 1) {
      throw ShapeError("Tensor::item: tensor of shape " + shape_.str() + " has " +
                       std::to_string(size()) + " elements, expected 1");
    }
    return data_.get()[0];
  }

  /// Deep copy with fresh storage; an undefined tensor clones to an undefined tensor.
  Tensor clone() const {
    if (!defined()) return Tensor();
    Tensor t = uninitialized(shape_);
    if (size()) std::memcpy(t.data(), data(), static_cast<std::size_t>(size()) * sizeof(T));
    return t;
  }
  /// The same elements under another shape with the same element count; shares storage.
  /// ShapeError if the counts differ, ValueError if undefined.
  Tensor reshaped(const Shape& shape) const {
    require_defined("Tensor::reshaped");
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
  /// Used for flat parameter vectors. Throws ShapeError if the range does not fit, ValueError if
  /// undefined.
  Tensor view(Index offset, const Shape& shape) const {
    require_defined("Tensor::view");
    if (offset < 0 || offset > size() || shape.numel() > size() - offset) {
      throw ShapeError("Tensor::view: " + std::to_string(shape.numel()) + " elements at offset " +
                       std::to_string(offset) + " do not fit in a tensor of " +
                       std::to_string(size()) + " elements");
    }
    Tensor t;
    t.data_ = std::shared_ptr<T>(data_, data_.get() + offset);
    t.shape_ = shape;
    return t;
  }
  /// True if both handles are defined and refer to the same first element (shared storage).
  bool same_storage(const Tensor& other) const {
    return defined() && data_.get() == other.data_.get();
  }
  /// True if some element of this tensor is also an element of `other` (overlapping views of
  /// one storage included). Tensors without elements overlap nothing. Used by the *_into
  /// functions to detect a result buffer that aliases an argument.
  bool overlaps(const Tensor& other) const {
    if (size() == 0 || other.size() == 0) return false;
    // Compared as integers: relational operators on pointers into different arrays are unspecified.
    const auto a = reinterpret_cast<std::uintptr_t>(data());
    const auto b = reinterpret_cast<std::uintptr_t>(other.data());
    const auto bytes_a = static_cast<std::uintptr_t>(size()) * sizeof(T);
    const auto bytes_b = static_cast<std::uintptr_t>(other.size()) * sizeof(T);
    return a < b + bytes_b && b < a + bytes_a;
  }

  /// Sets every element to `value` (nothing to set for an undefined or empty tensor).
  void fill(T value) {
    T* p = data();
    for (Index i = 0, n = size(); i < n; ++i) p[i] = value;
  }
  /// Copies the elements of `src` (same shape required, ShapeError otherwise; ValueError if either
  /// tensor is undefined). Overlapping storage is handled (memmove).
  void copy_from(const Tensor& src) {
    if (!defined() || !src.defined()) {
      throw ValueError(std::string("Tensor::copy_from: the ") +
                       (defined() ? "source" : "destination") + " is an undefined tensor");
    }
    if (!(src.shape() == shape_)) {
      throw ShapeError("Tensor::copy_from: source shape " + src.shape().str() +
                       " differs from destination shape " + shape_.str());
    }
    if (size() && src.data() != data())
      std::memmove(data(), src.data(), static_cast<std::size_t>(size()) * sizeof(T));
  }
  /// Copies the elements into a std::vector (row-major); empty for an undefined tensor.
  std::vector<T> to_vector() const { return std::vector<T>(begin(), end()); }

 private:
  void require_defined(const char* member) const {
    if (!defined()) {
      throw ValueError(std::string(member) + ": the tensor is undefined (default-constructed, " +
                       "moved from or reset(); it has no storage)");
    }
  }
  Index offset_of(std::initializer_list<Index> idx) const {
    require_defined("Tensor::at");
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

  Shape shape_ = Shape::empty_vector();
  std::shared_ptr<T> data_;
};

extern template class Tensor<float>;
extern template class Tensor<double>;

}  // namespace amari
