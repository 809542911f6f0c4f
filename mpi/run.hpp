// Clean failure of a data-parallel job.
#pragma once

#include <functional>

namespace amari::mpi {

/// Prints "rank r of k: <what>" to stderr and ends the whole job with MPI_Abort(MPI_COMM_WORLD, 1).
/// For a rank that met an error the others cannot know about. Needs a live mpi::Session.
[[noreturn]] void abort_job(const char* what);

/// Runs `body` and returns its status. If it throws, prints "rank r of k: <what>" to stderr and
/// ends the whole job with MPI_Abort(MPI_COMM_WORLD, 1): the other ranks, which may be waiting in
/// a collective the thrower will never join, are terminated instead of hanging, and mpirun exits
/// with a non-zero status. Needs a live mpi::Session.
int run_or_abort(const std::function<int()>& body);

}  // namespace amari::mpi
