#include <amari/mpi/run.hpp>

#include <mpi.h>

#include <cstdio>
#include <cstdlib>
#include <exception>

namespace amari::mpi {

void abort_job(const char* what) {
  int rank = 0, size = 1;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  std::fprintf(stderr, "rank %d of %d: %s\n", rank, size, what);
  std::fflush(stderr);
  MPI_Abort(MPI_COMM_WORLD, 1);
  std::abort();  // MPI_Abort does not return; this keeps [[noreturn]] honest if it ever did
}

int run_or_abort(const std::function<int()>& body) {
  try {
    return body();
  } catch (const std::exception& e) {
    abort_job(e.what());
  } catch (...) {
    abort_job("unknown exception");
  }
}

}  // namespace amari::mpi
