// Data parallelism over the threads of one process: k threads act as the k ranks of a
// Communicator, so every data-parallel code path written for MPI (nn::loss_and_gradient with a
// Shard, curvature::make_distributed_curvature, the data-parallel optimizers) runs unchanged with
// threads instead of processes.
//
// Why, next to the per-operation threading every kernel already has: at the batch and layer sizes
// of a small MLP, splitting each GEMM and element-wise pass over the cores leaves much of the
// second core unused (fork/join per operation, operands re-packed per thread, data moving between
// the cores' caches after every operation). Splitting the *batch* instead gives each thread whole
// forward and backward passes on its own rows, with one reduction per step (bench/RESULTS.md,
// "Thread scaling"). The price is the MPI model's: each rank holds its own copy of the model, and
// a result is the rank-order reduction of the ranks' partial results, so it is bitwise reproducible
// for a given number of ranks but not bitwise equal to the single-thread result (it agrees to
// rounding).
//
//   amari::nn::run_thread_ranks(2, [&](amari::nn::Communicator& comm) {
//     const amari::nn::Shard shard = amari::nn::shard_of(comm, my_rows);
//     loss = amari::nn::loss_and_gradient(models[comm.rank()], head, x_r, y_r, g_r, comm, shard);
//   });
#pragma once

#include <functional>

#include <amari/nn/communicator.hpp>

namespace amari::nn {

/// Runs body(comm) on `ranks` threads of one OpenMP parallel region, thread r with a Communicator
/// of rank r of `ranks`. Collectives follow Communicator's contract (rank-order sums in double,
/// bitwise the same on every rank); each costs two barriers plus the copies. Inside the body the
/// library's kernels run single-threaded (each rank's OpenMP thread count is 1 for the body's
/// duration), so each rank uses one core. If a rank's body throws, the ranks waiting in a
/// collective are released with an Error, and run_thread_ranks rethrows the exception of the rank
/// that failed first once all threads have left: a failure never hangs the team. ValueError if
/// ranks < 1 or the OpenMP runtime gives fewer threads than asked (as GCC's runtime does inside a
/// parallel region, where nested regions get one thread by default). The collectives must be
/// called in the same order on every rank, as with MPI; a rank that returns from its body while
/// the others wait in a collective makes them fail with an Error instead of waiting forever.
void run_thread_ranks(int ranks, const std::function<void(Communicator&)>& body);

}  // namespace amari::nn
