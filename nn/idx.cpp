#include <amari/nn/idx.hpp>

#include <algorithm>
#include <bit>
#include <limits>
#include <new>

#include <zlib.h>

#include <amari/nn/atomic_file.hpp>

namespace amari::nn {

namespace {

constexpr const char* kRead = "read_idx: ";
constexpr const char* kWrite = "write_idx: ";
// Data is read in pieces that start at kFirstChunkBytes and double up to kIdxChunkBytes, so memory
// grows with the bytes actually present, not with what a (possibly corrupt) header promises: a
// 20-byte file claiming 2 GiB costs one 64 KiB buffer, not a zero-filled 16 MiB one.
constexpr std::size_t kFirstChunkBytes = std::size_t{1} << 16;
constexpr std::size_t kIdxChunkBytes = std::size_t{1} << 24;
// Trailing bytes are counted up to this many, then reported as "more than".
constexpr std::size_t kTrailingCountLimit = std::size_t{1} << 20;

bool is_known_type(std::uint8_t code) {
  switch (code) {
    case 0x08:
    case 0x09:
    case 0x0B:
    case 0x0C:
    case 0x0D:
    case 0x0E:
      return true;
    default:
      return false;
  }
}

std::string hex_byte(std::uint8_t b) {
  constexpr char kDigits[] = "0123456789abcdef";
  return std::string{kDigits[b >> 4], kDigits[b & 15]};
}

std::string type_desc(IdxType type) {
  return std::string(idx_type_name(type)) + " (0x" + hex_byte(static_cast<std::uint8_t>(type)) +
         ")";
}

std::string dims_str(const std::vector<Index>& dims) {
  std::string s = "(";
  for (std::size_t i = 0; i < dims.size(); ++i) s += (i ? ", " : "") + std::to_string(dims[i]);
  return s + ")";
}

// Product of dims, or -1 if it exceeds `limit`. A zero dimension makes the product 0 however large
// the others are, so it is looked for first.
Index checked_product(const std::vector<Index>& dims, Index limit) {
  if (std::find(dims.begin(), dims.end(), Index{0}) != dims.end()) return 0;
  Index n = 1;
  for (Index d : dims) {
    if (d < 0 || n > limit / d) return -1;
    n *= d;
  }
  return n;
}

std::uint32_t load_be32(const std::uint8_t* p) {
  return (std::uint32_t{p[0]} << 24) | (std::uint32_t{p[1]} << 16) | (std::uint32_t{p[2]} << 8) |
         std::uint32_t{p[3]};
}

// Element decoders: big-endian bytes to the C++ type named by the IDX type code.
template <IdxType type>
auto decode(const std::uint8_t* p) {
  if constexpr (type == IdxType::u8) {
    return p[0];
  } else if constexpr (type == IdxType::i8) {
    return static_cast<std::int8_t>(p[0]);
  } else if constexpr (type == IdxType::i16) {
    return static_cast<std::int16_t>(static_cast<std::uint16_t>((p[0] << 8) | p[1]));
  } else if constexpr (type == IdxType::i32) {
    return static_cast<std::int32_t>(load_be32(p));
  } else if constexpr (type == IdxType::f32) {
    return std::bit_cast<float>(load_be32(p));
  } else {
    return std::bit_cast<double>((std::uint64_t{load_be32(p)} << 32) | load_be32(p + 4));
  }
}

// Calls f(decode<type>) with the decoder for the run-time type, so loops over elements are
// compiled once per type instead of switching per element.
template <class F>
void with_decoder(IdxType type, F&& f) {
  switch (type) {
    case IdxType::u8:
      f([](const std::uint8_t* p) { return decode<IdxType::u8>(p); }, 1);
      break;
    case IdxType::i8:
      f([](const std::uint8_t* p) { return decode<IdxType::i8>(p); }, 1);
      break;
    case IdxType::i16:
      f([](const std::uint8_t* p) { return decode<IdxType::i16>(p); }, 2);
      break;
    case IdxType::i32:
      f([](const std::uint8_t* p) { return decode<IdxType::i32>(p); }, 4);
      break;
    case IdxType::f32:
      f([](const std::uint8_t* p) { return decode<IdxType::f32>(p); }, 4);
      break;
    case IdxType::f64:
      f([](const std::uint8_t* p) { return decode<IdxType::f64>(p); }, 8);
      break;
  }
}

// A file opened through zlib, which reads gzip streams and passes other files through unchanged
// (it looks for the gzip magic 1f 8b). Every read is checked; failures become amari errors that
// name the file.
class IdxReader {
 public:
  // The path is opened as a RegularFile (a FIFO or device is refused without blocking) and the
  // descriptor handed to zlib, which closes it in gzclose_r.
  explicit IdxReader(const std::string& path) : path_(path) {
    RegularFile file(path, kRead + path + ": ");
    file_ = gzdopen(file.fd(), "rb");
    if (file_ == nullptr) throw std::bad_alloc();  // zlib could not allocate its state
    file.release();
    gzbuffer(file_, 1 << 17);  // larger than the 8 KiB default: fewer read(2) calls
  }
  IdxReader(const IdxReader&) = delete;
  IdxReader& operator=(const IdxReader&) = delete;
  ~IdxReader() { gzclose_r(file_); }

  // Reads up to n bytes (fewer only at the end of the data) and returns how many were read.
  std::size_t read(void* dst, std::size_t n) {
    std::size_t got = 0;
    while (got < n) {
      // gzread counts in unsigned and returns int: keep each call well inside both.
      const auto want = static_cast<unsigned>(std::min<std::size_t>(n - got, std::size_t{1} << 30));
      const int r = gzread(file_, static_cast<char*>(dst) + got, want);
      if (r < 0) throw_stream_error();
      got += static_cast<std::size_t>(r);
      position_ += static_cast<std::size_t>(r);
      if (static_cast<unsigned>(r) < want) {
        // A short read is the end of the data, or a gzip stream that stops early (zlib then
        // returns what it decoded and records Z_BUF_ERROR).
        throw_stream_error();
        break;
      }
    }
    return got;
  }

  // "" for a plain file, " (after gzip decompression)" for a gzip one: sizes in messages then
  // say which bytes they count. Valid once something was read.
  const char* size_note() const { return gzdirect(file_) ? "" : " (after gzip decompression)"; }
  // Bytes delivered so far (decompressed for gzip files).
  std::size_t position() const { return position_; }

 private:
  // Throws if zlib recorded an error; returns if the stream simply ended.
  void throw_stream_error() {
    int code = Z_OK;
    const char* msg = gzerror(file_, &code);
    const std::string where = kRead + path_ + ": ";
    switch (code) {
      case Z_OK:
        return;
      case Z_ERRNO:
        throw IoError(where + "read failed: " + msg);
      case Z_BUF_ERROR:
        throw FormatError(where + "truncated gzip stream: the compressed data ends after " +
                          std::to_string(position_) + " decompressed bytes (" + msg + ")");
      case Z_DATA_ERROR:
        throw FormatError(where + "corrupt gzip data after " + std::to_string(position_) +
                          " decompressed bytes: " + msg);
      case Z_MEM_ERROR:
        throw std::bad_alloc();
      default:
        throw IoError(where + "zlib error " + std::to_string(code) + ": " + msg);
    }
  }

  std::string path_;
  gzFile file_ = nullptr;
  std::size_t position_ = 0;
};

// Compresses a stream of bytes into a gzip file (one member, the header zlib writes by default,
// level 6 as gzopen's "wb6") through an AtomicFileWriter, in bounded pieces.
class GzipEncoder {
 public:
  GzipEncoder(AtomicFileWriter& out, const std::string& where) : out_(out), where_(where) {
    // 15 + 16: a 32 KiB window with a gzip header and trailer instead of zlib's.
    const int rc = deflateInit2(&stream_, 6, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY);
    if (rc == Z_MEM_ERROR) throw std::bad_alloc();
    if (rc != Z_OK) throw IoError(where_ + "zlib error " + std::to_string(rc) + " starting gzip");
  }
  GzipEncoder(const GzipEncoder&) = delete;
  GzipEncoder& operator=(const GzipEncoder&) = delete;
  ~GzipEncoder() { deflateEnd(&stream_); }

  void write(const std::uint8_t* p, std::size_t n) {
    while (n > 0) {
      const auto part = static_cast<uInt>(std::min<std::size_t>(n, std::size_t{1} << 30));
      stream_.next_in = const_cast<Bytef*>(p);
      stream_.avail_in = part;
      drain(Z_NO_FLUSH);
      p += part;
      n -= part;
    }
  }
  void finish() { drain(Z_FINISH); }

 private:
  // Runs deflate until it has consumed its input (or, for Z_FINISH, ended the stream), writing
  // every full output buffer.
  void drain(int flush) {
    std::uint8_t buf[1 << 16];
    for (;;) {
      stream_.next_out = buf;
      stream_.avail_out = sizeof buf;
      const int rc = deflate(&stream_, flush);
      if (rc == Z_STREAM_ERROR) throw IoError(where_ + "zlib error while compressing");
      out_.write(buf, sizeof buf - stream_.avail_out);
      if (flush == Z_FINISH ? rc == Z_STREAM_END : stream_.avail_out != 0) return;
    }
  }

  AtomicFileWriter& out_;
  std::string where_;
  z_stream stream_{};
};

}  // namespace

int idx_type_size(IdxType type) {
  switch (type) {
    case IdxType::u8:
    case IdxType::i8:
      return 1;
    case IdxType::i16:
      return 2;
    case IdxType::i32:
    case IdxType::f32:
      return 4;
    case IdxType::f64:
      return 8;
  }
  throw ValueError("idx_type_size: unknown IDX type code " +
                   std::to_string(static_cast<int>(type)));
}

const char* idx_type_name(IdxType type) {
  switch (type) {
    case IdxType::u8:
      return "ubyte";
    case IdxType::i8:
      return "byte";
    case IdxType::i16:
      return "short";
    case IdxType::i32:
      return "int";
    case IdxType::f32:
      return "float";
    case IdxType::f64:
      return "double";
  }
  return "unknown";
}

Index IdxArray::numel() const {
  // Saturates instead of overflowing for hand-made arrays with absurd dims; read_idx never
  // produces more than kMaxIdxElements.
  const Index n = checked_product(dims, std::numeric_limits<Index>::max());
  return n < 0 ? std::numeric_limits<Index>::max() : n;
}

void IdxArray::validate() const {
  const std::string where = "IdxArray: ";
  if (!is_known_type(static_cast<std::uint8_t>(type))) {
    throw ValueError(where + "unknown element type code " + std::to_string(static_cast<int>(type)));
  }
  const auto rank = static_cast<int>(dims.size());
  if (rank < 1 || rank > Shape::kMaxRank) {
    throw ValueError(where + "rank must be 1..4, got " + std::to_string(rank) + " (dims " +
                     dims_str(dims) + ")");
  }
  for (Index d : dims) {
    if (d < 0 || d > Index{std::numeric_limits<std::uint32_t>::max()}) {
      throw ValueError(where + "dimensions must fit in 32 unsigned bits, got " + dims_str(dims));
    }
  }
  const Index count = checked_product(dims, std::numeric_limits<Index>::max() / 8);
  const int size = idx_type_size(type);
  if (count < 0 ||
      static_cast<std::size_t>(count) * static_cast<std::size_t>(size) != bytes.size()) {
    throw ValueError(where + "dims " + dims_str(dims) + " of " + idx_type_name(type) + " need " +
                     (count < 0 ? "too many" : std::to_string(count * size)) + " bytes, got " +
                     std::to_string(bytes.size()));
  }
}

double IdxArray::value(Index i) const {
  validate();
  if (i < 0 || i >= numel()) {
    throw ValueError("IdxArray::value: index " + std::to_string(i) + " is outside 0.." +
                     std::to_string(numel() - 1) + " (dims " + dims_str(dims) + ")");
  }
  double v = 0;
  with_decoder(type, [&](auto decode_one, int size) {
    v = static_cast<double>(decode_one(bytes.data() + i * size));
  });
  return v;
}

IdxArray read_idx(const std::string& path, const IdxLimits& limits) {
  IdxReader in(path);
  const std::string where = kRead + path + ": ";

  std::uint8_t magic[4];
  if (const std::size_t got = in.read(magic, 4); got < 4) {
    throw FormatError(where + "truncated header: expected a 4-byte magic number, file has " +
                      std::to_string(got) + " bytes" + in.size_note());
  }
  if (magic[0] != 0 || magic[1] != 0) {
    throw FormatError(where + "bad magic number: expected 00 00 <type> <rank>, found " +
                      hex_byte(magic[0]) + " " + hex_byte(magic[1]) + " " + hex_byte(magic[2]) +
                      " " + hex_byte(magic[3]) + "; not an IDX file");
  }
  if (!is_known_type(magic[2])) {
    throw FormatError(where + "unknown element type code: expected one of 0x08 (ubyte), " +
                      "0x09 (byte), 0x0b (short), 0x0c (int), 0x0d (float), 0x0e (double), " +
                      "found 0x" + hex_byte(magic[2]));
  }
  IdxArray out;
  out.type = static_cast<IdxType>(magic[2]);
  const int rank = magic[3];
  if (rank < 1 || rank > Shape::kMaxRank) {
    throw FormatError(where + "unsupported rank: expected 1.." + std::to_string(Shape::kMaxRank) +
                      " (amari tensors have rank <= 4), found " + std::to_string(rank));
  }

  std::uint8_t dim_bytes[4 * Shape::kMaxRank];
  const auto dims_size = static_cast<std::size_t>(4 * rank);
  if (const std::size_t got = in.read(dim_bytes, dims_size); got < dims_size) {
    throw FormatError(where + "truncated header: rank " + std::to_string(rank) + " needs " +
                      std::to_string(4 + dims_size) + " header bytes, file has " +
                      std::to_string(4 + got) + in.size_note());
  }
  // Dimensions are unsigned 32-bit; Index holds any of them, and their product is bounded below.
  for (int i = 0; i < rank; ++i) out.dims.push_back(Index{load_be32(dim_bytes + 4 * i)});
  const Index count = checked_product(out.dims, kMaxIdxElements);
  if (count < 0) {
    throw SizeError(where + "header dimensions " + dims_str(out.dims) +
                    " promise more than 2^31 elements, the largest IDX array amari reads");
  }

  const std::size_t data_size =
      static_cast<std::size_t>(count) * static_cast<std::size_t>(idx_type_size(out.type));
  // The caller's limit, checked against the header's promise before any data is inflated.
  const std::uint64_t total = 4 + dims_size + std::uint64_t{data_size};
  if (total > limits.max_decompressed_bytes) {
    throw FormatError(where + "the header promises " + std::to_string(total) + " bytes" +
                      in.size_note() + " (dims " + dims_str(out.dims) + " of " +
                      idx_type_name(out.type) + "), more than the limit of " +
                      std::to_string(limits.max_decompressed_bytes) +
                      " bytes (IdxLimits::max_decompressed_bytes; pass a larger limit to "
                      "read_idx to read this file)");
  }
  while (out.bytes.size() < data_size) {
    const std::size_t have = out.bytes.size();
    const std::size_t want =
        std::min(data_size - have, std::clamp(have, kFirstChunkBytes, kIdxChunkBytes));
    out.bytes.resize(have + want);
    const std::size_t got = in.read(out.bytes.data() + have, want);
    if (got < want) {
      throw FormatError(where + "truncated: header promises " + std::to_string(data_size) +
                        " bytes of data, file has " + std::to_string(have + got) + in.size_note() +
                        "; dims " + dims_str(out.dims) + " of " + idx_type_name(out.type));
    }
  }

  // Bytes after the data mean the header and the data disagree: the file is not what it says.
  std::size_t trailing = 0;
  std::uint8_t scratch[4096];
  while (trailing <= kTrailingCountLimit) {
    const std::size_t got = in.read(scratch, sizeof scratch);
    trailing += got;
    if (got < sizeof scratch) break;
  }
  if (trailing > 0) {
    throw FormatError(where + "trailing bytes: expected the file to end after " +
                      std::to_string(in.position() - trailing) + " bytes (dims " +
                      dims_str(out.dims) + " of " + idx_type_name(out.type) + "), found " +
                      (trailing > kTrailingCountLimit ? "more than " : "") +
                      std::to_string(trailing) + " more" + in.size_note());
  }
  return out;
}

template <Real T>
Tensor<T> idx_to_tensor(const IdxArray& array) {
  array.validate();
  const Shape shape{std::span<const Index>(array.dims)};
  Tensor<T> out = Tensor<T>::uninitialized(shape);
  T* dst = out.data();
  with_decoder(array.type, [&](auto decode_one, int size) {
    const std::uint8_t* src = array.bytes.data();
    for (Index i = 0, n = shape.numel(); i < n; ++i)
      dst[i] = static_cast<T>(decode_one(src + i * size));
  });
  return out;
}

template <Real T>
Tensor<T> read_idx_images(const std::string& path, const IdxLimits& limits) {
  const IdxArray array = read_idx(path, limits);
  if (array.type != IdxType::u8 || array.dims.size() != 3) {
    throw FormatError("read_idx_images: " + path +
                      ": expected images of type ubyte (0x08) and rank 3 (count, rows, cols), "
                      "found type " +
                      type_desc(array.type) + " and rank " + std::to_string(array.dims.size()) +
                      " with dims " + dims_str(array.dims));
  }
  const Index count = array.dims[0];
  // With zero images read_idx accepts any rows and cols, whose product can overflow: bounded here.
  const Index pixels = checked_product({array.dims[1], array.dims[2]}, kMaxIdxElements);
  if (pixels < 0) {
    throw SizeError("read_idx_images: " + path + ": images of " + std::to_string(array.dims[1]) +
                    " x " + std::to_string(array.dims[2]) +
                    " pixels are more than 2^31 pixels each; dims " + dims_str(array.dims));
  }
  Tensor<T> out = Tensor<T>::uninitialized(Shape{count, pixels});
  T* dst = out.data();
  const std::uint8_t* src = array.bytes.data();
  // Division, not multiplication by 1/255, so 0 and 255 map exactly to 0 and 1 and every pixel
  // is the correctly rounded value of p/255.
  for (Index i = 0, n = count * pixels; i < n; ++i) dst[i] = static_cast<T>(src[i]) / T(255);
  return out;
}

std::vector<int> read_idx_labels(const std::string& path, const IdxLimits& limits) {
  const IdxArray array = read_idx(path, limits);
  if (array.type != IdxType::u8 || array.dims.size() != 1) {
    throw FormatError("read_idx_labels: " + path +
                      ": expected labels of type ubyte (0x08) and rank 1, found type " +
                      type_desc(array.type) + " and rank " + std::to_string(array.dims.size()) +
                      " with dims " + dims_str(array.dims));
  }
  return std::vector<int>(array.bytes.begin(), array.bytes.end());
}

void write_idx(const std::string& path, const IdxArray& array, IdxCompression compression) {
  const std::string where = kWrite + path + ": ";
  try {
    array.validate();
  } catch (const ValueError& e) {
    throw ValueError(where + e.what());
  }
  std::vector<std::uint8_t> header{0, 0, static_cast<std::uint8_t>(array.type),
                                   static_cast<std::uint8_t>(array.dims.size())};
  for (Index d : array.dims) {
    for (int shift = 24; shift >= 0; shift -= 8) {
      header.push_back(static_cast<std::uint8_t>(static_cast<std::uint64_t>(d) >> shift));
    }
  }
  AtomicFileWriter out(path, where);
  if (compression == IdxCompression::plain) {
    out.write(header.data(), header.size());
    out.write(array.bytes.data(), array.bytes.size());
  } else {
    GzipEncoder gzip(out, where);
    gzip.write(header.data(), header.size());
    gzip.write(array.bytes.data(), array.bytes.size());
    gzip.finish();
  }
  out.commit();
}

template Tensor<float> idx_to_tensor<float>(const IdxArray&);
template Tensor<double> idx_to_tensor<double>(const IdxArray&);
template Tensor<float> read_idx_images<float>(const std::string&, const IdxLimits&);
template Tensor<double> read_idx_images<double>(const std::string&, const IdxLimits&);

}  // namespace amari::nn
