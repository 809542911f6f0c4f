#include <amari/nn/safetensors.hpp>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstring>
#include <limits>
#include <set>
#include <utility>

#include <amari/nn/atomic_file.hpp>
#include <amari/nn/detail/little_endian.hpp>
#include <amari/nn/torch_layout.hpp>

namespace amari::nn {

namespace {

using Bytes = std::vector<std::uint8_t>;
using detail::get_le;
using detail::put_le;

constexpr std::uint64_t kMaxDim = static_cast<std::uint64_t>(kMaxElements);
constexpr const char* kMetadataKey = "__metadata__";
constexpr const char* kConventionKey = "amari.convention";

struct DTypeInfo {
  SafetensorsDType dtype;
  const char* name;
  std::size_t size;
};
constexpr DTypeInfo kDTypes[] = {
    {SafetensorsDType::BOOL, "BOOL", 1},       {SafetensorsDType::U8, "U8", 1},
    {SafetensorsDType::I8, "I8", 1},           {SafetensorsDType::F8_E5M2, "F8_E5M2", 1},
    {SafetensorsDType::F8_E4M3, "F8_E4M3", 1}, {SafetensorsDType::I16, "I16", 2},
    {SafetensorsDType::U16, "U16", 2},         {SafetensorsDType::F16, "F16", 2},
    {SafetensorsDType::BF16, "BF16", 2},       {SafetensorsDType::I32, "I32", 4},
    {SafetensorsDType::U32, "U32", 4},         {SafetensorsDType::F32, "F32", 4},
    {SafetensorsDType::F64, "F64", 8},         {SafetensorsDType::I64, "I64", 8},
    {SafetensorsDType::U64, "U64", 8},
};

// A string from a file, for messages: JSON-quoted, non-printable bytes escaped, cut at 80 bytes.
std::string quoted(const std::string& s) {
  constexpr char kDigits[] = "0123456789abcdef";
  std::string out = "\"";
  for (std::size_t i = 0; i < s.size() && i < 80; ++i) {
    const auto b = static_cast<unsigned char>(s[i]);
    if (b >= 0x20 && b < 0x7f && b != '"' && b != '\\') {
      out += static_cast<char>(b);
    } else {
      out += "\\x";
      out += kDigits[b >> 4];
      out += kDigits[b & 15];
    }
  }
  return out + (s.size() > 80 ? "\"..." : "\"");
}

std::string dims_str(const std::vector<std::uint64_t>& dims) {
  std::string s = "(";
  for (std::size_t i = 0; i < dims.size(); ++i) s += (i ? ", " : "") + std::to_string(dims[i]);
  return s + ")";
}

// The byte length of the UTF-8 sequence at p (strict: no overlong forms, no surrogates, at most
// U+10FFFF), or 0 if there is no valid sequence there.
std::size_t utf8_sequence(const std::uint8_t* p, const std::uint8_t* end) {
  const std::uint8_t b = *p;
  if (b < 0x80) return 1;
  std::size_t n;
  std::uint8_t lo = 0x80, hi = 0xbf;  // the allowed range of the second byte
  if (b >= 0xc2 && b <= 0xdf) {
    n = 2;
  } else if (b >= 0xe0 && b <= 0xef) {
    n = 3;
    if (b == 0xe0) lo = 0xa0;  // overlong
    if (b == 0xed) hi = 0x9f;  // surrogates
  } else if (b >= 0xf0 && b <= 0xf4) {
    n = 4;
    if (b == 0xf0) lo = 0x90;  // overlong
    if (b == 0xf4) hi = 0x8f;  // above U+10FFFF
  } else {
    return 0;
  }
  if (static_cast<std::size_t>(end - p) < n) return 0;
  if (p[1] < lo || p[1] > hi) return 0;
  for (std::size_t i = 2; i < n; ++i) {
    if (p[i] < 0x80 || p[i] > 0xbf) return 0;
  }
  return n;
}

// The offset of the first byte that is not valid UTF-8, or the size if all are.
std::size_t first_invalid_utf8(const std::uint8_t* p, std::size_t size) {
  const std::uint8_t* end = p + size;
  for (const std::uint8_t* q = p; q < end;) {
    const std::size_t n = utf8_sequence(q, end);
    if (n == 0) return static_cast<std::size_t>(q - p);
    q += n;
  }
  return size;
}

bool valid_utf8(const std::string& s) {
  return first_invalid_utf8(reinterpret_cast<const std::uint8_t*>(s.data()), s.size()) == s.size();
}

void append_utf8(std::string& out, std::uint32_t cp) {
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xc0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3f));
  } else if (cp < 0x10000) {
    out += static_cast<char>(0xe0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3f));
    out += static_cast<char>(0x80 | (cp & 0x3f));
  } else {
    out += static_cast<char>(0xf0 | (cp >> 18));
    out += static_cast<char>(0x80 | ((cp >> 12) & 0x3f));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3f));
    out += static_cast<char>(0x80 | (cp & 0x3f));
  }
}

// ---- the header's JSON
// ---------------------------------------------------------------------------

struct Header {
  std::map<std::string, SafetensorsEntry> entries;
  std::map<std::string, std::string> metadata;
};

// A recursive-descent parser for exactly the header's grammar (an object of tensor objects and an
// optional string map). The nesting is fixed, so there is no recursion a hostile header could
// deepen. The input is already known to be valid UTF-8.
class HeaderParser {
 public:
  HeaderParser(const std::uint8_t* p, std::size_t size, const std::string& where)
      : begin_(p), p_(p), end_(p + size), where_(where) {}

  Header parse() {
    Header h;
    if (p_ == end_ || *p_ != '{') fail("the header must begin with '{'");
    bool seen_metadata = false;
    object([&](std::string key) {
      if (key == kMetadataKey) {
        if (seen_metadata) fail("duplicate key \"__metadata__\"");
        seen_metadata = true;
        metadata(h.metadata);
        return;
      }
      if (h.entries.count(key)) fail("duplicate tensor name " + quoted(key));
      SafetensorsEntry e = tensor(key);
      h.entries.emplace(std::move(key), std::move(e));
    });
    skip_whitespace();
    if (p_ != end_)
      fail("unexpected bytes after the header's JSON object (only whitespace may follow it)");
    return h;
  }

 private:
  [[noreturn]] void fail(const std::string& what) const {
    throw FormatError(where_ + "bad JSON header at byte " + std::to_string(p_ - begin_) + " of " +
                      std::to_string(end_ - begin_) + ": " + what);
  }

  void skip_whitespace() {
    while (p_ != end_ && (*p_ == ' ' || *p_ == '\t' || *p_ == '\n' || *p_ == '\r')) ++p_;
  }

  // The next non-whitespace byte, not consumed; fails at the end of the header.
  char peek(const char* expected) {
    skip_whitespace();
    if (p_ == end_) fail(std::string("the header ends where ") + expected + " was expected");
    return static_cast<char>(*p_);
  }

  void expect(char c, const char* expected) {
    if (peek(expected) != c) fail(std::string("expected ") + expected + ", found " + found());
    ++p_;
  }

  std::string found() const {
    if (p_ == end_) return "the end of the header";
    const auto b = *p_;
    if (b >= 0x20 && b < 0x7f) return std::string("'") + static_cast<char>(b) + "'";
    return "byte " + std::to_string(b);
  }

  // '{' (key ':' value (',' key ':' value)*)? '}', calling member(key) to parse each value.
  template <class Member>
  void object(Member&& member) {
    expect('{', "'{'");
    if (peek("a key or '}'") == '}') {
      ++p_;
      return;
    }
    for (;;) {
      if (peek("a key") != '"') fail("expected a key (a string), found " + found());
      std::string key = string();
      expect(':', "':'");
      member(std::move(key));
      const char c = peek("',' or '}'");
      ++p_;
      if (c == '}') return;
      if (c != ',') {
        --p_;
        fail("expected ',' or '}', found " + found());
      }
    }
  }

  std::uint32_t hex4() {
    if (end_ - p_ < 4) fail("truncated \\u escape");
    std::uint32_t v = 0;
    for (int i = 0; i < 4; ++i, ++p_) {
      const char c = static_cast<char>(*p_);
      v <<= 4;
      if (c >= '0' && c <= '9')
        v |= static_cast<std::uint32_t>(c - '0');
      else if (c >= 'a' && c <= 'f')
        v |= static_cast<std::uint32_t>(c - 'a' + 10);
      else if (c >= 'A' && c <= 'F')
        v |= static_cast<std::uint32_t>(c - 'A' + 10);
      else
        fail("bad hex digit in a \\u escape");
    }
    return v;
  }

  std::string string() {
    expect('"', "a string");
    std::string out;
    for (;;) {
      if (p_ == end_) fail("unterminated string");
      const std::uint8_t b = *p_;
      if (b == '"') {
        ++p_;
        return out;
      }
      if (b < 0x20)
        fail("control character " + std::to_string(b) + " in a string (must be escaped)");
      if (b != '\\') {
        out += static_cast<char>(b);
        ++p_;
        continue;
      }
      ++p_;
      if (p_ == end_) fail("unterminated escape in a string");
      const char e = static_cast<char>(*p_++);
      switch (e) {
        case '"':
          out += '"';
          break;
        case '\\':
          out += '\\';
          break;
        case '/':
          out += '/';
          break;
        case 'b':
          out += '\b';
          break;
        case 'f':
          out += '\f';
          break;
        case 'n':
          out += '\n';
          break;
        case 'r':
          out += '\r';
          break;
        case 't':
          out += '\t';
          break;
        case 'u': {
          std::uint32_t cp = hex4();
          if (cp >= 0xdc00 && cp <= 0xdfff) fail("lone low surrogate in a \\u escape");
          if (cp >= 0xd800 && cp <= 0xdbff) {
            if (end_ - p_ < 2 || p_[0] != '\\' || p_[1] != 'u')
              fail("lone high surrogate in a \\u escape");
            p_ += 2;
            const std::uint32_t low = hex4();
            if (low < 0xdc00 || low > 0xdfff) fail("a high surrogate not followed by a low one");
            cp = 0x10000 + ((cp - 0xd800) << 10) + (low - 0xdc00);
          }
          append_utf8(out, cp);
          break;
        }
        default:
          --p_;
          fail(std::string("invalid escape \\") +
               (e >= 0x20 && e < 0x7f ? std::string(1, e) : "?"));
      }
    }
  }

  std::uint64_t integer(const std::string& what) {
    const char c = peek(what.c_str());
    if (c == '-') fail(what + " is negative");
    if (c < '0' || c > '9')
      fail("expected " + what + " (a non-negative integer), found " + found());
    const std::uint8_t* start = p_;
    std::uint64_t v = 0;
    while (p_ != end_ && *p_ >= '0' && *p_ <= '9') {
      const std::uint64_t d = *p_ - '0';
      if (v > (UINT64_MAX - d) / 10) fail(what + " does not fit in 64 bits");
      v = v * 10 + d;
      ++p_;
    }
    if (*start == '0' && p_ - start > 1) {
      p_ = start;
      fail(what + " has a leading zero");
    }
    if (p_ != end_ && (*p_ == '.' || *p_ == 'e' || *p_ == 'E')) fail(what + " is not an integer");
    return v;
  }

  // '[' integer (',' integer)* ']' or '[' ']'.
  template <class Each>
  void integer_array(const std::string& what, Each&& each) {
    expect('[', ("'[' (" + what + " is an array)").c_str());
    if (peek("an integer or ']'") == ']') {
      ++p_;
      return;
    }
    for (;;) {
      each(integer(what));
      const char c = peek("',' or ']'");
      if (c == ']') {
        ++p_;
        return;
      }
      if (c != ',') fail("expected ',' or ']' in " + what + ", found " + found());
      ++p_;
    }
  }

  SafetensorsEntry tensor(const std::string& name) {
    const std::string of = " of tensor " + quoted(name);
    if (peek("a tensor object") != '{') {
      fail("the value" + of +
           " must be an object {\"dtype\", \"shape\", \"data_offsets\"}, found " + found());
    }
    SafetensorsEntry e;
    bool has_dtype = false, has_shape = false, has_offsets = false;
    object([&](const std::string& field) {
      if (field == "dtype") {
        if (has_dtype) fail("duplicate field \"dtype\"" + of);
        has_dtype = true;
        const std::string d = string();
        const auto* it = std::find_if(std::begin(kDTypes), std::end(kDTypes),
                                      [&](const DTypeInfo& i) { return d == i.name; });
        if (it == std::end(kDTypes)) fail("unknown dtype " + quoted(d) + of);
        e.dtype = it->dtype;
      } else if (field == "shape") {
        if (has_shape) fail("duplicate field \"shape\"" + of);
        has_shape = true;
        integer_array("a dimension" + of, [&](std::uint64_t d) {
          if (d > kMaxDim) fail("dimension " + std::to_string(d) + of + " is above 2^48");
          e.shape.push_back(d);
        });
      } else if (field == "data_offsets") {
        if (has_offsets) fail("duplicate field \"data_offsets\"" + of);
        has_offsets = true;
        std::vector<std::uint64_t> offsets;
        integer_array("a data offset" + of, [&](std::uint64_t v) {
          if (offsets.size() == 2) fail("data_offsets" + of + " has more than 2 entries");
          offsets.push_back(v);
        });
        if (offsets.size() != 2)
          fail("data_offsets" + of + " must have 2 entries, has " + std::to_string(offsets.size()));
        e.begin = offsets[0];
        e.end = offsets[1];
      } else {
        fail("unknown field " + quoted(field) + of + " (expected dtype, shape, data_offsets)");
      }
    });
    if (!has_dtype) fail("tensor " + quoted(name) + " has no \"dtype\"");
    if (!has_shape) fail("tensor " + quoted(name) + " has no \"shape\"");
    if (!has_offsets) fail("tensor " + quoted(name) + " has no \"data_offsets\"");
    return e;
  }

  void metadata(std::map<std::string, std::string>& out) {
    if (peek("the metadata object") != '{')
      fail("\"__metadata__\" must be an object of strings, found " + found());
    object([&](std::string key) {
      if (out.count(key)) fail("duplicate metadata key " + quoted(key));
      if (peek("a metadata value") != '"') {
        fail("metadata value of " + quoted(key) + " must be a string, found " + found());
      }
      out.emplace(std::move(key), string());
    });
  }

  const std::uint8_t* begin_;
  const std::uint8_t* p_;
  const std::uint8_t* end_;
  const std::string& where_;
};

// Checks that the entries tile the data section [0, data_bytes) exactly (see the header comment).
void check_offsets(const std::map<std::string, SafetensorsEntry>& entries, std::uint64_t data_bytes,
                   const std::string& where) {
  std::vector<std::pair<const std::string*, const SafetensorsEntry*>> order;
  for (const auto& [name, e] : entries) order.emplace_back(&name, &e);
  std::sort(order.begin(), order.end(), [](const auto& a, const auto& b) {
    return std::pair(a.second->begin, a.second->end) < std::pair(b.second->begin, b.second->end);
  });
  std::uint64_t next = 0;
  const std::string* previous = nullptr;
  for (const auto& [name, e] : order) {
    const std::string offsets =
        "data_offsets [" + std::to_string(e->begin) + ", " + std::to_string(e->end) + "]";
    const std::string which = "tensor " + quoted(*name) + " with " + offsets;
    if (e->end < e->begin) throw FormatError(where + which + ": the end is before the beginning");
    if (e->end > data_bytes) {
      throw FormatError(where + which + " is out of range: the data section has only " +
                        std::to_string(data_bytes) + " bytes (a truncated file?)");
    }
    if (e->begin < next) {
      throw FormatError(where + which + " overlaps tensor " + quoted(*previous) +
                        ", which ends at byte " + std::to_string(next));
    }
    if (e->begin > next) {
      throw FormatError(where + "the tensors do not tile the data section: a gap of " +
                        std::to_string(e->begin - next) + " bytes at byte " + std::to_string(next) +
                        " before " + which);
    }
    // The byte count size x (product of the shape), without overflow; a 0 in the shape makes it
    // 0 whatever the other dimensions are.
    const std::uint64_t span = e->end - e->begin;
    std::uint64_t bytes = e->numel() == 0 ? 0 : safetensors_dtype_size(e->dtype);
    bool fits = true;
    for (std::uint64_t d : e->shape) {
      if (bytes == 0) break;
      if (bytes > UINT64_MAX / d) {
        fits = false;
        break;
      }
      bytes *= d;
    }
    if (!fits || bytes != span) {
      throw FormatError(where + "tensor " + quoted(*name) + " of shape " + dims_str(e->shape) +
                        " and dtype " + safetensors_dtype_name(e->dtype) + " needs " +
                        (fits ? std::to_string(bytes) : std::string("more than 2^64")) +
                        " bytes, but its " + offsets + " span " + std::to_string(span));
    }
    next = e->end;
    previous = name;
  }
  if (next != data_bytes) {
    throw FormatError(where + "the tensors do not tile the data section: they end at byte " +
                      std::to_string(next) + ", but the data section has " +
                      std::to_string(data_bytes) + " bytes (" + std::to_string(data_bytes - next) +
                      " bytes are not part of any tensor)");
  }
}

// ---- element conversions ------------------------------------------------------------------------

// IEEE binary16 -> T, exact (every half value is a float). NaN payloads are kept, shifted into the
// high bits of T's significand (what hardware conversions do).
template <Real T>
T from_f16(std::uint16_t h) {
  const bool negative = (h & 0x8000) != 0;
  const int exponent = (h >> 10) & 0x1f;
  const std::uint32_t mantissa = h & 0x3ff;
  if (exponent == 0x1f) {
    if (mantissa == 0)
      return negative ? -std::numeric_limits<T>::infinity() : std::numeric_limits<T>::infinity();
    if constexpr (sizeof(T) == 4) {
      return std::bit_cast<float>((negative ? 0x80000000u : 0u) | 0x7f800000u | (mantissa << 13));
    } else {
      return std::bit_cast<double>((negative ? std::uint64_t{1} << 63 : 0) |
                                   (std::uint64_t{0x7ff} << 52) | (std::uint64_t{mantissa} << 42));
    }
  }
  // Normal: (1024 + m) 2^(e - 25); subnormal (e = 0): m 2^-24. Both exact in T.
  const T magnitude = exponent == 0 ? std::ldexp(static_cast<T>(mantissa), -24)
                                    : std::ldexp(static_cast<T>(1024 + mantissa), exponent - 25);
  return negative ? -magnitude : magnitude;
}

// bfloat16 -> float is the upper half of a float's bits: exact, payloads kept.
template <Real T>
T from_bf16(std::uint16_t b) {
  return static_cast<T>(std::bit_cast<float>(std::uint32_t{b} << 16));
}

// double -> T, rounding to nearest; for float, values beyond the range become +-inf explicitly
// (a C++ conversion of an out-of-range value is undefined).
template <Real T>
T from_f64(double v) {
  if constexpr (sizeof(T) == 8) {
    return v;
  } else {
    // The midpoint between FLT_MAX and 2^128: from there on, round-to-nearest gives infinity.
    constexpr double kOverflow = 340282356779733661637539395458142568448.0;  // 2^128 - 2^103
    if (std::isnan(v)) return static_cast<float>(v);
    if (v >= kOverflow) return std::numeric_limits<float>::infinity();
    if (v <= -kOverflow) return -std::numeric_limits<float>::infinity();
    if (v > std::numeric_limits<float>::max()) return std::numeric_limits<float>::max();
    if (v < -std::numeric_limits<float>::max()) return -std::numeric_limits<float>::max();
    return static_cast<float>(v);
  }
}

template <Real T>
void decode(SafetensorsDType dtype, const std::uint8_t* src, std::size_t n, T* dst) {
  switch (dtype) {
    case SafetensorsDType::F32:
      for (std::size_t i = 0; i < n; ++i) {
        dst[i] = static_cast<T>(
            std::bit_cast<float>(static_cast<std::uint32_t>(get_le(src + 4 * i, 4))));
      }
      break;
    case SafetensorsDType::F64:
      for (std::size_t i = 0; i < n; ++i)
        dst[i] = from_f64<T>(std::bit_cast<double>(get_le(src + 8 * i, 8)));
      break;
    case SafetensorsDType::F16:
      for (std::size_t i = 0; i < n; ++i)
        dst[i] = from_f16<T>(static_cast<std::uint16_t>(get_le(src + 2 * i, 2)));
      break;
    case SafetensorsDType::BF16:
      for (std::size_t i = 0; i < n; ++i)
        dst[i] = from_bf16<T>(static_cast<std::uint16_t>(get_le(src + 2 * i, 2)));
      break;
    default:
      break;  // refused by the caller
  }
}

bool is_real(SafetensorsDType d) {
  return d == SafetensorsDType::F32 || d == SafetensorsDType::F64 || d == SafetensorsDType::F16 ||
         d == SafetensorsDType::BF16;
}

bool is_integer(SafetensorsDType d) {
  switch (d) {
    case SafetensorsDType::BOOL:
    case SafetensorsDType::U8:
    case SafetensorsDType::I8:
    case SafetensorsDType::I16:
    case SafetensorsDType::U16:
    case SafetensorsDType::I32:
    case SafetensorsDType::U32:
    case SafetensorsDType::I64:
      return true;
    default:
      return false;
  }
}

}  // namespace

// ---- dtypes and entries -------------------------------------------------------------------------

const char* safetensors_dtype_name(SafetensorsDType dtype) {
  for (const DTypeInfo& i : kDTypes) {
    if (i.dtype == dtype) return i.name;
  }
  return "unknown";
}

std::size_t safetensors_dtype_size(SafetensorsDType dtype) {
  for (const DTypeInfo& i : kDTypes) {
    if (i.dtype == dtype) return i.size;
  }
  return 1;
}

std::uint64_t SafetensorsEntry::numel() const {
  if (std::find(shape.begin(), shape.end(), 0) != shape.end()) return 0;
  std::uint64_t n = 1;
  for (std::uint64_t d : shape) n = n > UINT64_MAX / d ? UINT64_MAX : n * d;  // saturates
  return n;
}

// ---- reading ------------------------------------------------------------------------------------

SafetensorsFile SafetensorsFile::read(const std::string& path, const SafetensorsLimits& limits) {
  const std::string where = "safetensors: " + path + ": ";
  return parse(read_whole_file(path, where, limits.max_file_bytes,
                               " bytes (SafetensorsLimits::max_file_bytes; pass larger limits to "
                               "SafetensorsFile::read or load_safetensors to read this file)"),
               path, limits);
}

SafetensorsFile SafetensorsFile::parse(std::vector<std::uint8_t> bytes, const std::string& source,
                                       const SafetensorsLimits& limits) {
  const std::string where = "safetensors: " + source + ": ";
  if (bytes.size() > limits.max_file_bytes) {
    throw FormatError(where + "the file has " + std::to_string(bytes.size()) +
                      " bytes, more than the limit of " + std::to_string(limits.max_file_bytes) +
                      " (SafetensorsLimits::max_file_bytes)");
  }
  if (bytes.size() < 8) {
    throw FormatError(
        where + "truncated: a safetensors file starts with an 8-byte header length, the file has " +
        std::to_string(bytes.size()) + " bytes");
  }
  const std::uint64_t n = get_le(bytes.data(), 8);
  if (n > limits.max_header_bytes) {
    throw FormatError(where + "header too large: " + std::to_string(n) + " bytes, the limit is " +
                      std::to_string(limits.max_header_bytes) +
                      " (SafetensorsLimits::max_header_bytes)");
  }
  if (n > bytes.size() - 8) {
    throw FormatError(where + "truncated: the header length is " + std::to_string(n) +
                      " bytes, but only " + std::to_string(bytes.size() - 8) +
                      " bytes follow the length");
  }
  const std::uint8_t* text = bytes.data() + 8;
  const std::size_t bad = first_invalid_utf8(text, static_cast<std::size_t>(n));
  if (bad != n) {
    throw FormatError(where + "the header is not valid UTF-8 (byte " + std::to_string(bad) +
                      " of " + std::to_string(n) + ")");
  }
  Header h = HeaderParser(text, static_cast<std::size_t>(n), where).parse();
  const std::size_t data_start = 8 + static_cast<std::size_t>(n);
  check_offsets(h.entries, bytes.size() - data_start, where);

  SafetensorsFile f;
  f.source_ = source;
  f.bytes_ = std::move(bytes);
  f.data_start_ = data_start;
  f.entries_ = std::move(h.entries);
  f.metadata_ = std::move(h.metadata);
  return f;
}

std::vector<std::string> SafetensorsFile::names() const {
  std::vector<std::pair<std::pair<std::uint64_t, std::uint64_t>, std::string>> order;
  for (const auto& [name, e] : entries_) order.push_back({{e.begin, e.end}, name});
  std::sort(order.begin(), order.end());
  std::vector<std::string> out;
  for (auto& o : order) out.push_back(std::move(o.second));
  return out;
}

const SafetensorsEntry& SafetensorsFile::entry(const std::string& name) const {
  const auto it = entries_.find(name);
  if (it == entries_.end()) {
    throw ValueError("safetensors: " + source_ + ": no tensor named " + quoted(name));
  }
  return it->second;
}

std::span<const std::uint8_t> SafetensorsFile::data(const std::string& name) const {
  const SafetensorsEntry& e = entry(name);
  return {bytes_.data() + data_start_ + e.begin, static_cast<std::size_t>(e.end - e.begin)};
}

template <Real T>
Tensor<T> SafetensorsFile::get(const std::string& name) const {
  const SafetensorsEntry& e = entry(name);
  const std::string which = "safetensors: " + source_ + ": tensor " + quoted(name);
  if (!is_real(e.dtype)) {
    throw DTypeError(which + " has dtype " + safetensors_dtype_name(e.dtype) +
                     ", expected F32, F64, F16 or BF16 to read it as " + dtype_name(dtype_of<T>));
  }
  if (e.shape.size() > static_cast<std::size_t>(Shape::kMaxRank)) {
    throw ShapeError(which + " has shape " + dims_str(e.shape) + " of rank " +
                     std::to_string(e.shape.size()) + ", amari tensors have rank 0 to 4");
  }
  std::vector<Index> dims(e.shape.begin(), e.shape.end());  // each <= 2^48 (checked when parsed)
  Tensor<T> out = Tensor<T>::uninitialized(Shape(std::span<const Index>(dims)));
  decode(e.dtype, bytes_.data() + data_start_ + e.begin, static_cast<std::size_t>(out.size()),
         out.data());
  return out;
}

std::vector<std::int64_t> SafetensorsFile::get_integers(const std::string& name) const {
  const SafetensorsEntry& e = entry(name);
  if (!is_integer(e.dtype)) {
    throw DTypeError("safetensors: " + source_ + ": tensor " + quoted(name) + " has dtype " +
                     safetensors_dtype_name(e.dtype) +
                     ", expected an integer dtype (I64, I32, ...)");
  }
  const std::size_t size = safetensors_dtype_size(e.dtype);
  const auto n = static_cast<std::size_t>((e.end - e.begin) / size);
  const bool is_signed = e.dtype == SafetensorsDType::I8 || e.dtype == SafetensorsDType::I16 ||
                         e.dtype == SafetensorsDType::I32 || e.dtype == SafetensorsDType::I64;
  const std::uint8_t* src = bytes_.data() + data_start_ + e.begin;
  std::vector<std::int64_t> out(n);
  for (std::size_t i = 0; i < n; ++i) {
    std::uint64_t v = get_le(src + i * size, static_cast<int>(size));
    if (is_signed && size < 8 && (v >> (8 * size - 1)) != 0)
      v |= ~std::uint64_t{0} << (8 * size);  // sign-extend
    out[i] = static_cast<std::int64_t>(v);
  }
  return out;
}

// ---- writing ------------------------------------------------------------------------------------

void SafetensorsWriter::check_name(const std::string& name) const {
  if (name == kMetadataKey)
    throw ValueError("SafetensorsWriter: \"__metadata__\" cannot name a tensor");
  if (!valid_utf8(name))
    throw ValueError("SafetensorsWriter: the tensor name " + quoted(name) + " is not valid UTF-8");
  for (const Item& i : items_) {
    if (i.name == name)
      throw ValueError("SafetensorsWriter: a tensor named " + quoted(name) + " was already added");
  }
}

template <Real T>
void SafetensorsWriter::add(const std::string& name, const Tensor<T>& tensor) {
  check_name(name);
  if (!tensor.defined())
    throw ValueError("SafetensorsWriter: the tensor " + quoted(name) + " is undefined");
  std::vector<std::uint64_t> shape(tensor.shape().dims().begin(), tensor.shape().dims().end());
  items_.push_back({name, sizeof(T) == 4 ? SafetensorsDType::F32 : SafetensorsDType::F64,
                    std::move(shape), tensor});
}

void SafetensorsWriter::add_int64(const std::string& name, const std::vector<std::uint64_t>& shape,
                                  std::vector<std::int64_t> values) {
  check_name(name);
  std::uint64_t n = 1;
  for (std::uint64_t d : shape) {
    if (d > kMaxDim || (d != 0 && n > kMaxDim / d)) {
      throw ValueError("SafetensorsWriter: the shape " + dims_str(shape) + " of " + quoted(name) +
                       " is too large");
    }
    n *= d;
  }
  if (n != values.size()) {
    throw ValueError("SafetensorsWriter: the shape " + dims_str(shape) + " of " + quoted(name) +
                     " needs " + std::to_string(n) + " values, got " +
                     std::to_string(values.size()));
  }
  items_.push_back({name, SafetensorsDType::I64, shape, std::move(values)});
}

void SafetensorsWriter::set_metadata(const std::string& key, const std::string& value) {
  if (!valid_utf8(key) || !valid_utf8(value)) {
    throw ValueError("SafetensorsWriter: the metadata entry " + quoted(key) +
                     " is not valid UTF-8");
  }
  metadata_[key] = value;
}

std::vector<const SafetensorsWriter::Item*> SafetensorsWriter::data_order() const {
  std::vector<const Item*> order;
  for (const Item& i : items_) order.push_back(&i);
  std::stable_sort(order.begin(), order.end(), [](const Item* a, const Item* b) {
    return safetensors_dtype_size(a->dtype) > safetensors_dtype_size(b->dtype);
  });
  return order;
}

namespace {

std::string json_string(const std::string& s) {
  constexpr char kDigits[] = "0123456789abcdef";
  std::string out = "\"";
  for (const char c : s) {
    const auto b = static_cast<unsigned char>(c);
    if (c == '"' || c == '\\') {
      out += '\\';
      out += c;
    } else if (b < 0x20) {
      out += "\\u00";
      out += kDigits[b >> 4];
      out += kDigits[b & 15];
    } else {
      out += c;
    }
  }
  return out + "\"";
}

std::uint64_t item_bytes(SafetensorsDType dtype, const std::vector<std::uint64_t>& shape) {
  std::uint64_t n = 1;
  for (std::uint64_t d : shape) n *= d;
  return n * safetensors_dtype_size(dtype);
}

}  // namespace

std::string SafetensorsWriter::header() const {
  std::string h = "{";
  if (!metadata_.empty()) {
    h += json_string(kMetadataKey) + ":{";
    bool first = true;
    for (const auto& [k, v] : metadata_) {
      h += (first ? "" : ",") + json_string(k) + ":" + json_string(v);
      first = false;
    }
    h += "}";
  }
  std::uint64_t offset = 0;
  for (const Item* i : data_order()) {
    if (h.size() > 1) h += ",";
    h += json_string(i->name) + ":{\"dtype\":\"" + safetensors_dtype_name(i->dtype) +
         "\",\"shape\":[";
    for (std::size_t a = 0; a < i->shape.size(); ++a)
      h += (a ? "," : "") + std::to_string(i->shape[a]);
    const std::uint64_t end = offset + item_bytes(i->dtype, i->shape);
    h += "],\"data_offsets\":[" + std::to_string(offset) + "," + std::to_string(end) + "]}";
    offset = end;
  }
  h += "}";
  // Padded with spaces so the data section starts at a multiple of 8 (the reference writer does).
  h.append((8 - h.size() % 8) % 8, ' ');
  return h;
}

namespace {

// Calls sink(bytes, n) with the little-endian encoding of the values, in pieces of bounded size.
template <class V, class Sink>
void encode(const V* values, std::size_t n, Sink&& sink) {
  if constexpr (std::endian::native == std::endian::little) {
    sink(reinterpret_cast<const std::uint8_t*>(values), n * sizeof(V));
  } else {
    using Bits = std::conditional_t<sizeof(V) == 4, std::uint32_t, std::uint64_t>;
    Bytes buf;
    constexpr std::size_t kPiece = 8192;
    for (std::size_t begin = 0; begin < n; begin += kPiece) {
      buf.clear();
      for (std::size_t i = begin; i < std::min(n, begin + kPiece); ++i) {
        put_le(buf, std::bit_cast<Bits>(values[i]), sizeof(V));
      }
      sink(buf.data(), buf.size());
    }
  }
}

}  // namespace

std::vector<std::uint8_t> SafetensorsWriter::bytes() const {
  const std::string h = header();
  Bytes out;
  put_le(out, h.size(), 8);
  out.insert(out.end(), h.begin(), h.end());
  const auto sink = [&](const std::uint8_t* p, std::size_t n) { out.insert(out.end(), p, p + n); };
  for (const Item* i : data_order()) {
    std::visit([&](const auto& v) { encode(v.data(), static_cast<std::size_t>(v.size()), sink); },
               i->values);
  }
  return out;
}

void SafetensorsWriter::write(const std::string& path) const {
  const std::string h = header();
  Bytes length;
  put_le(length, h.size(), 8);
  AtomicFileWriter out(path, "safetensors: " + path + ": ");
  out.write(length.data(), length.size());
  out.write(h.data(), h.size());
  const auto sink = [&](const std::uint8_t* p, std::size_t n) { out.write(p, n); };
  for (const Item* i : data_order()) {
    std::visit([&](const auto& v) { encode(v.data(), static_cast<std::size_t>(v.size()), sink); },
               i->values);
  }
  out.commit();
}

// ---- models -------------------------------------------------------------------------------------

namespace {

const char* convention_name(Convention c) {
  return c == Convention::pytorch ? "pytorch" : "amari";
}

// One tensor a model file holds: its name, its amari shape, its layout in the file, and its place
// in the model (a view of the parameters or the state).
template <Real T>
struct Slot {
  std::string name;
  Shape shape;
  TorchLayout layout = TorchLayout::same;
  Tensor<T> view;
};

template <Real T>
std::vector<Slot<T>> model_slots(const Model<T>& model, Convention convention) {
  std::vector<Slot<T>> slots;
  for (std::size_t i = 0; i < model.layout().size(); ++i) {
    const ParamInfo& p = model.layout()[i];
    slots.push_back({p.name, p.shape,
                     convention == Convention::pytorch ? p.torch_layout : TorchLayout::same,
                     model.parameter_views()[i]});
  }
  for (const StateInfo& s : model.state_layout()) {
    slots.push_back({s.name, s.shape, TorchLayout::same, model.state().view(s.offset, s.shape)});
  }
  return slots;
}

// The prefixes p for which the model has state "<p>running_mean" and "<p>running_var": batch
// norms, which PyTorch gives a "<p>num_batches_tracked" buffer too.
template <Real T>
std::vector<std::string> batch_norm_prefixes(const Model<T>& model) {
  static const std::string kMean = "running_mean", kVar = "running_var";
  std::set<std::string> names;
  for (const StateInfo& s : model.state_layout()) names.insert(s.name);
  std::vector<std::string> out;
  for (const StateInfo& s : model.state_layout()) {
    if (s.name.size() >= kMean.size() &&
        s.name.compare(s.name.size() - kMean.size(), kMean.size(), kMean) == 0) {
      const std::string prefix = s.name.substr(0, s.name.size() - kMean.size());
      if (names.count(prefix + kVar)) out.push_back(prefix);
    }
  }
  return out;
}

std::string shape_of(const std::vector<std::uint64_t>& dims) {
  return dims_str(dims);
}

std::string name_list(const std::vector<std::string>& names) {
  std::string s;
  for (std::size_t i = 0; i < names.size() && i < 8; ++i) s += (i ? ", " : "") + quoted(names[i]);
  if (names.size() > 8) s += ", ... (" + std::to_string(names.size()) + " in all)";
  return s;
}

}  // namespace

template <Real T>
void save_safetensors(const Model<T>& model, const std::string& path, Convention convention) {
  SafetensorsWriter w;
  w.set_metadata(kConventionKey, convention_name(convention));
  if (convention == Convention::pytorch) w.set_metadata("format", "pt");
  for (const Slot<T>& s : model_slots(model, convention)) {
    w.add(s.name, convention == Convention::pytorch ? to_torch_layout(s.view, s.layout) : s.view);
  }
  if (convention == Convention::pytorch) {
    for (const std::string& prefix : batch_norm_prefixes(model)) {
      w.add_int64(prefix + "num_batches_tracked", {}, {0});
    }
  }
  w.write(path);
}

template <Real T>
void load_safetensors(Model<T>& model, const std::string& path, Convention convention,
                      const SafetensorsLimits& limits) {
  const std::string where = "load_safetensors: " + path + ": ";
  const SafetensorsFile file = SafetensorsFile::read(path, limits);
  const auto tag = file.metadata().find(kConventionKey);
  if (tag != file.metadata().end() && tag->second != convention_name(convention)) {
    throw ValueError(where + "the file was written in the " + quoted(tag->second) +
                     " convention (metadata \"amari.convention\"), loading it in the \"" +
                     convention_name(convention) + "\" convention would misread its layouts");
  }

  // Names: every model tensor present, nothing else (but PyTorch's batch counters).
  const std::vector<Slot<T>> slots = model_slots(model, convention);
  std::set<std::string> expected;
  for (const Slot<T>& s : slots) expected.insert(s.name);
  std::set<std::string> counters;
  if (convention == Convention::pytorch) {
    for (const std::string& prefix : batch_norm_prefixes(model))
      counters.insert(prefix + "num_batches_tracked");
  }
  std::vector<std::string> missing, unexpected;
  for (const Slot<T>& s : slots) {
    if (!file.contains(s.name)) missing.push_back(s.name);
  }
  for (const std::string& name : file.names()) {
    if (!expected.count(name) && !counters.count(name)) unexpected.push_back(name);
  }
  if (!missing.empty() || !unexpected.empty()) {
    std::string msg = where + "the file's tensors do not match the model's (" +
                      convention_name(convention) + " convention):";
    if (!missing.empty()) msg += " missing from the file: " + name_list(missing) + ";";
    if (!unexpected.empty()) msg += " not in the model: " + name_list(unexpected) + ";";
    msg.pop_back();
    throw ShapeError(msg);
  }

  // Dtypes and shapes, then the conversion into amari's layout, still without touching the model.
  for (const std::string& name : counters) {
    if (!file.contains(name)) continue;
    const SafetensorsEntry& e = file.entry(name);
    if (!is_integer(e.dtype)) {
      throw DTypeError(where + "batch norm counter " + quoted(name) + " has dtype " +
                       safetensors_dtype_name(e.dtype) +
                       ", expected an integer (PyTorch writes I64)");
    }
    if (!e.shape.empty()) {
      throw ShapeError(where + "batch norm counter " + quoted(name) + " has shape " +
                       shape_of(e.shape) + ", expected a scalar ()");
    }
  }
  std::vector<Tensor<T>> values;
  values.reserve(slots.size());
  for (const Slot<T>& s : slots) {
    const SafetensorsEntry& e = file.entry(s.name);
    if (!is_real(e.dtype)) {
      throw DTypeError(where + "tensor " + quoted(s.name) + " has dtype " +
                       safetensors_dtype_name(e.dtype) + ", expected F32, F64, F16 or BF16");
    }
    const Shape want = torch_shape(s.shape, s.layout);
    const std::span<const Index> dims = want.dims();
    if (!std::equal(e.shape.begin(), e.shape.end(), dims.begin(), dims.end(),
                    [](std::uint64_t a, Index b) { return a == static_cast<std::uint64_t>(b); })) {
      std::string msg = where + "tensor " + quoted(s.name) + " has shape " + shape_of(e.shape) +
                        " in the file, expected " + want.str();
      if (s.layout != TorchLayout::same) {
        msg += std::string(" (PyTorch's layout of amari's ") + s.shape.str() + ", \"" +
               torch_layout_name(s.layout) + "\")";
      }
      throw ShapeError(msg);
    }
    values.push_back(from_torch_layout(file.get<T>(s.name), s.layout, s.shape));
  }

  // Everything is checked and converted: copying cannot fail, so the model is either fully
  // updated or (after any exception above) untouched.
  for (std::size_t i = 0; i < slots.size(); ++i) {
    Tensor<T> view = slots[i].view;
    view.copy_from(values[i]);
  }
}

template Tensor<float> SafetensorsFile::get<float>(const std::string&) const;
template Tensor<double> SafetensorsFile::get<double>(const std::string&) const;
template void SafetensorsWriter::add<float>(const std::string&, const Tensor<float>&);
template void SafetensorsWriter::add<double>(const std::string&, const Tensor<double>&);
template void save_safetensors<float>(const Model<float>&, const std::string&, Convention);
template void save_safetensors<double>(const Model<double>&, const std::string&, Convention);
template void load_safetensors<float>(Model<float>&, const std::string&, Convention,
                                      const SafetensorsLimits&);
template void load_safetensors<double>(Model<double>&, const std::string&, Convention,
                                       const SafetensorsLimits&);

}  // namespace amari::nn
