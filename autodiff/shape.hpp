// Shape of a dense tensor: rank 0 (a scalar) to rank 4, row-major.
#pragma once

#include <array>
#include <cstdint>
#include <initializer_list>
#include <span>
#include <string>

#include <amari/autodiff/error.hpp>

namespace amari {

/// Signed index and extent type used for every dimension and element count.
using Index = std::int64_t;

/// Element counts above this are refused before any allocation (2^48 elements: far beyond any
/// machine, far below overflow of byte counts for double).
inline constexpr Index kMaxElements = Index{1} << 48;

/// The dimensions of a tensor, rank 0 to 4. A rank-0 shape has one element. Dimensions may be 0
/// (empty tensors). Constructing a shape checks rank, signs and the total element count.
class Shape {
 public:
  static constexpr int kMaxRank = 4;

  /// Rank-0 shape (a scalar).
  Shape() = default;
  /// The rank-1 shape (0): no elements. It is the shape of an undefined Tensor, so that code which
  /// only looks at shapes and sizes sees "nothing to read or write" there.
  static constexpr Shape empty_vector() {
    Shape s;
    s.rank_ = 1;
    s.numel_ = 0;
    return s;
  }
  /// Shape from a list of dimensions, e.g. Shape{128, 784}. Throws ShapeError on rank > 4 or a
  /// negative dimension, SizeError if the element count exceeds kMaxElements.
  Shape(std::initializer_list<Index> dims) : Shape(std::span<const Index>(dims.begin(), dims.size())) {}
  /// Same as the initializer-list form, from any contiguous range of dimensions.
  explicit Shape(std::span<const Index> dims);

  /// Number of dimensions, 0..4.
  int rank() const { return rank_; }
  /// Extent of dimension i (0 <= i < rank, unchecked).
  Index operator[](int i) const { return dims_[static_cast<std::size_t>(i)]; }
  /// Extent of an axis; negative axes count from the end (-1 = last). Throws ShapeError if out of range.
  Index dim(int axis) const { return dims_[static_cast<std::size_t>(normalize_axis(axis, "Shape::dim"))]; }
  /// Number of elements: product of the dimensions (1 for rank 0). When it is 0, the other
  /// dimensions may be anything up to Index's maximum, so a product of a subset of the dimensions
  /// can overflow: kernels return before looping when numel() is 0 (see partial_numel).
  Index numel() const { return numel_; }
  /// Product of dimensions [first, last) (1 if empty) when the shape has elements. For a shape
  /// without elements the product may not fit in Index; it is then saturated at kMaxElements + 1,
  /// or 0 if one of those dimensions is 0. Never overflows.
  Index partial_numel(int first, int last) const;
  /// The dimensions as a span of length rank().
  std::span<const Index> dims() const { return {dims_.data(), static_cast<std::size_t>(rank_)}; }
  /// Maps a possibly negative axis to 0..rank-1; throws ShapeError naming `op` if out of range.
  int normalize_axis(int axis, const char* op) const;
  /// "(3, 4)", "()" for rank 0.
  std::string str() const;

  friend bool operator==(const Shape& a, const Shape& b) {
    return a.rank_ == b.rank_ && a.dims_ == b.dims_;
  }

 private:
  std::array<Index, kMaxRank> dims_{};
  int rank_ = 0;
  Index numel_ = 1;
};

}  // namespace amari
