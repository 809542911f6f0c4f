// check_rules: tests the derivative rules behind a function written once for every Value type (a
// user-defined primitive, autodiff/custom_primitive.hpp, or any composition of amari ops) with the
// same checks amari's own test registry runs on every built-in op.
//
//   auto f = [](auto x) { return my_sin(x[0]); };    // x: std::span<const V>, V any Value type
//   amari::CheckReport r = amari::check_rules("sin", f, {{amari::Shape{3, 4}}});
//   std::printf("%s", r.str().c_str());  // one line per check: PASS/FAIL, error, tolerance
//   if (!r.ok()) return 1;
//
// At one point x (sampled per input from its Domain, or given) with random directions v, w and a
// random output cotangent u, in double:
//   primal        Tensor, Dual and Var evaluations give the same value, bit for bit;
//   JVP           forward mode (Dual) J v against central finite differences of f along v, and
//                 the tape's forward sweep against forward mode;
//   VJP           the adjoint identity <u, J v> = sum_i <J_i^T u, v_i>, and <J^T u, w> against
//                 finite differences of <u, f(x + h w)>; the rules' two ways of writing an
//                 adjoint: into buffers filled with NaN (a fresh buffer is overwritten, never
//                 read) and onto buffers that already hold a value (added to);
//   constants     with several inputs, each input alone carrying a tangent (the others constant)
//                 against finite differences, alone requested for a cotangent against the full VJP,
//                 and alone in a Hessian-vector product against finite differences of its VJP;
//   second order  the tape's Hessian-vector product (forward over reverse: the VJP rule of the
//                 tangents plus the second-order rule) against finite differences of the VJP,
//                 the symmetry <w, H v> = <v, H w>, and the rules adding to adjoint tangents that
//                 already hold a value;
// and in float: the same evaluations within float tolerance of the double results. The finite
// differences are central, Richardson-extrapolated (error O(h^4), h = 1e-3 and 5e-4), in double.
// The tolerances are fixed and printed with each check. Cost for f of n inputs: 19 + 4 n
// evaluations of f (19 + 14 n when n > 1), each recorded one on a fresh tape.
#pragma once

#include <concepts>
#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include <amari/autodiff/value.hpp>

namespace amari {

/// Where check_rules samples an input's values.
enum class Domain {
  any,        ///< uniform in [-2, 2]
  positive,   ///< uniform in [0.5, 2] (log, sqrt, a divisor)
  separated,  ///< a shuffled grid of spacing 0.25 with offsets under 0.02: no two values
              ///< within 0.2, none within 0.1 of zero, so finite differences cross no kink or
              ///< tie (relu, max)
};

/// One input of the checked function: its shape and where its values are sampled.
struct InputSpec {
  Shape shape;
  Domain domain = Domain::any;
};

/// f(std::span<const V>) -> V for one value type V.
template <class V>
using ValueFn = std::function<V(std::span<const V>)>;

/// A function written once for any Value type, instantiated for the six types the checks run:
/// Tensor, Dual and Var of double and of float. Build one with checked_function.
struct CheckedFunction {
  std::vector<InputSpec> inputs;
  ValueFn<Tensor<double>> plain_d;
  ValueFn<Dual<double>> dual_d;
  ValueFn<Var<double>> var_d;
  ValueFn<Tensor<float>> plain_f;
  ValueFn<Dual<float>> dual_f;
  ValueFn<Var<float>> var_f;
};

/// Instantiates the generic callable f (taking std::span<const V>, returning V) for the six types.
template <class F>
CheckedFunction checked_function(std::vector<InputSpec> inputs, const F& f) {
  return CheckedFunction{std::move(inputs), f, f, f, f, f, f};
}

/// Settings of check_rules.
struct CheckOptions {
  /// Seeds the sampled inputs, the directions v and w and the cotangent u.
  std::uint64_t seed = 1;
  /// If not empty: the point to check at, one tensor per input with the declared shapes, instead
  /// of sampled inputs.
  std::vector<Tensor<double>> point;
};

/// One check: what was compared, the measured error and the largest error that passes.
struct CheckResult {
  /// Starts with what it tests ("primal:", "JVP:", "VJP:", "second order:", "float ...") and
  /// ends with how the error is measured ("(relative)", "(absolute)", "(max abs difference)",
  /// "(1 if not)"), then "(input i ...)" when it concerns one input of several.
  std::string name;
  double error = 0;
  double tolerance = 0;
  std::string detail;  ///< the compared quantities where a number helps, else empty
  /// error <= tolerance; a NaN error fails.
  bool passed() const { return error <= tolerance; }
};

/// What check_rules found: one result per check, in the order they ran.
struct CheckReport {
  /// The function's name, its input shapes and the seed (or "given point").
  std::string subject;
  std::vector<CheckResult> checks;
  /// True if every check passed.
  bool ok() const;
  /// Names of the checks that failed.
  std::vector<std::string> failed() const;
  /// A line with the subject and the number of failures, then one line per check: "PASS" or
  /// "FAIL", its name, the error and the tolerance, and the compared quantities if any.
  std::string str() const;
};

/// Runs every check listed at the top of this file on f. Throws ShapeError if options.point does
/// not match f.inputs, ValueError if f has no input; exceptions thrown by f itself propagate.
CheckReport check_rules(const std::string& name, const CheckedFunction& f,
                        const CheckOptions& options = {});

/// The same for a generic callable f(std::span<const V>) -> V with the given inputs.
template <class F>
  requires(!std::same_as<std::remove_cvref_t<F>, CheckedFunction>)
CheckReport check_rules(const std::string& name, const F& f, std::vector<InputSpec> inputs,
                        const CheckOptions& options = {}) {
  return check_rules(name, checked_function(std::move(inputs), f), options);
}

/// The inputs check_rules samples for `inputs` and `seed` (the first draws of its generator).
std::vector<Tensor<double>> sample_inputs(std::span<const InputSpec> inputs, std::uint64_t seed);

}  // namespace amari
