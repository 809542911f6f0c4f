// Writes the seed corpora of the fuzz targets: a few small valid (and a few nearly valid) inputs
// per target, made with amari's own writers so they follow the formats exactly.
//
//   amari_fuzz_make_corpus <dir>     writes <dir>/idx, <dir>/parameters, <dir>/safetensors,
//                                    <dir>/ops
//
// The committed corpus (tests/fuzz/corpus) was made this way; rerun it after a format change.
// Every file starts with the harness's flag byte (see tests/fuzz/harness/*.hpp).
#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

#include <amari/nn/idx.hpp>
#include <amari/nn/safetensors.hpp>
#include <amari/nn/serialize.hpp>

#include "fuzz/harness/idx.hpp"
#include "fuzz/harness/ops.hpp"
#include "fuzz/harness/parameters.hpp"
#include "fuzz/harness/safetensors.hpp"

namespace {

namespace fs = std::filesystem;
using amari::fuzz::Bytes;
using amari::nn::IdxArray;
using amari::nn::IdxType;
using Op = amari::fuzz::ops_detail::Op;

void save(const fs::path& dir, const std::string& name, const Bytes& bytes) {
  fs::create_directories(dir);
  const std::string path = (dir / name).string();
  amari::fuzz::write_file(path, bytes.data(), bytes.size());
  std::printf("%6zu  %s\n", bytes.size(), path.c_str());
}

Bytes with_flag(std::uint8_t flag, const Bytes& contents) {
  Bytes b{flag};
  b.insert(b.end(), contents.begin(), contents.end());
  return b;
}

// ---- IDX
// -------------------------------------------------------------------------------------------

Bytes idx_bytes(const IdxArray& a) {
  const std::string tmp = amari::fuzz::scratch_file("seed.idx");
  amari::nn::write_idx(tmp, a, amari::nn::IdxCompression::plain);
  return amari::fuzz::read_file(tmp);
}

IdxArray idx_array(IdxType type, std::vector<amari::Index> dims, Bytes bytes) {
  IdxArray a;
  a.type = type;
  a.dims = std::move(dims);
  a.bytes = std::move(bytes);
  return a;
}

void idx_corpus(const fs::path& dir) {
  const Bytes labels = idx_bytes(idx_array(IdxType::u8, {10}, {0, 1, 2, 3, 4, 5, 6, 7, 8, 9}));
  Bytes pixels;
  for (int i = 0; i < 18; ++i) pixels.push_back(static_cast<std::uint8_t>(i * 15));
  const Bytes images = idx_bytes(idx_array(IdxType::u8, {2, 3, 3}, pixels));
  save(dir, "labels_u8", with_flag(0, labels));
  save(dir, "images_u8", with_flag(0, images));
  save(dir, "images_u8_gzip", with_flag(1 | (6 << 1), images));
  save(dir, "labels_u8_gzip_level0", with_flag(1, labels));
  save(dir, "i8_rank2",
       with_flag(0, idx_bytes(idx_array(IdxType::i8, {2, 2}, {0x80, 0x7f, 0xff, 0}))));
  save(dir, "i16_rank2",
       with_flag(0, idx_bytes(idx_array(IdxType::i16, {1, 2}, {0x80, 0, 0x7f, 0xff}))));
  // f32: 1.0, NaN, +inf, the smallest denormal.
  save(dir, "f32_special",
       with_flag(0, idx_bytes(idx_array(
                        IdxType::f32, {4},
                        {0x3f, 0x80, 0, 0, 0x7f, 0xc0, 0, 0, 0x7f, 0x80, 0, 0, 0, 0, 0, 1}))));
  save(dir, "i32_rank1",
       with_flag(0, idx_bytes(idx_array(IdxType::i32, {2}, {0x80, 0, 0, 0, 0, 0, 0, 42}))));
  save(dir, "f64_rank4",
       with_flag(1 | (9 << 1),
                 idx_bytes(idx_array(IdxType::f64, {1, 2, 1, 1},
                                     {0x3f, 0xf0, 0, 0, 0, 0, 0, 0, 0xc0, 0, 0, 0, 0, 0, 0, 0}))));
  save(dir, "empty_dim", with_flag(0, idx_bytes(idx_array(IdxType::u8, {0, 28, 28}, {}))));
  // A gzip file given as plain contents: zlib's decoder sees compressed bytes mutated directly.
  save(dir, "gzip_as_contents",
       with_flag(0, amari::fuzz::gzip_compress(labels.data(), labels.size(), 6)));
  // A header promising 2^31 elements with no data: must be refused without a huge allocation
  // (flag bit 7: the typed readers must refuse it too).
  save(dir, "huge_header", with_flag(0x80, Bytes{0, 0, 0x08, 2, 0, 1, 0, 0, 0, 0, 0x80, 0}));
  // Labels cut one byte short.
  save(dir, "truncated_labels", with_flag(0x80, Bytes(labels.begin(), labels.end() - 1)));
}

// ---- parameter files
// ---------------------------------------------------------------------------------

template <amari::Real T>
Bytes parameter_file(const amari::nn::Model<T>& model) {
  const std::string tmp = amari::fuzz::scratch_file("seed.prm");
  amari::nn::save_parameters(model, tmp);
  return amari::fuzz::read_file(tmp);
}

void parameters_corpus(const fs::path& dir) {
  const Bytes f64 = parameter_file(amari::fuzz::parameter_fuzz_model<double>());
  const Bytes f32 = parameter_file(amari::fuzz::parameter_fuzz_model<float>());
  save(dir, "model_f64", with_flag(0, f64));
  save(dir, "model_f32_float_first", with_flag(2, f32));
  save(dir, "model_f64_fix_crc", with_flag(1, f64));
  // Another architecture: the layout check refuses it.
  const amari::nn::Model<double> other(amari::nn::mlp<double>({2, 2}), 1);
  save(dir, "other_model_fix_crc", with_flag(1, parameter_file(other)));
  // Header only, no data: truncated.
  save(dir, "truncated_fix_crc", with_flag(1, Bytes(f64.begin(), f64.begin() + 64)));
}

// ---- safetensors files
// --------------------------------------------------------------------------------

template <amari::Real T>
Bytes safetensors_file(const amari::nn::Model<T>& model, amari::nn::Convention convention) {
  const std::string tmp = amari::fuzz::scratch_file("seed.safetensors");
  amari::nn::save_safetensors(model, tmp, convention);
  return amari::fuzz::read_file(tmp);
}

// A file from its header text and data section.
Bytes safetensors_bytes(const std::string& json, const Bytes& data) {
  Bytes b;
  for (int i = 0; i < 8; ++i) b.push_back(static_cast<std::uint8_t>(json.size() >> (8 * i)));
  b.insert(b.end(), json.begin(), json.end());
  b.insert(b.end(), data.begin(), data.end());
  return b;
}

void safetensors_corpus(const fs::path& dir) {
  using amari::nn::Convention;
  const auto f64 = amari::fuzz::safetensors_fuzz_model<double>();
  const auto f32 = amari::fuzz::safetensors_fuzz_model<float>();
  const Bytes torch = safetensors_file(f32, Convention::pytorch);
  save(dir, "model_amari_f64", with_flag(0, safetensors_file(f64, Convention::amari)));
  save(dir, "model_pytorch_f32_float_first", with_flag(1 | 2, torch));
  save(dir, "model_pytorch_f64_fix_length",
       with_flag(1 | 4, safetensors_file(f64, Convention::pytorch)));
  // Half-precision tensors, an empty one, a scalar, metadata and escapes (F16 1, -2; BF16 0.5).
  save(dir, "halves_fix_length",
       with_flag(1 | 4, safetensors_bytes(
                            "{\"__metadata__\":{\"k\":\"v\\u00e9\"},"
                            "\"h\":{\"dtype\":\"F16\",\"shape\":[1,2],\"data_offsets\":[0,4]},"
                            "\"b\":{\"dtype\":\"BF16\",\"shape\":[],\"data_offsets\":[4,6]},"
                            "\"e\":{\"dtype\":\"I64\",\"shape\":[0,3],\"data_offsets\":[6,6]}}  ",
                            Bytes{0x00, 0x3c, 0x00, 0xc0, 0x00, 0x3f})));
  // Overlapping offsets, and a file cut inside its data.
  save(dir, "overlap",
       with_flag(
           0, safetensors_bytes("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                                "\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}",
                                Bytes(8, 0))));
  save(dir, "truncated", with_flag(1, Bytes(torch.begin(), torch.end() - 5)));
}

// ---- ops programs
// -------------------------------------------------------------------------------------

// Value code of a multiple of 1/8 in [-13.5, 13.375] (see decode_value).
std::uint8_t v(double x) {
  return static_cast<std::uint8_t>(148 + static_cast<int>(x * 8));
}
constexpr std::uint8_t kNaN = 5, kInf = 6, kNegInf = 7, kDenorm = 8, kMax = 11, kExpMax = 14;

struct Program {
  Bytes bytes;
  explicit Program(std::uint8_t flags) : bytes{flags} {}
  Program& input(std::vector<std::uint8_t> dims, const std::vector<std::uint8_t>& values) {
    bytes.push_back(static_cast<std::uint8_t>(dims.size()));
    bytes.insert(bytes.end(), dims.begin(), dims.end());
    bytes.insert(bytes.end(), values.begin(), values.end());
    return *this;
  }
  Program& op(Op o, std::uint8_t a, std::uint8_t b = 0, std::uint8_t param = 0,
              std::uint8_t s1 = v(1), std::uint8_t s2 = v(0)) {
    bytes.insert(bytes.end(), {static_cast<std::uint8_t>(o), a, b, param, s1, s2});
    if (o == Op::reshape) bytes.insert(bytes.end(), {2, 1, 6, 0, 0});
    return *this;
  }
  // linear(pool[a], pool[b], pool[c]).
  Program& linear(std::uint8_t a, std::uint8_t b, std::uint8_t c) {
    bytes.insert(bytes.end(), {static_cast<std::uint8_t>(Op::linear), a, b, 0, v(0), v(0), c});
    return *this;
  }
  // Any op: the common six bytes, then the op's own bytes (see the layout in harness/ops.hpp).
  Program& raw(Op o, std::uint8_t a, std::uint8_t b, std::uint8_t param, std::uint8_t s1,
               const std::vector<std::uint8_t>& extra) {
    bytes.insert(bytes.end(), {static_cast<std::uint8_t>(o), a, b, param, s1, v(0)});
    bytes.insert(bytes.end(), extra.begin(), extra.end());
    return *this;
  }
};

// Integer codes (decode_int): 0-5 are themselves; some edge values.
constexpr std::uint8_t kMinus1 = 240, kSix = 242;

// Values 1/8, 2/8, ... cycling through [-1, 1], n of them.
std::vector<std::uint8_t> ramp(int n) {
  std::vector<std::uint8_t> codes;
  for (int i = 0; i < n; ++i) codes.push_back(v(((i * 5) % 17 - 8) / 8.0));
  return codes;
}

// Parameter byte for an axis (-5..5) and keep_dims.
std::uint8_t axis(int a, bool keep = false) {
  return static_cast<std::uint8_t>((a + 5) | (keep ? 16 : 0));
}
constexpr std::uint8_t kTransA = 32, kTransB = 64;

void ops_corpus(const fs::path& dir) {
  const std::uint8_t two_inputs = 1 << 5, three_inputs = 2 << 5;
  // A (2, 3) matrix and a (3) vector through a small network-like chain, double.
  save(dir, "mlp_like",
       Program(two_inputs)
           .input({2, 3}, {v(1), v(-2), v(0.5), v(0), v(3), v(-1)})
           .input({3}, {v(0.25), v(-0.5), v(1)})
           .op(Op::add, 0, 1)
           .op(Op::tanh, 2)
           .op(Op::matmul, 3, 0, kTransB)
           .op(Op::logsumexp, 4, 0, axis(-1))
           .op(Op::sum_all, 5)
           .op(Op::transpose, 0)
           .linear(3, 7, 4)  // (2, 3) x (3, 2) + (2, 2): a bias of the wrong rank, refused
           .linear(3, 7, 5)  // ... + (2): a dense layer
           .bytes);
  // Special values (NaN, inf, denormal, max) through every unary op, float.
  Program special(1);
  special.input({2, 3}, {kNaN, kInf, kNegInf, kDenorm, kMax, v(0)});
  for (Op o : {Op::exp, Op::log, Op::tanh, Op::sigmoid, Op::relu, Op::softplus, Op::square,
               Op::sqrt, Op::gelu})
    special.op(o, 0);
  save(dir, "special_unary_f32", special.bytes);
  // Empty tensors: (0, 3) and (3, 0) through matmul, reductions and broadcasting, double.
  save(dir, "empty",
       Program(two_inputs)
           .input({0, 3}, {})
           .input({3, 0}, {})
           .op(Op::matmul, 0, 1)
           .op(Op::matmul, 1, 0)
           .op(Op::sum_axis, 0, 0, axis(0))
           .op(Op::mean_all, 0)
           .op(Op::softmax, 1, 0, axis(1))
           .op(Op::max, 0, 0, axis(0))
           .op(Op::add, 0, 1)
           .bytes);
  // Ties for max and zeros for relu, and broadcasting against a scalar; the third input constant.
  save(dir, "ties_and_kinks",
       Program(three_inputs | 8)
           .input({2, 2}, {v(1), v(1), v(0), v(0)})
           .input({}, {v(2)})
           .input({2, 1}, {v(-1), v(0.5)})
           .op(Op::max, 0, 0, axis(-1, true))
           .op(Op::relu, 0)
           .op(Op::mul, 0, 1)
           .op(Op::div, 3, 2)
           .op(Op::sub, 2, 0)
           .op(Op::reshape, 0, 0, 0)
           .op(Op::log_softmax, 0, 0, axis(0))
           .bytes);
  // Overflow thresholds and scalar ops with inf/NaN scalars; tangents equal to values.
  save(dir, "overflow_scalars",
       Program(16)
           .input({3}, {kExpMax, v(-13), v(13)})
           .op(Op::exp, 0)
           .op(Op::affine, 1, 0, 0, kInf, kNaN)
           .op(Op::scale, 0, 0, 0, kMax)
           .op(Op::div_scalar, 0, 0, 0, v(0))
           .op(Op::add_scalar, 0, 0, 0, kNegInf)
           .op(Op::transpose, 0)
           .op(Op::matmul, 0, 0, kTransA)
           .bytes);
  // Images: a depthwise 3x3 convolution (groups 2, padding 1), a strided one without bias, the
  // four poolings, and refused options (groups 0, stride -1, padding above kernel / 2), double.
  save(dir, "conv_pool",
       Program(three_inputs)
           .input({1, 4, 4, 2}, ramp(32))
           .input({3, 3, 1, 2}, ramp(18))
           .input({2}, {v(0.5), v(-0.25)})
           .raw(Op::conv2d, 0, 1, 0, v(0), {2, 1, 1, 1, 1, 1, 1, 2})       // -> 3: (1, 4, 4, 2)
           .raw(Op::conv2d_no_bias, 0, 1, 0, v(0), {2, 2, 1, 1, 1, 1, 2})  // -> 4: (1, 2, 2, 2)
           .raw(Op::max_pool2d, 3, 0, 0, v(0), {2, 2, 0, 0, 0, 0})         // -> 5: (1, 2, 2, 2)
           .raw(Op::avg_pool2d, 3, 0, 16, v(0), {3, 3, 1, 1, 1, 1})        // -> 6: (1, 4, 4, 2)
           .raw(Op::global_avg_pool2d, 6, 0, 0, v(0), {})                  // -> 7: (1, 2)
           .raw(Op::conv2d, 0, 1, 2, v(0), {2, 1, 1, 0, 0, 1, 1, 0})       // groups 0
           .raw(Op::conv2d_no_bias, 0, 1, 0, v(0), {kMinus1, 1, 0, 0, 1, 1, 2})
           .raw(Op::avg_pool2d, 0, 0, 0, v(0), {2, 2, 1, 1, 2, 0})
           .raw(Op::relu_max_pool2d, 3, 0, 0, v(0), {3, 3, 1, 1, 1, 1})  // -> 8: (1, 4, 4, 2)
           .bytes);
  // The convolution, ReLU and 2 x 2 max-pool as one primitive: the depthwise convolution above
  // pooled, and refused poolings of its output (a window larger than it, padding above kernel / 2).
  save(dir, "conv_relu_pool",
       Program(three_inputs)
           .input({1, 4, 4, 2}, ramp(32))
           .input({3, 3, 1, 2}, ramp(18))
           .input({2}, {v(0.5), v(-0.25)})
           .raw(Op::conv2d_relu_max_pool2d, 0, 1, 0, v(0),
                {2, 1, 1, 1, 1, 1, 1, 2, 2, 2, 0, 0, 0, 0})  // -> 3: (1, 2, 2, 2)
           .raw(Op::conv2d_relu_max_pool2d, 0, 1, 0, v(0),
                {2, 1, 1, 1, 1, 1, 1, 2, 5, 5, 0, 0, 0, 0})  // a 5 x 5 window on 4 x 4: refused
           .raw(Op::conv2d_relu_max_pool2d, 0, 1, 0, v(0),
                {2, 1, 1, 1, 1, 1, 1, 2, 2, 2, 0, 0, 2, 2})  // padding 2 > 2 / 2: refused
           .bytes);
  // layer_norm, batch_norm (with statistics, on (N, C) and (N, H, W, C)), dropout, and refused
  // eps and p; tangents equal to values.
  save(dir, "norm_dropout",
       Program(16 | three_inputs)
           .input({3, 4}, ramp(12))
           .input({4}, {v(1), v(0.5), v(-1), v(2)})
           .input({4}, {v(0), v(0.25), v(-0.5), v(1)})
           .raw(Op::layer_norm, 0, 1, 0, v(0.125), {2})       // -> 3
           .raw(Op::batch_norm, 0, 1, 16, v(0.125), {2})      // -> 4, with statistics
           .raw(Op::reshape, 0, 0, 5, v(0), {4, 1, 3, 1, 4})  // -> 5: (1, 3, 1, 4)
           .raw(Op::batch_norm, 5, 1, 16, v(0), {2})          // -> 6, eps 0
           .raw(Op::dropout, 3, 0, 0, v(0.5), {7, 1})         // -> 7
           .raw(Op::dropout, 0, 0, 0, v(1), {7, 1})           // p = 1: refused
           .raw(Op::layer_norm, 0, 1, 0, v(-1), {2})          // eps < 0: refused
           .raw(Op::batch_norm, 1, 1, 0, v(0.125), {2})       // rank 1: refused
           .bytes);
  // Indexing and rearranging, float: permute, concat of two and of a list, slice, embedding, and
  // refused permutations, ranges and indices.
  save(dir, "shape_ops_f32",
       Program(1 | three_inputs)
           .input({2, 3, 4}, ramp(24))
           .input({2, 1, 4}, ramp(8))
           .input({5, 2}, ramp(10))
           .raw(Op::permute, 0, 0, 0, v(0), {3, 0})           // -> 3: (3, 4, 2)
           .raw(Op::concat, 0, 1, 1 + 5, v(0), {})            // -> 4: (2, 4, 4)
           .raw(Op::concat_list, 0, 1, -2 + 5, v(0), {3, 0})  // -> 5: (2, 7, 4)
           .raw(Op::slice, 5, 0, 1 + 5, v(0), {2, 5})         // -> 6: (2, 3, 4)
           // -> 7: rows 4 0 1 / 1 3 2 of the (5, 2) weight: (2, 3, 2)
           .raw(Op::embedding, 2, 0, 0, v(0), {2, 2, 3, 0, 0, 4, 0, 1, 1, 3, 2})
           .raw(Op::permute, 0, 0, 0, v(0), {0, 7})        // an axis replaced by -1
           .raw(Op::slice, 0, 0, -1 + 5, v(0), {1, kSix})  // stop 6 > 4
           .raw(Op::embedding, 2, 0, 0, v(0), {1, 2, 0, 0, 0, 5, kMinus1})  // 5, -1: refused
           .raw(Op::concat_list, 0, 1, 5, v(0), {0})                        // an empty list
           .bytes);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s <corpus dir>\n", argv[0]);
    return 2;
  }
  const fs::path root = argv[1];
  idx_corpus(root / "idx");
  parameters_corpus(root / "parameters");
  safetensors_corpus(root / "safetensors");
  ops_corpus(root / "ops");
  return 0;
}
