// Fuzz harness for the public ops (autodiff/ops.hpp) in all three modes.
//
// The input decodes to a small program: up to three input tensors of random shapes (rank 0-4,
// every dimension 0-5, so empty tensors are common) holding random values (NaN, +-inf, denormals,
// the largest and smallest normals, exp overflow thresholds, raw bit patterns, small multiples of
// 1/8 with many ties and exact zeros), then up to 32 instructions, each applying one public op to
// values from a pool that grows with every result. Every primitive is reachable: the element-wise,
// matrix, reduction and softmax ops, linear, conv2d (with and without a bias), max_pool2d,
// relu_max_pool2d, conv2d_relu_max_pool2d, avg_pool2d, global_avg_pool2d, layer_norm, batch_norm (with and without
// BatchStats), dropout, embedding, permute, concat (of two and of a list) and slice, with
// fuzzer-chosen options, valid or not. The program runs three times:
//   Tensor<T>: plain evaluation;
//   Dual<T>:   forward mode, each non-constant input carrying a tangent;
//   Var<T>:    recorded on a tape, then Tape::jvp, Tape::vjp (a reverse sweep from every active
//              result to the inputs and to every intermediate result) and Tape::hvp.
// Checks: every op call returns or throws amari::Error, and throws in all modes or in none; the
// three modes compute bitwise identical primal values (and batch statistics: bitwise equal, of
// shape (C), variance not negative, count = elements / C); the tape's forward sweep reproduces the
// duals' tangents; the sweeps never throw on a well-formed record; in double, when every value is
// 0 or in [1e-3, 1e3], the adjoint identity <u, J v> = <J^T u, v> holds to rounding; results of a
// cleared or destroyed tape raise TapeError.
//
// Sizes stay small whatever the input says: an instruction whose result would exceed
// kMaxResultElements elements or kMaxWork multiply-adds (upper bounds computed from the shapes and
// options, see cost()) is skipped in every mode, as if it threw. So no input makes amari allocate
// gigabytes or run for seconds; amari's own limit (2^48 elements) is tested by the hostile-input
// tests. Options can still be huge (2^31, 2^32, 2^48, 2^62, the ends of Index) where the result
// stays small, to reach the overflow checks of the geometry code.
//
// Byte layout (bytes past the end read as 0):
//   flags:  bit 0 float (else double); bits 1-3 input i is a constant (no tangent, not a tape
//           variable); bit 4 tangents equal the values (else a fixed pattern); bits 5-6 number of
//           inputs - 1 (3 means 3)
//   per input: rank byte (% 5), one byte per dimension (% 6), one value code per element
//   per instruction: opcode (% Op::count), operand a, operand b (indices into the pool, modulo its
//           size), a parameter byte (axis = (p & 15) % 11 - 5, keep_dims = bit 4, transpose a =
//           bit 5, transpose b = bit 6; for reshape the target kind p % 6), two value codes s1, s2
//           (the scalars of affine/scale/add_scalar/division; eps of layer_norm and batch_norm, p
//           of dropout), then by opcode:
//     reshape            a rank byte (% 5) and 4 dimension bytes (% 6): the target shape
//     linear             operand c (the bias)
//     conv2d             operand c (the bias), then 7 integer codes: stride h, w, padding h, w,
//                        dilation h, w, groups (conv2d_no_bias: the 7 codes only)
//     (relu_)max/avg_pool2d 6 integer codes: kernel h, w, stride h, w, padding h, w; param bit 4:
//                        count_include_pad = false (avg_pool2d)
//     conv2d_relu_max_pool2d operand c (the bias), conv2d's 7 codes, then the pooling's 6
//     layer_norm         operand c (beta; b is gamma)
//     batch_norm         operand c (beta; b is gamma); param bit 4: ask for BatchStats
//     dropout            seed byte (times 0x9e3779b97f4a7c15), stream byte (255: 2^64 - 1)
//     embedding          index shape as for reshape; count = its elements, or one fewer (param
//                        bits 5-6 = 1) or one more (= 2); then one integer code per index
//     permute            permutation number (lexicographic, mod rank!), fault byte: % 8 = 5 one
//                        axis too many, 6 one too few, 7 an axis replaced by -1, rank, a
//                        duplicate or INT_MIN ((fault >> 5) & 3) at (fault >> 3) % rank
//     concat             (a, b along the param axis)
//     concat_list        a count byte (% 6: 0-5 values a, b, then one operand byte per further
//                        value)
//     slice              integer codes start, stop (along the param axis)
//   value code v: v < 24 a special value, v < 40 raw bits (4 or 8 more bytes), else (v - 148) / 8
//   integer code b: b < 240 gives b % 6, else one of 16 edge values (decode_int)
// Opcodes from conv2d on were added after the first corpus; appending them (and their bytes) kept
// every older input decoding as before.
#pragma once

#include <algorithm>
#include <array>
#include <climits>
#include <cmath>
#include <cstring>
#include <limits>
#include <numeric>
#include <optional>
#include <type_traits>

#include <amari/autodiff/autodiff.hpp>

#include "fuzz/harness/common.hpp"

namespace amari::fuzz {

namespace ops_detail {

enum class Op : std::uint8_t {
  exp,
  log,
  tanh,
  sigmoid,
  relu,
  softplus,
  square,
  sqrt,
  gelu,
  affine,
  neg,
  scale,
  add_scalar,
  div_scalar,
  add,
  sub,
  mul,
  div,
  matmul,
  transpose,
  reshape,
  sum_all,
  sum_axis,
  mean_all,
  mean_axis,
  max,
  logsumexp,
  softmax,
  log_softmax,
  linear,
  // Added later: appended, so older inputs keep their meaning.
  conv2d,
  conv2d_no_bias,
  max_pool2d,
  avg_pool2d,
  global_avg_pool2d,
  layer_norm,
  batch_norm,
  dropout,
  embedding,
  permute,
  concat,
  concat_list,
  slice,
  relu_max_pool2d,
  conv2d_relu_max_pool2d,
  count
};

inline constexpr int kMaxInstructions = 32;
inline constexpr std::size_t kMaxPool = 40;
/// Caps on one instruction (see cost()): elements of its result, and multiply-adds (conv2d and
/// matmul) or element visits. A double result of 2^14 elements is 128 KiB; 2^20 multiply-adds take
/// a few milliseconds under ASan, for each of the forward pass and the sweeps.
inline constexpr double kMaxResultElements = 1 << 14;
inline constexpr double kMaxWork = 1 << 20;

template <Real T>
T decode_value(Reader& r) {
  using L = std::numeric_limits<T>;
  const std::uint8_t v = r.u8();
  static const T specials[24] = {T(0),
                                 -T(0),
                                 T(1),
                                 T(-1),
                                 T(0.5),
                                 L::quiet_NaN(),
                                 L::infinity(),
                                 -L::infinity(),
                                 L::denorm_min(),
                                 -L::denorm_min(),
                                 L::min(),
                                 L::max(),
                                 L::lowest(),
                                 L::epsilon(),
                                 std::log(L::max()),
                                 -std::log(L::max()),
                                 T(1e-20),
                                 T(1e20),
                                 std::sqrt(L::max()),
                                 T(2),
                                 T(3),
                                 T(100),
                                 T(-100),
                                 T(1e4)};
  if (v < 24) return specials[v];
  if (v < 40) {
    if constexpr (std::is_same_v<T, float>) {
      const std::uint32_t bits = r.u32();
      float f;
      std::memcpy(&f, &bits, sizeof f);
      return f;
    } else {
      const std::uint64_t bits = r.u64();
      double d;
      std::memcpy(&d, &bits, sizeof d);
      return d;
    }
  }
  return static_cast<T>((static_cast<int>(v) - 148) / 8.0);
}

/// An integer option, index or slice bound: mostly 0-5, else an edge value: negative, around 2^31
/// and 2^32 (where int32 arithmetic breaks), around kMaxElements = 2^48, and near the ends of
/// Index (where an unchecked sum or product overflows).
inline Index decode_int(std::uint8_t b) {
  constexpr Index one = 1;
  static constexpr Index edges[16] = {-1,
                                      -2,
                                      6,
                                      7,
                                      (one << 31) - 1,
                                      one << 31,
                                      one << 32,
                                      (one << 32) + 1,
                                      one << 47,
                                      one << 48,
                                      (one << 48) + 1,
                                      (one << 62) - 1,
                                      one << 62,
                                      std::numeric_limits<Index>::max(),
                                      std::numeric_limits<Index>::min(),
                                      -(one << 31)};
  return b < 240 ? b % 6 : edges[b - 240];
}

template <Real T>
struct InputSpec {
  Tensor<T> value;
  Tensor<T> tangent;
  bool constant = false;
};

template <Real T>
struct Instruction {
  Op op = Op::exp;
  std::uint8_t a = 0, b = 0, c = 0, param = 0;
  T s1 = 0, s2 = 0;
  std::uint8_t reshape_rank = 0;  // reshape: the target shape; embedding: the index shape
  std::uint8_t reshape_dims[4] = {};
  std::array<std::uint8_t, 13> opt{};  // the option bytes of conv2d, pools, dropout, permute, ...
  std::vector<std::uint8_t> more;     // concat_list: further operands; embedding: index codes
};

template <Real T>
struct Program {
  std::vector<InputSpec<T>> inputs;
  std::vector<Instruction<T>> code;
};

inline Shape decode_shape(Reader& r) {
  const int rank = r.u8() % 5;
  Index dims[4] = {};
  for (int i = 0; i < rank; ++i) dims[i] = r.u8() % 6;
  return Shape(std::span<const Index>(dims, static_cast<std::size_t>(rank)));
}

/// The shape given by a rank (< 5) and 4 dimension bytes (< 6).
inline Shape small_shape(std::uint8_t rank, const std::uint8_t* dims) {
  Index d[4];
  for (int i = 0; i < 4; ++i) d[i] = dims[i];
  return Shape(std::span<const Index>(d, rank));
}

/// Number of indices an embedding instruction passes: the index shape's elements, or one fewer
/// or one more (refused).
template <Real T>
std::size_t embedding_count(const Instruction<T>& ins) {
  const auto n = static_cast<std::size_t>(small_shape(ins.reshape_rank, ins.reshape_dims).numel());
  switch ((ins.param >> 5) & 3) {
    case 1:
      return n == 0 ? 1 : n - 1;
    case 2:
      return n + 1;
    default:
      return n;
  }
}

/// Option bytes after the common part of an instruction.
inline int option_bytes(Op op) {
  switch (op) {
    case Op::conv2d:
    case Op::conv2d_no_bias:
      return 7;
    case Op::conv2d_relu_max_pool2d:
      return 13;
    case Op::max_pool2d:
    case Op::relu_max_pool2d:
    case Op::avg_pool2d:
      return 6;
    case Op::dropout:
    case Op::permute:
    case Op::slice:
      return 2;
    case Op::concat_list:
      return 1;
    default:
      return 0;
  }
}

template <Real T>
Program<T> decode(Reader& r, std::uint8_t flags) {
  Program<T> p;
  const int n_inputs = std::min(3, 1 + ((flags >> 5) & 3));
  for (int i = 0; i < n_inputs; ++i) {
    InputSpec<T> in;
    const Shape s = decode_shape(r);
    in.value = Tensor<T>(s);
    for (Index k = 0; k < s.numel(); ++k) in.value[k] = decode_value<T>(r);
    in.constant = (flags >> (1 + i)) & 1;
    if (flags & 16) {
      in.tangent = in.value.clone();
    } else {
      in.tangent = Tensor<T>(s);
      for (Index k = 0; k < s.numel(); ++k)
        in.tangent[k] = static_cast<T>(((k * 7 + i) % 9 - 4) * 0.25 + 0.125);
    }
    p.inputs.push_back(std::move(in));
  }
  while (!r.done() && static_cast<int>(p.code.size()) < kMaxInstructions) {
    Instruction<T> ins;
    ins.op = static_cast<Op>(r.u8() % static_cast<int>(Op::count));
    ins.a = r.u8();
    ins.b = r.u8();
    ins.param = r.u8();
    ins.s1 = decode_value<T>(r);
    ins.s2 = decode_value<T>(r);
    if (ins.op == Op::reshape || ins.op == Op::embedding) {
      ins.reshape_rank = r.u8() % 5;
      for (auto& d : ins.reshape_dims) d = r.u8() % 6;
    }
    if (ins.op == Op::linear || ins.op == Op::conv2d || ins.op == Op::layer_norm ||
        ins.op == Op::batch_norm || ins.op == Op::conv2d_relu_max_pool2d) {
      ins.c = r.u8();
    }
    for (int i = 0; i < option_bytes(ins.op); ++i) ins.opt[static_cast<std::size_t>(i)] = r.u8();
    if (ins.op == Op::embedding) {
      const std::size_t n = embedding_count(ins);
      for (std::size_t i = 0; i < n; ++i) ins.more.push_back(r.u8());
    }
    if (ins.op == Op::concat_list) {
      for (int i = 2; i < ins.opt[0] % 6; ++i) ins.more.push_back(r.u8());
    }
    p.code.push_back(std::move(ins));
  }
  return p;
}

/// The target shape of a reshape: mostly shapes with the right element count, sometimes not.
inline Shape reshape_target(const Shape& x, std::uint8_t param, std::uint8_t rank,
                            const std::uint8_t* dims) {
  const Index n = x.numel();
  switch (param % 6) {
    case 0:
      return Shape{n};
    case 1:
      return Shape{n, 1};
    case 2:
      return Shape{1, 1, n};
    case 3: {
      std::vector<Index> rev(x.dims().rbegin(), x.dims().rend());
      return Shape(std::span<const Index>(rev));
    }
    case 4:
      return Shape{};
    default:
      return small_shape(rank, dims);
  }
}

template <Real T>
Conv2dOptions conv_options(const Instruction<T>& ins) {
  const auto& o = ins.opt;
  return {.stride = {decode_int(o[0]), decode_int(o[1])},
          .padding = {decode_int(o[2]), decode_int(o[3])},
          .dilation = {decode_int(o[4]), decode_int(o[5])},
          .groups = decode_int(o[6])};
}

/// The pooling options in the instruction's option bytes from `first` on (7 for
/// conv2d_relu_max_pool2d, after conv2d's).
template <Real T>
Pool2dOptions pool_options(const Instruction<T>& ins, std::size_t first = 0) {
  const auto o = [&](std::size_t i) { return decode_int(ins.opt[first + i]); };
  return {.kernel = {o(0), o(1)},
          .stride = {o(2), o(3)},
          .padding = {o(4), o(5)},
          .count_include_pad = !((ins.param >> 4) & 1)};
}

/// Permutation number k (mod rank!, lexicographic) of rank axes, then possibly broken (see the
/// byte layout above).
inline std::vector<int> permutation(int rank, std::uint8_t k, std::uint8_t fault) {
  std::vector<int> perm(static_cast<std::size_t>(rank));
  std::iota(perm.begin(), perm.end(), 0);
  int count = 1;
  for (int i = 2; i <= rank; ++i) count *= i;
  for (int i = 0; i < k % count; ++i) std::next_permutation(perm.begin(), perm.end());
  switch (fault % 8) {
    case 5:
      perm.push_back(rank);
      break;
    case 6:
      if (perm.empty()) {
        perm.push_back(0);
      } else {
        perm.pop_back();
      }
      break;
    case 7:
      if (perm.empty()) {
        perm.push_back(-1);
      } else {
        const std::size_t at = (fault >> 3) % perm.size();
        const int bad[4] = {-1, rank, perm[(at + 1) % perm.size()], INT_MIN};
        perm[at] = bad[(fault >> 5) & 3];
      }
      break;
    default:
      break;
  }
  return perm;
}

template <Value V>
const V& operand(const std::vector<V>& pool, std::uint8_t i) {
  return pool[i % pool.size()];
}

/// The values an instruction reads besides a, b, c: the list of concat_list.
template <Value V, Real T>
std::vector<V> concat_operands(const Instruction<T>& ins, const std::vector<V>& pool) {
  std::vector<V> xs;
  const int n = ins.opt[0] % 6;
  for (int i = 0; i < n; ++i) {
    xs.push_back(operand(pool, i == 0 ? ins.a : i == 1 ? ins.b : ins.more[i - 2]));
  }
  return xs;
}

// ---- cost bounds -------------------------------------------------------------------------------

/// Upper bounds on what an instruction allocates (elements) and does (work), from shapes and
/// options alone. 0 where amari refuses the arguments before allocating anything.
struct Cost {
  double elements = 0, work = 0;
};

inline double numel(const Shape& s) {
  double n = 1;
  for (const Index d : s.dims()) n *= static_cast<double>(d);
  return n;
}

/// Elements of a broadcast of a and b (an upper bound when they do not broadcast).
inline double broadcast_numel(const Shape& a, const Shape& b) {
  double n = 1;
  for (int i = 0; i < std::max(a.rank(), b.rank()); ++i) {
    const Index da = i < a.rank() ? a[a.rank() - 1 - i] : 1;
    const Index db = i < b.rank() ? b[b.rank() - 1 - i] : 1;
    n *= static_cast<double>(std::max(da, db));
  }
  return n;
}

/// conv2d's output pixels and multiply-adds, exactly as Conv2dBase::geometry computes them for
/// arguments it accepts (long double holds every Index sum here exactly).
inline Cost conv_cost(const Shape& x, const Shape& w, const Conv2dOptions& o) {
  if (x.rank() != 4 || w.rank() != 4) return {};
  constexpr auto kMax = static_cast<long double>(kMaxElements);
  long double out[2];
  for (std::size_t a = 0; a < 2; ++a) {
    const auto s = static_cast<long double>(o.stride[a]),
               p = static_cast<long double>(o.padding[a]),
               d = static_cast<long double>(o.dilation[a]);
    if (s < 1 || d < 1 || p < 0 || s > kMax || d > kMax || p > kMax) return {};  // refused
    const auto k = static_cast<long double>(w[static_cast<int>(a)]),
               in = static_cast<long double>(x[1 + static_cast<int>(a)]);
    const long double extent = d * (k - 1) + 1;
    if (k < 1 || extent > in + 2 * p) return {};  // refused
    out[a] = std::floor((in + 2 * p - extent) / s) + 1;
  }
  const auto pixels = static_cast<double>(static_cast<long double>(x[0]) * out[0] * out[1]);
  const double taps = static_cast<double>(w[0]) * static_cast<double>(w[1]) *
                      static_cast<double>(w[2]);  // per output channel
  return {pixels * static_cast<double>(w[3]),
          pixels * taps * static_cast<double>(std::max<Index>(w[3], 1)) + numel(x) + numel(w)};
}

/// A pooling's output and window visits, as PoolGeometry::make computes them.
inline Cost pool_cost(const Shape& x, const Pool2dOptions& o) {
  if (x.rank() != 4) return {};
  long double out[2], window[2];
  for (std::size_t a = 0; a < 2; ++a) {
    const Index k = o.kernel[a], s = o.stride[a], p = o.padding[a];
    if (k < 1 || s < 0 || p < 0 || p > k / 2) return {};  // refused
    const auto in = static_cast<long double>(x[1 + static_cast<int>(a)]);
    const auto kk = static_cast<long double>(k), pp = static_cast<long double>(p);
    if (in == 0 || kk > in + 2 * pp) return {};  // refused
    const long double step = s == 0 ? kk : static_cast<long double>(s);
    out[a] = std::floor((in + 2 * pp - kk) / step) + 1;
    window[a] = std::min(kk, in);  // only the part inside x is read
  }
  const auto elements =
      static_cast<double>(static_cast<long double>(x[0]) * out[0] * out[1] * x[3]);
  return {elements, elements * static_cast<double>(window[0] * window[1]) + numel(x)};
}

/// Upper bounds for one instruction on the given pool.
template <Value V, Real T>
Cost cost(const Instruction<T>& ins, const std::vector<V>& pool) {
  const Shape& x = primal_of(operand(pool, ins.a)).shape();
  const Shape& y = primal_of(operand(pool, ins.b)).shape();
  const Trans ta = (ins.param >> 5) & 1 ? Trans::yes : Trans::no;
  const Trans tb = (ins.param >> 6) & 1 ? Trans::yes : Trans::no;
  switch (ins.op) {
    case Op::add:
    case Op::sub:
    case Op::mul:
    case Op::div: {
      const double n = broadcast_numel(x, y);
      return {n, n};
    }
    case Op::matmul: {
      if (x.rank() != 2 || y.rank() != 2) return {};
      const double m = static_cast<double>(ta == Trans::yes ? x[1] : x[0]);
      const double k = static_cast<double>(ta == Trans::yes ? x[0] : x[1]);
      const double n = static_cast<double>(tb == Trans::yes ? y[0] : y[1]);
      return {m * n, m * n * std::max(k, 1.0)};
    }
    case Op::linear: {
      if (x.rank() != 2 || y.rank() != 2) return {};
      const double rows = static_cast<double>(x[0]), out = static_cast<double>(y[1]);
      return {rows * out, rows * out * std::max(static_cast<double>(x[1]), 1.0)};
    }
    case Op::conv2d:
    case Op::conv2d_no_bias:
      return conv_cost(x, y, conv_options(ins));
    case Op::conv2d_relu_max_pool2d: {
      // The convolution's cost, plus the pooling's over the convolution's output.
      const Conv2dOptions o = conv_options(ins);
      const Cost c = conv_cost(x, y, o);
      if (c.work == 0) return c;  // refused by the convolution's checks, or empty
      long double out[2];
      for (std::size_t a = 0; a < 2; ++a) {
        const auto k = static_cast<long double>(y[static_cast<int>(a)]);
        const long double extent = static_cast<long double>(o.dilation[a]) * (k - 1) + 1;
        out[a] = std::floor((static_cast<long double>(x[1 + static_cast<int>(a)]) +
                             2 * static_cast<long double>(o.padding[a]) - extent) /
                            static_cast<long double>(o.stride[a])) + 1;
      }
      const Shape conv_out{x[0], static_cast<Index>(out[0]), static_cast<Index>(out[1]), y[3]};
      return {c.elements, c.work + pool_cost(conv_out, pool_options(ins, 7)).work};
    }
    case Op::max_pool2d:
    case Op::relu_max_pool2d:
    case Op::avg_pool2d:
      return pool_cost(x, pool_options(ins));
    case Op::embedding: {
      const double rows = static_cast<double>(ins.more.size());
      const double d = x.rank() == 2 ? static_cast<double>(x[1]) : 0;  // weight (V, D)
      return {rows * d, rows * d};
    }
    case Op::concat:
      return {numel(x) + numel(y), numel(x) + numel(y)};
    case Op::concat_list: {
      double n = 0;
      for (const auto& v : concat_operands(ins, pool)) n += numel(primal_of(v).shape());
      return {n, 2 * n};  // a tree of 3-way concats copies each element ceil(log3 count) times
    }
    default:  // every other op: a result no larger than x, a bounded number of passes over it
      return {numel(x), numel(x)};
  }
}

/// One instruction applied to the pool. `stats` receives batch_norm's statistics when the
/// instruction asks for them.
template <Value V, Real T>
V apply(const Instruction<T>& ins, const std::vector<V>& pool, BatchStats<T>* stats) {
  const V& x = operand(pool, ins.a);
  const V& y = operand(pool, ins.b);
  const V& z = operand(pool, ins.c);
  const int axis =
      static_cast<int>((ins.param & 15) % 11) - 5;  // -5..5: includes out-of-range axes
  const bool keep = (ins.param >> 4) & 1;
  const Trans ta = (ins.param >> 5) & 1 ? Trans::yes : Trans::no;
  const Trans tb = (ins.param >> 6) & 1 ? Trans::yes : Trans::no;
  const double s1 = static_cast<double>(ins.s1), s2 = static_cast<double>(ins.s2);
  switch (ins.op) {
    case Op::exp:
      return amari::exp(x);
    case Op::log:
      return amari::log(x);
    case Op::tanh:
      return amari::tanh(x);
    case Op::sigmoid:
      return amari::sigmoid(x);
    case Op::relu:
      return amari::relu(x);
    case Op::softplus:
      return amari::softplus(x);
    case Op::square:
      return amari::square(x);
    case Op::sqrt:
      return amari::sqrt(x);
    case Op::gelu:
      return amari::gelu(x);
    case Op::affine:
      return amari::affine(x, s1, s2);
    case Op::neg:
      return -x;
    case Op::scale:
      return x * s1;
    case Op::add_scalar:
      return s1 + x;
    case Op::div_scalar:
      return x / s1;
    case Op::add:
      return x + y;
    case Op::sub:
      return x - y;
    case Op::mul:
      return x * y;
    case Op::div:
      return x / y;
    case Op::matmul:
      return amari::matmul(x, y, ta, tb);
    case Op::transpose:
      return amari::transpose(x);
    case Op::reshape:
      return amari::reshape(
          x, reshape_target(x.shape(), ins.param, ins.reshape_rank, ins.reshape_dims));
    case Op::sum_all:
      return amari::sum(x);
    case Op::sum_axis:
      return amari::sum(x, axis, keep);
    case Op::mean_all:
      return amari::mean(x);
    case Op::mean_axis:
      return amari::mean(x, axis, keep);
    case Op::max:
      return amari::max(x, axis, keep);
    case Op::logsumexp:
      return amari::logsumexp(x, axis, keep);
    case Op::softmax:
      return amari::softmax(x, axis);
    case Op::log_softmax:
      return amari::log_softmax(x, axis);
    case Op::linear:
      return amari::linear(x, y, z);
    case Op::conv2d:
      return amari::conv2d(x, y, z, conv_options(ins));
    case Op::conv2d_no_bias:
      return amari::conv2d(x, y, conv_options(ins));
    case Op::max_pool2d:
      return amari::max_pool2d(x, pool_options(ins));
    case Op::relu_max_pool2d:
      return amari::relu_max_pool2d(x, pool_options(ins));
    case Op::conv2d_relu_max_pool2d:
      return amari::conv2d_relu_max_pool2d(x, y, z, conv_options(ins), pool_options(ins, 7));
    case Op::avg_pool2d:
      return amari::avg_pool2d(x, pool_options(ins));
    case Op::global_avg_pool2d:
      return amari::global_avg_pool2d(x);
    case Op::layer_norm:
      return amari::layer_norm(x, y, z, s1);
    case Op::batch_norm:
      return amari::batch_norm(x, y, z, s1, keep ? stats : nullptr);
    case Op::dropout:
      return amari::dropout(x, s1, ins.opt[0] * std::uint64_t{0x9e3779b97f4a7c15},
                            ins.opt[1] == 255 ? ~std::uint64_t{0} : ins.opt[1]);
    case Op::embedding: {
      std::vector<Index> indices;
      for (const std::uint8_t b : ins.more) indices.push_back(decode_int(b));
      return amari::embedding(x, indices, small_shape(ins.reshape_rank, ins.reshape_dims));
    }
    case Op::permute:
      return amari::permute(x, permutation(x.shape().rank(), ins.opt[0], ins.opt[1]));
    case Op::concat:
      return amari::concat(x, y, axis);
    case Op::concat_list:
      return amari::concat(concat_operands(ins, pool), axis);
    case Op::slice:
      return amari::slice(x, axis, decode_int(ins.opt[0]), decode_int(ins.opt[1]));
    case Op::count:
      break;
  }
  throw HarnessFailure("ops harness: bad opcode");
}

/// What one mode computed: results[i] is empty where instruction i threw amari::Error (or was
/// skipped as too large); stats[i] holds the statistics batch_norm instruction i returned, when it
/// asked for them and succeeded.
template <Value V>
struct Trace {
  std::vector<std::optional<V>> results;
  std::vector<std::optional<BatchStats<typename V::value_type>>> stats;
};

/// Runs the program on the given input values. Failed instructions add nothing to the pool.
template <Value V, Real T>
Trace<V> run(const Program<T>& p, std::vector<V> pool) {
  Trace<V> trace;
  for (const auto& ins : p.code) {
    std::optional<V> r;
    BatchStats<T> stats;
    const Cost c = cost(ins, pool);
    if (c.elements <= kMaxResultElements && c.work <= kMaxWork) {
      returns_or_amari_error([&] { r = apply(ins, pool, &stats); });
    }
    const bool has_stats = r && ins.op == Op::batch_norm && ((ins.param >> 4) & 1);
    trace.stats.push_back(has_stats ? std::optional(std::move(stats)) : std::nullopt);
    if (r && pool.size() < kMaxPool) pool.push_back(*r);
    trace.results.push_back(std::move(r));
  }
  return trace;
}

template <Real T>
bool same_bits(const Tensor<T>& a, const Tensor<T>& b) {
  return a.shape() == b.shape() &&
         (a.size() == 0 ||
          std::memcmp(a.data(), b.data(), static_cast<std::size_t>(a.size()) * sizeof(T)) == 0);
}

/// Equal element by element, any NaN matching any NaN.
template <Real T>
bool same_values(const Tensor<T>& a, const Tensor<T>& b) {
  if (!(a.shape() == b.shape())) return false;
  for (Index i = 0; i < a.size(); ++i) {
    if (std::isnan(a[i]) && std::isnan(b[i])) continue;
    if (std::memcmp(&a[i], &b[i], sizeof(T)) != 0) return false;
  }
  return true;
}

template <Real T>
bool moderate(const Tensor<T>& t) {
  for (Index i = 0; i < t.size(); ++i) {
    if (!(std::fabs(t[i]) <= T(1e6))) return false;
  }
  return true;
}

/// 0 or a magnitude in [1e-3, 1e3]: a value whose local derivatives (1/x, y/x, ...) are bounded.
inline bool well_scaled(double v) {
  return v == 0 || (std::fabs(v) >= 1e-3 && std::fabs(v) <= 1e3);
}

template <Real T>
bool well_scaled(const Tensor<T>& t) {
  for (Index i = 0; i < t.size(); ++i) {
    if (!well_scaled(static_cast<double>(t[i]))) return false;
  }
  return true;
}

/// batch_norm's statistics, if asked for: (C) tensors equal bitwise in the three modes, a variance
/// that is not negative, and count = elements / C of the result y (shaped like x).
template <Real T>
void check_stats(const std::optional<BatchStats<T>>& plain,
                 const std::optional<BatchStats<T>>& dual, const std::optional<BatchStats<T>>& var,
                 const Tensor<T>& y, const std::string& at) {
  require(plain.has_value() == dual.has_value() && plain.has_value() == var.has_value(),
          at + "the modes disagree on whether batch_norm returned statistics");
  if (!plain) return;
  const Index c = y.shape()[y.rank() - 1];
  require(plain->mean.shape() == Shape{c} && plain->variance.shape() == Shape{c},
          at + "batch statistics are not of shape (C)");
  require(plain->count * c == y.size(), at + "batch statistics count is not elements / C");
  for (Index k = 0; k < c; ++k) {
    require(!(plain->variance[k] < 0), at + "batch statistics have a negative variance");
  }
  for (const auto* other : {&*dual, &*var}) {
    require(same_bits(plain->mean, other->mean) && same_bits(plain->variance, other->variance) &&
                plain->count == other->count,
            at + "batch statistics differ between the modes");
  }
}

/// Runs a program in the three modes and checks every property listed at the top of this file.
template <Real T>
void check_program(const Program<T>& p) {
  const std::string where = "ops harness: ";

  // ---- plain tensors
  std::vector<Tensor<T>> plain_inputs;
  for (const auto& in : p.inputs) plain_inputs.push_back(in.value);
  const Trace<Tensor<T>> plain_trace = run<Tensor<T>>(p, plain_inputs);
  const auto& plain = plain_trace.results;

  // ---- duals
  std::vector<Dual<T>> dual_inputs;
  for (const auto& in : p.inputs) {
    dual_inputs.push_back(in.constant ? Dual<T>(in.value) : Dual<T>(in.value, in.tangent));
  }
  const Trace<Dual<T>> dual_trace = run<Dual<T>>(p, dual_inputs);
  const auto& dual = dual_trace.results;

  // ---- tape variables
  std::optional<Var<T>> survivor;  // an active result, used after the tape is gone
  {
    Tape<T> tape;
    std::vector<Var<T>> var_inputs, variables;
    std::vector<Tensor<T>> seeds;
    for (const auto& in : p.inputs) {
      if (in.constant) {
        var_inputs.push_back(Var<T>(in.value));
      } else {
        var_inputs.push_back(tape.variable(in.value));
        variables.push_back(var_inputs.back());
        seeds.push_back(in.tangent);
      }
    }
    const Trace<Var<T>> var_trace = run<Var<T>>(p, var_inputs);
    const auto& var = var_trace.results;

    // Every mode threw at the same instructions and computed the same primal bits.
    for (std::size_t i = 0; i < p.code.size(); ++i) {
      const std::string at = where + "instruction " + std::to_string(i) + " (op " +
                             std::to_string(static_cast<int>(p.code[i].op)) + "): ";
      require(
          plain[i].has_value() == dual[i].has_value() && plain[i].has_value() == var[i].has_value(),
          at + "the modes disagree on whether it throws");
      if (!plain[i]) continue;
      require(same_bits(*plain[i], dual[i]->primal()),
              at + "dual primal differs from plain evaluation");
      require(same_bits(*plain[i], var[i]->value()),
              at + "tape value differs from plain evaluation");
      if (dual[i]->has_tangent()) {
        require(dual[i]->tangent().shape() == plain[i]->shape(),
                at + "tangent shape differs from primal");
      }
      check_stats(plain_trace.stats[i], dual_trace.stats[i], var_trace.stats[i], *plain[i], at);
    }

    // Outputs: every active result.
    std::vector<Var<T>> outputs;
    std::vector<const Dual<T>*> output_duals;
    for (std::size_t i = 0; i < var.size(); ++i) {
      if (var[i] && var[i]->is_active()) {
        outputs.push_back(*var[i]);
        output_duals.push_back(&*dual[i]);
      }
    }
    if (outputs.empty()) return;
    survivor = outputs.front();

    // Forward sweep: the same tangents as the duals.
    std::vector<Tensor<T>> jv;
    require(returns_or_amari_error([&] {
              jv = tape.jvp(std::span<const Var<T>>(variables), std::span<const Tensor<T>>(seeds),
                            std::span<const Var<T>>(outputs));
            }),
            where + "Tape::jvp threw on a well-formed record");
    for (std::size_t k = 0; k < outputs.size(); ++k) {
      const Dual<T>& d = *output_duals[k];
      const Tensor<T> expected = d.tangent_or_zeros();
      require(same_values(jv[k], expected),
              where + "Tape::jvp differs from the dual tangent for output " + std::to_string(k));
    }

    // Reverse sweep to the variables and to every output (intermediates are allowed as inputs of a
    // sweep; their adjoints bound the cancellation in the adjoint identity below).
    std::vector<Tensor<T>> cotangents;
    for (std::size_t k = 0; k < outputs.size(); ++k) {
      Tensor<T> u(outputs[k].shape());
      for (Index e = 0; e < u.size(); ++e)
        u[e] = static_cast<T>(((e * 5 + static_cast<Index>(k)) % 7 - 3) * 0.5 + 0.25);
      cotangents.push_back(std::move(u));
    }
    std::vector<Var<T>> wrt = variables;
    wrt.insert(wrt.end(), outputs.begin(), outputs.end());
    std::vector<Tensor<T>> xbar;
    require(returns_or_amari_error([&] {
              xbar = tape.vjp(std::span<const Var<T>>(outputs),
                              std::span<const Tensor<T>>(cotangents), std::span<const Var<T>>(wrt));
            }),
            where + "Tape::vjp threw on a well-formed record");
    require(xbar.size() == wrt.size(), where + "Tape::vjp returned the wrong number of results");
    for (std::size_t i = 0; i < wrt.size(); ++i) {
      require(xbar[i].shape() == wrt[i].shape(), where + "Tape::vjp result has the wrong shape");
    }

    // Adjoint identity <u, J v> = <J^T u, v>, where rounding is the only possible difference. Both
    // sides are sums whose terms may cancel, and a rule's internal terms (ybar / b in div) may be
    // far larger than anything stored, so it is only checked when every value and scalar is 0 or
    // in [1e-3, 1e3] and every tangent and adjoint is at most 1e6: then the rounding error is far
    // below 1e-7 of the magnitudes bounded by `scale`.
    if constexpr (std::is_same_v<T, double>) {
      bool tame = true;
      for (const auto& in : p.inputs) tame = tame && well_scaled(in.value) && moderate(in.tangent);
      for (std::size_t k = 0; k < outputs.size(); ++k) {
        tame = tame && well_scaled(outputs[k].value()) && moderate(jv[k]);
      }
      for (const auto& a : xbar) tame = tame && moderate(a);
      for (const auto& ins : p.code) {
        tame = tame && well_scaled(static_cast<double>(ins.s1)) &&
               well_scaled(static_cast<double>(ins.s2)) &&
               (ins.op != Op::div_scalar || ins.s1 != 0);
      }
      if (tame) {
        // Rounding in either sweep is bounded by a small multiple of eps times the magnitudes that
        // flow through it, including contributions that cancel (x - x passes |u| and |v| along
        // and gives 0). `scale` bounds those: the absolute terms of both sums, plus every
        // adjoint times the largest seed tangent and every cotangent times the largest output
        // tangent.
        auto l1 = [](const Tensor<T>& t) {
          double a = 0;
          for (Index e = 0; e < t.size(); ++e) a += std::fabs(static_cast<double>(t[e]));
          return a;
        };
        auto linf = [](const Tensor<T>& t) {
          double a = 0;
          for (Index e = 0; e < t.size(); ++e)
            a = std::max(a, std::fabs(static_cast<double>(t[e])));
          return a;
        };
        double lhs = 0, rhs = 0, scale = 0, max_seed = 0, max_jv = 0, sum_adjoints = 0, sum_u = 0;
        for (std::size_t k = 0; k < outputs.size(); ++k) {
          for (Index e = 0; e < jv[k].size(); ++e) {
            lhs += cotangents[k][e] * jv[k][e];
            scale += std::fabs(cotangents[k][e] * jv[k][e]);
          }
          max_jv = std::max(max_jv, linf(jv[k]));
          sum_u += l1(cotangents[k]);
        }
        for (std::size_t i = 0; i < variables.size(); ++i) {
          for (Index e = 0; e < xbar[i].size(); ++e) {
            rhs += xbar[i][e] * seeds[i][e];
            scale += std::fabs(xbar[i][e] * seeds[i][e]);
          }
          max_seed = std::max(max_seed, linf(seeds[i]));
        }
        for (const auto& a : xbar) sum_adjoints += l1(a);
        scale += sum_adjoints * max_seed + sum_u * max_jv;
        require(std::fabs(lhs - rhs) <= 1e-7 * scale + 1e-280,
                where + "adjoint identity fails: <u, Jv> = " + std::to_string(lhs) +
                    ", <J^T u, v> = " + std::to_string(rhs) + ", scale " + std::to_string(scale));
      }
    }

    // Second order: forward over reverse on the same record.
    if (!variables.empty()) {
      std::vector<Tensor<T>> hv;
      require(returns_or_amari_error([&] {
                hv = tape.hvp(
                    std::span<const Var<T>>(outputs), std::span<const Tensor<T>>(cotangents),
                    std::span<const Var<T>>(variables), std::span<const Tensor<T>>(seeds));
              }),
              where + "Tape::hvp threw on a well-formed record");
      require(hv.size() == variables.size(),
              where + "Tape::hvp returned the wrong number of results");
    }

    // A cleared tape refuses its old values.
    tape.clear();
    bool tape_error = false;
    try {
      (void)amari::exp(outputs.front());
    } catch (const TapeError&) {
      tape_error = true;
    }
    require(tape_error, where + "a value of a cleared tape did not raise TapeError");
  }
  // ... and so does a destroyed one.
  bool tape_error = false;
  try {
    (void)amari::tanh(*survivor);
  } catch (const TapeError&) {
    tape_error = true;
  }
  require(tape_error, where + "a value of a destroyed tape did not raise TapeError");
}

}  // namespace ops_detail

inline void run_ops(const std::uint8_t* data, std::size_t size) {
  Reader r(data, size);
  const std::uint8_t flags = r.u8();
  if (flags & 1) {
    ops_detail::check_program(ops_detail::decode<float>(r, flags));
  } else {
    ops_detail::check_program(ops_detail::decode<double>(r, flags));
  }
}

}  // namespace amari::fuzz
