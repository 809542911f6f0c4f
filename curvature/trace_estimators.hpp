// Randomized estimates of the trace, the diagonal and the Frobenius norm of a LinearOperator from
// products with random probes (Hutchinson 1989; Bekas, Kokiopoulou, Saad 2007; Meyer, Musco,
// Musco, Woodruff 2021, "Hutch++"). For a probe v with iid entries of mean 0 and variance 1
// (Rademacher or Gaussian), E[v v^T] = I, hence
//   E[v^T A v] = tr(A),   E[v * (A v)] = diag(A) (elementwise),   E[||A v||^2] = ||A||_F^2.
// Each estimate is the mean of per-probe values and comes with its standard error
// sqrt(sample variance / probes), so a caller can tell a precise estimate from a lucky one.
// Rademacher probes have the smaller variance: Var[v^T A v] = 2 sum_{i != j} a_ij^2 (Gaussian:
// 2 ||A||_F^2), and they estimate a diagonal A's trace and diagonal exactly.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <amari/autodiff/tensor.hpp>
#include <amari/curvature/lanczos.hpp>
#include <amari/curvature/linear_operator.hpp>

namespace amari::curvature {

/// Options shared by the estimators below.
struct TraceEstimatorOptions {
  /// The budget of operator products (>= 1; >= 3 for Hutch++). For Hutchinson, diagonal and
  /// Frobenius estimates it is the number of probes.
  int probes = 30;
  /// Distribution of the probe entries.
  ProbeDistribution distribution = ProbeDistribution::rademacher;
  /// Seed: probe l is fill_probe(.., seed, l) (Hutch++ draws its sketch and its Hutchinson probes
  /// from distinct indices).
  std::uint64_t seed = 0;
};

/// A scalar estimate with its standard error.
struct StochasticEstimate {
  /// The estimate (0 if no probe completed).
  double value = 0.0;
  /// sqrt(sample variance of the per-probe values / their number): of the whole estimate for
  /// Hutchinson and Frobenius, of the Hutchinson part for Hutch++ (its low-rank part is exact
  /// given the sketch). +inf with fewer than 2 per-probe values.
  double standard_error = 0.0;
  /// The per-probe values the mean and standard error come from.
  std::vector<double> samples;
  /// Hutch++ only: tr(Q^T A Q), the exact trace on the sketched range (0 for the others).
  double low_rank_part = 0.0;
  /// Hutch++ only: the rank of the sketch Q (0 for the others).
  int sketch_rank = 0;
  /// Operator products made.
  int products = 0;
  /// converged: the whole budget was used; non_finite: a product failed (the message names it)
  /// and the estimate uses the probes before it; with none it is 0 (Hutch++: the low-rank part if
  /// the sketch completed) with standard error +inf.
  SpectrumStatus status = SpectrumStatus::converged;
  /// What happened.
  std::string message;
};

/// An estimate of diag(A) with a standard error per entry.
struct DiagonalEstimate {
  /// Estimates of a_ii, i = 0..n-1 (zeros if no probe completed).
  std::vector<double> values;
  /// Their standard errors (+inf with fewer than 2 probes).
  std::vector<double> standard_errors;
  /// Probes used.
  int probes = 0;
  /// Operator products made.
  int products = 0;
  /// converged or non_finite, as for StochasticEstimate.
  SpectrumStatus status = SpectrumStatus::converged;
  /// What happened.
  std::string message;
};

/// Hutchinson's estimate of tr(A): the mean of v_l^T A v_l over options.probes probes.
/// Cost: one product per probe. n = 0 gives 0 with standard error 0. ValueError (naming the
/// function) if probes < 1. Non-finite products: see StochasticEstimate::status.
template <Real T>
StochasticEstimate hutchinson_trace(LinearOperator<T>& A,
                                    const TraceEstimatorOptions& options = {});

/// Hutch++ (Meyer et al. 2021, Algorithm 1) for symmetric A with a budget of m = options.probes
/// products: sketch S with s = max(1, m / 3) probe columns, Q = orth(A S) (CGS2; directions that
/// vanish are dropped), then tr(A) ~ tr(Q^T A Q) + mean_l g_l^T (I - Q Q^T) A (I - Q Q^T) g_l over
/// the remaining m - s - rank(Q) >= m / 3 probes g_l. Unbiased for any A; its error falls like 1/m
/// instead of 1/sqrt(m) when the spectrum decays. Cost: m products, 2 s^2 n to 4 s^2 n flops, (s +
/// 2) n elements of memory. The standard error is that of the Hutchinson part. ValueError if probes
/// < 3.
template <Real T>
StochasticEstimate hutch_plus_plus_trace(LinearOperator<T>& A,
                                         const TraceEstimatorOptions& options = {});

/// Bekas et al. (2007) estimate of diag(A): the elementwise mean of v_l * (A v_l), with the
/// standard error of each entry (Welford's running variance, in double). Cost: one product per
/// probe, 2n doubles of memory. ValueError if probes < 1.
template <Real T>
DiagonalEstimate diagonal_estimate(LinearOperator<T>& A, const TraceEstimatorOptions& options = {});

/// The estimate of ||A||_F^2 = tr(A^T A): the mean of ||A v_l||^2. Unbiased for the squared norm
/// (take the square root for ||A||_F; its standard error is about standard_error / (2 ||A||_F)).
/// Cost: one product per probe. ValueError if probes < 1.
template <Real T>
StochasticEstimate frobenius_norm_squared_estimate(LinearOperator<T>& A,
                                                   const TraceEstimatorOptions& options = {});

extern template StochasticEstimate hutchinson_trace<float>(LinearOperator<float>&,
                                                           const TraceEstimatorOptions&);
extern template StochasticEstimate hutchinson_trace<double>(LinearOperator<double>&,
                                                            const TraceEstimatorOptions&);
extern template StochasticEstimate hutch_plus_plus_trace<float>(LinearOperator<float>&,
                                                                const TraceEstimatorOptions&);
extern template StochasticEstimate hutch_plus_plus_trace<double>(LinearOperator<double>&,
                                                                 const TraceEstimatorOptions&);
extern template DiagonalEstimate diagonal_estimate<float>(LinearOperator<float>&,
                                                          const TraceEstimatorOptions&);
extern template DiagonalEstimate diagonal_estimate<double>(LinearOperator<double>&,
                                                           const TraceEstimatorOptions&);
extern template StochasticEstimate frobenius_norm_squared_estimate<float>(
    LinearOperator<float>&, const TraceEstimatorOptions&);
extern template StochasticEstimate frobenius_norm_squared_estimate<double>(
    LinearOperator<double>&, const TraceEstimatorOptions&);

}  // namespace amari::curvature
