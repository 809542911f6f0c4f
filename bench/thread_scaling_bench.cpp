// Thread scaling of the MLP configurations of bench/mlp_configs.hpp: the forward pass f, the
// gradient (record + reverse sweep) and the GGN-vector product (record, JVP -> H_L -> VJP), each
// timed in the same iteration three ways, so that the speedups compare runs microseconds apart in
// one process (the machine's noise moves all sides together):
//   1 thread;
//   `threads` threads, each operation split over the threads (the kernels' own OpenMP);
//   `threads` thread ranks (nn/thread_ranks.hpp): the batch split into row blocks, one per thread,
//   each with its own model copy, and the results reduced across the ranks (reduce_mean for f,
//   the data-parallel loss_and_gradient, make_distributed_curvature for G v).
//
//   f_speedup, gradient_speedup, ggn_speedup         time on 1 thread / time split per operation
//   f_ranks_speedup, gradient_ranks_speedup, ...     time on 1 thread / time with thread ranks
//   f_us_1, f_us_n, f_us_ranks, ...                  the times themselves (microseconds per call)
//
// The thread count is set with omp_set_num_threads around each call; OMP_NUM_THREADS only sets the
// upper count (the machine's cores when unset).
//
//   OMP_NUM_THREADS=2 ./bench/thread_scaling_bench --benchmark_repetitions=5
//   --benchmark_report_aggregates_only=true
#include <benchmark/benchmark.h>

#include <chrono>
#include <string>

#include <amari/curvature/distributed_operator.hpp>

#include "mlp_configs.hpp"

namespace {

using amari::bench::mlp_configs;
using amari::bench::MlpConfig;
using amari::bench::MlpProblem;
namespace curv = amari::curvature;
using amari::Index;

// One thread rank's share of the problem: a model copy and its row block of the batch.
template <class T>
struct RankShare {
  amari::nn::Model<T> model;
  amari::Tensor<T> x, y, gradient, out;
};

template <class T>
void BM_thread_scaling(benchmark::State& state) {
  const MlpConfig& c = mlp_configs()[static_cast<std::size_t>(state.range(0))];
  const int many = omp_get_max_threads();
  MlpProblem<T> p(c);
  amari::Tensor<T> out = p.model.zeros_like_parameters();
  const Index rows = p.x.shape()[0], in = p.x.shape()[1], classes = p.y.shape()[1];
  std::vector<RankShare<T>> shares;
  for (int r = 0; r < many; ++r) {
    const Index first = rows * r / many, last = rows * (r + 1) / many;
    shares.push_back({p.model, p.x.view(first * in, amari::Shape{last - first, in}).clone(),
                      p.y.view(first * classes, amari::Shape{last - first, classes}).clone(),
                      p.model.zeros_like_parameters(), p.model.zeros_like_parameters()});
  }
  using clock = std::chrono::steady_clock;
  // t[k][side], k = f, gradient, GGN-vp; side 0: 1 thread, 1: split per operation, 2: thread ranks.
  double t[3][3] = {};
  auto timed = [&](int k, int side, auto&& f) {
    omp_set_num_threads(side == 1 ? many : 1);
    const auto t0 = clock::now();
    f();
    t[k][side] += std::chrono::duration<double>(clock::now() - t0).count();
  };
  auto ggn = [&] {
    curv::GgnOperator<T> g(p.model, p.head, p.x);
    g.apply(p.v, out);
  };
  // The same three operations on thread ranks.
  auto on_ranks = [&](int k) {
    amari::nn::run_thread_ranks(many, [&](amari::nn::Communicator& comm) {
      RankShare<T>& s = shares[static_cast<std::size_t>(comm.rank())];
      const amari::nn::Shard shard = amari::nn::shard_of(comm, s.x.shape()[0]);
      if (k == 0) {
        T loss = p.head.loss(s.model.forward(s.x), s.y).item();
        amari::nn::reduce_mean(comm, shard.weight(), std::span<T>(&loss, 1));
        benchmark::DoNotOptimize(loss);
      } else if (k == 1) {
        benchmark::DoNotOptimize(
            amari::nn::loss_and_gradient(s.model, p.head, s.x, s.y, s.gradient, comm, shard));
      } else {
        auto g = curv::make_distributed_curvature(curv::Curvature::ggn, s.model, p.head, s.x, s.y,
                                                  comm, shard);
        g->apply(p.v, s.out);
      }
    });
  };
  for (auto _ : state) {
    for (int side : {0, 1}) timed(0, side, [&] { benchmark::DoNotOptimize(p.forward()); });
    timed(0, 2, [&] { on_ranks(0); });
    for (int side : {0, 1}) timed(1, side, [&] { benchmark::DoNotOptimize(p.vjp()); });
    timed(1, 2, [&] { on_ranks(1); });
    for (int side : {0, 1}) timed(2, side, ggn);
    timed(2, 2, [&] { on_ranks(2); });
    benchmark::DoNotOptimize(out.data());
  }
  omp_set_num_threads(many);
  const double n = static_cast<double>(state.iterations());
  const char* names[3] = {"f", "gradient", "ggn"};
  for (int k = 0; k < 3; ++k) {
    state.counters[std::string(names[k]) + "_us_1"] = 1e6 * t[k][0] / n;
    state.counters[std::string(names[k]) + "_us_n"] = 1e6 * t[k][1] / n;
    state.counters[std::string(names[k]) + "_us_ranks"] = 1e6 * t[k][2] / n;
    state.counters[std::string(names[k]) + "_speedup"] = t[k][0] / t[k][1];
    state.counters[std::string(names[k]) + "_ranks_speedup"] = t[k][0] / t[k][2];
  }
  state.SetLabel(c.name);
  state.counters["threads"] = many;
}

// Arg = index into mlp_configs(): 0 small, 1 mnist, 2 wide.
BENCHMARK_TEMPLATE(BM_thread_scaling, float)->DenseRange(0, 2)->Unit(benchmark::kMillisecond);
BENCHMARK_TEMPLATE(BM_thread_scaling, double)->DenseRange(0, 2)->Unit(benchmark::kMillisecond);

}  // namespace

BENCHMARK_MAIN();
