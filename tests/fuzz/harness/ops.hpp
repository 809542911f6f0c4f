// Fuzz harness for the public ops (autodiff/ops.hpp) in all three modes.
//
// The input decodes to a small program: up to three input tensors of random shapes (rank 0-4,
// every dimension 0-5, so empty tensors are common) holding random values (NaN, +-inf, denormals,
// the largest and smallest normals, exp overflow thresholds, raw bit patterns, small multiples of
// 1/8 with many ties and exact zeros), then up to 32 instructions, each applying one public op to
// values from a pool that grows with every result. The program runs three times:
//   Tensor<T>: plain evaluation;
//   Dual<T>:   forward mode, each non-constant input carrying a tangent;
//   Var<T>:    recorded on a tape, then Tape::jvp, Tape::vjp (a reverse sweep from every active
//              result to the inputs and to every intermediate result) and Tape::hvp.
// Checks: every op call returns or throws amari::Error, and throws in all modes or in none; the
// three modes compute bitwise identical primal values; the tape's forward sweep reproduces the
// duals' tangents; the sweeps never throw on a well-formed record; in double, when every value is
// 0 or in [1e-3, 1e3], the adjoint identity <u, J v> = <J^T u, v> holds to rounding; results of a
// cleared or destroyed tape raise TapeError.
//
// Byte layout (bytes past the end read as 0):
//   flags:  bit 0 float (else double); bits 1-3 input i is a constant (no tangent, not a tape
//           variable); bit 4 tangents equal the values (else a fixed pattern); bits 5-6 number of
//           inputs - 1 (3 means 3)
//   per input: rank byte (% 5), one byte per dimension (% 6), one value code per element
//   per instruction: opcode, operand a, operand b (indices into the pool, modulo its size), a
//           parameter byte (axis = (p & 15) % 11 - 5, keep_dims = bit 4, transpose a = bit 5,
//           transpose b = bit 6; for reshape the target kind p % 6), two value codes (the scalars
//           of affine/scale/add_scalar/division), for reshape a rank byte and 4 dimension bytes,
//           and for linear the third operand (the bias)
//   value code v: v < 24 a special value, v < 40 raw bits (4 or 8 more bytes), else (v - 148) / 8
#pragma once

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
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
  count
};

inline constexpr int kMaxInstructions = 32;
inline constexpr std::size_t kMaxPool = 40;

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
  std::uint8_t reshape_rank = 0;
  std::uint8_t reshape_dims[4] = {};
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
    if (ins.op == Op::reshape) {
      ins.reshape_rank = r.u8() % 5;
      for (auto& d : ins.reshape_dims) d = r.u8() % 6;
    }
    if (ins.op == Op::linear) ins.c = r.u8();
    p.code.push_back(ins);
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
    default: {
      Index d[4];
      for (int i = 0; i < 4; ++i) d[i] = dims[i];
      return Shape(std::span<const Index>(d, rank));
    }
  }
}

/// One instruction applied to pool values x (operand a), y (operand b) and z (operand c).
template <Value V, Real T>
V apply(const Instruction<T>& ins, const V& x, const V& y, const V& z) {
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
    case Op::count:
      break;
  }
  throw HarnessFailure("ops harness: bad opcode");
}

/// Runs the program on the given input values; results[i] is empty where instruction i threw
/// amari::Error. Failed instructions add nothing to the pool.
template <Value V, Real T>
std::vector<std::optional<V>> run(const Program<T>& p, std::vector<V> pool) {
  std::vector<std::optional<V>> results;
  for (const auto& ins : p.code) {
    const V& x = pool[ins.a % pool.size()];
    const V& y = pool[ins.b % pool.size()];
    const V& z = pool[ins.c % pool.size()];
    std::optional<V> r;
    returns_or_amari_error([&] { r = apply(ins, x, y, z); });
    if (r && pool.size() < kMaxPool) pool.push_back(*r);
    results.push_back(std::move(r));
  }
  return results;
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

/// Runs a program in the three modes and checks every property listed at the top of this file.
template <Real T>
void check_program(const Program<T>& p) {
  const std::string where = "ops harness: ";

  // ---- plain tensors
  std::vector<Tensor<T>> plain_inputs;
  for (const auto& in : p.inputs) plain_inputs.push_back(in.value);
  const auto plain = run<Tensor<T>>(p, plain_inputs);

  // ---- duals
  std::vector<Dual<T>> dual_inputs;
  for (const auto& in : p.inputs) {
    dual_inputs.push_back(in.constant ? Dual<T>(in.value) : Dual<T>(in.value, in.tangent));
  }
  const auto dual = run<Dual<T>>(p, dual_inputs);

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
    const auto var = run<Var<T>>(p, var_inputs);

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
