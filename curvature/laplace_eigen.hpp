// Forwarding header: SymmetricEigen, symmetric_eigen and symmetric_eigenvalues live in
// dense_solve.hpp.
#pragma once
#include <amari/curvature/dense_solve.hpp>
