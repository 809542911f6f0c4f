#include <amari/nn/communicator.hpp>

#include <algorithm>

#include <amari/autodiff/error.hpp>

namespace amari::nn {

void Communicator::agree(const std::string& what, std::uint64_t fingerprint) {
  const std::vector<std::uint64_t> all = allgather(fingerprint);
  // Every rank sees the same gathered values, so every rank takes the same branch: all throw or
  // none does.
  std::string differing;
  for (std::size_t r = 1; r < all.size(); ++r) {
    if (all[r] != all[0]) differing += (differing.empty() ? "" : ", ") + std::to_string(r);
  }
  if (!differing.empty()) {
    throw ValueError("Communicator::agree: the ranks disagree on " + what + ": rank(s) " +
                     differing + " differ from rank 0 (seen on rank " + std::to_string(rank()) +
                     " of " + std::to_string(size()) + ")");
  }
}

Shard Shard::spread(Index n) const {
  if (n <= 0 || n >= total) return *this;
  // floor(n * row / N) for the first and one-past-last row of this rank: the boundaries of all
  // ranks partition [0, n), and each rank's count is within one of n * local / N.
  auto boundary = [&](Index row) {
    return n * row / total;
  };  // n, row <= total: no overflow below 3e9 rows
  Shard s;
  s.total = n;
  s.offset = boundary(offset);
  s.local = boundary(offset + local) - s.offset;
  return s;
}

Shard shard_of(Communicator& comm, Index local) {
  const std::vector<std::uint64_t> counts = comm.allgather(static_cast<std::uint64_t>(local));
  Shard s;
  s.local = local;
  for (std::size_t r = 0; r < counts.size(); ++r) {
    const auto n = static_cast<std::int64_t>(counts[r]);
    if (n < 0)
      throw ValueError("shard_of: rank " + std::to_string(r) + " holds a negative number of rows");
    if (static_cast<int>(r) < comm.rank()) s.offset += n;
    s.total += n;
  }
  if (s.total == 0) throw ValueError("shard_of: no rank holds any row (N = 0)");
  return s;
}

std::uint64_t fingerprint(std::string_view bytes, std::uint64_t h) {
  for (const char c : bytes) {
    h ^= static_cast<unsigned char>(c);
    h *= 1099511628211ull;
  }
  return h;
}

}  // namespace amari::nn
