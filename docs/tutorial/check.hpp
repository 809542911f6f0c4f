// The checks of the tutorial programs: each prints "ok" or "WRONG" with the number it compared,
// and finish() makes the program exit with 1 if any was wrong, so a chapter whose numbers drift
// from its text fails its CTest entry (tests/CMakeLists.txt, "tutorial: ...").
#pragma once

#include <cmath>
#include <cstdio>
#include <initializer_list>

#include <amari/autodiff/tensor.hpp>

namespace tutorial {

inline int& failures() {
  static int count = 0;
  return count;
}

/// |got - want| <= tol * max(1, |want|).
inline void check_near(const char* what, double got, double want, double tol = 1e-12) {
  const bool ok = std::fabs(got - want) <= tol * std::fmax(1.0, std::fabs(want));
  std::printf("  %-5s %s: %.12g (expected %.12g)\n", ok ? "ok" : "WRONG", what, got, want);
  if (!ok) ++failures();
}

/// The elements of t, in row-major order, against `want`.
inline void check_tensor(const char* what, const amari::Tensor<double>& t,
                         std::initializer_list<double> want, double tol = 1e-12) {
  bool ok = t.size() == static_cast<amari::Index>(want.size());
  amari::Index i = 0;
  for (double w : want)
    ok = ok && i < t.size() && std::fabs(t[i++] - w) <= tol * std::fmax(1.0, std::fabs(w));
  std::printf("  %-5s %s: (", ok ? "ok" : "WRONG", what);
  for (amari::Index k = 0; k < t.size(); ++k) std::printf(k ? ", %.6g" : "%.6g", t[k]);
  std::printf(")\n");
  if (!ok) ++failures();
}

/// A condition that must hold.
inline void check_true(const char* what, bool ok) {
  std::printf("  %-5s %s\n", ok ? "ok" : "WRONG", what);
  if (!ok) ++failures();
}

/// The exit status: 0 if every check passed.
inline int finish() {
  if (failures() > 0) std::printf("%d check(s) WRONG\n", failures());
  return failures() > 0 ? 1 : 0;
}

}  // namespace tutorial
