// verify(): a self-check a user runs on their own model's curvature operator before trusting it.
//
//   auto report = amari::curvature::verify(ggn);   // any operator; checks chosen from what it is
//   std::cout << report.str();                      // one line per check, PASS/FAIL with numbers
//   if (!report.ok()) ...
//
// Checks (each reports its measured value and the tolerance it was held to):
//  - symmetry:    |u^T (A v) - v^T (A u)| relative, on random probes;
//  - positivity:  v^T A v >= 0 on random probes (curvatures that must be PSD: GGN, Fisher);
//  - adjoint:     <b, J v> = <J^T b, v> for the model's linearization (JVP vs VJP);
//  - finite differences: J v against central differences of the model's logits;
//  - dense (P <= dense_limit): the matrix of A from P products is symmetric, and for a J^T M J
//    operator (GGN, Monte-Carlo and empirical Fisher) equals (1/N) sum_i J_i^T M_i J_i assembled
//    from JVPs and the operator's logit-space matrix (for the GGN: the head's closed-form H_L).
// The checks are chosen from the operator's dynamic type, so an operator held through a
// LinearOperator reference gets the same checks as one held by its own type. The dense matrices
// are formed only here, for small P, as test oracles; the operators never form them.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <amari/curvature/linear_operator.hpp>

namespace amari::curvature {

struct VerifyOptions {
  int probes = 5;             ///< random probe vectors per check
  std::uint64_t seed = 1;     ///< for the probes
  Index dense_limit = 300;    ///< form the dense matrix when P <= this (P products)
  double tolerance = 0;       ///< relative tolerance; 0 picks 1e-9 for double, 2e-3 for float
  bool expect_psd = true;     ///< check positivity (false for Hessians)
};

/// One check: what was measured against what bound.
struct VerifyCheck {
  std::string name;
  bool passed = false;
  double value = 0;      ///< the measured (worst) relative error, or the smallest v^T A v
  double tolerance = 0;
  std::string detail;
};

/// All checks of one verify() call.
struct VerifyReport {
  std::string subject;
  std::vector<VerifyCheck> checks;
  /// True if every check passed.
  bool ok() const;
  /// A readable multi-line report.
  std::string str() const;
};

/// Every check that applies to `op`: the operator-level ones for any square operator (symmetry,
/// positivity if expect_psd, dense symmetry for small sizes); for operators over a recorded model
/// (GGN, Fisher operators, Hessian) also the adjoint identity and finite differences of the
/// model's linearization; for J^T M J operators with P <= dense_limit also the dense J^T M J.
template <Real T>
VerifyReport verify(LinearOperator<T>& op, const VerifyOptions& options = {});

}  // namespace amari::curvature
