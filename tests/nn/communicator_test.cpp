// The core's side of data parallelism (nn/communicator.hpp), without MPI: the one-process
// communicator, shards and their spread subsets, and the data-parallel loss and gradient, which on
// one process compute exactly what the plain ones do. The multi-rank behaviour is tested under
// mpirun in tests/mpi (built with AMARI_MPI).
#include <amari/nn/nn.hpp>

#include <catch2/catch.hpp>

#include "support/random.hpp"

namespace {

using namespace amari;

// A communicator that pretends to be rank `r` of `k` with the given row counts (allgather only).
class FakeRanks final : public nn::Communicator {
 public:
  FakeRanks(int r, std::vector<std::uint64_t> values) : r_(r), values_(std::move(values)) {}
  int rank() const override { return r_; }
  int size() const override { return static_cast<int>(values_.size()); }
  void allreduce_sum(std::span<double>) override {}
  void allreduce_sum(std::span<float>) override {}
  void broadcast(std::span<double>, int) override {}
  void broadcast(std::span<float>, int) override {}
  std::vector<std::uint64_t> allgather(std::uint64_t) override { return values_; }

 private:
  int r_;
  std::vector<std::uint64_t> values_;
};

}  // namespace

TEST_CASE("communicator: shard_of gives each rank its offset, the total and the weight n_r / N",
          "[nn][communicator]") {
  const std::vector<std::uint64_t> rows = {3, 0, 8};
  FakeRanks r2(2, rows);
  const nn::Shard s = nn::shard_of(r2, 8);
  CHECK(s.offset == 3);
  CHECK(s.total == 11);
  CHECK(s.weight() == 8.0 / 11.0);
  FakeRanks none(0, {0, 0});
  CHECK_THROWS_AS(nn::shard_of(none, 0), ValueError);
}

TEST_CASE(
    "communicator: a spread subset partitions the n rows in rank order, each share within one of n n_r "
    "/ N",
    "[nn][communicator]") {
  const std::vector<Index> rows = {1, 2, 3, 5, 0, 7};
  Index total = 0;
  for (Index r : rows) total += r;
  for (Index n = 1; n <= total; ++n) {
    Index next = 0;
    Index offset = 0;
    for (std::size_t q = 0; q < rows.size(); ++q) {
      const nn::Shard s = nn::Shard{rows[q], offset, total}.spread(n);
      offset += rows[q];
      CHECK(s.offset == next);
      CHECK(s.local <= rows[q]);
      CHECK(std::abs(static_cast<double>(s.local) -
                     static_cast<double>(n * rows[q]) / static_cast<double>(total)) < 1.0);
      next += s.local;
    }
    CHECK(next == (n >= total ? total : n));
  }
}

TEST_CASE(
    "communicator: agree throws on a mismatch naming the ranks, and passes on equal fingerprints",
    "[nn][communicator]") {
  FakeRanks same(1, {7, 7, 7});
  CHECK_NOTHROW(same.agree("the model", 7));
  FakeRanks differ(0, {7, 8, 7, 9});
  CHECK_THROWS_WITH(differ.agree("the model", 7),
                    Catch::Contains("disagree on the model") && Catch::Contains("rank(s) 1, 3"));
  nn::SingleProcess one;
  CHECK_NOTHROW(one.agree("anything", 42));
}

TEST_CASE(
    "communicator: on one process the data-parallel loss and gradient equal the plain ones bitwise",
    "[nn][communicator]") {
  nn::Model<float> a(nn::mlp<float>({4, 6, 3}, nn::Act::tanh), 5);
  nn::Model<float> b = a;
  nn::SoftmaxCrossEntropy<float> head;
  amari::test::Rng rng(1);
  const Tensor<float> x = amari::test::normal_tensor<float>(Shape{9, 4}, rng);
  const Tensor<float> y = nn::one_hot<float>({0, 1, 2, 0, 1, 2, 0, 1, 2}, 3);
  nn::SingleProcess one;
  Tensor<float> ga = a.zeros_like_parameters(), gb = b.zeros_like_parameters();
  const float la = nn::loss_and_gradient(a, head, x, y, ga, one, nn::shard_of(one, 9));
  const float lb = nn::loss_and_gradient(b, head, x, y, gb);
  CHECK(la == lb);
  for (Index i = 0; i < ga.size(); ++i) REQUIRE(ga[i] == gb[i]);
  nn::synchronize_model(one, a);  // one process: nothing to copy, the parameters stay
  for (Index i = 0; i < a.num_parameters(); ++i) REQUIRE(a.parameters()[i] == b.parameters()[i]);
  CHECK(nn::structure_fingerprint(a) == nn::structure_fingerprint(b));
  const nn::Model<float> wider(nn::mlp<float>({4, 7, 3}, nn::Act::tanh), 5);
  CHECK(nn::structure_fingerprint(a) != nn::structure_fingerprint(wider));
}
