// Cost ratios to f of the derivative and curvature products of a tanh MLP (784 inputs, `depth`
// hidden layers of `width` units, 10 classes, softmax cross-entropy head, float), swept over the
// width, the depth and the batch size. bench/sweep runs it and draws the figures.
//
// Per iteration, interleaved so that the ratios hold on a noisy shared machine (as in
// autodiff_bench and curvature_bench): f (plain forward pass), JVP (dual forward along a parameter
// direction), VJP (recorded forward + reverse sweep: the gradient), GGN-vp with its own forward
// record, one more linearized GGN-vp on a kept record, and the exact Hessian-vp with its record.
//
// Counters: <product>_over_f (measured) and <product>_limit, the ratio of GEMM flops alone. With
// w_l = in_l * out_l for layer l (the batch cancels), F = sum_l w_l and R = sum_{l >= 2} w_l (the
// first layer's input is data, so no GEMM propagates a tangent or an adjoint into it):
//   f: F;  JVP: 2F + R (X dW for every layer, dX W for l >= 2);  VJP: 2F + R (forward, X^T dY,
//   dY W^T for l >= 2);  GGN-vp with forward: F + (F + R) + (F + R);  linearized GGN-vp: 2F + 2R;
//   Hessian-vp: F (record) + F + R (tangent sweep) + 2F + 4R (reverse sweep with tangents).
// Elementwise work (tanh, the head, the bias) is not counted, so the measured ratios sit above the
// limits on small layers and approach them as the GEMMs dominate.
//
//   OMP_NUM_THREADS=1 ./bench/sweep_bench --benchmark_min_time=0.2 --benchmark_format=json
#include <benchmark/benchmark.h>

#include <chrono>

#include "mlp_configs.hpp"

namespace {

using amari::Index;
using amari::bench::MlpConfig;
using amari::bench::MlpProblem;
namespace curv = amari::curvature;

// The GEMM-flop limits of the file comment, for layer sizes `sizes`.
struct Limits {
  double jvp, vjp, ggn, ggn_linearized, hvp;
};
Limits gemm_limits(const std::vector<Index>& sizes) {
  double f = 0, r = 0;
  for (std::size_t l = 0; l + 1 < sizes.size(); ++l) {
    const double w = static_cast<double>(sizes[l]) * static_cast<double>(sizes[l + 1]);
    f += w;
    if (l > 0) r += w;
  }
  return {(2 * f + r) / f, (2 * f + r) / f, (3 * f + 2 * r) / f, (2 * f + 2 * r) / f,
          (4 * f + 5 * r) / f};
}

void BM_sweep(benchmark::State& state) {
  const Index width = state.range(0), depth = state.range(1), batch = state.range(2);
  std::vector<Index> sizes{784};
  for (Index l = 0; l < depth; ++l) sizes.push_back(width);
  sizes.push_back(10);
  MlpProblem<float> p(MlpConfig{"sweep", sizes, batch});
  amari::Tensor<float> out = p.model.zeros_like_parameters();
  curv::GgnOperator<float> linearized(p.model, p.head, p.x);
  linearized.apply(p.v, out);  // the first product allocates the sweep buffers
  using clock = std::chrono::steady_clock;
  double t[6] = {0, 0, 0, 0, 0, 0};
  auto timed = [&](int k, auto&& fn) {
    const auto t0 = clock::now();
    fn();
    t[k] += std::chrono::duration<double>(clock::now() - t0).count();
  };
  for (auto _ : state) {
    timed(0, [&] { benchmark::DoNotOptimize(p.forward()); });
    timed(1, [&] { benchmark::DoNotOptimize(p.jvp()); });
    timed(2, [&] { benchmark::DoNotOptimize(p.vjp()); });
    timed(3, [&] {
      curv::GgnOperator<float> g(p.model, p.head, p.x);
      g.apply(p.v, out);
    });
    timed(4, [&] { linearized.apply(p.v, out); });
    timed(5, [&] {
      curv::HessianOperator<float> h(p.model, p.head, p.x, p.y);
      h.apply(p.v, out);
    });
    benchmark::DoNotOptimize(out.data());
  }
  const Limits lim = gemm_limits(sizes);
  state.counters["f_us"] = 1e6 * t[0] / static_cast<double>(state.iterations());
  state.counters["jvp_over_f"] = t[1] / t[0];
  state.counters["vjp_over_f"] = t[2] / t[0];
  state.counters["ggn_over_f"] = t[3] / t[0];
  state.counters["ggn_linearized_over_f"] = t[4] / t[0];
  state.counters["hvp_over_f"] = t[5] / t[0];
  state.counters["jvp_limit"] = lim.jvp;
  state.counters["vjp_limit"] = lim.vjp;
  state.counters["ggn_limit"] = lim.ggn;
  state.counters["ggn_linearized_limit"] = lim.ggn_linearized;
  state.counters["hvp_limit"] = lim.hvp;
  state.counters["threads"] = omp_get_max_threads();
}

// Three one-dimensional sweeps through the reference point width 256, depth 2, batch 128 (the
// mnist configuration of mlp_configs.hpp), which is registered once.
void sweep_args(benchmark::internal::Benchmark* b) {
  b->ArgNames({"width", "depth", "batch"});
  for (int width : {64, 128, 256, 512, 1024}) b->Args({width, 2, 128});
  for (int depth : {1, 3, 4, 6}) b->Args({256, depth, 128});
  for (int batch : {16, 32, 64, 256, 512}) b->Args({256, 2, batch});
  b->Unit(benchmark::kMicrosecond);
}
BENCHMARK(BM_sweep)->Apply(sweep_args);

}  // namespace

BENCHMARK_MAIN();
