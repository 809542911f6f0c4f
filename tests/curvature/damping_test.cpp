// Levenberg-Marquardt damping (SEED-NOTES 5; Martens 2010, sec. 4.1).
#include <cmath>
#include <limits>

#include <catch2/catch.hpp>

#include <amari/curvature/damping.hpp>

using amari::curvature::LevenbergMarquardt;
using amari::curvature::reduction_ratio;

namespace {
constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
constexpr double kInf = std::numeric_limits<double>::infinity();
}  // namespace

TEST_CASE("LevenbergMarquardt: rho < 1/4 multiplies lambda by 3/2") {
  LevenbergMarquardt lm{.lambda = 2.0};
  CHECK(lm.update(0.1, 1.0) == Approx(0.1));
  CHECK(lm.lambda == Approx(3.0));
  lm.update(-5.0, 1.0);  // the loss went up: rho < 0
  CHECK(lm.lambda == Approx(4.5));
}

TEST_CASE("LevenbergMarquardt: rho > 3/4 multiplies lambda by 2/3") {
  LevenbergMarquardt lm{.lambda = 3.0};
  CHECK(lm.update(0.9, 1.0) == Approx(0.9));
  CHECK(lm.lambda == Approx(2.0));
  lm.update(2.0, 1.0);  // better than predicted still counts as trusted
  CHECK(lm.lambda == Approx(4.0 / 3.0));
}

TEST_CASE("LevenbergMarquardt: 1/4 <= rho <= 3/4 leaves lambda unchanged") {
  LevenbergMarquardt lm{.lambda = 0.7};
  for (double rho : {0.25, 0.5, 0.75}) {
    CAPTURE(rho);
    CHECK(lm.update(rho * 4.0, 4.0) == Approx(rho));
    CHECK(lm.lambda == 0.7);
  }
}

TEST_CASE(
    "LevenbergMarquardt: a NaN or infinite actual reduction counts as rho = -inf and "
    "increases lambda") {
  for (double actual : {kNaN, kInf, -kInf}) {
    CAPTURE(actual);
    LevenbergMarquardt lm{.lambda = 1.0};
    const double rho = lm.update(actual, 1.0);
    CHECK(std::isinf(rho));
    CHECK(rho < 0.0);
    CHECK(lm.lambda == Approx(1.5));
  }
}

TEST_CASE(
    "LevenbergMarquardt: no predicted decrease (predicted <= 0 or non-finite) increases "
    "lambda") {
  for (double predicted : {0.0, -1.0, kNaN, kInf}) {
    CAPTURE(predicted);
    LevenbergMarquardt lm{.lambda = 1.0};
    CHECK(lm.update(0.5, predicted) == -kInf);
    CHECK(lm.lambda == Approx(1.5));
  }
  CHECK(reduction_ratio(0.3, 0.6) == 0.5);
  CHECK(reduction_ratio(-0.3, 0.6) == -0.5);
}

TEST_CASE("LevenbergMarquardt: lambda stays within min_lambda..max_lambda") {
  LevenbergMarquardt lm{.lambda = 9.0, .min_lambda = 1.0, .max_lambda = 10.0};
  lm.update(0.0, 1.0);
  CHECK(lm.lambda == 10.0);  // 13.5 clamped
  lm.update(0.0, 1.0);
  CHECK(lm.lambda == 10.0);
  lm.lambda = 1.2;
  lm.update(1.0, 1.0);
  CHECK(lm.lambda == 1.0);  // 0.8 clamped
  lm.update(1.0, 1.0);
  CHECK(lm.lambda == 1.0);
  // Default bounds keep a decreasing lambda positive, so it can grow again later.
  LevenbergMarquardt small{.lambda = 1e-8};
  small.update(1.0, 1.0);
  CHECK(small.lambda == 1e-8);
  small.update(0.0, 1.0);
  CHECK(small.lambda == Approx(1.5e-8));
}

TEST_CASE("LevenbergMarquardt: inconsistent settings throw ValueError and leave lambda") {
  auto check_refused = [](LevenbergMarquardt lm) {
    const double before = lm.lambda;
    CHECK_THROWS_AS(lm.update(0.0, 1.0), amari::ValueError);
    CHECK((lm.lambda == before || (std::isnan(lm.lambda) && std::isnan(before))));
  };
  check_refused({.lambda = -1.0});
  check_refused({.lambda = kNaN});
  check_refused({.lambda = 1.0, .decrease = 0.0});
  check_refused({.lambda = 1.0, .decrease = 1.5});
  check_refused({.lambda = 1.0, .increase = 0.5});
  check_refused({.lambda = 1.0, .low = 0.8, .high = 0.2});
  check_refused({.lambda = 1.0, .min_lambda = 2.0, .max_lambda = 1.0});
  check_refused({.lambda = 1.0, .min_lambda = -1.0});
  CHECK_NOTHROW(LevenbergMarquardt{}.validate());
}
