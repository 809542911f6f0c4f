#include <amari/nn/serialize.hpp>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <limits>
#include <span>
#include <vector>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

namespace amari::nn {

namespace {

constexpr const char* kSave = "save_parameters: ";
constexpr const char* kLoad = "load_parameters: ";
// write(2) and crc32() are called on pieces of at most this size: crc32() takes a 32-bit length,
// and Linux never writes more than ~2 GiB per call anyway.
constexpr std::size_t kChunkBytes = std::size_t{1} << 26;
constexpr std::size_t kChecksumBytes = 4;

using Bytes = std::vector<std::uint8_t>;

std::string error_text() {
  return std::strerror(errno);
}

void put_le(Bytes& out, std::uint64_t v, int bytes) {
  for (int i = 0; i < bytes; ++i) out.push_back(static_cast<std::uint8_t>(v >> (8 * i)));
}

std::uint64_t get_le(const std::uint8_t* p, int bytes) {
  std::uint64_t v = 0;
  for (int i = bytes - 1; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}

std::uint32_t crc_update(std::uint32_t crc, const std::uint8_t* p, std::size_t n) {
  uLong c = crc;
  while (n > 0) {
    const std::size_t k = std::min(n, kChunkBytes);
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

// ---- writing ------------------------------------------------------------------------------------

// An open file descriptor, closed at scope exit unless close() was called (and checked) first.
class Fd {
 public:
  explicit Fd(int fd) : fd_(fd) {}
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  ~Fd() {
    if (fd_ >= 0) ::close(fd_);
  }
  int get() const { return fd_; }
  // Returns close(2)'s result: on some file systems (NFS) a failed write is only reported here.
  int close() {
    const int r = ::close(fd_);
    fd_ = -1;
    return r;
  }

 private:
  int fd_;
};

void write_all(int fd, const void* data, std::size_t n, const std::string& where) {
  const auto* p = static_cast<const char*>(data);
  while (n > 0) {
    const ssize_t w = ::write(fd, p, std::min(n, kChunkBytes));
    if (w < 0) {
      if (errno == EINTR) continue;
      throw IoError(where + "write failed: " + error_text());
    }
    p += w;
    n -= static_cast<std::size_t>(w);
  }
}

// Removes the temporary file at scope exit unless the save succeeded.
class TempFileGuard {
 public:
  explicit TempFileGuard(std::string path) : path_(std::move(path)) {}
  TempFileGuard(const TempFileGuard&) = delete;
  TempFileGuard& operator=(const TempFileGuard&) = delete;
  ~TempFileGuard() {
    if (!committed_) ::unlink(path_.c_str());
  }
  void commit() { committed_ = true; }

 private:
  std::string path_;
  bool committed_ = false;
};

// Makes a completed rename durable: the new directory entry reaches the disk. Best effort, since
// some file systems refuse fsync on directories and the file itself is already complete.
void sync_parent_directory(const std::string& path) {
  std::filesystem::path dir = std::filesystem::path(path).parent_path();
  if (dir.empty()) dir = ".";
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return;
  ::fsync(fd);
  ::close(fd);
}

// ---- reading ------------------------------------------------------------------------------------

Bytes read_file(const std::string& path) {
  const std::string where = kLoad + path + ": ";
  Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (fd.get() < 0) throw IoError(where + "cannot open: " + error_text());
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) throw IoError(where + "cannot stat: " + error_text());
  if (!S_ISREG(st.st_mode)) throw IoError(where + "not a regular file");
  // The allocation is bounded by the file's real size, never by anything written inside it.
  Bytes bytes(static_cast<std::size_t>(st.st_size));
  std::size_t done = 0;
  while (done < bytes.size()) {
    const ssize_t r =
        ::read(fd.get(), bytes.data() + done, std::min(bytes.size() - done, kChunkBytes));
    if (r < 0) {
      if (errno == EINTR) continue;
      throw IoError(where + "read failed: " + error_text());
    }
    if (r == 0) break;  // shrank since fstat: the parser reports the truncation
    done += static_cast<std::size_t>(r);
  }
  bytes.resize(done);
  std::uint8_t extra;
  for (;;) {
    const ssize_t r = ::read(fd.get(), &extra, 1);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) throw IoError(where + "read failed: " + error_text());
    if (r > 0) throw IoError(where + "the file grew while it was being read");
    break;
  }
  return bytes;
}

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

// Checks that the file describes exactly the model's parameters.
template <Real T>
void check_layout(const Parsed& file, const Model<T>& model, const std::string& where) {
  if (file.dtype != dtype_of<T>) {
    throw DTypeError(where + "the file holds " + dtype_name(file.dtype) +
                     " parameters, the model is " + dtype_name(dtype_of<T>));
  }
  const std::vector<ParamInfo>& layout = model.layout();
  if (file.records.size() != layout.size()) {
    throw ShapeError(where + "the file holds " + std::to_string(file.records.size()) +
                     " parameters, the model has " + std::to_string(layout.size()));
  }
  for (std::size_t i = 0; i < layout.size(); ++i) {
    const Record& r = file.records[i];
    if (r.name != layout[i].name) {
      throw ShapeError(where + "parameter " + std::to_string(i) + " is " + escaped(r.name) +
                       " in the file but " + escaped(layout[i].name) + " in the model");
    }
    const std::span<const Index> dims = layout[i].shape.dims();
    if (!std::equal(r.dims.begin(), r.dims.end(), dims.begin(), dims.end())) {
      throw ShapeError(where + "parameter " + escaped(r.name) + " has shape " + dims_str(r.dims) +
                       " in the file but " + layout[i].shape.str() + " in the model");
    }
  }
}

}  // namespace

template <Real T>
void save_parameters(const Model<T>& model, const std::string& path) {
  const std::string tmp = path + ".tmp";
  const std::string where = kSave + path + ": ";

  Bytes header;
  header.insert(header.end(), std::begin(kParameterFileMagic), std::end(kParameterFileMagic));
  put_le(header, kParameterFileVersion, 4);
  put_le(header, static_cast<std::uint8_t>(dtype_of<T>), 1);
  if (model.layout().size() > std::numeric_limits<std::uint32_t>::max()) {
    throw ValueError(where + std::to_string(model.layout().size()) +
                     " parameters, at most 2^32 - 1 can be stored");
  }
  put_le(header, model.layout().size(), 4);
  for (const ParamInfo& p : model.layout()) {
    // Refused here rather than written, since load_parameters() would reject the file.
    if (p.name.size() > kMaxParameterNameLength) {
      throw ValueError(where + "parameter name " + escaped(p.name.substr(0, 64)) + "... is " +
                       std::to_string(p.name.size()) + " bytes long, at most " +
                       std::to_string(kMaxParameterNameLength) + " can be stored");
    }
    put_le(header, p.name.size(), 4);
    header.insert(header.end(), p.name.begin(), p.name.end());
    put_le(header, static_cast<std::uint64_t>(p.shape.rank()), 1);
    for (Index d : p.shape.dims()) put_le(header, static_cast<std::uint64_t>(d), 8);
  }

  Fd fd(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0666));
  if (fd.get() < 0) throw IoError(where + "cannot open " + tmp + " for writing: " + error_text());
  TempFileGuard guard(tmp);
  const std::string write_where = where + "writing " + tmp + ": ";

  write_all(fd.get(), header.data(), header.size(), write_where);
  std::uint32_t crc = crc_update(0, header.data(), header.size());
  const Tensor<T>& flat = model.parameters();
  const std::size_t n = static_cast<std::size_t>(flat.size());
  if constexpr (std::endian::native == std::endian::little) {
    const auto* p = reinterpret_cast<const std::uint8_t*>(flat.data());
    write_all(fd.get(), p, n * sizeof(T), write_where);
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
      write_all(fd.get(), buf.data(), buf.size(), write_where);
      crc = crc_update(crc, buf.data(), buf.size());
    }
  }
  Bytes trailer;
  put_le(trailer, crc, 4);
  write_all(fd.get(), trailer.data(), trailer.size(), write_where);

  // The data must be on disk before the rename makes it visible under the real name; otherwise a
  // crash after the rename could leave an empty or partial file there.
  if (::fsync(fd.get()) != 0) throw IoError(write_where + "fsync failed: " + error_text());
  if (fd.close() != 0) throw IoError(write_where + "close failed: " + error_text());
  std::error_code ec;
  std::filesystem::rename(tmp, path, ec);
  if (ec) throw IoError(where + "cannot rename " + tmp + " to " + path + ": " + ec.message());
  guard.commit();
  sync_parent_directory(path);
}

template <Real T>
void load_parameters(Model<T>& model, const std::string& path) {
  const std::string where = kLoad + path + ": ";
  const Bytes bytes = read_file(path);
  const Parsed file = parse(bytes, where);
  check_layout(file, model, where);

  // Everything is checked: from here on nothing can fail, so the model is either fully updated
  // or (on any exception above) untouched.
  Tensor<T>& flat = model.parameters();
  const std::uint8_t* src = bytes.data() + file.data_offset;
  const std::size_t n = static_cast<std::size_t>(file.num_elements);
  if constexpr (std::endian::native == std::endian::little) {
    if (n) std::memcpy(flat.data(), src, n * sizeof(T));
  } else {
    using Bits = std::conditional_t<sizeof(T) == 4, std::uint32_t, std::uint64_t>;
    for (std::size_t i = 0; i < n; ++i) {
      flat.data()[i] = std::bit_cast<T>(static_cast<Bits>(get_le(src + i * sizeof(T), sizeof(T))));
    }
  }
}

template void save_parameters<float>(const Model<float>&, const std::string&);
template void save_parameters<double>(const Model<double>&, const std::string&);
template void load_parameters<float>(Model<float>&, const std::string&);
template void load_parameters<double>(Model<double>&, const std::string&);

}  // namespace amari::nn
