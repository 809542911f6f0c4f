// Parameter files: a model's flat parameter vector and its state (batch norm's running statistics),
// with their layout, in a small binary format.
//
// Format, version 1. Every integer and every element is little-endian, whatever the host.
//
//   offset  size          field
//   0       8             magic "AMARIPRM"
//   8       4  u32        format version = 1
//   12      1  u8         dtype: the DType value, 1 = float32, 2 = float64
//   13      4  u32        n = p + s, the number of records
//   17      ...           n records: first the p parameters in flat (layout) order, then the s
//   state
//                         tensors in state (state_layout) order; each record is
//                           u32 name length L (0..4096), L bytes of name (no terminator),
//                           u8 rank r (0..4), r x i64 dims (each >= 0)
//   ...     (P+S) x 4/8   the data: all P elements of the flat parameter vector, in flat order,
//                         then all S elements of the flat state vector (P, S = sums of the
//                         products of the dims of the parameter / state records)
//   end-4   4  u32        CRC-32 (zlib's crc32(), the ISO-HDLC / gzip polynomial) of every byte
//                         before it
//
// The layout is stored so that a file is checked against the model it is loaded into, tensor by
// tensor, instead of trusting that a vector of the right length has the right meaning.
//
// State records (added after the first release, still version 1): the records of a model's state
// tensors follow its parameter records, and the state data follows the parameter data. A record is
// not marked as parameter or state: the loader matches the records against model.layout() and then
// model.state_layout(), so the first p records are parameters because the model has p. A model
// without state (s = 0) writes exactly the bytes it wrote before state existed, and such files
// load into stateless models as before; a file without state records does not load into a model
// with state (ShapeError naming the counts).
#pragma once

#include <cstdint>
#include <string>

#include <amari/nn/model.hpp>

namespace amari::nn {

/// The first 8 bytes of every parameter file.
inline constexpr char kParameterFileMagic[8] = {'A', 'M', 'A', 'R', 'I', 'P', 'R', 'M'};
/// The format version that save_parameters() writes and load_parameters() reads.
inline constexpr std::uint32_t kParameterFileVersion = 1;
/// Longest parameter name a file may hold; longer names are refused as corrupt (FormatError).
inline constexpr std::uint32_t kMaxParameterNameLength = 4096;

/// Limits load_parameters applies before reading or allocating anything; raise them for larger
/// files.
struct ParameterFileLimits {
  /// Largest file accepted (the whole file is held in memory while it is checked): 64 GiB, the
  /// default of SafetensorsLimits::max_file_bytes too. Checked with fstat before the file is read.
  std::uint64_t max_file_bytes = std::uint64_t{64} << 30;
};

/// Writes the model's layout, flat parameters (P elements) and state (S elements) to `path` in the
/// format above, through AtomicFileWriter (nn/atomic_file.hpp, whose header states every
/// guarantee): the bytes go to a temporary file created exclusively in the target's directory
/// (never through a file or link already there), which is flushed to disk (fsync), given the old
/// file's mode and renamed over `path`, so a crash leaves either the old file or the complete new
/// one under `path`, never a partial one. A path that is a symbolic link replaces the file it
/// points to; a directory, device, FIFO or socket is refused. Concurrent saves to one path are safe
/// (each has its own temporary; the last rename wins). Throws IoError naming the path if any step
/// fails (the temporary is removed, the old file untouched). Cost O(P + S), one pass, no copy of
/// the parameters on little-endian hosts. ValueError if a name is longer than
/// kMaxParameterNameLength.
template <Real T>
void save_parameters(const Model<T>& model, const std::string& path);

/// Replaces the model's parameters and state by those stored in `path`. The whole file is read and
/// checked before the model is touched, so after any exception the model (parameters and state)
/// is unchanged. Throws:
/// IoError if the file cannot be opened or read or is not a regular file (a FIFO or a device is
/// refused at once, never waited on); FormatError if the file is larger than
/// limits.max_file_bytes (naming the limit, before anything is read), and FormatError (naming the
/// path, what was expected and what was found) for a wrong magic, an unsupported version, an
/// unknown dtype code, a truncated file, a rank above 4, a name longer than
/// kMaxParameterNameLength, a negative dimension or an element count above kMaxElements, bytes
/// after the checksum, or a checksum mismatch; DTypeError if the file's dtype is not T (naming
/// both); ShapeError if the number of records, a name, or a shape differs from model.layout()
/// followed by model.state_layout() (naming the parameter or state tensor, the file's and the
/// model's value). Sizes from the header are checked before anything is allocated from them; memory
/// used is the file size. Cost O(file size).
template <Real T>
void load_parameters(Model<T>& model, const std::string& path,
                     const ParameterFileLimits& limits = {});

extern template void save_parameters<float>(const Model<float>&, const std::string&);
extern template void save_parameters<double>(const Model<double>&, const std::string&);
extern template void load_parameters<float>(Model<float>&, const std::string&,
                                            const ParameterFileLimits&);
extern template void load_parameters<double>(Model<double>&, const std::string&,
                                             const ParameterFileLimits&);

}  // namespace amari::nn
