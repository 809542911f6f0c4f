// Reader and writer for the IDX format of the MNIST family of datasets
// (http://yann.lecun.com/exdb/mnist/, "FILE FORMATS FOR THE MNIST DATABASE").
//
// An IDX file is big-endian: two zero bytes, a type byte, a rank byte, `rank` 32-bit dimensions,
// then the elements in row-major order. Files are read through zlib, so gzip-compressed and plain
// files are both accepted; compression is recognised by the gzip magic bytes 1f 8b, never by the
// file name. The reader trusts nothing in the file: every field is checked and every failure names
// the file, what was expected and what was found.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <amari/autodiff/error.hpp>
#include <amari/autodiff/shape.hpp>
#include <amari/autodiff/tensor.hpp>

namespace amari::nn {

/// Element type of an IDX file; the enumerator values are the type codes stored in the file.
enum class IdxType : std::uint8_t {
  u8 = 0x08,   ///< unsigned byte (MNIST images and labels)
  i8 = 0x09,   ///< signed byte
  i16 = 0x0B,  ///< 16-bit signed integer
  i32 = 0x0C,  ///< 32-bit signed integer
  f32 = 0x0D,  ///< IEEE 754 single precision
  f64 = 0x0E,  ///< IEEE 754 double precision
};

/// Bytes per element of an IDX type: 1, 1, 2, 4, 4, 8.
int idx_type_size(IdxType type);
/// "ubyte", "byte", "short", "int", "float" or "double" (the names of the format description).
const char* idx_type_name(IdxType type);

/// IDX files whose header promises more elements than this are refused (SizeError) before anything
/// is allocated. 2^31 is ~45x the largest MNIST-family file (47M pixels) and keeps the byte count
/// of every element type far from overflow.
inline constexpr Index kMaxIdxElements = Index{1} << 31;

/// Whether write_idx compresses.
enum class IdxCompression { plain, gzip };

/// Raw contents of an IDX file: element type, dimensions (rank 1..4) and the element bytes exactly
/// as stored in the file (big-endian, row-major). Decode single elements with value(); convert the
/// whole array with idx_to_tensor().
/// Invariant: `type` is an IDX type code, the rank is 1..4, every dimension is in 0..2^32-1 and
/// bytes.size() == numel() * idx_type_size(type). read_idx() returns only such arrays. The fields
/// are public so arrays can be built by hand (e.g. to write a file), so the type cannot enforce it:
/// instead every function that consumes an IdxArray (value, idx_to_tensor, write_idx) checks it
/// first with validate() and throws ValueError, so an inconsistent array is refused, never read
/// past its bytes.
struct IdxArray {
  IdxType type = IdxType::u8;
  std::vector<Index> dims;
  std::vector<std::uint8_t> bytes;

  /// Number of elements: the product of dims (1 for no dims), saturating at the largest Index.
  Index numel() const;
  /// Element i converted to double; exact for every IDX type. ValueError if the array breaks its
  /// invariant or i is outside 0..numel()-1. Cost O(rank) for the checks.
  double value(Index i) const;
  /// Throws ValueError (naming the type, the dims and the byte count) unless the invariant above
  /// holds. Cost O(rank).
  void validate() const;
};

/// Limits read_idx applies before reading or allocating anything; raise them for larger files.
struct IdxLimits {
  /// Largest IDX contents accepted (header and data) after gzip decompression; for a plain file,
  /// its size. Default 1 GiB, about twice the largest MNIST-family file (EMNIST ByClass training
  /// images, 547 MB), so a small gzip file cannot make read_idx inflate gigabytes. Checked against
  /// the header's promise before any data is read.
  std::uint64_t max_decompressed_bytes = std::uint64_t{1} << 30;
};

/// Reads an IDX file, gzip-compressed or plain. Throws IoError if the file cannot be opened or
/// read, or is not a regular file (a FIFO or a device is refused at once, never waited on);
/// FormatError for a bad magic number, an unknown type code, a rank outside 1..4, a truncated
/// header or data, a corrupt or truncated gzip stream, bytes after the data, or a header promising
/// more than limits.max_decompressed_bytes (the message names the limit); SizeError if the header
/// promises more than kMaxIdxElements elements. Memory: the data size (allocated as the data
/// arrives, so a lying header cannot force a large allocation). Decompresses at most the header's
/// promise plus 1 MiB (to count trailing bytes). Bytes after the end of a gzip stream are skipped
/// by zlib, not reported; trailing bytes inside the (decompressed) IDX contents are.
IdxArray read_idx(const std::string& path, const IdxLimits& limits = {});

/// Converts the elements of `array` to T without scaling; shape = array.dims. ValueError if the
/// array breaks its invariant (see IdxArray).
template <Real T>
Tensor<T> idx_to_tensor(const IdxArray& array);

/// Reads an image file (type ubyte, rank 3: count x rows x cols) as a tensor of shape
/// (count, rows * cols), one flattened image per row, pixels scaled from 0..255 to [0, 1].
/// Throws FormatError for any other type or rank, plus every error of read_idx.
template <Real T>
Tensor<T> read_idx_images(const std::string& path, const IdxLimits& limits = {});

/// Reads a label file (type ubyte, rank 1) as one int per example, values 0..255. Throws
/// FormatError for any other type or rank, plus every error of read_idx.
std::vector<int> read_idx_labels(const std::string& path, const IdxLimits& limits = {});

/// Writes `array` as an IDX file, plain or gzip-compressed, replacing any existing file through
/// AtomicFileWriter (nn/atomic_file.hpp): `path` holds the old file or the complete new one, never
/// a part; an existing file keeps its mode; a path that is a directory, device, FIFO or socket is
/// refused. Throws ValueError if the array breaks its invariant (see IdxArray), before anything is
/// written; IoError naming the path if the file cannot be written (the old file is untouched).
void write_idx(const std::string& path, const IdxArray& array,
               IdxCompression compression = IdxCompression::plain);

}  // namespace amari::nn
