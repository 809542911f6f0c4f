// A minimal JSON reader, enough for Google Benchmark's --benchmark_format=json output: objects,
// arrays, strings (with the standard escapes; \u escapes of ASCII only), numbers, true, false,
// null. Used by bench_report; not a general-purpose or validating parser.
#pragma once

#include <cctype>
#include <cmath>
#include <cstdlib>
#include <map>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

namespace amari::bench::json {

/// A parsed JSON value; `kind` says which member holds it.
struct Value {
  enum class Kind { null, boolean, number, string, array, object } kind = Kind::null;
  bool boolean = false;
  double number = 0;
  std::string string;
  std::vector<Value> array;
  std::map<std::string, Value> object;

  /// The member `key` of an object, or nullptr when absent or when this is not an object.
  const Value* find(const std::string& key) const {
    if (kind != Kind::object) return nullptr;
    const auto it = object.find(key);
    return it == object.end() ? nullptr : &it->second;
  }
};

/// Parses a whole document; throws std::runtime_error with the byte offset on malformed input.
class Parser {
 public:
  explicit Parser(const std::string& text) : s_(text) {}

  Value parse() {
    Value v = value();
    skip_space();
    if (pos_ != s_.size()) fail("trailing characters");
    return v;
  }

 private:
  [[noreturn]] void fail(const std::string& what) const {
    throw std::runtime_error("json: " + what + " at byte " + std::to_string(pos_));
  }
  void skip_space() {
    while (pos_ < s_.size() && std::isspace(static_cast<unsigned char>(s_[pos_]))) ++pos_;
  }
  char peek() {
    skip_space();
    if (pos_ >= s_.size()) fail("unexpected end of input");
    return s_[pos_];
  }
  void expect(char c) {
    if (peek() != c) fail(std::string("expected '") + c + "'");
    ++pos_;
  }
  bool literal(const char* word) {
    const std::string w(word);
    if (s_.compare(pos_, w.size(), w) != 0) return false;
    pos_ += w.size();
    return true;
  }

  Value value() {
    Value v;
    const char c = peek();
    if (c == '{') {
      v.kind = Value::Kind::object;
      ++pos_;
      if (peek() == '}') return ++pos_, v;
      for (;;) {
        std::string key = string();
        expect(':');
        v.object[key] = value();
        if (peek() == ',') {
          ++pos_;
          continue;
        }
        expect('}');
        return v;
      }
    }
    if (c == '[') {
      v.kind = Value::Kind::array;
      ++pos_;
      if (peek() == ']') return ++pos_, v;
      for (;;) {
        v.array.push_back(value());
        if (peek() == ',') {
          ++pos_;
          continue;
        }
        expect(']');
        return v;
      }
    }
    if (c == '"') {
      v.kind = Value::Kind::string;
      v.string = string();
      return v;
    }
    if (literal("true")) return v.kind = Value::Kind::boolean, v.boolean = true, v;
    if (literal("false")) return v.kind = Value::Kind::boolean, v;
    if (literal("null")) return v;
    // Google Benchmark writes NaN and Infinity unquoted for undefined counters.
    if (literal("NaN") || literal("nan") || literal("-nan"))
      return v.kind = Value::Kind::number, v.number = NAN, v;
    if (literal("Infinity") || literal("inf"))
      return v.kind = Value::Kind::number, v.number = INFINITY, v;
    if (literal("-Infinity") || literal("-inf"))
      return v.kind = Value::Kind::number, v.number = -INFINITY, v;
    const char* start = s_.c_str() + pos_;
    char* end = nullptr;
    v.number = std::strtod(start, &end);
    if (end == start) fail("unexpected character");
    v.kind = Value::Kind::number;
    pos_ += static_cast<std::size_t>(end - start);
    return v;
  }

  std::string string() {
    expect('"');
    std::string out;
    while (pos_ < s_.size() && s_[pos_] != '"') {
      char c = s_[pos_++];
      if (c == '\\') {
        if (pos_ >= s_.size()) fail("unterminated escape");
        const char e = s_[pos_++];
        switch (e) {
          case 'n':
            c = '\n';
            break;
          case 't':
            c = '\t';
            break;
          case 'r':
            c = '\r';
            break;
          case 'b':
            c = '\b';
            break;
          case 'f':
            c = '\f';
            break;
          case 'u': {
            if (pos_ + 4 > s_.size()) fail("short \\u escape");
            const long code = std::strtol(s_.substr(pos_, 4).c_str(), nullptr, 16);
            pos_ += 4;
            c = code < 128 ? static_cast<char>(code) : '?';
            break;
          }
          default:
            c = e;  // \" \\ \/
        }
      }
      out += c;
    }
    if (pos_ >= s_.size()) fail("unterminated string");
    ++pos_;
    return out;
  }

  const std::string& s_;
  std::size_t pos_ = 0;
};

/// Parses `text` (see Parser).
inline Value parse(const std::string& text) {
  return Parser(text).parse();
}

}  // namespace amari::bench::json
