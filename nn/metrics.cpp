#include <amari/nn/metrics.hpp>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <string>

namespace amari::nn {

namespace {

// Nine significant digits: enough to tell two metric values apart in an error message.
std::string nine_digits(double x) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.9g", x);
  return buf;
}

// Checks probabilities (N, C) against labels (see the file comment of metrics.hpp).
template <Real T>
void check_predictions(const char* op, const Tensor<T>& p, const std::vector<int>& labels,
                       double tolerance) {
  if (!p.defined() || p.rank() != 2) {
    throw ShapeError(std::string(op) + ": probabilities must have shape (N, C), got " +
                     (p.defined() ? p.shape().str() : std::string("undefined")));
  }
  const Index n = p.dim(0), c = p.dim(1);
  if (n == 0 || c == 0) {
    throw ShapeError(std::string(op) + ": probabilities of shape " + p.shape().str() +
                     " hold no prediction (N and C must be >= 1)");
  }
  if (static_cast<Index>(labels.size()) != n) {
    throw ShapeError(std::string(op) + ": " + std::to_string(labels.size()) +
                     " labels for probabilities of shape " + p.shape().str());
  }
  if (!(tolerance >= 0) || !std::isfinite(tolerance)) {
    throw ValueError(std::string(op) + ": tolerance must be finite and >= 0, got " +
                     nine_digits(tolerance));
  }
  for (Index i = 0; i < n; ++i) {
    const int y = labels[static_cast<std::size_t>(i)];
    if (y < 0 || y >= c) {
      throw ValueError(std::string(op) + ": label " + std::to_string(y) + " of row " +
                       std::to_string(i) + " is outside [0, " + std::to_string(c) + ")");
    }
    double sum = 0;
    for (Index k = 0; k < c; ++k) {
      const double v = static_cast<double>(p[i * c + k]);
      if (!(v >= 0 && v <= 1)) {  // also NaN
        throw ValueError(std::string(op) + ": probability " + nine_digits(v) + " at row " +
                         std::to_string(i) + ", class " + std::to_string(k) +
                         " is not in [0, 1]");
      }
      sum += v;
    }
    if (std::fabs(sum - 1.0) > tolerance) {
      throw ValueError(std::string(op) + ": row " + std::to_string(i) + " sums to " + nine_digits(sum) +
                       ", not 1 within " + nine_digits(tolerance));
    }
  }
}

// Index of the largest entry of row i (the first one on ties).
template <Real T>
Index argmax_row(const Tensor<T>& p, Index i) {
  const Index c = p.dim(1);
  const T* r = p.data() + i * c;
  return static_cast<Index>(std::max_element(r, r + c) - r);
}

template <Real T>
double nll_of(const Tensor<T>& p, const std::vector<int>& labels) {
  const Index n = p.dim(0), c = p.dim(1);
  double s = 0;
  for (Index i = 0; i < n; ++i) {
    const double py = static_cast<double>(p[i * c + labels[static_cast<std::size_t>(i)]]);
    s -= std::log(std::max(py, kProbabilityFloor));
  }
  return s / static_cast<double>(n);
}

template <Real T>
double accuracy_of(const Tensor<T>& p, const std::vector<int>& labels) {
  const Index n = p.dim(0);
  Index correct = 0;
  for (Index i = 0; i < n; ++i) correct += argmax_row(p, i) == labels[static_cast<std::size_t>(i)];
  return static_cast<double>(correct) / static_cast<double>(n);
}

template <Real T>
double ece_of(const Tensor<T>& p, const std::vector<int>& labels, int bins) {
  const Index n = p.dim(0), c = p.dim(1);
  std::vector<double> count(static_cast<std::size_t>(bins), 0.0), correct(count), confidence(count);
  for (Index i = 0; i < n; ++i) {
    const Index k = argmax_row(p, i);
    const double conf = static_cast<double>(p[i * c + k]);
    // (b / bins, (b + 1) / bins]: ceil(conf * bins) - 1, with conf = 0 in bin 0.
    const int b = std::clamp(static_cast<int>(std::ceil(conf * bins)) - 1, 0, bins - 1);
    const auto u = static_cast<std::size_t>(b);
    count[u] += 1;
    correct[u] += k == labels[static_cast<std::size_t>(i)];
    confidence[u] += conf;
  }
  double ece = 0;
  for (std::size_t b = 0; b < count.size(); ++b) {
    if (count[b] == 0) continue;
    ece += std::fabs(correct[b] - confidence[b]) / static_cast<double>(n);  // (n_b / N) |acc - conf|
  }
  return ece;
}

template <Real T>
double brier_of(const Tensor<T>& p, const std::vector<int>& labels) {
  const Index n = p.dim(0), c = p.dim(1);
  double s = 0;
  for (Index i = 0; i < n; ++i) {
    for (Index k = 0; k < c; ++k) {
      const double d = static_cast<double>(p[i * c + k]) - (k == labels[static_cast<std::size_t>(i)]);
      s += d * d;
    }
  }
  return s / static_cast<double>(n);
}

void check_bins(const char* op, int bins) {
  if (bins < 1) {
    throw ValueError(std::string(op) + ": the number of bins must be >= 1, got " +
                     std::to_string(bins));
  }
}

}  // namespace

template <Real T>
double negative_log_likelihood(const Tensor<T>& probabilities, const std::vector<int>& labels,
                               double tolerance) {
  check_predictions("negative_log_likelihood", probabilities, labels, tolerance);
  return nll_of(probabilities, labels);
}

template <Real T>
double classification_accuracy(const Tensor<T>& probabilities, const std::vector<int>& labels,
                               double tolerance) {
  check_predictions("classification_accuracy", probabilities, labels, tolerance);
  return accuracy_of(probabilities, labels);
}

template <Real T>
double expected_calibration_error(const Tensor<T>& probabilities, const std::vector<int>& labels,
                                  int bins, double tolerance) {
  check_bins("expected_calibration_error", bins);
  check_predictions("expected_calibration_error", probabilities, labels, tolerance);
  return ece_of(probabilities, labels, bins);
}

template <Real T>
double brier_score(const Tensor<T>& probabilities, const std::vector<int>& labels,
                   double tolerance) {
  check_predictions("brier_score", probabilities, labels, tolerance);
  return brier_of(probabilities, labels);
}

template <Real T>
ClassifierMetrics classifier_metrics(const Tensor<T>& probabilities,
                                     const std::vector<int>& labels, int bins, double tolerance) {
  check_bins("classifier_metrics", bins);
  check_predictions("classifier_metrics", probabilities, labels, tolerance);
  return {nll_of(probabilities, labels), accuracy_of(probabilities, labels),
          ece_of(probabilities, labels, bins), brier_of(probabilities, labels)};
}

template <Real T>
std::vector<int> labels_from_one_hot(const Tensor<T>& one_hot) {
  if (!one_hot.defined() || one_hot.rank() != 2) {
    throw ShapeError("labels_from_one_hot: targets must have shape (N, C), got " +
                     (one_hot.defined() ? one_hot.shape().str() : std::string("undefined")));
  }
  const Index n = one_hot.dim(0), c = one_hot.dim(1);
  std::vector<int> labels(static_cast<std::size_t>(n));
  for (Index i = 0; i < n; ++i) {
    Index ones = 0, at = 0;
    bool other = false;
    for (Index k = 0; k < c; ++k) {
      const T v = one_hot[i * c + k];
      if (v == T(1)) {
        ++ones;
        at = k;
      } else if (v != T(0)) {
        other = true;
      }
    }
    if (ones != 1 || other) {
      throw ValueError("labels_from_one_hot: row " + std::to_string(i) +
                       " is not one-hot (exactly one 1 and zeros elsewhere)");
    }
    labels[static_cast<std::size_t>(i)] = static_cast<int>(at);
  }
  return labels;
}

template <Real T>
ClassifierMetrics classifier_metrics(const Tensor<T>& probabilities, const Tensor<T>& one_hot,
                                     int bins, double tolerance) {
  if (!(probabilities.shape() == one_hot.shape())) {
    throw ShapeError("classifier_metrics: one-hot targets of shape " + one_hot.shape().str() +
                     " do not match probabilities of shape " + probabilities.shape().str());
  }
  return classifier_metrics(probabilities, labels_from_one_hot(one_hot), bins, tolerance);
}

#define AMARI_METRICS_INSTANTIATE(T)                                                              \
  template double negative_log_likelihood<T>(const Tensor<T>&, const std::vector<int>&, double);  \
  template double classification_accuracy<T>(const Tensor<T>&, const std::vector<int>&, double);  \
  template double expected_calibration_error<T>(const Tensor<T>&, const std::vector<int>&, int,   \
                                                double);                                          \
  template double brier_score<T>(const Tensor<T>&, const std::vector<int>&, double);              \
  template ClassifierMetrics classifier_metrics<T>(const Tensor<T>&, const std::vector<int>&, int, \
                                                   double);                                       \
  template std::vector<int> labels_from_one_hot<T>(const Tensor<T>&);                             \
  template ClassifierMetrics classifier_metrics<T>(const Tensor<T>&, const Tensor<T>&, int, double);
AMARI_METRICS_INSTANTIATE(float)
AMARI_METRICS_INSTANTIATE(double)
#undef AMARI_METRICS_INSTANTIATE

}  // namespace amari::nn
