// conv2d on the two convolution layers of the example CNN, batch 128, float, channels-last:
//   conv1: x (128, 28, 28, 1)  * w (3, 3, 1, 32),  padding 1 -> (128, 28, 28, 32)
//   conv2: x (128, 14, 14, 32) * w (3, 3, 32, 64), padding 1 -> (128, 14, 14, 64)  (after a 2x2
//   pool)
//
//   BM_conv_forward/<layer>           y = conv2d(x, w, b) on plain tensors
//   BM_conv_forward_backward/<layer>  what a training step needs: record y on a tape, then one
//                                     reverse sweep for the cotangents of x and w (b is a constant,
//                                     as in bench/torch_conv.py where only x and w require grad)
//
// Counters: gflops = useful flops per second, 2 N OH OW C_out KH KW C_in per product (one for the
// forward, two more for the backward: xbar and wbar); us = microseconds per iteration.
// bench/torch_conv.py runs this program interleaved with PyTorch and prints the ratios:
//
//   OMP_NUM_THREADS=1 ./build/conv/bench/conv_bench --benchmark_filter=BM_conv
#include <amari/autodiff/autodiff.hpp>

#include <array>
#include <random>
#include <string>
#include <vector>

#include <benchmark/benchmark.h>
#include <omp.h>

namespace {

using amari::Conv2dOptions;
using amari::Index;
using amari::Shape;
using amari::Tensor;

struct Layer {
  const char* name;
  Index n, h, w, c_in, k, c_out;
  Index padding;
  Index out_h() const { return h + 2 * padding - k + 1; }
  Index out_w() const { return w + 2 * padding - k + 1; }
  double flops() const {
    return 2.0 * static_cast<double>(n * out_h() * out_w() * c_out * k * k * c_in);
  }
};

constexpr std::array<Layer, 2> kLayers = {{
    {"conv1 1->32 3x3 pad 1 on 28x28", 128, 28, 28, 1, 3, 32, 1},
    {"conv2 32->64 3x3 pad 1 on 14x14", 128, 14, 14, 32, 3, 64, 1},
}};

Tensor<float> random_tensor(const Shape& s, std::mt19937& rng) {
  Tensor<float> t = Tensor<float>::uninitialized(s);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  for (Index i = 0; i < t.size(); ++i) t[i] = u(rng);
  return t;
}

struct Problem {
  const Layer& layer;
  Conv2dOptions options;
  Tensor<float> x, w, b, ybar;
  explicit Problem(const Layer& l) : layer(l), options{.padding = {l.padding, l.padding}} {
    std::mt19937 rng(42);
    x = random_tensor(Shape{l.n, l.h, l.w, l.c_in}, rng);
    w = random_tensor(Shape{l.k, l.k, l.c_in, l.c_out}, rng);
    b = random_tensor(Shape{l.c_out}, rng);
    ybar = random_tensor(Shape{l.n, l.out_h(), l.out_w(), l.c_out}, rng);
  }
};

void report(benchmark::State& state, const Layer& l, double flops) {
  state.SetLabel(l.name);
  state.counters["gflops"] =
      benchmark::Counter(flops * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
  state.counters["us"] = benchmark::Counter(
      1e-6, benchmark::Counter::kIsIterationInvariantRate | benchmark::Counter::kInvert);
  state.counters["threads"] = omp_get_max_threads();
}

void BM_conv_forward(benchmark::State& state) {
  const Problem p(kLayers[static_cast<std::size_t>(state.range(0))]);
  for (auto _ : state) {
    Tensor<float> y = amari::conv2d(p.x, p.w, p.b, p.options);
    benchmark::DoNotOptimize(y.data());
  }
  report(state, p.layer, p.layer.flops());
}

void BM_conv_forward_backward(benchmark::State& state) {
  const Problem p(kLayers[static_cast<std::size_t>(state.range(0))]);
  amari::Tape<float> tape;
  std::vector<Tensor<float>> grads = {Tensor<float>(p.x.shape()), Tensor<float>(p.w.shape())};
  for (auto _ : state) {
    tape.clear();
    const std::vector<amari::Var<float>> inputs = {tape.variable(p.x), tape.variable(p.w)};
    const amari::Var<float> y =
        amari::conv2d(inputs[0], inputs[1], amari::Var<float>(p.b), p.options);
    tape.vjp_into(std::span<const amari::Var<float>>(&y, 1),
                  std::span<const Tensor<float>>(&p.ybar, 1), inputs, grads);
    benchmark::DoNotOptimize(grads[0].data());
    benchmark::DoNotOptimize(grads[1].data());
  }
  report(state, p.layer, 3 * p.layer.flops());
}

BENCHMARK(BM_conv_forward)->DenseRange(0, 1)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_conv_forward_backward)->DenseRange(0, 1)->Unit(benchmark::kMillisecond)->UseRealTime();

}  // namespace

BENCHMARK_MAIN();
