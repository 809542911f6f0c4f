#include <amari/mpi/communicator.hpp>

#include <mpi.h>

#include <limits>
#include <string>

#include <amari/autodiff/error.hpp>

namespace amari::mpi {

namespace {

template <class T>
MPI_Datatype datatype();
template <>
MPI_Datatype datatype<double>() {
  return MPI_DOUBLE;
}
template <>
MPI_Datatype datatype<float>() {
  return MPI_FLOAT;
}

int count_of(std::size_t n, const char* op) {
  if (n > static_cast<std::size_t>(std::numeric_limits<int>::max())) {
    throw ValueError(std::string("mpi::Communicator::") + op + ": " + std::to_string(n) +
                     " values exceed MPI's int count");
  }
  return static_cast<int>(n);
}

// Every rank's data gathered into `all` (rank-major), then summed in rank order in double: the
// same operations in the same order on every rank, so bitwise the same result everywhere.
template <class T>
void gather_and_sum(std::span<T> data, std::vector<T>& all, int k) {
  if (k == 1) return;  // the sum of one vector (rounding through double is exact for float)
  const std::size_t n = data.size();
  const int count = count_of(n, "allreduce_sum");
  all.resize(n * static_cast<std::size_t>(k));
  MPI_Allgather(data.data(), count, datatype<T>(), all.data(), count, datatype<T>(),
                MPI_COMM_WORLD);
  for (std::size_t i = 0; i < n; ++i) {
    double s = 0;
    for (int r = 0; r < k; ++r) s += static_cast<double>(all[static_cast<std::size_t>(r) * n + i]);
    data[i] = static_cast<T>(s);
  }
}

// The same sums with the traffic of a ring allreduce: rank q owns the elements [n q / k, n (q+1) /
// k); MPI_Alltoallv brings it every rank's piece of its chunk, it adds them in rank order in
// double, and MPI_Allgatherv hands every owner's chunk to everyone. Each element is still the
// rank-order sum computed once, so the result is bitwise the one of gather_and_sum.
template <class T>
void reduce_scatter_and_gather(std::span<T> data, std::vector<T>& pieces, int k, int rank) {
  const std::size_t n = data.size();
  count_of(n, "allreduce_sum");
  std::vector<int> counts(static_cast<std::size_t>(k)), displs(static_cast<std::size_t>(k));
  for (int q = 0; q < k; ++q) {
    const std::size_t first = n * static_cast<std::size_t>(q) / static_cast<std::size_t>(k);
    const std::size_t last = n * static_cast<std::size_t>(q + 1) / static_cast<std::size_t>(k);
    displs[static_cast<std::size_t>(q)] = static_cast<int>(first);
    counts[static_cast<std::size_t>(q)] = static_cast<int>(last - first);
  }
  const int mine = counts[static_cast<std::size_t>(rank)];
  std::vector<int> piece_counts(static_cast<std::size_t>(k), mine),
      piece_displs(static_cast<std::size_t>(k));
  for (int q = 0; q < k; ++q) piece_displs[static_cast<std::size_t>(q)] = q * mine;
  pieces.resize(static_cast<std::size_t>(k) * static_cast<std::size_t>(mine));
  MPI_Alltoallv(data.data(), counts.data(), displs.data(), datatype<T>(), pieces.data(),
                piece_counts.data(), piece_displs.data(), datatype<T>(), MPI_COMM_WORLD);
  const std::size_t m = static_cast<std::size_t>(mine),
                    first = static_cast<std::size_t>(displs[static_cast<std::size_t>(rank)]);
  for (std::size_t i = 0; i < m; ++i) {
    double s = 0;
    for (int q = 0; q < k; ++q)
      s += static_cast<double>(pieces[static_cast<std::size_t>(q) * m + i]);
    data[first + i] = static_cast<T>(s);
  }
  MPI_Allgatherv(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, data.data(), counts.data(), displs.data(),
                 datatype<T>(), MPI_COMM_WORLD);
}

template <class T>
void ordered_allreduce(std::span<T> data, std::vector<T>& scratch, int k, int rank) {
  if (uses_reduce_scatter(data.size(), sizeof(T), k)) {
    reduce_scatter_and_gather(data, scratch, k, rank);
  } else {
    gather_and_sum(data, scratch, k);
  }
}

}  // namespace

bool uses_reduce_scatter(std::size_t n, std::size_t value_size, int k) {
  return k > 2 && n * value_size >= kReduceScatterBytes;
}

std::uint64_t allreduce_bytes_received(std::size_t n, std::size_t value_size, int k, int rank) {
  if (k <= 1) return 0;
  const std::size_t km1 = static_cast<std::size_t>(k - 1);
  if (!uses_reduce_scatter(n, value_size, k)) return km1 * n * value_size;
  const std::size_t r = static_cast<std::size_t>(rank), kk = static_cast<std::size_t>(k);
  const std::size_t mine = n * (r + 1) / kk - n * r / kk;
  return (km1 * mine + (n - mine)) *
         value_size;  // pieces of this rank's chunk, then the other chunks
}

Communicator::Communicator() {
  int initialized = 0;
  MPI_Initialized(&initialized);
  if (!initialized)
    throw ValueError(
        "mpi::Communicator: MPI is not initialized (create an amari::mpi::Session first)");
  MPI_Comm_rank(MPI_COMM_WORLD, &rank_);
  MPI_Comm_size(MPI_COMM_WORLD, &size_);
}

void Communicator::allreduce_sum(std::span<double> data) {
  const double t0 = MPI_Wtime();
  ordered_allreduce(data, gathered_d_, size_, rank_);
  seconds_ += MPI_Wtime() - t0;
  bytes_received_ += allreduce_bytes_received(data.size(), sizeof(double), size_, rank_);
  ++collectives_;
}

void Communicator::allreduce_sum(std::span<float> data) {
  const double t0 = MPI_Wtime();
  ordered_allreduce(data, gathered_f_, size_, rank_);
  seconds_ += MPI_Wtime() - t0;
  bytes_received_ += allreduce_bytes_received(data.size(), sizeof(float), size_, rank_);
  ++collectives_;
}

void Communicator::broadcast(std::span<double> data, int root) {
  const double t0 = MPI_Wtime();
  MPI_Bcast(data.data(), count_of(data.size(), "broadcast"), MPI_DOUBLE, root, MPI_COMM_WORLD);
  seconds_ += MPI_Wtime() - t0;
  if (rank_ != root) bytes_received_ += data.size() * sizeof(double);
  ++collectives_;
}

void Communicator::broadcast(std::span<float> data, int root) {
  const double t0 = MPI_Wtime();
  MPI_Bcast(data.data(), count_of(data.size(), "broadcast"), MPI_FLOAT, root, MPI_COMM_WORLD);
  seconds_ += MPI_Wtime() - t0;
  if (rank_ != root) bytes_received_ += data.size() * sizeof(float);
  ++collectives_;
}

std::vector<std::uint64_t> Communicator::allgather(std::uint64_t value) {
  const double t0 = MPI_Wtime();
  std::vector<std::uint64_t> all(static_cast<std::size_t>(size_));
  MPI_Allgather(&value, 1, MPI_UINT64_T, all.data(), 1, MPI_UINT64_T, MPI_COMM_WORLD);
  seconds_ += MPI_Wtime() - t0;
  bytes_received_ += static_cast<std::uint64_t>(size_ - 1) * sizeof(std::uint64_t);
  ++collectives_;
  return all;
}

}  // namespace amari::mpi
