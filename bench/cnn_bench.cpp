// Cost of the train_cnn model (examples/cnn_models.hpp: conv 32 3x3, ReLU, 2x2 max-pool, conv 64
// 3x3, ReLU, 2x2 max-pool, Linear 3136 -> 128, ReLU, Linear 128 -> 10) at batch 128, float, with a
// softmax cross-entropy head, relative to its forward pass f; all timed side by side in every
// iteration (interleaved), so the ratios hold on a noisy machine:
//   jvp_over_f             loss and its directional derivative along v (dual numbers)
//   vjp_over_f             loss and gradient (taped forward + reverse sweep)
//   ggn_over_f             G v including recording the forward pass
//   ggn_linearized_over_f  one more G v at the same parameters
//   adam_step_over_f       a whole Adam training step (gradient + update)
// BM_cnn_memory: peak tensor memory of one G v (with forward) against one gradient.
// BM_cnn_kfac_step: a K-FAC step with train_cnn's K-FAC options (statistics on 32 examples,
// sampled labels, expand, momentum, KL clip) against an Adam step, and its parts, interleaved:
//   kfac_step_over_adam      a step that updates the statistics (no inverse refresh)
//   plain_step_over_adam     a step without statistics (KfacOptions::statistics_update_every)
//   update_over_adam         KroneckerFactors::update: the tapped forward, the gradient sweep and
//                            the factor statistics (sampled-label sweep, A and G averages)
//   precondition_over_adam   applying the damped inverses to the gradient
// BM_cnn_kfac_refresh: one inverse refresh (update_inverses: Cholesky inverses of every A and G)
// against an Adam step (refresh_over_adam). train_cnn's average step, with statistics every s and
// inverses every r steps, is plain + (kfac_step - plain) / s + refresh / r Adam steps.
//
//   OMP_NUM_THREADS=1 ./bench/cnn_bench --benchmark_repetitions=5 --benchmark_report_aggregates_only=true
#include <benchmark/benchmark.h>
#include <omp.h>

#include <chrono>

#include "../examples/cnn_models.hpp"

namespace {

using namespace amari;

/// The CNN with a random batch (N, 784), one-hot targets and a random parameter direction v.
struct CnnProblem {
  explicit CnnProblem(Index batch)
      : model(example::small_cnn<float>(), 1),
        x(Tensor<float>::uninitialized(Shape{batch, 784})),
        v(model.zeros_like_parameters()),
        gradient(model.zeros_like_parameters()) {
    nn::Rng rng(42);
    for (Index i = 0; i < x.size(); ++i) x[i] = static_cast<float>(rng.normal());
    for (Index i = 0; i < v.size(); ++i) v[i] = static_cast<float>(rng.normal()) * 1e-2f;
    std::vector<int> labels(static_cast<std::size_t>(batch));
    for (auto& l : labels) l = static_cast<int>(rng.below(10));
    y = nn::one_hot<float>(labels, 10);
  }
  nn::Model<float> model;
  nn::SoftmaxCrossEntropy<float> head;
  Tensor<float> x, y, v, gradient;
};

/// Seconds accumulated per slot, for timing several computations interleaved in one benchmark
/// iteration (so that machine noise moves all of them together).
template <int N>
struct Interleaved {
  double t[N] = {};
  template <class F>
  void time(int k, F&& f) {
    const auto t0 = std::chrono::steady_clock::now();
    f();
    t[k] += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  }
};

void BM_cnn_ratios(benchmark::State& state) {
  CnnProblem p(state.range(0));
  Tensor<float> out = p.model.zeros_like_parameters();
  curvature::GgnOperator<float> linearized(p.model, p.head, p.x);
  linearized.apply(p.v, out);
  // Adam on a copy of the parameters, so the measured model stays at the same point.
  nn::Adam<float> adam({.learning_rate = 1e-6});
  Tensor<float> scratch = p.model.parameters().clone();
  Interleaved<6> timer;
  auto timed = [&](int k, auto&& f) { timer.time(k, f); };
  const double* t = timer.t;
  for (auto _ : state) {
    timed(0, [&] { benchmark::DoNotOptimize(p.head.loss(p.model.forward(p.x), p.y).item()); });
    timed(1, [&] { benchmark::DoNotOptimize(p.head.loss(p.model.forward_jvp(p.x, p.v), p.y).tangent().item()); });
    timed(2, [&] {
      benchmark::DoNotOptimize(nn::gradient_at(p.model, p.head, p.x, p.y, p.gradient));
    });
    timed(3, [&] {
      curvature::GgnOperator<float> g(p.model, p.head, p.x);
      g.apply(p.v, out);
    });
    timed(4, [&] { linearized.apply(p.v, out); });
    timed(5, [&] {
      benchmark::DoNotOptimize(nn::gradient_at(p.model, p.head, p.x, p.y, p.gradient));
      adam.step(scratch, p.gradient);
    });
    benchmark::DoNotOptimize(out.data());
  }
  const double n = static_cast<double>(state.iterations());
  state.counters["f_ms"] = 1e3 * t[0] / n;
  state.counters["adam_step_ms"] = 1e3 * t[5] / n;
  state.counters["jvp_over_f"] = t[1] / t[0];
  state.counters["vjp_over_f"] = t[2] / t[0];
  state.counters["ggn_over_f"] = t[3] / t[0];
  state.counters["ggn_linearized_over_f"] = t[4] / t[0];
  state.counters["adam_step_over_f"] = t[5] / t[0];
  state.counters["threads"] = omp_get_max_threads();
}

void BM_cnn_memory(benchmark::State& state) {
  CnnProblem p(state.range(0));
  Tensor<float> out = p.model.zeros_like_parameters();
  double grad_peak = 0, ggn_peak = 0;
  for (auto _ : state) {
    const std::size_t base = memory_stats().live_bytes;
    reset_peak_memory();
    benchmark::DoNotOptimize(nn::gradient_at(p.model, p.head, p.x, p.y, p.gradient));
    grad_peak = static_cast<double>(memory_stats().peak_bytes - base);
    reset_peak_memory();
    {
      curvature::GgnOperator<float> g(p.model, p.head, p.x);
      g.apply(p.v, out);
    }
    ggn_peak = static_cast<double>(memory_stats().peak_bytes - base);
  }
  state.counters["gradient_peak_MB"] = grad_peak / 1e6;
  state.counters["ggn_peak_MB"] = ggn_peak / 1e6;
  state.counters["ggn_over_gradient"] = ggn_peak / grad_peak;
}

// train_cnn's K-FAC options (learning rate tiny, so that the model stays where it is, and no
// inverse refresh after the first step: refreshes are timed by BM_cnn_kfac_refresh).
curvature::KfacOptions cnn_kfac_options() {
  return {.learning_rate = 1e-6,
          .damping = 0.1,
          .inverse_update_every = 1 << 30,
          .statistics_batch = 32,
          .momentum = 0.9,
          .kl_clip = 1e-3,
          .evaluate_loss_after = false};
}

void BM_cnn_kfac_step(benchmark::State& state) {
  CnnProblem p(state.range(0));
  const curvature::KfacOptions o = cnn_kfac_options();
  nn::Model<float> kfac_model = p.model;
  curvature::Kfac<float> kfac(kfac_model, p.head, o);
  // The first step defines the blocks and computes the inverses; the next ones still allocate
  // what steady-state steps reuse (momentum, averages): warm-up, not timed.
  for (int warm = 0; warm < 3; ++warm) kfac.step(p.x, p.y);
  // Statistics at its first step only: every later step is a plain one.
  curvature::KfacOptions plain_options = o;
  plain_options.statistics_update_every = 1 << 30;
  nn::Model<float> plain_model = p.model;
  curvature::Kfac<float> plain(plain_model, p.head, plain_options);
  plain.step(p.x, p.y);
  curvature::KroneckerFactors<float> factors(p.model, p.head, o);
  factors.update(p.x, p.y, &p.gradient);
  factors.update_inverses(o.damping);
  Tensor<float> direction = p.model.zeros_like_parameters();
  nn::Adam<float> adam({.learning_rate = 1e-6});
  Tensor<float> scratch = p.model.parameters().clone();
  Interleaved<5> timer;
  auto timed = [&](int k, auto&& f) { timer.time(k, f); };
  const double* t = timer.t;
  for (auto _ : state) {
    timed(0, [&] {
      benchmark::DoNotOptimize(nn::gradient_at(p.model, p.head, p.x, p.y, p.gradient));
      adam.step(scratch, p.gradient);
    });
    timed(1, [&] { benchmark::DoNotOptimize(kfac.step(p.x, p.y).loss); });
    timed(2, [&] { benchmark::DoNotOptimize(plain.step(p.x, p.y).loss); });
    timed(3, [&] { benchmark::DoNotOptimize(factors.update(p.x, p.y, &p.gradient)); });
    timed(4, [&] { factors.precondition(p.gradient, direction); });
    benchmark::DoNotOptimize(direction.data());
  }
  const double n = static_cast<double>(state.iterations());
  state.counters["adam_step_ms"] = 1e3 * t[0] / n;
  state.counters["kfac_step_ms"] = 1e3 * t[1] / n;
  state.counters["kfac_step_over_adam"] = t[1] / t[0];
  state.counters["plain_step_over_adam"] = t[2] / t[0];
  state.counters["update_over_adam"] = t[3] / t[0];
  state.counters["precondition_over_adam"] = t[4] / t[0];
  state.counters["threads"] = omp_get_max_threads();
}

void BM_cnn_kfac_refresh(benchmark::State& state) {
  CnnProblem p(state.range(0));
  const curvature::KfacOptions o = cnn_kfac_options();
  curvature::KroneckerFactors<float> factors(p.model, p.head, o);
  factors.update(p.x, p.y, &p.gradient);
  nn::Adam<float> adam({.learning_rate = 1e-6});
  Tensor<float> scratch = p.model.parameters().clone();
  Interleaved<2> timer;
  const double* t = timer.t;
  for (auto _ : state) {
    timer.time(0, [&] {
      benchmark::DoNotOptimize(nn::gradient_at(p.model, p.head, p.x, p.y, p.gradient));
      adam.step(scratch, p.gradient);
    });
    timer.time(1, [&] { factors.update_inverses(o.damping); });
  }
  state.counters["refresh_ms"] = 1e3 * t[1] / static_cast<double>(state.iterations());
  state.counters["refresh_over_adam"] = t[1] / t[0];
  state.counters["threads"] = omp_get_max_threads();
}

// fc1's factor A (3137 x 3137) after `updates` statistics updates of 32 rows each, as in
// train_cnn's K-FAC run (statistics every 20 steps, inverses every 100: its refreshes see 32 to
// 992 rows): the damped inverse in the Woodbury form (KfacOptions::low_rank_inverses) against the
// dense one, preconditioning and refresh, timed alternately in one process. (Every update here
// reads the same batch, whose rows repeat: the cost does not depend on the rows' values.)
void BM_cnn_kfac_low_rank(benchmark::State& state) {
  CnnProblem p(128);
  const auto updates = static_cast<int>(state.range(0));
  curvature::KfacOptions low_rank = cnn_kfac_options(), dense = low_rank;
  dense.low_rank_inverses = false;
  curvature::KroneckerFactors<float> fl(p.model, p.head, low_rank), fd(p.model, p.head, dense);
  for (int k = 0; k < updates; ++k) {
    fl.update(p.x, p.y, &p.gradient);
    fd.update(p.x, p.y);
  }
  fl.update_inverses(low_rank.damping);
  fd.update_inverses(dense.damping);
  Tensor<float> direction = p.model.zeros_like_parameters();
  Interleaved<4> timer;
  const double* t = timer.t;
  for (auto _ : state) {
    timer.time(0, [&] { fl.precondition(p.gradient, direction); });
    timer.time(1, [&] { fd.precondition(p.gradient, direction); });
    timer.time(2, [&] { fl.update_inverses(low_rank.damping); });
    timer.time(3, [&] { fd.update_inverses(dense.damping); });
    benchmark::DoNotOptimize(direction.data());
  }
  const double n = static_cast<double>(state.iterations());
  state.counters["fc1_rows"] = static_cast<double>(fl.inverse_a_rank(2));
  state.counters["low_rank_precondition_ms"] = 1e3 * t[0] / n;
  state.counters["dense_precondition_ms"] = 1e3 * t[1] / n;
  state.counters["precondition_low_over_dense"] = t[0] / t[1];
  state.counters["low_rank_refresh_ms"] = 1e3 * t[2] / n;
  state.counters["dense_refresh_ms"] = 1e3 * t[3] / n;
  state.counters["refresh_low_over_dense"] = t[2] / t[3];
  state.counters["threads"] = omp_get_max_threads();
}

BENCHMARK(BM_cnn_ratios)->Arg(128)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_cnn_memory)->Arg(128)->Unit(benchmark::kMillisecond)->Iterations(2);
BENCHMARK(BM_cnn_kfac_step)->Arg(128)->Unit(benchmark::kMillisecond)->MinTime(2);
BENCHMARK(BM_cnn_kfac_refresh)->Arg(128)->Unit(benchmark::kMillisecond)->Iterations(3);
BENCHMARK(BM_cnn_kfac_low_rank)->Arg(1)->Arg(16)->Arg(31)->Unit(benchmark::kMillisecond)->Iterations(3);

}  // namespace

BENCHMARK_MAIN();
