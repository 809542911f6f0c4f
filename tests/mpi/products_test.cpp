// Data-parallel products (nn/communicator.hpp, curvature/distributed_operator.hpp): with the batch
// split into unequal shards over the ranks, the gradient, every curvature product and the data-set
// operator equal the single-process result on the union (each rank computes that reference itself)
// to 1e-12 relative, and every rank holds bitwise the same result.
#include <catch2/catch.hpp>

#include "shards.hpp"
#include "support/dense.hpp"

namespace {

using namespace amari;
using namespace amari::test::mpi;
namespace curv = amari::curvature;

}  // namespace

TEST_CASE("mpi: the reduced loss and gradient equal the single-process ones on the union",
          "[mpi]") {
  mpi::Communicator comm;
  for (const bool first_empty : {false, true}) {
    INFO("rank 0 holds no example: " << first_empty);
    Problem p;
    const Local l = local_part(p, comm, first_empty);
    const nn::Shard shard = nn::shard_of(comm, l.count);
    CHECK(shard.offset == l.first);
    CHECK(shard.total == Problem::n);

    Tensor<double> g = p.model.zeros_like_parameters(), g_ref = p.model.zeros_like_parameters();
    nn::Model<double> reference = p.model;
    const double loss = nn::loss_and_gradient(p.model, p.head, l.x, l.y, g, comm, shard);
    const double loss_ref = nn::loss_and_gradient(reference, p.head, p.x, p.y, g_ref);
    CHECK(std::abs(loss - loss_ref) <= 1e-12 * std::abs(loss_ref));
    CHECK(relative_difference(g, g_ref) <= 1e-12);
    CHECK(same_on_every_rank(comm, g.data(), static_cast<std::size_t>(g.size())));
    CHECK(p.model.step() == reference.step());  // ranks without rows move the step counter too
  }
}

TEST_CASE("mpi: every curvature product equals the single-process operator on the union", "[mpi]") {
  mpi::Communicator comm;
  Problem p;
  for (const bool first_empty : {false, true}) {
    const Local l = local_part(p, comm, first_empty);
    const nn::Shard shard = nn::shard_of(comm, l.count);
    for (auto kind : {curv::Curvature::ggn, curv::Curvature::mc_fisher,
                      curv::Curvature::empirical_fisher, curv::Curvature::hessian}) {
      INFO(curv::to_string(kind) << ", rank 0 holds no example: " << first_empty);
      // The reference: one process, all 11 examples (MC labels keyed by rows 0..10).
      auto whole = curv::make_curvature(kind, p.model, p.head, p.x, p.y, /*samples=*/2, /*seed=*/7);
      const amari::test::Dense reference = amari::test::dense_of(*whole);
      auto distributed =
          curv::make_distributed_curvature(kind, p.model, p.head, l.x, l.y, comm, shard, 2, 7);
      const amari::test::Dense d =
          amari::test::dense_of(*distributed);  // P collectives on every rank
      CHECK(amari::test::rel_frobenius(d, reference) <= 1e-12);
      CHECK(same_on_every_rank(comm, d.a.data(), d.a.size()));
    }
  }
}

TEST_CASE("mpi: a data-set operator over a sharded data set equals the one over the whole set",
          "[mpi]") {
  mpi::Communicator comm;
  Problem p;
  const Local l = local_part(p, comm);
  const nn::Shard shard = nn::shard_of(comm, l.count);
  for (auto kind : {curv::Curvature::ggn, curv::Curvature::mc_fisher}) {
    INFO(curv::to_string(kind));
    curv::DatasetOperator<double> whole(kind, p.model, p.head, p.x, p.y, /*batch_size=*/3,
                                        curv::DatasetOperator<double>::Storage::keep, 2, 5);
    const amari::test::Dense reference = amari::test::dense_of(whole);
    // Each rank: the data-set operator of its rows (MC labels keyed from its global offset),
    // batched differently from the reference, then weighted by n_r / N.
    auto local = std::make_unique<curv::DatasetOperator<double>>(
        kind, p.model, p.head, l.x, l.y, /*batch_size=*/2,
        curv::DatasetOperator<double>::Storage::recompute, 2, 5, shard.offset);
    curv::DistributedOperator<double> op(std::move(local), p.model.num_parameters(), comm,
                                         shard.weight());
    const amari::test::Dense d = amari::test::dense_of(op);
    CHECK(amari::test::rel_frobenius(d, reference) <= 1e-12);
    CHECK(same_on_every_rank(comm, d.a.data(), d.a.size()));
  }
}

TEST_CASE(
    "mpi: a subset spread over the ranks has n rows, each rank's share within one of n n_r / N",
    "[mpi]") {
  mpi::Communicator comm;
  for (const bool first_empty : {false, true}) {
    Problem p;
    const Local l = local_part(p, comm, first_empty);
    const nn::Shard shard = nn::shard_of(comm, l.count);
    for (const Index n : {Index{1}, Index{5}, Index{10}}) {
      const nn::Shard s = shard.spread(n);
      const std::vector<std::uint64_t> counts = comm.allgather(static_cast<std::uint64_t>(s.local));
      const std::vector<std::uint64_t> offsets =
          comm.allgather(static_cast<std::uint64_t>(s.offset));
      std::uint64_t sum = 0;
      for (std::size_t q = 0; q < counts.size(); ++q) {
        CHECK(offsets[q] == sum);  // consecutive positions in the subset, in rank order
        sum += counts[q];
      }
      CHECK(sum == static_cast<std::uint64_t>(n));
      CHECK(s.total == n);
      CHECK(s.local <= l.count);
      CHECK(std::abs(static_cast<double>(s.local) - static_cast<double>(n * l.count) / Problem::n) <
            1.0);
    }
  }
}

TEST_CASE("mpi: the empirical Fisher diagonal over a spread subset equals the single-process one",
          "[mpi]") {
  mpi::Communicator comm;
  Problem p;
  const Local l = local_part(p, comm);
  const nn::Shard shard = nn::shard_of(comm, l.count);
  for (const Index first : {Index{0}, Index{2}, Index{7}}) {
    INFO("subset of " << first << " examples");
    // The reference: one process on the union with the subset's rows first.
    const Tensor<double> x = spread_first(p.x, comm.size(), first),
                         y = spread_first(p.y, comm.size(), first);
    const Tensor<double> ref = curv::empirical_fisher_diagonal(p.model, p.head, x, y, first);
    const Tensor<double> d =
        curv::empirical_fisher_diagonal(p.model, p.head, l.x, l.y, first, comm, shard);
    CHECK(relative_difference(d, ref) <= 1e-12);
  }
}

TEST_CASE("mpi: allreduce_sum adds the ranks' vectors in rank order, the same bits everywhere",
          "[mpi]") {
  mpi::Communicator comm;
  const int k = comm.size(), r = comm.rank();
  // Values whose sum depends on the order of addition: 1e16, then 1.0 on every other rank.
  std::vector<double> v = {r == 0 ? 1e16 : 1.0, static_cast<double>(r + 1)};
  std::vector<float> f = {static_cast<float>(r) * 0.5f + 0.25f};
  comm.allreduce_sum(std::span<double>(v));
  comm.allreduce_sum(std::span<float>(f));
  double expected = 1e16;
  for (int q = 1; q < k; ++q) expected += 1.0;  // rank order, in double
  CHECK(v[0] == expected);
  CHECK(v[1] == static_cast<double>(k * (k + 1) / 2));
  double fs = 0;
  for (int q = 0; q < k; ++q) fs += static_cast<double>(static_cast<float>(q) * 0.5f + 0.25f);
  CHECK(f[0] == static_cast<float>(fs));
  CHECK(same_on_every_rank(comm, v.data(), v.size()));
}

TEST_CASE("mpi: long vectors (reduce-scatter on more than 2 ranks) are summed in rank order too",
          "[mpi]") {
  mpi::Communicator comm;
  const int k = comm.size(), r = comm.rank();
  const std::size_t n = 10001;  // 80 kB of doubles, not a multiple of k: chunks of unequal length
  CHECK(mpi::uses_reduce_scatter(n, sizeof(double), k) == (k > 2));
  std::vector<double> v(n);
  std::vector<float> f(n);
  for (std::size_t i = 0; i < n; ++i) {
    v[i] = r == 0 ? 1e16 + static_cast<double>(i) * 2 : 1.0 + static_cast<double>(i % 7);
    f[i] = static_cast<float>(r + 1) * 0.1f + static_cast<float>(i % 5);
  }
  const std::uint64_t bytes_before = comm.bytes_received();
  comm.allreduce_sum(std::span<double>(v));
  comm.allreduce_sum(std::span<float>(f));
  const std::uint64_t bytes = comm.bytes_received() - bytes_before;
  std::size_t wrong_d = 0, wrong_f = 0;
  for (std::size_t i = 0; i < n; ++i) {
    double e = 1e16 + static_cast<double>(i) * 2, ef = 0;
    for (int q = 1; q < k; ++q) e += 1.0 + static_cast<double>(i % 7);
    for (int q = 0; q < k; ++q)
      ef += static_cast<double>(static_cast<float>(q + 1) * 0.1f + static_cast<float>(i % 5));
    wrong_d += v[i] != e;
    wrong_f += f[i] != static_cast<float>(ef);
  }
  CHECK(wrong_d == 0);
  CHECK(wrong_f == 0);
  CHECK(same_on_every_rank(comm, v.data(), v.size()));
  // The counted traffic is the documented formula: about 2 (k - 1)/k n values on the reduce-scatter
  // path, (k - 1) n on the gather path.
  CHECK(bytes == mpi::allreduce_bytes_received(n, sizeof(double), k, r) +
                     mpi::allreduce_bytes_received(n, sizeof(float), k, r));
  if (k > 2)
    CHECK(bytes < static_cast<std::uint64_t>(k - 1) * n * (sizeof(double) + sizeof(float)));
}
