// Internal file helpers shared by the writers and readers of nn/ (parameter files, safetensors):
// an atomic, durable file writer and a whole-file reader whose allocation is bounded by the file's
// real size. Not part of the public API (names live in amari::nn::detail).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace amari::nn::detail {

/// Writes a file atomically: the bytes go to `path + ".tmp"`; commit() flushes it to disk (fsync),
/// renames it over `path` and syncs the directory, so a crash leaves either the old file or the
/// complete new one under `path`, never a partial one. Destroyed without commit() (an exception
/// on the way), it removes the .tmp file. Concurrent writers of the same path are not supported
/// (they share the .tmp name). Every failure is an IoError whose message starts with `where`.
class AtomicFileWriter {
 public:
  /// Creates (truncates) `path + ".tmp"`; IoError if it cannot.
  AtomicFileWriter(const std::string& path, const std::string& where);
  AtomicFileWriter(const AtomicFileWriter&) = delete;
  AtomicFileWriter& operator=(const AtomicFileWriter&) = delete;
  ~AtomicFileWriter();
  /// Appends n bytes (in pieces of at most 64 MiB, retrying interrupted writes).
  void write(const void* data, std::size_t n);
  /// fsync, close, rename over the final path, sync the parent directory (best effort).
  void commit();

 private:
  std::string path_, tmp_, where_;
  int fd_ = -1;
  bool committed_ = false;
};

/// The whole contents of the regular file `path`. IoError (message starting with `where`) if it
/// cannot be opened, is not a regular file, cannot be read, or grows while being read; FormatError
/// if it is larger than `max_bytes` (checked with fstat before anything is allocated; `limit_hint`
/// is appended to that message, e.g. how to raise the limit). A file that shrinks while being read
/// yields the bytes that were there.
std::vector<std::uint8_t> read_whole_file(const std::string& path, const std::string& where,
                                          std::uint64_t max_bytes = UINT64_MAX,
                                          const std::string& limit_hint = "");

}  // namespace amari::nn::detail
