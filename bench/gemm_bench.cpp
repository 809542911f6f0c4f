// GEMM throughput against the machine's measured FMA peak.
//
//   fma_peak/*     independent FMAs on xsimd batches in registers: the core's peak GFLOP/s at the
//                  native SIMD width (and at 256 bits, batch<float, avx2>, when AVX2 is enabled).
//   gemm_square/*  C = A * B for n x n matrices, float and double, 1 thread and all processors.
//   gemm_mlp/*     the products of an MLP layer 784 -> 256 -> 256 on a batch of 128 (float, 1
//                  thread): forward X * W and the backprop shapes X^T * dY and dY * W^T.
//
// Counters: gflops (2*m*n*k per iteration over wall time), and on the GEMMs fraction_of_peak =
// gflops / (threads * single-core FMA peak), the peak measured once in-process at first use.
// On a shared machine wall time includes time the thread was descheduled; gflops_cpu (and
// fraction_of_peak_cpu) divide by the calling thread's CPU time instead, which is meaningful for
// the single-threaded runs only (reported there only).
#include <amari/autodiff/kernels/gemm.hpp>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <ctime>
#include <random>
#include <vector>

#include <benchmark/benchmark.h>
#include <omp.h>
#include <xsimd/xsimd.hpp>

namespace {

using amari::Index;
using amari::kernels::Trans;

// ---- FMA peak -----------------------------------------------------------------------------------

// Accumulators per chain set: FMA latency (4 cycles on Zen, Intel) times 2 FMA pipes needs >= 8
// independent chains; use most of the register file (32 registers with AVX-512, else 16) but leave
// room for the two operands so nothing spills.
#if defined(__AVX512F__)
constexpr int kPeakChains = 24;
#else
constexpr int kPeakChains = 12;
#endif

// `iterations` rounds of kPeakChains independent acc = acc * x + y on one batch type; returns the
// flop count. The accumulators live in registers (checked with objdump: the loop body is
// kPeakChains vfmadd instructions on registers and a counter).
template <class Batch>
double fma_loop(std::int64_t iterations) {
  using T = typename Batch::value_type;
  Batch acc[kPeakChains];
  for (int i = 0; i < kPeakChains; ++i) acc[i] = Batch(T(1) + T(i) * T(1e-3));
  Batch x(T(0.999999));
  Batch y(T(1e-7));
  // Hide x and y from the optimizer so the chains cannot be folded.
  benchmark::DoNotOptimize(x);
  benchmark::DoNotOptimize(y);
  for (std::int64_t it = 0; it < iterations; ++it) {
#pragma GCC unroll 32
    for (int i = 0; i < kPeakChains; ++i) acc[i] = xsimd::fma(acc[i], x, y);
  }
  Batch sum = acc[0];
  for (int i = 1; i < kPeakChains; ++i) sum += acc[i];
  benchmark::DoNotOptimize(sum);
  return 2.0 * kPeakChains * static_cast<double>(Batch::size) * static_cast<double>(iterations);
}

double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

// CPU time consumed by the calling thread, in seconds.
double thread_cpu_seconds() {
  timespec t{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
  return static_cast<double>(t.tv_sec) + 1e-9 * static_cast<double>(t.tv_nsec);
}

// Single-core peak GFLOP/s of the native batch type: best of several ~10 ms runs, because the VM's
// noise only ever slows a run down.
template <class T>
double measured_peak_gflops() {
  static const double peak = [] {
    double best = 0;
    for (int run = 0; run < 20; ++run) {
      const auto start = std::chrono::steady_clock::now();
      const double flops = fma_loop<xsimd::batch<T>>(500000);
      best = std::max(best, flops / seconds_since(start) * 1e-9);
    }
    return best;
  }();
  return peak;
}

template <class Batch>
void BM_fma_peak(benchmark::State& state) {
  double flops = 0;
  const auto start = std::chrono::steady_clock::now();
  const double cpu_start = thread_cpu_seconds();
  for (auto _ : state) flops += fma_loop<Batch>(100000);
  state.counters["gflops"] = flops / seconds_since(start) * 1e-9;
  state.counters["gflops_cpu"] = flops / (thread_cpu_seconds() - cpu_start) * 1e-9;
  state.counters["lanes"] = static_cast<double>(Batch::size);
}
BENCHMARK_TEMPLATE(BM_fma_peak, xsimd::batch<float>)->Name("fma_peak/float/native");
BENCHMARK_TEMPLATE(BM_fma_peak, xsimd::batch<double>)->Name("fma_peak/double/native");
#if defined(__AVX2__)
BENCHMARK_TEMPLATE(BM_fma_peak, xsimd::batch<float, xsimd::avx2>)->Name("fma_peak/float/avx2");
BENCHMARK_TEMPLATE(BM_fma_peak, xsimd::batch<double, xsimd::avx2>)->Name("fma_peak/double/avx2");
#endif

// ---- GEMM ---------------------------------------------------------------------------------------

template <class T>
std::vector<T> random_matrix(Index rows, Index cols, unsigned seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<T> dist(T(-1), T(1));
  std::vector<T> v(static_cast<std::size_t>(rows * cols));
  for (auto& x : v) x = dist(rng);
  return v;
}

// Runs C = op(A) * op(B) (m x n, inner k) on `threads` OpenMP threads and reports the counters.
template <class T>
void run_gemm(benchmark::State& state, Trans ta, Trans tb, Index m, Index n, Index k, int threads) {
  const double peak = measured_peak_gflops<T>();
  omp_set_num_threads(threads);
  // Stored shapes: A is m x k or k x m, B is k x n or n x k.
  const Index lda = ta == Trans::no ? k : m;
  const Index ldb = tb == Trans::no ? n : k;
  const auto a = random_matrix<T>(m, k, 1);
  const auto b = random_matrix<T>(k, n, 2);
  std::vector<T> c(static_cast<std::size_t>(m * n));
  const auto start = std::chrono::steady_clock::now();
  const double cpu_start = thread_cpu_seconds();
  for (auto _ : state) {
    amari::kernels::gemm<T>(ta, tb, m, n, k, T(1), a.data(), lda, b.data(), ldb, T(0), c.data(), n);
    benchmark::ClobberMemory();
  }
  const double flops =
      2.0 * static_cast<double>(m * n * k) * static_cast<double>(state.iterations());
  const double gflops = flops / seconds_since(start) * 1e-9;
  state.counters["gflops"] = gflops;
  state.counters["fraction_of_peak"] = gflops / (peak * threads);
  state.counters["threads"] = threads;
  if (threads == 1) {
    const double gflops_cpu = flops / (thread_cpu_seconds() - cpu_start) * 1e-9;
    state.counters["gflops_cpu"] = gflops_cpu;
    state.counters["fraction_of_peak_cpu"] = gflops_cpu / peak;
  }
  omp_set_num_threads(omp_get_num_procs());
}

template <class T>
void BM_gemm_square(benchmark::State& state) {
  const Index n = state.range(0);
  run_gemm<T>(state, Trans::no, Trans::no, n, n, n, static_cast<int>(state.range(1)));
}

void square_args(benchmark::internal::Benchmark* b) {
  b->ArgNames({"n", "threads"});
  for (int threads : {1, omp_get_num_procs()}) {
    for (int n : {64, 128, 256, 512, 1024}) b->Args({n, threads});  // 64, 128: for bench/sweep
    if (omp_get_num_procs() == 1) break;
  }
  b->UseRealTime()->Unit(benchmark::kMillisecond);
}
BENCHMARK_TEMPLATE(BM_gemm_square, float)->Name("gemm_square/float")->Apply(square_args);
BENCHMARK_TEMPLATE(BM_gemm_square, double)->Name("gemm_square/double")->Apply(square_args);

// MLP 784 -> 256 -> 256, batch 128: X 128x784, W1 784x256, H 128x256, W2 256x256. At 1 thread and
// at every core (the thread scaling of the mnist configuration is the scaling of these four).
void BM_gemm_mlp_forward_layer1(benchmark::State& state) {  // X * W1
  run_gemm<float>(state, Trans::no, Trans::no, 128, 256, 784, static_cast<int>(state.range(0)));
}
void BM_gemm_mlp_forward_layer2(benchmark::State& state) {  // H * W2
  run_gemm<float>(state, Trans::no, Trans::no, 128, 256, 256, static_cast<int>(state.range(0)));
}
void BM_gemm_mlp_weight_grad(benchmark::State& state) {  // X^T * dY: A 128x784, B 128x256
  run_gemm<float>(state, Trans::yes, Trans::no, 784, 256, 128, static_cast<int>(state.range(0)));
}
void BM_gemm_mlp_input_grad(benchmark::State& state) {  // dY * W1^T: A 128x256, B 784x256
  run_gemm<float>(state, Trans::no, Trans::yes, 128, 784, 256, static_cast<int>(state.range(0)));
}
void mlp_args(benchmark::internal::Benchmark* b) {
  b->ArgNames({"threads"})->Arg(1);
  if (omp_get_num_procs() > 1) b->Arg(omp_get_num_procs());
  b->UseRealTime();
}
BENCHMARK(BM_gemm_mlp_forward_layer1)->Name("gemm_mlp/float/NN_m128_n256_k784")->Apply(mlp_args);
BENCHMARK(BM_gemm_mlp_forward_layer2)->Name("gemm_mlp/float/NN_m128_n256_k256")->Apply(mlp_args);
BENCHMARK(BM_gemm_mlp_weight_grad)->Name("gemm_mlp/float/TN_m784_n256_k128")->Apply(mlp_args);
BENCHMARK(BM_gemm_mlp_input_grad)->Name("gemm_mlp/float/NT_m128_n784_k256")->Apply(mlp_args);

}  // namespace

BENCHMARK_MAIN();
