// Cost of fitting a Laplace approximation and of its predictive (curvature/laplace.hpp) on the tanh
// MLPs of bench/mlp_configs.hpp (softmax cross-entropy, float), relative to one forward pass f of
// the same batch. The batch is both the "training data" of the fit and the test inputs of the
// predictive, so the ratios read as "passes over the data":
//   fit_over_f       the curvature for the structure plus the construction of the posterior
//                    (diagonal: the exact diagonal GGN; K-FAC: one factor update with the default
//                    options and the factors' eigendecompositions; last layer: the layer's GGN
//                    and its eigenvalues; low rank: 10 Lanczos steps on the GGN for 5 pairs)
//   evidence_over_f  one log marginal likelihood at a new prior precision
//   probit_over_f    the linearized predictive with the probit approximation on the batch
//   nn_sample_over_f the sampling predictive (predict_sampled, 4 weight samples) on the batch, per
//                    sample: draw, load into the model's copy, forward pass, softmax
//   draw_over_f      one posterior draw alone (sample_posterior: P normals and S eps)
// Arg 0: structure (0 diagonal, 1 K-FAC, 2 last layer, 3 low rank); arg 1: config (0 small, 1 mnist).
//
//   OMP_NUM_THREADS=1 ./bench/laplace_bench --benchmark_repetitions=3 --benchmark_report_aggregates_only=true
#include <benchmark/benchmark.h>

#include <chrono>
#include <memory>

#include "mlp_configs.hpp"

namespace {

using amari::bench::mlp_configs;
using amari::bench::MlpConfig;
using amari::bench::MlpProblem;
namespace curv = amari::curvature;
using clock_type = std::chrono::steady_clock;

double seconds_since(clock_type::time_point t0) {
  return std::chrono::duration<double>(clock_type::now() - t0).count();
}

std::unique_ptr<curv::Laplace<float>> fit(int structure, MlpProblem<float>& p,
                                          std::unique_ptr<curv::KroneckerFactors<float>>& factors) {
  switch (structure) {
    case 0:
      return std::make_unique<curv::DiagonalLaplace<float>>(p.model, p.head, p.x, p.y,
                                                            curv::diagonal_ggn(p.model, p.head, p.x));
    case 1:
      factors = std::make_unique<curv::KroneckerFactors<float>>(p.model, p.head);
      factors->update(p.x, p.y);
      return std::make_unique<curv::KfacLaplace<float>>(p.model, p.head, p.x, p.y, *factors);
    case 2:
      return std::make_unique<curv::LastLayerLaplace<float>>(p.model, p.head, p.x, p.y);
    default: {
      curv::GgnOperator<float> ggn(p.model, p.head, p.x);
      curv::LanczosOptions o;
      o.max_iterations = 10;
      return std::make_unique<curv::LowRankLaplace<float>>(p.model, p.head, p.x, p.y, ggn, 5, o);
    }
  }
}

void BM_laplace(benchmark::State& state) {
  const int structure = static_cast<int>(state.range(0));
  const MlpConfig& c = mlp_configs()[static_cast<std::size_t>(state.range(1))];
  MlpProblem<float> p(c);
  constexpr int kSamples = 4;
  double tf = 0, tfit = 0, tev = 0, tpred = 0, tnn = 0, tdraw = 0;
  std::string name;
  for (auto _ : state) {
    auto t0 = clock_type::now();
    benchmark::DoNotOptimize(p.forward());
    tf += seconds_since(t0);
    std::unique_ptr<curv::KroneckerFactors<float>> factors;
    t0 = clock_type::now();
    const auto laplace = fit(structure, p, factors);
    tfit += seconds_since(t0);
    t0 = clock_type::now();
    benchmark::DoNotOptimize(laplace->log_marginal_likelihood(2.0));
    tev += seconds_since(t0);
    t0 = clock_type::now();
    benchmark::DoNotOptimize(laplace->predict_probit(p.x).data());
    tpred += seconds_since(t0);
    t0 = clock_type::now();
    benchmark::DoNotOptimize(laplace->predict_sampled(p.x, {.samples = kSamples}).data());
    tnn += seconds_since(t0);
    t0 = clock_type::now();
    benchmark::DoNotOptimize(laplace->sample_posterior(0, 0).data());
    tdraw += seconds_since(t0);
    name = laplace->name();
  }
  state.SetLabel(std::string(c.name) + " " + name);
  state.counters["f_us"] = 1e6 * tf / static_cast<double>(state.iterations());
  state.counters["fit_over_f"] = tfit / tf;
  state.counters["evidence_over_f"] = tev / tf;
  state.counters["probit_over_f"] = tpred / tf;
  state.counters["nn_sample_over_f"] = tnn / kSamples / tf;
  state.counters["draw_over_f"] = tdraw / tf;
  state.counters["threads"] = omp_get_max_threads();
}

}  // namespace

BENCHMARK(BM_laplace)->ArgsProduct({{0, 1, 2, 3}, {0, 1}})->Unit(benchmark::kMillisecond);

BENCHMARK_MAIN();
