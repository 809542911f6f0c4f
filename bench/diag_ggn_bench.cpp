// Cost of the diagonal of the GGN (curvature/diag_ggn.hpp) relative to the forward pass f, for the
// tanh MLP configurations of bench/mlp_configs.hpp with a softmax cross-entropy head:
//   diag_ggn_over_f      exact diag(G): C = 10 sweeps to the layers + one GEMM per layer
//   diag_ggn_mc1_over_f  Monte Carlo with 1 sampled label per example (one sweep)
//   gradient_over_f      the batch gradient (forward recorded + one reverse sweep), for scale
// Timed side by side in each iteration (interleaved) so the ratios hold on a noisy machine.
//
//   OMP_NUM_THREADS=1 ./bench/diag_ggn_bench --benchmark_repetitions=5
//   --benchmark_report_aggregates_only=true
#include <benchmark/benchmark.h>

#include <chrono>

#include "mlp_configs.hpp"

namespace {

using amari::bench::mlp_configs;
using amari::bench::MlpConfig;
using amari::bench::MlpProblem;
namespace curv = amari::curvature;

template <class T>
void BM_diag_ggn_ratios(benchmark::State& state) {
  const MlpConfig& c = mlp_configs()[static_cast<std::size_t>(state.range(0))];
  MlpProblem<T> p(c);
  using clock = std::chrono::steady_clock;
  double t[4] = {0, 0, 0, 0};
  auto timed = [&](int k, auto&& f) {
    const auto t0 = clock::now();
    f();
    t[k] += std::chrono::duration<double>(clock::now() - t0).count();
  };
  for (auto _ : state) {
    timed(0, [&] { benchmark::DoNotOptimize(p.forward()); });
    timed(1, [&] { benchmark::DoNotOptimize(curv::diagonal_ggn(p.model, p.head, p.x).data()); });
    timed(2, [&] {
      benchmark::DoNotOptimize(curv::diagonal_ggn_monte_carlo(p.model, p.head, p.x, 1, 0).data());
    });
    timed(3, [&] { benchmark::DoNotOptimize(p.vjp()); });
  }
  state.SetLabel(c.name);
  const double n = static_cast<double>(state.iterations());
  state.counters["f_us"] = 1e6 * t[0] / n;
  state.counters["diag_ggn_us"] = 1e6 * t[1] / n;
  state.counters["diag_ggn_over_f"] = t[1] / t[0];
  state.counters["diag_ggn_mc1_over_f"] = t[2] / t[0];
  state.counters["gradient_over_f"] = t[3] / t[0];
  state.counters["threads"] = omp_get_max_threads();
}

}  // namespace

BENCHMARK_TEMPLATE(BM_diag_ggn_ratios, float)->DenseRange(0, 1)->Unit(benchmark::kMicrosecond);
BENCHMARK_TEMPLATE(BM_diag_ggn_ratios, double)->DenseRange(0, 1)->Unit(benchmark::kMicrosecond);

BENCHMARK_MAIN();
