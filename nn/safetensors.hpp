// safetensors files (https://github.com/huggingface/safetensors): reading and writing tensors in
// the format of Hugging Face and PyTorch, and whole models in amari's or PyTorch's names and
// layouts.
//
// The format: an 8-byte little-endian u64 N; N bytes of UTF-8 JSON, the header,
//   {"<name>": {"dtype": "F32", "shape": [2, 3], "data_offsets": [begin, end]}, ...,
//    "__metadata__": {"<key>": "<value>", ...}}                     (__metadata__ is optional)
// then the data section: each tensor's elements, little-endian, row-major, at bytes
// [begin, end) of the data section. What this reader enforces (every violation is a FormatError
// naming the file and the problem; the rules of the reference implementation, safetensors/src/
// tensor.rs, plus the README's):
//   - the file has at least 8 bytes; N <= SafetensorsLimits::max_header_bytes (checked before
//     anything is allocated from N); 8 + N <= the file's size; the file's size <= max_file_bytes
//     (checked with fstat before the file is read);
//   - the header is valid UTF-8 (no overlong forms, no surrogates) and valid JSON, begins with '{'
//     and holds exactly one object, optionally followed by JSON whitespace (writers pad with
//     spaces); strings follow JSON's escapes (\uXXXX pairs included; a lone surrogate is an error);
//   - no key appears twice, at any level ("Duplicate keys are disallowed", README);
//   - "__metadata__", if present, is an object of string values;
//   - every other key is a tensor whose value has exactly the fields "dtype" (one of BOOL, U8, I8,
//     F8_E5M2, F8_E4M3, I16, U16, F16, BF16, I32, U32, F32, F64, I64, U64; any other string is an
//     unknown dtype), "shape" (an array of non-negative integers, any rank, each at most 2^48, an
//     amari limit) and "data_offsets" (an array of two non-negative integers); an unknown field
//     is refused rather than ignored;
//   - numbers are plain non-negative integers below 2^64 (no sign, fraction or exponent);
//   - end >= begin, and end - begin = (product of the shape) x (element size), computed without
//     overflow (a shape holding a 0 has no elements, whatever its other dimensions);
//   - sorted by offset, the tensors tile the data section exactly: the first begins at 0, each
//     begins where the previous one ends (no gap, no overlap; empty tensors may share an offset),
//     and the last ends at the end of the file (no trailing bytes, none missing).
// Tensors of any rank are read; converting one to a Tensor<T> (rank 0 to 4) is where a higher rank
// is refused (ShapeError), so a file with a rank-5 tensor can still be inspected and its other
// tensors loaded.
#pragma once

#include <cstdint>
#include <map>
#include <span>
#include <string>
#include <variant>
#include <vector>

#include <amari/nn/model.hpp>

namespace amari::nn {

/// The element types of the safetensors format (the reference implementation's Dtype).
enum class SafetensorsDType : std::uint8_t {
  BOOL,
  U8,
  I8,
  F8_E5M2,
  F8_E4M3,
  I16,
  U16,
  F16,
  BF16,
  I32,
  U32,
  F32,
  F64,
  I64,
  U64,
};

/// The format's name of a dtype: "F32", "BF16", ...
const char* safetensors_dtype_name(SafetensorsDType dtype);
/// Bytes per element: 1, 2, 4 or 8.
std::size_t safetensors_dtype_size(SafetensorsDType dtype);

/// One tensor of a safetensors header.
struct SafetensorsEntry {
  SafetensorsDType dtype = SafetensorsDType::F32;
  std::vector<std::uint64_t> shape;  ///< any rank; each dimension <= 2^48
  std::uint64_t begin = 0;           ///< data_offsets[0], relative to the start of the data section
  std::uint64_t end = 0;             ///< data_offsets[1], one past the last byte
  /// The number of elements: the product of the shape (1 for rank 0).
  std::uint64_t numel() const;
};

/// Limits a reader applies before allocating anything; raise them for larger files (exceeding one
/// is a FormatError that names it).
struct SafetensorsLimits {
  /// Largest header N accepted: 100 MiB (the reference implementation refuses headers above
  /// 100,000,000 bytes).
  std::uint64_t max_header_bytes = std::uint64_t{100} << 20;
  /// Largest file accepted; the whole file is held in memory while it is read.
  std::uint64_t max_file_bytes = std::uint64_t{64} << 30;
};

/// A validated safetensors file held in memory (the whole file: memory used is its size).
class SafetensorsFile {
 public:
  /// Reads and validates `path` (every rule in the comment at the top of this header).
  /// IoError if it cannot be opened or read or is not a regular file (a FIFO or a device is
  /// refused at once, never waited on); FormatError naming the path and the problem for any
  /// malformed content or a limit exceeded (naming the limit). Cost O(file size).
  static SafetensorsFile read(const std::string& path, const SafetensorsLimits& limits = {});
  /// Validates the bytes of a file already in memory; `source` names it in error messages.
  static SafetensorsFile parse(std::vector<std::uint8_t> bytes, const std::string& source,
                               const SafetensorsLimits& limits = {});

  /// The path (or source name) the file was read from.
  const std::string& source() const { return source_; }
  /// The tensor names, in the order of their data in the file.
  std::vector<std::string> names() const;
  /// True if the file holds a tensor of this name.
  bool contains(const std::string& name) const { return entries_.count(name) != 0; }
  /// Every tensor, by name.
  const std::map<std::string, SafetensorsEntry>& entries() const { return entries_; }
  /// One tensor's dtype, shape and offsets; ValueError naming the file if there is none.
  const SafetensorsEntry& entry(const std::string& name) const;
  /// The "__metadata__" map (empty if the header has none).
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  /// The raw little-endian bytes of one tensor (end - begin bytes); ValueError if absent.
  std::span<const std::uint8_t> data(const std::string& name) const;

  /// The tensor as a Tensor<T>, converted from F32, F64, F16 or BF16: exactly, except F64 into
  /// float, which rounds to nearest (out-of-range values become +-inf; NaN stays NaN). ValueError
  /// if absent; DTypeError naming the dtype for any other dtype; ShapeError if its rank is above 4.
  template <Real T>
  Tensor<T> get(const std::string& name) const;
  /// An integer tensor (I64, I32, I16, I8, U32, U16, U8 or BOOL) as int64 values, row-major
  /// (e.g. PyTorch's BatchNorm num_batches_tracked). ValueError if absent; DTypeError otherwise.
  std::vector<std::int64_t> get_integers(const std::string& name) const;

 private:
  std::string source_;
  std::vector<std::uint8_t> bytes_;
  std::size_t data_start_ = 0;
  std::map<std::string, SafetensorsEntry> entries_;
  std::map<std::string, std::string> metadata_;
};

/// Builds a safetensors file: tensors are added in any order, then written at once. The data of
/// 8-byte tensors comes before that of 4-byte ones (each group in the order added), so every
/// tensor starts at a multiple of its element size, and the header is padded with spaces to a
/// multiple of 8 bytes, as the reference writer does.
class SafetensorsWriter {
 public:
  /// Adds a float tensor (dtype F32) or double tensor (F64). The writer keeps a handle that
  /// shares the tensor's storage: the values written are those at write() time. ValueError if the
  /// name is taken, is "__metadata__", or is not valid UTF-8.
  template <Real T>
  void add(const std::string& name, const Tensor<T>& tensor);
  /// Adds an I64 tensor of the given shape (any rank) from row-major values; ValueError as add(),
  /// or if the number of values is not the product of the shape.
  void add_int64(const std::string& name, const std::vector<std::uint64_t>& shape,
                 std::vector<std::int64_t> values);
  /// Sets a "__metadata__" entry (replacing an earlier value of the key). ValueError if the key or
  /// value is not valid UTF-8.
  void set_metadata(const std::string& key, const std::string& value);
  /// The complete file. Cost O(total size).
  std::vector<std::uint8_t> bytes() const;
  /// Writes the file through AtomicFileWriter (nn/atomic_file.hpp, as save_parameters does): a
  /// temporary created exclusively in the target's directory, fsync, the old file's mode, rename
  /// over `path`, so `path` holds the old file or the complete new one, never a part. A symbolic
  /// link is followed (the file it points to is replaced); a directory, device, FIFO or socket is
  /// refused. IoError naming the path if any step fails (the temporary is removed, the old file
  /// untouched).
  void write(const std::string& path) const;

 private:
  struct Item {
    std::string name;
    SafetensorsDType dtype;
    std::vector<std::uint64_t> shape;
    std::variant<Tensor<float>, Tensor<double>, std::vector<std::int64_t>> values;
  };
  void check_name(const std::string& name) const;
  std::vector<const Item*> data_order() const;
  std::string header() const;
  std::vector<Item> items_;
  std::map<std::string, std::string> metadata_;
};

/// Whose names and layouts a model file uses.
enum class Convention {
  /// amari's: the names and shapes of model.layout() and model.state_layout(), unchanged.
  amari,
  /// PyTorch's state_dict: the same names (amari's layers name their parameters and buffers as
  /// PyTorch's do: "0.weight", "1.running_mean", ...), each parameter in PyTorch's layout
  /// (ParamInfo::torch_layout: Linear weights (out, in), Conv2d weights (C_out, C_in/g, KH, KW)),
  /// and a "<prefix>num_batches_tracked" I64 scalar next to every batch norm's running statistics.
  pytorch,
};

/// Writes the model's parameters and state (model.layout(), model.state_layout()) to `path` as a
/// safetensors file: F32 for a float model, F64 for a double one, in the given convention, with
/// metadata "amari.convention" ("amari" or "pytorch") and, for pytorch, "format": "pt" (what
/// Hugging Face's loaders look for). For Convention::pytorch, each state pair
/// "<prefix>running_mean" / "<prefix>running_var" gets "<prefix>num_batches_tracked" = 0: amari
/// does not count batches, and PyTorch reads the count only when a BatchNorm has momentum=None;
/// the entry is there so that load_state_dict(strict=True) accepts the file. Atomic (see
/// SafetensorsWriter::write); IoError naming the path on failure. Cost O(P + S).
template <Real T>
void save_safetensors(const Model<T>& model, const std::string& path,
                      Convention convention = Convention::amari);

/// Replaces the model's parameters and state by the tensors of a safetensors file in the given
/// convention. All or nothing: the file is read and every tensor checked and converted before the
/// model is touched, so after any exception the model is unchanged. Dtypes: F32, F64, F16 and BF16
/// load into float and double models (F64 into float rounds to nearest, the others are exact).
/// For Convention::pytorch, a "<prefix>num_batches_tracked" integer scalar next to a batch norm's
/// running statistics is accepted (and ignored) if present. Throws: IoError / FormatError as
/// SafetensorsFile::read; ValueError if the file's "amari.convention" metadata names the other
/// convention; ShapeError naming the tensors that are missing from the file or that the model does
/// not have, or a tensor whose shape differs from the expected one (naming the tensor, the file's
/// shape and the expected shape, which for pytorch is PyTorch's layout of the amari shape);
/// DTypeError naming a tensor of a dtype that cannot be loaded (integers, 8-bit floats). Memory:
/// the file plus one converted copy of the model's tensors. Cost O(file size).
template <Real T>
void load_safetensors(Model<T>& model, const std::string& path,
                      Convention convention = Convention::amari,
                      const SafetensorsLimits& limits = {});

extern template Tensor<float> SafetensorsFile::get<float>(const std::string&) const;
extern template Tensor<double> SafetensorsFile::get<double>(const std::string&) const;
extern template void SafetensorsWriter::add<float>(const std::string&, const Tensor<float>&);
extern template void SafetensorsWriter::add<double>(const std::string&, const Tensor<double>&);
extern template void save_safetensors<float>(const Model<float>&, const std::string&, Convention);
extern template void save_safetensors<double>(const Model<double>&, const std::string&, Convention);
extern template void load_safetensors<float>(Model<float>&, const std::string&, Convention,
                                             const SafetensorsLimits&);
extern template void load_safetensors<double>(Model<double>&, const std::string&, Convention,
                                              const SafetensorsLimits&);

}  // namespace amari::nn
