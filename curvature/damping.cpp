// Levenberg-Marquardt damping (SEED-NOTES 5; Martens 2010, sec. 4.1).
#include <amari/curvature/damping.hpp>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <string>

#include <amari/curvature/detail/format.hpp>
#include <amari/autodiff/error.hpp>

namespace amari::curvature {
namespace {

using detail::format_number;

void require(bool ok, const char* what, double value, const char* expected) {
  if (!ok) {
    throw ValueError(std::string("LevenbergMarquardt: ") + what + " = " + format_number(value) +
                     ", expected " + expected);
  }
}

}  // namespace

double reduction_ratio(double actual_reduction, double predicted_reduction) {
  constexpr double kFailed = -std::numeric_limits<double>::infinity();
  if (!std::isfinite(actual_reduction)) return kFailed;
  if (!(predicted_reduction > 0.0) || !std::isfinite(predicted_reduction)) return kFailed;
  return actual_reduction / predicted_reduction;
}

void LevenbergMarquardt::validate() const {
  require(std::isfinite(min_lambda) && min_lambda >= 0.0, "min_lambda", min_lambda,
          "a finite value >= 0");
  require(std::isfinite(max_lambda) && max_lambda >= min_lambda, "max_lambda", max_lambda,
          "a finite value >= min_lambda");
  require(std::isfinite(lambda) && lambda >= 0.0, "lambda", lambda, "a finite value >= 0");
  require(std::isfinite(increase) && increase >= 1.0, "increase", increase, "a finite factor >= 1");
  require(decrease > 0.0 && decrease <= 1.0, "decrease", decrease, "a factor in (0, 1]");
  require(std::isfinite(low), "low", low, "a finite threshold");
  require(std::isfinite(high) && high >= low, "high", high, "a finite threshold >= low");
}

double LevenbergMarquardt::update(double actual_reduction, double predicted_reduction) {
  validate();
  const double rho = reduction_ratio(actual_reduction, predicted_reduction);
  // Martens 2010, sec. 4.1: rho < 1/4 -> lambda *= 3/2; rho > 3/4 -> lambda *= 2/3.
  double next = lambda;
  if (rho < low) {
    next = lambda * increase;
  } else if (rho > high) {
    next = lambda * decrease;
  }
  lambda = std::clamp(next, min_lambda, max_lambda);
  return rho;
}

}  // namespace amari::curvature
