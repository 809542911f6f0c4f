// Tests of the classifier metrics (nn/metrics.hpp) against numbers computed by hand for a small
// set of four predictions, the binning convention of the calibration error, the probability floor
// of the NLL, the one-hot overloads, and every error path.
#include <amari/nn/metrics.hpp>

#include <cmath>
#include <vector>

#include <catch2/catch.hpp>

#include "support/matchers.hpp"

namespace {

using amari::Index;
using amari::Shape;
using amari::ShapeError;
using amari::Tensor;
using amari::ValueError;
using amari::test::MessageContains;
using namespace amari::nn;

// Four predictions over three classes:
//   row 0: label 0, predicted 0 with confidence 0.7 (correct)
//   row 1: label 2, predicted 1 with confidence 0.6 (wrong)
//   row 2: label 2, predicted 2 with confidence 0.5 (correct)
//   row 3: label 1, predicted 0 with confidence 0.9 (wrong)
template <class T>
Tensor<T> probabilities() {
  return Tensor<T>::from(Shape{4, 3}, {T(0.7), T(0.2), T(0.1),    //
                                       T(0.1), T(0.6), T(0.3),    //
                                       T(0.25), T(0.25), T(0.5),  //
                                       T(0.9), T(0.05), T(0.05)});
}
const std::vector<int> kLabels = {0, 2, 2, 1};

}  // namespace

TEST_CASE("metrics: NLL, accuracy and Brier score equal their hand-computed values",
          "[nn][metrics]") {
  const Tensor<double> p = probabilities<double>();
  // -(log 0.7 + log 0.3 + log 0.5 + log 0.05) / 4
  const double nll = -(std::log(0.7) + std::log(0.3) + std::log(0.5) + std::log(0.05)) / 4;
  CHECK(negative_log_likelihood(p, kLabels) == Approx(nll).epsilon(1e-14));
  CHECK(classification_accuracy(p, kLabels) == 0.5);
  // Rows: 0.09 + 0.04 + 0.01, 0.01 + 0.36 + 0.49, 0.0625 + 0.0625 + 0.25, 0.81 + 0.9025 + 0.0025.
  CHECK(brier_score(p, kLabels) == Approx((0.14 + 0.86 + 0.375 + 1.715) / 4).epsilon(1e-14));
}

TEST_CASE("metrics: ECE with 5 bins groups confidences 0.5 and 0.6 in the bin from 0.4 to 0.6",
          "[nn][metrics]") {
  const Tensor<double> p = probabilities<double>();
  // Bin (0.4, 0.6]: rows 1, 2: accuracy 1/2, mean confidence 0.55 -> 2/4 * 0.05.
  // Bin (0.6, 0.8]: row 0: accuracy 1, confidence 0.7 -> 1/4 * 0.3.
  // Bin (0.8, 1.0]: row 3: accuracy 0, confidence 0.9 -> 1/4 * 0.9.
  CHECK(expected_calibration_error(p, kLabels, 5) == Approx(0.025 + 0.075 + 0.225).epsilon(1e-14));
}

TEST_CASE("metrics: ECE with the default 15 bins puts every row in its own bin",
          "[nn][metrics]") {
  const Tensor<double> p = probabilities<double>();
  CHECK(kCalibrationBins == 15);
  CHECK(expected_calibration_error(p, kLabels) ==
        Approx((0.3 + 0.6 + 0.5 + 0.9) / 4).epsilon(1e-14));
  // One bin: |accuracy - mean confidence| of the whole set.
  CHECK(expected_calibration_error(p, kLabels, 1) == Approx(std::fabs(0.5 - 2.7 / 4)).epsilon(1e-14));
}

TEST_CASE("metrics: a perfectly confident correct classifier has zero NLL, ECE and Brier score",
          "[nn][metrics]") {
  const Tensor<double> p = Tensor<double>::from(Shape{2, 2}, {1, 0, 0, 1});
  const ClassifierMetrics m = classifier_metrics(p, std::vector<int>{0, 1});
  CHECK(m.nll == 0);
  CHECK(m.accuracy == 1);
  CHECK(m.ece == 0);
  CHECK(m.brier == 0);
}

TEST_CASE("metrics: a zero probability at the label costs -log of the floor, not infinity",
          "[nn][metrics]") {
  const Tensor<double> p = Tensor<double>::from(Shape{2, 2}, {1, 0, 0.5, 0.5});
  const double nll = negative_log_likelihood(p, std::vector<int>{1, 0});
  CHECK(nll == Approx((-std::log(kProbabilityFloor) - std::log(0.5)) / 2).epsilon(1e-14));
}

TEST_CASE("metrics: classifier_metrics equals the four separate metrics, for indices and one-hot",
          "[nn][metrics]") {
  const Tensor<double> p = probabilities<double>();
  const ClassifierMetrics m = classifier_metrics(p, kLabels, 5);
  CHECK(m.nll == negative_log_likelihood(p, kLabels));
  CHECK(m.accuracy == classification_accuracy(p, kLabels));
  CHECK(m.ece == expected_calibration_error(p, kLabels, 5));
  CHECK(m.brier == brier_score(p, kLabels));
  const Tensor<double> y = Tensor<double>::from(Shape{4, 3}, {1, 0, 0, 0, 0, 1, 0, 0, 1, 0, 1, 0});
  CHECK(labels_from_one_hot(y) == kLabels);
  const ClassifierMetrics h = classifier_metrics(p, y, 5);
  CHECK(h.nll == m.nll);
  CHECK(h.accuracy == m.accuracy);
  CHECK(h.ece == m.ece);
  CHECK(h.brier == m.brier);
}

TEST_CASE("metrics: float probabilities give the double values to float precision",
          "[nn][metrics]") {
  // 15 bins: no confidence lies on a bin edge in float or double (0.6f * 5 is above 3, 0.6 * 5 is
  // 3, which would put row 1 in different bins of 5).
  const ClassifierMetrics f = classifier_metrics(probabilities<float>(), kLabels);
  const ClassifierMetrics d = classifier_metrics(probabilities<double>(), kLabels);
  CHECK(f.nll == Approx(d.nll).epsilon(1e-6));
  CHECK(f.accuracy == d.accuracy);
  CHECK(f.ece == Approx(d.ece).epsilon(1e-6));
  CHECK(f.brier == Approx(d.brier).epsilon(1e-6));
}

TEST_CASE("metrics: ties in the largest probability resolve to the first class",
          "[nn][metrics]") {
  const Tensor<double> p = Tensor<double>::from(Shape{1, 3}, {0.4, 0.4, 0.2});
  CHECK(classification_accuracy(p, std::vector<int>{0}) == 1);
  CHECK(classification_accuracy(p, std::vector<int>{1}) == 0);
}

TEST_CASE("metrics: a row that does not sum to 1 is a ValueError naming the row and its sum",
          "[nn][metrics][errors]") {
  const Tensor<double> p = Tensor<double>::from(Shape{2, 3}, {0.2, 0.3, 0.5, 0.5, 0.4, 0.05});
  const std::vector<int> y = {0, 1};
  CHECK_THROWS_MATCHES(negative_log_likelihood(p, y), ValueError,
                       MessageContains({"negative_log_likelihood", "row 1", "0.95"}));
  CHECK_THROWS_MATCHES(classifier_metrics(p, y), ValueError,
                       MessageContains({"classifier_metrics", "row 1", "sums to 0.95"}));
  // Within a loose tolerance the same row is accepted.
  CHECK_NOTHROW(brier_score(p, y, 0.1));
}

TEST_CASE("metrics: probabilities outside 0 to 1 or not finite are ValueErrors naming the entry",
          "[nn][metrics][errors]") {
  const std::vector<int> y = {0};
  CHECK_THROWS_MATCHES(brier_score(Tensor<double>::from(Shape{1, 2}, {1.5, -0.5}), y), ValueError,
                       MessageContains({"brier_score", "1.5", "row 0", "class 0"}));
  CHECK_THROWS_MATCHES(
      classification_accuracy(Tensor<double>::from(Shape{1, 2}, {std::nan(""), 1.0}), y),
      ValueError, MessageContains({"classification_accuracy", "nan", "row 0"}));
}

TEST_CASE("metrics: labels out of range or of the wrong count are errors", "[nn][metrics][errors]") {
  const Tensor<double> p = probabilities<double>();
  CHECK_THROWS_MATCHES(negative_log_likelihood(p, std::vector<int>{0, 1, 3, 0}), ValueError,
                       MessageContains({"label 3", "row 2", "[0, 3)"}));
  CHECK_THROWS_MATCHES(negative_log_likelihood(p, std::vector<int>{0, 1}), ShapeError,
                       MessageContains({"2 labels", "(4, 3)"}));
}

TEST_CASE("metrics: probabilities that are not a non-empty (N, C) matrix are ShapeErrors",
          "[nn][metrics][errors]") {
  CHECK_THROWS_MATCHES(brier_score(Tensor<double>(Shape{3}), std::vector<int>{0, 0, 0}),
                       ShapeError, MessageContains({"brier_score", "(N, C)", "(3)"}));
  CHECK_THROWS_MATCHES(brier_score(Tensor<double>(Shape{0, 3}), std::vector<int>{}), ShapeError,
                       MessageContains({"brier_score", "(0, 3)"}));
  CHECK_THROWS_MATCHES(
      classifier_metrics(probabilities<double>(), Tensor<double>(Shape{4, 2})), ShapeError,
      MessageContains({"classifier_metrics", "(4, 2)", "(4, 3)"}));
}

TEST_CASE("metrics: fewer than one bin or a negative tolerance is a ValueError",
          "[nn][metrics][errors]") {
  const Tensor<double> p = probabilities<double>();
  CHECK_THROWS_MATCHES(expected_calibration_error(p, kLabels, 0), ValueError,
                       MessageContains({"expected_calibration_error", "bins", "0"}));
  CHECK_THROWS_MATCHES(brier_score(p, kLabels, -1.0), ValueError,
                       MessageContains({"brier_score", "tolerance", "-1"}));
}

TEST_CASE("metrics: a target row that is not one-hot is a ValueError naming the row",
          "[nn][metrics][errors]") {
  const Tensor<double> y = Tensor<double>::from(Shape{2, 2}, {1, 0, 0.5, 0.5});
  CHECK_THROWS_MATCHES(labels_from_one_hot(y), ValueError,
                       MessageContains({"labels_from_one_hot", "row 1", "one-hot"}));
}
