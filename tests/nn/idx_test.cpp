// Tests of the IDX reader and writer: round trips of every element type, plain and gzip files, and
// one test per way a file can be wrong, each checking the error type and that the message names
// the file and what was found.
#include <amari/nn/idx.hpp>

#include "support/temp_dir.hpp"

#include <bit>
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <unistd.h>
#include <zlib.h>
#include <catch2/catch.hpp>

namespace {

using amari::test::TempDir;
namespace fs = std::filesystem;
using amari::Index;
using amari::nn::IdxArray;
using amari::nn::IdxCompression;
using amari::nn::IdxType;
using Bytes = std::vector<std::uint8_t>;
using Catch::Matchers::Contains;

// Writes raw bytes, plain or through zlib's gzip writer, so tests can produce malformed files.
void write_bytes(const std::string& path, const Bytes& bytes, bool gzip) {
  if (gzip) {
    gzFile f = gzopen(path.c_str(), "wb");
    REQUIRE(f != nullptr);
    if (!bytes.empty()) {
      REQUIRE(gzwrite(f, bytes.data(), static_cast<unsigned>(bytes.size())) ==
              static_cast<int>(bytes.size()));
    }
    REQUIRE(gzclose(f) == Z_OK);
  } else {
    std::ofstream out(path, std::ios::binary);
    out.write(reinterpret_cast<const char*>(bytes.data()),
              static_cast<std::streamsize>(bytes.size()));
    REQUIRE(out.good());
  }
}

Bytes read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return Bytes(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

void put_be(Bytes& out, std::uint64_t v, int bytes) {
  for (int shift = 8 * (bytes - 1); shift >= 0; shift -= 8) {
    out.push_back(static_cast<std::uint8_t>(v >> shift));
  }
}

// An IDX header: 00 00 type rank, then big-endian 32-bit dims.
Bytes header(std::uint8_t type, const std::vector<std::uint32_t>& dims) {
  Bytes out{0, 0, type, static_cast<std::uint8_t>(dims.size())};
  for (std::uint32_t d : dims) put_be(out, d, 4);
  return out;
}

Bytes concat(Bytes a, const Bytes& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

// 2 images of 2x3 pixels: values 0, 51, 102, ..., 255 and back.
IdxArray small_images() {
  return IdxArray{IdxType::u8, {2, 2, 3}, {0, 51, 102, 153, 204, 255, 255, 0, 1, 2, 3, 4}};
}

// The message of the exception of type E that f throws; fails the test if f does not throw.
template <class E, class F>
std::string error_message(F&& f) {
  try {
    f();
  } catch (const E& e) {
    return e.what();
  }
  FAIL("expected an exception, none was thrown");
  return {};
}

const IdxCompression kBoth[] = {IdxCompression::plain, IdxCompression::gzip};

}  // namespace

TEST_CASE("read_idx: ubyte images round-trip through plain and gzip files", "[idx]") {
  TempDir dir;
  for (IdxCompression c : kBoth) {
    const std::string path = dir.file(c == IdxCompression::gzip ? "images.gz" : "images");
    amari::nn::write_idx(path, small_images(), c);
    const IdxArray back = amari::nn::read_idx(path);
    CHECK(back.type == IdxType::u8);
    CHECK(back.dims == std::vector<Index>{2, 2, 3});
    CHECK(back.bytes == small_images().bytes);
    CHECK(back.numel() == 12);
  }
  // The gzip file really is compressed: it starts with the gzip magic.
  const Bytes raw = read_bytes(dir.file("images.gz"));
  REQUIRE(raw.size() >= 2);
  CHECK((raw[0] == 0x1f && raw[1] == 0x8b));
}

TEST_CASE("read_idx_images: pixels are flattened per image and scaled exactly to 0..1", "[idx]") {
  TempDir dir;
  const std::string path = dir.file("images.gz");
  amari::nn::write_idx(path, small_images(), IdxCompression::gzip);
  const amari::Tensor<float> f = amari::nn::read_idx_images<float>(path);
  const amari::Tensor<double> d = amari::nn::read_idx_images<double>(path);
  REQUIRE(f.shape() == amari::Shape{2, 6});
  REQUIRE(d.shape() == amari::Shape{2, 6});
  const Bytes& px = small_images().bytes;
  for (Index i = 0; i < 12; ++i) {
    CHECK(f[i] == static_cast<float>(px[static_cast<std::size_t>(i)]) / 255.0f);
    CHECK(d[i] == static_cast<double>(px[static_cast<std::size_t>(i)]) / 255.0);
  }
  CHECK(f.at(0, 5) == 1.0f);
  CHECK(f.at(1, 1) == 0.0f);
}

TEST_CASE("read_idx_labels: ubyte rank-1 files become one int per example", "[idx]") {
  TempDir dir;
  const std::string path = dir.file("labels");
  amari::nn::write_idx(path, IdxArray{IdxType::u8, {5}, {9, 0, 0, 3, 255}});
  CHECK(amari::nn::read_idx_labels(path) == std::vector<int>{9, 0, 0, 3, 255});
}

TEST_CASE("read_idx: every element type decodes big-endian values exactly", "[idx]") {
  TempDir dir;
  struct Case {
    IdxType type;
    std::vector<double> values;
  };
  const std::vector<Case> cases = {
      {IdxType::u8, {0, 1, 200, 255}},
      {IdxType::i8, {-128, -1, 0, 127}},
      {IdxType::i16, {-32768, -2, 258, 32767}},
      {IdxType::i32, {-2147483648.0, -3, 16909060, 2147483647}},
      {IdxType::f32, {-1.5, 0.0, 3.25, 0x1p100}},  // all exact in float
      {IdxType::f64, {-2.5, 1.0 / 3.0, 6.02214076e23, -0.0}},
  };
  for (const Case& c : cases) {
    IdxArray a{c.type, {2, 2}, {}};
    for (double v : c.values) {
      switch (c.type) {
        case IdxType::u8:
        case IdxType::i8:
          put_be(a.bytes, static_cast<std::uint8_t>(static_cast<int>(v)), 1);
          break;
        case IdxType::i16:
          put_be(a.bytes, static_cast<std::uint16_t>(static_cast<int>(v)), 2);
          break;
        case IdxType::i32:
          put_be(a.bytes, static_cast<std::uint32_t>(static_cast<std::int32_t>(v)), 4);
          break;
        case IdxType::f32:
          put_be(a.bytes, std::bit_cast<std::uint32_t>(static_cast<float>(v)), 4);
          break;
        case IdxType::f64:
          put_be(a.bytes, std::bit_cast<std::uint64_t>(v), 8);
          break;
      }
    }
    for (IdxCompression comp : kBoth) {
      INFO("type " << amari::nn::idx_type_name(c.type)
                   << (comp == IdxCompression::gzip ? " gzip" : " plain"));
      const std::string path = dir.file("values");
      amari::nn::write_idx(path, a, comp);
      const IdxArray back = amari::nn::read_idx(path);
      REQUIRE(back.type == c.type);
      REQUIRE(back.bytes.size() == 4u * static_cast<std::size_t>(amari::nn::idx_type_size(c.type)));
      const amari::Tensor<double> t = amari::nn::idx_to_tensor<double>(back);
      REQUIRE(t.shape() == amari::Shape{2, 2});
      for (Index i = 0; i < 4; ++i) {
        CHECK(back.value(i) == c.values[static_cast<std::size_t>(i)]);
        CHECK(t[i] == c.values[static_cast<std::size_t>(i)]);
      }
    }
  }
}

TEST_CASE("read_idx: compression is detected from the contents, not from the file name", "[idx]") {
  TempDir dir;
  amari::nn::write_idx(dir.file("looks-plain.idx"), small_images(), IdxCompression::gzip);
  amari::nn::write_idx(dir.file("looks-gzipped.gz"), small_images(), IdxCompression::plain);
  CHECK(amari::nn::read_idx(dir.file("looks-plain.idx")).bytes == small_images().bytes);
  CHECK(amari::nn::read_idx(dir.file("looks-gzipped.gz")).bytes == small_images().bytes);
}

TEST_CASE("read_idx: an empty array (a zero dimension) is read as zero elements", "[idx]") {
  TempDir dir;
  // A zero dimension makes the product 0 however large the other dimensions are.
  write_bytes(dir.file("empty"), header(0x08, {0, 0xffffffffu, 0xffffffffu}), false);
  const IdxArray a = amari::nn::read_idx(dir.file("empty"));
  CHECK(a.numel() == 0);
  CHECK(a.bytes.empty());
  amari::nn::write_idx(dir.file("no-images"), IdxArray{IdxType::u8, {0, 28, 28}, {}});
  CHECK(amari::nn::read_idx_images<float>(dir.file("no-images")).shape() == amari::Shape{0, 784});
}

TEST_CASE("read_idx: a nonexistent file is an IoError that names the file", "[idx]") {
  TempDir dir;
  const std::string path = dir.file("does-not-exist-idx1-ubyte.gz");
  const std::string msg = error_message<amari::IoError>([&] { amari::nn::read_idx(path); });
  CHECK_THAT(msg, Contains("read_idx") && Contains(path) && Contains("No such file"));
}

TEST_CASE("read_idx: a directory is an IoError, not a crash or a FormatError", "[idx]") {
  TempDir dir;
  const std::string path = dir.file("a-directory");
  fs::create_directory(path);
  const std::string msg = error_message<amari::IoError>([&] { amari::nn::read_idx(path); });
  CHECK_THAT(msg, Contains(path));
}

TEST_CASE("read_idx: a bad magic number is a FormatError that shows the bytes found", "[idx]") {
  TempDir dir;
  for (bool gzip : {false, true}) {
    const std::string path = dir.file(gzip ? "bad-magic.gz" : "bad-magic");
    write_bytes(path, concat(Bytes{0x50, 0x4b, 0x03, 0x04}, Bytes(16, 0)), gzip);
    const std::string msg = error_message<amari::FormatError>([&] { amari::nn::read_idx(path); });
    CHECK_THAT(msg, Contains(path) && Contains("magic") && Contains("expected 00 00") &&
                        Contains("found 50 4b 03 04"));
  }
}

TEST_CASE("read_idx: an unknown type code is a FormatError that shows the code", "[idx]") {
  TempDir dir;
  const std::string path = dir.file("bad-type");
  write_bytes(path, concat(header(0x0A, {2}), Bytes{1, 2}), false);
  const std::string msg = error_message<amari::FormatError>([&] { amari::nn::read_idx(path); });
  CHECK_THAT(msg, Contains(path) && Contains("type") && Contains("found 0x0a"));
}

TEST_CASE("read_idx: rank 0 and rank above 4 are FormatErrors that report the rank", "[idx]") {
  TempDir dir;
  const std::string path = dir.file("bad-rank");
  write_bytes(path, concat(header(0x08, {1, 1, 1, 1, 1}), Bytes{7}), false);
  std::string msg = error_message<amari::FormatError>([&] { amari::nn::read_idx(path); });
  CHECK_THAT(
      msg, Contains(path) && Contains("rank") && Contains("expected 1..4") && Contains("found 5"));
  write_bytes(path, Bytes{0, 0, 0x08, 0, 7}, false);
  msg = error_message<amari::FormatError>([&] { amari::nn::read_idx(path); });
  CHECK_THAT(msg, Contains("found 0"));
}

TEST_CASE("read_idx: a truncated header is a FormatError that says how much is there", "[idx]") {
  TempDir dir;
  for (bool gzip : {false, true}) {
    const std::string path = dir.file(gzip ? "short.gz" : "short");
    write_bytes(path, Bytes{}, gzip);
    std::string msg = error_message<amari::FormatError>([&] { amari::nn::read_idx(path); });
    CHECK_THAT(msg, Contains(path) && Contains("truncated header") && Contains("has 0 bytes"));

    write_bytes(path, Bytes{0, 0}, gzip);
    msg = error_message<amari::FormatError>([&] { amari::nn::read_idx(path); });
    CHECK_THAT(msg, Contains("has 2 bytes"));

    // Rank 3 needs 16 header bytes; only the magic and one dimension are there.
    write_bytes(path, Bytes{0, 0, 0x08, 3, 0, 0, 0, 2}, gzip);
    msg = error_message<amari::FormatError>([&] { amari::nn::read_idx(path); });
    CHECK_THAT(msg, Contains("truncated header") && Contains("needs 16 header bytes") &&
                        Contains("file has 8"));
  }
}

TEST_CASE("read_idx: a truncated gzip'd or plain data section is a FormatError that names the file",
          "[idx]") {
  TempDir dir;
  for (bool gzip : {false, true}) {
    const std::string path = dir.file(gzip ? "train-labels.gz" : "train-labels");
    write_bytes(path, concat(header(0x08, {60000}), Bytes(1024, 3)), gzip);
    const std::string msg = error_message<amari::FormatError>([&] { amari::nn::read_idx(path); });
    CHECK_THAT(msg, Contains("read_idx: " + path + ": truncated") &&
                        Contains("promises 60000 bytes of data, file has 1024"));
    if (gzip) CHECK_THAT(msg, Contains("decompress"));
  }
}

TEST_CASE("read_idx: a gzip stream cut short is a FormatError, even if the IDX data is complete",
          "[idx]") {
  TempDir dir;
  const std::string good = dir.file("good.gz");
  amari::nn::write_idx(good, small_images(), IdxCompression::gzip);
  const Bytes raw = read_bytes(good);
  // Dropping the 8-byte trailer (CRC and length) leaves every data byte decodable.
  for (std::size_t cut : {std::size_t{4}, std::size_t{8}, raw.size() / 2}) {
    INFO("cut " << cut << " of " << raw.size() << " bytes");
    const std::string path = dir.file("cut.gz");
    write_bytes(path, Bytes(raw.begin(), raw.end() - static_cast<std::ptrdiff_t>(cut)), false);
    const std::string msg = error_message<amari::FormatError>([&] { amari::nn::read_idx(path); });
    CHECK_THAT(msg, Contains(path));
  }
}

TEST_CASE("read_idx: corrupt gzip data or a wrong checksum is a FormatError", "[idx]") {
  TempDir dir;
  const std::string good = dir.file("good.gz");
  amari::nn::write_idx(good, small_images(), IdxCompression::gzip);
  Bytes raw = read_bytes(good);
  const std::string path = dir.file("bad-crc.gz");
  raw[raw.size() - 8] ^= 0xff;  // first byte of the CRC-32 in the trailer
  write_bytes(path, raw, false);
  const std::string msg = error_message<amari::FormatError>([&] { amari::nn::read_idx(path); });
  CHECK_THAT(msg, Contains(path) && Contains("gzip"));
}

TEST_CASE("read_idx: bytes after the data are a FormatError that counts them", "[idx]") {
  TempDir dir;
  for (bool gzip : {false, true}) {
    const std::string path = dir.file(gzip ? "trailing.gz" : "trailing");
    write_bytes(path, concat(header(0x08, {3}), Bytes{1, 2, 3, 4, 5}), gzip);
    const std::string msg = error_message<amari::FormatError>([&] { amari::nn::read_idx(path); });
    CHECK_THAT(msg, Contains(path) && Contains("trailing") && Contains("end after 11 bytes") &&
                        Contains("found 2 more"));
  }
}

TEST_CASE("read_idx: a header promising more than 2^31 elements is a SizeError before allocating",
          "[idx]") {
  TempDir dir;
  const std::string path = dir.file("huge");
  // 2^16 * 2^16 = 2^32 elements, and every dim at 2^32-1 (whose product overflows 64 bits).
  write_bytes(path, concat(header(0x08, {65536, 65536}), Bytes(16, 0)), false);
  std::string msg = error_message<amari::SizeError>([&] { amari::nn::read_idx(path); });
  CHECK_THAT(msg, Contains(path) && Contains("(65536, 65536)") && Contains("2^31"));
  write_bytes(path, header(0x0E, {0xffffffffu, 0xffffffffu, 0xffffffffu, 0xffffffffu}), false);
  msg = error_message<amari::SizeError>([&] { amari::nn::read_idx(path); });
  CHECK_THAT(msg, Contains("4294967295"));
}

TEST_CASE("read_idx_images: zero images whose rows * cols overflow are a SizeError, not UB",
          "[idx]") {
  // Zero images make the file's element count 0, so read_idx accepts any rows and cols; their
  // product (here about 2^64) overflowed in read_idx_images (found by the idx fuzzer).
  TempDir dir;
  const std::string path = dir.file("no_images");
  write_bytes(path, header(0x08, {0, 0xffffffffu, 0xffffff00u}), false);
  CHECK(amari::nn::read_idx(path).bytes.empty());
  const std::string msg =
      error_message<amari::SizeError>([&] { amari::nn::read_idx_images<float>(path); });
  CHECK_THAT(msg, Contains(path) && Contains("4294967295 x 4294967040") && Contains("2^31"));
}

TEST_CASE("read_idx_images and read_idx_labels reject the wrong type or rank with a FormatError",
          "[idx]") {
  TempDir dir;
  const std::string labels = dir.file("labels");
  const std::string shorts = dir.file("shorts");
  amari::nn::write_idx(labels, IdxArray{IdxType::u8, {3}, {1, 2, 3}});
  amari::nn::write_idx(shorts, IdxArray{IdxType::i16, {1, 1, 2}, {0, 1, 0, 2}});
  std::string msg =
      error_message<amari::FormatError>([&] { amari::nn::read_idx_images<float>(labels); });
  CHECK_THAT(msg, Contains(labels) && Contains("rank 3") && Contains("found type ubyte") &&
                      Contains("rank 1"));
  msg = error_message<amari::FormatError>([&] { amari::nn::read_idx_images<double>(shorts); });
  CHECK_THAT(msg, Contains("found type short (0x0b)"));
  msg = error_message<amari::FormatError>([&] { amari::nn::read_idx_labels(shorts); });
  CHECK_THAT(msg, Contains(shorts) && Contains("rank 1") && Contains("rank 3"));
}

TEST_CASE("write_idx: arrays whose bytes do not match their dims are a ValueError", "[idx]") {
  TempDir dir;
  const std::string path = dir.file("out");
  CHECK_THROWS_AS(amari::nn::write_idx(path, IdxArray{IdxType::u8, {2, 2}, {1, 2, 3}}),
                  amari::ValueError);
  CHECK_THROWS_AS(amari::nn::write_idx(path, IdxArray{IdxType::i32, {2}, {1, 2}}),
                  amari::ValueError);
  CHECK_THROWS_AS(amari::nn::write_idx(path, IdxArray{IdxType::u8, {}, {1}}), amari::ValueError);
  CHECK_THROWS_AS(amari::nn::write_idx(path, IdxArray{IdxType::u8, {1, 1, 1, 1, 1}, {1}}),
                  amari::ValueError);
  CHECK_THROWS_AS(amari::nn::write_idx(dir.file("no-such-dir/out"), small_images()),
                  amari::IoError);
}

TEST_CASE(
    "read_idx: every truncation and every byte corruption of a file is parsed or reported "
    "as an amari::Error",
    "[idx]") {
  // A small exhaustive robustness sweep; run under sanitizers it also checks memory safety.
  TempDir dir;
  const std::string path = dir.file("mutant");
  for (IdxCompression c : kBoth) {
    amari::nn::write_idx(path, small_images(), c);
    const Bytes raw = read_bytes(path);
    std::vector<Bytes> mutants;
    for (std::size_t n = 0; n < raw.size(); ++n)
      mutants.emplace_back(raw.begin(), raw.begin() + static_cast<std::ptrdiff_t>(n));
    for (std::size_t i = 0; i < raw.size(); ++i) {
      for (std::uint8_t flip : {0x01, 0x80, 0xff}) {
        Bytes m = raw;
        m[i] ^= flip;
        mutants.push_back(m);
      }
    }
    int errors = 0;
    for (const Bytes& m : mutants) {
      write_bytes(path, m, false);
      try {
        const IdxArray a = amari::nn::read_idx(path);
        CHECK(static_cast<Index>(a.bytes.size()) == a.numel() * amari::nn::idx_type_size(a.type));
      } catch (const amari::Error&) {
        ++errors;
      }
    }
    // Every truncation must fail; most corruptions too.
    CHECK(errors >= static_cast<int>(raw.size()));
  }
}
