// One training step of the "mnist" MLP (784-256-256-10 tanh, softmax cross-entropy, batch 128):
// forward + backward (loss_and_gradient) + an Adam update of all 269322 parameters, and its two
// parts alone, so that the step can be compared with their sum (the difference is what running
// them back to back costs: caches refilled after the other part).
// Run with OMP_NUM_THREADS=1 and =2 to see the thread scaling.
//
//   OMP_NUM_THREADS=1 ./bench/training_bench --benchmark_repetitions=5 --benchmark_report_aggregates_only=true
#include <benchmark/benchmark.h>

#include "mlp_configs.hpp"

namespace {

void label(benchmark::State& state, const amari::bench::MlpConfig& c) {
  state.SetLabel(c.name);
  state.counters["threads"] = omp_get_max_threads();
  state.counters["examples_per_s"] =
      benchmark::Counter(static_cast<double>(c.batch) * static_cast<double>(state.iterations()), benchmark::Counter::kIsRate);
}

template <class T>
void BM_training_step(benchmark::State& state) {
  const auto& c = amari::bench::mlp_configs()[static_cast<std::size_t>(state.range(0))];
  amari::bench::MlpProblem<T> p(c);
  amari::nn::Adam<T> adam;
  for (auto _ : state) {
    benchmark::DoNotOptimize(p.vjp());
    adam.step(p.model.parameters(), p.gradient);
  }
  label(state, c);
}

/// The forward + backward part alone.
template <class T>
void BM_gradient(benchmark::State& state) {
  const auto& c = amari::bench::mlp_configs()[static_cast<std::size_t>(state.range(0))];
  amari::bench::MlpProblem<T> p(c);
  for (auto _ : state) benchmark::DoNotOptimize(p.vjp());
  label(state, c);
}

/// The Adam update alone (a fixed gradient).
template <class T>
void BM_adam_update(benchmark::State& state) {
  const auto& c = amari::bench::mlp_configs()[static_cast<std::size_t>(state.range(0))];
  amari::bench::MlpProblem<T> p(c);
  amari::nn::Adam<T> adam({.learning_rate = 1e-6});
  p.vjp();
  for (auto _ : state) adam.step(p.model.parameters(), p.gradient);
  label(state, c);
}

BENCHMARK_TEMPLATE(BM_training_step, float)->Arg(1)->Unit(benchmark::kMicrosecond);
BENCHMARK_TEMPLATE(BM_gradient, float)->Arg(1)->Unit(benchmark::kMicrosecond);
BENCHMARK_TEMPLATE(BM_adam_update, float)->Arg(1)->Unit(benchmark::kMicrosecond);
BENCHMARK_TEMPLATE(BM_training_step, double)->Arg(1)->Unit(benchmark::kMicrosecond);
BENCHMARK_TEMPLATE(BM_gradient, double)->Arg(1)->Unit(benchmark::kMicrosecond);
BENCHMARK_TEMPLATE(BM_adam_update, double)->Arg(1)->Unit(benchmark::kMicrosecond);

}  // namespace

BENCHMARK_MAIN();
