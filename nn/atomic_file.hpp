// Files: the one write path and the one read path of every file format of nn/ (parameter files,
// IDX, safetensors; any later format, such as optimizer state, uses them too).
//
// What a writer guarantees (AtomicFileWriter; docs/reliability.md, "Files: what every writer and
// reader guarantees"):
//   - the target is replaced whole or not at all: the bytes go to a temporary file in the target's
//     directory, which is flushed to disk (fsync), given its final mode and renamed over the
//     target, and then the directory is synced. A crash or an exception leaves the old file or the
//     complete new one under the target's name, never a part of either;
//   - the temporary is created exclusively (O_TMPFILE, an unnamed file, or O_CREAT | O_EXCL |
//     O_NOFOLLOW under a fresh random name "<target>.XXXXXX.tmp"): no existing file and no symbolic
//     link is ever opened, truncated or written through, and concurrent writers of one target do
//     not share a temporary (the last rename wins, each result is complete);
//   - on any failure (IoError) the temporary is removed and the old target is untouched;
//   - a target that exists must be a regular file (or a symbolic link to one, see below):
//     directories, devices, FIFOs and sockets are refused with an IoError that names what the path
//     is, before anything is written;
//   - an existing target keeps its permission bits (and, where the process may, its owner and
//     group); a new file gets 0666 & ~umask, as open(2) would give it;
//   - symbolic links: a target that is a symbolic link to a regular file is followed, as editors
//     do: the file it points to is replaced (its directory holds the temporary) and the link stays
//     a link. A link to nothing (dangling) or to a non-regular file is refused. Other hard links of
//     the replaced file keep the old contents (rename replaces one directory entry);
//   - a process killed while writing leaves no temporary behind where the file system supports
//     O_TMPFILE (Linux: ext4, xfs, btrfs, tmpfs, ...): the data is written to an unnamed file that
//     gets a name only for the instant between link and rename. Elsewhere (or with
//     AtomicWriteOptions::unnamed_temporary = false) a kill during the write can leave a
//     "<target>.XXXXXX.tmp" file, which is never the target and is safe to delete.
// What a reader guarantees (RegularFile, read_whole_file):
//   - only regular files are read: the path is opened with O_NONBLOCK, so a FIFO or a device never
//     blocks the caller, and anything that is not a regular file is refused with an IoError naming
//     the path and what it is;
//   - the size is checked against the caller's limit (with fstat) before anything is allocated,
//     and memory grows with the bytes actually read, never with a size written in the file.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include <sys/types.h>

namespace amari::nn {

/// Options of an AtomicFileWriter.
struct AtomicWriteOptions {
  /// Write the data to an unnamed file (O_TMPFILE), linked under a temporary name only when
  /// complete, so a killed process leaves nothing behind. Used where the file system and /proc
  /// support it; otherwise, or when false, the temporary is a named file created exclusively.
  bool unnamed_temporary = true;
};

/// Writes one file atomically and durably (every guarantee in the comment at the top of this
/// header). Usage: construct, write() any number of times, commit(). Destroyed without a
/// successful commit() (an exception on the way), it removes its temporary and leaves the target
/// untouched. Every failure is an IoError whose message starts with `where` and names the path.
/// Not thread-safe; one writer per thread (two writers of the same target are safe, see above).
class AtomicFileWriter {
 public:
  /// Checks the target (IoError if it exists and is not a regular file or a link to one, or is a
  /// dangling link) and creates the temporary in the target's directory (IoError if it cannot).
  AtomicFileWriter(const std::string& path, const std::string& where,
                   const AtomicWriteOptions& options = {});
  AtomicFileWriter(const AtomicFileWriter&) = delete;
  AtomicFileWriter& operator=(const AtomicFileWriter&) = delete;
  ~AtomicFileWriter();
  /// Appends n bytes to the temporary (in pieces of at most 64 MiB, retrying interrupted writes).
  /// IoError after commit() or after a failed write.
  void write(const void* data, std::size_t n);
  /// fsync; the old target's mode (and owner, where allowed); rename over the target; fsync of the
  /// directory (best effort: some file systems refuse it, and the data is already on disk).
  /// IoError if any step before the rename fails or the target became non-regular meanwhile.
  void commit();
  /// The file commit() replaces: the path given, or the file a symbolic link there points to.
  const std::string& target() const { return target_; }
  /// The temporary's current name: empty while it is unnamed (O_TMPFILE).
  const std::string& temporary() const { return tmp_; }

 private:
  void create_named_temporary(mode_t create_mode);
  void link_unnamed_temporary();
  std::string path_, target_, dir_, tmp_, where_;
  int fd_ = -1;
  bool existed_ = false;
  mode_t mode_ = 0;
  uid_t uid_ = 0;
  gid_t gid_ = 0;
  bool committed_ = false;
};

/// A regular file opened for reading, closed by the destructor. The path is checked with stat and
/// opened with O_NONBLOCK | O_NOCTTY, so neither a FIFO nor a device can block the caller or
/// be opened at all, and the opened file is checked again with fstat. IoError (message starting
/// with `where`) if it cannot be opened or is not a regular file (naming what it is: "a
/// directory", "a FIFO (named pipe)", ...).
class RegularFile {
 public:
  RegularFile(const std::string& path, const std::string& where);
  RegularFile(const RegularFile&) = delete;
  RegularFile& operator=(const RegularFile&) = delete;
  ~RegularFile();
  /// The open descriptor (blocking mode restored), or -1 after release().
  int fd() const { return fd_; }
  /// The file's size when it was opened.
  std::uint64_t size() const { return size_; }
  /// Hands the descriptor over to the caller (e.g. to zlib's gzdopen), which then closes it.
  int release();

 private:
  int fd_ = -1;
  std::uint64_t size_ = 0;
};

/// The whole contents of the regular file `path` (opened as RegularFile). IoError (message
/// starting with `where`) if it cannot be opened, is not a regular file, cannot be read, or grows
/// while being read; FormatError if it is larger than `max_bytes` (checked with fstat before
/// anything is allocated; `limit_hint` is appended to that message: which limit, how to raise it).
/// A file that shrinks while being read yields the bytes that were there. Memory: the file size.
std::vector<std::uint8_t> read_whole_file(const std::string& path, const std::string& where,
                                          std::uint64_t max_bytes = UINT64_MAX,
                                          const std::string& limit_hint = "");

/// "a regular file", "a directory", "a character device", "a block device", "a FIFO (named pipe)",
/// "a socket" or "a symbolic link": what a stat mode is, for messages.
const char* file_kind(mode_t mode);

namespace detail {
// The names these helpers had while they were internal.
using nn::AtomicFileWriter;
using nn::read_whole_file;
}  // namespace detail

}  // namespace amari::nn
