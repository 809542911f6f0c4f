// expect_ad: one helper that checks every derivative rule of a function written once for any Value
// type, so a test case for a primitive is a few lines (Stan's expect_ad, JAX's check_grads).
//
// For a case f with inputs x (sampled from each input's domain, fixed seed) it checks, in double:
//   1. the three modes agree on f(x) exactly (plain tensors, duals, tape);
//   2. forward mode (duals): J v against central finite differences with Richardson extrapolation;
//   3. the tape's forward sweep gives the same J v as the duals;
//   4. reverse mode: the adjoint identity <u, J v> = sum_i <J_i^T u, v_i> to 1e-12 relative, and
//      <J^T u, w> against finite differences of <u, f(x + h w)>;
//   5. constants: each input alone carrying a tangent / alone requested for a cotangent gives the
//      same as the full computation (the rules' "zero tangent" and "not wanted" paths);
//   6. second order: tape.hvp against finite differences of the VJP, and symmetry
//      <w, H v> = <v, H w> of the second-order form;
// and in float: every result above within float tolerance of the double result.
#pragma once

#include <catch2/catch.hpp>

#include <functional>
#include <span>
#include <string>
#include <vector>

#include <amari/autodiff/autodiff.hpp>

#include "support/random.hpp"

namespace amari::test {

/// Where an input is sampled: any value, bounded away from 0 (positive), or a set of well
/// separated values (so finite differences never cross a kink or a tie of max/relu).
enum class Domain { any, positive, separated };

struct Input {
  Shape shape;
  Domain domain = Domain::any;
};

template <class V>
using Fn = std::function<V(std::span<const V>)>;

/// One function to check, typically one primitive at one shape configuration.
struct AdCase {
  std::string primitive;  // the file stem in autodiff/ops this case exercises (or "composite")
  std::string label;      // what the case covers, shown on failure
  std::vector<Input> inputs;
  Fn<Tensor<double>> plain_d;
  Fn<Dual<double>> dual_d;
  Fn<Var<double>> var_d;
  Fn<Tensor<float>> plain_f;
  Fn<Dual<float>> dual_f;
  Fn<Var<float>> var_f;
  /// Input shape lists the function must reject with a ShapeError naming the primitive.
  std::vector<std::vector<Shape>> bad_shapes;
};

/// Builds a case from a generic callable f(std::span<const V>) -> V.
template <class F>
AdCase ad_case(std::string primitive, std::string label, std::vector<Input> inputs, F f,
               std::vector<std::vector<Shape>> bad_shapes = {}) {
  AdCase c;
  c.primitive = std::move(primitive);
  c.label = std::move(label);
  c.inputs = std::move(inputs);
  c.plain_d = f;
  c.dual_d = f;
  c.var_d = f;
  c.plain_f = f;
  c.dual_f = f;
  c.var_f = f;
  c.bad_shapes = std::move(bad_shapes);
  return c;
}

/// Samples the inputs of a case.
std::vector<Tensor<double>> sample_inputs(const AdCase& c, Rng& rng);

/// Runs checks 1-6 (double) and the float comparison; reports through Catch2 CHECKs.
void expect_ad(const AdCase& c, std::uint64_t seed = 1);

/// Checks the error paths every primitive shares: inputs from a cleared tape and from two different
/// tapes raise TapeError naming the primitive; each of c.bad_shapes raises ShapeError naming the
/// primitive and the offending shapes.
void expect_errors(const AdCase& c);

/// Central differences of g along directions, Richardson-extrapolated (error O(h^4)).
Tensor<double> fd_directional(const std::function<Tensor<double>(const std::vector<Tensor<double>>&)>& g,
                              const std::vector<Tensor<double>>& x, const std::vector<Tensor<double>>& dir,
                              double h = 1e-3);

}  // namespace amari::test
