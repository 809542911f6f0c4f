// Internal: how curvature/ writes a number into an error message or an operator's name.
#pragma once

#include <cstdio>
#include <string>

namespace amari::curvature::detail {

/// "%g" of x: 6 significant digits, exponent form for very large or small values.
inline std::string format_number(double x) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%g", x);
  return buf;
}

/// "%.9g" of x: 9 significant digits, enough to tell apart the numbers a message compares.
inline std::string format_precise(double x) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.9g", x);
  return buf;
}

}  // namespace amari::curvature::detail
