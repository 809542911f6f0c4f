// Data parallelism over threads (nn/thread_ranks.hpp): the collectives keep the Communicator
// contract (rank-order sums in double, bitwise equal on every rank), a failing or departing rank
// never hangs the others, and the data-parallel gradient over thread ranks is the plain one to
// rounding. (Catch's assertions are not thread-safe: the ranks record what they see, and the
// checks run after run_thread_ranks returns.)
#include <amari/nn/nn.hpp>

#include <omp.h>

#include <catch2/catch.hpp>

#include <atomic>
#include <cmath>
#include <mutex>
#include <stdexcept>

#include "support/random.hpp"

namespace {

using namespace amari;

// Rank r's contribution to element i: values whose float sum depends on the order of addition.
float contribution(int r, std::size_t i) {
  const float big = (r % 2 == 0 ? 1.0f : -1.0f) * 1e8f;
  return (i % 3 == 0 ? big : 0.0f) + static_cast<float>(r + 1) * 0.1f +
         static_cast<float>(i) * 1e-3f;
}

}  // namespace

TEST_CASE(
    "thread ranks: allreduce_sum is the rank-order sum in double, bitwise the same on every rank",
    "[nn][thread_ranks]") {
  for (int k : {1, 2, 3, 4}) {
    CAPTURE(k);
    const std::size_t n = 1001;  // not a multiple of k: uneven chunks
    std::vector<std::vector<float>> got_f(static_cast<std::size_t>(k));
    std::vector<std::vector<double>> got_d(static_cast<std::size_t>(k));
    std::vector<int> sizes(static_cast<std::size_t>(k));
    nn::run_thread_ranks(k, [&](nn::Communicator& comm) {
      sizes[static_cast<std::size_t>(comm.rank())] = comm.size();
      std::vector<float> f(n);
      std::vector<double> d(n);
      for (std::size_t i = 0; i < n; ++i) {
        f[i] = contribution(comm.rank(), i);
        d[i] = 1.0 / static_cast<double>(comm.rank() + 1 + i);
      }
      comm.allreduce_sum(std::span<float>(f));
      comm.allreduce_sum(std::span<double>(d));
      got_f[static_cast<std::size_t>(comm.rank())] = f;
      got_d[static_cast<std::size_t>(comm.rank())] = d;
    });
    CHECK(sizes == std::vector<int>(static_cast<std::size_t>(k), k));
    for (std::size_t i = 0; i < n; ++i) {
      double sf = 0, sd = 0;
      for (int r = 0; r < k; ++r) {
        sf += static_cast<double>(contribution(r, i));
        sd += 1.0 / static_cast<double>(r + 1 + i);
      }
      for (int r = 0; r < k; ++r) {
        REQUIRE(got_f[static_cast<std::size_t>(r)][i] == static_cast<float>(sf));
        REQUIRE(got_d[static_cast<std::size_t>(r)][i] == sd);
      }
    }
  }
}

TEST_CASE("thread ranks: broadcast, allgather, shard_of and agree behave as on MPI ranks",
          "[nn][thread_ranks]") {
  const int k = 3;
  std::vector<std::vector<double>> seen(k);
  std::vector<nn::Shard> shards(k);
  std::vector<std::vector<std::uint64_t>> gathered(k);
  nn::run_thread_ranks(k, [&](nn::Communicator& comm) {
    const int r = comm.rank();
    std::vector<double> v = {double(r), double(10 * r)};
    comm.broadcast(std::span<double>(v), 2);
    seen[static_cast<std::size_t>(r)] = v;
    gathered[static_cast<std::size_t>(r)] = comm.allgather(static_cast<std::uint64_t>(100 + r));
    shards[static_cast<std::size_t>(r)] = nn::shard_of(comm, 2 + r);  // rows 2, 3, 4
    comm.agree("the same thing", 42);
  });
  for (int r = 0; r < k; ++r) {
    CHECK(seen[static_cast<std::size_t>(r)] == std::vector<double>{2.0, 20.0});
    CHECK(gathered[static_cast<std::size_t>(r)] == std::vector<std::uint64_t>{100, 101, 102});
  }
  CHECK(shards[0].offset == 0);
  CHECK(shards[1].offset == 2);
  CHECK(shards[2].offset == 5);
  CHECK(shards[2].total == 9);

  // A disagreement throws on every rank; the call rethrows one of them.
  CHECK_THROWS_AS(
      nn::run_thread_ranks(
          k, [&](nn::Communicator& comm) { comm.agree("model shapes", comm.rank() == 1 ? 7 : 8); }),
      ValueError);
  CHECK_THROWS_WITH(
      nn::run_thread_ranks(
          k, [&](nn::Communicator& comm) { comm.agree("model shapes", comm.rank() == 1 ? 7 : 8); }),
      Catch::Contains("model shapes") && Catch::Contains("rank(s) 1"));
}

TEST_CASE(
    "thread ranks: mismatched lengths and bad arguments give ValueError naming the collective",
    "[nn][thread_ranks]") {
  CHECK_THROWS_WITH(
      nn::run_thread_ranks(2,
                           [](nn::Communicator& comm) {
                             std::vector<float> v(comm.rank() == 0 ? 4 : 5);
                             comm.allreduce_sum(std::span<float>(v));
                           }),
      Catch::Contains("allreduce_sum") && Catch::Contains("4") && Catch::Contains("5"));
  CHECK_THROWS_WITH(nn::run_thread_ranks(2,
                                         [](nn::Communicator& comm) {
                                           std::vector<double> v(3);
                                           comm.broadcast(std::span<double>(v), 2);
                                         }),
                    Catch::Contains("broadcast from root 2"));
  CHECK_THROWS_AS(nn::run_thread_ranks(0, [](nn::Communicator&) {}), ValueError);
}

TEST_CASE("thread ranks: a rank that throws or returns early releases the ranks waiting for it",
          "[nn][thread_ranks]") {
  // Rank 1 fails before the collective rank 0 waits in: the call ends (no hang) and rethrows
  // rank 1's own exception, not rank 0's release.
  CHECK_THROWS_WITH(nn::run_thread_ranks(2,
                                         [](nn::Communicator& comm) {
                                           if (comm.rank() == 1)
                                             throw std::runtime_error("rank 1 broke");
                                           std::vector<double> v(8, 1.0);
                                           comm.allreduce_sum(std::span<double>(v));
                                         }),
                    "rank 1 broke");
  // Rank 1 returns without calling the collective: rank 0 gets an Error saying so.
  CHECK_THROWS_WITH(nn::run_thread_ranks(2,
                                         [](nn::Communicator& comm) {
                                           if (comm.rank() == 1) return;
                                           std::vector<double> v(8, 1.0);
                                           comm.allreduce_sum(std::span<double>(v));
                                         }),
                    Catch::Contains("rank 0 of 2") && Catch::Contains("returned from its body"));
}

TEST_CASE(
    "thread ranks: called inside a parallel region, where nested teams get one thread, it refuses",
    "[nn][thread_ranks]") {
  if (omp_get_max_threads() < 2 || omp_get_max_active_levels() > 1)
    return;  // needs a real outer team
  std::atomic<int> refused{0};
#pragma omp parallel num_threads(2)
  {
    if (omp_get_thread_num() == 0) {
      try {
        nn::run_thread_ranks(2, [](nn::Communicator&) {});
      } catch (const ValueError& e) {
        if (std::string(e.what()).find("inside a parallel region") != std::string::npos)
          refused = 1;
      }
    }
  }
  CHECK(refused == 1);
}

TEST_CASE(
    "thread ranks: the data-parallel gradient equals the plain gradient to rounding and every rank "
    "agrees "
    "bitwise",
    "[nn][thread_ranks]") {
  const nn::Model<double> model(nn::mlp<double>({5, 7, 4}, nn::Act::tanh), 3);
  nn::SoftmaxCrossEntropy<double> head;
  amari::test::Rng rng(4);
  const Index n = 11;
  const Tensor<double> x = amari::test::normal_tensor<double>(Shape{n, 5}, rng);
  std::vector<int> labels;
  for (Index i = 0; i < n; ++i) labels.push_back(static_cast<int>(i % 4));
  const Tensor<double> y = nn::one_hot<double>(labels, 4);

  nn::Model<double> plain = model;
  Tensor<double> expected = plain.zeros_like_parameters();
  const double expected_loss = nn::loss_and_gradient(plain, head, x, y, expected);

  for (int k : {2, 3}) {
    CAPTURE(k);
    std::vector<nn::Model<double>> models(static_cast<std::size_t>(k), model);
    std::vector<Tensor<double>> grads;
    for (int r = 0; r < k; ++r) grads.push_back(model.zeros_like_parameters());
    std::vector<double> losses(static_cast<std::size_t>(k));
    std::vector<Index> offsets(static_cast<std::size_t>(k));
    nn::run_thread_ranks(k, [&](nn::Communicator& comm) {
      const int r = comm.rank();
      const Index first = n * r / k, last = n * (r + 1) / k;
      const nn::Shard shard = nn::shard_of(comm, last - first);
      offsets[static_cast<std::size_t>(r)] = shard.offset;
      const Tensor<double> xr = x.view(first * 5, Shape{last - first, 5});
      const Tensor<double> yr = y.view(first * 4, Shape{last - first, 4});
      losses[static_cast<std::size_t>(r)] =
          nn::loss_and_gradient(models[static_cast<std::size_t>(r)], head, xr, yr,
                                grads[static_cast<std::size_t>(r)], comm, shard);
    });
    for (int r = 0; r < k; ++r) {
      CHECK(offsets[static_cast<std::size_t>(r)] == n * r / k);
      CHECK(losses[static_cast<std::size_t>(r)] == losses[0]);
      for (Index i = 0; i < expected.size(); ++i)
        REQUIRE(grads[static_cast<std::size_t>(r)][i] == grads[0][i]);
    }
    CHECK(losses[0] == Approx(expected_loss).epsilon(1e-14));
    double worst = 0;
    for (Index i = 0; i < expected.size(); ++i)
      worst = std::max(worst, std::abs(grads[0][i] - expected[i]));
    CHECK(worst <= 1e-15);
  }
}
