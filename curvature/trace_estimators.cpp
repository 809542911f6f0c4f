// Hutchinson, Hutch++, diagonal and Frobenius-norm estimators (see trace_estimators.hpp).
#include <amari/curvature/trace_estimators.hpp>

#include <algorithm>
#include <cmath>
#include <limits>

#include <amari/curvature/vector_ops.hpp>

namespace amari::curvature {
namespace {


constexpr double kInf = std::numeric_limits<double>::infinity();

void validate(const char* fn, const TraceEstimatorOptions& o, int min_probes) {
  if (o.probes < min_probes) {
    throw ValueError(std::string(fn) + ": probes = " + std::to_string(o.probes) +
                     ", expected >= " + std::to_string(min_probes));
  }
}

// value = mean of the samples (plus `offset`), standard_error = sqrt(sample variance / count).
void summarize(StochasticEstimate& e, double offset) {
  const std::size_t k = e.samples.size();
  if (k == 0) {
    e.value = offset;
    e.standard_error = kInf;
    return;
  }
  double mean = 0.0;
  for (double x : e.samples) mean += x;
  mean /= static_cast<double>(k);
  e.value = offset + mean;
  if (k < 2) {
    e.standard_error = kInf;
    return;
  }
  double ss = 0.0;
  for (double x : e.samples) ss += (x - mean) * (x - mean);
  e.standard_error = std::sqrt(ss / static_cast<double>(k - 1) / static_cast<double>(k));
}

// Applies A to v into av and counts the product; false (with the status and message set) if the
// product is not finite.
template <Real T, class Result>
bool checked_apply(LinearOperator<T>& A, const Tensor<T>& v, Tensor<T>& av, Result& r,
                   const char* fn, const std::string& what) {
  A.apply(v, av);
  ++r.products;
  if (all_finite(av)) return true;
  r.status = SpectrumStatus::non_finite;
  r.message = std::string(fn) + ": the product " + what + " was not finite (" + A.name() + ")";
  return false;
}

void finish_message(StochasticEstimate& e, const TraceEstimatorOptions& o) {
  if (e.status == SpectrumStatus::converged) {
    e.message = std::to_string(e.samples.size()) + " " + to_string(o.distribution) + " probes";
  } else {
    e.message += "; using the " + std::to_string(e.samples.size()) + " probe values before it";
  }
}

// Shared by Hutchinson and the Frobenius estimate: one sample per probe, f(v, A v).
template <Real T, class Sample>
StochasticEstimate per_probe_estimate(LinearOperator<T>& A, const TraceEstimatorOptions& o,
                                      const char* fn, Sample sample) {
  validate(fn, o, 1);
  StochasticEstimate e;
  const Index n = A.size();
  if (n == 0) {
    e.message = "empty operator (n = 0)";
    return e;
  }
  Tensor<T> v = Tensor<T>::uninitialized(Shape{n});
  Tensor<T> av = Tensor<T>::uninitialized(Shape{n});
  for (int l = 0; l < o.probes; ++l) {
    fill_probe(v, o.distribution, o.seed, static_cast<std::uint64_t>(l));
    if (!checked_apply(A, v, av, e, fn, "A v for probe " + std::to_string(l))) break;
    e.samples.push_back(sample(v, av));
  }
  summarize(e, 0.0);
  finish_message(e, o);
  return e;
}

}  // namespace

template <Real T>
StochasticEstimate hutchinson_trace(LinearOperator<T>& A, const TraceEstimatorOptions& o) {
  return per_probe_estimate(A, o, "hutchinson_trace",
                            [](const Tensor<T>& v, const Tensor<T>& av) { return dot(v, av); });
}

template <Real T>
StochasticEstimate frobenius_norm_squared_estimate(LinearOperator<T>& A,
                                                   const TraceEstimatorOptions& o) {
  return per_probe_estimate(A, o, "frobenius_norm_squared_estimate",
                            [](const Tensor<T>&, const Tensor<T>& av) { return dot(av, av); });
}

template <Real T>
StochasticEstimate hutch_plus_plus_trace(LinearOperator<T>& A, const TraceEstimatorOptions& o) {
  const char* fn = "hutch_plus_plus_trace";
  validate(fn, o, 3);
  StochasticEstimate e;
  const Index n = A.size();
  if (n == 0) {
    e.message = "empty operator (n = 0)";
    return e;
  }
  const int s = std::max(1, o.probes / 3);
  Tensor<T> v = Tensor<T>::uninitialized(Shape{n});
  Tensor<T> av = Tensor<T>::uninitialized(Shape{n});
  // Range finder: Q = orth(A S), column by column with CGS2. A column whose norm collapses under
  // projection lies in the span already (A S is rank deficient) and is dropped; any Q keeps the
  // estimator unbiased, so the threshold only matters for efficiency.
  const double drop = 1e3 * std::numeric_limits<T>::epsilon();
  OrthonormalBasis<T> q(n);
  for (int l = 0; l < s; ++l) {
    fill_probe(v, o.distribution, o.seed, static_cast<std::uint64_t>(l));
    if (!checked_apply(A, v, av, e, fn, "A s for sketch column " + std::to_string(l))) {
      e.value = 0.0;
      e.standard_error = kInf;
      e.message += "; no estimate";
      return e;
    }
    const double before = norm(av);
    const double after = q.orthogonalize(av);
    if (after > drop * before && after > 0.0) q.append(av, after);
  }
  e.sketch_rank = q.size();
  // tr(Q^T A Q), exact given Q.
  for (int i = 0; i < q.size(); ++i) {
    if (!checked_apply(A, q[i], av, e, fn, "A q for sketch vector " + std::to_string(i))) {
      e.value = 0.0;
      e.standard_error = kInf;
      e.message += "; no estimate";
      return e;
    }
    e.low_rank_part += dot(q[i], av);
  }
  // Hutchinson on the deflated operator (I - Q Q^T) A (I - Q Q^T) with the remaining budget:
  // g^T P A P g = u^T A u for u = P g.
  const int remaining = o.probes - s - q.size();
  for (int l = 0; l < remaining; ++l) {
    fill_probe(v, o.distribution, o.seed, static_cast<std::uint64_t>(s + l));
    q.orthogonalize(v);
    if (!checked_apply(A, v, av, e, fn, "A (I - Q Q^T) g for probe " + std::to_string(l))) break;
    e.samples.push_back(dot(v, av));
  }
  summarize(e, e.low_rank_part);
  finish_message(e, o);
  if (e.status == SpectrumStatus::converged) {
    e.message = "sketch rank " + std::to_string(e.sketch_rank) + " + " + e.message;
  }
  return e;
}

template <Real T>
DiagonalEstimate diagonal_estimate(LinearOperator<T>& A, const TraceEstimatorOptions& o) {
  const char* fn = "diagonal_estimate";
  validate(fn, o, 1);
  DiagonalEstimate d;
  const Index n = A.size();
  const auto un = static_cast<std::size_t>(n);
  d.values.assign(un, 0.0);
  std::vector<double> m2(un, 0.0);  // Welford's sums of squared deviations
  Tensor<T> v = Tensor<T>::uninitialized(Shape{n});
  Tensor<T> av = Tensor<T>::uninitialized(Shape{n});
  for (int l = 0; l < o.probes && n > 0; ++l) {
    fill_probe(v, o.distribution, o.seed, static_cast<std::uint64_t>(l));
    if (!checked_apply(A, v, av, d, fn, "A v for probe " + std::to_string(l))) break;
    ++d.probes;
    const double inv = 1.0 / d.probes;
    for (std::size_t i = 0; i < un; ++i) {
      const double x = static_cast<double>(v[static_cast<Index>(i)]) *
                       static_cast<double>(av[static_cast<Index>(i)]);
      const double delta = x - d.values[i];
      d.values[i] += delta * inv;
      m2[i] += delta * (x - d.values[i]);
    }
  }
  d.standard_errors.assign(un, kInf);
  if (d.probes >= 2) {
    const double k = d.probes;
    for (std::size_t i = 0; i < un; ++i) d.standard_errors[i] = std::sqrt(m2[i] / (k - 1) / k);
  }
  if (d.status == SpectrumStatus::converged) {
    d.message = std::to_string(d.probes) + " " + to_string(o.distribution) + " probes";
  } else {
    d.message += "; using the " + std::to_string(d.probes) + " probes before it";
  }
  return d;
}

template StochasticEstimate hutchinson_trace<float>(LinearOperator<float>&,
                                                    const TraceEstimatorOptions&);
template StochasticEstimate hutchinson_trace<double>(LinearOperator<double>&,
                                                     const TraceEstimatorOptions&);
template StochasticEstimate hutch_plus_plus_trace<float>(LinearOperator<float>&,
                                                         const TraceEstimatorOptions&);
template StochasticEstimate hutch_plus_plus_trace<double>(LinearOperator<double>&,
                                                          const TraceEstimatorOptions&);
template DiagonalEstimate diagonal_estimate<float>(LinearOperator<float>&,
                                                   const TraceEstimatorOptions&);
template DiagonalEstimate diagonal_estimate<double>(LinearOperator<double>&,
                                                    const TraceEstimatorOptions&);
template StochasticEstimate frobenius_norm_squared_estimate<float>(LinearOperator<float>&,
                                                                   const TraceEstimatorOptions&);
template StochasticEstimate frobenius_norm_squared_estimate<double>(LinearOperator<double>&,
                                                                    const TraceEstimatorOptions&);

}  // namespace amari::curvature
