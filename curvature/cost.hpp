// What a forward pass, a JVP, a VJP and the curvature products of a model really cost, measured
// side by side on the caller's own model and batch.
//
// Every round runs each computation once, in a fixed order; the reported time of each is the
// median over rounds. Interleaving keeps the ratios meaningful on a noisy machine: a slow period
// slows every computation of that round alike. Thread count: whatever OpenMP is set to
// (OMP_NUM_THREADS); the report records it.
#pragma once

#include <string>

#include <amari/nn/heads.hpp>
#include <amari/nn/model.hpp>

namespace amari::curvature {

/// Median times in microseconds, and their ratios to the forward pass (the *_over_f numbers of
/// bench/RESULTS.md).
struct CostReport {
  int threads = 1;
  int rounds = 0;
  double forward_us = 0;         ///< f: loss of a plain forward pass
  double jvp_us = 0;             ///< JVP of the loss in parameter space (dual numbers)
  double vjp_us = 0;             ///< gradient: recorded forward + reverse sweep
  double ggn_us = 0;             ///< G v including recording the forward pass
  double ggn_linearized_us = 0;  ///< one more G v at the same parameters (JVP + VJP sweeps only)
  double mc_fisher_us = 0;       ///< Monte-Carlo Fisher product, k = 1, including the forward pass
  double ef_us = 0;              ///< empirical Fisher product, including the forward pass
  double hvp_us = 0;             ///< exact Hessian-vector product, including the forward pass
  /// A table with one row per computation: time and ratio to f.
  std::string table() const;
};

/// Measures the costs above for `model` with `head` on a batch (inputs (N, D), targets (N, C)),
/// over `rounds` interleaved rounds (after one warm-up round).
template <Real T>
CostReport measure_costs(const nn::Model<T>& model, const nn::Head<T>& head, const Tensor<T>& inputs,
                         const Tensor<T>& targets, int rounds = 20);

}  // namespace amari::curvature
