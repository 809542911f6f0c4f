// Shared pieces of the fuzz harnesses (tests/fuzz/harness/*.hpp).
//
// Each harness is a plain function `void run_<target>(const std::uint8_t* data, std::size_t size)`
// used twice: by the libFuzzer entry points (tests/fuzz/*_fuzz.cpp, clang + sanitizers) and by the
// Catch2 replay test (tests/reliability/fuzz_replay_test.cpp), which feeds every committed corpus
// file and every past crash through the same code in the ordinary test build.
//
// The contract a harness checks: every call into amari either returns a result or throws
// amari::Error. An amari::Error is caught where it is thrown; any other exception propagates, and
// a broken property (modes disagreeing, a model modified by a failed load, a round trip changing
// bytes) throws HarnessFailure. Crashes, sanitizer reports and both kinds of exception are bugs.
#pragma once

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <stdexcept>
#include <string>
#include <vector>

#include <unistd.h>

#include <amari/autodiff/error.hpp>

namespace amari::fuzz {

using Bytes = std::vector<std::uint8_t>;

/// A property the harness checks was violated. Deliberately not an amari::Error.
class HarnessFailure : public std::logic_error {
 public:
  using std::logic_error::logic_error;
};

/// Throws HarnessFailure(what) unless ok.
inline void require(bool ok, const std::string& what) {
  if (!ok) throw HarnessFailure(what);
}

/// Runs f(); returns true if it returned, false if it threw amari::Error. Anything else propagates.
template <class F>
bool returns_or_amari_error(F&& f) {
  try {
    f();
    return true;
  } catch (const amari::Error&) {
    return false;
  }
}

/// Reads bytes from the fuzz input front to back; past the end every read yields zeros, so any
/// input decodes to something.
class Reader {
 public:
  Reader(const std::uint8_t* data, std::size_t size) : data_(data), size_(size) {}
  std::uint8_t u8() { return pos_ < size_ ? data_[pos_++] : 0; }
  std::uint32_t u32() {
    std::uint32_t v = 0;
    for (int i = 0; i < 4; ++i) v |= std::uint32_t{u8()} << (8 * i);
    return v;
  }
  std::uint64_t u64() { return std::uint64_t{u32()} | (std::uint64_t{u32()} << 32); }
  bool done() const { return pos_ >= size_; }

 private:
  const std::uint8_t* data_;
  std::size_t size_;
  std::size_t pos_ = 0;
};

/// A scratch directory for the files the harnesses write: /dev/shm when available (tmpfs: no disk
/// traffic, fsync is free), else the system temp directory. One subdirectory per process, so
/// parallel fuzzing jobs and parallel ctest runs never share a file; removed at normal exit.
inline const std::filesystem::path& scratch_dir() {
  struct Dir {
    std::filesystem::path path;
    Dir() {
      std::error_code ec;
      std::filesystem::path base = "/dev/shm";
      if (!std::filesystem::is_directory(base, ec) || ::access(base.c_str(), W_OK) != 0) {
        base = std::filesystem::temp_directory_path();
      }
      path = base / ("amari-fuzz-" + std::to_string(::getpid()));
      std::filesystem::create_directories(path);
    }
    ~Dir() {
      std::error_code ec;
      std::filesystem::remove_all(path, ec);
    }
  };
  static const Dir dir;
  return dir.path;
}

/// Path of a scratch file `name` in scratch_dir().
inline std::string scratch_file(const std::string& name) {
  return (scratch_dir() / name).string();
}

/// Writes bytes to path (replacing it); throws HarnessFailure if the harness itself cannot write.
inline void write_file(const std::string& path, const std::uint8_t* data, std::size_t size) {
  std::FILE* f = std::fopen(path.c_str(), "wb");
  require(f != nullptr, "harness: cannot create " + path);
  const bool ok = size == 0 || std::fwrite(data, 1, size, f) == size;
  require(std::fclose(f) == 0 && ok, "harness: cannot write " + path);
}

/// The whole contents of a file.
inline Bytes read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  require(static_cast<bool>(in), "harness: cannot read " + path);
  return Bytes(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

}  // namespace amari::fuzz
