// amari::mpi: data-parallel training and curvature over MPI (docs/scaling.md). Built with the
// CMake option AMARI_MPI; link the target amari::mpi. Including this header does not include
// <mpi.h>.
#pragma once

#include <amari/mpi/communicator.hpp>
#include <amari/mpi/run.hpp>
#include <amari/mpi/session.hpp>
