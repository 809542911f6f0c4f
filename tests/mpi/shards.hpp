// Shared by the MPI tests: a tiny double-precision problem that every rank builds identically, the
// rows each rank holds, and comparisons against the single-process result on the union.
#pragma once

#include <cmath>
#include <cstdint>
#include <vector>

#include <amari/curvature/dataset_operator.hpp>
#include <amari/curvature/distributed_operator.hpp>
#include <amari/curvature/second_order.hpp>
#include <amari/mpi/mpi.hpp>
#include <amari/nn/nn.hpp>

#include "support/random.hpp"

namespace amari::test::mpi {

/// 11 examples, a 4-5-3 tanh MLP (43 parameters), softmax cross-entropy: the same on every rank.
struct Problem {
  nn::Model<double> model{nn::mlp<double>({4, 5, 3}, nn::Act::tanh), 2};
  nn::SoftmaxCrossEntropy<double> head;
  Tensor<double> x, y;
  static constexpr Index n = 11;
  Problem() {
    Rng rng(3);
    x = normal_tensor<double>(Shape{n, 4}, rng);
    y = nn::one_hot<double>({0, 1, 2, 2, 1, 0, 0, 1, 2, 1, 0}, 3);
  }
};

/// Unequal consecutive shards: rank r holds rows [start(r), start(r + 1)) with start(r) growing
/// like r (r + 1) / 2 (k = 2: 3 and 8 rows; k = 4: 1, 2, 3, 5). With `first_empty`, rank 0 holds
/// nothing when k > 1.
inline Index shard_start(int r, int k, Index n, bool first_empty = false) {
  if (r >= k) return n;
  if (first_empty && k > 1) return r == 0 ? 0 : n * (r - 1) * r / 2 / ((k - 1) * k / 2);
  return n * r * (r + 1) / 2 / (k * (k + 1) / 2);
}

/// This rank's rows of a (N, D) tensor, as a copy.
inline Tensor<double> rows_of(const Tensor<double>& t, Index first, Index count) {
  const Index d = t.dim(1);
  if (count == 0) return Tensor<double>(Shape{0, d});
  return t.view(first * d, Shape{count, d}).clone();
}

/// This rank's shard of the problem's batch.
struct Local {
  Tensor<double> x, y;
  Index first = 0, count = 0;
};
inline Local local_part(const Problem& p, nn::Communicator& comm, bool first_empty = false) {
  Local l;
  l.first = shard_start(comm.rank(), comm.size(), Problem::n, first_empty);
  l.count = shard_start(comm.rank() + 1, comm.size(), Problem::n, first_empty) - l.first;
  l.x = rows_of(p.x, l.first, l.count);
  l.y = rows_of(p.y, l.first, l.count);
  return l;
}

/// The union of the shards ordered as a data-parallel run with an n-row subset (nn::Shard::spread)
/// sees it: every rank's subset rows first, in rank order, then every rank's other rows. The
/// single- process reference of a step whose curvature uses n rows.
inline Tensor<double> spread_first(const Tensor<double>& t, int k, Index n,
                                   bool first_empty = false) {
  const Index total = t.dim(0), d = t.dim(1);
  Tensor<double> out(Shape{total, d});
  Index row = 0;
  auto copy_rows = [&](Index from, Index count) {
    for (Index i = 0; i < count * d; ++i) out[row * d + i] = t[from * d + i];
    row += count;
  };
  for (const bool subset : {true, false}) {
    for (int r = 0; r < k; ++r) {
      const Index s0 = shard_start(r, k, total, first_empty),
                  s1 = shard_start(r + 1, k, total, first_empty);
      const Index c = n * s1 / total - n * s0 / total;  // Shard::spread's count on rank r
      if (subset)
        copy_rows(s0, c);
      else
        copy_rows(s0 + c, s1 - s0 - c);
    }
  }
  return out;
}

/// ||a - b|| / ||b||.
inline double relative_difference(const Tensor<double>& a, const Tensor<double>& b) {
  double d = 0, nb = 0;
  for (Index i = 0; i < a.size(); ++i) {
    d += (a[i] - b[i]) * (a[i] - b[i]);
    nb += b[i] * b[i];
  }
  return std::sqrt(d) / std::sqrt(nb);
}

/// True if every rank holds bitwise the same `values` (a fingerprint of their bytes, gathered).
inline bool same_on_every_rank(nn::Communicator& comm, const double* values, std::size_t n) {
  const std::uint64_t h =
      nn::fingerprint(std::string_view(reinterpret_cast<const char*>(values), n * sizeof(double)));
  const std::vector<std::uint64_t> all = comm.allgather(h);
  for (const std::uint64_t v : all) {
    if (v != all[0]) return false;
  }
  return true;
}

}  // namespace amari::test::mpi
