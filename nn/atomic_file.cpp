#include <amari/nn/atomic_file.hpp>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>

#include <fcntl.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include <amari/autodiff/error.hpp>

namespace amari::nn {

namespace {

// write(2) and read(2) are called on pieces of at most this size: Linux never transfers more
// than ~2 GiB per call anyway.
constexpr std::size_t kIoChunkBytes = std::size_t{1} << 26;
// Fresh temporary names tried before giving up. Each is 6 characters out of 36 (~2^31 names), so
// only a directory flooded on purpose exhausts them; the failure is then an IoError, not a hang.
constexpr int kNameAttempts = 64;

std::string error_text() {
  return std::strerror(errno);
}

// Six random characters [a-z0-9] for a temporary name. Unpredictability is not what makes the
// temporary safe (exclusive creation does); it only makes collisions between writers rare.
std::string random_suffix() {
  constexpr char kChars[] = "abcdefghijklmnopqrstuvwxyz0123456789";
  unsigned char raw[6];
  if (::getrandom(raw, sizeof raw, GRND_NONBLOCK) != static_cast<ssize_t>(sizeof raw)) {
    // No entropy yet (early boot): the clock and the process id still separate writers.
    auto mix =
        static_cast<std::uint64_t>(std::chrono::steady_clock::now().time_since_epoch().count()) ^
        (static_cast<std::uint64_t>(::getpid()) << 32);
    for (unsigned char& b : raw) {
      mix = mix * 6364136223846793005u + 1442695040888963407u;
      b = static_cast<unsigned char>(mix >> 56);
    }
  }
  std::string s;
  for (unsigned char b : raw) s += kChars[b % 36];
  return s;
}

// Whether linkat() can give an O_TMPFILE file a name through /proc/self/fd (no privilege needed).
bool proc_fd_available() {
  return ::access("/proc/self/fd", X_OK) == 0;
}

// The errors with which open(O_TMPFILE) says "not supported here" rather than "cannot create".
bool tmpfile_unsupported(int err) {
  return err == EOPNOTSUPP || err == EISDIR || err == EINVAL || err == ENOTSUP;
}

// Makes a completed rename durable: the new directory entry reaches the disk. Best effort, since
// some file systems refuse fsync on directories and the file itself is already complete.
void sync_directory(const std::string& dir) {
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return;
  ::fsync(fd);
  ::close(fd);
}

std::string refused_target(const std::string& where, const std::string& what, mode_t mode) {
  return where + "refusing to write: " + what + " is " + file_kind(mode) +
         ", not a regular file; amari writes only regular files (renaming over it would replace " +
         file_kind(mode) + " by a file)";
}

}  // namespace

const char* file_kind(mode_t mode) {
  if (S_ISREG(mode)) return "a regular file";
  if (S_ISDIR(mode)) return "a directory";
  if (S_ISCHR(mode)) return "a character device";
  if (S_ISBLK(mode)) return "a block device";
  if (S_ISFIFO(mode)) return "a FIFO (named pipe)";
  if (S_ISSOCK(mode)) return "a socket";
  if (S_ISLNK(mode)) return "a symbolic link";
  return "a special file";
}

// ---- writing ------------------------------------------------------------------------------------

AtomicFileWriter::AtomicFileWriter(const std::string& path, const std::string& where,
                                   const AtomicWriteOptions& options)
    : path_(path), target_(path), where_(where) {
  struct stat st {};
  if (::lstat(path.c_str(), &st) != 0) {
    if (errno != ENOENT) throw IoError(where_ + "cannot inspect the target: " + error_text());
  } else {
    if (S_ISLNK(st.st_mode)) {
      // Followed by the kernel (stat), so its protections (fs.protected_symlinks) apply.
      if (::stat(path.c_str(), &st) != 0) {
        if (errno == ENOENT) {
          throw IoError(where_ +
                        "refusing to write: the path is a symbolic link to a missing file; amari "
                        "replaces the file a link points to but does not create it (remove the "
                        "link or save to the path it names)");
        }
        throw IoError(where_ + "cannot follow the symbolic link: " + error_text());
      }
      if (!S_ISREG(st.st_mode)) {
        throw IoError(refused_target(where_, "the file the symbolic link points to", st.st_mode));
      }
      std::error_code ec;
      target_ = std::filesystem::canonical(path, ec).string();
      struct stat resolved {};
      if (ec || ::lstat(target_.c_str(), &resolved) != 0 || resolved.st_dev != st.st_dev ||
          resolved.st_ino != st.st_ino) {
        throw IoError(where_ + "cannot resolve the symbolic link" +
                      (ec ? ": " + ec.message() : std::string(": it changed while being read")));
      }
    } else if (!S_ISREG(st.st_mode)) {
      throw IoError(refused_target(where_, "the path", st.st_mode));
    }
    existed_ = true;
    mode_ = st.st_mode & 07777;
    uid_ = st.st_uid;
    gid_ = st.st_gid;
  }
  dir_ = std::filesystem::path(target_).parent_path().string();
  if (dir_.empty()) dir_ = ".";

  // A replaced file's contents are readable only by the owner until the file has its final mode;
  // a new file is created with 0666 and the umask, exactly the mode it keeps.
  const mode_t create_mode = existed_ ? 0600 : 0666;
  if (options.unnamed_temporary && proc_fd_available()) {
    fd_ = ::open(dir_.c_str(), O_TMPFILE | O_WRONLY | O_CLOEXEC, create_mode);
    if (fd_ < 0 && !tmpfile_unsupported(errno)) {
      throw IoError(where_ + "cannot create a temporary file in " + dir_ + ": " + error_text());
    }
  }
  if (fd_ < 0) create_named_temporary(create_mode);
}

void AtomicFileWriter::create_named_temporary(mode_t create_mode) {
  // O_EXCL | O_NOFOLLOW: never opens an existing file or a symbolic link planted at the name.
  for (int attempt = 0; attempt < kNameAttempts; ++attempt) {
    const std::string name = target_ + "." + random_suffix() + ".tmp";
    fd_ = ::open(name.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, create_mode);
    if (fd_ >= 0) {
      tmp_ = name;
      return;
    }
    if (errno != EEXIST) {
      throw IoError(where_ + "cannot create a temporary file " + name + ": " + error_text());
    }
  }
  throw IoError(where_ + "cannot create a temporary file in " + dir_ + ": " +
                std::to_string(kNameAttempts) + " fresh names were all taken");
}

void AtomicFileWriter::link_unnamed_temporary() {
  // link(2) never follows or replaces what is at the new name: EEXIST means try another name.
  const std::string proc = "/proc/self/fd/" + std::to_string(fd_);
  for (int attempt = 0; attempt < kNameAttempts; ++attempt) {
    const std::string name = target_ + "." + random_suffix() + ".tmp";
    if (::linkat(AT_FDCWD, proc.c_str(), AT_FDCWD, name.c_str(), AT_SYMLINK_FOLLOW) == 0) {
      tmp_ = name;
      return;
    }
    if (errno != EEXIST) {
      throw IoError(where_ + "cannot name the temporary file " + name + ": " + error_text());
    }
  }
  throw IoError(where_ + "cannot name the temporary file in " + dir_ + ": " +
                std::to_string(kNameAttempts) + " fresh names were all taken");
}

AtomicFileWriter::~AtomicFileWriter() {
  if (fd_ >= 0) ::close(fd_);
  if (!committed_ && !tmp_.empty()) ::unlink(tmp_.c_str());
}

void AtomicFileWriter::write(const void* data, std::size_t n) {
  if (fd_ < 0) throw IoError(where_ + "write after commit() or after a failed commit()");
  const auto* p = static_cast<const char*>(data);
  while (n > 0) {
    const ssize_t w = ::write(fd_, p, std::min(n, kIoChunkBytes));
    if (w < 0) {
      if (errno == EINTR) continue;
      throw IoError(where_ + "write failed: " + error_text() + " (the old file is untouched)");
    }
    p += w;
    n -= static_cast<std::size_t>(w);
  }
}

void AtomicFileWriter::commit() {
  if (fd_ < 0) throw IoError(where_ + "commit() called twice or after a failed commit()");
  // The data must be on disk before the rename makes it visible under the real name; otherwise a
  // crash after the rename could leave an empty or partial file there.
  if (::fsync(fd_) != 0) throw IoError(where_ + "fsync failed: " + error_text());
  if (existed_) {
    mode_t mode = mode_;
    struct stat st {};
    if (::fstat(fd_, &st) == 0 && (st.st_uid != uid_ || st.st_gid != gid_) &&
        ::fchown(fd_, uid_, gid_) != 0) {
      // Owned by us, not by the old file's owner: set-id bits would then grant our identity.
      mode &= ~mode_t{S_ISUID | S_ISGID};
    }
    if (::fchmod(fd_, mode) != 0) {
      throw IoError(where_ + "cannot give the new file the old file's mode: " + error_text());
    }
  }
  if (tmp_.empty()) link_unnamed_temporary();
  // close(2)'s result matters: on some file systems (NFS) a failed write is only reported here.
  const int r = ::close(fd_);
  fd_ = -1;
  if (r != 0) throw IoError(where_ + "close failed: " + error_text());
  // The target was checked when writing began; something may have been put there since.
  struct stat now {};
  if (::lstat(target_.c_str(), &now) == 0 && !S_ISREG(now.st_mode) && !S_ISLNK(now.st_mode)) {
    throw IoError(refused_target(where_, target_, now.st_mode));
  }
  if (::rename(tmp_.c_str(), target_.c_str()) != 0) {
    throw IoError(where_ + "cannot rename " + tmp_ + " to " + target_ + ": " + error_text());
  }
  committed_ = true;
  sync_directory(dir_);
}

// ---- reading ------------------------------------------------------------------------------------

RegularFile::RegularFile(const std::string& path, const std::string& where) {
  const auto not_regular = [&](mode_t mode) {
    return IoError(where + "not a regular file: the path is " + file_kind(mode) +
                   "; amari reads only regular files");
  };
  // stat first: a device or FIFO is refused without being opened (opening some devices acts).
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) throw IoError(where + "cannot open: " + error_text());
  if (!S_ISREG(st.st_mode)) throw not_regular(st.st_mode);
  // O_NONBLOCK: should the path become a FIFO in between, open returns at once instead of waiting
  // for a writer; fstat below then refuses it.
  fd_ = ::open(path.c_str(), O_RDONLY | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
  if (fd_ < 0) throw IoError(where + "cannot open: " + error_text());
  const auto fail = [&](const IoError& e) {
    ::close(fd_);
    fd_ = -1;
    throw e;
  };
  if (::fstat(fd_, &st) != 0) fail(IoError(where + "cannot stat: " + error_text()));
  if (!S_ISREG(st.st_mode)) fail(not_regular(st.st_mode));
  const int flags = ::fcntl(fd_, F_GETFL);
  if (flags < 0 || ::fcntl(fd_, F_SETFL, flags & ~O_NONBLOCK) != 0) {
    fail(IoError(where + "cannot configure the descriptor: " + error_text()));
  }
  size_ = static_cast<std::uint64_t>(st.st_size);
}

RegularFile::~RegularFile() {
  if (fd_ >= 0) ::close(fd_);
}

int RegularFile::release() {
  const int fd = fd_;
  fd_ = -1;
  return fd;
}

std::vector<std::uint8_t> read_whole_file(const std::string& path, const std::string& where,
                                          std::uint64_t max_bytes, const std::string& limit_hint) {
  const RegularFile file(path, where);
  const std::uint64_t size = file.size();
  if (size > max_bytes) {
    throw FormatError(where + "the file has " + std::to_string(size) +
                      " bytes, more than the limit of " + std::to_string(max_bytes) + limit_hint);
  }
  // The allocation is bounded by the file's real size, never by anything written inside it.
  std::vector<std::uint8_t> bytes(static_cast<std::size_t>(size));
  std::size_t done = 0;
  while (done < bytes.size()) {
    const ssize_t r =
        ::read(file.fd(), bytes.data() + done, std::min(bytes.size() - done, kIoChunkBytes));
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
    const ssize_t r = ::read(file.fd(), &extra, 1);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) throw IoError(where + "read failed: " + error_text());
    if (r > 0) throw IoError(where + "the file grew while it was being read");
    break;
  }
  return bytes;
}

}  // namespace amari::nn
