// The dense symmetric eigensolver against a Cholesky inverse of the same matrix
// (curvature/dense_solve.hpp): what EKFAC's eigenbasis refresh and the K-FAC Laplace pay per
// Kronecker factor, relative to what K-FAC pays.
//
//   dense_round/n/threads   one round = spd_inverse, cholesky_in_place, symmetric_eigenvalues and
//                           symmetric_eigen of the same (n, n) matrix, in that order, on `threads`
//                           OpenMP threads (omp_set_num_threads), so the four are measured
//                           interleaved in one process under the same machine load.
//
// The matrix is a K-FAC-like factor: X^T X / (2n) + 1e-3 I with X (2n, n) Gaussian. Counters
// (milliseconds, medians over the rounds of the run): inverse_ms, cholesky_ms, values_ms,
// eigen_ms, and the ratios eigen_over_inverse and values_over_inverse (medians of the per-round
// ratios). n = 257, 785 (the input factor of a 784-wide layer) and 1025. The machine may be
// shared: use ratios, and enough rounds (--benchmark_min_time) for the medians to settle.
#include <amari/curvature/dense_solve.hpp>

#include <algorithm>
#include <chrono>
#include <random>
#include <vector>

#include <benchmark/benchmark.h>
#include <omp.h>

namespace {

using amari::Index;
using amari::Shape;
using amari::Tensor;
namespace cv = amari::curvature;

Tensor<double> kfac_like_factor(Index n) {
  std::mt19937_64 gen(static_cast<std::uint64_t>(n));
  std::normal_distribution<double> normal;
  const Index m = 2 * n;
  std::vector<double> x(static_cast<std::size_t>(m * n));
  for (double& v : x) v = normal(gen);
  Tensor<double> a(Shape{n, n});
  cv::symmetric_gram<double>(m, n, 1.0 / static_cast<double>(m), x.data(), n, 0.0, a.data(), n);
  for (Index i = 0; i < n; ++i) a[i * n + i] += 1e-3;
  return a;
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const std::size_t h = v.size() / 2;
  return v.size() % 2 ? v[h] : 0.5 * (v[h - 1] + v[h]);
}

double ms_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
}

void dense_round(benchmark::State& state) {
  const Index n = state.range(0);
  const int threads = static_cast<int>(state.range(1));
  const int saved = omp_get_max_threads();
  omp_set_num_threads(threads);
  const Tensor<double> a = kfac_like_factor(n);
  std::vector<double> inverse, cholesky, values, eigen, eigen_ratio, values_ratio;
  for (auto _ : state) {
    auto t0 = std::chrono::steady_clock::now();
    Tensor<double> inv = cv::spd_inverse(a);
    benchmark::DoNotOptimize(inv.data());
    inverse.push_back(ms_since(t0));

    Tensor<double> l = a.clone();
    t0 = std::chrono::steady_clock::now();
    benchmark::DoNotOptimize(cv::cholesky_in_place(l));
    cholesky.push_back(ms_since(t0));

    t0 = std::chrono::steady_clock::now();
    std::vector<double> vals = cv::symmetric_eigenvalues(a);
    benchmark::DoNotOptimize(vals.data());
    values.push_back(ms_since(t0));

    t0 = std::chrono::steady_clock::now();
    cv::SymmetricEigen e = cv::symmetric_eigen(a);
    benchmark::DoNotOptimize(e.vectors.data());
    eigen.push_back(ms_since(t0));

    eigen_ratio.push_back(eigen.back() / inverse.back());
    values_ratio.push_back(values.back() / inverse.back());
  }
  omp_set_num_threads(saved);
  state.counters["inverse_ms"] = median(inverse);
  state.counters["cholesky_ms"] = median(cholesky);
  state.counters["values_ms"] = median(values);
  state.counters["eigen_ms"] = median(eigen);
  state.counters["eigen_over_inverse"] = median(eigen_ratio);
  state.counters["values_over_inverse"] = median(values_ratio);
}

BENCHMARK(dense_round)
    ->ArgNames({"n", "threads"})
    ->ArgsProduct({{257, 785, 1025}, {1, 2}})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

}  // namespace

BENCHMARK_MAIN();
