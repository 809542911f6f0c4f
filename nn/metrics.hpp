// Metrics of a probabilistic classifier on a labelled test set, computed from its predicted class
// probabilities p (N, C) (rows on the probability simplex) and the labels: the test negative log
// likelihood, the accuracy, the expected calibration error and the Brier score. They are what
// Laplace approximations are judged by (curvature/laplace.hpp; Daxberger et al. 2021).
//
// Labels are class indices in [0, C) (as nn::evaluate and the data sets hold them) or one-hot rows
// (N, C) (as the heads' targets, nn::one_hot). Every function checks its inputs first: p of rank 2
// with N >= 1 rows and C >= 1 columns, one label per row, labels in range, every probability
// finite and in [0, 1], and each row summing to 1 within `tolerance` (ValueError naming the first
// bad row and its sum; ShapeError for shapes). Sums are accumulated in double in row order, so
// results do not depend on the thread count.
#pragma once

#include <vector>

#include <amari/autodiff/tensor.hpp>

namespace amari::nn {

/// Probabilities below this are raised to it inside the log of the NLL, so that one confidently
/// wrong prediction (p_y = 0 in floating point) gives a large finite NLL (-log 1e-15 = 34.5)
/// instead of +inf. scikit-learn's log_loss used the same floor.
inline constexpr double kProbabilityFloor = 1e-15;

/// Default tolerance on |sum_c p_ic - 1|: loose enough for float softmax outputs.
inline constexpr double kSimplexTolerance = 1e-4;

/// Default number of confidence bins of the expected calibration error (Guo et al. 2017).
inline constexpr int kCalibrationBins = 15;

/// Test negative log likelihood: -(1/N) sum_i log max(p_{i, y_i}, kProbabilityFloor).
template <Real T>
double negative_log_likelihood(const Tensor<T>& probabilities, const std::vector<int>& labels,
                               double tolerance = kSimplexTolerance);

/// Fraction of rows whose largest probability is at the label (the first largest on ties, as
/// nn::argmax_rows).
template <Real T>
double classification_accuracy(const Tensor<T>& probabilities, const std::vector<int>& labels,
                               double tolerance = kSimplexTolerance);

/// Expected calibration error (Naeini et al. 2015; Guo et al. 2017, sec. 2) with `bins` >= 1
/// equal-width bins of the confidence c_i = max_c p_ic (ValueError otherwise): bin b holds the rows
/// with b / bins < c_i <= (b + 1) / bins (bin 0 also c_i = 0), and
///   ECE = sum_b (|B_b| / N) |acc(B_b) - conf(B_b)|,
/// acc the fraction of the bin's rows predicted correctly (argmax as in classification_accuracy),
/// conf their mean confidence; empty bins contribute nothing.
template <Real T>
double expected_calibration_error(const Tensor<T>& probabilities, const std::vector<int>& labels,
                                  int bins = kCalibrationBins, double tolerance = kSimplexTolerance);

/// Brier score (Brier 1950), summed over classes and averaged over rows:
/// (1/N) sum_i sum_c (p_ic - [c = y_i])^2, in [0, 2].
template <Real T>
double brier_score(const Tensor<T>& probabilities, const std::vector<int>& labels,
                   double tolerance = kSimplexTolerance);

/// The four metrics of one set of predictions.
struct ClassifierMetrics {
  double nll = 0;       ///< negative_log_likelihood
  double accuracy = 0;  ///< classification_accuracy
  double ece = 0;       ///< expected_calibration_error
  double brier = 0;     ///< brier_score
};

/// All four metrics in one call (the inputs are checked once). Cost O(N C).
template <Real T>
ClassifierMetrics classifier_metrics(const Tensor<T>& probabilities,
                                     const std::vector<int>& labels, int bins = kCalibrationBins,
                                     double tolerance = kSimplexTolerance);

/// The class indices of one-hot rows (N, C): ShapeError unless rank 2, ValueError naming the first
/// row that is not exactly one 1 and C - 1 zeros. For passing the heads' targets to the metrics.
template <Real T>
std::vector<int> labels_from_one_hot(const Tensor<T>& one_hot);

/// classifier_metrics with one-hot targets (N, C) of the probabilities' shape (ShapeError
/// otherwise).
template <Real T>
ClassifierMetrics classifier_metrics(const Tensor<T>& probabilities, const Tensor<T>& one_hot,
                                     int bins = kCalibrationBins,
                                     double tolerance = kSimplexTolerance);

#define AMARI_METRICS_EXTERN(T)                                                                    \
  extern template double negative_log_likelihood<T>(const Tensor<T>&, const std::vector<int>&,    \
                                                    double);                                       \
  extern template double classification_accuracy<T>(const Tensor<T>&, const std::vector<int>&,    \
                                                     double);                                      \
  extern template double expected_calibration_error<T>(const Tensor<T>&, const std::vector<int>&, \
                                                       int, double);                               \
  extern template double brier_score<T>(const Tensor<T>&, const std::vector<int>&, double);        \
  extern template ClassifierMetrics classifier_metrics<T>(const Tensor<T>&,                        \
                                                          const std::vector<int>&, int, double);   \
  extern template std::vector<int> labels_from_one_hot<T>(const Tensor<T>&);                       \
  extern template ClassifierMetrics classifier_metrics<T>(const Tensor<T>&, const Tensor<T>&, int, \
                                                          double);
AMARI_METRICS_EXTERN(float)
AMARI_METRICS_EXTERN(double)
#undef AMARI_METRICS_EXTERN

}  // namespace amari::nn
