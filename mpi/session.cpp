#include <amari/mpi/session.hpp>

#include <mpi.h>

namespace amari::mpi {

Session::Session(int& argc, char**& argv) {
  int provided = 0;
  MPI_Init_thread(&argc, &argv, MPI_THREAD_FUNNELED, &provided);
}

Session::~Session() {
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (!finalized) MPI_Finalize();
}

int Session::rank() const {
  int r = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &r);
  return r;
}

int Session::size() const {
  int k = 1;
  MPI_Comm_size(MPI_COMM_WORLD, &k);
  return k;
}

}  // namespace amari::mpi
