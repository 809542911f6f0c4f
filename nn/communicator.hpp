// The collective operations data-parallel training needs, as an abstract interface: the core
// library calls these and never MPI itself. amari::mpi (the optional mpi/ component, CMake option
// AMARI_MPI) implements them with MPI; SingleProcess implements them for one process.
//
// Determinism: allreduce_sum must give every rank bitwise the same result, and that result must
// be the sum of the ranks' vectors taken in rank order (0, 1, ..., k-1), never an order chosen by
// the transport. Then every rank's conjugate gradient sees the same scalars and takes the same
// decisions, and a run is reproducible for a given number of ranks (docs/scaling.md).
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include <amari/autodiff/tensor.hpp>

namespace amari::nn {

/// A group of k processes ("ranks") that call every collective below in the same order.
class Communicator {
 public:
  virtual ~Communicator() = default;
  /// This process's index in [0, size()).
  virtual int rank() const = 0;
  /// k, the number of processes.
  virtual int size() const = 0;
  /// data <- sum over ranks of every rank's data, added in rank order in double and rounded once,
  /// bitwise the same on every rank. Every rank passes the same length. Cost: see the
  /// implementation.
  virtual void allreduce_sum(std::span<double> data) = 0;
  /// The same for float (partial vectors summed in double, then rounded to float).
  virtual void allreduce_sum(std::span<float> data) = 0;
  /// data <- root's data on every rank (same length everywhere).
  virtual void broadcast(std::span<double> data, int root) = 0;
  /// The same for float.
  virtual void broadcast(std::span<float> data, int root) = 0;
  /// Every rank's value, in rank order (length size()), on every rank.
  virtual std::vector<std::uint64_t> allgather(std::uint64_t value) = 0;

  /// Checks that every rank passed the same fingerprint for `what` (e.g. "model parameter shapes");
  /// otherwise throws ValueError on EVERY rank, naming `what` and the ranks that differ from rank
  /// 0. One allgather of 8 bytes per rank. Call before any collective whose lengths depend on
  /// `what`, so a mismatch is an error, never a hang.
  void agree(const std::string& what, std::uint64_t fingerprint);
};

/// The communicator of a single process: every collective is the identity (allgather returns the
/// value itself). The distributed code paths run unchanged on it.
class SingleProcess final : public Communicator {
 public:
  int rank() const override { return 0; }
  int size() const override { return 1; }
  void allreduce_sum(std::span<double>) override {}
  void allreduce_sum(std::span<float>) override {}
  void broadcast(std::span<double>, int) override {}
  void broadcast(std::span<float>, int) override {}
  std::vector<std::uint64_t> allgather(std::uint64_t value) override { return {value}; }
};

/// This rank's part of a batch (or data set) split into consecutive row blocks over the ranks:
/// rank r holds rows [offset, offset + local) of the global batch of `total` rows.
struct Shard {
  Index local = 0;   ///< n_r, rows on this rank (may be 0)
  Index offset = 0;  ///< sum of n_q over ranks q < r: the global index of this rank's first row
  Index total = 0;   ///< N, rows on all ranks
  /// n_r / N: this rank's weight in a global mean (sum_r (n_r / N) * local mean_r).
  double weight() const {
    return total > 0 ? static_cast<double>(local) / static_cast<double>(total) : 0.0;
  }
  /// An n-row subset spread over the ranks in proportion to their rows (all rows if n <= 0 or
  /// n >= total): this rank keeps its first floor(n (offset + local) / N) - floor(n offset / N)
  /// rows, at offset floor(n offset / N) of the subset, so every rank does its share of the work (a
  /// curvature minibatch, SEED-NOTES 5). With one rank it is the first n rows. No communication.
  Shard spread(Index n) const;
};

/// The shard of a rank holding `local` rows: one allgather of the row counts. ValueError (on every
/// rank) if local < 0 anywhere or the total is 0.
Shard shard_of(Communicator& comm, Index local);

/// 64-bit FNV-1a of `bytes`, continuing from `h`: the fingerprints passed to Communicator::agree.
std::uint64_t fingerprint(std::string_view bytes, std::uint64_t h = 14695981039346656037ull);

/// The weighted global mean of per-rank means: data <- sum_r weight_r * data_r, in rank order,
/// bitwise the same on every rank. With weight = shard.weight() this is the mean over the union.
template <Real T>
void reduce_mean(Communicator& comm, double weight, std::span<T> data) {
  for (T& v : data) v = static_cast<T>(weight * static_cast<double>(v));
  comm.allreduce_sum(data);
}

}  // namespace amari::nn
