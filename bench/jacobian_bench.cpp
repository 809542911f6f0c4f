// Cost of per-example gradients and of multi-tangent JVPs on the benchmark MLPs (mlp_configs.hpp),
// each timed side by side with its reference in the same iteration so the ratios hold on a noisy
// shared machine.
//
// BM_per_example: curvature::per_example_gradients on the batch (one recording, one reverse sweep
// to the tapped layers' outputs, then each example's block from its layer inputs and output
// gradients) against one batch gradient (recording + one sweep). Counters: per_example_over_gradient
// (a fresh N x P result), into_reused_buffer_over_gradient (the _into overload), norms_over_gradient
// and clipped_mean_over_gradient (no N x P matrix), store_floor_over_gradient: one pass of
// plain stores over an N x P buffer (std::fill), the least any method that materializes the matrix
// must spend (138 MB of floats on "mnist"), and chunk1_over_gradient / chunk8_over_gradient:
// for_each_per_example_gradient with chunks of 1 and 8 examples and a callback that only keeps
// the buffer's address (every row is still computed and stored: the buffer escapes to the call);
// empirical_fisher_diagonal_over_gradient (diagonal_empirical_fisher) and noise_over_gradient
// (gradient_noise from the model: mean, per-coordinate variance, trace, noise scale), and
// gram_over_gradient (per_example_gradient_gram: the N x N dot products of the per-example
// gradients).
//
// BM_jvp_multi/K: amari::jvp_multi of the loss in the flat parameters with K tangents (one
// recording, K tangent sweeps) against one dual-number JVP (MlpProblem::jvp). Counter
// multi_per_tangent_over_jvp = (time of jvp_multi / K) / time of one dual JVP.
//
//   OMP_NUM_THREADS=1 ./bench/jacobian_bench --benchmark_repetitions=3
//   --benchmark_report_aggregates_only=true
#include <benchmark/benchmark.h>

#include <algorithm>
#include <chrono>
#include <vector>

#include <amari/curvature/diag_ggn.hpp>
#include <amari/curvature/per_example.hpp>

#include "mlp_configs.hpp"

namespace {

using amari::Index;
using amari::Shape;
using amari::Tensor;
using amari::bench::mlp_configs;
using amari::bench::MlpConfig;
using amari::bench::MlpProblem;
using clock_type = std::chrono::steady_clock;

double seconds_since(clock_type::time_point t0) {
  return std::chrono::duration<double>(clock_type::now() - t0).count();
}

// Arg = index into mlp_configs(): 0 small, 1 mnist.
void BM_per_example(benchmark::State& state) {
  const MlpConfig& c = mlp_configs()[static_cast<std::size_t>(state.range(0))];
  MlpProblem<float> p(c);
  p.model.eval();  // loss_and_gradient then leaves the step counter alone; same pass either way
  double tg = 0, tp = 0, tn = 0, tr = 0, tc = 0, ts = 0, t1 = 0, t8 = 0, te = 0, tz = 0, tk = 0;
  const auto keep = [](Index, const Tensor<float>& rows) { benchmark::DoNotOptimize(rows.data()); };
  Tensor<float> clipped = p.model.zeros_like_parameters();
  Tensor<float> reused = Tensor<float>::uninitialized(Shape{c.batch, p.model.num_parameters()});
  for (auto _ : state) {
    auto t0 = clock_type::now();
    benchmark::DoNotOptimize(p.vjp());
    tg += seconds_since(t0);
    t0 = clock_type::now();
    const Tensor<float> G = amari::curvature::per_example_gradients(p.model, p.head, p.x, p.y);
    benchmark::DoNotOptimize(G.data());
    tp += seconds_since(t0);
    t0 = clock_type::now();
    const Tensor<float> norms = amari::curvature::per_example_gradient_norms(p.model, p.head, p.x, p.y);
    benchmark::DoNotOptimize(norms.data());
    tn += seconds_since(t0);
    t0 = clock_type::now();
    amari::curvature::per_example_gradients(p.model, p.head, p.x, p.y, reused);
    benchmark::DoNotOptimize(reused.data());
    tr += seconds_since(t0);
    t0 = clock_type::now();
    benchmark::DoNotOptimize(amari::curvature::clipped_mean_gradient(p.model, p.head, p.x, p.y, 1.0, clipped).data());
    tc += seconds_since(t0);
    t0 = clock_type::now();
    std::fill(reused.data(), reused.data() + reused.size(), 1.0f);
    benchmark::DoNotOptimize(reused.data());
    benchmark::ClobberMemory();
    ts += seconds_since(t0);
    t0 = clock_type::now();
    amari::curvature::for_each_per_example_gradient<float>(p.model, p.head, p.x, p.y, 1, keep);
    t1 += seconds_since(t0);
    t0 = clock_type::now();
    amari::curvature::for_each_per_example_gradient<float>(p.model, p.head, p.x, p.y, 8, keep);
    t8 += seconds_since(t0);
    t0 = clock_type::now();
    benchmark::DoNotOptimize(amari::curvature::diagonal_empirical_fisher(p.model, p.head, p.x, p.y).data());
    te += seconds_since(t0);
    t0 = clock_type::now();
    benchmark::DoNotOptimize(amari::curvature::gradient_noise(p.model, p.head, p.x, p.y).noise_scale);
    tz += seconds_since(t0);
    t0 = clock_type::now();
    benchmark::DoNotOptimize(amari::curvature::per_example_gradient_gram(p.model, p.head, p.x, p.y).data());
    tk += seconds_since(t0);
  }
  const double n = static_cast<double>(state.iterations());
  state.SetLabel(std::string(c.name) + " N=" + std::to_string(c.batch));
  state.counters["gradient_ms"] = 1e3 * tg / n;
  state.counters["per_example_ms"] = 1e3 * tp / n;
  state.counters["per_example_over_gradient"] = tp / tg;
  state.counters["norms_over_gradient"] = tn / tg;
  state.counters["into_reused_buffer_over_gradient"] = tr / tg;
  state.counters["clipped_mean_over_gradient"] = tc / tg;
  state.counters["store_floor_over_gradient"] = ts / tg;
  state.counters["chunk1_over_gradient"] = t1 / tg;
  state.counters["chunk8_over_gradient"] = t8 / tg;
  state.counters["empirical_fisher_diagonal_over_gradient"] = te / tg;
  state.counters["noise_over_gradient"] = tz / tg;
  state.counters["gram_over_gradient"] = tk / tg;
  state.counters["threads"] = omp_get_max_threads();
}

// The mean loss as a function of the flat parameter vector, for any value type: the flat vector is
// sliced into the model's parameters (6 small copy records, negligible next to the matmuls).
template <class V>
V loss_of_flat(const MlpProblem<float>& p, const V& theta) {
  std::vector<V> params;
  for (const auto& info : p.model.layout()) {
    params.push_back(amari::reshape(
        amari::slice(theta, 0, info.offset, info.offset + info.shape.numel()), info.shape));
  }
  return p.head.loss(p.model.forward(V(p.x), std::span<const V>(params)), p.y);
}

// Arg 0: config index; arg 1: K.
void BM_jvp_multi(benchmark::State& state) {
  const MlpConfig& c = mlp_configs()[static_cast<std::size_t>(state.range(0))];
  const Index K = state.range(1);
  MlpProblem<float> p(c);
  const Tensor<float> theta = p.model.gather();
  const Index P = theta.size();
  Tensor<float> V = Tensor<float>::uninitialized(Shape{P, K});
  for (Index j = 0; j < P; ++j)
    for (Index k = 0; k < K; ++k) V[j * K + k] = p.v[(j + 7919 * k) % P];
  const auto f = [&](const auto& t) { return loss_of_flat(p, t); };
  double tj = 0, tm = 0;
  for (auto _ : state) {
    auto t0 = clock_type::now();
    benchmark::DoNotOptimize(p.jvp());
    tj += seconds_since(t0);
    t0 = clock_type::now();
    const Tensor<float> JV = amari::jvp_multi(f, theta, V);
    benchmark::DoNotOptimize(JV.data());
    tm += seconds_since(t0);
  }
  const double n = static_cast<double>(state.iterations());
  state.SetLabel(std::string(c.name) + " K=" + std::to_string(K));
  state.counters["jvp_us"] = 1e6 * tj / n;
  state.counters["multi_us"] = 1e6 * tm / n;
  state.counters["multi_per_tangent_over_jvp"] = (tm / static_cast<double>(K)) / tj;
  state.counters["threads"] = omp_get_max_threads();
}

}  // namespace

BENCHMARK(BM_per_example)->DenseRange(0, 1)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_jvp_multi)->ArgsProduct({{1}, {1, 4, 16}})->Unit(benchmark::kMicrosecond);

BENCHMARK_MAIN();
