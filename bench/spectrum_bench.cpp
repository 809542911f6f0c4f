// Cost of looking inside the curvature (issue 11) on the MLP configurations of
// bench/mlp_configs.hpp (tanh, softmax cross-entropy; "mnist" = 784-256-256-10, batch 128, 269322
// parameters), relative to one linearized GGN product G v (the forward pass recorded once, as in a
// Lanczos run):
//   BM_lanczos_iteration/<config>/<m>: an m-step Lanczos run (full reorthogonalization, one Ritz
//     vector at the end) on the GGN. The products are timed inside the run, so product and
//     overhead are interleaved step by step:
//       ggn_us                      mean time of one product G v inside the run
//       lanczos_iteration_over_ggn  (time of the run / m) / (one product)      >= 1
//       reorth_over_ggn             (run time outside the products / m) / (one product)
//       *_cpu                       the same ratios from process CPU time (all threads), which a
//                                   busy machine disturbs less than wall time
//     Step j reorthogonalizes against j basis vectors (memory bound: the j vectors of n floats
//     are streamed twice), so reorth_over_ggn grows linearly with m.
//   BM_trace_estimators/<config>: Hutchinson and Hutch++ with the same budget of 30 products,
//     interleaved: hutchinson_us_per_product, hutchpp_us_per_product, hutchpp_over_hutchinson
//     (wall and _cpu).
//
//   OMP_NUM_THREADS=1 ./bench/spectrum_bench --benchmark_repetitions=3
//   --benchmark_report_aggregates_only=true
#include <benchmark/benchmark.h>

#include <chrono>
#include <ctime>
#include <string>

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

// CPU time of the whole process (all threads), in seconds.
double cpu_seconds() {
  timespec ts{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + 1e-9 * static_cast<double>(ts.tv_nsec);
}

// Wall and CPU time of a section, accumulated.
struct Stopwatch {
  double wall = 0.0, cpu = 0.0;
  template <class F>
  void time(F&& f) {
    const auto t0 = clock_type::now();
    const double c0 = cpu_seconds();
    f();
    cpu += cpu_seconds() - c0;
    wall += seconds_since(t0);
  }
};

// Forwards to an operator and accumulates the time spent in its products, so that a method's
// own overhead is its total time minus this.
template <class T>
class TimedOperator final : public curv::LinearOperator<T> {
 public:
  explicit TimedOperator(curv::LinearOperator<T>& base) : base_(&base) {}
  amari::Index size() const override { return base_->size(); }
  void apply(const amari::Tensor<T>& v, amari::Tensor<T>& out) override {
    products.time([&] { base_->apply(v, out); });
    ++count;
  }
  std::string name() const override { return "Timed(" + base_->name() + ")"; }
  Stopwatch products;
  int count = 0;

 private:
  curv::LinearOperator<T>* base_;
};

template <class T>
void BM_lanczos_iteration(benchmark::State& state) {
  const MlpConfig& c = mlp_configs()[static_cast<std::size_t>(state.range(0))];
  const int m = static_cast<int>(state.range(1));
  MlpProblem<T> p(c);
  amari::Tensor<T> out = p.model.zeros_like_parameters();
  curv::GgnOperator<T> ggn(p.model, p.head, p.x);
  ggn.apply(p.v, out);  // the first product allocates the sweep buffers
  TimedOperator<T> timed(ggn);
  curv::LanczosOptions o;
  o.max_iterations = m;
  o.tolerance = 0.0;  // exactly m steps
  Stopwatch run;
  int steps = 0;
  for (auto _ : state) {
    run.time([&] {
      const curv::LanczosResult<T> r = curv::lanczos<T>(timed, 1, o);
      steps += r.iterations;
      benchmark::DoNotOptimize(r.largest.eigenvalues.data());
    });
  }
  const Stopwatch& prod = timed.products;
  state.SetLabel(std::string(c.name) + " m=" + std::to_string(m));
  state.counters["ggn_us"] = 1e6 * prod.wall / timed.count;
  state.counters["lanczos_iteration_us"] = 1e6 * run.wall / steps;
  state.counters["lanczos_iteration_over_ggn"] = run.wall / prod.wall;
  state.counters["reorth_over_ggn"] = (run.wall - prod.wall) / prod.wall;
  state.counters["lanczos_iteration_over_ggn_cpu"] = run.cpu / prod.cpu;
  state.counters["reorth_over_ggn_cpu"] = (run.cpu - prod.cpu) / prod.cpu;
  state.counters["threads"] = omp_get_max_threads();
}

template <class T>
void BM_trace_estimators(benchmark::State& state) {
  const MlpConfig& c = mlp_configs()[static_cast<std::size_t>(state.range(0))];
  MlpProblem<T> p(c);
  amari::Tensor<T> out = p.model.zeros_like_parameters();
  curv::GgnOperator<T> ggn(p.model, p.head, p.x);
  ggn.apply(p.v, out);
  curv::TraceEstimatorOptions o;
  o.probes = 30;
  Stopwatch hutch, pp;
  int n_hutch = 0, n_pp = 0;
  for (auto _ : state) {
    hutch.time([&] {
      const curv::StochasticEstimate h = curv::hutchinson_trace(ggn, o);
      n_hutch += h.products;
      benchmark::DoNotOptimize(h.value);
    });
    pp.time([&] {
      const curv::StochasticEstimate e = curv::hutch_plus_plus_trace(ggn, o);
      n_pp += e.products;
      benchmark::DoNotOptimize(e.value);
    });
  }
  state.SetLabel(std::string(c.name) + " 30 products");
  state.counters["hutchinson_us_per_product"] = 1e6 * hutch.wall / n_hutch;
  state.counters["hutchpp_us_per_product"] = 1e6 * pp.wall / n_pp;
  state.counters["hutchpp_over_hutchinson"] = (pp.wall / n_pp) / (hutch.wall / n_hutch);
  state.counters["hutchpp_over_hutchinson_cpu"] = (pp.cpu / n_pp) / (hutch.cpu / n_hutch);
  state.counters["threads"] = omp_get_max_threads();
}

// Config 0 = small, 1 = mnist. A few explicit iterations: one Lanczos run on mnist is m + 1
// products of about 10 ms each.
BENCHMARK_TEMPLATE(BM_lanczos_iteration, float)
    ->ArgsProduct({{0, 1}, {20, 100}})
    ->Iterations(3)
    ->Unit(benchmark::kMillisecond);
BENCHMARK_TEMPLATE(BM_trace_estimators, float)
    ->DenseRange(0, 1)
    ->Iterations(3)
    ->Unit(benchmark::kMillisecond);

}  // namespace

BENCHMARK_MAIN();
