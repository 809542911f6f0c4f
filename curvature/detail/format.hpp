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

}  // namespace amari::curvature::detail
