// Cost of a forward pass (f), a JVP (dual forward) and a VJP (record + reverse sweep) of the loss
// of tanh MLPs with a softmax cross-entropy head, with respect to the parameters.
//
// BM_forward/BM_jvp/BM_vjp time each mode on its own. BM_ratios interleaves the three in every
// iteration and reports jvp_over_f and vjp_over_f from times measured side by side in the same
// process, which keeps the ratios meaningful on a noisy shared machine.
//
//   OMP_NUM_THREADS=1 ./bench/autodiff_bench --benchmark_repetitions=5 --benchmark_report_aggregates_only=true
#include <benchmark/benchmark.h>

#include <chrono>

#include "mlp_configs.hpp"

namespace {

using amari::bench::MlpConfig;
using amari::bench::mlp_configs;
using amari::bench::MlpProblem;

template <class T, class F>
void run_mode(benchmark::State& state, F mode) {
  const MlpConfig& c = mlp_configs()[static_cast<std::size_t>(state.range(0))];
  MlpProblem<T> p(c);
  for (auto _ : state) benchmark::DoNotOptimize(mode(p));
  state.SetLabel(c.name);
  state.counters["threads"] = omp_get_max_threads();
}

template <class T>
void BM_forward(benchmark::State& s) { run_mode<T>(s, [](MlpProblem<T>& p) { return p.forward(); }); }
template <class T>
void BM_jvp(benchmark::State& s) { run_mode<T>(s, [](MlpProblem<T>& p) { return p.jvp(); }); }
template <class T>
void BM_vjp(benchmark::State& s) { run_mode<T>(s, [](MlpProblem<T>& p) { return p.vjp(); }); }

template <class T>
void BM_ratios(benchmark::State& state) {
  const MlpConfig& c = mlp_configs()[static_cast<std::size_t>(state.range(0))];
  MlpProblem<T> p(c);
  using clock = std::chrono::steady_clock;
  double tf = 0, tj = 0, tv = 0;
  for (auto _ : state) {
    auto t0 = clock::now();
    benchmark::DoNotOptimize(p.forward());
    auto t1 = clock::now();
    benchmark::DoNotOptimize(p.jvp());
    auto t2 = clock::now();
    benchmark::DoNotOptimize(p.vjp());
    auto t3 = clock::now();
    tf += std::chrono::duration<double>(t1 - t0).count();
    tj += std::chrono::duration<double>(t2 - t1).count();
    tv += std::chrono::duration<double>(t3 - t2).count();
  }
  const double n = static_cast<double>(state.iterations());
  state.SetLabel(c.name);
  state.counters["f_us"] = 1e6 * tf / n;
  state.counters["jvp_us"] = 1e6 * tj / n;
  state.counters["vjp_us"] = 1e6 * tv / n;
  state.counters["jvp_over_f"] = tj / tf;
  state.counters["vjp_over_f"] = tv / tf;
  state.counters["threads"] = omp_get_max_threads();
}

// Arg = index into mlp_configs(): 0 small, 1 mnist, 2 wide.
#define AMARI_MLP_BENCH(fn) \
  BENCHMARK_TEMPLATE(fn, float)->DenseRange(0, 2)->Unit(benchmark::kMicrosecond); \
  BENCHMARK_TEMPLATE(fn, double)->DenseRange(0, 2)->Unit(benchmark::kMicrosecond)
AMARI_MLP_BENCH(BM_forward);
AMARI_MLP_BENCH(BM_jvp);
AMARI_MLP_BENCH(BM_vjp);
AMARI_MLP_BENCH(BM_ratios);

}  // namespace

BENCHMARK_MAIN();
