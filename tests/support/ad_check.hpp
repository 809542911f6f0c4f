// expect_ad: one helper that checks every derivative rule of a function written once for any Value
// type, so a test case for a primitive is a few lines (Stan's expect_ad, JAX's check_grads).
//
// The checks themselves are the library's public amari::check_rules (autodiff/check_rules.hpp),
// the same that users run on their own primitives: the three modes agree on f(x) exactly; JVP
// against finite differences and the tape's forward sweep against the duals; the adjoint identity
// and the VJP against finite differences; each input alone as the only non-constant one; the
// Hessian-vector product against finite differences of the VJP and its symmetry; and float against
// double. expect_ad turns each line of its report into a Catch2 check.
#pragma once

#include <catch2/catch.hpp>

#include <functional>
#include <span>
#include <string>
#include <vector>

#include <amari/autodiff/autodiff.hpp>
#include <amari/autodiff/check_rules.hpp>

#include "support/random.hpp"

namespace amari::test {

// The registry's names for the public input description (autodiff/check_rules.hpp).
using Input = InputSpec;

/// One function to check, typically one primitive at one shape configuration: the public
/// CheckedFunction (inputs and the six instantiations) plus what the registry needs.
struct AdCase : CheckedFunction {
  std::string primitive;  // the file stem in autodiff/ops this case exercises (or "composite")
  std::string label;      // what the case covers, shown on failure
  /// Input shape lists the function must reject with a ShapeError naming the primitive.
  std::vector<std::vector<Shape>> bad_shapes;
};

/// Builds a case from a generic callable f(std::span<const V>) -> V.
template <class F>
AdCase ad_case(std::string primitive, std::string label, std::vector<Input> inputs, F f,
               std::vector<std::vector<Shape>> bad_shapes = {}) {
  AdCase c;
  static_cast<CheckedFunction&>(c) = checked_function(std::move(inputs), f);
  c.primitive = std::move(primitive);
  c.label = std::move(label);
  c.bad_shapes = std::move(bad_shapes);
  return c;
}

/// Runs amari::check_rules on the case (double and float) and reports each check through Catch2.
void expect_ad(const AdCase& c, std::uint64_t seed = 1);

/// Checks the error paths every primitive shares: inputs from a cleared tape and from two different
/// tapes raise TapeError naming the primitive; each of c.bad_shapes raises ShapeError naming the
/// primitive and the offending shapes.
void expect_errors(const AdCase& c);

}  // namespace amari::test
