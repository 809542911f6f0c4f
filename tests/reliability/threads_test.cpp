// Threads and determinism: independent training runs on several threads give bitwise the results
// of the same runs done one after another; each thread has its own current tape; the OpenMP kernels
// give bitwise identical results when run twice with the same thread count; the same seed gives the
// same training run.
//
// The "[threads]" cases use std::thread only and are the ones run under ThreadSanitizer (with
// OMP_NUM_THREADS=1, see docs/reliability.md); the "[openmp]" cases start OpenMP teams, which TSan
// cannot check because libgomp is not instrumented.
#include <catch2/catch.hpp>

#include <omp.h>

#include <barrier>
#include <cmath>
#include <cstring>
#include <set>
#include <stdexcept>
#include <thread>
#include <vector>

#include <amari/amari.hpp>

#include "support/random.hpp"

namespace {

using namespace amari;

template <Real T>
bool same_bits(const Tensor<T>& a, const Tensor<T>& b) {
  return a.shape() == b.shape() &&
         std::memcmp(a.data(), b.data(), static_cast<std::size_t>(a.size()) * sizeof(T)) == 0;
}

// A small classification problem: 96 points in 6 dimensions, 3 classes given by which of three
// fixed directions the point is closest to. Deterministic in `seed`.
struct Problem {
  Tensor<double> x;
  Tensor<double> y;
};

Problem make_problem(std::uint64_t seed) {
  test::Rng rng(seed);
  Problem p;
  p.x = test::normal_tensor<double>(Shape{96, 6}, rng);
  std::vector<int> labels;
  for (Index i = 0; i < 96; ++i) {
    const double a = p.x[i * 6] + p.x[i * 6 + 1], b = p.x[i * 6 + 2] - p.x[i * 6 + 3],
                 c = p.x[i * 6 + 4];
    labels.push_back(a > b ? (a > c ? 0 : 2) : (b > c ? 1 : 2));
  }
  p.y = nn::one_hot<double>(labels, 3);
  return p;
}

// `steps` Adam steps on minibatches of 32 (in order), from a model initialized with `seed`; each
// step records on the tape of its own nn::RecordedModel. Returns the final flat parameters.
Tensor<double> train(std::uint64_t seed, int steps = 20) {
  const Problem p = make_problem(1000 + seed);
  nn::Model<double> model(nn::mlp<double>({6, 16, 16, 3}, nn::Act::tanh), seed);
  const nn::SoftmaxCrossEntropy<double> head;
  nn::Adam<double> adam({.learning_rate = 0.01});
  Tensor<double> g = model.zeros_like_parameters();
  for (int s = 0; s < steps; ++s) {
    const Index first = (s % 3) * 32;
    const Tensor<double> xb = p.x.view(first * 6, Shape{32, 6});
    const Tensor<double> yb = p.y.view(first * 3, Shape{32, 3});
    const double loss = nn::loss_and_gradient(model, head, xb, yb, g);
    // No Catch2 macro here: train() runs on worker threads, and Catch2 is not thread-safe.
    if (!std::isfinite(loss)) throw std::runtime_error("train: the loss is not finite");
    adam.step(model.parameters(), g);
  }
  return model.gather();
}

}  // namespace

TEST_CASE(
    "threads: 4 threads training their own models concurrently give bitwise the sequential "
    "results",
    "[reliability][threads]") {
  constexpr int kThreads = 4;
  std::vector<Tensor<double>> sequential;
  // 60 steps each, so the threads' training loops overlap for a while.
  constexpr int kSteps = 60;
  for (int t = 0; t < kThreads; ++t)
    sequential.push_back(train(static_cast<std::uint64_t>(t), kSteps));

  for (int round = 0; round < 2; ++round) {
    std::vector<Tensor<double>> concurrent(kThreads);
    std::vector<std::thread> threads;
    for (int t = 0; t < kThreads; ++t) {
      threads.emplace_back([t, &concurrent] {
        // An exception must not escape a std::thread; an undefined result reports it below.
        try {
          concurrent[static_cast<std::size_t>(t)] = train(static_cast<std::uint64_t>(t), kSteps);
        } catch (...) {
        }
      });
    }
    for (auto& th : threads) th.join();
    for (int t = 0; t < kThreads; ++t) {
      INFO("round " << round << ", thread " << t);
      REQUIRE(concurrent[static_cast<std::size_t>(t)].defined());
      CHECK(same_bits(concurrent[static_cast<std::size_t>(t)],
                      sequential[static_cast<std::size_t>(t)]));
    }
  }
  // Different seeds did give different models (the comparison above is not vacuous).
  CHECK_FALSE(same_bits(sequential[0], sequential[1]));
}

TEST_CASE("threads: Tape::current() is a distinct tape in every thread, and records stay in it",
          "[reliability][threads][tape]") {
  constexpr int kThreads = 4;
  std::vector<const void*> tapes_d(kThreads), tapes_f(kThreads);
  std::vector<std::size_t> sizes(kThreads), sizes_after_others(kThreads);
  std::vector<int> same_within_thread(kThreads, 0);
  std::barrier sync(kThreads);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      const auto i = static_cast<std::size_t>(t);
      Tape<double>& tape = Tape<double>::current();
      tapes_d[i] = &tape;
      tapes_f[i] = &Tape<float>::current();
      same_within_thread[i] = &Tape<double>::current() == &tape;
      tape.clear();
      // Thread t records t + 1 ops on its current tape, all threads at the same time.
      Var<double> v = tape.variable(Tensor<double>::full(Shape{8}, 0.5));
      sync.arrive_and_wait();
      for (int k = 0; k <= t; ++k) v = tanh(v);
      sizes[i] = tape.size();
      sync.arrive_and_wait();  // every thread has recorded
      sizes_after_others[i] = tape.size();
      tape.clear();
    });
  }
  for (auto& th : threads) th.join();
  CHECK(std::set<const void*>(tapes_d.begin(), tapes_d.end()).size() == kThreads);
  CHECK(std::set<const void*>(tapes_f.begin(), tapes_f.end()).size() == kThreads);
  for (int t = 0; t < kThreads; ++t) {
    INFO("thread " << t);
    const auto i = static_cast<std::size_t>(t);
    CHECK(same_within_thread[i] == 1);
    CHECK(sizes[i] == static_cast<std::size_t>(t + 1));
    CHECK(sizes_after_others[i] == static_cast<std::size_t>(t + 1));
    CHECK(tapes_d[i] !=
          static_cast<const void*>(&Tape<double>::current()));  // nor the main thread's
  }
}

TEST_CASE("determinism: the same seed gives bitwise identical training runs (20 Adam steps)",
          "[reliability][threads][determinism]") {
  const Tensor<double> a = train(42), b = train(42);
  CHECK(same_bits(a, b));
  CHECK_FALSE(same_bits(a, train(43)));
}

namespace {

// Restores the OpenMP thread count at scope exit.
struct OmpThreads {
  int saved = omp_get_max_threads();
  explicit OmpThreads(int n) { omp_set_num_threads(n); }
  ~OmpThreads() { omp_set_num_threads(saved); }
};

struct KernelResults {
  Tensor<double> gemm, gemm_tn, elementwise, broadcast, softmax_rows, gradient;
  double sum = 0;
  Tensor<float> gemm_f;
};

// Work large enough for every OpenMP path: a 300 x 300 GEMM (both layouts, and in float),
// element-wise ops on 2^17 + 123 elements (past the 65536 threshold, with a SIMD tail), a
// broadcast over (600, 300), the sum of 10^6 elements, and a reverse sweep through all of them.
KernelResults run_kernels() {
  test::Rng rng(7);
  const Tensor<double> a = test::uniform_tensor<double>(Shape{300, 300}, rng);
  const Tensor<double> b = test::uniform_tensor<double>(Shape{300, 300}, rng);
  const Tensor<double> x = test::uniform_tensor<double>(Shape{(Index{1} << 17) + 123}, rng);
  const Tensor<double> y = test::uniform_tensor<double>(Shape{(Index{1} << 17) + 123}, rng);
  const Tensor<double> m = test::uniform_tensor<double>(Shape{600, 300}, rng);
  const Tensor<double> row = test::uniform_tensor<double>(Shape{300}, rng);
  const Tensor<double> big = test::uniform_tensor<double>(Shape{1000000}, rng);
  KernelResults r;
  r.gemm = matmul(a, b);
  r.gemm_tn = matmul(a, b, Trans::yes, Trans::no);
  r.gemm_f = matmul(test::convert<float>(a), test::convert<float>(b));
  r.elementwise = tanh(x) * y + exp(scale(y, 0.5)) / (square(x) + 1.0);
  r.broadcast = sigmoid(m + row);
  r.softmax_rows = softmax(m);
  r.sum = sum(big).item();
  Tape<double> tape;
  const Var<double> av = tape.variable(a), xv = tape.variable(x);
  const Var<double> loss = sum(tanh(matmul(av, av))) + sum(square(xv) * xv);
  const Tensor<double> one = Tensor<double>::scalar(1.0);
  const auto g =
      tape.vjp(std::span<const Var<double>>(&loss, 1), std::span<const Tensor<double>>(&one, 1),
               std::vector<Var<double>>{av, xv});
  r.gradient = g[0];
  return r;
}

void check_same(const KernelResults& p, const KernelResults& q) {
  CHECK(same_bits(p.gemm, q.gemm));
  CHECK(same_bits(p.gemm_tn, q.gemm_tn));
  CHECK(same_bits(p.gemm_f, q.gemm_f));
  CHECK(same_bits(p.elementwise, q.elementwise));
  CHECK(same_bits(p.broadcast, q.broadcast));
  CHECK(same_bits(p.softmax_rows, q.softmax_rows));
  CHECK(std::memcmp(&p.sum, &q.sum, sizeof p.sum) == 0);
  CHECK(same_bits(p.gradient, q.gradient));
}

}  // namespace

TEST_CASE("OpenMP: kernels run twice with 2 threads give bitwise identical results",
          "[reliability][openmp][determinism]") {
  const OmpThreads two(2);
  const KernelResults first = run_kernels();
  const KernelResults second = run_kernels();
  check_same(first, second);
}

TEST_CASE("OpenMP: GEMM and element-wise results do not depend on the thread count (documented)",
          "[reliability][openmp][determinism]") {
  KernelResults one, two, three;
  {
    const OmpThreads t(1);
    one = run_kernels();
  }
  {
    const OmpThreads t(2);
    two = run_kernels();
  }
  {
    const OmpThreads t(3);
    three = run_kernels();
  }
  for (const KernelResults* other : {&two, &three}) {
    CHECK(same_bits(one.gemm, other->gemm));
    CHECK(same_bits(one.gemm_tn, other->gemm_tn));
    CHECK(same_bits(one.gemm_f, other->gemm_f));
    CHECK(same_bits(one.elementwise, other->elementwise));
    CHECK(same_bits(one.broadcast, other->broadcast));
  }
}
