#include <amari/nn/thread_ranks.hpp>

#include <omp.h>

#include <algorithm>
#include <atomic>
#include <exception>
#include <string>
#include <thread>
#include <vector>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

namespace amari::nn {

namespace {

// What the ranks of one run_thread_ranks call share. A collective publishes each rank's buffer,
// meets at a barrier, and reads the others' buffers; see each collective for why its barriers
// suffice.
class Team {
 public:
  explicit Team(int ranks)
      : ranks_(ranks),
        sources_(static_cast<std::size_t>(ranks)),
        lengths_(static_cast<std::size_t>(ranks)),
        values_(static_cast<std::size_t>(ranks)),
        chunks_(static_cast<std::size_t>(ranks)),
        failures_(static_cast<std::size_t>(ranks)) {}

  int ranks() const { return ranks_; }

  // All ranks arrive before any leaves. Spins (the ranks are one per core, and a collective's
  // wait is microseconds); yields after a while so an oversubscribed machine still progresses.
  // Throws Error when the team was aborted (a rank's body threw) or a rank left the body while
  // this barrier still waits for it: it would never arrive.
  void barrier(int rank, const char* op) {
    const long generation = generation_.load(std::memory_order_acquire);
    if (arrived_.fetch_add(1, std::memory_order_acq_rel) == ranks_ - 1) {
      arrived_.store(0, std::memory_order_relaxed);
      generation_.fetch_add(1, std::memory_order_release);
      return;
    }
    for (long spins = 0; generation_.load(std::memory_order_acquire) == generation; ++spins) {
      if (aborted_.load(std::memory_order_acquire) ||
          departed_.load(std::memory_order_acquire) > 0) {
        // A rank that left completed every barrier it arrived at (program order), so a changed
        // generation means this barrier completed too.
        if (generation_.load(std::memory_order_acquire) != generation) return;
        throw Error(std::string("run_thread_ranks: ") + op + " on rank " + std::to_string(rank) +
                    " of " + std::to_string(ranks_) +
                    (aborted_.load() ? ": released because rank " +
                                           std::to_string(first_failure_.load()) + " failed"
                                     : ": another rank returned from its body without calling it"));
      }
      if (spins < 4096) {
#if defined(__x86_64__) || defined(__i386__)
        _mm_pause();
#endif
      } else {
        std::this_thread::yield();
      }
    }
  }

  // Every rank passed the same length (every rank sees the same lengths, so all throw or none).
  void check_lengths(int rank, const char* op) const {
    for (int r = 1; r < ranks_; ++r) {
      if (lengths_[static_cast<std::size_t>(r)] != lengths_[0]) {
        throw ValueError(std::string("run_thread_ranks: ") + op + ": rank 0 passed " +
                         std::to_string(lengths_[0]) + " values but rank " + std::to_string(r) +
                         " passed " + std::to_string(lengths_[static_cast<std::size_t>(r)]) +
                         " (seen on rank " + std::to_string(rank) + ")");
      }
    }
  }

  // data <- the rank-order sum in double, rounded once. Barrier 1: every rank's data is published.
  // Rank q then sums the elements [n q / k, n (q+1) / k) into its own chunk buffer (in double).
  // Barrier 2: all chunks are done and nobody reads the published data any more, so each rank
  // copies every chunk into its own data, rounding to T. No third barrier is needed: a chunk
  // buffer is rewritten only after the next collective's first barrier, which every rank reaches
  // only after its copies.
  template <class T>
  void allreduce_sum(int rank, std::span<T> data) {
    sources_[static_cast<std::size_t>(rank)] = data.data();
    lengths_[static_cast<std::size_t>(rank)] = data.size();
    barrier(rank, "allreduce_sum");
    check_lengths(rank, "allreduce_sum");
    const std::size_t n = data.size(), k = static_cast<std::size_t>(ranks_);
    const auto begin_of = [&](std::size_t q) { return n * q / k; };
    const std::size_t first = begin_of(static_cast<std::size_t>(rank)),
                      last = begin_of(static_cast<std::size_t>(rank) + 1);
    // Rank by rank over the whole chunk (contiguous loops that vectorize), each element still
    // summed in rank order: the same sums as one element at a time.
    std::vector<double>& sum = chunks_[static_cast<std::size_t>(rank)];
    sum.resize(last - first);
    const T* s0 = static_cast<const T*>(sources_[0]) + first;
    for (std::size_t i = 0; i < sum.size(); ++i) sum[i] = static_cast<double>(s0[i]);
    for (std::size_t r = 1; r < k; ++r) {
      const T* sr = static_cast<const T*>(sources_[r]) + first;
      for (std::size_t i = 0; i < sum.size(); ++i) sum[i] += static_cast<double>(sr[i]);
    }
    barrier(rank, "allreduce_sum");
    for (std::size_t q = 0; q < k; ++q) {
      const std::vector<double>& chunk = chunks_[q];
      T* out = data.data() + begin_of(q);
      for (std::size_t i = 0; i < chunk.size(); ++i) out[i] = static_cast<T>(chunk[i]);
    }
  }

  // Barrier 1: the root's data is published; the others copy it. Barrier 2: the root may change its
  // data again only after every copy.
  template <class T>
  void broadcast(int rank, std::span<T> data, int root) {
    if (root < 0 || root >= ranks_) {
      throw ValueError("run_thread_ranks: broadcast from root " + std::to_string(root) +
                       " in a team of " + std::to_string(ranks_) + " ranks");
    }
    sources_[static_cast<std::size_t>(rank)] = data.data();
    lengths_[static_cast<std::size_t>(rank)] = data.size();
    barrier(rank, "broadcast");
    check_lengths(rank, "broadcast");
    if (rank != root) {
      const T* src = static_cast<const T*>(sources_[static_cast<std::size_t>(root)]);
      std::copy(src, src + data.size(), data.begin());
    }
    barrier(rank, "broadcast");
  }

  // Barrier 1: every value is published; barrier 2: nobody overwrites a value (in the next
  // allgather) before every rank has read it.
  std::vector<std::uint64_t> allgather(int rank, std::uint64_t value) {
    values_[static_cast<std::size_t>(rank)] = value;
    barrier(rank, "allgather");
    std::vector<std::uint64_t> all = values_;
    barrier(rank, "allgather");
    return all;
  }

  // The body of `rank` threw: remember the exception, release the waiting ranks.
  void fail(int rank, std::exception_ptr e) {
    failures_[static_cast<std::size_t>(rank)] = std::move(e);
    int none = -1;
    first_failure_.compare_exchange_strong(none, rank);
    aborted_.store(true, std::memory_order_release);
  }
  void depart() {
    departed_.fetch_add(1, std::memory_order_release);
  }
  // The exception of the rank that failed first (the others were released because of it).
  void rethrow_failure() const {
    const int first = first_failure_.load();
    if (first >= 0) std::rethrow_exception(failures_[static_cast<std::size_t>(first)]);
  }

 private:
  int ranks_;
  std::atomic<int> arrived_{0};
  std::atomic<long> generation_{0};
  std::atomic<bool> aborted_{false};
  std::atomic<int> departed_{0};
  std::atomic<int> first_failure_{-1};
  std::vector<const void*> sources_;
  std::vector<std::size_t> lengths_;
  std::vector<std::uint64_t> values_;
  std::vector<std::vector<double>> chunks_;  // rank q's sums of its elements, in double
  std::vector<std::exception_ptr> failures_;
};

// Rank `rank`'s view of the team.
class ThreadRank final : public Communicator {
 public:
  ThreadRank(Team& team, int rank) : team_(team), rank_(rank) {}
  int rank() const override { return rank_; }
  int size() const override { return team_.ranks(); }
  void allreduce_sum(std::span<double> data) override { team_.allreduce_sum(rank_, data); }
  void allreduce_sum(std::span<float> data) override { team_.allreduce_sum(rank_, data); }
  void broadcast(std::span<double> data, int root) override { team_.broadcast(rank_, data, root); }
  void broadcast(std::span<float> data, int root) override { team_.broadcast(rank_, data, root); }
  std::vector<std::uint64_t> allgather(std::uint64_t value) override {
    return team_.allgather(rank_, value);
  }

 private:
  Team& team_;
  int rank_;
};

}  // namespace

void run_thread_ranks(int ranks, const std::function<void(Communicator&)>& body) {
  if (ranks < 1)
    throw ValueError("run_thread_ranks: ranks must be >= 1, got " + std::to_string(ranks));
  Team team(ranks);
  std::atomic<int> team_size{0};
#pragma omp parallel num_threads(ranks)
  {
    const int got = omp_get_num_threads();
    if (omp_get_thread_num() == 0) team_size.store(got);
    if (got == ranks) {
      const int rank = omp_get_thread_num();
      // One thread for any region the body opens, whatever the runtime's nesting default: the
      // setting belongs to this thread's task and ends with the region.
      omp_set_num_threads(1);
      try {
        ThreadRank comm(team, rank);
        body(comm);
      } catch (...) {
        team.fail(rank, std::current_exception());
      }
      team.depart();
    }
  }
  if (team_size.load() != ranks) {
    throw ValueError("run_thread_ranks: asked for " + std::to_string(ranks) +
                     " threads, the OpenMP runtime gave " + std::to_string(team_size.load()) +
                     (omp_in_parallel() ? " (called inside a parallel region)" : ""));
  }
  team.rethrow_failure();
}

}  // namespace amari::nn
