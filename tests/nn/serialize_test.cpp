// Tests of parameter files: bitwise round trips, the documented byte layout, atomic writes, and
// one test per way a file can be wrong. Every failed load must leave the model bitwise unchanged.
#include <amari/nn/serialize.hpp>

#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include <unistd.h>
#include <zlib.h>
#include <catch2/catch.hpp>

#include <amari/nn/layers.hpp>

#include "support/temp_dir.hpp"

namespace {

using amari::test::TempDir;
namespace fs = std::filesystem;
using amari::Index;
using amari::nn::load_parameters;
using amari::nn::Model;
using amari::nn::save_parameters;
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

void put_le(Bytes& out, std::uint64_t v, int bytes) {
  for (int i = 0; i < bytes; ++i) out.push_back(static_cast<std::uint8_t>(v >> (8 * i)));
}

std::uint64_t get_le(const Bytes& b, std::size_t at, int bytes) {
  std::uint64_t v = 0;
  for (int i = bytes - 1; i >= 0; --i) v = (v << 8) | b.at(at + static_cast<std::size_t>(i));
  return v;
}

std::uint32_t crc_of(const Bytes& b, std::size_t n) {
  return static_cast<std::uint32_t>(crc32(0, b.data(), static_cast<uInt>(n)));
}

// Appends the CRC-32 of everything so far (completes a hand-built file).
Bytes sealed(Bytes b) {
  put_le(b, crc_of(b, b.size()), 4);
  return b;
}

// Recomputes the trailing CRC after an edit, so the edit itself is what the loader must catch.
Bytes resealed(Bytes b) {
  b.resize(b.size() - 4);
  return sealed(std::move(b));
}

// The fixed part of a header: magic, version, dtype code, parameter count.
Bytes header(std::uint32_t version, std::uint8_t dtype, std::uint32_t count) {
  Bytes b{'A', 'M', 'A', 'R', 'I', 'P', 'R', 'M'};
  put_le(b, version, 4);
  put_le(b, dtype, 1);
  put_le(b, count, 4);
  return b;
}

// One parameter record: name length, name, rank, dims.
void add_record(Bytes& b, const std::string& name, const std::vector<std::int64_t>& dims) {
  put_le(b, name.size(), 4);
  b.insert(b.end(), name.begin(), name.end());
  put_le(b, dims.size(), 1);
  for (std::int64_t d : dims) put_le(b, static_cast<std::uint64_t>(d), 8);
}

// Linear(3 -> 4), Tanh, Linear(4 -> 2): parameters 0.weight (3, 4), 0.bias (4), 2.weight (4, 2),
// 2.bias (2); 26 elements. Biases start at zero, so they are set to something distinctive.
template <amari::Real T>
Model<T> small_model(std::uint64_t seed, Index hidden = 4) {
  Model<T> m(amari::nn::mlp<T>({3, hidden, 2}), seed);
  for (Index i = 0; i < m.num_parameters(); ++i) {
    m.parameters()[i] +=
        static_cast<T>(0.001 * static_cast<double>(seed + 1) * static_cast<double>(i));
  }
  return m;
}

// The bytes of a model's parameters, for bitwise comparisons.
template <amari::Real T>
Bytes snapshot(const Model<T>& m) {
  const auto* p = reinterpret_cast<const std::uint8_t*>(m.parameters().data());
  return Bytes(p, p + m.num_parameters() * static_cast<Index>(sizeof(T)));
}

// The message of the exception of type E that f throws; fails the test if f does not throw.
template <class E, class F>
std::string error_message(F&& f) {
  try {
    f();
  } catch (const E& e) {
    return e.what();
  } catch (const std::exception& e) {
    FAIL("expected a different exception type, got: " << e.what());
  }
  FAIL("expected an exception, none was thrown");
  return {};
}

// Loads `bytes` (written to `path`) into a fresh float model and checks that it throws E and
// leaves the model bitwise unchanged; returns the message.
template <class E>
std::string failed_load(const std::string& path, const Bytes& bytes) {
  write_bytes(path, bytes);
  Model<float> target = small_model<float>(7);
  const Bytes before = snapshot(target);
  const std::string msg = error_message<E>([&] { load_parameters(target, path); });
  CHECK(snapshot(target) == before);
  return msg;
}

}  // namespace

TEMPLATE_TEST_CASE("save_parameters/load_parameters: parameters round-trip bitwise", "[serialize]",
                   float, double) {
  TempDir dir;
  const std::string path = dir.file("params.bin");
  Model<TestType> source = small_model<TestType>(1);
  // Values whose bits an imprecise format would change.
  source.parameters()[0] = std::numeric_limits<TestType>::quiet_NaN();
  source.parameters()[1] = -TestType(0);
  source.parameters()[2] = std::numeric_limits<TestType>::infinity();
  source.parameters()[3] = std::numeric_limits<TestType>::denorm_min();
  source.parameters()[4] = std::nextafter(TestType(1), TestType(2));
  save_parameters(source, path);

  Model<TestType> target = small_model<TestType>(2);
  REQUIRE(snapshot(target) != snapshot(source));
  load_parameters(target, path);
  CHECK(snapshot(target) == snapshot(source));
}

TEST_CASE("save_parameters: the bytes follow the documented layout", "[serialize]") {
  TempDir dir;
  const std::string path = dir.file("params.bin");
  const Model<double> m = small_model<double>(3);
  save_parameters(m, path);
  const Bytes b = read_bytes(path);

  // Header size: fixed 17 bytes, then per record 4 + name + 1 + 8 * rank.
  std::size_t header_size = 17;
  for (const auto& p : m.layout())
    header_size += 4 + p.name.size() + 1 + 8 * static_cast<std::size_t>(p.shape.rank());
  REQUIRE(b.size() == header_size + 26 * 8 + 4);

  CHECK(std::string(b.begin(), b.begin() + 8) == "AMARIPRM");
  CHECK(get_le(b, 8, 4) == 1);   // version
  CHECK(b[12] == 2);             // float64
  CHECK(get_le(b, 13, 4) == 4);  // four parameters
  CHECK(get_le(b, 17, 4) == 8);  // "0.weight"
  CHECK(std::string(b.begin() + 21, b.begin() + 29) == "0.weight");
  CHECK(b[29] == 2);  // rank
  CHECK(get_le(b, 30, 8) == 3);
  CHECK(get_le(b, 38, 8) == 4);
  // The data, in flat order, little-endian.
  for (Index i = 0; i < 26; ++i) {
    const std::uint64_t bits = get_le(b, header_size + 8 * static_cast<std::size_t>(i), 8);
    double value;
    std::memcpy(&value, &bits, 8);
    CHECK(value == m.parameters()[i]);
  }
  CHECK(get_le(b, b.size() - 4, 4) == crc_of(b, b.size() - 4));
}

TEST_CASE("load_parameters: a file built by hand from the format description loads",
          "[serialize]") {
  TempDir dir;
  const std::string path = dir.file("hand.bin");
  auto net = std::make_shared<amari::nn::Sequential<float>>();
  net->emplace<amari::nn::Linear<float>>(2, 1);
  Model<float> m(net);
  Bytes b = header(1, 1, 2);
  add_record(b, "0.weight", {2, 1});
  add_record(b, "0.bias", {1});
  for (float v : {1.5f, -2.25f, 0.125f}) {
    std::uint32_t bits;
    std::memcpy(&bits, &v, 4);
    put_le(b, bits, 4);
  }
  write_bytes(path, sealed(b));
  load_parameters(m, path);
  CHECK(m.parameters().to_vector() == std::vector<float>{1.5f, -2.25f, 0.125f});
}

TEST_CASE("save_parameters: writes atomically, replaces the old file and leaves no .tmp behind",
          "[serialize]") {
  TempDir dir;
  const std::string path = dir.file("params.bin");
  save_parameters(small_model<float>(1), path);
  const Model<float> second = small_model<float>(2);
  save_parameters(second, path);
  CHECK_FALSE(fs::exists(path + ".tmp"));
  CHECK(std::distance(fs::directory_iterator(dir.path()), fs::directory_iterator()) == 1);
  Model<float> back = small_model<float>(3);
  load_parameters(back, path);
  CHECK(snapshot(back) == snapshot(second));
}

TEST_CASE("save_parameters: a failed save throws IoError and leaves neither a file nor a .tmp",
          "[serialize]") {
  TempDir dir;
  const Model<float> m = small_model<float>(1);
  // No such directory: the .tmp cannot be created.
  const std::string missing = dir.file("no-such-dir/params.bin");
  CHECK_THAT(error_message<amari::IoError>([&] { save_parameters(m, missing); }),
             Contains(missing));
  // The destination is a directory: refused before anything is written, and nothing is left.
  const std::string blocked = dir.file("blocked");
  fs::create_directories(fs::path(blocked) / "inside");
  CHECK_THAT(error_message<amari::IoError>([&] { save_parameters(m, blocked); }),
             Contains(blocked) && Contains("a directory, not a regular file"));
  CHECK_FALSE(fs::exists(blocked + ".tmp"));
  CHECK(fs::is_directory(blocked));
  CHECK(std::distance(fs::directory_iterator(dir.path()), fs::directory_iterator()) == 1);
}

TEST_CASE("load_parameters: a missing file or a directory is an IoError naming the path",
          "[serialize]") {
  TempDir dir;
  Model<float> m = small_model<float>(1);
  const Bytes before = snapshot(m);
  const std::string missing = dir.file("absent.bin");
  CHECK_THAT(error_message<amari::IoError>([&] { load_parameters(m, missing); }),
             Contains(missing) && Contains("cannot open"));
  CHECK_THAT(error_message<amari::IoError>([&] { load_parameters(m, dir.path().string()); }),
             Contains(dir.path().string()));
  CHECK(snapshot(m) == before);
}

TEST_CASE("load_parameters: a wrong magic is a FormatError showing expected and found bytes",
          "[serialize]") {
  TempDir dir;
  const std::string path = dir.file("params.bin");
  save_parameters(small_model<float>(1), path);
  Bytes b = read_bytes(path);
  std::memcpy(b.data(), "GIF89a\x01\x02", 8);
  const std::string msg = failed_load<amari::FormatError>(path, resealed(b));
  CHECK_THAT(msg, Contains(path) && Contains("\"AMARIPRM\"") && Contains("\"GIF89a\\x01\\x02\""));
}

TEST_CASE("load_parameters: an unsupported version is a FormatError naming both versions",
          "[serialize]") {
  TempDir dir;
  const std::string path = dir.file("params.bin");
  save_parameters(small_model<float>(1), path);
  Bytes b = read_bytes(path);
  b[8] = 2;
  CHECK_THAT(failed_load<amari::FormatError>(path, resealed(b)),
             Contains(path) && Contains("version 2") && Contains("expected 1"));
}

TEST_CASE("load_parameters: an unknown dtype code is a FormatError", "[serialize]") {
  TempDir dir;
  const std::string path = dir.file("params.bin");
  save_parameters(small_model<float>(1), path);
  Bytes b = read_bytes(path);
  b[12] = 7;
  CHECK_THAT(failed_load<amari::FormatError>(path, resealed(b)), Contains("dtype code 7"));
}

TEST_CASE("load_parameters: a file of the other dtype is a DTypeError naming both dtypes",
          "[serialize]") {
  TempDir dir;
  const std::string path = dir.file("params.bin");
  save_parameters(small_model<double>(1), path);
  const std::string msg = failed_load<amari::DTypeError>(path, read_bytes(path));
  CHECK_THAT(msg, Contains(path) && Contains("float64") && Contains("float32"));
}

TEST_CASE(
    "load_parameters: a model of another shape is a ShapeError naming the parameter and both "
    "shapes",
    "[serialize]") {
  TempDir dir;
  const std::string path = dir.file("params.bin");
  save_parameters(small_model<float>(1, /*hidden=*/5), path);
  const std::string msg = failed_load<amari::ShapeError>(path, read_bytes(path));
  CHECK_THAT(msg, Contains("\"0.weight\"") && Contains("(3, 5)") && Contains("(3, 4)"));
}

TEST_CASE("load_parameters: a different number of parameters is a ShapeError", "[serialize]") {
  TempDir dir;
  const std::string path = dir.file("params.bin");
  auto no_bias = std::make_shared<amari::nn::Sequential<float>>();
  no_bias->emplace<amari::nn::Linear<float>>(3, 2, /*bias=*/false);
  save_parameters(Model<float>(no_bias, 1), path);
  auto with_bias = std::make_shared<amari::nn::Sequential<float>>();
  with_bias->emplace<amari::nn::Linear<float>>(3, 2);
  Model<float> target(with_bias, 2);
  const Bytes before = snapshot(target);
  CHECK_THAT(error_message<amari::ShapeError>([&] { load_parameters(target, path); }),
             Contains("1 parameters") && Contains("has 2"));
  CHECK(snapshot(target) == before);
}

TEST_CASE("load_parameters: a renamed parameter is a ShapeError naming both names", "[serialize]") {
  TempDir dir;
  const std::string path = dir.file("params.bin");
  save_parameters(small_model<float>(1), path);
  Bytes b = read_bytes(path);
  REQUIRE(b[23] == 'w');  // "0.weight" starts at byte 21
  b[23] = 'W';
  CHECK_THAT(failed_load<amari::ShapeError>(path, resealed(b)),
             Contains("\"0.Weight\"") && Contains("\"0.weight\""));
}

TEST_CASE("load_parameters: a file truncated at any byte is a FormatError and changes nothing",
          "[serialize]") {
  TempDir dir;
  const std::string path = dir.file("params.bin");
  save_parameters(small_model<float>(1), path);
  const Bytes full = read_bytes(path);
  for (std::size_t n = 0; n < full.size(); ++n) {
    INFO("truncated to " << n << " of " << full.size() << " bytes");
    const std::string msg = failed_load<amari::FormatError>(
        path, Bytes(full.begin(), full.begin() + static_cast<std::ptrdiff_t>(n)));
    CHECK_THAT(msg, Contains(path) && Contains("truncated"));
  }
}

TEST_CASE("load_parameters: any corrupted byte is a FormatError and changes nothing",
          "[serialize]") {
  TempDir dir;
  const std::string path = dir.file("params.bin");
  save_parameters(small_model<float>(1), path);
  const Bytes good = read_bytes(path);
  for (std::size_t i = 0; i < good.size(); ++i) {
    INFO("byte " << i << " of " << good.size() << " flipped");
    Bytes bad = good;
    bad[i] ^= 0xff;
    failed_load<amari::FormatError>(path, bad);
  }
  // A corrupted data byte leaves the structure intact: only the checksum can tell.
  Bytes bad = good;
  bad[good.size() - 10] ^= 0x01;
  CHECK_THAT(failed_load<amari::FormatError>(path, bad), Contains("checksum mismatch"));
}

TEST_CASE("load_parameters: bytes after the checksum are a FormatError", "[serialize]") {
  TempDir dir;
  const std::string path = dir.file("params.bin");
  save_parameters(small_model<float>(1), path);
  Bytes b = read_bytes(path);
  b.push_back(0);
  CHECK_THAT(failed_load<amari::FormatError>(path, b), Contains("1 unexpected bytes"));
  CHECK_THAT(failed_load<amari::FormatError>(path, sealed(b)), Contains("5 unexpected bytes"));
}

TEST_CASE("load_parameters: hostile header sizes are FormatErrors raised before any allocation",
          "[serialize]") {
  TempDir dir;
  const std::string path = dir.file("hostile.bin");
  const std::int64_t big = std::int64_t{1} << 40;
  struct Case {
    const char* what;
    Bytes bytes;
    const char* expected;
  };
  std::vector<Case> cases;
  {
    Bytes b = header(1, 1, 1);
    add_record(b, "w", {});
    b.back() = 200;  // the rank byte, last of a record without dims
    cases.push_back({"rank 200", sealed(b), "rank 200"});
  }
  {
    Bytes b = header(1, 1, 1);
    put_le(b, 0xffffffffu, 4);
    cases.push_back({"name length 2^32 - 1", sealed(b), "4294967295 bytes long"});
  }
  {
    Bytes b = header(1, 1, 1);
    add_record(b, "w", {big, big});
    cases.push_back({"2^80 elements", sealed(b), "more than 2^48 elements"});
  }
  {
    Bytes b = header(1, 1, 1);
    add_record(b, "w", {std::numeric_limits<std::int64_t>::max(), 3});
    cases.push_back({"dims near 2^63", sealed(b), "more than 2^48 elements"});
  }
  {
    Bytes b = header(1, 1, 1);
    add_record(b, "w", {4, -1});
    cases.push_back({"negative dimension", sealed(b), "negative dimension"});
  }
  {
    Bytes b = header(1, 1, 3);
    for (const char* name : {"a", "b", "c"}) add_record(b, name, {std::int64_t{1} << 47});
    cases.push_back({"3 x 2^47 elements in total", sealed(b), "more than 2^48 elements in total"});
  }
  {
    Bytes b = header(1, 2, 1);
    add_record(b, "w", {big});  // plausible header, but the data is not there
    cases.push_back({"2^40 promised elements", sealed(b), "truncated"});
  }
  {
    // 4 billion records promised, none present (unsealed: the checksum bytes would be read as
    // the first name length).
    cases.push_back({"count 2^32 - 1", header(1, 1, 0xffffffffu), "truncated"});
  }
  for (const Case& c : cases) {
    INFO(c.what);
    CHECK_THAT(failed_load<amari::FormatError>(path, c.bytes), Contains(c.expected));
  }
}
