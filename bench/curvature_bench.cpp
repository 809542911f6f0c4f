// Cost of curvature products relative to the forward pass f, for the tanh MLP configurations of
// bench/mlp_configs.hpp with a softmax cross-entropy head (parameters as the variables):
//   ggn_over_f             G v including recording the forward pass       (count: 3.5 on mnist)
//   ggn_linearized_over_f  one more G v at the same parameters             (count: 2.5 on mnist)
//   mcfisher_over_f        Monte-Carlo Fisher v, k = 1, with forward pass
//   ef_over_f              empirical Fisher v, with forward pass
//   hvp_over_f             exact Hessian v (forward-over-reverse), with forward pass
// All are timed side by side in each iteration (interleaved) so the ratios hold on a noisy machine.
// BM_cg_iteration: one CG iteration on the damped GGN (one product + vector updates), and its
// time over one damped product (iteration_over_product) and over one undamped linearized G v
// (iteration_over_linearized), both timed interleaved.
// BM_memory: peak tensor memory of one G v (with forward) vs one gradient.
//
//   OMP_NUM_THREADS=1 ./bench/curvature_bench --benchmark_repetitions=5 --benchmark_report_aggregates_only=true
#include <benchmark/benchmark.h>

#include <chrono>

#include "mlp_configs.hpp"

namespace {

using amari::bench::MlpConfig;
using amari::bench::mlp_configs;
using amari::bench::MlpProblem;
namespace curv = amari::curvature;

template <class T>
void BM_curvature_ratios(benchmark::State& state) {
  const MlpConfig& c = mlp_configs()[static_cast<std::size_t>(state.range(0))];
  MlpProblem<T> p(c);
  amari::Tensor<T> out = p.model.zeros_like_parameters();
  curv::GgnOperator<T> linearized(p.model, p.head, p.x);
  linearized.apply(p.v, out);  // first product allocates the sweep buffers
  using clock = std::chrono::steady_clock;
  double t[6] = {0, 0, 0, 0, 0, 0};
  auto timed = [&](int k, auto&& f) {
    const auto t0 = clock::now();
    f();
    t[k] += std::chrono::duration<double>(clock::now() - t0).count();
  };
  for (auto _ : state) {
    timed(0, [&] { benchmark::DoNotOptimize(p.forward()); });
    timed(1, [&] {
      curv::GgnOperator<T> g(p.model, p.head, p.x);
      g.apply(p.v, out);
    });
    timed(2, [&] { linearized.apply(p.v, out); });
    timed(3, [&] {
      curv::MonteCarloFisherOperator<T> f(p.model, p.head, p.x, 1, 0);
      f.apply(p.v, out);
    });
    timed(4, [&] {
      curv::EmpiricalFisherOperator<T> f(p.model, p.head, p.x, p.y);
      f.apply(p.v, out);
    });
    timed(5, [&] {
      curv::HessianOperator<T> h(p.model, p.head, p.x, p.y);
      h.apply(p.v, out);
    });
    benchmark::DoNotOptimize(out.data());
  }
  state.SetLabel(c.name);
  state.counters["f_us"] = 1e6 * t[0] / static_cast<double>(state.iterations());
  state.counters["ggn_over_f"] = t[1] / t[0];
  state.counters["ggn_linearized_over_f"] = t[2] / t[0];
  state.counters["mcfisher_over_f"] = t[3] / t[0];
  state.counters["ef_over_f"] = t[4] / t[0];
  state.counters["hvp_over_f"] = t[5] / t[0];
  state.counters["threads"] = omp_get_max_threads();
}

template <class T>
void BM_cg_iteration(benchmark::State& state) {
  const MlpConfig& c = mlp_configs()[static_cast<std::size_t>(state.range(0))];
  MlpProblem<T> p(c);
  curv::GgnOperator<T> g(p.model, p.head, p.x);
  curv::DampedOperator<T> a(g, 1e-3);
  curv::CgOptions o;
  o.max_iterations = 10;
  o.relative_tolerance = 0;
  o.progress_stopping = false;
  int iterations = 0;
  amari::Tensor<T> out = p.model.zeros_like_parameters();
  a.apply(p.v, out);  // the first product allocates the sweep buffers
  using clock = std::chrono::steady_clock;
  double t_cg = 0, t_products = 0, t_linearized = 0;
  for (auto _ : state) {
    auto t0 = clock::now();
    const auto r = curv::conjugate_gradient(a, p.v, o);
    t_cg += std::chrono::duration<double>(clock::now() - t0).count();
    iterations += r.iterations;
    benchmark::DoNotOptimize(r.x.data());
    // As many products of the same damped operator, and of the undamped G alone, for the ratios
    // below; alternated, so that both see the same cache state.
    for (int k = 0; k < r.iterations; ++k) {
      t0 = clock::now();
      a.apply(p.v, out);
      const auto t1 = clock::now();
      g.apply(p.v, out);
      t_products += std::chrono::duration<double>(t1 - t0).count();
      t_linearized += std::chrono::duration<double>(clock::now() - t1).count();
    }
    benchmark::DoNotOptimize(out.data());
  }
  state.SetLabel(c.name);
  // One CG iteration in units of one damped linearized product (the issue's "products per
  // iteration"): what CG's own vector work adds to the product.
  state.counters["iteration_over_product"] = t_cg / t_products;
  // The same in units of one G v (ggn_linearized of BM_curvature_ratios): the damping term, which
  // CG folds into its own passes, counts as CG's work here.
  state.counters["iteration_over_linearized"] = t_cg / t_linearized;
  // Time per CG iteration, from the total time of the 10-iteration solves alone (a rate over the
  // benchmark's time would count the reference products too), and per linearized product.
  state.counters["iterations"] = iterations;
  state.counters["us_per_iteration"] = 1e6 * t_cg / iterations;
  state.counters["us_per_linearized"] = 1e6 * t_linearized / iterations;
  state.counters["threads"] = omp_get_max_threads();
}

template <class T>
void BM_memory(benchmark::State& state) {
  const MlpConfig& c = mlp_configs()[static_cast<std::size_t>(state.range(0))];
  MlpProblem<T> p(c);
  amari::Tensor<T> out = p.model.zeros_like_parameters();
  double grad_peak = 0, ggn_peak = 0;
  for (auto _ : state) {
    const std::size_t base = amari::memory_stats().live_bytes;
    amari::reset_peak_memory();
    benchmark::DoNotOptimize(p.vjp());
    grad_peak = static_cast<double>(amari::memory_stats().peak_bytes - base);
    amari::reset_peak_memory();
    {
      curv::GgnOperator<T> g(p.model, p.head, p.x);
      g.apply(p.v, out);
    }
    ggn_peak = static_cast<double>(amari::memory_stats().peak_bytes - base);
  }
  state.SetLabel(c.name);
  state.counters["gradient_peak_MB"] = grad_peak / 1e6;
  state.counters["ggn_peak_MB"] = ggn_peak / 1e6;
  state.counters["ggn_over_gradient"] = ggn_peak / grad_peak;
  state.counters["parameters_MB"] = static_cast<double>(p.model.num_parameters() * sizeof(T)) / 1e6;
}

#define AMARI_CURVATURE_BENCH(fn) \
  BENCHMARK_TEMPLATE(fn, float)->DenseRange(0, 2)->Unit(benchmark::kMicrosecond); \
  BENCHMARK_TEMPLATE(fn, double)->DenseRange(0, 2)->Unit(benchmark::kMicrosecond)
AMARI_CURVATURE_BENCH(BM_curvature_ratios);
AMARI_CURVATURE_BENCH(BM_cg_iteration);
AMARI_CURVATURE_BENCH(BM_memory);

}  // namespace

BENCHMARK_MAIN();
