// Tests of safetensors files: model round trips in amari's and PyTorch's conventions, a file built
// by hand in PyTorch's layout, F16/BF16 decoding, the writer's bytes, one test per way a header
// can be wrong, the all-or-nothing guarantee of loads, and parameter files carrying state.
#include <amari/nn/safetensors.hpp>

#include <bit>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include <catch2/catch.hpp>

#include <amari/nn/image_layers.hpp>
#include <amari/nn/layers.hpp>
#include <amari/nn/normalization.hpp>
#include <amari/nn/serialize.hpp>

#include "support/matchers.hpp"
#include "support/temp_dir.hpp"

namespace {

namespace fs = std::filesystem;
using amari::Index;
using amari::Shape;
using amari::Tensor;
using amari::nn::Convention;
using amari::nn::load_safetensors;
using amari::nn::Model;
using amari::nn::SafetensorsFile;
using amari::nn::save_safetensors;
using amari::test::MessageContains;
using amari::test::TempDir;
using Bytes = std::vector<std::uint8_t>;

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

void put_f32(Bytes& out, float v) {
  put_le(out, std::bit_cast<std::uint32_t>(v), 4);
}

// A safetensors file from its header text and data section, built from the format description.
Bytes st_file(const std::string& json, const Bytes& data = {}) {
  Bytes b;
  put_le(b, json.size(), 8);
  b.insert(b.end(), json.begin(), json.end());
  b.insert(b.end(), data.begin(), data.end());
  return b;
}

// Conv2d (2 -> 4, kernel 3x2, padding 1, groups 2), BatchNorm, ReLU, Flatten, Linear (80 -> 5):
// a rectangular kernel and groups, so a mixed-up axis shows. Input (N, 4, 4, 2).
template <class T>
Model<T> cnn(std::uint64_t seed) {
  auto net = std::make_shared<amari::nn::Sequential<T>>();
  net->template emplace<amari::nn::Conv2d<T>>(2, 4, std::array<Index, 2>{3, 2},
                                              amari::Conv2dOptions{.padding = {1, 1}, .groups = 2});
  net->template emplace<amari::nn::BatchNorm<T>>(4);
  net->template emplace<amari::nn::ReLU<T>>();
  net->template emplace<amari::nn::Flatten<T>>();
  net->template emplace<amari::nn::Linear<T>>(80, 5);
  Model<T> m(net, seed);
  // Non-trivial values for what initializes to constants: biases, the norm, its statistics.
  for (Index i = 0; i < m.num_parameters(); ++i) {
    m.parameters()[i] +=
        static_cast<T>(0.01 * static_cast<double>((i * 7 + static_cast<Index>(seed)) % 13));
  }
  for (Index k = 0; k < 4; ++k) {
    m.state()[k] =
        static_cast<T>(0.1 * static_cast<double>(k) - 0.2 + 0.01 * static_cast<double>(seed));
    m.state()[4 + k] =
        static_cast<T>(0.5 + 0.3 * static_cast<double>(k) + 0.01 * static_cast<double>(seed));
  }
  m.eval();  // the forward pass then uses the running statistics
  return m;
}

template <class T>
Tensor<T> images() {
  Tensor<T> x(Shape{3, 4, 4, 2});
  for (Index i = 0; i < x.size(); ++i)
    x[i] = static_cast<T>(std::sin(0.37 * static_cast<double>(i)));
  return x;
}

template <class T>
Bytes bits_of(const Tensor<T>& t) {
  const auto* p = reinterpret_cast<const std::uint8_t*>(t.data());
  return Bytes(p, p + t.size() * static_cast<Index>(sizeof(T)));
}

// Matches a message containing every part (case-insensitive), like MessageContains for strings.
class TextContains : public Catch::MatcherBase<std::string> {
 public:
  explicit TextContains(std::vector<std::string> parts) : parts_(std::move(parts)) {}
  bool match(const std::string& text) const override {
    return MessageContains(parts_).match(std::runtime_error(text));
  }
  std::string describe() const override { return MessageContains(parts_).describe(); }

 private:
  std::vector<std::string> parts_;
};

// The message of the exception of type E that f throws; fails the test otherwise.
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

// Loads `bytes` into a fresh cnn<float> and checks it throws E leaving parameters and state
// bitwise unchanged; returns the message.
template <class E>
std::string failed_load(const std::string& path, const Bytes& bytes,
                        Convention c = Convention::pytorch) {
  write_bytes(path, bytes);
  Model<float> m = cnn<float>(9);
  const Bytes params = bits_of(m.parameters()), state = bits_of(m.state());
  const std::string msg = error_message<E>([&] { load_safetensors(m, path, c); });
  CHECK(bits_of(m.parameters()) == params);
  CHECK(bits_of(m.state()) == state);
  return msg;
}

// ---- a file in PyTorch's layout, built by hand
// -----------------------------------------------------

struct HandTensor {
  std::string name, dtype;
  std::vector<Index> shape;
  Bytes data;
};

std::string shape_json(const std::vector<Index>& s) {
  std::string out = "[";
  for (std::size_t i = 0; i < s.size(); ++i) out += (i ? "," : "") + std::to_string(s[i]);
  return out + "]";
}

// Lays the tensors out in the given order, with whitespace as a human would write it.
Bytes hand_file(const std::vector<HandTensor>& tensors, const std::string& metadata = "") {
  std::string json = "{ " + metadata;
  Bytes data;
  for (const HandTensor& t : tensors) {
    if (json.size() > 2) json += ", ";
    json += "\"" + t.name + "\": {\"dtype\": \"" + t.dtype +
            "\", \"shape\": " + shape_json(t.shape) + ", \"data_offsets\": [" +
            std::to_string(data.size()) + ", " + std::to_string(data.size() + t.data.size()) + "]}";
    data.insert(data.end(), t.data.begin(), t.data.end());
  }
  return st_file(json + " }   ", data);
}

// cnn<T>'s state_dict as PyTorch would save it (F32), the weights rearranged by explicit loops
// from the layouts' definitions: conv (O, I/g, KH, KW) from amari's (KH, KW, I/g, O), linear
// (out, in) from amari's (in, out).
template <class T>
std::vector<HandTensor> torch_state_dict(const Model<T>& m) {
  const auto& v = m.parameter_views();  // 0.weight, 0.bias, 1.weight, 1.bias, 4.weight, 4.bias
  auto f32 = [](const Tensor<T>& t) {
    Bytes b;
    for (Index i = 0; i < t.size(); ++i) put_f32(b, static_cast<float>(t[i]));
    return b;
  };
  Bytes conv;
  for (Index o = 0; o < 4; ++o)
    for (Index i = 0; i < 1; ++i)
      for (Index kh = 0; kh < 3; ++kh)
        for (Index kw = 0; kw < 2; ++kw) put_f32(conv, static_cast<float>(v[0].at(kh, kw, i, o)));
  Bytes linear;
  for (Index o = 0; o < 5; ++o)
    for (Index i = 0; i < 80; ++i) put_f32(linear, static_cast<float>(v[4].at(i, o)));
  const Tensor<T> mean = m.state().view(0, Shape{4}), var = m.state().view(4, Shape{4});
  Bytes count;
  put_le(count, 12345, 8);
  // In PyTorch's alphabetical-ish order, not amari's: the loader goes by name.
  return {{"4.weight", "F32", {5, 80}, linear},    {"0.weight", "F32", {4, 1, 3, 2}, conv},
          {"0.bias", "F32", {4}, f32(v[1])},       {"1.weight", "F32", {4}, f32(v[2])},
          {"1.bias", "F32", {4}, f32(v[3])},       {"1.running_mean", "F32", {4}, f32(mean)},
          {"1.running_var", "F32", {4}, f32(var)}, {"1.num_batches_tracked", "I64", {}, count},
          {"4.bias", "F32", {5}, f32(v[5])}};
}

}  // namespace

// ---- model round trips
// ----------------------------------------------------------------------------

TEMPLATE_TEST_CASE(
    "save_safetensors/load_safetensors: parameters and state round-trip bitwise in "
    "both conventions, and forward outputs agree",
    "[safetensors]", float, double) {
  TempDir dir;
  for (Convention c : {Convention::amari, Convention::pytorch}) {
    INFO("convention " << (c == Convention::amari ? "amari" : "pytorch"));
    const std::string path = dir.file("model.safetensors");
    Model<TestType> source = cnn<TestType>(1);
    source.parameters()[0] = std::numeric_limits<TestType>::denorm_min();
    source.parameters()[1] = -TestType(0);
    save_safetensors(source, path, c);
    Model<TestType> target = cnn<TestType>(2);
    REQUIRE(bits_of(target.parameters()) != bits_of(source.parameters()));
    REQUIRE(bits_of(target.state()) != bits_of(source.state()));
    load_safetensors(target, path, c);
    CHECK(bits_of(target.parameters()) == bits_of(source.parameters()));
    CHECK(bits_of(target.state()) == bits_of(source.state()));
    CHECK(bits_of(target.forward(images<TestType>())) ==
          bits_of(source.forward(images<TestType>())));
  }
}

TEST_CASE("save_safetensors: the pytorch convention writes PyTorch's shapes, names and counters",
          "[safetensors]") {
  TempDir dir;
  const std::string path = dir.file("torch.safetensors");
  const Model<float> m = cnn<float>(1);
  save_safetensors(m, path, Convention::pytorch);
  const SafetensorsFile f = SafetensorsFile::read(path);
  CHECK(f.names().size() == 9);
  CHECK(f.entry("0.weight").shape == std::vector<std::uint64_t>{4, 1, 3, 2});
  CHECK(f.entry("4.weight").shape == std::vector<std::uint64_t>{5, 80});
  CHECK(f.entry("1.running_var").shape == std::vector<std::uint64_t>{4});
  CHECK(f.entry("1.num_batches_tracked").dtype == amari::nn::SafetensorsDType::I64);
  CHECK(f.entry("1.num_batches_tracked").shape.empty());
  CHECK(f.get_integers("1.num_batches_tracked") == std::vector<std::int64_t>{0});
  CHECK(f.metadata().at("format") == "pt");
  CHECK(f.metadata().at("amari.convention") == "pytorch");
  // The 8-byte counter comes first, so every tensor is aligned to its element size.
  CHECK(f.entry("1.num_batches_tracked").begin == 0);
  const Tensor<float> w = f.get<float>("4.weight");
  CHECK(w.at(3, 17) == m.parameter_views()[4].at(17, 3));

  const std::string amari_path = dir.file("amari.safetensors");
  save_safetensors(m, amari_path, Convention::amari);
  const SafetensorsFile a = SafetensorsFile::read(amari_path);
  CHECK(a.names().size() == 8);
  CHECK(a.entry("0.weight").shape == std::vector<std::uint64_t>{3, 2, 1, 4});
  CHECK_FALSE(a.contains("1.num_batches_tracked"));
}

TEMPLATE_TEST_CASE(
    "load_safetensors: a PyTorch state_dict built by hand loads to the same "
    "forward values as the model it was made from",
    "[safetensors]", float, double) {
  TempDir dir;
  const std::string path = dir.file("hand.safetensors");
  const Model<TestType> source = cnn<TestType>(3);
  write_bytes(path, hand_file(torch_state_dict(source), "\"__metadata__\": {\"format\": \"pt\"}"));
  Model<TestType> target = cnn<TestType>(4);
  load_safetensors(target, path, Convention::pytorch);
  const Tensor<TestType> want = source.forward(images<TestType>());
  const Tensor<TestType> got = target.forward(images<TestType>());
  if constexpr (std::is_same_v<TestType, float>) {
    CHECK(bits_of(target.parameters()) == bits_of(source.parameters()));
    CHECK(bits_of(target.state()) == bits_of(source.state()));
    CHECK(bits_of(got) == bits_of(want));
  } else {
    // An F32 file into a double model: every value is the float rounding of the source's.
    for (Index i = 0; i < source.num_parameters(); ++i) {
      CHECK(target.parameters()[i] ==
            static_cast<double>(static_cast<float>(source.parameters()[i])));
    }
    for (Index i = 0; i < got.size(); ++i)
      CHECK(got[i] == Approx(want[i]).epsilon(1e-5).margin(1e-6));
  }
}

TEST_CASE("load_safetensors: F64 files load into float models and F32 files into double models",
          "[safetensors]") {
  TempDir dir;
  const std::string path = dir.file("m.safetensors");
  const Model<double> d = cnn<double>(5);
  save_safetensors(d, path, Convention::pytorch);
  Model<float> f = cnn<float>(6);
  load_safetensors(f, path, Convention::pytorch);
  for (Index i = 0; i < d.num_parameters(); ++i) {
    CHECK(f.parameters()[i] == static_cast<float>(d.parameters()[i]));
  }
  for (Index i = 0; i < d.state().size(); ++i)
    CHECK(f.state()[i] == static_cast<float>(d.state()[i]));
  save_safetensors(f, path, Convention::amari);
  Model<double> back = cnn<double>(7);
  load_safetensors(back, path, Convention::amari);
  for (Index i = 0; i < d.num_parameters(); ++i)
    CHECK(back.parameters()[i] == double(f.parameters()[i]));
}

// ---- element types
// -----------------------------------------------------------------------------------

TEMPLATE_TEST_CASE(
    "SafetensorsFile::get: F16 and BF16 decode exactly, subnormals, infinities and "
    "NaN included",
    "[safetensors]", float, double) {
  using T = TestType;
  const T inf = std::numeric_limits<T>::infinity();
  const std::vector<std::pair<std::uint16_t, T>> f16 = {
      {0x0000, T(0)},
      {0x3c00, T(1)},
      {0xc000, T(-2)},
      {0x7bff, T(65504)},
      {0x0001, std::ldexp(T(1), -24)},     // smallest subnormal
      {0x03ff, std::ldexp(T(1023), -24)},  // largest subnormal
      {0x0400, std::ldexp(T(1), -14)},     // smallest normal
      {0x3555, T(0.333251953125)},
      {0x7c00, inf},
      {0xfc00, -inf}};
  const std::vector<std::pair<std::uint16_t, T>> bf16 = {
      {0x3f80, T(1)},
      {0xc000, T(-2)},
      {0x4049, T(3.140625)},
      {0x0001, std::ldexp(T(1), -133)},  // a float subnormal
      {0x7f7f, T(3.3895313892515355e38)},
      {0x7f80, inf},
      {0xff80, -inf}};
  Bytes data;
  for (const auto& [bits, value] : f16) put_le(data, bits, 2);
  put_le(data, 0x7e00, 2);  // NaN
  put_le(data, 0x8000, 2);  // -0
  const std::size_t f16_bytes = data.size();
  for (const auto& [bits, value] : bf16) put_le(data, bits, 2);
  put_le(data, 0x7fc0, 2);  // NaN
  const std::string json = "{\"h\":{\"dtype\":\"F16\",\"shape\":[" +
                           std::to_string(f16.size() + 2) + "],\"data_offsets\":[0," +
                           std::to_string(f16_bytes) + "]},\"b\":{\"dtype\":\"BF16\",\"shape\":[" +
                           std::to_string(bf16.size() + 1) + "],\"data_offsets\":[" +
                           std::to_string(f16_bytes) + "," + std::to_string(data.size()) + "]}}";
  const SafetensorsFile f = SafetensorsFile::parse(st_file(json, data), "halves");
  const Tensor<T> h = f.get<T>("h");
  for (std::size_t i = 0; i < f16.size(); ++i) {
    INFO("F16 0x" << std::hex << f16[i].first);
    CHECK(h[static_cast<Index>(i)] == f16[i].second);
  }
  CHECK(std::isnan(h[static_cast<Index>(f16.size())]));
  CHECK(h[static_cast<Index>(f16.size()) + 1] == T(0));
  CHECK(std::signbit(h[static_cast<Index>(f16.size()) + 1]));
  const Tensor<T> b = f.get<T>("b");
  for (std::size_t i = 0; i < bf16.size(); ++i) {
    INFO("BF16 0x" << std::hex << bf16[i].first);
    CHECK(b[static_cast<Index>(i)] == bf16[i].second);
  }
  CHECK(std::isnan(b[static_cast<Index>(bf16.size())]));
}

TEST_CASE("SafetensorsFile::get: F64 into float rounds to nearest and overflows to infinity",
          "[safetensors]") {
  const std::vector<double> values = {
      0.1, 1e300, -1e300, 3.4028235e38, 1e-50, -0.0, 3.4028235677973366e38};
  Bytes data;
  for (double v : values) put_le(data, std::bit_cast<std::uint64_t>(v), 8);
  const SafetensorsFile f = SafetensorsFile::parse(
      st_file("{\"d\":{\"dtype\":\"F64\",\"shape\":[7],\"data_offsets\":[0,56]}}", data), "f64");
  const Tensor<float> d = f.get<float>("d");
  CHECK(d[0] == 0.1f);
  CHECK(d[1] == std::numeric_limits<float>::infinity());
  CHECK(d[2] == -std::numeric_limits<float>::infinity());
  CHECK(d[3] == std::numeric_limits<float>::max());  // just below the rounding midpoint
  CHECK(d[4] == 0.0f);
  CHECK(std::signbit(d[5]));
  CHECK(d[6] ==
        std::numeric_limits<float>::infinity());  // the midpoint 2^128 - 2^103: ties to even
  CHECK(f.get<double>("d").to_vector() == values);
}

TEST_CASE("load_safetensors: F16 and BF16 tensors load into a model", "[safetensors]") {
  TempDir dir;
  const std::string path = dir.file("half.safetensors");
  auto net = std::make_shared<amari::nn::Sequential<double>>();
  net->emplace<amari::nn::Linear<double>>(2, 1);
  Model<double> m(net, 1);
  Bytes w, b;
  put_le(w, 0x3c00, 2);  // (out, in) = (1, 2): 1, -2
  put_le(w, 0xc000, 2);
  put_le(b, 0x3f00, 2);  // BF16 0.5
  write_bytes(path, hand_file({{"0.weight", "F16", {1, 2}, w}, {"0.bias", "BF16", {1}, b}}));
  load_safetensors(m, path, Convention::pytorch);
  CHECK(m.parameters().to_vector() == std::vector<double>{1, -2, 0.5});
}

// ---- the writer and the reader on their own
// -----------------------------------------------------------

TEST_CASE("SafetensorsWriter: the bytes match the reference implementation's for one tensor",
          "[safetensors]") {
  // safetensors' own test of its serializer: "attn.0", F32, shape (1, 2, 3), values 0..5.
  amari::nn::SafetensorsWriter w;
  w.add("attn.0", Tensor<float>::from(Shape{1, 2, 3}, {0, 1, 2, 3, 4, 5}));
  Bytes expected;
  const std::string json =
      "{\"attn.0\":{\"dtype\":\"F32\",\"shape\":[1,2,3],\"data_offsets\":[0,24]}}";
  REQUIRE(json.size() == 64);  // a multiple of 8: no padding
  put_le(expected, 64, 8);
  expected.insert(expected.end(), json.begin(), json.end());
  for (float v : {0.f, 1.f, 2.f, 3.f, 4.f, 5.f}) put_f32(expected, v);
  CHECK(w.bytes() == expected);

  amari::nn::SafetensorsWriter empty;
  CHECK(empty.bytes() == Bytes{8, 0, 0, 0, 0, 0, 0, 0, '{', '}', ' ', ' ', ' ', ' ', ' ', ' '});
}

TEST_CASE("SafetensorsWriter: names are escaped, metadata is written, and the file reads back",
          "[safetensors]") {
  TempDir dir;
  const std::string path = dir.file("w.safetensors");
  amari::nn::SafetensorsWriter w;
  const std::string odd = "a \"quoted\"\\name\n\xc3\xa9";
  w.add(odd, Tensor<double>::from(Shape{2}, {1.5, -2.5}));
  w.add("scalar", Tensor<float>::scalar(7.f));
  w.add("empty", Tensor<float>(Shape{0, 3}));
  w.add_int64("count", {}, {-3});
  w.set_metadata("key", "value \"with\" quotes");
  w.write(path);
  CHECK_FALSE(fs::exists(path + ".tmp"));
  const Bytes b = read_bytes(path);
  CHECK((b[0] | (b[1] << 8)) % 8 == 0);
  const SafetensorsFile f = SafetensorsFile::read(path);
  CHECK(f.get<double>(odd).to_vector() == std::vector<double>{1.5, -2.5});
  CHECK(f.get<float>("scalar").item() == 7.f);
  CHECK(f.get<float>("empty").shape() == Shape{0, 3});
  CHECK(f.get_integers("count") == std::vector<std::int64_t>{-3});
  CHECK(f.metadata().at("key") == "value \"with\" quotes");
  CHECK_THROWS_AS(w.add("scalar", Tensor<float>::scalar(1.f)), amari::ValueError);
  CHECK_THROWS_AS(w.add("__metadata__", Tensor<float>::scalar(1.f)), amari::ValueError);
  CHECK_THROWS_AS(w.add("\xff", Tensor<float>::scalar(1.f)), amari::ValueError);
  CHECK_THROWS_AS(w.add_int64("bad", {2}, {1}), amari::ValueError);
}

TEST_CASE("SafetensorsFile: valid edge cases are accepted", "[safetensors]") {
  // Empty tensors sharing an offset, a scalar, any order in the header, escapes in names, a rank-5
  // tensor (readable, but not as an amari Tensor), tabs and newlines, padding.
  Bytes data;
  put_f32(data, 2.f);
  for (int i = 0; i < 32; ++i) data.push_back(0);
  const std::string json =
      "{\n\t\"s\" : {\"shape\": [], \"data_offsets\": [0, 4], \"dtype\": \"F32\"},\n"
      "\"e1\": {\"dtype\": \"F64\", \"shape\": [0], \"data_offsets\": [4, 4]},\n"
      "\"e2\": {\"dtype\": \"I64\", \"shape\": [3, 0, 281474976710656], \"data_offsets\": [4, "
      "4]},\n"
      "\"r5\": {\"dtype\": \"U8\", \"shape\": [1, 2, 2, 2, 4], \"data_offsets\": [4, 36]},\n"
      "\"\\u00e9\\ud83d\\ude00\\/\\t\": {\"dtype\": \"BOOL\", \"shape\": [0], \"data_offsets\": "
      "[36, 36]},\n"
      "\"__metadata__\": {}}\r\n   ";
  const SafetensorsFile f = SafetensorsFile::parse(st_file(json, data), "edges");
  CHECK(f.names().size() == 5);
  CHECK(f.get<float>("s").item() == 2.f);
  CHECK(f.get<double>("e1").size() == 0);
  CHECK(f.contains("\xc3\xa9\xf0\x9f\x98\x80/\t"));
  CHECK(f.data("r5").size() == 32);
  CHECK_THROWS_MATCHES(f.get<float>("r5"), amari::DTypeError, MessageContains({"r5", "U8"}));
  CHECK(f.get_integers("r5").size() == 32);
  CHECK_THROWS_MATCHES(f.get_integers("s"), amari::DTypeError, MessageContains({"F32"}));
  CHECK_THROWS_MATCHES(f.get<float>("nope"), amari::ValueError, MessageContains({"nope", "edges"}));

  Bytes five;
  put_f32(five, 1.f);
  const SafetensorsFile g = SafetensorsFile::parse(
      st_file("{\"t\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1],\"data_offsets\":[0,4]}}", five),
      "rank5");
  CHECK_THROWS_MATCHES(g.get<float>("t"), amari::ShapeError,
                       MessageContains({"rank 5", "(1, 1, 1, 1, 1)"}));
}

TEST_CASE("SafetensorsFile: every malformed file is a FormatError naming the file and the problem",
          "[safetensors]") {
  TempDir dir;
  const std::string path = dir.file("bad.safetensors");
  Bytes four;
  put_f32(four, 1.f);
  Bytes eight = four;
  put_f32(eight, 2.f);
  const std::string ok = "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}";
  struct Case {
    const char* what;
    Bytes bytes;
    std::vector<std::string> expected;
  };
  Bytes huge_length;
  put_le(huge_length, std::uint64_t{1} << 40, 8);
  Bytes short_length;
  put_le(short_length, 100, 8);
  short_length.push_back('{');
  const std::vector<Case> cases = {
      {"fewer than 8 bytes", Bytes{1, 2, 3}, {"truncated", "8-byte"}},
      {"header length above the limit", huge_length, {"header too large", "1099511627776"}},
      {"header longer than the file", short_length, {"truncated", "header length is 100"}},
      {"empty header", st_file(""), {"begin with '{'"}},
      {"header not UTF-8", st_file("{\"\xc0\xaf\":1}"), {"UTF-8", "byte 2"}},
      {"surrogate in UTF-8", st_file("{\"\xed\xa0\x80\":1}"), {"UTF-8"}},
      {"header not starting with {", st_file(" {}"), {"begin with '{'"}},
      {"a JSON array", st_file("[]"), {"begin with '{'"}},
      {"unterminated object",
       st_file(ok.substr(0, ok.size() - 1), four),
       {"bad JSON", "',' or '}'"}},
      {"trailing bytes after the object", st_file("{}x"), {"unexpected bytes after"}},
      {"trailing NUL padding", st_file(std::string("{}\0\0", 4)), {"unexpected bytes after"}},
      {"key not a string", st_file("{a:1}"), {"expected a key"}},
      {"tensor not an object", st_file("{\"a\":[1]}"), {"must be an object", "\"a\""}},
      {"duplicate tensor names",
       st_file("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
               "\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}",
               eight),
       {"duplicate tensor name \"a\""}},
      {"duplicate field",
       st_file("{\"a\":{\"dtype\":\"F32\",\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}",
               four),
       {"duplicate field \"dtype\""}},
      {"duplicate metadata",
       st_file("{\"__metadata__\":{},\"__metadata__\":{}}"),
       {"duplicate key"}},
      {"duplicate metadata key",
       st_file("{\"__metadata__\":{\"k\":\"1\",\"k\":\"2\"}}"),
       {"duplicate metadata key \"k\""}},
      {"metadata value not a string",
       st_file("{\"__metadata__\":{\"k\":1}}"),
       {"must be a string", "\"k\""}},
      {"metadata not an object", st_file("{\"__metadata__\":\"x\"}"), {"__metadata__", "object"}},
      {"unknown dtype",
       st_file("{\"a\":{\"dtype\":\"F128\",\"shape\":[1],\"data_offsets\":[0,4]}}", four),
       {"unknown dtype \"F128\"", "\"a\""}},
      {"unknown field",
       st_file("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4],\"x\":1}}", four),
       {"unknown field \"x\""}},
      {"missing field",
       st_file("{\"a\":{\"dtype\":\"F32\",\"data_offsets\":[0,4]}}", four),
       {"no \"shape\"", "\"a\""}},
      {"negative dimension",
       st_file("{\"a\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,4]}}", four),
       {"negative"}},
      {"fractional dimension",
       st_file("{\"a\":{\"dtype\":\"F32\",\"shape\":[1.0],\"data_offsets\":[0,4]}}", four),
       {"not an integer"}},
      {"exponent",
       st_file("{\"a\":{\"dtype\":\"F32\",\"shape\":[1e0],\"data_offsets\":[0,4]}}", four),
       {"not an integer"}},
      {"leading zero",
       st_file("{\"a\":{\"dtype\":\"F32\",\"shape\":[01],\"data_offsets\":[0,4]}}", four),
       {"leading zero"}},
      {"number above 2^64",
       st_file(
           "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,18446744073709551616]}}",
           four),
       {"64 bits"}},
      {"dimension above 2^48",
       st_file("{\"a\":{\"dtype\":\"F32\",\"shape\":[281474976710657],\"data_offsets\":[0,4]}}",
               four),
       {"above 2^48"}},
      {"three offsets",
       st_file("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4,8]}}", four),
       {"more than 2 entries"}},
      {"one offset",
       st_file("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0]}}", four),
       {"must have 2 entries"}},
      {"control character in a name", st_file("{\"a\nb\":1}"), {"control character 10"}},
      {"bad escape", st_file("{\"a\\x\":1}"), {"invalid escape \\x"}},
      {"lone surrogate escape", st_file("{\"\\ud800\":1}"), {"surrogate"}},
      {"unterminated string", st_file("{\"abc"), {"unterminated string"}},
      {"offsets beyond the data (truncated data)",
       st_file(ok, Bytes{0, 0}),
       {"out of range", "\"a\"", "2 bytes"}},
      {"end before begin",
       st_file("{\"a\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[4,0]}}", four),
       {"end is before"}},
      {"overlapping tensors",
       st_file("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
               "\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}",
               eight),
       {"overlaps", "\"a\"", "\"b\""}},
      {"a gap between tensors",
       st_file("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}", eight),
       {"gap of 4 bytes"}},
      {"bytes after the last tensor", st_file(ok, eight), {"not part of any tensor", "4 bytes"}},
      {"shape and offsets disagree",
       st_file("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,4]}}", four),
       {"\"a\"", "needs 8 bytes", "span 4"}},
      {"element size does not divide the span",
       st_file("{\"a\":{\"dtype\":\"F64\",\"shape\":[1],\"data_offsets\":[0,4]}}", four),
       {"needs 8 bytes"}},
      {"element count overflows",
       st_file("{\"a\":{\"dtype\":\"F32\",\"shape\":[281474976710656,281474976710656],\"data_"
               "offsets\":[0,4]}}",
               four),
       {"more than 2^64"}},
  };
  for (const Case& c : cases) {
    INFO(c.what);
    write_bytes(path, c.bytes);
    std::vector<std::string> parts = c.expected;
    parts.push_back(path);
    CHECK_THROWS_MATCHES(SafetensorsFile::read(path), amari::FormatError, MessageContains(parts));
  }
  // A file above the caller's size limit is refused before it is read.
  write_bytes(path, st_file(ok, four));
  CHECK_NOTHROW(SafetensorsFile::read(path));
  CHECK_THROWS_MATCHES(SafetensorsFile::read(path, {.max_file_bytes = 16}), amari::FormatError,
                       MessageContains({"more than the limit of 16", "max_file_bytes"}));
  CHECK_THROWS_MATCHES(SafetensorsFile::read(path, {.max_header_bytes = 8}), amari::FormatError,
                       MessageContains({"header too large", "max_header_bytes"}));
  // I/O failures are IoErrors.
  CHECK_THROWS_MATCHES(SafetensorsFile::read(dir.file("missing")), amari::IoError,
                       MessageContains({"missing", "cannot open"}));
  CHECK_THROWS_MATCHES(SafetensorsFile::read(dir.str()), amari::IoError,
                       MessageContains({"not a regular file"}));
}

// ---- all or nothing
// ----------------------------------------------------------------------------------

TEST_CASE(
    "load_safetensors: a file that does not fit the model changes nothing and names the "
    "problem",
    "[safetensors]") {
  TempDir dir;
  const std::string path = dir.file("m.safetensors");
  const Model<float> source = cnn<float>(3);
  const auto with = [&](auto edit) {
    std::vector<HandTensor> t = torch_state_dict(source);
    edit(t);
    return hand_file(t);
  };
  const auto find = [](std::vector<HandTensor>& t, const std::string& name) -> HandTensor& {
    for (HandTensor& h : t) {
      if (h.name == name) return h;
    }
    FAIL("no " << name);
    return t[0];
  };
  // The last tensor in file order is wrong: everything before it was already readable.
  CHECK_THAT(failed_load<amari::ShapeError>(path, with([&](auto& t) {
                                              find(t, "4.bias").shape = {1, 5};
                                            })),
             TextContains({"\"4.bias\"", "(1, 5)", "(5)"}));
  // A Linear weight in amari's layout where PyTorch's is expected.
  CHECK_THAT(failed_load<amari::ShapeError>(path, with([&](auto& t) {
                                              find(t, "4.weight").shape = {80, 5};
                                            })),
             TextContains({"\"4.weight\"", "(80, 5)", "(5, 80)", "transposed"}));
  CHECK_THAT(failed_load<amari::ShapeError>(path, with([&](auto& t) {
                                              find(t, "0.weight").shape = {4, 1, 2, 3};
                                            })),
             TextContains({"\"0.weight\"", "(4, 1, 2, 3)", "(4, 1, 3, 2)", "hwio"}));
  CHECK_THAT(failed_load<amari::ShapeError>(path, with([&](auto& t) { t.erase(t.begin() + 5); })),
             TextContains({"missing", "\"1.running_mean\""}));
  CHECK_THAT(failed_load<amari::ShapeError>(
                 path, with([&](auto& t) { find(t, "1.bias").name = "1.beta"; })),
             TextContains({"missing", "\"1.bias\"", "not in the model", "\"1.beta\""}));
  CHECK_THAT(
      failed_load<amari::DTypeError>(path, with([&](auto& t) { find(t, "4.bias").dtype = "I32"; })),
      TextContains({"\"4.bias\"", "I32"}));
  CHECK_THAT(failed_load<amari::DTypeError>(path, with([&](auto& t) {
                                              auto& c = find(t, "1.num_batches_tracked");
                                              c.dtype = "F64";
                                            })),
             TextContains({"num_batches_tracked", "F64"}));
  // The counter is PyTorch's: in amari's convention it is an unexpected tensor.
  std::vector<HandTensor> amari_names = torch_state_dict(source);
  CHECK_THAT(failed_load<amari::ShapeError>(path, hand_file(amari_names), Convention::amari),
             TextContains({"not in the model", "num_batches_tracked"}));
  // A malformed file.
  Bytes truncated = with([](auto&) {});
  truncated.pop_back();
  CHECK_THAT(failed_load<amari::FormatError>(path, truncated),
             TextContains({path, "out of range"}));
  // A file written in the other convention (a square weight would otherwise load transposed).
  save_safetensors(source, path, Convention::amari);
  CHECK_THAT(failed_load<amari::ValueError>(path, read_bytes(path), Convention::pytorch),
             TextContains({"\"amari\"", "\"pytorch\"", "convention"}));
  // Without num_batches_tracked (it is optional) the file loads.
  Model<float> target = cnn<float>(8);
  write_bytes(path, with([&](auto& t) { t.erase(t.begin() + 7); }));
  load_safetensors(target, path, Convention::pytorch);
  CHECK(bits_of(target.state()) == bits_of(source.state()));
}

TEST_CASE("save_safetensors: a failed save throws IoError and leaves no file behind",
          "[safetensors]") {
  TempDir dir;
  const std::string missing = dir.file("no-such-dir/m.safetensors");
  CHECK_THROWS_MATCHES(save_safetensors(cnn<float>(1), missing), amari::IoError,
                       MessageContains({missing}));
  CHECK(fs::is_empty(dir.path()));
}

// ---- parameter files with state
// -----------------------------------------------------------------------

TEMPLATE_TEST_CASE(
    "save_parameters/load_parameters: a model's state round-trips with its parameters",
    "[serialize][safetensors]", float, double) {
  TempDir dir;
  const std::string path = dir.file("params.bin");
  const Model<TestType> source = cnn<TestType>(1);
  amari::nn::save_parameters(source, path);
  Model<TestType> target = cnn<TestType>(2);
  amari::nn::load_parameters(target, path);
  CHECK(bits_of(target.parameters()) == bits_of(source.parameters()));
  CHECK(bits_of(target.state()) == bits_of(source.state()));
  CHECK(bits_of(target.forward(images<TestType>())) == bits_of(source.forward(images<TestType>())));
  // The state records follow the parameter records, the state data follows the parameter data.
  const Bytes b = read_bytes(path);
  CHECK((b[13] | (b[14] << 8)) == 8);  // 6 parameters + 2 state tensors
  const std::size_t state_at = b.size() - 4 - 8 * sizeof(TestType);
  TestType first;
  std::memcpy(&first, b.data() + state_at, sizeof(TestType));
  CHECK(first == source.state()[0]);
}

TEST_CASE("load_parameters: a file without the model's state is refused and changes nothing",
          "[serialize][safetensors]") {
  TempDir dir;
  const std::string path = dir.file("params.bin");
  // The same parameters without a batch norm's state: a stateless module in its place.
  auto net = std::make_shared<amari::nn::Sequential<float>>();
  net->emplace<amari::nn::Conv2d<float>>(2, 4, std::array<Index, 2>{3, 2},
                                         amari::Conv2dOptions{.padding = {1, 1}, .groups = 2});
  net->emplace<amari::nn::LayerNorm<float>>(4);
  net->emplace<amari::nn::ReLU<float>>();
  net->emplace<amari::nn::Flatten<float>>();
  net->emplace<amari::nn::Linear<float>>(80, 5);
  amari::nn::save_parameters(Model<float>(net, 1), path);
  Model<float> target = cnn<float>(2);
  const Bytes params = bits_of(target.parameters()), state = bits_of(target.state());
  CHECK_THROWS_MATCHES(amari::nn::load_parameters(target, path), amari::ShapeError,
                       MessageContains({"6 tensors", "6 parameters and 2 state tensors"}));
  CHECK(bits_of(target.parameters()) == params);
  CHECK(bits_of(target.state()) == state);
  // A stateful file with a renamed state record.
  amari::nn::save_parameters(cnn<float>(3), path);
  Bytes b = read_bytes(path);
  const std::string from = "1.running_var", to = "1.running_VAR";
  auto it = std::search(b.begin(), b.end(), from.begin(), from.end());
  REQUIRE(it != b.end());
  std::copy(to.begin(), to.end(), it);
  b.resize(b.size() - 4);
  const auto crc = static_cast<std::uint32_t>([&] {
    std::uint32_t c = 0xffffffffu;
    for (std::uint8_t byte : b) {
      c ^= byte;
      for (int k = 0; k < 8; ++k) c = (c >> 1) ^ (0xedb88320u & (0u - (c & 1u)));
    }
    return ~c;
  }());
  put_le(b, crc, 4);
  write_bytes(path, b);
  CHECK_THROWS_MATCHES(
      amari::nn::load_parameters(target, path), amari::ShapeError,
      MessageContains({"state tensor 1", "\"1.running_VAR\"", "\"1.running_var\""}));
  CHECK(bits_of(target.state()) == state);
}
