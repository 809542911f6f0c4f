// amari's error hierarchy. Every failure a user can cause is reported by one of these types, with a
// message that names the operation, the shapes or values involved, and what was expected.
#pragma once

#include <stdexcept>
#include <string>

namespace amari {

/// Base of every exception amari throws. Catch this to handle any amari failure.
class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& what) : std::runtime_error(what) {}
};

/// Shapes that do not fit an operation (e.g. matmul with different inner dimensions), a rank
/// outside 0..4, or an axis out of range.
class ShapeError : public Error {
 public:
  using Error::Error;
};

/// A size that cannot be represented or allocated (element counts or byte counts that overflow).
/// Raised before any allocation is attempted.
class SizeError : public Error {
 public:
  using Error::Error;
};

/// A value of the wrong element type (float where double was expected), e.g. in a parameter file.
class DTypeError : public Error {
 public:
  using Error::Error;
};

/// Misuse of a tape: a value recorded on a tape that was cleared or destroyed, or values from two
/// different tapes combined in one operation.
class TapeError : public Error {
 public:
  using Error::Error;
};

/// An argument value outside its domain (negative damping, an empty batch, a label out of range).
class ValueError : public Error {
 public:
  using Error::Error;
};

/// A file that cannot be opened, read or written.
class IoError : public Error {
 public:
  using Error::Error;
};

/// A file whose contents are not what its format promises: bad magic number, inconsistent
/// dimensions, truncated data, checksum mismatch.
class FormatError : public Error {
 public:
  using Error::Error;
};

}  // namespace amari
