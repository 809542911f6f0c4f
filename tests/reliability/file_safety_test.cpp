// Tests of what every file writer and reader of nn/ guarantees (nn/atomic_file.hpp;
// docs/reliability.md, "Files: what every writer and reader guarantees"): temporaries created
// exclusively, never written through a planted link or file; modes kept; non-regular targets and
// sources refused promptly; a failed or killed write leaving the old file intact and nothing
// behind; size and decompression limits; IdxArray's invariant checked where it is consumed.
//
// Failures are real, not simulated: a write fails because the child process that makes it has a
// file size limit (RLIMIT_FSIZE: write(2) fails with EFBIG, or the process is killed by SIGXFSZ).
// Every test that could block or kill runs in a forked child (tests/reliability/child_process.hpp).
#include <algorithm>
#include <chrono>
#include <csignal>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <string>
#include <vector>

#include <fcntl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/un.h>
#include <unistd.h>
#include <zlib.h>
#include <catch2/catch.hpp>

#include <amari/nn/atomic_file.hpp>
#include <amari/nn/idx.hpp>
#include <amari/nn/layers.hpp>
#include <amari/nn/safetensors.hpp>
#include <amari/nn/serialize.hpp>

#include "reliability/child_process.hpp"
#include "support/temp_dir.hpp"

namespace {

namespace fs = std::filesystem;
namespace nn = amari::nn;
using amari::test::ChildResult;
using amari::test::Outcome;
using amari::test::run_in_child;
using amari::test::TempDir;
using Bytes = std::vector<std::uint8_t>;
using Catch::Matchers::Contains;

void write_bytes(const std::string& path, const Bytes& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(bytes.data()),
            static_cast<std::streamsize>(bytes.size()));
  REQUIRE(out.good());
}

Bytes read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return Bytes(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

// The names in a directory, sorted.
std::vector<std::string> entries(const fs::path& dir) {
  std::vector<std::string> out;
  for (const auto& e : fs::directory_iterator(dir)) out.push_back(e.path().filename().string());
  std::sort(out.begin(), out.end());
  return out;
}

mode_t mode_of(const std::string& path) {
  struct stat st {};
  REQUIRE(::lstat(path.c_str(), &st) == 0);
  return st.st_mode & 07777;
}

template <class E, class F>
std::string error_message(F f) {
  try {
    f();
  } catch (const E& e) {
    return e.what();
  }
  FAIL("expected an exception of the requested amari error type");
  return "";
}

// Whether the file system of `dir` supports unnamed temporaries (O_TMPFILE) for this process.
bool unnamed_temporaries_supported(const std::string& dir) {
  const int fd = ::open(dir.c_str(), O_TMPFILE | O_WRONLY | O_CLOEXEC, 0600);
  if (fd < 0) return false;
  ::close(fd);
  return ::access("/proc/self/fd", X_OK) == 0;
}

// One model, big enough (4160 floats, > 16 KiB) for every writer's file to pass a 4 KiB size limit.
const nn::Model<float>& test_model() {
  static const nn::Model<float> model(nn::mlp<float>({64, 64}), 11);
  return model;
}

// An IDX array of 8 KiB of varied bytes, so that its gzip file is larger than 4 KiB too.
nn::IdxArray test_array(std::uint8_t seed) {
  nn::IdxArray a{nn::IdxType::u8, {8192}, Bytes(8192)};
  std::uint32_t x = 2463534242u + seed;
  for (std::uint8_t& b : a.bytes) {
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    b = static_cast<std::uint8_t>(x);
  }
  return a;
}

// Every writer of nn/, as a function of the path.
struct Writer {
  const char* name;
  std::function<void(const std::string&)> write;
};

std::vector<Writer> all_writers() {
  return {
      {"save_parameters", [](const std::string& p) { nn::save_parameters(test_model(), p); }},
      {"write_idx plain",
       [](const std::string& p) { nn::write_idx(p, test_array(1), nn::IdxCompression::plain); }},
      {"write_idx gzip",
       [](const std::string& p) { nn::write_idx(p, test_array(2), nn::IdxCompression::gzip); }},
      {"save_safetensors", [](const std::string& p) { nn::save_safetensors(test_model(), p); }},
      {"AtomicFileWriter with a named temporary",
       [](const std::string& p) {
         nn::AtomicFileWriter out(p, "test: " + p + ": ", {.unnamed_temporary = false});
         const Bytes data = test_array(3).bytes;
         out.write(data.data(), data.size());
         out.commit();
       }},
  };
}

const Bytes kOld = {'o', 'l', 'd', ' ', 'c', 'o', 'n', 't', 'e', 'n', 't', 's'};

}  // namespace

TEST_CASE(
    "files: a symbolic link or a file at the old fixed temporary name is never written through",
    "[files]") {
  for (const Writer& w : all_writers()) {
    INFO(w.name);
    TempDir dir("files");
    const std::string victim = dir.file("victim");
    const std::string bystander = dir.file("b.bin.tmp");
    write_bytes(victim, kOld);
    write_bytes(bystander, kOld);
    // The attack of the issue: a link at "<target>.tmp" to a file the user can write.
    fs::create_symlink(victim, dir.file("a.bin.tmp"));
    w.write(dir.file("a.bin"));
    w.write(dir.file("b.bin"));
    CHECK(read_bytes(victim) == kOld);
    CHECK(read_bytes(bystander) == kOld);
    CHECK(fs::is_symlink(dir.file("a.bin.tmp")));
    CHECK(fs::read_symlink(dir.file("a.bin.tmp")) == victim);
    CHECK(read_bytes(dir.file("a.bin")).size() > 4096);
    CHECK(entries(dir.path()) ==
          std::vector<std::string>{"a.bin", "a.bin.tmp", "b.bin", "b.bin.tmp", "victim"});
  }
}

TEST_CASE("files: an existing file keeps its mode and a new file gets 0666 minus the umask",
          "[files]") {
  const mode_t umask_now = ::umask(022);
  ::umask(umask_now);
  for (const Writer& w : all_writers()) {
    INFO(w.name);
    TempDir dir("files");
    for (mode_t mode : {mode_t{0600}, mode_t{0640}, mode_t{0604}, mode_t{0444}}) {
      const std::string path = dir.file("m" + std::to_string(mode));
      write_bytes(path, kOld);
      REQUIRE(::chmod(path.c_str(), mode) == 0);
      w.write(path);
      CHECK(mode_of(path) == mode);
      CHECK(read_bytes(path) != kOld);
    }
    const std::string fresh = dir.file("fresh");
    w.write(fresh);
    CHECK(mode_of(fresh) == (0666 & ~umask_now));
  }
}

TEST_CASE("files: a directory, a device, a FIFO or a socket as target is refused and left in place",
          "[files]") {
  TempDir dir("files");
  struct Node {
    std::string path;
    const char* kind;
  };
  std::vector<Node> nodes;
  const std::string empty_dir = dir.file("empty-dir");
  fs::create_directory(empty_dir);
  nodes.push_back({empty_dir, "a directory"});
  const std::string full_dir = dir.file("full-dir");
  fs::create_directories(fs::path(full_dir) / "inside");
  nodes.push_back({full_dir, "a directory"});
  const std::string fifo = dir.file("fifo");
  REQUIRE(::mkfifo(fifo.c_str(), 0600) == 0);
  nodes.push_back({fifo, "a FIFO (named pipe)"});
  const std::string sock = dir.file("sock");
  {
    const int s = ::socket(AF_UNIX, SOCK_STREAM, 0);
    REQUIRE(s >= 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    REQUIRE(sock.size() < sizeof addr.sun_path);
    std::strcpy(addr.sun_path, sock.c_str());
    REQUIRE(::bind(s, reinterpret_cast<const sockaddr*>(&addr), sizeof addr) == 0);
    ::close(s);
  }
  nodes.push_back({sock, "a socket"});
  // The device of the issue, made here (a copy of /dev/null's node) so that a regression replaces
  // a node in the test's directory, not the system's.
  const std::string device = dir.file("null-device");
  if (::mknod(device.c_str(), S_IFCHR | 0666, makedev(1, 3)) == 0) {
    nodes.push_back({device, "a character device"});
  } else {
    WARN("mknod is not permitted here: the device target is not checked");
  }
  // And a link to one of them: the link is followed, what it points to refused.
  fs::create_symlink(fifo, dir.file("link-to-fifo"));
  nodes.push_back({dir.file("link-to-fifo"), "a FIFO (named pipe)"});

  for (const Writer& w : all_writers()) {
    for (const Node& n : nodes) {
      INFO(w.name << " onto " << n.path);
      struct stat before {};
      REQUIRE(::lstat(n.path.c_str(), &before) == 0);
      const std::string msg = error_message<amari::IoError>([&] { w.write(n.path); });
      CHECK_THAT(msg, Contains(n.path) && Contains(n.kind) && Contains("not a regular file"));
      struct stat after {};
      REQUIRE(::lstat(n.path.c_str(), &after) == 0);
      CHECK(after.st_ino == before.st_ino);
      CHECK(after.st_mode == before.st_mode);
      CHECK(after.st_rdev == before.st_rdev);
    }
  }
  // Nothing was added next to them: no temporary is left behind.
  std::vector<std::string> expected;
  for (const Node& n : nodes) expected.push_back(fs::path(n.path).filename().string());
  std::sort(expected.begin(), expected.end());
  CHECK(entries(dir.path()) == expected);
  CHECK(entries(empty_dir).empty());
}

TEST_CASE(
    "files: a symbolic link target is followed, the file it points to replaced and the link kept",
    "[files]") {
  for (const Writer& w : all_writers()) {
    INFO(w.name);
    TempDir dir("files");
    fs::create_directory(dir.file("real"));
    const std::string real = dir.file("real/data.bin");
    write_bytes(real, kOld);
    REQUIRE(::chmod(real.c_str(), 0640) == 0);
    const std::string link = dir.file("latest");
    fs::create_symlink("real/data.bin", link);
    w.write(link);
    CHECK(fs::is_symlink(link));
    CHECK(fs::read_symlink(link) == "real/data.bin");
    CHECK(read_bytes(real) != kOld);
    CHECK(read_bytes(real).size() > 4096);
    CHECK(mode_of(real) == 0640);
    CHECK(entries(dir.path()) == std::vector<std::string>{"latest", "real"});
    CHECK(entries(dir.file("real")) == std::vector<std::string>{"data.bin"});

    // A dangling link is refused: amari does not create the file a link names.
    const std::string dangling = dir.file("dangling");
    fs::create_symlink("real/missing.bin", dangling);
    CHECK_THAT(error_message<amari::IoError>([&] { w.write(dangling); }),
               Contains(dangling) && Contains("symbolic link to a missing file"));
    CHECK(fs::is_symlink(dangling));
    CHECK(entries(dir.file("real")) == std::vector<std::string>{"data.bin"});
  }
}

TEST_CASE(
    "files: every reader refuses a FIFO, a device or a directory at once with an IoError naming it",
    "[files]") {
  TempDir dir("files");
  const std::string fifo = dir.file("fifo");
  REQUIRE(::mkfifo(fifo.c_str(), 0600) == 0);
  struct Source {
    std::string path;
    const char* kind;
  };
  const std::vector<Source> sources = {{fifo, "a FIFO (named pipe)"},
                                       {"/dev/null", "a character device"},
                                       {dir.str(), "a directory"}};
  // In a child with a short alarm: a reader that waits for a writer on the FIFO (the bug) fails
  // this test after 10 s instead of hanging the suite.
  const auto start = std::chrono::steady_clock::now();
  const ChildResult r = run_in_child([&] {
    ::alarm(10);
    nn::Model<float> model(nn::mlp<float>({2, 2}), 1);
    const std::vector<std::pair<const char*, std::function<void(const std::string&)>>> readers = {
        {"load_parameters", [&](const std::string& p) { nn::load_parameters(model, p); }},
        {"read_idx", [](const std::string& p) { nn::read_idx(p); }},
        {"read_idx_labels", [](const std::string& p) { nn::read_idx_labels(p); }},
        {"read_idx_images", [](const std::string& p) { nn::read_idx_images<float>(p); }},
        {"SafetensorsFile::read", [](const std::string& p) { nn::SafetensorsFile::read(p); }},
        {"load_safetensors", [&](const std::string& p) { nn::load_safetensors(model, p); }},
    };
    std::string problems;
    for (const Source& s : sources) {
      for (const auto& [name, read] : readers) {
        try {
          read(s.path);
          problems += std::string(name) + " read " + s.path + "; ";
        } catch (const amari::IoError& e) {
          const std::string msg = e.what();
          if (msg.find(s.path) == std::string::npos || msg.find(s.kind) == std::string::npos ||
              msg.find("not a regular file") == std::string::npos) {
            problems += std::string(name) + ": unclear message \"" + msg + "\"; ";
          }
        }
      }
    }
    if (!problems.empty()) throw std::runtime_error(problems);
  });
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  INFO(r);
  CHECK(r == Outcome::returned);
  CHECK(seconds < 5);
}

TEST_CASE(
    "files: a write that fails midway throws IoError, keeps the old file bytewise and leaves no "
    "temporary",
    "[files]") {
  for (const Writer& w : all_writers()) {
    INFO(w.name);
    TempDir dir("files");
    const std::string path = dir.file("target");
    // An old file larger than the limit: the limit stops new data, not the old file.
    Bytes old(6000);
    for (std::size_t i = 0; i < old.size(); ++i) old[i] = static_cast<std::uint8_t>(i * 7);
    write_bytes(path, old);
    REQUIRE(::chmod(path.c_str(), 0640) == 0);
    const ChildResult r = run_in_child([&] {
      std::signal(SIGXFSZ, SIG_IGN);  // write(2) then fails with EFBIG instead of killing
      const rlimit limit{4096, 4096};
      ::setrlimit(RLIMIT_FSIZE, &limit);
      w.write(path);
    });
    INFO(r);
    CHECK(r == Outcome::amari_error);
    CHECK_THAT(r.message, Contains(path) && Contains("File too large"));
    CHECK(read_bytes(path) == old);
    CHECK(mode_of(path) == 0640);
    CHECK(entries(dir.path()) == std::vector<std::string>{"target"});
  }
}

TEST_CASE(
    "files: a writer killed midway leaves the old file intact and, with O_TMPFILE, no temporary",
    "[files]") {
  TempDir probe("files");
  const bool unnamed = unnamed_temporaries_supported(probe.str());
  if (!unnamed) WARN("no O_TMPFILE here: a killed default writer may leave one *.tmp file");
  for (const Writer& w : all_writers()) {
    INFO(w.name);
    TempDir dir("files");
    const std::string path = dir.file("target");
    write_bytes(path, kOld);
    const ChildResult r = run_in_child([&] {
      std::signal(SIGXFSZ, SIG_DFL);  // the write past the limit kills the process
      const rlimit no_core{0, 0};
      ::setrlimit(RLIMIT_CORE, &no_core);
      const rlimit limit{4096, 4096};
      ::setrlimit(RLIMIT_FSIZE, &limit);
      w.write(path);
    });
    INFO(r);
    CHECK(r == Outcome::crashed);
    CHECK(r.message == "signal " + std::to_string(SIGXFSZ));
    CHECK(read_bytes(path) == kOld);
    const std::vector<std::string> names = entries(dir.path());
    const bool named = std::string(w.name).find("named temporary") != std::string::npos;
    if (unnamed && !named) {
      CHECK(names == std::vector<std::string>{"target"});
    } else {
      // A named temporary survives a kill; it never is the target and has the documented name.
      REQUIRE(names.size() == 2);
      CHECK(names[0] == "target");
      CHECK(names[1].size() == std::string("target.XXXXXX.tmp").size());
      CHECK_THAT(names[1],
                 Catch::Matchers::StartsWith("target.") && Catch::Matchers::EndsWith(".tmp"));
    }
  }
}

TEST_CASE("files: an abandoned writer removes its temporary and never touches the target",
          "[files]") {
  TempDir dir("files");
  const std::string path = dir.file("target");
  write_bytes(path, kOld);
  REQUIRE(::chmod(path.c_str(), 0644) == 0);
  const Bytes data = test_array(4).bytes;
  for (bool unnamed : {true, false}) {
    INFO("unnamed_temporary = " << unnamed);
    {
      nn::AtomicFileWriter out(path, "test: ", {.unnamed_temporary = unnamed});
      out.write(data.data(), data.size());
      if (!unnamed || !unnamed_temporaries_supported(dir.str())) {
        // The named temporary: "<target>.XXXXXX.tmp", private until it gets the final mode.
        REQUIRE_FALSE(out.temporary().empty());
        CHECK(fs::path(out.temporary()).parent_path() == dir.path());
        CHECK(mode_of(out.temporary()) == 0600);
        CHECK(entries(dir.path()).size() == 2);
      } else {
        CHECK(out.temporary().empty());
        CHECK(entries(dir.path()) == std::vector<std::string>{"target"});
      }
      CHECK(read_bytes(path) == kOld);
    }
    CHECK(read_bytes(path) == kOld);
    CHECK(entries(dir.path()) == std::vector<std::string>{"target"});
  }
}

TEST_CASE(
    "files: two writers of one target use their own temporaries and the last commit wins whole",
    "[files]") {
  TempDir dir("files");
  const std::string path = dir.file("target");
  const Bytes a(10000, 'a'), b(5000, 'b');
  for (bool unnamed : {true, false}) {
    INFO("unnamed_temporary = " << unnamed);
    nn::AtomicFileWriter first(path, "test: ", {.unnamed_temporary = unnamed});
    nn::AtomicFileWriter second(path, "test: ", {.unnamed_temporary = unnamed});
    first.write(a.data(), a.size());
    second.write(b.data(), b.size());
    second.commit();
    CHECK(read_bytes(path) == b);
    first.commit();
    CHECK(read_bytes(path) == a);
    CHECK(entries(dir.path()) == std::vector<std::string>{"target"});
    // A committed writer refuses to be used again.
    CHECK_THROWS_AS(first.write(a.data(), 1), amari::IoError);
    CHECK_THROWS_AS(first.commit(), amari::IoError);
  }
}

TEST_CASE(
    "read_idx: a gzip bomb past IdxLimits max_decompressed_bytes is refused before it is inflated",
    "[files][idx]") {
  TempDir dir("files");
  // A header promising 4 MiB of ubyte, then 4 MiB of zeros: a ~4 KiB gzip file.
  Bytes contents{0, 0, 0x08, 1, 0, 0x40, 0, 0};
  contents.resize(contents.size() + (std::size_t{1} << 22), 0);
  const std::string bomb = dir.file("bomb.gz");
  {
    gzFile f = gzopen(bomb.c_str(), "wb9");
    REQUIRE(f != nullptr);
    REQUIRE(gzwrite(f, contents.data(), static_cast<unsigned>(contents.size())) ==
            static_cast<int>(contents.size()));
    REQUIRE(gzclose(f) == Z_OK);
  }
  REQUIRE(fs::file_size(bomb) < 16384);
  const nn::IdxLimits small{.max_decompressed_bytes = std::uint64_t{1} << 20};
  std::string msg = error_message<amari::FormatError>([&] { nn::read_idx(bomb, small); });
  CHECK_THAT(msg, Contains(bomb) && Contains("1048576") &&
                      Contains("IdxLimits::max_decompressed_bytes") && Contains("4194312"));
  CHECK_THROWS_AS(nn::read_idx_labels(bomb, small), amari::FormatError);
  // The default limit (1 GiB) reads it, and a limit of exactly its size too.
  CHECK(nn::read_idx(bomb).bytes.size() == std::size_t{1} << 22);
  CHECK(nn::read_idx(bomb, {.max_decompressed_bytes = contents.size()}).bytes.size() ==
        std::size_t{1} << 22);
  CHECK_THROWS_AS(nn::read_idx(bomb, {.max_decompressed_bytes = contents.size() - 1}),
                  amari::FormatError);

  // Refused from the header alone: cut the data short and the limit, not the truncation, is
  // reported, so nothing past the header was inflated to decide.
  const std::string cut = dir.file("cut.gz");
  Bytes bomb_bytes = read_bytes(bomb);
  bomb_bytes.resize(bomb_bytes.size() / 2);
  write_bytes(cut, bomb_bytes);
  msg = error_message<amari::FormatError>([&] { nn::read_idx(cut, small); });
  CHECK_THAT(msg, Contains("max_decompressed_bytes"));
  // The same limit applies to a plain file.
  const std::string plain = dir.file("plain.idx");
  write_bytes(plain, contents);
  CHECK_THAT(error_message<amari::FormatError>([&] { nn::read_idx(plain, small); }),
             Contains("max_decompressed_bytes"));
}

TEST_CASE(
    "load_parameters: a file above ParameterFileLimits max_file_bytes is refused naming the limit",
    "[files][serialize]") {
  TempDir dir("files");
  const std::string path = dir.file("params.bin");
  nn::Model<float> model(nn::mlp<float>({3, 2}), 5);
  nn::save_parameters(model, path);
  const std::uint64_t size = fs::file_size(path);
  CHECK_NOTHROW(nn::load_parameters(model, path, {.max_file_bytes = size}));
  const std::string msg = error_message<amari::FormatError>(
      [&] { nn::load_parameters(model, path, {.max_file_bytes = size - 1}); });
  CHECK_THAT(msg, Contains(path) &&
                      Contains("more than the limit of " + std::to_string(size - 1)) &&
                      Contains("ParameterFileLimits::max_file_bytes"));
}

TEST_CASE("IdxArray: an array whose dims disagree with its bytes is refused by every consumer",
          "[files][idx]") {
  TempDir dir("files");
  const std::string path = dir.file("kept.idx");
  write_bytes(path, kOld);
  const std::vector<nn::IdxArray> broken = {
      {nn::IdxType::u8, {1000, 1000}, Bytes(4)},       // fewer bytes than the dims need
      {nn::IdxType::f64, {2}, Bytes(8)},               // fewer bytes than the type needs
      {nn::IdxType::u8, {2}, Bytes(3)},                // more bytes
      {nn::IdxType::u8, {}, Bytes(1)},                 // rank 0
      {nn::IdxType::u8, {-1, -1}, Bytes(1)},           // negative dims, product +1
      {static_cast<nn::IdxType>(0x07), {1}, Bytes(1)}  // not a type code
  };
  for (const nn::IdxArray& a : broken) {
    CHECK_THROWS_AS(a.validate(), amari::ValueError);
    CHECK_THROWS_AS(a.value(0), amari::ValueError);
    CHECK_THROWS_AS(nn::idx_to_tensor<float>(a), amari::ValueError);
    CHECK_THROWS_AS(nn::idx_to_tensor<double>(a), amari::ValueError);
    CHECK_THROWS_AS(nn::write_idx(path, a), amari::ValueError);
    CHECK(read_bytes(path) == kOld);
  }
  CHECK_THAT(error_message<amari::ValueError>([&] { broken[0].value(999999); }),
             Contains("(1000, 1000)") && Contains("1000000 bytes, got 4"));
  const nn::IdxArray good{nn::IdxType::u8, {2}, {7, 9}};
  CHECK_NOTHROW(good.validate());
  CHECK(good.value(1) == 9);
  CHECK_THROWS_AS(good.value(2), amari::ValueError);
  CHECK_THROWS_AS(good.value(-1), amari::ValueError);
  CHECK(entries(dir.path()) == std::vector<std::string>{"kept.idx"});
}
