#include <amari/nn/serialize.hpp>

#include <algorithm>
#include <bit>
#include <cstring>
#include <limits>
#include <span>
#include <vector>

#include <zlib.h>

#include <amari/nn/atomic_file.hpp>
#include <amari/nn/detail/little_endian.hpp>

namespace amari::nn {

namespace {

constexpr const char* kSave = "save_parameters: ";
constexpr const char* kLoad = "load_parameters: ";
// crc32() is called on pieces of at most this size: it takes a 32-bit length.
constexpr std::size_t kCrcChunkBytes = std::size_t{1} << 26;
constexpr std::size_t kChecksumBytes = 4;

using Bytes = std::vector<std::uint8_t>;
using detail::get_le;
using detail::put_le;

std::uint32_t crc_update(std::uint32_t crc, const std::uint8_t* p, std::size_t n) {
  uLong c = crc;
  while (n > 0) {
    const std::size_t k = std::min(n, kCrcChunkBytes);
    c = crc32(c, p, static_cast<uInt>(k));
    p += k;
    n -= k;
  }
  return static_cast<std::uint32_t>(c);
}

std::string hex32(std::uint32_t v) {
  constexpr char kDigits[] = "0123456789abcdef";
  std::string s = "0x";
  for (int shift = 28; shift >= 0; shift -= 4) s += kDigits[(v >> shift) & 15];
  return s;
}

// Bytes as a C string literal ("AMARIPRM", "\x89PNG..."), for messages about a wrong magic.
std::string escaped(std::span<const std::uint8_t> bytes) {
  constexpr char kDigits[] = "0123456789abcdef";
  std::string s = "\"";
  for (std::uint8_t b : bytes) {
    if (b >= 0x20 && b < 0x7f && b != '"' && b != '\\') {
      s += static_cast<char>(b);
    } else {
      s += "\\x";
      s += kDigits[b >> 4];
      s += kDigits[b & 15];
    }
  }
  return s + "\"";
}

// A parameter name from a file may hold any bytes; messages show it escaped.
std::string escaped(const std::string& name) {
  return escaped(std::span(reinterpret_cast<const std::uint8_t*>(name.data()), name.size()));
}

std::string dims_str(std::span<const Index> dims) {
  std::string s = "(";
  for (std::size_t i = 0; i < dims.size(); ++i) s += (i ? ", " : "") + std::to_string(dims[i]);
  return s + ")";
}

// ---- reading ------------------------------------------------------------------------------------

// Bounds-checked little-endian reads from the file's bytes; running past the end is reported as
// a truncated file, naming the field that was expected there.
class Cursor {
 public:
  Cursor(const Bytes& bytes, const std::string& where) : bytes_(bytes), where_(where) {}
  std::size_t position() const { return pos_; }
  const std::uint8_t* take(std::size_t n, const std::string& what) {
    if (n > bytes_.size() - pos_) {
      throw FormatError(where_ + "truncated: expected " + what + " (" + std::to_string(n) +
                        " bytes) at byte offset " + std::to_string(pos_) +
                        ", but the file has only " + std::to_string(bytes_.size()) + " bytes");
    }
    const std::uint8_t* p = bytes_.data() + pos_;
    pos_ += n;
    return p;
  }
  std::uint8_t u8(const std::string& what) { return *take(1, what); }
  std::uint32_t u32(const std::string& what) {
    return static_cast<std::uint32_t>(get_le(take(4, what), 4));
  }
  std::int64_t i64(const std::string& what) {
    return static_cast<std::int64_t>(get_le(take(8, what), 8));
  }

 private:
  const Bytes& bytes_;
  const std::string& where_;
  std::size_t pos_ = 0;
};

// One parameter record of the header.
struct Record {
  std::string name;
  std::vector<Index> dims;
};

// The parsed, fully validated file: everything but the data, which stays in the byte buffer.
struct Parsed {
  DType dtype = DType::f32;
  std::vector<Record> records;
  std::size_t data_offset = 0;
  Index num_elements = 0;
};

// Checks the structure and checksum of a parameter file (everything that does not depend on the
// model). Every size taken from the header is bounded before it is used, so a hostile header can
// neither overflow a computation nor cause an allocation larger than the file.
Parsed parse(const Bytes& bytes, const std::string& where) {
  const std::span<const std::uint8_t> magic(
      reinterpret_cast<const std::uint8_t*>(kParameterFileMagic), sizeof kParameterFileMagic);
  const std::size_t head = std::min(bytes.size(), magic.size());
  if (!std::equal(bytes.begin(), bytes.begin() + static_cast<std::ptrdiff_t>(head),
                  magic.begin())) {
    throw FormatError(where + "not an amari parameter file: expected magic " + escaped(magic) +
                      ", found " + escaped(std::span(bytes.data(), head)));
  }
  Cursor c(bytes, where);
  c.take(magic.size(), "the magic " + escaped(magic));

  const std::uint32_t version = c.u32("the format version");
  if (version != kParameterFileVersion) {
    throw FormatError(where + "unsupported format version " + std::to_string(version) +
                      ", expected " + std::to_string(kParameterFileVersion));
  }
  Parsed out;
  const std::uint8_t code = c.u8("the dtype code");
  if (code != static_cast<std::uint8_t>(DType::f32) &&
      code != static_cast<std::uint8_t>(DType::f64)) {
    throw FormatError(where + "unknown dtype code " + std::to_string(code) +
                      ", expected 1 (float32) or 2 (float64)");
  }
  out.dtype = static_cast<DType>(code);
  const std::uint32_t count = c.u32("the parameter count");

  // No reserve(count): the count is untrusted; the vector grows only with records actually read.
  for (std::uint32_t i = 0; i < count; ++i) {
    const std::string which = "parameter " + std::to_string(i);
    const std::uint32_t length = c.u32("the name length of " + which);
    if (length > kMaxParameterNameLength) {
      throw FormatError(where + "the name of " + which + " is " + std::to_string(length) +
                        " bytes long, at most " + std::to_string(kMaxParameterNameLength) +
                        " expected");
    }
    Record r;
    const std::uint8_t* name = c.take(length, "the name of " + which);
    r.name.assign(reinterpret_cast<const char*>(name), length);
    const std::uint8_t rank = c.u8("the rank of " + which + " " + escaped(r.name));
    if (rank > Shape::kMaxRank) {
      throw FormatError(where + "parameter " + escaped(r.name) + " has rank " +
                        std::to_string(rank) + ", expected 0 to " +
                        std::to_string(Shape::kMaxRank));
    }
    for (int axis = 0; axis < rank; ++axis) {
      r.dims.push_back(
          c.i64("dimension " + std::to_string(axis) + " of parameter " + escaped(r.name)));
    }
    // A zero dimension makes the count 0 however large the others are, so it is looked for first;
    // otherwise each factor is checked before multiplying, so the product cannot overflow.
    Index numel = 1;
    const bool empty = std::find(r.dims.begin(), r.dims.end(), Index{0}) != r.dims.end();
    for (Index d : r.dims) {
      if (d < 0) {
        throw FormatError(where + "parameter " + escaped(r.name) +
                          " has a negative dimension: shape " + dims_str(r.dims));
      }
      if (empty) continue;
      if (numel > kMaxElements / d) {
        throw FormatError(where + "parameter " + escaped(r.name) + " of shape " + dims_str(r.dims) +
                          " has more than 2^48 elements");
      }
      numel *= d;
    }
    if (empty) numel = 0;
    if (numel > kMaxElements - out.num_elements) {
      throw FormatError(where + "the parameters hold more than 2^48 elements in total");
    }
    out.num_elements += numel;
    out.records.push_back(std::move(r));
  }

  // Bounded by 2^48 elements of 8 bytes: no overflow, on any 64-bit host.
  out.data_offset = c.position();
  const std::size_t element_bytes = out.dtype == DType::f32 ? 4 : 8;
  const std::uint64_t data_bytes = static_cast<std::uint64_t>(out.num_elements) * element_bytes;
  const std::uint64_t expected = out.data_offset + data_bytes + kChecksumBytes;
  const std::string promise = "the header describes " + std::to_string(out.num_elements) + " " +
                              dtype_name(out.dtype) + " elements, so the file should have " +
                              std::to_string(expected) + " bytes (" +
                              std::to_string(out.data_offset) + " header + " +
                              std::to_string(data_bytes) + " data + 4 checksum)";
  if (bytes.size() < expected) {
    throw FormatError(where + "truncated: " + promise + ", but it has only " +
                      std::to_string(bytes.size()));
  }
  if (bytes.size() > expected) {
    throw FormatError(where + std::to_string(bytes.size() - expected) +
                      " unexpected bytes after the checksum: " + promise);
  }
  const std::size_t body = bytes.size() - kChecksumBytes;
  const auto stored = static_cast<std::uint32_t>(get_le(bytes.data() + body, 4));
  const std::uint32_t computed = crc_update(0, bytes.data(), body);
  if (stored != computed) {
    throw FormatError(where + "checksum mismatch: the file stores CRC-32 " + hex32(stored) +
                      " but its first " + std::to_string(body) + " bytes have CRC-32 " +
                      hex32(computed) + " (the file is corrupt)");
  }
  return out;
}

// One tensor the model expects a record for: its parameters in flat order, then its state tensors.
struct Expected {
  const std::string& name;
  const Shape& shape;
};

template <Real T>
std::vector<Expected> expected_records(const Model<T>& model) {
  std::vector<Expected> out;
  for (const ParamInfo& p : model.layout()) out.push_back({p.name, p.shape});
  for (const StateInfo& s : model.state_layout()) out.push_back({s.name, s.shape});
  return out;
}

// Checks that the file describes exactly the model's parameters and state tensors.
template <Real T>
void check_layout(const Parsed& file, const Model<T>& model, const std::string& where) {
  if (file.dtype != dtype_of<T>) {
    throw DTypeError(where + "the file holds " + dtype_name(file.dtype) +
                     " parameters, the model is " + dtype_name(dtype_of<T>));
  }
  const std::vector<Expected> expected = expected_records(model);
  const std::size_t params = model.layout().size();
  const std::size_t states = model.state_layout().size();
  if (file.records.size() != expected.size()) {
    throw ShapeError(where + "the file holds " + std::to_string(file.records.size()) +
                     (states ? " tensors" : " parameters") + ", the model has " +
                     std::to_string(params) + " parameters" +
                     (states ? " and " + std::to_string(states) + " state tensors" : ""));
  }
  for (std::size_t i = 0; i < expected.size(); ++i) {
    const Record& r = file.records[i];
    const std::string kind = i < params ? "parameter " : "state tensor ";
    const std::size_t number = i < params ? i : i - params;
    if (r.name != expected[i].name) {
      throw ShapeError(where + kind + std::to_string(number) + " is " + escaped(r.name) +
                       " in the file but " + escaped(expected[i].name) + " in the model");
    }
    const std::span<const Index> dims = expected[i].shape.dims();
    if (!std::equal(r.dims.begin(), r.dims.end(), dims.begin(), dims.end())) {
      throw ShapeError(where + kind + escaped(r.name) + " has shape " + dims_str(r.dims) +
                       " in the file but " + expected[i].shape.str() + " in the model");
    }
  }
}

// Appends the elements of a flat tensor to the file, little-endian, updating the CRC.
template <Real T>
void write_elements(AtomicFileWriter& out, const Tensor<T>& flat, std::uint32_t& crc) {
  const std::size_t n = static_cast<std::size_t>(flat.size());
  if constexpr (std::endian::native == std::endian::little) {
    const auto* p = reinterpret_cast<const std::uint8_t*>(flat.data());
    out.write(p, n * sizeof(T));
    crc = crc_update(crc, p, n * sizeof(T));
  } else {
    // Other hosts: encode piecewise into a small buffer, so memory stays O(1) in P.
    using Bits = std::conditional_t<sizeof(T) == 4, std::uint32_t, std::uint64_t>;
    Bytes buf;
    constexpr std::size_t kPiece = 8192;
    for (std::size_t begin = 0; begin < n; begin += kPiece) {
      buf.clear();
      for (std::size_t i = begin; i < std::min(n, begin + kPiece); ++i) {
        put_le(buf, std::bit_cast<Bits>(flat.data()[i]), sizeof(T));
      }
      out.write(buf.data(), buf.size());
      crc = crc_update(crc, buf.data(), buf.size());
    }
  }
}

// Copies n little-endian elements from the file's bytes into dst.
template <Real T>
void read_elements(const std::uint8_t* src, std::size_t n, T* dst) {
  if constexpr (std::endian::native == std::endian::little) {
    if (n) std::memcpy(dst, src, n * sizeof(T));
  } else {
    using Bits = std::conditional_t<sizeof(T) == 4, std::uint32_t, std::uint64_t>;
    for (std::size_t i = 0; i < n; ++i) {
      dst[i] = std::bit_cast<T>(static_cast<Bits>(get_le(src + i * sizeof(T), sizeof(T))));
    }
  }
}

}  // namespace

template <Real T>
void save_parameters(const Model<T>& model, const std::string& path) {
  const std::string where = kSave + path + ": ";
  const std::size_t count = model.layout().size() + model.state_layout().size();

  Bytes header;
  header.insert(header.end(), std::begin(kParameterFileMagic), std::end(kParameterFileMagic));
  put_le(header, kParameterFileVersion, 4);
  put_le(header, static_cast<std::uint8_t>(dtype_of<T>), 1);
  if (count > std::numeric_limits<std::uint32_t>::max()) {
    throw ValueError(where + std::to_string(count) +
                     " parameter and state tensors, at most 2^32 - 1 can be stored");
  }
  put_le(header, count, 4);
  for (const Expected& e : expected_records(model)) {
    // Refused here rather than written, since load_parameters() would reject the file.
    if (e.name.size() > kMaxParameterNameLength) {
      throw ValueError(where + "parameter name " + escaped(e.name.substr(0, 64)) + "... is " +
                       std::to_string(e.name.size()) + " bytes long, at most " +
                       std::to_string(kMaxParameterNameLength) + " can be stored");
    }
    put_le(header, e.name.size(), 4);
    header.insert(header.end(), e.name.begin(), e.name.end());
    put_le(header, static_cast<std::uint64_t>(e.shape.rank()), 1);
    for (Index d : e.shape.dims()) put_le(header, static_cast<std::uint64_t>(d), 8);
  }

  AtomicFileWriter out(path, where);
  out.write(header.data(), header.size());
  std::uint32_t crc = crc_update(0, header.data(), header.size());
  write_elements(out, model.parameters(), crc);
  if (model.state().defined()) write_elements(out, model.state(), crc);
  Bytes trailer;
  put_le(trailer, crc, 4);
  out.write(trailer.data(), trailer.size());
  out.commit();
}

template <Real T>
void load_parameters(Model<T>& model, const std::string& path, const ParameterFileLimits& limits) {
  const std::string where = kLoad + path + ": ";
  const Bytes bytes =
      read_whole_file(path, where, limits.max_file_bytes,
                      " bytes (ParameterFileLimits::max_file_bytes; pass a larger limit to "
                      "load_parameters to read this file)");
  const Parsed file = parse(bytes, where);
  check_layout(file, model, where);

  // Everything is checked: from here on nothing can fail, so the model is either fully updated
  // or (on any exception above) untouched. The data is the P parameter elements, then the state.
  const std::uint8_t* src = bytes.data() + file.data_offset;
  const auto p = static_cast<std::size_t>(model.num_parameters());
  read_elements(src, p, model.parameters().data());
  const auto s = static_cast<std::size_t>(file.num_elements) - p;
  if (s) read_elements(src + p * sizeof(T), s, model.state().data());
}

template void save_parameters<float>(const Model<float>&, const std::string&);
template void save_parameters<double>(const Model<double>&, const std::string&);
template void load_parameters<float>(Model<float>&, const std::string&, const ParameterFileLimits&);
template void load_parameters<double>(Model<double>&, const std::string&,
                                      const ParameterFileLimits&);

}  // namespace amari::nn
