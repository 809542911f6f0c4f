#include <amari/autodiff/shape.hpp>

namespace amari {

Shape::Shape(std::span<const Index> dims) {
  if (dims.size() > static_cast<std::size_t>(kMaxRank)) {
    throw ShapeError("Shape: rank " + std::to_string(dims.size()) + " exceeds the maximum rank " +
                     std::to_string(kMaxRank));
  }
  rank_ = static_cast<int>(dims.size());
  Index count = 1;
  bool overflow = false;
  for (std::size_t i = 0; i < dims.size(); ++i) {
    if (dims[i] < 0) {
      dims_ = {};
      throw ShapeError("Shape: dimension " + std::to_string(i) + " is negative (" +
                       std::to_string(dims[i]) + ")");
    }
    dims_[i] = dims[i];
    // Check before multiplying so the product itself can never overflow.
    if (dims[i] != 0 && count > kMaxElements / dims[i]) overflow = true;
    count = overflow ? count : count * dims[i];
  }
  bool empty = false;
  for (std::size_t i = 0; i < dims.size(); ++i) empty = empty || dims[i] == 0;
  if (overflow && !empty) {
    throw SizeError("Shape: " + str() + " has more than 2^48 elements");
  }
  numel_ = empty ? 0 : count;
}

Index Shape::partial_numel(int first, int last) const {
  Index count = 1;
  for (int i = first; i < last; ++i) {
    const Index d = dims_[static_cast<std::size_t>(i)];
    if (d == 0) return 0;
    // Saturate instead of overflowing: only a shape without elements can get here.
    count = count > (kMaxElements + 1) / d ? kMaxElements + 1 : count * d;
  }
  return count;
}

int Shape::normalize_axis(int axis, const char* op) const {
  const int a = axis < 0 ? axis + rank_ : axis;
  if (a < 0 || a >= rank_) {
    throw ShapeError(std::string(op) + ": axis " + std::to_string(axis) +
                     " is out of range for shape " + str());
  }
  return a;
}

std::string Shape::str() const {
  std::string s = "(";
  for (int i = 0; i < rank_; ++i) {
    if (i) s += ", ";
    s += std::to_string(dims_[static_cast<std::size_t>(i)]);
  }
  return s + ")";
}

}  // namespace amari
