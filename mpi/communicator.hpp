// nn::Communicator over MPI_COMM_WORLD.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include <amari/nn/communicator.hpp>

namespace amari::mpi {

/// allreduce_sum switches from gather-and-sum to reduce-scatter-and-gather at k > 2 ranks and
/// vectors of at least this many bytes (docs/scaling.md: below it, latency dominates and one
/// collective beats two).
inline constexpr std::size_t kReduceScatterBytes = 32 * 1024;

/// Whether allreduce_sum of n values of value_size bytes on k ranks takes the reduce-scatter path.
bool uses_reduce_scatter(std::size_t n, std::size_t value_size, int k);

/// Bytes rank `rank` receives in one allreduce_sum of n values of value_size bytes on k ranks:
/// (k - 1) n value_size by gather-and-sum; (k - 1) c + (n - c) values (c = its chunk, about n / k),
/// i.e. about 2 (k - 1)/k n values, by reduce-scatter-and-gather.
std::uint64_t allreduce_bytes_received(std::size_t n, std::size_t value_size, int k, int rank);

/// The ranks of MPI_COMM_WORLD as an nn::Communicator (needs a live mpi::Session).
///
/// allreduce_sum is deterministic by construction, not by MPI's reduction algorithm: every element
/// is the sum of the ranks' values in rank order, in double, computed once and copied, so it is
/// bitwise the same on every rank (docs/scaling.md). Two schedules give the same bits:
///  - gather-and-sum (k <= 2 or short vectors): MPI_Allgather of every rank's vector, then each
///    rank adds them; it receives (k - 1) n values, k/2 times a ring allreduce's 2 (k - 1)/k n;
///  - reduce-scatter-and-gather (k > 2, at least kReduceScatterBytes): rank q owns the chunk
///    [n q / k, n (q + 1) / k), receives the k pieces of it (MPI_Alltoallv), adds them in rank
///    order, and MPI_Allgatherv distributes the chunks: about 2 (k - 1)/k n values, as a ring.
class Communicator final : public nn::Communicator {
 public:
  /// The ranks of MPI_COMM_WORLD; ValueError if MPI is not initialized (no mpi::Session).
  Communicator();
  /// This process's rank in MPI_COMM_WORLD.
  int rank() const override { return rank_; }
  /// The number of processes in MPI_COMM_WORLD.
  int size() const override { return size_; }
  /// Cost: allreduce_bytes_received(n, 8, k, rank) bytes in one or two collectives; k n (gather)
  /// or about n (reduce-scatter) additions; as many values of scratch.
  void allreduce_sum(std::span<double> data) override;
  /// The same for float (partial sums in double, rounded once).
  void allreduce_sum(std::span<float> data) override;
  /// MPI_Bcast from `root`.
  void broadcast(std::span<double> data, int root) override;
  /// MPI_Bcast from `root`, float.
  void broadcast(std::span<float> data, int root) override;
  /// MPI_Allgather of one 64-bit value.
  std::vector<std::uint64_t> allgather(std::uint64_t value) override;

  /// Bytes this rank has received in collectives since construction, added up per collective
  /// from its schedule (allreduce_bytes_received; not asked of the transport): for benchmarks and
  /// docs/scaling.md, what a step communicates.
  std::uint64_t bytes_received() const { return bytes_received_; }
  /// The number of collectives since construction.
  std::uint64_t collectives() const { return collectives_; }
  /// Seconds spent inside MPI calls since construction (wall clock, includes waiting for slower
  /// ranks).
  double seconds_communicating() const { return seconds_; }

 private:
  int rank_ = 0, size_ = 1;
  std::vector<double> gathered_d_;
  std::vector<float> gathered_f_;
  std::uint64_t bytes_received_ = 0, collectives_ = 0;
  double seconds_ = 0;
};

}  // namespace amari::mpi
