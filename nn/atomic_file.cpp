#include <amari/nn/atomic_file.hpp>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <amari/autodiff/error.hpp>

namespace amari::nn::detail {

namespace {

// write(2) and read(2) are called on pieces of at most this size: Linux never transfers more
// than ~2 GiB per call anyway.
constexpr std::size_t kChunkBytes = std::size_t{1} << 26;

std::string error_text() {
  return std::strerror(errno);
}

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

// An open file descriptor, closed at scope exit.
class Fd {
 public:
  explicit Fd(int fd) : fd_(fd) {}
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  ~Fd() {
    if (fd_ >= 0) ::close(fd_);
  }
  int get() const { return fd_; }

 private:
  int fd_;
};

}  // namespace

AtomicFileWriter::AtomicFileWriter(const std::string& path, const std::string& where)
    : path_(path), tmp_(path + ".tmp"), where_(where) {
  fd_ = ::open(tmp_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0666);
  if (fd_ < 0) throw IoError(where_ + "cannot open " + tmp_ + " for writing: " + error_text());
  where_ += "writing " + tmp_ + ": ";
}

AtomicFileWriter::~AtomicFileWriter() {
  if (fd_ >= 0) ::close(fd_);
  if (!committed_) ::unlink(tmp_.c_str());
}

void AtomicFileWriter::write(const void* data, std::size_t n) {
  const auto* p = static_cast<const char*>(data);
  while (n > 0) {
    const ssize_t w = ::write(fd_, p, std::min(n, kChunkBytes));
    if (w < 0) {
      if (errno == EINTR) continue;
      throw IoError(where_ + "write failed: " + error_text());
    }
    p += w;
    n -= static_cast<std::size_t>(w);
  }
}

void AtomicFileWriter::commit() {
  // The data must be on disk before the rename makes it visible under the real name; otherwise a
  // crash after the rename could leave an empty or partial file there.
  if (::fsync(fd_) != 0) throw IoError(where_ + "fsync failed: " + error_text());
  // close(2)'s result matters: on some file systems (NFS) a failed write is only reported here.
  const int r = ::close(fd_);
  fd_ = -1;
  if (r != 0) throw IoError(where_ + "close failed: " + error_text());
  std::error_code ec;
  std::filesystem::rename(tmp_, path_, ec);
  if (ec) throw IoError(where_ + "cannot rename " + tmp_ + " to " + path_ + ": " + ec.message());
  committed_ = true;
  sync_parent_directory(path_);
}

std::vector<std::uint8_t> read_whole_file(const std::string& path, const std::string& where,
                                          std::uint64_t max_bytes, const std::string& limit_hint) {
  Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (fd.get() < 0) throw IoError(where + "cannot open: " + error_text());
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) throw IoError(where + "cannot stat: " + error_text());
  if (!S_ISREG(st.st_mode)) throw IoError(where + "not a regular file");
  const auto size = static_cast<std::uint64_t>(st.st_size);
  if (size > max_bytes) {
    throw FormatError(where + "the file has " + std::to_string(size) +
                      " bytes, more than the limit of " + std::to_string(max_bytes) + limit_hint);
  }
  // The allocation is bounded by the file's real size, never by anything written inside it.
  std::vector<std::uint8_t> bytes(static_cast<std::size_t>(size));
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

}  // namespace amari::nn::detail
