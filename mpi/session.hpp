// The lifetime of MPI in a process.
#pragma once

namespace amari::mpi {

/// Initializes MPI (MPI_Init_thread, MPI_THREAD_FUNNELED: OpenMP threads compute, only the main
/// thread communicates) and finalizes it on destruction. One per process, created first in main().
class Session {
 public:
  /// Passes argc/argv to MPI_Init_thread (MPI itself aborts the process if it cannot start).
  Session(int& argc, char**& argv);
  ~Session();
  Session(const Session&) = delete;
  Session& operator=(const Session&) = delete;
  /// This process's rank in MPI_COMM_WORLD.
  int rank() const;
  /// The number of processes in MPI_COMM_WORLD.
  int size() const;
};

}  // namespace amari::mpi
