// The Catch2 main of the MPI tests: every rank runs every test case, MPI alive around them.
// CTest runs this program under mpirun with 1, 2 and 4 ranks (tests/CMakeLists.txt).
#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>

#include <amari/mpi/mpi.hpp>

int main(int argc, char** argv) {
  amari::mpi::Session session(argc, argv);
  const int failed = Catch::Session().run(argc, argv);
  // A rank whose checks failed makes the whole job fail (mpirun reports a non-zero status).
  return failed == 0 ? 0 : 1;
}
